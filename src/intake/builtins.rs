//! Commands built into Deckhand: help, status, history, cancel, approve, reject, lock,
//! unlock. They act at once (no job), through the same roles and audit as the rest.

use crate::domain::state::DeployStatus;
use std::collections::BTreeSet;

use crate::app::App;
use crate::config::catalog::BUILTINS;
use crate::domain::JobId;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::platform::same_actor;
use crate::domain::text::describe;
use crate::domain::time::fmt_duration;
use crate::domain::time::fmt_time;
use crate::domain::time::now_ms;
use crate::intake::policy;
use crate::intake::{Decision, Invocation};
use crate::store::jobs::{JobRow, state, transition};
use crate::store::{AuditEvent, Write};

pub async fn run<'a>(
    app: &'a App,
    inv: &Invocation,
    name: &str,
    held: &BTreeSet<String>,
) -> anyhow::Result<Decision<'a>> {
    let usage = BUILTINS
        .iter()
        .find(|b| b.0 == name)
        .map(|b| b.2)
        .unwrap_or("");
    let arg = |i: usize| inv.args.get(i).map(String::as_str);
    let bad_usage = |why: &str| Ok(Decision::Refuse(format!("{why}; usage: {usage}")));
    match name {
        "help" => Ok(Decision::Info(help(app, held))),
        "status" => {
            let env = arg(0);
            if let Some(e) = env
                && let Err(r) = known_env(app, e)
            {
                return Ok(Decision::Refuse(r));
            }
            Ok(Decision::Info(status(app, env).await?))
        }
        "history" => match arg(0) {
            None => bad_usage("missing ENVIRONMENT"),
            Some(e) => match known_env(app, e) {
                Err(r) => Ok(Decision::Refuse(r)),
                Ok(()) => Ok(Decision::Info(history(app, e).await?)),
            },
        },
        "cancel" | "approve" | "reject" => {
            let Some(raw) = arg(0) else {
                return bad_usage("missing JOB");
            };
            let id = match JobId::parse(raw) {
                Ok(j) => j.0,
                Err(e) => return bad_usage(&e.0),
            };
            let Some(job) = app.db.job(id).await? else {
                return Ok(Decision::Refuse(format!(
                    "there is no job {id}; `deckhand jobs` lists recent jobs"
                )));
            };
            match name {
                "cancel" => cancel(app, inv, &job, held).await,
                "approve" => approve(app, inv, &job, held).await,
                _ => reject(app, inv, &job, held).await,
            }
        }
        "ack" => {
            let Some(id) = arg(0).and_then(|a| JobId::parse(a).ok()) else {
                return bad_usage("missing INCIDENT (its number)");
            };
            let ack = crate::watch::incidents::acknowledge(
                &app.db,
                &app.outbox_wake,
                id.0,
                &inv.actor,
                &inv.platform,
            )
            .await?;
            Ok(match ack.answer(id.0) {
                (true, reason) => Decision::Refuse(reason),
                (false, text) => Decision::Info(text),
            })
        }
        "lock" => {
            let (Some(e), true) = (arg(0), inv.args.len() > 1) else {
                return bad_usage("lock needs an environment and a reason");
            };
            if let Err(r) = known_env(app, e) {
                return Ok(Decision::Refuse(r));
            }
            if let Err(r) = may_change(app, e, held, "lock") {
                return Ok(Decision::Refuse(r));
            }
            let reason = inv.args[1..].join(" ");
            if let Err(r) = crate::domain::text::check_clean("the lock reason", &reason) {
                return Ok(Decision::Refuse(r));
            }
            super::locks::lock(app, inv, e, &reason).await
        }
        "unlock" => {
            let Some(e) = arg(0) else {
                return bad_usage("missing ENVIRONMENT");
            };
            if let Err(r) = known_env(app, e) {
                return Ok(Decision::Refuse(r));
            }
            if let Err(r) = may_change(app, e, held, "unlock") {
                return Ok(Decision::Refuse(r));
            }
            super::locks::unlock(app, inv, e, held).await
        }
        _ => Ok(Decision::Refuse(format!("unknown command {name:?}"))),
    }
}

