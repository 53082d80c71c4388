//! Steps that outlived the process running them: the environment stays held until the
//! step's process group is gone.
//!
//! Why: after `kill -9` of `deckhand serve`, recovery used to SIGKILL the orphaned group and
//! report the job interrupted in the same breath; the claim only looks for *running* jobs,
//! so the next job of the environment started at once, while the killed members were still
//! dying and then zombies (init reaps them 1–1.5 s later here). From another host nothing
//! was signalled at all.
//!
//! Now recovery holds the environment in the transaction that reports the job
//! ([`crate::store::holds`]), and each recovery round decides:
//! - on the group's own host: SIGTERM at recovery, SIGKILL once the runner's kill grace is
//!   over (what a step's timeout does), released once `kill(-pgid, 0)` says ESRCH;
//! - from another host, or when the group was never recorded: released once the step's
//!   deadline (its start + timeout + kill grace) has passed;
//! - at any time, by an admin: `deckhand jobs release JOB --reason "…"`.
//!
//! Jobs queued on the environment are told once, in place, what they wait for.

use crate::app::{App, hostname};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::text::describe;
use crate::domain::time::{fmt_time, now_ms};
use crate::outbox::routes::notices;
use crate::store::holds::{self, StepGroup};
use crate::store::jobs::{JobRow, state};
use crate::store::{AuditEvent, Write};
use crate::support::pgroup::{self, Group};

/// How long only zombies may be left before the group counts as gone: they run nothing,
/// but without an init that reaps (tini, `docker run --init`) they would hold forever.
const ZOMBIE_PATIENCE_MS: i64 = 10_000;

/// What to do about one held job this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The group lives on this host: look at it, and SIGKILL it when `kill` (the grace
    /// after the SIGTERM is over).
    Probe { pgid: i32, kill: bool },
    /// It cannot be seen from here: wait until this time (ms).
    WaitUntil(i64),
    /// The deadline has passed.
    Release,
}

/// Decide from the record alone; `here` is this host, `grace_ms` the runner's kill grace.
pub(crate) fn plan(step: &StepGroup, here: &str, now: i64, grace_ms: i64) -> Plan {
    let held_since = step.held_since.unwrap_or(now);
    match step.pgid {
        Some(g) if step.host.as_deref() == Some(here) => Plan::Probe {
            pgid: g as i32,
            kill: now >= held_since + grace_ms,
        },
        _ => match step.deadline {
            Some(d) if d > now => Plan::WaitUntil(d),
            _ => Plan::Release,
        },
    }
}

/// "job 12's interrupted step (process group 4242 on host-a) to end", and for a group that
/// cannot be seen from here, until when and how an admin ends the wait.
pub(crate) fn waiting_for(held: &JobRow, here: &str, now: i64, grace_ms: i64) -> String {
    let what = step_phrase(held);
    match (plan(&held.step, here, now, grace_ms), held.step.deadline) {
        (Plan::Probe { .. }, _) => format!("{what} to end"),
        (_, Some(d)) => format!(
            "{what} to end, until its timeout at {} at the latest, or for an admin to release it with `deckhand jobs release {} --reason \"…\"`",
            fmt_time(d),
            held.id
        ),
        (_, None) => format!(
            "{what} to end, or for an admin to release it with `deckhand jobs release {} --reason \"…\"`",
            held.id
        ),
    }
}

fn step_phrase(held: &JobRow) -> String {
    let host = held.step.host.as_deref().unwrap_or("an unknown host");
    match held.step.pgid {
        Some(g) => format!(
            "job {}'s interrupted step (process group {g} on {host})",
            held.id
        ),
        None => format!(
            "job {}'s interrupted step on {host} (its process group was not recorded)",
            held.id
        ),
    }
}

