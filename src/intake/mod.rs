//! Intake: one platform-neutral path from "someone typed a command" to a job or a refusal.
//!
//! Slack, Discord and the terminal each build an [`Invocation`]; everything after that —
//! catalog lookup, argument validation, roles, locks, staging-first, approvals, the job row
//! and its first notice — is the same code, so a rule holds on every platform at once.

pub mod auto_deploy;
pub(crate) mod builtins;
mod github;
mod locks;
pub mod policy;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::app::App;
use crate::config::EnvironmentConfig;
use crate::config::catalog::{BUILTINS, Command, JobKind, ParsedArgs};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::platform::Platform;
use crate::domain::text::{describe, shorten};
use crate::domain::time::fmt_time;
use crate::domain::time::now_ms;
use crate::intake::policy::{Identity, LockFacts, PromotionFacts};
use crate::store::jobs::{JobRow, NewJob, state};
use crate::store::{AuditEvent, Write};

/// What someone asked for, wherever they asked.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `terminal`, `slack` or `discord`.
    pub platform: String,
    pub identity: Identity,
    /// How the person appears in reports and the audit log: `slack:U123`.
    pub actor: String,
    pub channel: Option<String>,
    /// Command name, with or without the leading `/`.
    pub command: String,
    pub args: Vec<String>,
    /// The platform's id of this request: the idempotency key.
    pub request_id: Option<String>,
    pub reply_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        job_id: i64,
        /// The same request was seen before; this is the earlier job.
        duplicate: bool,
        message: String,
    },
    /// Refused with the rule and what would be accepted.
    Refused(String),
    /// A built-in's answer (help, status, history, …).
    Info(String),
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Outcome::Accepted { message, .. } => message,
            Outcome::Refused(m) | Outcome::Info(m) => m,
        }
    }
}

/// Decide on an invocation: refuse it, answer it, or turn it into a job.
pub async fn submit(app: &Arc<App>, inv: Invocation) -> anyhow::Result<Outcome> {
    let name = inv.command.trim_start_matches('/').to_owned();
    let (action, reason) = match decide(app, &inv, &name).await? {
        Decision::Refuse(r) => ("command_refused", r),
        Decision::RefuseAs(action, r) => (action, r),
        Decision::Info(i) => return Ok(Outcome::Info(i)),
        Decision::Job(job, cmd) => return enqueue(app, &inv, *job, cmd).await,
    };
    audit_refusal(app, &inv, action, &reason).await?;
    Ok(Outcome::Refused(reason))
}

/// [`submit`], but a refusal is not audited: the caller audits the ones it has not seen
/// before (an auto-deploy asks again on every poll).
pub(crate) async fn submit_unaudited(app: &Arc<App>, inv: &Invocation) -> anyhow::Result<Outcome> {
    let name = inv.command.trim_start_matches('/').to_owned();
    Ok(match decide(app, inv, &name).await? {
        Decision::Refuse(r) | Decision::RefuseAs(_, r) => Outcome::Refused(r),
        Decision::Info(i) => Outcome::Info(i),
        Decision::Job(job, cmd) => enqueue(app, inv, *job, cmd).await?,
    })
}

/// Refuse a correctly signed request from a workspace, app or guild this Deckhand does not
/// serve: nothing is looked up or changed; the refusal is audited like any other.
pub async fn refuse_elsewhere(
    app: &App,
    inv: Invocation,
    reason: String,
) -> anyhow::Result<Outcome> {
    tracing::warn!(platform = %inv.platform, actor = %inv.actor, %reason, "refused a request from elsewhere");
    audit_refusal(app, &inv, "refused_elsewhere", &reason).await?;
    Ok(Outcome::Refused(reason))
}

/// The audit row (and counter) of a refusal.
pub(crate) async fn audit_refusal(
    app: &App,
    inv: &Invocation,
    action: &str,
    reason: &str,
) -> anyhow::Result<()> {
    crate::support::metrics::command(&inv.platform, "refused");
    let name = inv.command.trim_start_matches('/');
    app.db
        .apply(&[Write::Audit(AuditEvent {
            actor: inv.actor.clone(),
            platform: inv.platform.clone(),
            action: action.into(),
            environment: inv
                .args
                .first()
                .cloned()
                .filter(|a| app.settings.config.environments.contains_key(a)),
            job_id: None,
            detail: format!("/{name}: {reason}"),
        })])
        .await?;
    Ok(())
}

