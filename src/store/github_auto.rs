//! Continuous delivery's state: webhook deliveries taken (replay protection), and per
//! environment with `auto_deploy` the branch's head as GitHub last answered it, who pushed
//! it, when it may be polled next, and the last judgement of a commit. Replicas share it:
//! a poll is claimed by moving `next_poll_at` (one replica wins), and a judgement is
//! recorded by the one update that changes it (so it is logged and audited once).

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Db, Result};

/// Judgements of a branch's head, as stored.
pub mod judgement {
    /// Required checks still running or not reported.
    pub const PENDING: &str = "pending";
    /// A required check failed: the commit is not asked about again until an event about
    /// it arrives.
    pub const FAILED: &str = "failed";
    /// Intake refused it (a lock, staging-first, …); asked again on the next poll or event.
    pub const REFUSED: &str = "refused";
    /// A job was enqueued for it (by this replica or another).
    pub const QUEUED: &str = "queued";
    /// The environment already runs it.
    pub const RUNNING: &str = "running";
}

/// One environment's branch, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AutoBranch {
    pub environment: String,
    pub repository: String,
    pub branch: String,
    /// The ETag of GitHub's last 200 answer for the branch, for `If-None-Match`.
    pub etag: Option<String>,
    pub head_sha: Option<String>,
    pub head_author: Option<String>,
    /// The head a push event named, and who pushed it.
    pub pushed_sha: Option<String>,
    pub pusher: Option<String>,
    /// Not polled before this (ms): the interval, or a rate limit's reset.
    pub next_poll_at: i64,
    pub judged_sha: Option<String>,
    pub judgement: Option<String>,
    pub detail: Option<String>,
    pub updated_at: i64,
}

impl Db {
    /// Take delivery `id` of `event`: `false` when it was taken before (a replay).
    pub async fn take_delivery(&self, id: &str, event: &str, now: i64) -> Result<bool> {
        let n = on_db!(self, p => sqlx::query(
            "INSERT INTO github_deliveries (delivery_id, event, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Forget delivery `id` (its handling failed), so GitHub's redelivery is taken.
    pub async fn forget_delivery(&self, id: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM github_deliveries WHERE delivery_id = $1")
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Drop deliveries received before `before` (ms); how many went.
    pub async fn prune_deliveries(&self, before: i64) -> Result<u64> {
        Ok(
            on_db!(self, p => sqlx::query("DELETE FROM github_deliveries WHERE received_at < $1")
            .bind(before)
            .execute(p)
            .await?
            .rows_affected()),
        )
    }

    /// Whether delivery `id` was taken.
    pub async fn delivery_taken(&self, id: &str) -> Result<bool> {
        let n: i64 = on_db!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM github_deliveries WHERE delivery_id = $1",
        )
        .bind(id)
        .fetch_one(p)
        .await?);
        Ok(n > 0)
    }

    /// `env`'s branch row, made (due for a poll at once) when missing; one made for another
    /// repository or branch (the config changed) starts again from nothing.
    pub async fn auto_branch(
        &self,
        env: &str,
        repository: &str,
        branch: &str,
    ) -> Result<AutoBranch> {
        // Read first: the poll looks every few seconds, and a write would take SQLite's
        // one writer each time.
        if let Some(row) = self.auto_branch_row(env).await?
            && row.repository == repository
            && row.branch == branch
        {
            return Ok(row);
        }
        let now = now_ms();
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO github_branches (environment, repository, branch, next_poll_at, updated_at) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (environment) DO UPDATE SET \
                 repository = excluded.repository, branch = excluded.branch, etag = NULL, \
                 head_sha = NULL, head_author = NULL, pushed_sha = NULL, pusher = NULL, \
                 next_poll_at = 0, judged_sha = NULL, judgement = NULL, detail = NULL, \
                 updated_at = excluded.updated_at \
                 WHERE github_branches.repository <> excluded.repository \
                 OR github_branches.branch <> excluded.branch",
            )
            .bind(env)
            .bind(repository)
            .bind(branch)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(self
            .auto_branch_row(env)
            .await?
            .expect("the row was just written"))
    }

    /// `env`'s branch row as stored.
    pub async fn auto_branch_row(&self, env: &str) -> Result<Option<AutoBranch>> {
        Ok(
            on_db!(self, p => sqlx::query_as("SELECT * FROM github_branches WHERE environment = $1")
            .bind(env)
            .fetch_optional(p)
            .await?),
        )
    }

    /// Claim `env`'s poll due at `now`: `true` for the one replica that moved
    /// `next_poll_at` on to `next`.
    pub async fn claim_poll(&self, env: &str, now: i64, next: i64) -> Result<bool> {
        let n = on_db!(self, p => sqlx::query(
            "UPDATE github_branches SET next_poll_at = $3 WHERE environment = $1 AND next_poll_at <= $2",
        )
        .bind(env)
        .bind(now)
        .bind(next)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Do not poll `env` before `at` (ms): a rate limit's reset.
    pub async fn poll_not_before(&self, env: &str, at: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE github_branches SET next_poll_at = CASE WHEN next_poll_at > $2 \
                 THEN next_poll_at ELSE $2 END WHERE environment = $1",
            )
            .bind(env)
            .bind(at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// GitHub answered `env`'s branch head `sha` (by `author`) with `etag`.
    pub async fn set_branch_head(
        &self,
        env: &str,
        etag: Option<&str>,
        sha: &str,
        author: Option<&str>,
    ) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE github_branches SET etag = $2, head_sha = $3, head_author = $4, updated_at = $5 \
                 WHERE environment = $1",
            )
            .bind(env)
            .bind(etag)
            .bind(sha)
            .bind(author)
            .bind(now_ms())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A push named `sha` as the head of `env`'s branch, pushed by `pusher`.
    pub async fn record_push(&self, env: &str, sha: &str, pusher: Option<&str>) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE github_branches SET pushed_sha = $2, pusher = $3, updated_at = $4 \
                 WHERE environment = $1",
            )
            .bind(env)
            .bind(sha)
            .bind(pusher)
            .bind(now_ms())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Record `judgement` (with `detail`) of `sha` on `env`'s branch: `true` when this call
    /// changed it (so the caller logs or audits it once, across replicas too).
    pub async fn judge(&self, env: &str, sha: &str, judgement: &str, detail: &str) -> Result<bool> {
        let n = on_db!(self, p => sqlx::query(
            "UPDATE github_branches SET judged_sha = $2, judgement = $3, detail = $4, updated_at = $5 \
             WHERE environment = $1 AND NOT (COALESCE(judged_sha, '') = $2 \
             AND COALESCE(judgement, '') = $3 AND COALESCE(detail, '') = $4)",
        )
        .bind(env)
        .bind(sha)
        .bind(judgement)
        .bind(detail)
        .bind(now_ms())
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// The job enqueued with idempotency key `key`, if any: (id, state).
    pub async fn job_by_key(&self, key: &str) -> Result<Option<(i64, String)>> {
        Ok(
            on_db!(self, p => sqlx::query_as("SELECT id, state FROM jobs WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(p)
            .await?),
        )
    }
}