fn known_env(app: &App, e: &str) -> Result<(), String> {
    if app.settings.config.environments.contains_key(e) {
        Ok(())
    } else {
        Err(format!(
            "unknown environment {:?}; accepted: {}",
            crate::domain::text::shorten(e),
            app.settings
                .config
                .environments
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Locks, cancels and rejections need the role that deploying there needs.
fn may_change(app: &App, env: &str, held: &BTreeSet<String>, what: &str) -> Result<(), String> {
    let role = app
        .catalog
        .get("deploy")
        .and_then(|c| c.role_for(Some(env)));
    policy::check_role(what, Some(env), role, held)
}

fn help(app: &App, held: &BTreeSet<String>) -> String {
    let mut out = String::from("Commands you may run:\n");
    for c in app.catalog.commands.values() {
        let envs: Vec<&str> = app
            .settings
            .config
            .environments
            .keys()
            .map(String::as_str)
            .filter(|e| policy::check_role(&c.name, Some(e), c.role_for(Some(e)), held).is_ok())
            .collect();
        let allowed = if c.env_arg().is_some() {
            if envs.is_empty() {
                continue;
            }
            format!(" (on {})", envs.join(", "))
        } else if policy::check_role(&c.name, None, c.role_for(None), held).is_err() {
            continue;
        } else {
            String::new()
        };
        out.push_str(&format!("  /{}  — {}{allowed}\n", c.usage, c.description));
    }
    for (_, desc, usage) in BUILTINS {
        out.push_str(&format!("  /{usage}  — {desc}\n"));
    }
    out.push_str(&format!(
        "Your roles: {}",
        held.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    out
}

async fn status(app: &App, only: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    for name in app.settings.config.environments.keys() {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let current = app.db.current_deployment(name).await?;
        out.push_str(&format!("{name}: "));
        match &current {
            Some(d) => out.push_str(&format!(
                "{} ({}; health: {}; deployed {} by {})",
                d.version,
                if d.verified {
                    DeployStatus::Verified.as_str()
                } else {
                    "NOT verified"
                },
                d.health.as_deref().unwrap_or("-"),
                fmt_time(d.started_at),
                d.requested_by
            )),
            None => out.push_str("nothing deployed yet"),
        }
        if let Some(l) = app.db.lock_of(name).await? {
            out.push_str(&format!(
                "\n    LOCKED by {} since {}: {}",
                l.locked_by,
                fmt_time(l.locked_at),
                l.reason
            ));
        }
        for j in app.db.open_jobs(Some(name)).await? {
            out.push_str(&format!(
                "\n    job {} {} ({}) by {}",
                j.id,
                describe(&j.command, None, j.version.as_deref()),
                j.state,
                j.requested_by
            ));
        }
        out.push('\n');
    }
    Ok(out.trim_end().to_owned())
}

async fn history(app: &App, env: &str) -> anyhow::Result<String> {
    let rows = app.db.deployments(env, 10).await?;
    if rows.is_empty() {
        return Ok(format!("{env}: no deployments yet"));
    }
    let mut out = format!("Last deployments of {env}, newest first:\n");
    for d in rows {
        out.push_str(&format!(
            "  {}  {:<12} {:<13} {:<11} job {:<5} {:<8} by {}\n",
            fmt_time(d.started_at),
            d.version,
            d.kind,
            d.status,
            d.job_id,
            d.duration_ms
                .map(fmt_duration)
                .unwrap_or_else(|| "-".into()),
            d.requested_by
        ));
    }
    Ok(out.trim_end().to_owned())
}

fn job_notice(app: &App, job: &JobRow, n: Notice) -> Vec<Write> {
    crate::outbox::routes::notices(
        &app.settings,
        job,
        &n.env(job.environment.as_deref())
            .version(job.version.as_deref())
            .job(job.id),
    )
}

pub(super) fn actor_audit(
    inv: &Invocation,
    action: &str,
    env: Option<&str>,
    job: Option<i64>,
    detail: String,
) -> Write {
    Write::Audit(AuditEvent {
        actor: inv.actor.clone(),
        platform: inv.platform.clone(),
        action: action.into(),
        environment: env.map(str::to_owned),
        job_id: job,
        detail,
    })
}

/// End a job that never started (cancelled or rejected): the guarded transition, the
/// notice on its thread and the audit row, to apply in one transaction.
fn end_unstarted(
    app: &App,
    inv: &Invocation,
    job: &JobRow,
    from: &'static [&'static str],
    to: &str,
    title: &str,
) -> Vec<Write> {
    let mut w = vec![transition(job.id, from, to, Some(title.to_owned()), None)];
    w.extend(job_notice(
        app,
        job,
        Notice::new(NoticeKind::JobCancelled, Tone::Warning, title.to_owned()),
    ));
    w.push(actor_audit(
        inv,
        &format!("job_{to}"),
        job.environment.as_deref(),
        Some(job.id),
        title.to_owned(),
    ));
    w
}

async fn cancel<'a>(
    app: &'a App,
    inv: &Invocation,
    job: &JobRow,
    held: &BTreeSet<String>,
) -> anyhow::Result<Decision<'a>> {
    let env = job.environment.as_deref().unwrap_or("-");
    if !same_actor(&job.requested_by, &inv.actor)
        && let Err(r) = may_change(app, env, held, "cancel")
    {
        return Ok(Decision::Refuse(r));
    }
    let what = describe(
        &job.command,
        job.environment.as_deref(),
        job.version.as_deref(),
    );
    match job.state.as_str() {
        state::QUEUED | state::AWAITING_APPROVAL => {
            let title = format!(
                "Job {} ({what}) was cancelled by {} before it started",
                job.id, inv.actor
            );
            let w = end_unstarted(
                app,
                inv,
                job,
                &[state::QUEUED, state::AWAITING_APPROVAL],
                state::CANCELLED,
                &title,
            );
            match app.db.apply(&w).await {
                Ok(_) => {
                    app.poke();
                    Ok(Decision::Info(title))
                }
                Err(e) if crate::store::jobs::is_conflict(&e) => Ok(Decision::Refuse(format!(
                    "job {} has just started; run cancel again to stop it",
                    job.id
                ))),
                Err(e) => Err(e.into()),
            }
        }
        state::RUNNING => {
            app.db
                .apply(&[
                    crate::store::jobs::request_cancel(job.id),
                    actor_audit(
                        inv,
                        "cancel_requested",
                        job.environment.as_deref(),
                        Some(job.id),
                        what.clone(),
                    ),
                ])
                .await?;
            Ok(Decision::Info(format!(
                "Cancelling job {} ({what}): its step is being stopped",
                job.id
            )))
        }
        s => Ok(Decision::Refuse(format!(
            "job {} has already ended ({s}); nothing to cancel",
            job.id
        ))),
    }
}

/// The role an approval decision on `job` needs, or why the job takes none.
fn approver_role<'a>(app: &'a App, job: &JobRow) -> Result<&'a str, String> {
    if job.state != state::AWAITING_APPROVAL {
        return Err(format!(
            "job {} is not waiting for approval (it is {})",
            job.id, job.state
        ));
    }
    Ok(job
        .environment
        .as_ref()
        .and_then(|e| app.settings.config.environments.get(e))
        .map(|e| e.approver_role.as_str())
        .unwrap_or("deployer"))
}

async fn approve<'a>(
    app: &'a App,
    inv: &Invocation,
    job: &JobRow,
    held: &BTreeSet<String>,
) -> anyhow::Result<Decision<'a>> {
    let already = app.db.approvals(job.id).await?;
    // A repeat (a double click, or five) is answered as one, also once the job has moved on.
    if let Err(r) = policy::check_not_yet_approved(job.id, &inv.actor, &already) {
        return Ok(Decision::Refuse(r));
    }
    let role = match approver_role(app, job) {
        Ok(r) => r,
        Err(refusal) => return Ok(Decision::Refuse(refusal)),
    };
    if let Err(r) =
        policy::check_approver(job.id, &job.requested_by, &inv.actor, &already, held, role)
    {
        return Ok(Decision::Refuse(r));
    }
    let count = already.len() as i64 + 1;
    let what = describe(
        &job.command,
        job.environment.as_deref(),
        job.version.as_deref(),
    );
    let mut w = vec![crate::store::history::approve(
        job.id,
        &inv.actor,
        &inv.platform,
        now_ms(),
    )];
    let title = if count >= job.approvals_needed {
        w.push(transition(
            job.id,
            &[state::AWAITING_APPROVAL],
            state::QUEUED,
            None,
            None,
        ));
        format!("Job {} ({what}) approved by {}; queued", job.id, inv.actor)
    } else {
        format!(
            "Job {} ({what}) approved by {} ({count} of {} approvals)",
            job.id, inv.actor, job.approvals_needed
        )
    };
    let mut n = Notice::new(NoticeKind::JobQueued, Tone::Info, title.clone());
    n = n.action("cancel", "Cancel", job.id, true);
    w.extend(job_notice(app, job, n));
    w.push(actor_audit(
        inv,
        "job_approved",
        job.environment.as_deref(),
        Some(job.id),
        title.clone(),
    ));
    match app.db.apply(&w).await {
        Ok(_) => {
            app.poke();
            Ok(Decision::Info(title))
        }
        Err(e) if crate::store::jobs::is_conflict(&e) => Ok(Decision::Refuse(format!(
            "job {} is no longer waiting for approval",
            job.id
        ))),
        // The same person's approval went in from a simultaneous click (the approvals key
        // is job and approver): this one changed nothing.
        Err(e) if e.is_unique_violation() => Ok(Decision::Refuse(policy::already_approved(job.id))),
        Err(e) => Err(e.into()),
    }
}