pub enum Decision<'a> {
    Refuse(String),
    /// A refusal audited under its own action name (e.g. `unlock_refused`).
    RefuseAs(&'static str, String),
    Info(String),
    Job(Box<NewJob>, &'a Command),
}

async fn decide<'a>(app: &'a App, inv: &Invocation, name: &str) -> anyhow::Result<Decision<'a>> {
    let config = &app.settings.config;
    let held = policy::roles_of(config, &inv.identity);
    if BUILTINS.iter().any(|b| b.0 == name) {
        return crate::intake::builtins::run(app, inv, name, &held).await;
    }
    let Some(cmd) = app.catalog.get(name) else {
        return Ok(Decision::Refuse(format!(
            "unknown command {:?}; accepted: {}",
            shorten(name),
            app.catalog.names().join(", ")
        )));
    };
    if let Err(r) = check_channel(cmd, inv, name) {
        return Ok(Decision::Refuse(r));
    }
    let args = match app.catalog.parse_args(cmd, &inv.args, config) {
        Ok(a) => a,
        Err(e) => return Ok(Decision::Refuse(e)),
    };
    let env = args.environment.as_ref().map(|e| e.as_str().to_owned());
    if !auto_deploy::by_config(config, inv, name, env.as_deref())
        && let Err(e) =
            policy::check_role(name, env.as_deref(), cmd.role_for(env.as_deref()), &held)
    {
        return Ok(Decision::Refuse(e));
    }
    let env_cfg = env.as_ref().and_then(|e| config.environments.get(e));
    if let Err(r) = check_lock(app, cmd, env.as_deref()).await? {
        return Ok(Decision::Refuse(r));
    }
    let mut version = args.version.as_ref().map(|v| v.as_str().to_owned());
    let mut commit_sha = None;
    match (cmd.kind, &env, env_cfg) {
        (JobKind::Deploy, Some(e), Some(ec)) => {
            if let Err(r) = check_promotion(app, e, ec, version.as_deref(), &args, &held).await? {
                return Ok(Decision::Refuse(r));
            }
            if let Some(v) = &version {
                match github::check_commit(app, e, ec, v, args.emergency.as_deref(), &held).await? {
                    Ok(sha) => commit_sha = sha,
                    Err(r) => return Ok(Decision::Refuse(r)),
                }
            }
        }
        (JobKind::Migrate, Some(e), Some(ec)) => {
            if let Err(r) = check_migration_promotion(app, e, ec, &args, &held).await? {
                return Ok(Decision::Refuse(r));
            }
        }
        (JobKind::Restore, Some(e), _) => match args.values.get("backup") {
            None => {
                return Ok(Decision::Info(
                    crate::jobs::dbops::restore::listing(app, e).await?,
                ));
            }
            Some(b) => {
                if let Err(r) = crate::jobs::dbops::restore::check_named(app, e, b).await? {
                    return Ok(Decision::Refuse(r));
                }
            }
        },
        (JobKind::Rollback, Some(e), _) => match rollback_target(app, e, version).await? {
            Ok(v) => version = Some(v),
            Err(r) => return Ok(Decision::Refuse(r)),
        },
        _ => {}
    }
    let mut job = new_job(inv, cmd, env, version, &args, env_cfg)?;
    if let Some(sha) = commit_sha {
        let mut values: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&job.args)?;
        values.insert("commit_sha".into(), sha);
        job.args = serde_json::to_string(&values)?;
    }
    Ok(Decision::Job(Box::new(job), cmd))
}

/// A rule's answer: `Ok(Err(refusal))` when it refuses; `Err` when the database failed.
type Checked<T = ()> = anyhow::Result<Result<T, String>>;

