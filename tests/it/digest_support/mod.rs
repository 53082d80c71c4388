//! What the digest and cost tests share: config snippets, rows to seed, and readers.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use deckhand::app::App;
use deckhand::store::Arg;

use crate::common::Workspace;

/// A cost source whose step prints the file the test wrote, from the workspace folder.
pub const COST_CMD: &str = r#"
name = "cost-fixed"
description = "Costs the test wrote"
kind = "custom"
role = "everyone"
[[steps]]
name = "print"
argv = ["cat", "costs.jsonl"]
cwd = "."
"#;

pub fn config(digest: &str) -> String {
    format!(
        r#"
[probes]
enabled = false

{digest}

[[costs]]
name = "cloud"
command = "cost-fixed"
budget_monthly = 300.0
"#
    )
}

pub const WEEKLY: &str = r#"
[[digests]]
name = "weekly"
cron = "0 9 * * MON"
timezone = "Europe/Amsterdam"
channels = { slack = "CDIGEST", discord = "4242" }
"#;

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A row the test puts straight into the database (the store has no API to fake history).
pub struct Seed {
    sql: String,
    args: Vec<Arg>,
}

pub fn sql(sql: &str, args: Vec<Arg>) -> Seed {
    Seed {
        sql: sql.into(),
        args,
    }
}

/// Insert the seeded rows.
pub async fn seed(db: &deckhand::store::Db, rows: &[Seed]) {
    deckhand::on_db!(db, p => {
        for r in rows {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(r.sql.clone()));
            for a in &r.args {
                q = match a {
                    Arg::Int(i) => q.bind(*i),
                    Arg::Text(s) => q.bind(s.clone()),
                    Arg::Null => q.bind(None::<String>),
                };
            }
            q.execute(p).await.unwrap();
        }
    })
}

/// `n` probe results of `env` spread over `[from, to)`, the first `failed` of them failing.
pub fn probes(env: &str, n: i64, failed: i64, from: i64, to: i64) -> Vec<Seed> {
    (0..n)
        .map(|i| {
            let ok = if i < failed { "FALSE" } else { "TRUE" };
            sql(
                &format!("INSERT INTO probe_results (target, environment, at, ok, status, latency_ms) VALUES ($1, $1, $2, {ok}, 200, 12)"),
                vec![Arg::Text(env.into()), Arg::Int(from + i * (to - from) / n)],
            )
        })
        .collect()
}

pub fn incident(env: &str, severity: &str, from: i64, to: Option<i64>) -> Seed {
    let status = if to.is_some() { "resolved" } else { "firing" };
    sql(
        "INSERT INTO incidents (dedup_key, source, title, severity, environment, status, first_seen, last_seen, resolved_at) \
         VALUES ($1, 'generic', 'test', $2, $3, $4, $5, $5, $6)",
        vec![
            Arg::Text(format!("k{from}{severity}")),
            Arg::Text(severity.into()),
            Arg::Text(env.into()),
            Arg::Text(status.into()),
            Arg::Int(from),
            to.map(Arg::Int).unwrap_or(Arg::Null),
        ],
    )
}

pub fn deployment(env: &str, kind: &str, status: &str, started: i64, secs: i64) -> Seed {
    sql(
        "INSERT INTO deployments (job_id, environment, version, kind, requested_by, status, started_at, finished_at, duration_ms) \
         VALUES (1, $1, 'abc1234', $2, 'tester', $3, $4, $5, $6)",
        vec![
            Arg::Text(env.into()),
            Arg::Text(kind.into()),
            Arg::Text(status.into()),
            Arg::Int(started),
            Arg::Int(started + secs * 1000),
            Arg::Int(secs * 1000),
        ],
    )
}

/// Daily costs for the 40 days before `today`: compute 10/day (14/day in the last 7 days),
/// storage 2.50/day.
pub fn write_costs(ws: &Workspace, today: NaiveDate) -> Vec<(NaiveDate, f64)> {
    let mut lines = String::new();
    let mut days = Vec::new();
    for back in 1..=40 {
        let date = today - Duration::days(back);
        let compute = if back <= 7 { 14.0 } else { 10.0 };
        for (service, amount) in [("compute", compute), ("storage", 2.5)] {
            lines.push_str(&format!(
                "{{\"date\":\"{date}\",\"service\":\"{service}\",\"amount\":{amount},\"currency\":\"USD\"}}\n"
            ));
        }
        days.push((date, compute + 2.5));
    }
    std::fs::write(ws.dir.path().join("costs.jsonl"), lines).unwrap();
    days
}

pub async fn digest_rows(app: &App, like: &str) -> Vec<(String, Option<String>, String)> {
    deckhand::on_db!(&app.db, p => {
        sqlx::query_as("SELECT platform, channel, body FROM outbox WHERE thread_key LIKE $1 ORDER BY id")
            .bind(like)
            .fetch_all(p)
            .await
            .unwrap()
    })
}

pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG");
    (reader.info().width, reader.info().height)
}
