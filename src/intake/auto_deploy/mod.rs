//! Continuous delivery: `[environments.X] auto_deploy = { branch = "main" }` deploys the
//! branch's head to X once its required checks pass, through the same intake as a typed
//! `/deploy` (locks, staging-first, approvals, the CI gate and the queue all apply), as the
//! requester `github:<login>` (who pushed the head, else who sent the event, else the
//! commit's author).
//!
//! Deckhand learns of a new head or finished checks from webhooks (`events`) and by polling
//! (`poll`); both end here, in [`judge`]. The head is always the one GitHub's API answers
//! for the branch, never a payload's claim, so a replayed or stale event can only make
//! Deckhand look again. Each commit deploys at most once per environment, across replicas:
//! its job's idempotency key is `auto_deploy:<env>:<sha>`, and the database keeps one. A
//! commit the environment already runs (or has a job for) is left alone; one whose checks
//! failed is logged once and not asked about again until an event about it arrives.

mod events;
pub mod poll;

pub use events::{EventOutcome, on_event};

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::catalog::JobKind;
use crate::config::github::{AutoDeploy, RequiredChecks};
use crate::domain::platform::Platform;
use crate::intake::policy::Identity;
use crate::intake::{Invocation, Outcome};
use crate::store::github_auto::{AutoBranch, judgement};
use crate::support::github::{Fresh, Gate, GhError, GitHub, Head, describe_checks, gate};

/// What became of a branch's head on one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// The environment runs this commit already.
    Running,
    /// A job deploys it: this call enqueued it (`created`), or an earlier one did.
    Queued { job_id: i64, created: bool },
    /// Its required checks are still running (which, in words).
    Pending(String),
    /// A required check failed (which, with links).
    Failed(String),
    /// Intake refused the deploy: a lock, staging-first, …
    Refused(String),
    /// GitHub could not say (down, rate limited, no such branch): asked again later.
    Unknown(String),
}

impl Judged {
    /// One line for logs and the webhook's answer.
    pub fn describe(&self) -> String {
        match self {
            Judged::Running => "already running".into(),
            Judged::Queued { job_id, created } if *created => format!("queued as job {job_id}"),
            Judged::Queued { job_id, .. } => format!("job {job_id} deploys it"),
            Judged::Pending(c) => format!("waiting for checks: {c}"),
            Judged::Failed(c) => format!("not deployed: required checks failed: {c}"),
            Judged::Refused(r) => format!("not deployed: {r}"),
            Judged::Unknown(w) => format!("not known yet: {w}"),
        }
    }
}

/// The idempotency key of the auto-deploy of `sha` to `env`.
pub fn job_key(env: &str, sha: &str) -> String {
    format!("auto_deploy:{env}:{sha}")
}

/// The version a commit deploys as: its first 12 hex digits (as typed deploys name it, and
/// as production's `/deploy` names it to promote it).
pub fn version_of(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// An environment that auto-deploys a branch, ready to ask about.
pub(crate) struct Target<'a> {
    pub env: &'a str,
    pub cfg: &'a AutoDeploy,
    pub repo: String,
    pub checks: &'a RequiredChecks,
}

/// Every environment with `auto_deploy`, a repository and required checks (`deckhand
/// check` refuses the config otherwise).
pub(crate) fn targets(app: &App) -> Vec<Target<'_>> {
    let c = &app.settings.config;
    c.auto_deploys()
        .filter_map(|(env, cfg)| {
            Some(Target {
                env,
                cfg,
                repo: c.repository_of(env)?.to_owned(),
                checks: c.environments.get(env)?.required_checks.as_ref()?,
            })
        })
        .collect()
}

/// A GitHub client for background asks: a rate limit is handed back, not waited out.
fn client<'a>(app: &'a App, t: &Target<'_>) -> Option<GitHub<'a>> {
    app.github(t.env).map(|(gh, _)| GitHub {
        max_wait: Duration::ZERO,
        ..gh
    })
}

