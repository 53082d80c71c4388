//! GitHub Deployments opened by jobs: the commit each one is for, and GitHub's id once the
//! outbox has created it (see `outbox::github`).

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Arg, Db, Result, Write};

/// One deployment a job opens on GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDeployment<'a> {
    /// `12` for job 12's deploy, `12:rollback` for its automatic rollback.
    pub key: &'a str,
    pub job_id: i64,
    pub repository: &'a str,
    pub environment: &'a str,
    pub version: &'a str,
    /// The full SHA when known; else the deliverer resolves `version`.
    pub sha: Option<&'a str>,
}

/// Record a deployment about to be created through the outbox, in the transaction that
/// starts its job. A re-run of the same job keeps the first row (and GitHub deployment).
pub fn deployment_opened(d: &OpenedDeployment<'_>) -> Write {
    Write::sql(
        "INSERT INTO github_deployments \
         (deploy_key, job_id, repository, environment, version, sha, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (deploy_key) DO NOTHING",
        vec![
            Arg::Text(d.key.into()),
            Arg::Int(d.job_id),
            Arg::Text(d.repository.into()),
            Arg::Text(d.environment.into()),
            Arg::Text(d.version.into()),
            d.sha.map_or(Arg::Null, |s| Arg::Text(s.into())),
            Arg::Int(now_ms()),
        ],
    )
}

impl Db {
    /// GitHub's id of the deployment `key`: `None` when no such deployment was opened,
    /// `Some(None)` when it was but GitHub has not (or never) accepted it.
    pub async fn github_deployment_id(&self, key: &str) -> Result<Option<Option<i64>>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("SELECT deployment_id FROM github_deployments WHERE deploy_key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?
        }))
    }

    /// GitHub created deployment `key` as `id` (for the commit `sha`).
    pub async fn set_github_deployment_id(&self, key: &str, id: i64, sha: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("UPDATE github_deployments SET deployment_id = $1, sha = $2 WHERE deploy_key = $3")
                .bind(id)
                .bind(sha)
                .bind(key)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The full SHA that `version` stood for when it was last deployed to `env`.
    pub async fn github_sha(&self, env: &str, version: &str) -> Result<Option<String>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar(
                "SELECT sha FROM github_deployments WHERE environment = $1 AND version = $2 \
                 AND sha IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            )
            .bind(env)
            .bind(version)
            .fetch_optional(p)
            .await?
        }))
    }

    /// What `env` runs now, as a commit to compare from: its SHA when a deployment of it
    /// recorded one (the deploy job's `commit_sha`, or its GitHub deployment), else the
    /// version as deployed (a ref GitHub can still compare). `None`: nothing deployed yet.
    pub async fn running_commit(&self, env: &str) -> Result<Option<String>> {
        let Some(d) = self.current_deployment(env).await? else {
            return Ok(None);
        };
        let sha: Option<String> = on_db!(self, p => {
            sqlx::query_scalar(
                "SELECT sha FROM github_deployments WHERE job_id = $1 AND version = $2 \
                 AND sha IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            )
            .bind(d.job_id)
            .bind(&d.version)
            .fetch_optional(p)
            .await?
        });
        if let Some(s) = sha {
            return Ok(Some(s));
        }
        let from_job = self
            .job(d.job_id)
            .await?
            .filter(|j| j.version.as_deref() == Some(d.version.as_str()))
            .and_then(|j| j.args_map().get("commit_sha").cloned());
        Ok(Some(from_job.unwrap_or(d.version)))
    }
}
