//! What a job means: run its steps, verify health, record history, roll back when told,
//! and report every state change through the outbox in the same transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::app::App;
use crate::catalog::{Command, JobKind};
use crate::health::{self, HealthOutcome};
use crate::history::status as dstatus;
use crate::notice::{Notice, NoticeKind, Report, Tone, fmt_duration};
use crate::queue::{JobRow, job_notice, state, transition};
use crate::runner::{self, CancelToken, Redactor, StepOutcome, StepSpec, Stream};
use crate::store::{AuditEvent, Write};

/// Where a job's notices go: its own platform and channel (or the environment's channel
/// there), and the environment's channels on the other enabled platforms.
pub fn routes(app: &App, job: &JobRow) -> Vec<(String, Option<String>)> {
    let env_channels = job
        .environment
        .as_ref()
        .and_then(|e| app.settings.config.environments.get(e))
        .map(|e| e.channels.clone())
        .unwrap_or_default();
    let mut out = vec![(
        job.platform.clone(),
        env_channels
            .get(&job.platform)
            .cloned()
            .or_else(|| job.channel.clone()),
    )];
    for (platform, ch) in env_channels {
        if platform != job.platform && app.settings.platform_enabled(&platform) {
            out.push((platform, Some(ch)));
        }
    }
    out
}

/// Outbox rows for one notice on every route of a job.
pub fn notices(app: &App, job: &JobRow, n: &Notice) -> Vec<Write> {
    routes(app, job)
        .into_iter()
        .map(|(p, c)| job_notice(job.id, &p, c.as_deref(), n))
        .collect()
}

pub fn audit(job: &JobRow, action: &str, detail: impl Into<String>) -> Write {
    Write::Audit(AuditEvent {
        actor: job.requested_by.clone(),
        platform: job.platform.clone(),
        action: action.to_owned(),
        environment: job.environment.clone(),
        job_id: Some(job.id),
        detail: detail.into(),
    })
}

/// Facts a step reports by printing `deckhand-report: KEY=VALUE`.
const REPORT_PREFIX: &str = "deckhand-report:";