/// The branch's head as GitHub answers it at `now` (conditionally on the stored ETag; a
/// 304 keeps the stored head). A rate limit moves the branch's next poll past its wait.
pub(crate) async fn current_head(
    app: &App,
    t: &Target<'_>,
    row: &AutoBranch,
    now: i64,
) -> anyhow::Result<Result<Head, Judged>> {
    let Some(gh) = client(app, t) else {
        return Ok(Err(Judged::Unknown(
            "no GitHub credentials are set (GITHUB_TOKEN or a GitHub App)".into(),
        )));
    };
    let branch = &t.cfg.branch;
    match gh.branch_head(&t.repo, branch, row.etag.as_deref()).await {
        Ok(Fresh::NotModified) => Ok(match &row.head_sha {
            Some(sha) => Ok(Head {
                sha: sha.clone(),
                author: row.head_author.clone(),
            }),
            None => Err(Judged::Unknown(
                "GitHub answered 304 but no head is stored".into(),
            )),
        }),
        Ok(Fresh::Changed { value, etag }) => {
            app.db
                .set_branch_head(t.env, etag.as_deref(), &value.sha, value.author.as_deref())
                .await?;
            Ok(Ok(value))
        }
        Err(e) => {
            wait_out(app, t, &e, now).await?;
            Ok(Err(Judged::Unknown(match e {
                GhError::NotFound => format!("GitHub knows no branch {branch} in {}", t.repo),
                e => e.to_string(),
            })))
        }
    }
}

/// After a rate limit, the branch is not polled again before GitHub allows it.
async fn wait_out(app: &App, t: &Target<'_>, e: &GhError, now: i64) -> anyhow::Result<()> {
    if let GhError::RateLimited(wait) = e {
        let at = now + wait.as_millis() as i64;
        tracing::warn!(
            env = t.env,
            wait_s = wait.as_secs(),
            "auto-deploy: GitHub rate limit; polling again after it"
        );
        app.db.poll_not_before(t.env, at).await?;
    }
    Ok(())
}

/// Who deploys `head`: its pusher (from a push event), else `sender` (who sent the event
/// about it), else its author, as `github:<login>`.
pub(crate) fn requester(row: &AutoBranch, head: &Head, sender: Option<&str>) -> String {
    let pusher = row
        .pusher
        .as_deref()
        .filter(|_| row.pushed_sha.as_deref() == Some(head.sha.as_str()));
    let login = pusher
        .or(sender)
        .or(head.author.as_deref())
        .unwrap_or("unknown");
    format!("github:{login}")
}

/// Judge `head` of `t`'s branch at `now` and enqueue its deploy when its checks passed.
/// `again`: ask about a commit judged failed before (an event about it arrived: a re-run).
pub(crate) async fn judge(
    app: &Arc<App>,
    t: &Target<'_>,
    head: &Head,
    requester: &str,
    again: bool,
    now: i64,
) -> anyhow::Result<Judged> {
    let sha = head.sha.as_str();
    if let Some(job_id) = job_for(app, t.env, sha).await? {
        let queued = Judged::Queued {
            job_id,
            created: false,
        };
        return record(app, t, sha, requester, queued).await;
    }
    if app.db.running_commit(t.env).await?.as_deref() == Some(sha) {
        return record(app, t, sha, requester, Judged::Running).await;
    }
    let row = app.db.auto_branch_row(t.env).await?;
    if let Some(r) = &row
        && !again
        && r.judged_sha.as_deref() == Some(sha)
        && r.judgement.as_deref() == Some(judgement::FAILED)
    {
        return Ok(Judged::Failed(r.detail.clone().unwrap_or_default()));
    }
    let Some(gh) = client(app, t) else {
        return Ok(Judged::Unknown(
            "no GitHub credentials are set (GITHUB_TOKEN or a GitHub App)".into(),
        ));
    };
    let checks = match gh.checks(&t.repo, sha).await {
        Ok(c) => c,
        Err(e) => {
            wait_out(app, t, &e, now).await?;
            return Ok(Judged::Unknown(e.to_string()));
        }
    };
    let judged = match gate(t.checks.all(), t.checks.names(), &checks) {
        Gate::Failed(f) => Judged::Failed(describe_checks(&f, true)),
        Gate::Pending(p) => Judged::Pending(describe_checks(&p, false)),
        Gate::Passed => submit(app, t, sha, requester).await?,
    };
    record(app, t, sha, requester, judged).await
}

/// The job that deploys `sha` to `env` already: this auto-deploy's (by its key), or a typed
/// deploy of the same commit still queued or running.
async fn job_for(app: &App, env: &str, sha: &str) -> anyhow::Result<Option<i64>> {
    if let Some((id, _)) = app.db.job_by_key(&job_key(env, sha)).await? {
        return Ok(Some(id));
    }
    Ok(app
        .db
        .open_jobs(Some(env))
        .await?
        .into_iter()
        .find(|j| {
            j.kind == JobKind::Deploy.as_str()
                && j.args_map().get("commit_sha").map(String::as_str) == Some(sha)
        })
        .map(|j| j.id))
}

