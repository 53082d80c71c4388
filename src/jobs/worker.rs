//! Workers: claim jobs and run them; report jobs whose process died; remind old locks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::fmt_duration;
use crate::jobs::{env_of, execute};
use crate::outbox::routes::notices;
use crate::store::Write;
use crate::store::jobs::audit;
use crate::store::jobs::{JobRow, state, transition};
use crate::support::runner::CancelToken;

/// Report jobs whose process died: `interrupted`, or back to `queued` when the command
/// says it is safe to run again. Returns how many were recovered.
pub async fn recover(app: &App) -> anyhow::Result<usize> {
    let mut n = 0;
    for job in app.db.expired_leases().await? {
        let ours = app
            .health
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&job.id);
        if !ours {
            n += usize::from(recover_orphan(app, &job).await?);
        }
    }
    n += super::orphans::check(app).await?;
    for job in app.db.overdue_approvals().await? {
        n += usize::from(expire(app, &job).await?);
    }
    if n > 0 {
        app.poke();
    }
    Ok(n)
}

/// A running job whose lease ran out: its process died. Requeue it (idempotent commands) or
/// report it interrupted, and hold its environment while its step may still be alive (see
/// [`super::orphans`]); then ask that step to stop, on its own host. False when another
/// replica recovered it first.
async fn recover_orphan(app: &App, job: &JobRow) -> anyhow::Result<bool> {
    let now = crate::domain::time::now_ms();
    let (hold, held) = super::orphans::hold(app, job, now).await?;
    let requeue = job.idempotent;
    let (to, title, tone, kind) = if requeue {
        let after = held.as_ref().map_or(String::new(), |h| {
            let grace = (app.settings.config.runner.kill_grace_seconds * 1000) as i64;
            format!(
                ", after waiting for {}",
                super::orphans::waiting_for(h, &crate::app::hostname(), now, grace)
            )
        });
        (
            state::QUEUED,
            format!(
                "{} on {} (job {}) was interrupted when the process running it stopped; {} is idempotent, so it runs again{after}",
                job.command,
                env_of(job),
                job.id,
                job.command
            ),
            Tone::Warning,
            NoticeKind::JobRequeued,
        )
    } else if let (Some(_), Some(v)) = (job.watch_until, &job.version) {
        (
            state::INTERRUPTED,
            format!(
                "{} on {} (job {}) was interrupted during its watch when the process running it stopped; the watch ended there and {v} stays unverified; recovery runs no rollback of its own. Deploy {v} again to watch it, or roll back",
                job.command,
                env_of(job),
                job.id,
            ),
            Tone::Danger,
            NoticeKind::JobInterrupted,
        )
    } else {
        (
            state::INTERRUPTED,
            format!(
                "{} on {} (job {}) was interrupted when the process running it stopped; it will not be re-run. Check {} and run it again if needed",
                job.command,
                env_of(job),
                job.id,
                env_of(job)
            ),
            Tone::Danger,
            NoticeKind::JobInterrupted,
        )
    };
    let notice = Notice::new(kind, tone, title.clone())
        .env(job.environment.as_deref())
        .version(job.version.as_deref())
        .job(job.id)
        .field("Environment", env_of(job))
        .field("Version", job.version.as_deref().unwrap_or("-"))
        .field("Requested by", &job.requested_by);
    let mut writes = vec![
        transition(
            job.id,
            &[state::RUNNING],
            to,
            Some(title.clone()),
            job.lease_owner.as_deref(),
        ),
        crate::store::history::interrupt_deployment(job.id, crate::domain::time::now_ms()),
    ];
    if requeue {
        writes.push(crate::store::jobs::release_lease(job.id));
    } else {
        writes.extend(super::github::interrupted(app, job, &title).await);
    }
    writes.extend(hold);
    writes.extend(notices(&app.settings, job, &notice));
    writes.push(audit(job, &format!("job_{to}"), title));
    if !apply_unless_taken(app, &writes).await? {
        return Ok(false);
    }
    if let Some(h) = &held {
        super::orphans::stop(h);
    }
    if !requeue {
        crate::support::metrics::job_finished(&job.kind, state::INTERRUPTED, 0.0);
    }
    tracing::warn!(
        job_id = job.id,
        state = to,
        "recovered a job whose process died"
    );
    Ok(true)
}