/// The writes that hold `job`'s environment from `now`, with the "waiting for" update of
/// each job queued behind it; and the job as held. Nothing when no step was running.
pub(crate) async fn hold(
    app: &App,
    job: &JobRow,
    now: i64,
) -> anyhow::Result<(Vec<Write>, Option<JobRow>)> {
    if !job.step.recorded() {
        return Ok((Vec::new(), None));
    }
    let runner = &app.settings.config.runner;
    let lease_host = job.lease_owner.as_deref().and_then(|o| o.split(':').next());
    let fallback =
        now + ((runner.default_timeout_seconds + runner.kill_grace_seconds) * 1000) as i64;
    let mut held = job.clone();
    held.step.host = held.step.host.or(lease_host.map(str::to_owned));
    held.step.deadline = held.step.deadline.or(Some(fallback));
    held.step.held_since = Some(now);
    let mut writes = vec![holds::hold(job.id, now, lease_host, fallback)];
    let phrase = waiting_for(&held, &hostname(), now, grace_ms(app));
    if job.concurrency_key.is_some() {
        for q in app.db.open_jobs(job.environment.as_deref()).await? {
            if q.id != job.id
                && q.state == state::QUEUED
                && q.concurrency_key == job.concurrency_key
            {
                writes.extend(notices(&app.settings, &q, &waiting_notice(&q, &phrase)));
            }
        }
    }
    Ok((writes, Some(held)))
}

/// The queued job's message, updated in place (same thread, not a reply).
fn waiting_notice(job: &JobRow, phrase: &str) -> Notice {
    let what = describe(
        &job.command,
        job.environment.as_deref(),
        job.version.as_deref(),
    );
    Notice::new(
        NoticeKind::JobQueued,
        Tone::Warning,
        format!("Queued {what} as job {}: waiting for {phrase}", job.id),
    )
    .env(job.environment.as_deref())
    .version(job.version.as_deref())
    .job(job.id)
    .field("Requested by", &job.requested_by)
    .action("cancel", "Cancel", job.id, true)
}

/// Right after recovery: ask the group to stop, as a step's timeout does (SIGKILL follows
/// after the grace, from [`check`]). Only on the group's own host.
pub(crate) fn stop(held: &JobRow) {
    if let Plan::Probe { pgid, .. } = plan(&held.step, &hostname(), now_ms(), 0)
        && pgroup::signal(pgid, held.step.leader.as_deref(), libc::SIGTERM)
    {
        tracing::warn!(
            job_id = held.id,
            pgid,
            "stopping an interrupted job's step; its environment is held until the group is gone"
        );
    }
}

/// One round over the held jobs: release those whose group is gone or whose deadline has
/// passed, SIGKILL groups past their grace. Returns how many were released.
pub(crate) async fn check(app: &App) -> anyhow::Result<usize> {
    let (here, grace) = (hostname(), grace_ms(app));
    let mut released = 0;
    for job in app.db.held_jobs().await? {
        let now = now_ms();
        let why = match plan(&job.step, &here, now, grace) {
            Plan::WaitUntil(_) => continue,
            Plan::Release => format!("{} is past its timeout", step_phrase(&job)),
            Plan::Probe { pgid, kill } => match look(pgid, job.step.leader.as_deref(), kill) {
                Group::Gone => format!("{} has ended", step_phrase(&job)),
                Group::OnlyZombies
                    if now > job.step.held_since.unwrap_or(now) + grace + ZOMBIE_PATIENCE_MS =>
                {
                    tracing::warn!(
                        job_id = job.id,
                        pgid,
                        "only unreaped zombies are left of a step: run Deckhand under an init that reaps (tini, docker run --init)"
                    );
                    format!("only unreaped zombies are left of {}", step_phrase(&job))
                }
                _ => continue,
            },
        };
        let audit = released_audit(&job, "deckhand", &job.platform, why);
        released += usize::from(release(app, &job, vec![audit]).await?);
    }
    Ok(released)
}

/// Probe the group; SIGKILL it when it still runs and `kill`.
fn look(pgid: i32, leader: Option<&str>, kill: bool) -> Group {
    let g = pgroup::probe(pgid, leader);
    if g == Group::Alive && kill && pgroup::signal(pgid, leader, libc::SIGKILL) {
        tracing::warn!(
            pgid,
            "an interrupted job's step outlived its grace: SIGKILL"
        );
    }
    g
}

