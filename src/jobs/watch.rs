//! The watch window after a deploy's health check: the environment's PromQL checks are
//! evaluated every `interval_seconds` (and once before the deploy, as the baseline), its
//! health URL is probed, and a P0/P1 alert for it arriving meanwhile breaks the watch. The
//! version is verified only when the watch ends clean.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::catalog::JobKind;
use crate::config::watch::{OnNoData, Unit, WatchConfig, show};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::jobs::env_of;
use crate::jobs::health;
use crate::jobs::run::JobRun;
use crate::outbox::routes::notices;
use crate::support::prometheus::{PromQuery, instant};

/// One check's value, or why it has none.
pub(crate) type Reading = Result<f64, String>;

/// How a watch ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WatchEnd {
    Clean,
    /// What broke it, with its value: "error rate 0.25 (above max 0.05)".
    Broke(String),
    /// `/cancel` during the watch.
    Cancelled,
    /// The server shut down: the job is left for the next start to report.
    Abandoned,
}

/// One check's figures, for the report.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub name: String,
    pub unit: Option<Unit>,
    pub before: Reading,
    /// The last reading during the watch (the baseline's when none was taken).
    pub after: Reading,
}

#[derive(Debug, Clone)]
pub(crate) struct WatchOutcome {
    pub seconds: u64,
    pub end: WatchEnd,
    pub figures: Vec<Figure>,
}

impl WatchOutcome {
    /// "error rate 0.12 % (before 0.1 %)", one per check.
    pub fn figure_lines(&self) -> Vec<(String, String)> {
        self.figures
            .iter()
            .map(|f| {
                let v = |r: &Reading| match r {
                    Ok(v) => show(*v, f.unit),
                    Err(_) => "no data".into(),
                };
                (
                    f.name.clone(),
                    format!("{} (before {})", v(&f.after), v(&f.before)),
                )
            })
            .collect()
    }
}

/// The watch this job gets, if any: deploys on an environment with a `watch`, whose checks
/// have a Prometheus to query (a watch with checks and no `[prometheus] url` is off).
pub(crate) fn plan<'a>(r: &JobRun<'a>) -> Option<&'a WatchConfig> {
    if r.kind != JobKind::Deploy {
        return None;
    }
    let w = r.env_cfg?.watch.as_ref()?;
    if !w.checks.is_empty() && r.app.settings.config.prometheus.url.is_none() {
        return None;
    }
    Some(w)
}