/// The answer to an approval its approver has already given.
async fn reject<'a>(
    app: &'a App,
    inv: &Invocation,
    job: &JobRow,
    held: &BTreeSet<String>,
) -> anyhow::Result<Decision<'a>> {
    let role = match approver_role(app, job) {
        Ok(r) => r,
        Err(refusal) => return Ok(Decision::Refuse(refusal)),
    };
    if !same_actor(&job.requested_by, &inv.actor) && !held.contains(role) && !held.contains("admin")
    {
        return Ok(Decision::Refuse(format!(
            "refused by approval rule: rejecting job {} needs the {role:?} role",
            job.id
        )));
    }
    let what = describe(
        &job.command,
        job.environment.as_deref(),
        job.version.as_deref(),
    );
    let title = format!("Job {} ({what}) was rejected by {}", job.id, inv.actor);
    let w = end_unstarted(
        app,
        inv,
        job,
        &[state::AWAITING_APPROVAL],
        state::REJECTED,
        &title,
    );
    match app.db.apply(&w).await {
        Ok(_) => Ok(Decision::Info(title)),
        Err(e) if crate::store::jobs::is_conflict(&e) => Ok(Decision::Refuse(format!(
            "job {} is no longer waiting for approval",
            job.id
        ))),
        Err(e) => Err(e.into()),
    }
}