fn released_audit(job: &JobRow, actor: &str, platform: &str, detail: String) -> Write {
    Write::Audit(AuditEvent {
        actor: actor.to_owned(),
        platform: platform.to_owned(),
        action: "environment_released".into(),
        environment: job.environment.clone(),
        job_id: Some(job.id),
        detail,
    })
}

/// Release the hold with these writes, once across replicas; wakes the workers.
async fn release(app: &App, job: &JobRow, extra: Vec<Write>) -> anyhow::Result<bool> {
    let mut writes = vec![holds::release(job.id)];
    writes.extend(extra);
    let first = app.db.apply_if_first(&writes).await?;
    if first {
        tracing::info!(
            job_id = job.id,
            "environment released after an interrupted step"
        );
        app.poke();
    }
    Ok(first)
}

/// An admin ends the wait for job `id`'s step (`deckhand jobs release`): audited, and said
/// in the job's thread. The answer to print, or why nothing changed.
pub async fn release_by_admin(
    app: &App,
    id: i64,
    actor: &str,
    platform: &str,
    reason: &str,
) -> anyhow::Result<Result<String, String>> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Ok(Err("give a reason: --reason \"what you checked\"".into()));
    }
    if reason.chars().count() > 500 {
        return Ok(Err("the reason is longer than 500 characters".into()));
    }
    if let Err(e) = crate::domain::text::check_clean("the reason", reason) {
        return Ok(Err(e));
    }
    let Some(job) = app.db.job(id).await? else {
        return Ok(Err(format!("there is no job {id}")));
    };
    if job.step.held_since.is_none() {
        return Ok(Err(format!(
            "job {id} holds no environment (it is {}): nothing to release",
            job.state
        )));
    }
    let env = job.environment.as_deref().unwrap_or("-");
    let title = format!(
        "{env} released by {actor}: no longer waiting for {}. Reason: {reason}",
        step_phrase(&job)
    );
    let n = Notice::new(NoticeKind::EnvironmentReady, Tone::Warning, title.clone())
        .env(job.environment.as_deref())
        .version(job.version.as_deref())
        .job(job.id)
        .as_reply();
    let mut extra = vec![released_audit(&job, actor, platform, title.clone())];
    extra.extend(notices(&app.settings, &job, &n));
    Ok(if release(app, &job, extra).await? {
        Ok(title)
    } else {
        Err(format!("job {id} was released already"))
    })
}

fn grace_ms(app: &App) -> i64 {
    (app.settings.config.runner.kill_grace_seconds * 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(pgid: Option<i64>, host: &str, deadline: Option<i64>) -> StepGroup {
        StepGroup {
            pgid,
            host: Some(host.into()),
            leader: None,
            deadline,
            held_since: Some(1_000),
        }
    }

    #[test]
    fn on_its_own_host_a_group_is_looked_at_and_killed_after_the_grace() {
        let s = step(Some(4242), "host-a", Some(99_000));
        assert_eq!(
            plan(&s, "host-a", 1_500, 1_000),
            Plan::Probe {
                pgid: 4242,
                kill: false
            }
        );
        assert_eq!(
            plan(&s, "host-a", 2_000, 1_000),
            Plan::Probe {
                pgid: 4242,
                kill: true
            }
        );
        // Past the deadline it is still looked at: the group is visible, so it decides.
        assert_eq!(
            plan(&s, "host-a", 200_000, 1_000),
            Plan::Probe {
                pgid: 4242,
                kill: true
            }
        );
    }

    #[test]
    fn from_another_host_the_deadline_decides() {
        let s = step(Some(4242), "host-a", Some(99_000));
        assert_eq!(plan(&s, "host-b", 1_500, 1_000), Plan::WaitUntil(99_000));
        assert_eq!(plan(&s, "host-b", 99_000, 1_000), Plan::Release);
    }

    #[test]
    fn a_group_never_recorded_waits_for_the_deadline_even_on_its_host() {
        let s = step(None, "host-a", Some(99_000));
        assert_eq!(plan(&s, "host-a", 1_500, 1_000), Plan::WaitUntil(99_000));
        let none = StepGroup {
            deadline: None,
            ..s
        };
        assert_eq!(plan(&none, "host-a", 1_500, 1_000), Plan::Release);
    }
}