/// A job that waited for approval past its deadline.
async fn expire(app: &App, job: &JobRow) -> anyhow::Result<bool> {
    let title = format!(
        "Job {} ({}) expired: no approval arrived in time",
        job.id,
        crate::domain::text::describe(
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
    writes.extend(notices(&app.settings, job, &notice));
    writes.push(audit(job, "job_expired", title));
    apply_unless_taken(app, &writes).await
}

/// Apply writes whose first is a guarded transition; false when another process moved the
/// job first.
async fn apply_unless_taken(app: &App, writes: &[Write]) -> anyhow::Result<bool> {
    match app.db.apply(writes).await {
        Ok(_) => Ok(true),
        Err(e) if crate::store::jobs::is_conflict(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Remind the channel of a lock that has been held for long. The reminder time is
/// claimed with a guarded update first, so replicas remind once.
pub async fn remind_locks(app: &App) -> anyhow::Result<()> {
    let every = app.settings.config.locks.remind_after_seconds as i64 * 1000;
    let now = crate::domain::time::now_ms();
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
        let mut writes = vec![crate::store::history::lock_reminded(
            &l.environment,
            now,
            l.reminded_at.unwrap_or(l.locked_at),
        )];
        writes.extend(crate::outbox::routes::lock_notices(
            &app.settings,
            &l.environment,
            &l.platform,
            l.channel.as_deref(),
            &n,
        ));
        // Only the replica whose update matched sends the reminder.
        app.db.apply_if_first(&writes).await?;
        app.outbox_wake.notify_one();
    }
    Ok(())
}

/// Most jobs claimed per statement.
const CLAIM_AT_MOST: usize = 32;

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
    let sweeper = sweep_scratch(&app, stop.clone());
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
        // As many jobs as there are free workers, in one statement. Only this loop takes
        // permits, so each claimed job has one.
        let free = sem.available_permits().min(CLAIM_AT_MOST);
        if free > 0 {
            match app.db.claim_batch(&app.worker_id, lease_ms, free).await {
                Ok(jobs) => {
                    for job in jobs {
                        claimed = true;
                        let permit = sem.clone().try_acquire_owned().expect("a free worker");
                        let (a, s) = (app.clone(), shutdown.clone());
                        running.spawn(async move {
                            execute(a, job, s).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim jobs"),
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
    sweeper.abort();
}

/// Drop scratch databases left behind by jobs that no longer run: at start (after a
/// crash) and then every lease length (5 s to a minute), so one whose job's lease ran out
/// goes soon after; and enqueue the scheduled backups.
fn sweep_scratch(app: &Arc<App>, stop: CancelToken) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        if !app
            .settings
            .config
            .environments
            .values()
            .any(|e| e.database.is_some())
        {
            return;
        }
        let every = Duration::from_secs(app.settings.config.queue.lease_seconds.clamp(5, 60));
        let mut swept = Instant::now() - every;
        loop {
            if swept.elapsed() >= every {
                super::dbops::scratch::sweep(&app).await;
                swept = Instant::now();
            }
            if let Err(e) = super::dbops::schedule::tick(&app, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "cannot enqueue scheduled backups");
            }
            tokio::select! {
                _ = tokio::time::sleep(super::dbops::schedule::TICK.min(every)) => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}

/// On PostgreSQL, wake this process's workers when any replica enqueues (`NOTIFY`).
fn listen_for_jobs(app: &Arc<App>, stop: CancelToken) -> Option<tokio::task::JoinHandle<()>> {
    let a = app.clone();
    app.db.listen_for_jobs(move || a.wake.notify_one(), stop)
}