/// What running a job's steps produced.
struct StepsResult {
    /// `None`: all steps succeeded. Otherwise which step failed and how.
    failure: Option<String>,
    /// Stopped by shutdown: leave the job for the next start to report.
    abandoned: bool,
    facts: BTreeMap<String, String>,
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
            crate::metrics::job_finished(&job.kind, final_state, started.elapsed().as_secs_f64());
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

/// The end of a job must be recorded: ride out a database outage (a PostgreSQL restart)
/// for most of a lease before giving up; a conflict (the lease was lost) is final.
async fn apply_retrying(app: &App, writes: &[Write]) -> crate::store::Result<Vec<i64>> {
    let lease = Duration::from_secs(app.settings.config.queue.lease_seconds);
    let deadline = Instant::now() + lease.mul_f64(0.8);
    loop {
        match app.db.apply(writes).await {
            Err(e) if !crate::queue::is_conflict(&e) && Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot record the end of a job yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

fn env_of(job: &JobRow) -> &str {
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
        deployment_id = Some(app.db.apply(&start_writes).await?[0]);
    }
    if deployment_id.is_none() {
        app.db.apply(&start_writes).await?;
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

/// Run every step of `cmd` in order, storing redacted output in the job log.
async fn run_steps(
    app: &Arc<App>,
    job: &JobRow,
    cmd: &Command,
    version: Option<&str>,
    redactor: &Redactor,
    secret: Option<&Zeroizing<String>>,
    stops: &Stops,
) -> anyhow::Result<StepsResult> {
    let cfg = &app.settings.config;
    let mut facts = BTreeMap::new();
    let env = step_env(app, job, version);
    let total = cmd.steps.len();
    let mut logged = 0usize;
    for (i, step) in cmd.steps.iter().enumerate() {
        let n = Notice::new(
            NoticeKind::StepStarted,
            Tone::Progress,
            format!(
                "{}: step {}/{total} \"{}\" running (job {})",
                env_of(job),
                i + 1,
                step.name,
                job.id
            ),
        )
        .env(job.environment.as_deref())
        .version(version)
        .job(job.id)
        .action("cancel", "Cancel", job.id, true);
        // Progress is best effort: a database blip must not fail the deploy itself.
        if let Err(e) = app.db.apply(&notices(app, job, &n)).await {
            tracing::warn!(job_id = job.id, error = %e, "cannot record step progress");
        }
        app.outbox_wake.notify_one();

        let mut vars = env.clone();
        vars.extend(step.env.clone());
        for k in &step.pass_env {
            if let Some(v) = std::env::var(k).ok().filter(|v| !v.is_empty()) {
                vars.insert(k.clone(), v);
            }
        }
        let timeout = Duration::from_secs(
            step.timeout_seconds
                .unwrap_or(cfg.runner.default_timeout_seconds),
        );
        let mut argv = step.argv.clone();
        if argv.first().is_some_and(|a| a == "deckhand") {
            argv[0] = app.settings.deckhand_exe.display().to_string();
        }
        let spec = StepSpec {
            argv,
            env: vars,
            cwd: step.cwd.as_ref().map(|c| app.settings.resolve(c)),
            timeout,
            kill_grace: Duration::from_secs(cfg.runner.kill_grace_seconds),
            stdin: if step.secret_stdin {
                secret.map(|s| Zeroizing::new(format!("{}\n", s.as_str())))
            } else {
                None
            },
            started: None,
        };
        let (tx, rx) = mpsc::channel(1024);
        let collector = tokio::spawn(
            collect_log(app.clone(), job.id, step.name.clone(), rx, logged).in_current_span(),
        );
        let either = CancelToken::new();
        let watcher = {
            let (a, b, e) = (stops.cancel.clone(), stops.shutdown.clone(), either.clone());
            tokio::spawn(async move {
                tokio::select! { _ = a.cancelled() => {}, _ = b.cancelled() => {} }
                e.cancel();
            })
        };
        let (pg_tx, mut pg_rx) = mpsc::unbounded_channel();
        let spec = StepSpec {
            started: Some(pg_tx),
            ..spec
        };
        let record = {
            let app = app.clone();
            let id = job.id;
            tokio::spawn(async move {
                if let Some(g) = pg_rx.recv().await {
                    let _ = app.db.set_step_pgid(id, Some(g as i64)).await;
                }
            })
        };
        let outcome = runner::run_step(spec, redactor, tx, either).await;
        let _ = record.await;
        watcher.abort();
        let (lines, step_facts) = collector.await.unwrap_or_default();
        logged = lines;
        facts.extend(step_facts);
        if stops.shutdown.is_cancelled() {
            return Ok(StepsResult {
                failure: Some("stopped by shutdown".into()),
                abandoned: true,
                facts,
            });
        }
        if !outcome.success() {
            let what = if outcome == StepOutcome::Cancelled && !stops.cancel.is_cancelled() {
                "cancelled".to_owned()
            } else {
                outcome.describe(timeout)
            };
            return Ok(StepsResult {
                failure: Some(format!("step \"{}\" {what}", step.name)),
                abandoned: false,
                facts,
            });
        }
    }
    Ok(StepsResult {
        failure: None,
        abandoned: false,
        facts,
    })
}

/// The arguments a step receives, as `DECKHAND_*` environment variables only.
fn step_env(app: &App, job: &JobRow, version: Option<&str>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("DECKHAND_JOB_ID".into(), job.id.to_string());
    env.insert("DECKHAND_COMMAND".into(), job.command.clone());
    env.insert("DECKHAND_REQUESTED_BY".into(), job.requested_by.clone());
    env.insert(
        "DECKHAND_DATA_DIR".into(),
        app.settings.data_dir().display().to_string(),
    );
    if let Some(e) = &job.environment {
        env.insert("DECKHAND_ENVIRONMENT".into(), e.clone());
        if let Some(u) = app
            .settings
            .config
            .environments
            .get(e)
            .and_then(|c| c.health_url.clone())
        {
            env.insert("DECKHAND_HEALTH_URL".into(), u);
        }
    }
    if let Some(v) = version {
        env.insert("DECKHAND_VERSION".into(), v.to_owned());
    }
    for (k, v) in job.args_map() {
        env.insert(format!("DECKHAND_ARG_{}", k.to_uppercase()), v);
    }
    env
}

/// Store a step's lines in batches; stop storing past the configured limit with a note.
/// Returns the lines stored so far in the job and the facts the step reported.
async fn collect_log(
    app: Arc<App>,
    job_id: i64,
    step: String,
    mut rx: mpsc::Receiver<(Stream, String)>,
    mut stored: usize,
) -> (usize, BTreeMap<String, String>) {
    let max = app.settings.config.runner.max_log_lines;
    let mut facts = BTreeMap::new();
    let mut batch: Vec<(String, &'static str, String)> = Vec::new();
    let mut dropped = 0usize;
    let mut last_flush = Instant::now();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let done = matches!(next, Ok(None));
        if let Ok(Some((stream, line))) = next {
            if let Some(fact) = line.strip_prefix(REPORT_PREFIX)
                && let Some((k, v)) = fact.trim().split_once('=')
            {
                facts.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
            if stored + batch.len() < max {
                batch.push((step.clone(), stream.as_str(), line));
            } else {
                dropped += 1;
            }
        }
        if done || batch.len() >= 200 || last_flush.elapsed() > Duration::from_millis(200) {
            if done && dropped > 0 {
                batch.push((
                    step.clone(),
                    "note",
                    format!("[log truncated: {dropped} more lines of this step were not stored (limit {max} lines per job)]"),
                ));
            }
            if let Err(e) = app.db.append_log(job_id, &batch).await {
                tracing::warn!(job_id, error = %e, "cannot store job log lines");
            }
            stored += batch.len();
            batch.clear();
            last_flush = Instant::now();
        }
        if done {
            return (stored, facts);
        }
    }
}

/// A new secret value: `len` characters of `alphabet` from the OS random source.
pub fn generate_secret(len: usize, alphabet: &[u8]) -> anyhow::Result<Zeroizing<String>> {
    anyhow::ensure!(
        (2..=256).contains(&alphabet.len()),
        "a secret alphabet needs 2 to 256 characters"
    );
    #[allow(non_snake_case)]
    let ALPHABET = alphabet;
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        getrandom::fill(&mut buf[..])
            .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
        for b in buf.iter() {
            // Reject bytes past the largest multiple of the alphabet: no modulo bias.
            if (*b as usize) < 256 - 256 % ALPHABET.len() && out.len() < len {
                out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The first 8 hex digits of the SHA-256 of a secret: enough to compare, useless to steal.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..4])
}

/// Report jobs whose process died: `interrupted`, or back to `queued` when the command
/// says it is safe to run again. Returns how many were recovered.
pub async fn recover(app: &App) -> anyhow::Result<usize> {
    let mut n = 0;
    for job in app.db.expired_leases().await? {
        // An orphaned step of a dead process on this host is stopped first.
        if let (Some(pgid), Some(owner)) = (job.step_pgid, &job.lease_owner)
            && owner.split(':').next() == Some(crate::app::hostname().as_str())
        {
            runner::kill_group(pgid as i32, libc::SIGKILL);
        }
        let requeue = job.idempotent;
        let (to, title, tone) = if requeue {
            (
                state::QUEUED,
                format!(
                    "{} on {} (job {}) was interrupted when the process running it stopped; {} is idempotent, so it runs again",
                    job.command,
                    env_of(&job),
                    job.id,
                    job.command
                ),
                Tone::Warning,
            )
        } else {
            (
                state::INTERRUPTED,
                format!(
                    "{} on {} (job {}) was interrupted when the process running it stopped; it will not be re-run. Check {} and run it again if needed",
                    job.command,
                    env_of(&job),
                    job.id,
                    env_of(&job)
                ),
                Tone::Danger,
            )
        };
        let notice = Notice::new(
            if requeue {
                NoticeKind::JobRequeued
            } else {
                NoticeKind::JobInterrupted
            },
            tone,
            title.clone(),
        )
        .env(job.environment.as_deref())
        .version(job.version.as_deref())
        .job(job.id)
        .field("Environment", env_of(&job))
        .field("Version", job.version.as_deref().unwrap_or("-"))
        .field("Requested by", &job.requested_by);
        let mut writes = vec![transition(
            job.id,
            &[state::RUNNING],
            to,
            Some(title.clone()),
            job.lease_owner.as_deref(),
        )];
        writes.push(Write::Sql {
            sql: "UPDATE deployments SET status = 'interrupted', finished_at = $1 WHERE job_id = $2 AND status = 'running'".into(),
            args: vec![crate::store::Arg::Int(crate::store::now_ms()), crate::store::Arg::Int(job.id)],
        });
        if requeue {
            writes.push(Write::Sql {
                sql: "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, step_pgid = NULL WHERE id = $1".into(),
                args: vec![crate::store::Arg::Int(job.id)],
            });
        }
        writes.extend(notices(app, &job, &notice));
        writes.push(audit(&job, &format!("job_{to}"), title));
        match app.db.apply(&writes).await {
            Ok(_) => {
                n += 1;
                if !requeue {
                    crate::metrics::job_finished(&job.kind, state::INTERRUPTED, 0.0);
                }
                tracing::warn!(
                    job_id = job.id,
                    state = to,
                    "recovered a job whose process died"
                );
            }
            Err(e) if crate::queue::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for job in app.db.overdue_approvals().await? {
        let title = format!(
            "Job {} ({}) expired: no approval arrived in time",
            job.id,
            crate::intake::describe(
                &job.command,
                job.environment.as_deref(),
                job.version.as_deref()
            )
        );
        let notice = Notice::new(NoticeKind::ApprovalExpired, Tone::Warning, title.clone())
            .env(job.environment.as_deref())
            .version(job.version.as_deref())
            .job(job.id);
        let mut writes = vec![transition(
            job.id,
            &[state::AWAITING_APPROVAL],
            state::EXPIRED,
            Some(title.clone()),
            None,
        )];
        writes.extend(notices(app, &job, &notice));
        writes.push(audit(&job, "job_expired", title));
        match app.db.apply(&writes).await {
            Ok(_) => n += 1,
            Err(e) if crate::queue::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if n > 0 {
        app.poke();
    }
    Ok(n)
}

/// Remind the channel of a lock that has been held for long. The reminder time is
/// claimed with a guarded update first, so replicas remind once.
pub async fn remind_locks(app: &App) -> anyhow::Result<()> {
    let every = app.settings.config.locks.remind_after_seconds as i64 * 1000;
    let now = crate::store::now_ms();
    for l in app.db.locks().await? {
        let due = l.reminded_at.unwrap_or(l.locked_at) + every;
        if now < due {
            continue;
        }
        let title = format!(
            "Reminder: {} has been locked by {} for {}: {}. Run `unlock {}` when it is safe",
            l.environment,
            l.locked_by,
            fmt_duration(now - l.locked_at),
            l.reason,
            l.environment
        );
        let n = Notice::new(NoticeKind::EnvironmentLocked, Tone::Warning, title)
            .env(Some(&l.environment));
        let mut routes = vec![(l.platform.clone(), l.channel.clone())];
        if let Some(e) = app.settings.config.environments.get(&l.environment) {
            for (p, c) in &e.channels {
                if app.settings.platform_enabled(p) && !routes.iter().any(|r| &r.0 == p) {
                    routes.push((p.clone(), Some(c.clone())));
                }
            }
        }
        let mut writes = vec![Write::Sql {
            sql: "UPDATE locks SET reminded_at = $1 WHERE environment = $2 AND COALESCE(reminded_at, locked_at) = $3".into(),
            args: vec![
                crate::store::Arg::Int(now),
                crate::store::Arg::Text(l.environment.clone()),
                crate::store::Arg::Int(l.reminded_at.unwrap_or(l.locked_at)),
            ],
        }];
        for (platform, channel) in routes {
            writes.push(Write::Notice(crate::store::NewNotice {
                job_id: None,
                platform,
                channel,
                thread_key: format!("lock:{}", l.environment),
                body: n.to_json(),
            }));
        }
        // Only the replica whose update matched sends the reminder.
        app.db.apply_if_first(&writes).await?;
        app.outbox_wake.notify_one();
    }
    Ok(())
}

/// Claim and run jobs until `stop` fires; then wait for running jobs, which `shutdown`
/// stops at the grace deadline.
pub async fn run_workers(app: Arc<App>, stop: CancelToken, shutdown: CancelToken) {
    let cfg = &app.settings.config.queue;
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.workers));
    let lease_ms = (cfg.lease_seconds * 1000) as i64;
    let poll = Duration::from_millis(cfg.poll_ms);
    let mut running = tokio::task::JoinSet::new();
    let mut last_recover = Instant::now() - Duration::from_secs(60);
    app.health
        .workers_started
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let listener = listen_for_jobs(&app, stop.clone());
    loop {
        if stop.is_cancelled() {
            break;
        }
        app.health.worker_tick();
        if last_recover.elapsed() > Duration::from_millis(1000) {
            if let Err(e) = recover(&app).await {
                tracing::warn!(error = %e, "cannot recover expired jobs");
            }
            if let Err(e) = remind_locks(&app).await {
                tracing::warn!(error = %e, "cannot send lock reminders");
            }
            last_recover = Instant::now();
        }
        while running.try_join_next().is_some() {}
        let mut claimed = false;
        if let Ok(permit) = sem.clone().try_acquire_owned() {
            match app.db.claim(&app.worker_id, lease_ms).await {
                Ok(Some(job)) => {
                    claimed = true;
                    let (a, s) = (app.clone(), shutdown.clone());
                    running.spawn(async move {
                        execute(a, job, s).await;
                        drop(permit);
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim a job"),
            }
        }
        if !claimed {
            tokio::select! {
                _ = app.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.cancelled() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
    }
    while running.join_next().await.is_some() {}
    if let Some(l) = listener {
        l.abort();
    }
}

/// On PostgreSQL, wake this process's workers when any replica enqueues (`NOTIFY`).
fn listen_for_jobs(app: &Arc<App>, stop: CancelToken) -> Option<tokio::task::JoinHandle<()>> {
    let crate::store::Db::Postgres(pool) = &app.db else {
        return None;
    };
    let (pool, app) = (pool.clone(), app.clone());
    Some(tokio::spawn(async move {
        while !stop.is_cancelled() {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => {
                    if l.listen(crate::queue::PG_CHANNEL).await.is_ok() {
                        // recv() reconnects by itself after a dropped connection.
                        while let Ok(_n) = l.recv().await {
                            app.wake.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for new jobs; polling"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_fingerprinted() {
        let alnum = crate::config::Alphabet::Alnum.chars().as_bytes();
        let a = generate_secret(32, alnum).unwrap();
        let b = generate_secret(32, alnum).unwrap();
        let h = generate_secret(40, crate::config::Alphabet::Hex.chars().as_bytes()).unwrap();
        assert!(h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