/// A command limited to some channels is refused elsewhere (the terminal is not a channel).
fn check_channel(cmd: &Command, inv: &Invocation, name: &str) -> Result<(), String> {
    if !cmd.channels.is_empty()
        && inv.platform != Platform::Terminal.as_str()
        && !inv
            .channel
            .as_ref()
            .is_some_and(|c| cmd.channels.contains(c))
    {
        return Err(format!(
            "refused by channel rule: /{name} may only be used in these channels: {}",
            cmd.channels.join(", ")
        ));
    }
    Ok(())
}

/// A locked environment refuses jobs that change it.
async fn check_lock(app: &App, cmd: &Command, env: Option<&str>) -> Checked {
    if let (Some(e), true) = (env, cmd.kind.mutating()) {
        let lock = app.db.lock_of(e).await?.map(|l| LockFacts {
            locked_by: l.locked_by,
            reason: l.reason,
            locked_at: fmt_time(l.locked_at),
        });
        return Ok(policy::check_lock(e, lock.as_ref()));
    }
    Ok(Ok(()))
}

/// Staging first: a deploy to an environment promoted from another needs the version
/// verified there, unless an admin overrides it with `--emergency`.
async fn check_promotion(
    app: &App,
    env: &str,
    env_cfg: &EnvironmentConfig,
    version: Option<&str>,
    args: &ParsedArgs,
    held: &BTreeSet<String>,
) -> Checked {
    if let (Some(src), Some(v)) = (&env_cfg.promote_from, version) {
        // What the source runs *now* must be this version, verified: a version
        // staging has since rolled back from is not proven.
        let current = app.db.current_deployment(src).await?;
        let facts = PromotionFacts {
            source: src.clone(),
            verified_on_source: current
                .as_ref()
                .is_some_and(|d| d.verified && d.version == v),
            source_current: current.map(|d| d.version),
        };
        return Ok(policy::check_promotion(v, &facts, args.emergency.as_deref(), held).map(|_| ()));
    }
    if args.emergency.is_some() && env_cfg.required_checks.is_none() {
        return Ok(Err(format!(
            "refused by emergency rule: {env} is not promoted from another environment, so --emergency does not apply; run the deploy without it"
        )));
    }
    Ok(Ok(()))
}

/// Staging first for migrations on an environment with a database: the source's last
/// migration ran cleanly with no drift (the job checks it built the same schema), unless
/// an admin overrides it with `--emergency`.
async fn check_migration_promotion(
    app: &App,
    env: &str,
    env_cfg: &EnvironmentConfig,
    args: &ParsedArgs,
    held: &BTreeSet<String>,
) -> Checked {
    match (&env_cfg.promote_from, &env_cfg.database, &args.emergency) {
        (Some(_), Some(_), Some(reason)) => Ok(policy::check_promotion(
            "this migration",
            &PromotionFacts::default(),
            Some(reason),
            held,
        )
        .map(|_| ())),
        (Some(src), Some(_), None) => {
            let last = app
                .db
                .last_db_run(src, crate::store::dbruns::kind::MIGRATE)
                .await?;
            Ok(crate::jobs::dbops::migration_promotion(
                src,
                last.as_ref(),
                None,
            ))
        }
        (_, _, Some(_)) => Ok(Err(format!(
            "refused by emergency rule: {env} has no database promoted from another environment, so --emergency does not apply; run the migration without it"
        ))),
        _ => Ok(Ok(())),
    }
}

