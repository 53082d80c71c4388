//! What a job means: run its steps, verify health, record history, roll back when told,
//! and report every state change through the outbox in the same transaction.

pub mod health;
pub mod steps;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::app::App;
use crate::config::catalog::{Command, JobKind};
use crate::domain::notice::{Notice, NoticeKind, Report, Tone};
use crate::jobs::health::HealthOutcome;
use crate::jobs::steps::run_steps;
use crate::store::Write;
use crate::store::history::status as dstatus;
use crate::store::jobs::{JobRow, state, transition};
use crate::support::runner::{CancelToken, Redactor};

/// What running a job's steps produced.
pub(crate) struct StepsResult {
    /// `None`: all steps succeeded. Otherwise which step failed and how.
    pub failure: Option<String>,
    /// Stopped by shutdown: leave the job for the next start to report.
    pub abandoned: bool,
    pub facts: BTreeMap<String, String>,
}

/// Why the steps were stopped early.
#[derive(Clone, Default)]
pub struct Stops {
    /// Someone pressed Cancel, or the lease was lost.
    pub cancel: CancelToken,
    /// The server's shutdown deadline passed.
    pub shutdown: CancelToken,
}

/// Run a claimed job to its end.
pub async fn execute(app: Arc<App>, job: JobRow, shutdown: CancelToken) {
    // Every line logged for this job, in this task or those it spawns, carries these.
    let span = tracing::info_span!("job", job_id = job.id, environment = job.environment.as_deref().unwrap_or("-"), command = %job.command);
    execute_in_span(app, job, shutdown).instrument(span).await
}

async fn execute_in_span(app: Arc<App>, job: JobRow, shutdown: CancelToken) {
    let started = Instant::now();
    let stops = Stops {
        cancel: CancelToken::new(),
        shutdown,
    };
    let hb = tokio::spawn(heartbeat(app.clone(), job.id, stops.cancel.clone()).in_current_span());
    let result = run(&app, &job, &stops).await;
    hb.abort();
    let (final_state, writes) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            tracing::warn!(
                job_id = job.id,
                "job left running at shutdown; the next start reports it"
            );
            return;
        }
        Err(e) => {
            let reason = format!("internal error: {e}");
            tracing::error!(job_id = job.id, error = %e, "job failed");
            let n = Notice::new(
                NoticeKind::JobFailed,
                Tone::Danger,
                format!("{} on {} failed: {reason}", job.command, env_of(&job)),
            )
            .env(job.environment.as_deref())
            .version(job.version.as_deref())
            .job(job.id);
            let mut w = vec![transition(
                job.id,
                &[state::RUNNING],
                state::FAILED,
                Some(reason.clone()),
                Some(&app.worker_id),
            )];
            w.extend(notices(&app, &job, &n));
            w.push(audit(&job, "job_failed", reason));
            (state::FAILED, w)
        }
    };
    match apply_retrying(&app, &writes).await {
        Ok(_) => {
            crate::support::metrics::job_finished(
                &job.kind,
                final_state,
                started.elapsed().as_secs_f64(),
            );
            tracing::info!(job_id = job.id, state = final_state, "job finished");
        }
        Err(e) => {
            // The lease will run out and recovery will report the job as interrupted.
            tracing::error!(job_id = job.id, error = %e, "cannot record the end of a job");
        }
    }
    let _ = app.db.set_step_pgid(job.id, None).await;
    app.poke();
}

