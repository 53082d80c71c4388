//! Scheduled digests of uptime, deployments and cost.
//!
//! A digest (`[[digests]]`) looks back `period_days` from its firing instant and reports, per
//! environment, uptime from the stored probe results against the SLO, incidents and the time
//! they were open, and deployments; then each cost source's month to date, forecast, budget
//! and biggest movers. It goes out as one notice with a PNG chart stored in `attachments`
//! (uploaded to Slack, attached on Discord); the notice's fields are the text fallback.
//! [`scheduler`] decides when; `deckhand digest NAME --now` prints one in the terminal.

pub mod render;
pub mod scheduler;
pub mod stats;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

pub use crate::config::digest::{DigestConfig, Section, config_problems, cost_channels};
pub use render::{chart, notice, render_terminal};
pub use scheduler::{Fired, run, tick};
use stats::{DeployStats, Uptime};

use crate::app::App;
use crate::on_db;
use crate::reports::cost::CostSummary;
use crate::store::{Arg, Db, Result, Write};
use crate::domain::time::now_ms;

/// A once-only claim as a write, so it commits or rolls back with the notices it guards
/// (`Db::claim_once` in a transaction): put it first in [`Db::apply_if_first`].
pub fn claim_write(kind: &str, key: &str, owner: &str) -> Write {
    Write::Sql {
        sql: "INSERT INTO claims (kind, key, at, owner) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO NOTHING".into(),
        args: vec![
            Arg::Text(kind.into()),
            Arg::Text(key.into()),
            Arg::Int(now_ms()),
            Arg::Text(owner.into()),
        ],
    }
}

/// Delivery attempts after which a chart that keeps failing to upload is dropped and the
/// digest's text goes alone.
pub const CHART_TRIES: i64 = 3;

/// A file stored for a notice.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Db {
    /// Has someone already claimed this? A cheap look before expensive work; the claim
    /// itself is still made atomically with the work's result.
    pub async fn claimed(&self, kind: &str, key: &str) -> Result<bool> {
        let n: i64 = on_db!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM claims WHERE kind = $1 AND key = $2")
                .bind(kind).bind(key).fetch_one(p).await?
        });
        Ok(n > 0)
    }

    pub async fn store_attachment(
        &self,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<i64> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("INSERT INTO attachments (created_at, name, content_type, data) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(now_ms()).bind(name).bind(content_type).bind(data).fetch_one(p).await?
        }))
    }

    pub async fn attachment(&self, id: i64) -> Result<Option<Attachment>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT name, content_type, data FROM attachments WHERE id = $1")
                .bind(id).fetch_optional(p).await?
        }))
    }

    /// Remove attachments created before `before` (ms).
    pub async fn prune_attachments(&self, before: i64) -> Result<u64> {
        Ok(on_db!(self, p => {
            sqlx::query("DELETE FROM attachments WHERE created_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    pub async fn delete_attachment(&self, id: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM attachments WHERE id = $1").bind(id).execute(p).await?;
        });
        Ok(())
    }
}

/// One environment's part of a digest.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvReport {
    pub name: String,
    pub uptime: Uptime,
    /// Incidents open at any time in the period, by severity.
    pub incidents: BTreeMap<String, i64>,
    /// Time with at least one incident open, within the period.
    pub downtime_ms: i64,
    pub deploys: DeployStats,
}

/// Everything a digest reports, gathered at one instant.
#[derive(Debug, Clone)]
pub struct Digest {
    pub name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: Tz,
    pub slo_percent: f64,
    pub include: Vec<Section>,
    pub environments: Vec<EnvReport>,
    /// Per source: its summary, or (source, why it could not be read).
    pub costs: Vec<std::result::Result<CostSummary, (String, String)>>,
    /// Uptime of all environments together, per local day.
    pub uptime_daily: Vec<(NaiveDate, f64)>,
}

/// A digest that goes out after its time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Late {
    pub now: DateTime<Utc>,
    /// Earlier firings that were missed too; only the newest is posted.
    pub missed: usize,
}