/// The version a rollback goes to: the one asked for, which must have been verified on
/// `env`, else the last verified version before the current one.
async fn rollback_target(app: &App, env: &str, version: Option<String>) -> Checked<String> {
    let current = app.db.current_deployment(env).await?.map(|d| d.version);
    if let Some(v) = version {
        if app.db.verified_on(env, &v).await? {
            return Ok(Ok(v));
        }
        let known = app.db.verified_versions(env, 10).await?;
        return Ok(Err(format!(
            "refused by rollback rule: {v} is not a verified version in {env}'s history; accepted: {}",
            if known.is_empty() {
                "none yet".into()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(
        match app.db.previous_verified(env, current.as_deref()).await? {
            Some(prev) => Ok(prev),
            None => Err(format!(
                "refused by rollback rule: {env} has no earlier verified version to roll back to{}",
                current
                    .map(|c| format!(" (it runs {c})"))
                    .unwrap_or_default()
            )),
        },
    )
}

/// The job row to enqueue; it waits for approvals when its environment asks for them.
fn new_job(
    inv: &Invocation,
    cmd: &Command,
    env: Option<String>,
    version: Option<String>,
    args: &ParsedArgs,
    env_cfg: Option<&EnvironmentConfig>,
) -> anyhow::Result<NewJob> {
    let approvals = env_cfg.map(|e| e.approvals).unwrap_or(0) as i64;
    let needs_approval = approvals > 0 && cmd.kind.mutating();
    let mut values = args.values.clone();
    if let Some(v) = &version {
        values.insert("version".into(), v.clone());
    }
    Ok(NewJob {
        command: cmd.name.clone(),
        kind: cmd.kind.as_str().to_owned(),
        concurrency_key: match (&env, cmd.kind.mutating()) {
            (Some(e), true) => Some(format!("env:{e}")),
            _ => None,
        },
        environment: env,
        version,
        args: serde_json::to_string(&values)?,
        state: if needs_approval {
            state::AWAITING_APPROVAL
        } else {
            state::QUEUED
        }
        .to_owned(),
        requested_by: inv.actor.clone(),
        platform: inv.platform.clone(),
        channel: inv.channel.clone(),
        reply_to: inv.reply_to.clone(),
        idempotency_key: inv.request_id.clone(),
        idempotent: cmd.idempotent,
        approvals_needed: if needs_approval { approvals } else { 0 },
        approval_deadline: needs_approval.then(|| {
            now_ms() + env_cfg.map(|e| e.approval_timeout_seconds).unwrap_or(3600) as i64 * 1000
        }),
        emergency: args.emergency.clone(),
    })
}

/// Fault injection for tests: `DECKHAND_FAULT=NAME` makes the process die here, as a
/// `kill -9` would. Compiled into debug builds only.
pub fn fault_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DECKHAND_FAULT").is_ok_and(|f| f == name) {
        eprintln!("DECKHAND_FAULT={name}: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

async fn enqueue(
    app: &Arc<App>,
    inv: &Invocation,
    job: NewJob,
    cmd: &Command,
) -> anyhow::Result<Outcome> {
    let what = describe(
        &cmd.name,
        job.environment.as_deref(),
        job.version.as_deref(),
    );
    // An approval request shows what the deploy changes, for the approvers.
    let changes = match (&job.environment, job_sha(&job)) {
        (Some(e), Some(sha)) if job.state == state::AWAITING_APPROVAL => app.changes(e, &sha).await,
        _ => Vec::new(),
    };
    // Written by the group-commit writer, with the jobs of other commands arriving at the
    // same time; the answer comes once the transaction holding this job has committed.
    let extra = {
        let (app, inv, cmd, job, what) = (
            app.clone(),
            inv.clone(),
            cmd.clone(),
            job.clone(),
            what.clone(),
        );
        Arc::new(move |id, behind| {
            first_writes(&app, &inv, &cmd, &job, &what, &changes, (id, behind))
        })
    };
    let res = app.intake.enqueue(job.clone(), extra).await?;
    fault_point("abort-after-enqueue");
    crate::support::metrics::command(
        &inv.platform,
        if res.created { "accepted" } else { "duplicate" },
    );
    if res.created && job.state == state::QUEUED {
        app.poke();
    } else {
        // Nothing for a worker to run yet (a job waiting for approval is woken by its
        // approval): only the first notice to send. Waking the workers for every parked
        // job made them claim in vain hundreds of times a second under a flood of
        // commands, on SQLite each time holding the write lock intake needs.
        app.outbox_wake.notify_one();
    }
    let message = if !res.created {
        format!(
            "Already received: this request is job {} ({})",
            res.id, res.state
        )
    } else if job.state == state::AWAITING_APPROVAL {
        format!(
            "Job {} ({what}) waits for {} approval(s): someone else can run /approve {}",
            res.id, job.approvals_needed, res.id
        )
    } else {
        match res.behind {
            Some(b) => format!("Queued {what} as job {}, queued behind job {b}", res.id),
            None => format!("Queued {what} as job {}", res.id),
        }
    };
    Ok(Outcome::Accepted {
        job_id: res.id,
        duplicate: !res.created,
        message,
    })
}

/// What is recorded with the new job `id` (queued behind `behind`): its first notice, the
/// loud notice of an emergency override (a message of its own), and the audit entries.
fn first_writes(
    app: &App,
    inv: &Invocation,
    cmd: &Command,
    job: &NewJob,
    what: &str,
    changes: &[(String, String)],
    (id, behind): (i64, Option<i64>),
) -> Vec<Write> {
    let row = pseudo_row(id, job);
    let mut n = first_notice(job, what, id, behind);
    for (label, value) in changes {
        n = n.field(label, value);
    }
    let mut w = crate::outbox::routes::notices(&app.settings, &row, &n);
    if let Some(reason) = &job.emergency {
        let loud = Notice::new(
            NoticeKind::EmergencyOverride,
            Tone::Danger,
            format!(
                "EMERGENCY OVERRIDE by {}: {what} skips the staging-first rule. Reason: {reason}",
                job.requested_by
            ),
        )
        .env(job.environment.as_deref())
        .version(job.version.as_deref())
        .job(id);
        // Its own message, sent first: the job's message moves on and would bury it.
        let thread = format!("{}:emergency", crate::store::jobs::job_thread(id));
        w.extend(crate::outbox::routes::notices_in(
            &app.settings,
            &row,
            &loud,
            &thread,
            true,
        ));
        w.push(crate::store::jobs::audit(
            &row,
            "emergency_override",
            reason.clone(),
        ));
    }
    w.push(crate::store::jobs::audit(
        &row,
        "command_accepted",
        format!("/{} {}", cmd.name, inv.args.join(" ")),
    ));
    w
}

/// The full SHA a deploy's version resolved to, when GitHub is configured.
fn job_sha(job: &NewJob) -> Option<String> {
    serde_json::from_str::<std::collections::BTreeMap<String, String>>(&job.args)
        .ok()?
        .remove("commit_sha")
}

/// "Queued", or "needs approvals" with the buttons to give them.
fn first_notice(job: &NewJob, what: &str, id: i64, behind: Option<i64>) -> Notice {
    let waiting = job.state == state::AWAITING_APPROVAL;
    let approvals = job.approvals_needed;
    let title = if waiting {
        format!(
            "{what}: job {id} needs {approvals} approval(s) from someone other than {}",
            job.requested_by
        )
    } else {
        match behind {
            Some(b) => format!("Queued {what} as job {id}, queued behind job {b}"),
            None => format!("Queued {what} as job {id}"),
        }
    };
    let n = Notice::new(
        if waiting {
            NoticeKind::AwaitingApproval
        } else {
            NoticeKind::JobQueued
        },
        if waiting { Tone::Warning } else { Tone::Info },
        title,
    )
    .env(job.environment.as_deref())
    .version(job.version.as_deref())
    .job(id)
    .field("Requested by", &job.requested_by);
    if waiting {
        n.action("approve", "Approve", id, false)
            .action("reject", "Reject", id, true)
    } else {
        n.action("cancel", "Cancel", id, true)
    }
}

/// A row as it will be stored, for routing the first notices before it is read back.
fn pseudo_row(id: i64, j: &NewJob) -> JobRow {
    JobRow {
        id,
        command: j.command.clone(),
        kind: j.kind.clone(),
        environment: j.environment.clone(),
        version: j.version.clone(),
        args: j.args.clone(),
        state: j.state.clone(),
        requested_by: j.requested_by.clone(),
        platform: j.platform.clone(),
        channel: j.channel.clone(),
        reply_to: j.reply_to.clone(),
        idempotency_key: j.idempotency_key.clone(),
        concurrency_key: j.concurrency_key.clone(),
        idempotent: j.idempotent,
        attempts: 0,
        lease_owner: None,
        lease_until: None,
        run_at: 0,
        created_at: 0,
        started_at: None,
        finished_at: None,
        result: None,
        approvals_needed: j.approvals_needed,
        approval_deadline: j.approval_deadline,
        emergency: j.emergency.clone(),
        cancel_requested: false,
        watch_until: None,
        step: Default::default(),
    }
}