/// "10 min", "90 s".
pub(crate) fn length(seconds: u64) -> String {
    if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// Every check once, in order. A hanging Prometheus costs each query its own timeout.
pub(crate) async fn readings(r: &JobRun<'_>, w: &WatchConfig) -> Vec<Reading> {
    let cfg = &r.app.settings.config.prometheus;
    let Some(url) = &cfg.url else {
        return w
            .checks
            .iter()
            .map(|_| Err("no Prometheus configured".into()))
            .collect();
    };
    let token = r.app.settings.secrets.prometheus_token.as_ref();
    let q = PromQuery {
        http: &r.app.http,
        url,
        token: token.map(|t| t.expose_secret()),
        timeout: Duration::from_secs(cfg.timeout_seconds),
    };
    let all = w.checks.iter().map(|c| instant(&q, &c.query));
    futures_util::future::join_all(all).await
}

/// Watch for `w.seconds`, from the health check's pass. `baseline` is [`readings`] taken
/// before the deploy.
pub(crate) async fn watch(r: &JobRun<'_>, w: &WatchConfig, baseline: Vec<Reading>) -> WatchOutcome {
    announce(r, w).await;
    let env = env_of(r.job);
    let already: HashSet<i64> = match r.app.db.firing_severe(env).await {
        Ok(v) => v.into_iter().map(|i| i.id).collect(),
        Err(_) => HashSet::new(),
    };
    let mut figures: Vec<Figure> = w
        .checks
        .iter()
        .zip(baseline)
        .map(|(c, b)| Figure {
            name: c.name.clone(),
            unit: c.unit,
            after: b.clone(),
            before: b,
        })
        .collect();
    // Since when each check has had no data, in a row.
    let mut dry: Vec<Option<tokio::time::Instant>> = vec![None; w.checks.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(w.seconds);
    let every = Duration::from_secs(w.interval_seconds.max(1));
    let outcome = |end, figures| WatchOutcome {
        seconds: w.seconds,
        end,
        figures,
    };
    loop {
        // A hanging Prometheus holds a round for its query timeout at most; a cancel or
        // the shutdown does not wait for it.
        let stopped = tokio::select! {
            b = round(r, w, &already, &mut figures, &mut dry) => Ok(b),
            _ = r.stops.cancel.cancelled() => Err(WatchEnd::Cancelled),
            _ = r.stops.shutdown.cancelled() => Err(WatchEnd::Abandoned),
        };
        match stopped {
            Err(end) => return outcome(end, figures),
            Ok(Some(b)) => {
                tracing::warn!(job_id = r.job.id, broke = %b, "watch broke");
                return outcome(WatchEnd::Broke(b), figures);
            }
            Ok(None) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            // Still without data at the end: not a clean watch.
            let end = match dry_break(w, &figures) {
                Some(b) => WatchEnd::Broke(b),
                None => WatchEnd::Clean,
            };
            return outcome(end, figures);
        }
        tokio::select! {
            _ = tokio::time::sleep(every.min(deadline - now)) => {}
            _ = r.stops.cancel.cancelled() => return outcome(WatchEnd::Cancelled, figures),
            _ = r.stops.shutdown.cancelled() => return outcome(WatchEnd::Abandoned, figures),
        }
    }
}

/// With `on_no_data = "fail"`, the first check whose last reading had no data.
fn dry_break(w: &WatchConfig, figures: &[Figure]) -> Option<String> {
    if w.on_no_data != OnNoData::Fail {
        return None;
    }
    w.checks
        .iter()
        .zip(figures)
        .find_map(|(c, f)| match &f.after {
            Err(why) => Some(format!("no data for {} ({why})", c.name)),
            Ok(_) => None,
        })
}

/// One evaluation: checks, the health URL, new severe alerts. `Some`: what broke the watch.
async fn round(
    r: &JobRun<'_>,
    w: &WatchConfig,
    already: &HashSet<i64>,
    figures: &mut [Figure],
    dry: &mut [Option<tokio::time::Instant>],
) -> Option<String> {
    let env = env_of(r.job);
    let mut broke = None;
    let grace = Duration::from_secs(w.no_data_grace_seconds);
    for (((c, f), since), reading) in w
        .checks
        .iter()
        .zip(figures.iter_mut())
        .zip(dry.iter_mut())
        .zip(readings(r, w).await)
    {
        match &reading {
            Ok(v) => {
                *since = None;
                if let Some(why) = c.broken_by(*v) {
                    broke.get_or_insert(format!("{} {} ({why})", c.name, c.show(*v)));
                }
            }
            Err(why) if w.on_no_data == OnNoData::Fail => {
                let first = *since.get_or_insert_with(tokio::time::Instant::now);
                if first.elapsed() >= grace {
                    broke.get_or_insert(format!("no data for {} ({why})", c.name));
                } else {
                    tracing::info!(job_id = r.job.id, check = %c.name, why = %why, "no data yet");
                }
            }
            Err(why) => {
                tracing::info!(job_id = r.job.id, check = %c.name, why = %why, "no data; on_no_data = pass");
            }
        }
        f.after = reading;
    }
    if broke.is_some() {
        return broke;
    }
    if let Ok(firing) = r.app.db.firing_severe(env).await
        && let Some(i) = firing.into_iter().find(|i| !already.contains(&i.id))
    {
        return Some(format!("alert {} ({}) fired", i.title, i.severity));
    }
    let e = r.env_cfg?;
    if let Some(url) = &e.health_url {
        let per = Duration::from_secs(e.health_timeout_seconds.clamp(1, 5));
        let h = health::check_once(&r.app.http, url, per, e, r.job.version.as_deref()).await;
        if !h.ok {
            return Some(format!("health check {}", h.detail));
        }
    }
    None
}

/// "production: watching abc1234 for 10 min (job 7)", with the Cancel button.
async fn announce(r: &JobRun<'_>, w: &WatchConfig) {
    let job = r.job;
    let n = Notice::new(
        NoticeKind::StepStarted,
        Tone::Progress,
        format!(
            "{}: health check passing, watching {} for {} (job {})",
            env_of(job),
            job.version.as_deref().unwrap_or("-"),
            length(w.seconds),
            job.id
        ),
    )
    .env(job.environment.as_deref())
    .version(job.version.as_deref())
    .job(job.id)
    .action("cancel", "Cancel", job.id, true);
    let until = crate::domain::time::now_ms() + (w.seconds * 1000) as i64;
    let mut writes = vec![crate::store::jobs::watch_started(job.id, until)];
    writes.extend(notices(&r.app.settings, job, &n));
    if let Err(e) = r.app.db.apply(&writes).await {
        tracing::warn!(job_id = job.id, error = %e, "cannot record the watch's start");
    }
    r.app.outbox_wake.notify_one();
}
