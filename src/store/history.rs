//! Deployment history and environment locks: the facts policy decides from.

use crate::on_db;
use crate::store::{Arg, Db, DeploymentRow, Result, Write};

/// Statuses of a deployment row; see [`DeployStatus`](crate::domain::state::DeployStatus).
pub mod status {
    use crate::domain::state::DeployStatus;

    pub const RUNNING: &str = DeployStatus::Running.as_str();
    pub const VERIFIED: &str = DeployStatus::Verified.as_str();
    pub const UNHEALTHY: &str = DeployStatus::Unhealthy.as_str();
    pub const FAILED: &str = DeployStatus::Failed.as_str();
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockRow {
    pub environment: String,
    pub locked_by: String,
    pub platform: String,
    pub channel: Option<String>,
    pub reason: String,
    pub locked_at: i64,
    pub reminded_at: Option<i64>,
}

impl Db {
    /// What an environment runs now: the newest deployment whose steps completed.
    pub async fn current_deployment(&self, env: &str) -> Result<Option<DeploymentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM deployments WHERE environment = $1 AND status IN ('verified', 'unhealthy') \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Was this exact version deployed to `env` and verified healthy there?
    pub async fn verified_on(&self, env: &str, version: &str) -> Result<bool> {
        let n: i64 = on_db!(self, p => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM deployments WHERE environment = $1 AND version = $2 AND status = 'verified'",
            )
            .bind(env)
            .bind(version)
            .fetch_one(p)
            .await?
        });
        Ok(n > 0)
    }

    /// The newest verified version of `env` other than `not`: where a rollback goes.
    pub async fn previous_verified(&self, env: &str, not: Option<&str>) -> Result<Option<String>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar(
                "SELECT version FROM deployments WHERE environment = $1 AND status = 'verified' \
                 AND ($2 IS NULL OR version <> $2) ORDER BY id DESC LIMIT 1",
            )
            .bind(env)
            .bind(not)
            .fetch_optional(p)
            .await?
        }))
    }

    /// [`Self::previous_verified`] with when it was verified (its deployment's end, ms).
    pub async fn previous_verified_at(
        &self,
        env: &str,
        not: Option<&str>,
    ) -> Result<Option<(String, i64)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT version, COALESCE(finished_at, started_at) FROM deployments \
                 WHERE environment = $1 AND status = 'verified' \
                 AND ($2 IS NULL OR version <> $2) ORDER BY id DESC LIMIT 1",
            )
            .bind(env)
            .bind(not)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Verified versions of `env`, newest first, each once.
    pub async fn verified_versions(&self, env: &str, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String, i64)> = on_db!(self, p => {
            sqlx::query_as(
                "SELECT version, MAX(id) AS last FROM deployments WHERE environment = $1 AND status = 'verified' \
                 GROUP BY version ORDER BY last DESC LIMIT $2",
            )
            .bind(env)
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Who approved a job so far.
    pub async fn approvals(&self, job_id: i64) -> Result<Vec<String>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("SELECT approver FROM approvals WHERE job_id = $1 AND decision = 'approve' ORDER BY at")
                .bind(job_id)
                .fetch_all(p)
                .await?
        }))
    }

    /// Jobs waiting for approval past their deadline.
    pub async fn overdue_approvals(&self) -> Result<Vec<crate::store::jobs::JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs WHERE state = 'awaiting_approval' AND approval_deadline < $1 ORDER BY id")
                .bind(crate::domain::time::now_ms())
                .fetch_all(p)
                .await?
        }))
    }

    pub async fn lock_of(&self, env: &str) -> Result<Option<LockRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM locks WHERE environment = $1")
                .bind(env)
                .fetch_optional(p)
                .await?
        }))
    }

    pub async fn locks(&self) -> Result<Vec<LockRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM locks ORDER BY environment").fetch_all(p).await?
        }))
    }
}

/// A job's running deployment ended with its process: mark it interrupted.
pub fn interrupt_deployment(job_id: i64, now: i64) -> Write {
    Write::sql(
        "UPDATE deployments SET status = 'interrupted', finished_at = $1 WHERE job_id = $2 AND status = 'running'",
        vec![Arg::Int(now), Arg::Int(job_id)],
    )
}

/// One approval of a job.
pub fn approve(job_id: i64, approver: &str, platform: &str, now: i64) -> Write {
    Write::sql(
        "INSERT INTO approvals (job_id, approver, platform, decision, at) VALUES ($1, $2, $3, 'approve', $4)",
        vec![
            Arg::Int(job_id),
            Arg::Text(approver.to_owned()),
            Arg::Text(platform.to_owned()),
            Arg::Int(now),
        ],
    )
}

/// Lock an environment; fails with a unique violation when it is locked already.
pub fn lock(
    env: &str,
    by: &str,
    platform: &str,
    channel: Option<&str>,
    reason: &str,
    now: i64,
) -> Write {
    Write::sql(
        "INSERT INTO locks (environment, locked_by, platform, channel, reason, locked_at) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::Text(env.to_owned()),
            Arg::Text(by.to_owned()),
            Arg::Text(platform.to_owned()),
            channel
                .map(|c| Arg::Text(c.to_owned()))
                .unwrap_or(Arg::Null),
            Arg::Text(reason.to_owned()),
            Arg::Int(now),
        ],
    )
}

pub fn unlock(env: &str) -> Write {
    Write::sql(
        "DELETE FROM locks WHERE environment = $1",
        vec![Arg::Text(env.to_owned())],
    )
}

/// Record a lock reminder (guarded: only when nobody reminded since `last`).
pub fn lock_reminded(env: &str, now: i64, last: i64) -> Write {
    Write::sql(
        "UPDATE locks SET reminded_at = $1 WHERE environment = $2 AND COALESCE(reminded_at, locked_at) = $3",
        vec![Arg::Int(now), Arg::Text(env.to_owned()), Arg::Int(last)],
    )
}
