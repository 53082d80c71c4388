//! The durable job queue.
//!
//! A job is one row in `jobs`, written before the request is acknowledged, together with
//! its first notice and audit event. Workers claim jobs with a lease that a heartbeat
//! extends; a job whose lease runs out (its process died) is reported `interrupted`, and
//! re-queued only when its command says re-running is safe. One mutating job per
//! environment runs at a time: the claim skips environments that have a running job or a
//! job held for an orphaned step (`store::holds`), and a partial unique index makes that
//! hold even between replicas.

use sqlx::FromRow;

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::group::{Done, Item};
use crate::store::{Arg, AuditEvent, Db, NewNotice, Result, StoreError, Write};

/// Job states as stored; [`JobState`](crate::domain::state::JobState) is the one list.
pub mod state {
    use crate::domain::state::JobState;

    pub const QUEUED: &str = JobState::Queued.as_str();
    pub const AWAITING_APPROVAL: &str = JobState::AwaitingApproval.as_str();
    pub const RUNNING: &str = JobState::Running.as_str();
    pub const SUCCEEDED: &str = JobState::Succeeded.as_str();
    pub const FAILED: &str = JobState::Failed.as_str();
    pub const CANCELLED: &str = JobState::Cancelled.as_str();
    pub const INTERRUPTED: &str = JobState::Interrupted.as_str();
    pub const REJECTED: &str = JobState::Rejected.as_str();
    pub const EXPIRED: &str = JobState::Expired.as_str();

    pub fn is_final(s: &str) -> bool {
        JobState::is_final_name(s)
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: i64,
    pub command: String,
    pub kind: String,
    pub environment: Option<String>,
    pub version: Option<String>,
    /// Validated arguments by name, as a JSON object.
    pub args: String,
    pub state: String,
    pub requested_by: String,
    pub platform: String,
    pub channel: Option<String>,
    /// Where to answer the requester (a Slack `response_url`, a Discord token), if any.
    pub reply_to: Option<String>,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub idempotent: bool,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub run_at: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub result: Option<String>,
    pub approvals_needed: i64,
    pub approval_deadline: Option<i64>,
    pub emergency: Option<String>,
    pub cancel_requested: bool,
    /// Until when (ms) its watch window runs, once the watch has started.
    pub watch_until: Option<i64>,
    /// The running step's process group, and the hold it may leave on the environment.
    #[sqlx(flatten)]
    pub step: crate::store::holds::StepGroup,
}

impl JobRow {
    pub fn args_map(&self) -> std::collections::BTreeMap<String, String> {
        serde_json::from_str(&self.args).unwrap_or_default()
    }
}

/// A job to enqueue. `state` is `queued` or `awaiting_approval`.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub command: String,
    pub kind: String,
    pub environment: Option<String>,
    pub version: Option<String>,
    pub args: String,
    pub state: String,
    pub requested_by: String,
    pub platform: String,
    pub channel: Option<String>,
    pub reply_to: Option<String>,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub idempotent: bool,
    pub approvals_needed: i64,
    pub approval_deadline: Option<i64>,
    pub emergency: Option<String>,
}

/// What enqueueing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when the idempotency key was seen before: `id` is the earlier job.
    pub created: bool,
    /// The job on the same environment this one waits for, if any.
    pub behind: Option<i64>,
    pub state: String,
}

/// The writes recorded with a new job (its first notices and audit events), given its id
/// and the job it is queued behind. `Fn`, not `FnOnce`: a batch that fails is retried one
/// job at a time, with new ids.
pub type Extra = dyn Fn(i64, Option<i64>) -> Vec<Write> + Send + Sync;

/// Channel PostgreSQL workers LISTEN on.
pub const PG_CHANNEL: &str = "deckhand_jobs";

impl Db {
    /// Insert a job and, in the same transaction, the writes `extra` makes for it (its
    /// first notices and audit event), given the new id and the job it is queued behind.
    pub async fn enqueue(&self, job: &NewJob, extra: &Extra) -> Result<Enqueued> {
        let mut r = self.enqueue_batch(&[(job, extra)]).await?;
        Ok(r.remove(0))
    }

