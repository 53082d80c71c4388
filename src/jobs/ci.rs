//! A deploy whose required checks were still running when it was accepted waits for them
//! here, before its start is recorded: its message says "waiting for CI: test (in
//! progress)" (updated when that changes), then it runs, or ends failed when a check fails
//! or `ci_timeout_seconds` passes. Nothing has run at that point, and no deployment exists.

use std::time::{Duration, Instant};

use crate::config::catalog::JobKind;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::jobs::run::JobRun;
use crate::jobs::{apply_retrying, env_of, finish};
use crate::outbox::routes::notices;
use crate::store::Write;
use crate::store::jobs::state;
use crate::support::github::{Gate, describe_checks, gate};

/// How waiting ended: go on (`Go`), stop for shutdown (`Abandon`), or end the job.
pub(crate) enum Waited {
    Go,
    Abandon,
    End((&'static str, Vec<Write>)),
}

pub(crate) async fn wait(r: &JobRun<'_>) -> anyhow::Result<Waited> {
    let job = r.job;
    let (Some(env), Some(ec)) = (&job.environment, r.env_cfg) else {
        return Ok(Waited::Go);
    };
    let Some(rc) = &ec.required_checks else {
        return Ok(Waited::Go);
    };
    if r.kind != JobKind::Deploy || job.emergency.is_some() {
        return Ok(Waited::Go);
    }
    let Some(sha) = job.args_map().get("commit_sha").cloned() else {
        return Ok(Waited::Go);
    };
    let Some((gh, repo)) = r.app.github(env) else {
        return Ok(Waited::Go);
    };
    let version = job.version.as_deref().unwrap_or(&sha);
    let deadline = Instant::now() + Duration::from_secs(ec.ci_timeout_seconds);
    let mut shown = String::new();
    loop {
        let pending = match gh.checks(&repo, &sha).await {
            Ok(checks) => match gate(rc.all(), rc.names(), &checks) {
                Gate::Passed => return Ok(Waited::Go),
                Gate::Failed(f) => {
                    let why = format!(
                        "refused by CI rule: {version} failed required checks: {}",
                        describe_checks(&f, true)
                    );
                    return Ok(Waited::End(end(r, &why)));
                }
                Gate::Pending(p) => describe_checks(&p, false),
            },
            // GitHub unreachable: keep waiting (bounded by the timeout) and say so.
            Err(e) => format!("GitHub unavailable ({e})"),
        };
        if Instant::now() >= deadline {
            let why = format!(
                "refused by CI rule: required checks of {version} not finished after {} s: {pending}",
                ec.ci_timeout_seconds
            );
            return Ok(Waited::End(end(r, &why)));
        }
        if pending != shown {
            let title = format!(
                "Deploying {version} to {} (job {}): waiting for CI: {pending}",
                env_of(job),
                job.id
            );
            let n = Notice::new(NoticeKind::DeploymentStarted, Tone::Progress, title)
                .env(job.environment.as_deref())
                .version(job.version.as_deref())
                .job(job.id)
                .field("Requested by", &job.requested_by)
                .action("cancel", "Cancel", job.id, true);
            apply_retrying(r.app, &notices(&r.app.settings, job, &n)).await?;
            r.app.outbox_wake.notify_one();
            shown = pending;
        }
        let nap = Duration::from_secs(ec.ci_poll_seconds).min(deadline - Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = r.stops.shutdown.cancelled() => return Ok(Waited::Abandon),
            _ = r.stops.cancel.cancelled() => {
                let n = Notice::new(
                    NoticeKind::JobCancelled,
                    Tone::Warning,
                    format!("Deployment of {version} to {} was cancelled while waiting for CI (job {})", env_of(job), job.id),
                )
                .env(job.environment.as_deref())
                .version(job.version.as_deref());
                return Ok(Waited::End(finish::end_writes(r, state::CANCELLED, n.job(job.id))));
            }
        }
    }
}

fn end(r: &JobRun<'_>, why: &str) -> (&'static str, Vec<Write>) {
    let job = r.job;
    let n = Notice::new(
        NoticeKind::DeploymentFailed,
        Tone::Danger,
        format!(
            "Deployment of {} to {} did not start: {why} (job {})",
            job.version.as_deref().unwrap_or("-"),
            env_of(job),
            job.id
        ),
    )
    .env(job.environment.as_deref())
    .version(job.version.as_deref())
    .job(job.id);
    finish::end_writes(r, state::FAILED, n)
}
