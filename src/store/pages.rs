//! Read-only queries of the status pages: each one paged or bounded, each one an index
//! search (see `migrations/*/0007_page_indexes.sql`).

use crate::on_db;
use crate::store::incidents::IncidentRow;
use crate::store::jobs::JobRow;
use crate::store::{AuditRow, Db, DeploymentRow, LogRow, Result};

/// The newest probe result of an environment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProbeRow {
    pub target: String,
    pub at: i64,
    pub ok: bool,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// Probe results of one UTC day: (day number since the epoch, good, all).
pub type UptimeDay = (i64, i64, i64);

/// What the audit page filters on; `None` is "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub environment: Option<String>,
    pub actor: Option<String>,
    pub command: Option<String>,
}

/// A decision on a job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    pub approver: String,
    pub decision: String,
    pub at: i64,
}

impl Db {
    /// Jobs not finished on `env` (queued, awaiting approval, running), oldest first, at
    /// most `limit`; and how many there are.
    pub async fn open_jobs_page(&self, env: &str, limit: i64) -> Result<(Vec<JobRow>, i64)> {
        Ok(on_db!(self, p => {
            let rows = sqlx::query_as(
                "SELECT * FROM jobs WHERE environment = $1 AND state IN ('queued', 'awaiting_approval', 'running') \
                 ORDER BY id LIMIT $2",
            )
            .bind(env)
            .bind(limit)
            .fetch_all(p)
            .await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE environment = $1 AND state IN ('queued', 'awaiting_approval', 'running')",
            )
            .bind(env)
            .fetch_one(p)
            .await?;
            (rows, n)
        }))
    }

    /// Jobs newest first, before job `before` (exclusive) when given.
    pub async fn jobs_page(&self, before: Option<i64>, limit: i64) -> Result<Vec<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
                .bind(before)
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }

    /// Deployments of `env`, newest first, before deployment `before` when given.
    pub async fn deployments_page(
        &self,
        env: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeploymentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM deployments WHERE environment = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(env)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// The newest probe result of `env`.
    pub async fn latest_probe(&self, env: &str) -> Result<Option<ProbeRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT target, at, ok, CAST(status AS BIGINT) AS status, CAST(latency_ms AS BIGINT) AS latency_ms, error \
                 FROM probe_results WHERE environment = $1 ORDER BY at DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Probe results of `env` from `since` to before `until` (ms), by UTC day (an
    /// index-only scan of `probe_results_env_ok`).
    pub async fn uptime_days(&self, env: &str, since: i64, until: i64) -> Result<Vec<UptimeDay>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT CAST(at / 86400000 AS BIGINT) AS day, \
                 CAST(SUM(CASE WHEN ok THEN 1 ELSE 0 END) AS BIGINT) AS good, CAST(COUNT(*) AS BIGINT) AS total \
                 FROM probe_results WHERE environment = $1 AND at >= $2 AND at < $3 GROUP BY 1 ORDER BY 1",
            )
            .bind(env)
            .bind(since)
            .bind(until)
            .fetch_all(p)
            .await?
        }))
    }

    /// Incidents newest first (of `env` when given), before incident `before` when given.
    pub async fn incidents_page(
        &self,
        env: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<IncidentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM incidents WHERE ($1 IS NULL OR environment = $1) AND ($2 IS NULL OR id < $2) \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(env)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Audit events newest first matching `f` (a command matches its jobs' events and a
    /// built-in's own, whose action is its name), before event `before` when given.
    pub async fn audit_page(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT a.* FROM audit_events a WHERE ($1 IS NULL OR a.environment = $1) \
                 AND ($2 IS NULL OR a.actor = $2) \
                 AND ($3 IS NULL OR a.action = $3 OR a.job_id IN (SELECT j.id FROM jobs j WHERE j.command = $3)) \
                 AND ($4 IS NULL OR a.id < $4) ORDER BY a.id DESC LIMIT $5",
            )
            .bind(&f.environment)
            .bind(&f.actor)
            .bind(&f.command)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Up to `limit` log lines of a job after line id `after`; with `search`, only lines
    /// containing it (case-insensitively).
    pub async fn log_page(
        &self,
        job_id: i64,
        after: i64,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LogRow>> {
        let pattern = search.map(|s| format!("%{}%", like_escape(&s.to_lowercase())));
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM job_logs WHERE job_id = $1 AND id > $2 \
                 AND ($3 IS NULL OR LOWER(line) LIKE $3 ESCAPE '\\') ORDER BY id LIMIT $4",
            )
            .bind(job_id)
            .bind(after)
            .bind(pattern)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// How many log lines a job has.
    pub async fn log_count(&self, job_id: i64) -> Result<i64> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM job_logs WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(p)
                .await?
        }))
    }

    /// A job's steps in the order they started, with the id of each one's first line.
    pub async fn log_steps(&self, job_id: i64) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT step, MIN(id) AS first FROM job_logs WHERE job_id = $1 GROUP BY step ORDER BY 2",
            )
            .bind(job_id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Every approval and rejection of a job.
    pub async fn job_decisions(&self, job_id: i64) -> Result<Vec<ApprovalRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT approver, decision, at FROM approvals WHERE job_id = $1 ORDER BY at")
                .bind(job_id)
                .fetch_all(p)
                .await?
        }))
    }

    /// The bodies (notice JSON) of a job's newest notices, newest first.
    pub async fn newest_job_notices(&self, job_id: i64, limit: i64) -> Result<Vec<String>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("SELECT body FROM outbox WHERE job_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(job_id)
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }

    /// The backup of `env`'s newest successful migration (its `deckhand-report: backup=`),
    /// with the job and when it finished.
    pub async fn last_backup(&self, env: &str) -> Result<Option<(i64, Option<i64>, String)>> {
        Ok(on_db!(self, p => {
            let job: Option<(i64, Option<i64>)> = sqlx::query_as(
                "SELECT id, finished_at FROM jobs WHERE environment = $1 AND kind = 'migrate' \
                 AND state = 'succeeded' ORDER BY id DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(p)
            .await?;
            match job {
                None => None,
                Some((id, at)) => {
                    let line: Option<String> = sqlx::query_scalar(
                        "SELECT line FROM job_logs WHERE job_id = $1 AND line LIKE 'deckhand-report: backup=%' \
                         ORDER BY id DESC LIMIT 1",
                    )
                    .bind(id)
                    .fetch_optional(p)
                    .await?;
                    line.map(|l| (id, at, l.trim_start_matches("deckhand-report: backup=").to_owned()))
                }
            }
        }))
    }
}

/// `%`, `_` and `\` taken literally in a `LIKE … ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
