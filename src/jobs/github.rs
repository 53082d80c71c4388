//! A job's GitHub Deployments: opened when its steps start (a deploy's commit, or for a
//! rollback the commit the version stood for), closed with the job's outcome. The rows go
//! through the outbox (`outbox::github`), so GitHub being down never holds up the job.

use crate::app::App;
use crate::config::catalog::JobKind;
use crate::jobs::env_of;
use crate::jobs::run::JobRun;
use crate::outbox::github::{self as gh_outbox, gh_state};
use crate::store::Write;
use crate::store::github::OpenedDeployment;
use crate::store::jobs::JobRow;

/// The deployment key of job `id`'s own deploy or rollback.
pub(crate) fn key(id: i64) -> String {
    id.to_string()
}

/// The key of job `id`'s automatic rollback.
pub(crate) fn rollback_key(id: i64) -> String {
    format!("{id}:rollback")
}

/// Does this job open a GitHub deployment? Deploys and rollbacks of a version, on an
/// environment with GitHub configured. The repository, when it does.
pub(crate) fn repository(app: &App, job: &JobRow) -> Option<String> {
    let kind = JobKind::parse(&job.kind).unwrap_or(JobKind::Custom);
    if !matches!(kind, JobKind::Deploy | JobKind::Rollback) || job.version.is_none() {
        return None;
    }
    app.github(env_of(job)).map(|(_, repo)| repo)
}

/// The writes that open deployment `key` of `version` (with the job's resolved commit for
/// a deploy of that version, else the SHA it stood for when last deployed here).
pub(crate) async fn open(r: &JobRun<'_>, key: &str, version: &str, what: &str) -> Vec<Write> {
    let Some(repo) = repository(r.app, r.job) else {
        return Vec::new();
    };
    let (job, env) = (r.job, env_of(r.job));
    let mut sha = job
        .args_map()
        .get("commit_sha")
        .filter(|_| job.version.as_deref() == Some(version))
        .cloned();
    if sha.is_none() {
        sha = r.app.db.github_sha(env, version).await.ok().flatten();
    }
    let d = OpenedDeployment {
        key,
        job_id: job.id,
        repository: &repo,
        environment: env,
        version,
        sha: sha.as_deref(),
    };
    let description = format!(
        "Deckhand job {}: {what} {version} by {}",
        job.id, job.requested_by
    );
    gh_outbox::open(&r.app.settings, &d, &description)
}

/// The status that closes deployment `key`: success, failure, or error (cancelled).
pub(crate) fn close(r: &JobRun<'_>, key: &str, state: &str, description: &str) -> Vec<Write> {
    close_of(r.app, r.job, key, state, description)
}

fn close_of(app: &App, job: &JobRow, key: &str, state: &str, description: &str) -> Vec<Write> {
    let Some(repo) = repository(app, job) else {
        return Vec::new();
    };
    vec![gh_outbox::status(
        &app.settings,
        job.id,
        key,
        &repo,
        env_of(job),
        state,
        description,
    )]
}

/// A job found interrupted (its process died), or ended by an internal error: `error` on
/// the deployments it had opened.
pub(crate) async fn interrupted(app: &App, job: &JobRow, description: &str) -> Vec<Write> {
    let mut out = Vec::new();
    for key in [key(job.id), rollback_key(job.id)] {
        if let Ok(Some(_)) = app.db.github_deployment_id(&key).await {
            out.extend(close_of(app, job, &key, gh_state::ERROR, description));
        }
    }
    out
}

/// GitHub's state for a job that ended in `final_state`.
pub(crate) fn state_of(final_state: &str) -> &'static str {
    use crate::store::jobs::state;
    if final_state == state::SUCCEEDED {
        gh_state::SUCCESS
    } else if final_state == state::FAILED {
        gh_state::FAILURE
    } else {
        gh_state::ERROR
    }
}