/// Gather the digest for the period ending at `to`.
pub async fn build(app: &App, cfg: &DigestConfig, to: DateTime<Utc>) -> anyhow::Result<Digest> {
    let tz = cfg.schedule.time_zone();
    let from = to - Duration::days(i64::from(cfg.period_days));
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let names: Vec<String> = if cfg.environments.is_empty() {
        app.settings.config.environments.keys().cloned().collect()
    } else {
        cfg.environments.clone()
    };
    let days = stats::local_days(tz, from, to);
    let mut daily = vec![Uptime::default(); days.len()];
    let mut environments = Vec::new();
    for name in names {
        let mut env = EnvReport {
            name: name.clone(),
            uptime: Uptime::default(),
            incidents: BTreeMap::new(),
            downtime_ms: 0,
            deploys: DeployStats::default(),
        };
        if cfg.includes(Section::Uptime) {
            for (i, (_, a, b)) in days.iter().enumerate() {
                let u = probe_counts(&app.db, &name, *a, *b).await?;
                daily[i].add(u);
                env.uptime.add(u);
            }
            let rows = incidents(&app.db, &name, from_ms, to_ms).await?;
            for (severity, _, _) in &rows {
                *env.incidents.entry(severity.clone()).or_default() += 1;
            }
            let spans: Vec<(i64, Option<i64>)> = rows.iter().map(|r| (r.1, r.2)).collect();
            env.downtime_ms = stats::covered_ms(&spans, from_ms, to_ms);
        }
        if cfg.includes(Section::Deployments) {
            env.deploys =
                DeployStats::from_rows(&deployments(&app.db, &name, from_ms, to_ms).await?);
        }
        environments.push(env);
    }
    let costs = if cfg.includes(Section::Cost) {
        crate::reports::cost::summaries(
            app,
            &app.settings.config.costs,
            to.date_naive(),
            cfg.period_days,
        )
        .await
    } else {
        Vec::new()
    };
    let uptime_daily = days
        .iter()
        .zip(&daily)
        .filter_map(|((d, _, _), u)| u.percent().map(|p| (*d, p)))
        .collect();
    Ok(Digest {
        name: cfg.name.clone(),
        from,
        to,
        tz,
        slo_percent: cfg.slo_percent,
        include: cfg.include.clone(),
        environments,
        costs,
        uptime_daily,
    })
}

async fn probe_counts(db: &Db, env: &str, from: i64, to: i64) -> Result<Uptime> {
    let (total, ok): (i64, Option<i64>) = on_db!(db, p => {
        sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN ok THEN 1 ELSE 0 END) FROM probe_results \
             WHERE environment = $1 AND at >= $2 AND at < $3",
        )
        .bind(env).bind(from).bind(to).fetch_one(p).await?
    });
    Ok(Uptime {
        ok: ok.unwrap_or(0),
        total,
    })
}

/// Incidents of `env` open at any time in `[from, to)`: (severity, first_seen, resolved_at).
async fn incidents(
    db: &Db,
    env: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, Option<i64>)>> {
    Ok(on_db!(db, p => {
        sqlx::query_as(
            "SELECT severity, first_seen, resolved_at FROM incidents WHERE environment = $1 \
             AND first_seen < $3 AND (resolved_at IS NULL OR resolved_at > $2) ORDER BY first_seen",
        )
        .bind(env).bind(from).bind(to).fetch_all(p).await?
    }))
}

/// Deployments of `env` started in `[from, to)`: (kind, status, duration_ms).
async fn deployments(
    db: &Db,
    env: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, String, Option<i64>)>> {
    Ok(on_db!(db, p => {
        sqlx::query_as(
            "SELECT kind, status, duration_ms FROM deployments WHERE environment = $1 \
             AND started_at >= $2 AND started_at < $3 ORDER BY id",
        )
        .bind(env).bind(from).bind(to).fetch_all(p).await?
    }))
}
