//! GitHub Deployments through the outbox: every deploy and rollback with GitHub configured
//! opens a deployment (`POST /repos/{o}/{r}/deployments`) and posts its statuses
//! (`…/deployments/{id}/statuses`) as outbox rows of platform `github`, one thread per job.
//! So they go in order and are retried like chat notices, and a GitHub outage delays
//! them without ever holding up a deploy the gate already passed.
//!
//! The create's answer, GitHub's deployment id, is stored (`github_deployments`) for the
//! statuses that follow, after a restart too. A status whose deployment GitHub never
//! accepted (its create was given up) is dropped with a log line. Rows hold no token:
//! the deliverer takes it from the settings when it sends.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::config::Settings;
use crate::outbox::{Deliver, Delivery, DeliveryError, OutboxRow, Scope};
use crate::store::github::{OpenedDeployment, deployment_opened};
use crate::store::{NewNotice, Write};
use crate::support::github::{GhError, GitHub, PostError};

/// The platform name of these outbox rows.
pub const PLATFORM: &str = "github";

/// GitHub's limit on a deployment's or a status's description.
const MAX_DESCRIPTION: usize = 140;

/// What an outbox row of platform `github` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "github", rename_all = "snake_case")]
pub enum GhEvent {
    /// Create deployment `key` of `git_ref` (a full SHA, else a ref resolved when sent).
    Deployment {
        key: String,
        repository: String,
        #[serde(rename = "ref")]
        git_ref: String,
        environment: String,
        description: String,
        job_id: i64,
    },
    /// Post a status of deployment `key`.
    Status {
        key: String,
        repository: String,
        environment: String,
        state: String,
        description: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_url: Option<String>,
    },
}

/// GitHub's deployment status states Deckhand posts.
pub mod gh_state {
    pub const IN_PROGRESS: &str = "in_progress";
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const ERROR: &str = "error";
}

/// The outbox thread of a job's GitHub rows.
pub fn thread(job_id: i64) -> String {
    format!("github:job:{job_id}")
}

fn row(job_id: i64, ev: &GhEvent) -> Write {
    Write::Notice(NewNotice {
        job_id: Some(job_id),
        platform: PLATFORM.into(),
        channel: None,
        thread_key: thread(job_id),
        body: serde_json::to_string(ev).expect("an event always serializes"),
        whole: false,
        urgent: false,
    })
}

/// The writes that open deployment `d` when its steps start: its record, the create, and
/// its `in_progress` status, in that order on the job's thread.
pub fn open(settings: &Settings, d: &OpenedDeployment<'_>, description: &str) -> Vec<Write> {
    let create = GhEvent::Deployment {
        key: d.key.into(),
        repository: d.repository.into(),
        git_ref: d.sha.unwrap_or(d.version).into(),
        environment: d.environment.into(),
        description: crate::domain::text::cut(description, MAX_DESCRIPTION),
        job_id: d.job_id,
    };
    vec![
        deployment_opened(d),
        row(d.job_id, &create),
        status(
            settings,
            d.job_id,
            d.key,
            d.repository,
            d.environment,
            gh_state::IN_PROGRESS,
            description,
        ),
    ]
}

/// A status of deployment `key` of job `job_id`. `log_url` is the job's page when
/// `[ui] public_url` is set; a success also names the environment's address (its `url`,
/// else its health URL).
pub fn status(
    settings: &Settings,
    job_id: i64,
    key: &str,
    repository: &str,
    environment: &str,
    state: &str,
    description: &str,
) -> Write {
    let env_cfg = settings.config.environments.get(environment);
    let environment_url = (state == gh_state::SUCCESS)
        .then(|| env_cfg.and_then(|e| e.url.clone().or_else(|| e.health_url.clone())))
        .flatten();
    let ev = GhEvent::Status {
        key: key.into(),
        repository: repository.into(),
        environment: environment.into(),
        state: state.into(),
        description: crate::domain::text::cut(description, MAX_DESCRIPTION),
        environment_url,
        log_url: settings
            .config
            .ui
            .base_url()
            .map(|b| format!("{b}/jobs/{job_id}")),
    };
    row(job_id, &ev)
}

/// Delivers [`GhEvent`]s to GitHub's REST API.
pub struct GitHubDeployments;

impl GitHubDeployments {
    /// A deliverer when GitHub can be reached: credentials, and a repository somewhere.
    pub fn boxed_if_configured(app: &App) -> Option<crate::outbox::Deliverer> {
        let c = &app.settings.config;
        let any_repo = c.github.repository.is_some()
            || c.environments.values().any(|e| e.repository.is_some());
        (any_repo && app.github_auth.is_some())
            .then(|| Box::new(GitHubDeployments) as crate::outbox::Deliverer)
    }
}

impl Deliver for GitHubDeployments {
    fn platform(&self) -> &'static str {
        PLATFORM
    }
    /// GitHub asks for a second between content-creating requests (its secondary rate
    /// limits): one send a second, across every job.
    fn pace(&self, _edits: bool) -> (Scope, Duration) {
        (Scope::Workspace, Duration::from_secs(1))
    }
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> Delivery<'a> {
        Box::pin(deliver(app, row))
    }
}

