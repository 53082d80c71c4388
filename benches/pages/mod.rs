//! `BENCH_ONLY=ui scripts/bench`: the status pages against a seeded database — 10,000 jobs,
//! 1,000 deployments, 10,000 audit events, a week of probe results every 30 s for each of
//! four environments, and one job with a 10,000-line log — served by a real `deckhand
//! serve` (release build) and fetched over loopback HTTP one after another. The first
//! request of each page is reported apart: it also reads the whole days of uptime that
//! later requests take from the cache.

use std::fmt::Write as _;
use std::time::Instant;

use super::{Db, percentile, serve, workspace};

/// Environments of the seeded workspace (the bench workspace's two plus these).
const EXTRA: &str =
    "[environments.staging]\n[environments.production]\npromote_from = \"staging\"\n";
const ENVS: [&str; 4] = ["bench", "work", "staging", "production"];
const JOBS: i64 = 10_000;
const DEPLOYMENTS: i64 = 1_000;
const LOG_LINES: i64 = 10_000;
/// Requests per page measured (after 10 to warm up).
const ROUNDS: usize = 200;

/// Seed `db` through a migrated App: recursive CTEs, one statement per table, the same SQL
/// on both backends.
async fn seed(dir: &std::path::Path, db: &Db) {
    let app = super::app(dir, &db.url, "normal").await;
    let now = deckhand::domain::time::now_ms();
    let week = 7 * 86_400_000i64;
    let statements: Vec<String> = vec![
        // Jobs: finished deploys spread over the environments and the last week, plus a few
        // queued ones (the overview lists them).
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {JOBS}) \
             INSERT INTO jobs (command, kind, environment, version, state, requested_by, platform, \
             run_at, created_at, started_at, finished_at, result) \
             SELECT 'park', 'deploy', CASE i % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'work' WHEN 2 THEN 'staging' ELSE 'production' END, \
             'v' || i, CASE WHEN i > {JOBS} - 12 THEN 'queued' ELSE 'succeeded' END, 'slack:T1:U' || (i % 50), 'slack', \
             {now} - {week} + i * 60000, {now} - {week} + i * 60000, {now} - {week} + i * 60000, {now} - {week} + i * 60000 + 5000, \
             'Deployed v' || i FROM n"
        ),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {DEPLOYMENTS}) \
             INSERT INTO deployments (job_id, environment, version, kind, requested_by, status, verified, health, \
             started_at, finished_at, duration_ms) \
             SELECT i * 9, CASE (i * 9) % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'work' WHEN 2 THEN 'staging' ELSE 'production' END, \
             'v' || (i * 9), 'deploy', 'slack:T1:U' || (i % 50), CASE WHEN i % 10 = 0 THEN 'unhealthy' ELSE 'verified' END, \
             i % 10 <> 0, 'returning 200', {now} - {week} + i * 540000, {now} - {week} + i * 540000 + 5000, 5000 FROM n"
        ),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {JOBS}) \
             INSERT INTO audit_events (at, actor, platform, action, environment, job_id, detail) \
             SELECT {now} - {week} + i * 60000, 'slack:T1:U' || (i % 50), 'slack', 'job_succeeded', \
             CASE i % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'work' WHEN 2 THEN 'staging' ELSE 'production' END, i, 'Deployed v' || i FROM n"
        ),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             INSERT INTO probe_results (target, environment, at, ok, status, latency_ms, error) \
             SELECT CASE i % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'work' WHEN 2 THEN 'staging' ELSE 'production' END, \
             CASE i % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'work' WHEN 2 THEN 'staging' ELSE 'production' END, \
             {now} - {week} + (i / 4) * 30000, i % 997 <> 0, 200, 12, NULL FROM n",
            4 * week / 30_000
        ),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {LOG_LINES}) \
             INSERT INTO job_logs (job_id, step, stream, line, at) \
             SELECT 1, CASE WHEN i <= {LOG_LINES} / 2 THEN 'build' ELSE 'roll out' END, 'stdout', \
             'line ' || i || ' of a long build log', {now} FROM n"
        ),
    ];
    for sql in statements {
        deckhand::on_db!(&app.db, p => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await.unwrap();
        });
    }
    app.db.close().await;
}

/// (page, first request ms, p50 ms, p99 ms, max ms) for each page, measured on `db`.
pub async fn pages(db: &Db) -> Vec<(&'static str, f64, f64, f64, f64)> {
    let dir = workspace(EXTRA);
    seed(dir.path(), db).await;
    let s = serve(dir.path(), &db.url, &[]).await;
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for page in [
        "/",
        "/environments/staging",
        "/jobs/1",
        "/audit",
        "/incidents",
    ] {
        let url = format!("http://127.0.0.1:{}{page}", s.port);
        let mut lat = Vec::with_capacity(ROUNDS);
        let mut first = 0.0;
        for round in 0..ROUNDS + 10 {
            let t = Instant::now();
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{page}");
            let body = r.text().await.unwrap();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if round == 0 {
                first = ms;
            }
            if round >= 10 {
                lat.push(ms);
            }
            if round == 0 && page == "/" {
                assert!(
                    ENVS.iter()
                        .all(|e| body.contains(&format!("data-env=\"{e}\"")))
                );
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        out.push((
            page,
            first,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            *lat.last().unwrap(),
        ));
    }
    out
}

/// Print and return the Markdown section for every backend.
pub async fn run(backends: &[(&str, Db)]) -> String {
    let mut md = format!(
        "## Status pages: {JOBS} jobs, {DEPLOYMENTS} deployments, {JOBS} audit events, a week of probes for {} environments, a {LOG_LINES}-line log; sequential GETs over loopback ({ROUNDS} each)\n\n\
         | backend | page | first request ms | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
        ENVS.len()
    );
    for (name, db) in backends {
        for (page, first, p50, p99, max) in pages(db).await {
            println!(
                "ui {name:<12} {page:<24} first {first:>7.2} ms p50 {p50:>7.2} ms p99 {p99:>7.2} ms max {max:>7.2} ms"
            );
            let _ = writeln!(
                md,
                "| {name} | `{page}` | {first:.2} | {p50:.2} | {p99:.2} | {max:.2} |"
            );
        }
    }
    md
}