/// The deploy of `sha`, through intake as a typed one would go.
async fn submit(
    app: &Arc<App>,
    t: &Target<'_>,
    sha: &str,
    requester: &str,
) -> anyhow::Result<Judged> {
    let inv = invocation(t, sha, requester);
    Ok(match crate::intake::submit_unaudited(app, &inv).await? {
        Outcome::Accepted {
            job_id, duplicate, ..
        } => Judged::Queued {
            job_id,
            created: !duplicate,
        },
        Outcome::Refused(r) | Outcome::Info(r) => Judged::Refused(r),
    })
}

fn invocation(t: &Target<'_>, sha: &str, requester: &str) -> Invocation {
    Invocation {
        // The terminal's route: the environment's channels, else the server's output.
        platform: Platform::Terminal.as_str().into(),
        identity: Identity::AutoDeploy,
        actor: requester.to_owned(),
        channel: None,
        command: t.cfg.command.clone(),
        args: vec![t.env.to_owned(), version_of(sha).to_owned()],
        request_id: Some(job_key(t.env, sha)),
        reply_to: None,
    }
}

/// Store the judgement; the one replica whose update changed it logs it (and audits a
/// refusal), so a poll every minute does not repeat them.
async fn record(
    app: &Arc<App>,
    t: &Target<'_>,
    sha: &str,
    requester: &str,
    j: Judged,
) -> anyhow::Result<Judged> {
    let (name, detail) = match &j {
        Judged::Running => (judgement::RUNNING, String::new()),
        Judged::Queued { job_id, .. } => (judgement::QUEUED, job_id.to_string()),
        Judged::Pending(c) => (judgement::PENDING, c.clone()),
        Judged::Failed(c) => (judgement::FAILED, c.clone()),
        Judged::Refused(r) => (judgement::REFUSED, r.clone()),
        Judged::Unknown(_) => return Ok(j),
    };
    if !app.db.judge(t.env, sha, name, &detail).await? {
        return Ok(j);
    }
    let (env, short) = (t.env, version_of(sha));
    match &j {
        Judged::Queued {
            job_id,
            created: true,
        } => {
            tracing::info!(
                env,
                commit = short,
                job_id,
                "auto-deploy: queued the branch's head"
            )
        }
        Judged::Failed(checks) => tracing::info!(
            env,
            commit = short,
            %checks,
            "auto-deploy: the branch's head failed its required checks; not deploying it"
        ),
        Judged::Refused(reason) => {
            tracing::warn!(env, commit = short, %reason, "auto-deploy: refused");
            let inv = invocation(t, sha, requester);
            crate::intake::audit_refusal(app, &inv, "auto_deploy_refused", reason).await?;
        }
        _ => tracing::debug!(env, commit = short, judged = %j.describe(), "auto-deploy"),
    }
    Ok(j)
}

/// An auto-deploy's invocation of the command its environment's `auto_deploy` names: the
/// config is the authority for it, not a role.
pub(crate) fn by_config(
    config: &crate::config::Config,
    inv: &Invocation,
    name: &str,
    env: Option<&str>,
) -> bool {
    matches!(inv.identity, Identity::AutoDeploy)
        && env
            .and_then(|e| config.environments.get(e))
            .and_then(|e| e.auto_deploy.as_ref())
            .is_some_and(|a| a.command == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AutoBranch {
        AutoBranch {
            environment: "staging".into(),
            repository: "acme/shop".into(),
            branch: "main".into(),
            etag: None,
            head_sha: None,
            head_author: None,
            pushed_sha: None,
            pusher: None,
            next_poll_at: 0,
            judged_sha: None,
            judgement: None,
            detail: None,
            updated_at: 0,
        }
    }

    #[test]
    fn the_requester_is_the_pusher_then_the_sender_then_the_author() {
        let head = Head {
            sha: "a".repeat(40),
            author: Some("ada".into()),
        };
        assert_eq!(requester(&row(), &head, None), "github:ada");
        assert_eq!(requester(&row(), &head, Some("eve")), "github:eve");
        let pushed = AutoBranch {
            pushed_sha: Some("a".repeat(40)),
            pusher: Some("bob".into()),
            ..row()
        };
        assert_eq!(requester(&pushed, &head, Some("eve")), "github:bob");
        // A push of another commit says nothing about this one.
        let other = AutoBranch {
            pushed_sha: Some("b".repeat(40)),
            ..pushed
        };
        assert_eq!(requester(&other, &head, None), "github:ada");
        let anon = Head {
            author: None,
            ..head
        };
        assert_eq!(requester(&row(), &anon, None), "github:unknown");
        assert_eq!(version_of(&"c".repeat(40)), "cccccccccccc");
        assert_eq!(job_key("staging", "abc"), "auto_deploy:staging:abc");
    }
}