    /// [`Db::enqueue`] for several jobs in one transaction: one commit (one fsync) for all
    /// of them, as [`GroupCommit`](crate::store::group::GroupCommit) needs. A job whose
    /// idempotency key was seen before (also earlier in the same batch) is not inserted and
    /// gets the earlier job's id; it fails nothing else.
    pub async fn enqueue_batch(&self, jobs: &[(&NewJob, &Extra)]) -> Result<Vec<Enqueued>> {
        let items: Vec<Item> = jobs.iter().map(|(j, e)| Item::Job(j, *e)).collect();
        Ok(self
            .commit_batch(&items)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                Done::Job(e) => Some(e),
                Done::Applied(_) => None,
            })
            .collect())
    }

    /// Claim the oldest runnable job: queued, due, not held, and on an environment with
    /// nothing running and nothing held for an orphaned step. `None` when there is nothing
    /// to do (or another worker won the race).
    pub async fn claim(&self, owner: &str, lease_ms: i64) -> Result<Option<JobRow>> {
        Ok(self.claim_batch(owner, lease_ms, 1).await?.pop())
    }

    /// Claim up to `k` runnable jobs in one statement, oldest first, at most one per
    /// environment: a job is taken only when it is the oldest runnable job of its
    /// concurrency key. PostgreSQL skips rows other workers have locked; on SQLite the
    /// statement is one write transaction. Empty when there is nothing to do, or when
    /// another replica took a job of the same environment at the same moment (the unique
    /// index refused the batch; the next round claims again).
    pub async fn claim_batch(&self, owner: &str, lease_ms: i64, k: usize) -> Result<Vec<JobRow>> {
        let now = now_ms();
        // A hold is set in the same transaction that moves a job out of `running`, so every
        // snapshot this reads sees one or the other.
        let runnable = |t: &str| {
            format!("{t}.state = 'queued' AND {t}.run_at <= $3 AND {t}.held_since IS NULL")
        };
        let pick = format!(
            "SELECT j.id FROM jobs j WHERE {j} \
             AND (j.concurrency_key IS NULL OR (NOT EXISTS (SELECT 1 FROM jobs r \
             WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running') \
             AND NOT EXISTS (SELECT 1 FROM jobs h \
             WHERE h.concurrency_key = j.concurrency_key AND h.held_since IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.concurrency_key = j.concurrency_key \
             AND e.id < j.id AND {e}))) \
             ORDER BY j.id LIMIT $4",
            j = runnable("j"),
            e = runnable("e"),
        );
        let lock = match self {
            Db::Postgres(_) => " FOR UPDATE OF j SKIP LOCKED",
            Db::Sqlite(_) => "",
        };
        // started_at from the database's clock once the row is locked (see `Db::now_sql`):
        // never before the end of the environment's previous job.
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
             started_at = COALESCE(started_at, {now}), attempts = attempts + 1 \
             WHERE id IN ({pick}{lock}) RETURNING *",
            now = self.now_sql()
        );
        macro_rules! q {
            ($sql:expr) => {
                sqlx::query_as(sqlx::AssertSqlSafe($sql))
                    .bind(owner)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(k as i64)
            };
        }
        let r: std::result::Result<Vec<JobRow>, sqlx::Error> = match self {
            Db::Sqlite(p) => q!(sql).fetch_all(p).await,
            // A burst of jobs outruns the table's statistics until autovacuum's next
            // ANALYZE: planned as if a few jobs were queued, the pick read every queued job
            // through a bitmap scan and sorted them all for the first k (8.4 ms a claim with
            // 20,000 queued, against 0.85 ms walking `(state, id)` in order, which is also
            // the plan once the statistics are fresh). Without bitmap scans the plan walks
            // an index in id order whatever the statistics say. The setting goes with the
            // BEGIN (one simple query, one round trip) and ends with the transaction.
            Db::Postgres(p) => {
                let mut tx = p
                    .begin_with("BEGIN; SET LOCAL enable_bitmapscan = off")
                    .await?;
                match q!(sql).fetch_all(&mut *tx).await {
                    Ok(jobs) => tx.commit().await.map(|()| jobs),
                    e => e,
                }
            }
        };
        match r {
            Ok(mut jobs) => {
                jobs.sort_by_key(|j| j.id);
                Ok(jobs)
            }
            // Two replicas picked jobs of one environment at once: the index kept one out.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Extend a lease. Returns `Some(cancel_requested)`, or `None` when the lease is lost.
    pub async fn heartbeat(&self, id: i64, owner: &str, lease_ms: i64) -> Result<Option<bool>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(now_ms() + lease_ms)
            .bind(id)
            .bind(owner)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Running jobs whose lease ran out: their process died.
    pub async fn expired_leases(&self) -> Result<Vec<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs WHERE state = 'running' AND lease_until < $1 ORDER BY id")
                .bind(now_ms())
                .fetch_all(p)
                .await?
        }))
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(p).await?
        }))
    }

    pub async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs ORDER BY id DESC LIMIT $1").bind(limit).fetch_all(p).await?
        }))
    }

    /// The newest deploy or rollback of `env`, whatever its state.
    pub async fn last_deploy_job(&self, env: &str) -> Result<Option<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM jobs WHERE environment = $1 AND kind IN ('deploy', 'rollback') \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Queued, waiting and running jobs, oldest first.
    pub async fn open_jobs(&self, env: Option<&str>) -> Result<Vec<JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM jobs WHERE state IN ('queued', 'awaiting_approval', 'running') \
                 AND ($1 IS NULL OR environment = $1) ORDER BY id",
            )
            .bind(env)
            .fetch_all(p)
            .await?
        }))
    }

    /// Count of jobs by state (for `/status` and metrics).
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(p)
                .await?
        }))
    }
}

