//! What a job means: run its steps, verify health, record history, roll back when told,
//! and report every state change through the outbox in the same transaction.

mod ci;
pub mod dbops;
mod finish;
mod github;
pub(crate) mod health;
pub(crate) mod orphans;
mod rollback;
mod run;
pub(crate) mod steps;
mod verify;
mod watch;
pub(crate) mod worker;
mod workflow;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::fmt_duration;
use crate::outbox::routes::notices;
use crate::store::Write;
use crate::store::jobs::{JobRow, audit, state, transition};
use crate::support::runner::CancelToken;

/// What running a job's steps produced.
pub(crate) struct StepsResult {
    /// `None`: all steps succeeded. Otherwise which step failed and how.
    pub failure: Option<String>,
    /// Stopped by shutdown: leave the job for the next start to report.
    pub abandoned: bool,
    pub facts: BTreeMap<String, String>,
    /// Each step run: "deploy: deckhand demo deploy (succeeded)", argv redacted.
    pub commands: Vec<String>,
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
    let in_flight = InFlight::enter(&app, job.id);
    let hb = tokio::spawn(heartbeat(app.clone(), job.id, stops.cancel.clone()).in_current_span());
    let result = run::run(&app, &job, &stops).await;
    let (final_state, writes) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            hb.abort();
            tracing::warn!(
                job_id = job.id,
                "job left running at shutdown; the next start reports it"
            );
            return;
        }
        Err(e) => {
            tracing::error!(job_id = job.id, error = %e, "job failed");
            (state::FAILED, internal_error(&app, &job, &e).await)
        }
    };
    // The heartbeat goes on while the end is recorded: through a database outage the
    // lease is renewed as soon as the database is back, so the end is not lost to it.
    // Through the group commit: the ends of jobs finishing together share one commit.
    let recorded = record_end(&app, writes).await;
    hb.abort();
    drop(in_flight);
    match recorded {
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
    let _ = app.db.step_ended(job.id).await;
    app.poke();
}

/// The writes that end a job Deckhand itself could not run to its end; the GitHub
/// deployments it had opened get `error`, not left `in_progress`.
async fn internal_error(app: &App, job: &JobRow, e: &anyhow::Error) -> Vec<Write> {
    let reason = format!("internal error: {e}");
    let n = Notice::new(
        NoticeKind::JobFailed,
        Tone::Danger,
        format!("{} on {} failed: {reason}", job.command, env_of(job)),
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
    w.extend(notices(&app.settings, job, &n));
    w.push(audit(job, "job_failed", reason.clone()));
    w.extend(github::interrupted(app, job, &reason).await);
    w
}

/// This process executes job `id` while this lives (see [`crate::app::Liveness::in_flight`]).
struct InFlight<'a>(&'a App, i64);

impl<'a> InFlight<'a> {
    fn enter(app: &'a App, id: i64) -> InFlight<'a> {
        app.health
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        InFlight(app, id)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let set = &self.0.health.in_flight;
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// The start and the end of a job must be recorded (nothing runs before its start is on
/// record): retry other errors for most of a lease, and ride out a database outage (a
/// PostgreSQL restart) for a minute, or that long if it is longer, before giving up. A
/// conflict is final: the lease was lost (a replica saw it run out and reported the job),
/// and the end is not this process's to write.
async fn apply_retrying(app: &App, writes: &[Write]) -> crate::store::Result<Vec<i64>> {
    retrying(app, || app.db.apply(writes)).await
}

/// Run `write` until it succeeds, fails with a conflict, or the time for its kind of error
/// (see [`apply_retrying`]) is up.
async fn retrying<T, F, Fut>(app: &App, write: F) -> crate::store::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = crate::store::Result<T>>,
{
    let lease = Duration::from_secs(app.settings.config.queue.lease_seconds);
    let start = Instant::now();
    let (errors_for, outage_for) = (
        lease.mul_f64(0.8),
        lease.mul_f64(0.8).max(Duration::from_secs(60)),
    );
    loop {
        match write().await {
            Err(e)
                if !crate::store::jobs::is_conflict(&e)
                    && start.elapsed()
                        < if e.is_outage() {
                            outage_for
                        } else {
                            errors_for
                        } =>
            {
                tracing::warn!(error = %e, "cannot record the start or end of a job yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            done => return done,
        }
    }
}

/// [`apply_retrying`] for the end of a job, through the group commit (`app.intake`), so
/// that the ends of jobs finishing at the same moment share one transaction and one flush,
/// as intake does; each is still answered only once its own rows are committed.
async fn record_end(app: &App, writes: Vec<Write>) -> crate::store::Result<()> {
    retrying(app, || app.intake.apply(writes.clone())).await
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

pub use crate::jobs::orphans::release_by_admin;
pub use crate::jobs::steps::{fingerprint, generate_secret};
pub use crate::jobs::worker::{recover, remind_locks, run_workers};
