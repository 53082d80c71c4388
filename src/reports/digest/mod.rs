//! Scheduled digests of uptime, deployments and cost.
//!
//! A digest (`[[digests]]`) looks back `period_days` from its firing instant and reports, per
//! environment, uptime from the stored probe results (time-weighted over the monitored part
//! of the period, see [`stats::Uptime`]) against the SLO, incidents and the time
//! they were open, and deployments; then each cost source's month to date, forecast, budget
//! and biggest movers. It goes out as one notice with a PNG chart stored in `attachments`
//! (uploaded to Slack, attached on Discord); the notice's fields are the text fallback.
//! `scheduler` decides when; `deckhand digest NAME --now` prints one in the terminal.

pub(crate) mod render;
pub(crate) mod scheduler;
pub(crate) mod stats;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

pub use crate::config::digest::{DigestConfig, Section, config_problems, cost_channels};
pub use crate::support::chart::{SLO_COLOR, UptimePanel};
pub use render::{chart, notice, render_terminal, uptime_panel};
pub use scheduler::{Fired, run, tick};
use stats::{DeployStats, Uptime};

use crate::app::App;
use crate::reports::cost::CostSummary;
pub use crate::store::reports::{Attachment, claim_write};
use crate::store::{Db, Result};

/// Delivery attempts after which a chart that keeps failing to upload is dropped and the
/// digest's text goes alone.
pub const CHART_TRIES: i64 = 3;

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
    /// For an environment with a database: when its last verified backup was taken
    /// (`Some(None)`: never). `None`: no database configured.
    pub last_backup: Option<Option<i64>>,
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
    /// Per environment, its uptime per local day (days without probe results left out).
    pub uptime_daily: Vec<(String, Vec<(NaiveDate, f64)>)>,
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
    let cap = Uptime::cap_ms(app.settings.config.probes.interval_seconds);
    let mut uptime_daily = Vec::new();
    let mut environments = Vec::new();
    for name in names {
        let mut env = EnvReport {
            name: name.clone(),
            uptime: Uptime::default(),
            incidents: BTreeMap::new(),
            downtime_ms: 0,
            deploys: DeployStats::default(),
            last_backup: None,
        };
        if app
            .settings
            .config
            .environments
            .get(&name)
            .is_some_and(|e| e.database.is_some())
        {
            let last = app.db.verified_backups(&name, 1).await?;
            env.last_backup = Some(last.first().map(|b| b.at));
        }
        if cfg.includes(Section::Uptime) {
            let mut daily = Vec::new();
            for (day, a, b) in &days {
                let u = Uptime::of_targets(&app.db.probe_time(&name, *a, *b, cap).await?);
                env.uptime.add(u);
                daily.extend(u.percent().map(|p| (*day, p)));
            }
            uptime_daily.push((name.clone(), daily));
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

/// Incidents of `env` open at any time in `[from, to)`: (severity, first_seen, resolved_at).
async fn incidents(
    db: &Db,
    env: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, Option<i64>)>> {
    db.incident_spans(env, from, to).await
}

/// Deployments of `env` started in `[from, to)`: (kind, status, duration_ms).
async fn deployments(
    db: &Db,
    env: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, String, Option<i64>)>> {
    db.deployment_spans(env, from, to).await
}