/// A state change of a job that the given owner holds.
pub fn transition(
    id: i64,
    from: &'static [&'static str],
    to: &str,
    result: Option<String>,
    owner: Option<&str>,
) -> Write {
    transitions(vec![id], from, to, result, owner)
}

/// [`transition`] of several jobs the given owner holds, in one statement.
pub fn transitions(
    ids: Vec<i64>,
    from: &'static [&'static str],
    to: &str,
    result: Option<String>,
    owner: Option<&str>,
) -> Write {
    Write::JobState {
        ids,
        from,
        to: to.to_owned(),
        result,
        owner: owner.map(str::to_owned),
    }
}

/// Notices of one job go to its thread on each platform.
pub fn job_thread(id: i64) -> String {
    format!("job:{id}")
}

/// An outbox row for a notice about a job.
pub fn job_notice(
    job_id: i64,
    platform: &str,
    channel: Option<&str>,
    n: &crate::domain::notice::Notice,
) -> Write {
    Write::Notice(NewNotice::new(
        Some(job_id),
        platform,
        channel.map(str::to_owned),
        job_thread(job_id),
        n,
    ))
}

/// Is this error a guarded update that lost its race?
pub fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(_))
}

pub fn audit(job: &JobRow, action: &str, detail: impl Into<String>) -> Write {
    Write::Audit(AuditEvent {
        actor: job.requested_by.clone(),
        platform: job.platform.clone(),
        action: action.to_owned(),
        environment: job.environment.clone(),
        job_id: Some(job.id),
        detail: detail.into(),
    })
}

/// Job `id` starts its watch window, which runs until `until` (ms).
pub fn watch_started(id: i64, until: i64) -> Write {
    Write::sql(
        "UPDATE jobs SET watch_until = $1 WHERE id = $2 AND state = 'running'",
        vec![Arg::Int(until), Arg::Int(id)],
    )
}

/// Ask a running job's worker to stop its step (it sees this on its next heartbeat).
pub fn request_cancel(id: i64) -> Write {
    Write::sql(
        "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'",
        vec![Arg::Int(id)],
    )
}

/// Free a job's lease, so it can be claimed again (once any hold on it is released).
pub fn release_lease(id: i64) -> Write {
    Write::sql(
        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = $1",
        vec![Arg::Int(id)],
    )
}

impl Db {
    /// On PostgreSQL, call `wake` whenever any replica enqueues (`LISTEN`/`NOTIFY`), until
    /// `stop`; `None` on SQLite, where only this process writes.
    pub fn listen_for_jobs(
        &self,
        wake: impl Fn() + Send + 'static,
        stop: crate::support::runner::CancelToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let Db::Postgres(pool) = self else {
            return None;
        };
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            while !stop.is_cancelled() {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut l) => {
                        if l.listen(PG_CHANNEL).await.is_ok() {
                            // recv() reconnects by itself after a dropped connection.
                            while let Ok(_n) = l.recv().await {
                                wake();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot LISTEN for new jobs; polling"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }))
    }
}