async fn deliver(app: &App, row: &OutboxRow) -> Result<(), DeliveryError> {
    let ev: GhEvent = serde_json::from_str(&row.body)
        .map_err(|_| DeliveryError::Fatal("unreadable GitHub event".into()))?;
    let env = match &ev {
        GhEvent::Deployment { environment, .. } | GhEvent::Status { environment, .. } => {
            environment
        }
    };
    let Some((gh, _)) = app.github(env) else {
        return Err(DeliveryError::Fatal(format!(
            "GitHub is not configured for {env} (a repository, and GITHUB_TOKEN or a GitHub App)"
        )));
    };
    // A rate limit is handed back to the sender as the wait, not slept through here.
    let gh = GitHub {
        max_wait: Duration::ZERO,
        ..gh
    };
    match ev {
        GhEvent::Deployment {
            key,
            repository,
            git_ref,
            environment,
            description,
            job_id,
        } => {
            if let Some(Some(_)) = app.db.github_deployment_id(&key).await.map_err(db_retry)? {
                return Ok(()); // Created already (a re-run of the job).
            }
            let sha = full_sha(&gh, &repository, &git_ref).await?;
            let body = json!({
                "ref": sha,
                "environment": environment,
                "payload": {"deckhand_job_id": job_id},
                "auto_merge": false,
                "required_contexts": [],
                "description": description,
            });
            let created = gh
                .post(&format!("/repos/{repository}/deployments"), &body)
                .await
                .map_err(delivery_error)?;
            let Some(id) = created["id"].as_i64() else {
                return Err(DeliveryError::Fatal(
                    "GitHub answered a deployment without an id".into(),
                ));
            };
            tracing::info!(job_id, deployment_id = id, environment = %environment, "GitHub deployment created");
            app.db
                .set_github_deployment_id(&key, id, &sha)
                .await
                .map_err(db_retry)
        }
        GhEvent::Status {
            key,
            repository,
            state,
            description,
            environment_url,
            log_url,
            ..
        } => {
            let Some(Some(id)) = app.db.github_deployment_id(&key).await.map_err(db_retry)? else {
                // Its create came first on this thread and was given up: nothing to post to.
                tracing::warn!(outbox_id = row.id, deploy_key = %key, state = %state, "GitHub never created this deployment; its status is dropped");
                return Ok(());
            };
            // `auto_inactive` (GitHub's default, sent to be plain) makes GitHub mark the
            // environment's earlier deployments inactive on this one's success.
            let mut body = json!({
                "state": state,
                "description": description,
                "auto_inactive": true,
            });
            if let Some(u) = environment_url {
                body["environment_url"] = json!(u);
            }
            if let Some(u) = log_url {
                body["log_url"] = json!(u);
            }
            gh.post(
                &format!("/repos/{repository}/deployments/{id}/statuses"),
                &body,
            )
            .await
            .map(|_| ())
            .map_err(delivery_error)
        }
    }
}

/// `git_ref` as a full SHA: itself when it is one, else resolved in `repo`.
async fn full_sha(gh: &GitHub<'_>, repo: &str, git_ref: &str) -> Result<String, DeliveryError> {
    if git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(git_ref.to_owned());
    }
    match gh.commit(repo, git_ref).await {
        Ok(c) => Ok(c.sha),
        Err(GhError::NotFound) => Err(DeliveryError::Fatal(format!(
            "{} is not a commit of {repo}",
            crate::domain::text::shorten(git_ref)
        ))),
        Err(e @ GhError::RateLimited(wait)) => Err(DeliveryError::Retry {
            after: Some(wait),
            reason: e.to_string(),
        }),
        Err(GhError::Failed(m)) => Err(DeliveryError::Retry {
            after: None,
            reason: m,
        }),
    }
}

fn delivery_error(e: PostError) -> DeliveryError {
    match e {
        PostError::Again { after, reason } => DeliveryError::Retry { after, reason },
        PostError::Refused(r) => DeliveryError::Fatal(r),
    }
}

fn db_retry(e: crate::store::StoreError) -> DeliveryError {
    DeliveryError::Retry {
        after: None,
        reason: format!("database: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_without_secrets() {
        let ev = GhEvent::Status {
            key: "7".into(),
            repository: "acme/shop".into(),
            environment: "staging".into(),
            state: gh_state::SUCCESS.into(),
            description: "deployed".into(),
            environment_url: Some("https://staging.example".into()),
            log_url: None,
        };
        let s = serde_json::to_string(&ev).unwrap();
        assert!(s.starts_with(r#"{"github":"status","key":"7""#), "{s}");
        assert_eq!(serde_json::from_str::<GhEvent>(&s).unwrap(), ev);
        assert_eq!(
            delivery_error(PostError::Refused("401".into())),
            DeliveryError::Fatal("401".into())
        );
    }
}