/// The start and the end of a job must be recorded (nothing runs before its start is on
/// record): ride out a database outage (a PostgreSQL restart)
/// for most of a lease before giving up; a conflict (the lease was lost) is final.
async fn apply_retrying(app: &App, writes: &[Write]) -> crate::store::Result<Vec<i64>> {
    let lease = Duration::from_secs(app.settings.config.queue.lease_seconds);
    let deadline = Instant::now() + lease.mul_f64(0.8);
    loop {
        match app.db.apply(writes).await {
            Err(e) if !crate::store::jobs::is_conflict(&e) && Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot record the end of a job yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

pub(crate) fn env_of(job: &JobRow) -> &str {
    job.environment.as_deref().unwrap_or("-")
}

/// Extend the lease every third of its length; cancel the job when the lease is lost or
/// someone asked to cancel it.
async fn heartbeat(app: Arc<App>, id: i64, cancel: CancelToken) {
    let lease = app.settings.config.queue.lease_seconds * 1000;
    let every = Duration::from_millis((lease / 3).max(200));
    loop {
        tokio::time::sleep(every).await;
        match app.db.heartbeat(id, &app.worker_id, lease as i64).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                cancel.cancel();
            }
            Ok(None) => {
                tracing::warn!(job_id = id, "lease lost; stopping the job");
                cancel.cancel();
                return;
            }
            // A database blip: try again; the lease is long enough to ride it out.
            Err(e) => tracing::warn!(job_id = id, error = %e, "heartbeat failed"),
        }
    }
}

/// The job's steps and checks. `Ok(None)`: abandoned at shutdown.
async fn run(
    app: &Arc<App>,
    job: &JobRow,
    stops: &Stops,
) -> anyhow::Result<Option<(&'static str, Vec<Write>)>> {
    let cmd = app
        .catalog
        .get(&job.command)
        .ok_or_else(|| anyhow::anyhow!("command {:?} is no longer in the catalog", job.command))?;
    let kind = JobKind::parse(&job.kind).unwrap_or(JobKind::Custom);
    let env_cfg = job
        .environment
        .as_ref()
        .and_then(|e| app.settings.config.environments.get(e));
    let started = Instant::now();

    let title = match (kind, &job.version) {
        (JobKind::Deploy, Some(v)) => format!("Deploying {v} to {} (job {})", env_of(job), job.id),
        (JobKind::Rollback, Some(v)) => {
            format!("Rolling {} back to {v} (job {})", env_of(job), job.id)
        }
        _ => format!(
            "Running {} on {} (job {})",
            job.command,
            env_of(job),
            job.id
        ),
    };
    let mut start_writes = notices(
        app,
        job,
        &Notice::new(NoticeKind::DeploymentStarted, Tone::Progress, title)
            .env(job.environment.as_deref())
            .version(job.version.as_deref())
            .job(job.id)
            .field("Requested by", &job.requested_by)
            .action("cancel", "Cancel", job.id, true),
    );
    start_writes.push(audit(
        job,
        "job_started",
        format!("attempt {}", job.attempts),
    ));
    let mut deployment_id = None;
    if matches!(kind, JobKind::Deploy | JobKind::Rollback)
        && let (Some(e), Some(v)) = (&job.environment, &job.version)
    {
        start_writes.insert(
            0,
            Write::DeploymentStart {
                job_id: job.id,
                environment: e.clone(),
                version: v.clone(),
                kind: job.kind.clone(),
                requested_by: job.requested_by.clone(),
            },
        );
        deployment_id = Some(apply_retrying(app, &start_writes).await?[0]);
    }
    if deployment_id.is_none() {
        apply_retrying(app, &start_writes).await?;
    }
    app.outbox_wake.notify_one();

    // Rotate-secret: a fresh value from the OS, only ever on the step's stdin.
    let secret = if kind == JobKind::RotateSecret {
        let name = job.args_map().get("name").cloned().unwrap_or_default();
        let spec = app
            .settings
            .config
            .secrets
            .get(&name)
            .cloned()
            .unwrap_or_default();
        Some(generate_secret(
            spec.length,
            spec.alphabet.chars().as_bytes(),
        )?)
    } else {
        None
    };
    let redactor = match &secret {
        Some(s) => app.redactor.with(s),
        None => app.redactor.clone(),
    };

    let steps = run_steps(
        app,
        job,
        cmd,
        job.version.as_deref(),
        &redactor,
        secret.as_ref(),
        stops,
    )
    .await?;
    if steps.abandoned {
        return Ok(None);
    }
    let fingerprint = secret.as_ref().map(|s| fingerprint(s));
    drop(secret);

    // Deploys and rollbacks are checked against the environment's health URL.
    // Deploys and rollbacks must report the new version; a rotated secret must leave the
    // environment healthy after its restart.
    let verifies = matches!(
        kind,
        JobKind::Deploy | JobKind::Rollback | JobKind::RotateSecret
    );
    let health = match (&steps.failure, verifies, env_cfg) {
        (None, true, Some(e)) if kind == JobKind::RotateSecret && e.health_url.is_some() => {
            Some(health::verify(&app.http, e, None).await)
        }
        (None, true, Some(e)) if kind != JobKind::RotateSecret => {
            Some(health::verify(&app.http, e, job.version.as_deref()).await)
        }
        _ => None,
    };
    let health_url = env_cfg.and_then(|e| e.health_url.clone());
    // Deploys and migrations always say whether a migration ran; other jobs only if a
    // step reported one.
    let migration = steps.facts.get("migration").cloned().unwrap_or_else(|| {
        if matches!(kind, JobKind::Deploy | JobKind::Rollback | JobKind::Migrate) {
            "not needed".into()
        } else {
            String::new()
        }
    });

    let mut report = Report {
        environment: env_of(job).to_owned(),
        version: job.version.clone().unwrap_or_else(|| "-".into()),
        migration: migration.clone(),
        health_url: health_url.clone(),
        health: health
            .as_ref()
            .map(|h| h.detail.clone())
            .unwrap_or_else(|| "not checked".into()),
        status: String::new(),
        duration_ms: 0,
        requested_by: job.requested_by.clone(),
        extra: Vec::new(),
    };
    for (k, v) in &steps.facts {
        if k != "migration" {
            report.extra.push((capitalise(k), v.clone()));
        }
    }
    if let (Some(fp), Some(args)) = (&fingerprint, job.args_map().get("name")) {
        report.extra.push(("Secret".into(), args.clone()));
        report.extra.push(("Fingerprint".into(), fp.clone()));
    }
    if let Some(reason) = &job.emergency {
        report
            .extra
            .push(("Emergency override".into(), reason.clone()));
    }

    let ok = steps.failure.is_none() && health.as_ref().is_none_or(|h| h.ok);
    let mut writes = Vec::new();
    if let Some(id) = deployment_id {
        writes.push(Write::DeploymentFinish {
            id,
            status: match (&steps.failure, &health) {
                (Some(_), _) => dstatus::FAILED,
                (None, Some(h)) if !h.ok => dstatus::UNHEALTHY,
                _ => dstatus::VERIFIED,
            }
            .into(),
            verified: ok,
            health: health.as_ref().map(|h| h.detail.clone()),
            migration: Some(migration.clone()),
        });
    }
    let version = job.version.as_deref().unwrap_or("-");
    let env = env_of(job);
    let reason = steps.failure.clone().or_else(|| {
        health
            .as_ref()
            .filter(|h| !h.ok)
            .map(|h| format!("health check failed: {}", h.detail))
    });

    // Auto-rollback: a deploy that failed goes back to the last verified version.
    let mut rolled_back: Option<(String, HealthOutcome)> = None;
    if let (Some(_), JobKind::Deploy, Some(e)) = (&reason, kind, env_cfg)
        && e.auto_rollback
        && !stops.cancel.is_cancelled()
        && let Some(prev) = app.db.previous_verified(env, Some(version)).await?
    {
        rolled_back =
            Some(auto_rollback(app, job, cmd, &prev, &redactor, stops, &mut writes).await?);
        if stops.shutdown.is_cancelled() {
            return Ok(None);
        }
    }

    report.duration_ms = started.elapsed().as_millis() as i64;
    let cancelled = stops.cancel.is_cancelled();
    let (final_state, notice) = match (&reason, &rolled_back) {
        (None, _) => {
            // "verified working" only when a health check proved it.
            report.status = if health
                .as_ref()
                .is_some_and(|h| h.ok && h.detail != "not configured")
            {
                "verified working".into()
            } else {
                "succeeded".into()
            };
            let (k, title) = match kind {
                JobKind::Deploy => (
                    NoticeKind::DeploymentComplete,
                    format!("Deployed {version} to {env}, {}", health_phrase(&health)),
                ),
                JobKind::Rollback => (
                    NoticeKind::RolledBack,
                    format!("Rolled {env} back to {version}, {}", health_phrase(&health)),
                ),
                JobKind::Migrate => (
                    NoticeKind::MigrationApplied,
                    format!("Migration on {env}: {migration}"),
                ),
                JobKind::RotateSecret => (
                    NoticeKind::SecretRotated,
                    format!(
                        "Rotated {} on {env} (fingerprint {})",
                        job.args_map().get("name").cloned().unwrap_or_default(),
                        fingerprint.clone().unwrap_or_default()
                    ),
                ),
                JobKind::Custom => (
                    NoticeKind::JobSucceeded,
                    format!("{} on {env} succeeded (job {})", job.command, job.id),
                ),
            };
            let mut n = report.apply(Notice::new(k, Tone::Success, title));
            if kind == JobKind::Deploy {
                n = n.action("rollback", "Roll back", job.id, true);
            }
            (state::SUCCEEDED, n)
        }
        (Some(r), Some((prev, h))) => {
            report.status = format!("failed – {r}");
            report.extra.push(("Rolled back to".into(), prev.clone()));
            report
                .extra
                .push(("Rollback health".into(), h.detail.clone()));
            let title = format!(
                "Deployment of {version} to {env} failed {}; rolled back to {prev}, {}",
                if r.starts_with("health check") {
                    "health check"
                } else {
                    "a step"
                },
                if h.ok {
                    "health check passing".to_owned()
                } else {
                    format!("but the rollback health check failed too: {}", h.detail)
                }
            );
            (
                state::FAILED,
                report.apply(Notice::new(NoticeKind::RolledBack, Tone::Danger, title)),
            )
        }
        (Some(r), None) => {
            report.status = if cancelled {
                "cancelled".into()
            } else {
                format!("failed – {r}")
            };
            let what = match kind {
                JobKind::Deploy => format!("Deployment of {version} to {env}"),
                JobKind::Rollback => format!("Rollback of {env} to {version}"),
                _ => format!("{} on {env}", job.command),
            };
            if cancelled {
                (
                    state::CANCELLED,
                    report.apply(Notice::new(
                        NoticeKind::JobCancelled,
                        Tone::Warning,
                        format!("{what} was cancelled (job {})", job.id),
                    )),
                )
            } else {
                (
                    state::FAILED,
                    report.apply(Notice::new(
                        NoticeKind::DeploymentFailed,
                        Tone::Danger,
                        format!("{what} failed: {r}"),
                    )),
                )
            }
        }
    };
    let notice = notice.job(job.id);
    writes.push(transition(
        job.id,
        &[state::RUNNING],
        final_state,
        Some(notice.title.clone()),
        Some(&app.worker_id),
    ));
    writes.extend(notices(app, job, &notice));
    writes.push(audit(
        job,
        &format!("job_{final_state}"),
        notice.title.clone(),
    ));
    Ok(Some((final_state, writes)))
}

fn health_phrase(h: &Option<HealthOutcome>) -> String {
    match h {
        Some(h) if h.detail == "not configured" => "no health check configured".into(),
        Some(_) => "health check passing".into(),
        None => "not health-checked".into(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

async fn auto_rollback(
    app: &Arc<App>,
    job: &JobRow,
    cmd: &Command,
    prev: &str,
    redactor: &Redactor,
    stops: &Stops,
    writes: &mut Vec<Write>,
) -> anyhow::Result<(String, HealthOutcome)> {
    let env = env_of(job);
    tracing::warn!(
        job_id = job.id,
        to = prev,
        "health check failed; rolling back"
    );
    let id = app
        .db
        .apply(&[Write::DeploymentStart {
            job_id: job.id,
            environment: env.to_owned(),
            version: prev.to_owned(),
            kind: "auto_rollback".into(),
            requested_by: "deckhand (auto-rollback)".into(),
        }])
        .await?[0];
    let steps = run_steps(app, job, cmd, Some(prev), redactor, None, stops).await?;
    let env_cfg = app.settings.config.environments.get(env);
    let h = match (&steps.failure, env_cfg) {
        (None, Some(e)) => health::verify(&app.http, e, Some(prev)).await,
        (Some(f), _) => HealthOutcome {
            ok: false,
            detail: f.clone(),
        },
        (None, None) => HealthOutcome {
            ok: true,
            detail: "not configured".into(),
        },
    };
    writes.push(Write::DeploymentFinish {
        id,
        status: if h.ok {
            dstatus::VERIFIED
        } else if steps.failure.is_some() {
            dstatus::FAILED
        } else {
            dstatus::UNHEALTHY
        }
        .into(),
        verified: h.ok,
        health: Some(h.detail.clone()),
        migration: None,
    });
    Ok((prev.to_owned(), h))
}

/// Step log lines as the terminal shows them.
pub fn render_log_line(step: &str, stream: &str, line: &str) -> String {
    let mark = if stream == "stderr" { "!" } else { "│" };
    format!("    {mark} [{step}] {line}")
}

/// Human duration of a finished job.
pub fn job_duration(job: &JobRow) -> String {
    match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => fmt_duration(f - s),
        _ => "-".into(),
    }
}

use crate::domain::time::fmt_duration;
pub use crate::jobs::steps::{fingerprint, generate_secret};
pub use crate::jobs::worker::{recover, remind_locks, run_workers};
use crate::outbox::routes::notices;
use crate::store::jobs::audit;
