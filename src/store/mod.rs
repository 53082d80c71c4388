//! Storage: one [`Db`] over a SQLite or a PostgreSQL pool, chosen from the URL scheme.
//!
//! Queries are written once with `$1` placeholders (SQLite accepts them) and run on either
//! pool through [`on_db!`](crate::on_db); only the claim query differs. Every write that reports a state
//! change goes through [`Db::apply`], which runs a list of [`Write`]s in one transaction, so
//! a notice is on disk exactly when the state it reports is.

mod connect;
pub mod dbruns;
pub(crate) mod demo;
pub mod envdb;
pub mod github;
pub mod github_auto;
pub mod group;
pub(crate) mod history;
pub mod holds;
pub(crate) mod incidents;
pub mod jobs;
pub mod leases;
pub(crate) mod many;
pub(crate) mod outbox;
pub mod pages;
pub(crate) mod probes;
pub(crate) mod reports;

pub use connect::{redact_url, short_err};

use std::time::Duration;

use crate::domain::time::now_ms;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// A guarded update found the row in another state (someone else moved it first).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached for a batch this request was part of.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The database is unreachable or restarting (the connection, the pool, or PostgreSQL's
    /// SQLSTATE classes 08 and 57), rather than refusing this statement.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Sql(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
                _ => false,
            },
            _ => false,
        }
    }

    /// A unique index refused the row: someone else wrote it first.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sql(sqlx::Error::Database(d)) if d.is_unique_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same body on whichever pool `db` holds; `$p` is `&SqlitePool` or `&PgPool`.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($p) => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}

/// How long a readiness check waits for the database.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Execute one [`Write`] on an open transaction `$tx` of `$db`; evaluates to `Result<i64>`.
macro_rules! exec_write {
    ($db:expr, $tx:ident, $w:expr) => {{
let id: i64 = match $w {
            $crate::store::Write::Notice(n) => sqlx::query_scalar(sqlx::AssertSqlSafe($crate::store::outbox::insert_notice_sql($db)))
            .bind(n.job_id)
            .bind(&n.platform)
            .bind(&n.channel)
            .bind(&n.thread_key)
            .bind(&n.body)
            .bind($crate::domain::time::now_ms())
            .bind(n.whole)
            .bind(n.urgent)
            .fetch_one(&mut *$tx)
            .await?,
            $crate::store::Write::Audit(a) => sqlx::query_scalar(
                "INSERT INTO audit_events (at, actor, platform, action, environment, job_id, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind($crate::domain::time::now_ms())
            .bind(&a.actor)
            .bind(&a.platform)
            .bind(&a.action)
            .bind(&a.environment)
            .bind(a.job_id)
            .bind(&a.detail)
            .fetch_one(&mut *$tx)
            .await?,
            $crate::store::Write::JobState { ids, from, to, result, owner } => {
                let placeholders = from.iter().enumerate().map(|(i, _)| format!("${}", i + 5)).collect::<Vec<_>>().join(", ");
                // One job by its key; several in one statement, their ids as a JSON array.
                let which = match (ids.len(), $db) {
                    (1, _) => "id = $4",
                    (_, $crate::store::Db::Sqlite(_)) => "id IN (SELECT value FROM json_each($4))",
                    // `= ANY(ARRAY(…))`: an index look-up per id; `IN (SELECT …)` made a seq scan.
                    (_, $crate::store::Db::Postgres(_)) => "id = ANY(ARRAY(SELECT jsonb_array_elements_text($4::jsonb)::bigint))",
                };
                let terminal = $crate::domain::state::JobState::is_final_name(to);
                // The database's clock, read once the row is locked: the next job of the
                // environment can only be claimed after this commits, so its start is never
                // recorded before this end.
                let sql = format!(
                    "UPDATE jobs SET state = $1, result = COALESCE($2, result), \
                     finished_at = CASE WHEN $3 THEN {now} ELSE finished_at END, \
                     lease_owner = CASE WHEN $3 THEN NULL ELSE lease_owner END, \
                     lease_until = CASE WHEN $3 THEN NULL ELSE lease_until END \
                     WHERE {which} AND state IN ({placeholders}){}",
                    if owner.is_some() { format!(" AND lease_owner = ${}", from.len() + 5) } else { String::new() },
                    now = $db.now_sql(),
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(to)
                    .bind(result)
                    .bind(terminal);
                q = match ids.as_slice() {
                    [one] => q.bind(*one),
                    many => q.bind(serde_json::to_string(many).expect("ids")),
                };
                for f in from.iter() {
                    q = q.bind(*f);
                }
                if let Some(o) = owner {
                    q = q.bind(o);
                }
                let n = q.execute(&mut *$tx).await?.rows_affected();
                if n != ids.len() as u64 {
                    let which: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                    return Err($crate::store::StoreError::Conflict(format!(
                        "job {} is no longer {}",
                        if ids.len() == 1 { which[0].clone() } else { format!("of {} among {}", which.join(", "), ids.len()) },
                        from.join(" or ")
                    )));
                }
                0
            }
            $crate::store::Write::DeploymentStart { job_id, environment, version, kind, requested_by } => sqlx::query_scalar(
                "INSERT INTO deployments (job_id, environment, version, kind, requested_by, status, started_at) \
                 VALUES ($1, $2, $3, $4, $5, 'running', $6) RETURNING id",
            )
            .bind(job_id)
            .bind(environment)
            .bind(version)
            .bind(kind)
            .bind(requested_by)
            .bind($crate::domain::time::now_ms())
            .fetch_one(&mut *$tx)
            .await?,
            $crate::store::Write::DeploymentFinish { id, status, verified, health, migration } => {
                let now = $crate::domain::time::now_ms();
                sqlx::query(
                    "UPDATE deployments SET status = $1, verified = $2, health = $3, migration = $4, \
                     finished_at = $5, duration_ms = $5 - started_at WHERE id = $6",
                )
                .bind(status)
                .bind(verified)
                .bind(health)
                .bind(migration)
                .bind(now)
                .bind(id)
                .execute(&mut *$tx)
                .await?;
                0
            }
            $crate::store::Write::Sql(st) => {
                let mut q = sqlx::query(st.sql);
                for a in &st.args {
                    q = match a {
                        $crate::store::Arg::Int(i) => q.bind(*i),
                        $crate::store::Arg::Text(s) => q.bind(s.clone()),
                        $crate::store::Arg::Null => q.bind(None::<String>),
                    };
                }
                q.execute(&mut *$tx).await?.rows_affected() as i64
            }
        };
        Ok::<i64, $crate::store::StoreError>(id)
    }};
}
pub(crate) use exec_write;

impl Db {
    /// Run writes in one transaction. Returns the id of each inserted row, in order
    /// (rows affected for updates).
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<i64>> {
        on_db!(self, p => {
            let mut tx = p.begin().await?;
            let mut ids = Vec::with_capacity(writes.len());
            for w in writes {
                ids.push(exec_write!(self, tx, w)?);
            }
            tx.commit().await?;
            Ok(ids)
        })
    }
}

impl Db {
    /// SQL for "now" in milliseconds since the epoch, read from the database server's clock
    /// when the statement runs (after it has its locks), unlike [`now_ms`] which is read
    /// before the statement is sent.
    pub fn now_sql(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Db::Postgres(_) => "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        }
    }

    /// Like [`Db::apply`], but the first write is a guarded update: when it matches no row
    /// (another replica got there first) nothing is written. Returns whether it applied.
    pub async fn apply_if_first(&self, writes: &[Write]) -> Result<bool> {
        on_db!(self, p => {
            let mut tx = p.begin().await?;
            let mut first = true;
            for w in writes {
                let n = exec_write!(self, tx, w)?;
                if first && n == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                first = false;
            }
            tx.commit().await?;
            Ok(true)
        })
    }
}

impl Db {
    /// Claim something that must happen once across replicas (a probe round, a digest
    /// firing): true for the one caller whose row went in.
    pub async fn claim_once(&self, kind: &str, key: &str, owner: &str) -> Result<bool> {
        let n = on_db!(self, p => {
            sqlx::query("INSERT INTO claims (kind, key, at, owner) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO NOTHING")
                .bind(kind)
                .bind(key)
                .bind(now_ms())
                .bind(owner)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}

/// One write in a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    Notice(NewNotice),
    Audit(AuditEvent),
    /// Move jobs from one of `from` to `to`, in one statement; the transaction fails with
    /// [`StoreError::Conflict`] when any of them is in none of `from` (or another worker
    /// owns it).
    JobState {
        ids: Vec<i64>,
        from: &'static [&'static str],
        to: String,
        result: Option<String>,
        owner: Option<String>,
    },
    DeploymentStart {
        job_id: i64,
        environment: String,
        version: String,
        kind: String,
        requested_by: String,
    },
    DeploymentFinish {
        id: i64,
        status: String,
        verified: bool,
        health: Option<String>,
        migration: Option<String>,
    },
    /// A statement with fixed SQL text and bound arguments, made only by the named
    /// constructors of this module's children (`store::incidents::resolve`, …).
    Sql(Statement),
}

/// Fixed SQL text (never user text) and its bound arguments; see [`Write::Sql`].
#[derive(Debug, Clone)]
pub struct Statement {
    sql: &'static str,
    args: Vec<Arg>,
}

impl Write {
    /// Only the store writes SQL.
    pub(in crate::store) fn sql(sql: &'static str, args: Vec<Arg>) -> Write {
        Write::Sql(Statement { sql, args })
    }
}

#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
    Null,
}

/// A row for the outbox: one rendered-later notice for one platform and channel.
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub job_id: Option<i64>,
    pub platform: String,
    pub channel: Option<String>,
    /// Notices with the same key update one message (`job:42`, `incident:…`).
    pub thread_key: String,
    pub body: String,
    /// The whole state of the thread's message (not a reply, no file): a newer whole
    /// notice of the same thread and channel makes this one unnecessary.
    pub whole: bool,
    /// A new message that must go before everything else due (a P0/P1 incident).
    pub urgent: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub actor: String,
    pub platform: String,
    pub action: String,
    pub environment: Option<String>,
    pub job_id: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub platform: String,
    pub action: String,
    pub environment: Option<String>,
    pub job_id: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentRow {
    pub id: i64,
    pub job_id: i64,
    pub environment: String,
    pub version: String,
    pub kind: String,
    pub requested_by: String,
    pub status: String,
    pub verified: bool,
    pub health: Option<String>,
    pub migration: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub id: i64,
    pub job_id: i64,
    pub step: String,
    pub stream: String,
    pub line: String,
    pub at: i64,
}

impl Db {
    pub async fn audit(&self, env: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM (SELECT * FROM audit_events WHERE ($1 IS NULL OR environment = $1) ORDER BY id DESC LIMIT $2) a ORDER BY id",
            )
            .bind(env)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    pub async fn deployments(&self, env: &str, limit: i64) -> Result<Vec<DeploymentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM deployments WHERE environment = $1 ORDER BY id DESC LIMIT $2")
                .bind(env)
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }

    pub async fn job_log(&self, job_id: i64, after: i64) -> Result<Vec<LogRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM job_logs WHERE job_id = $1 AND id > $2 ORDER BY id")
                .bind(job_id)
                .bind(after)
                .fetch_all(p)
                .await?
        }))
    }

    /// Append log lines in one statement per batch.
    pub async fn append_log(
        &self,
        job_id: i64,
        lines: &[(String, &'static str, String)],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        on_db!(self, p => {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO job_logs (job_id, step, stream, line, at) ");
            qb.push_values(lines, |mut b, (step, stream, line)| {
                b.push_bind(job_id).push_bind(step.clone()).push_bind(*stream).push_bind(line.clone()).push_bind(now);
            });
            qb.build().execute(p).await?;
        });
        Ok(())
    }

    /// Register or refresh this process as a live worker.
    pub async fn worker_heartbeat(&self, id: &str, role: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO workers (id, role, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = $3",
            )
            .bind(id)
            .bind(role)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub async fn worker_gone(&self, id: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM workers WHERE id = $1").bind(id).execute(p).await?;
        });
        Ok(())
    }

    /// Is a `serve` process alive (heartbeat newer than `within_ms`)?
    pub async fn live_server(&self, within_ms: i64) -> Result<bool> {
        let n: i64 = on_db!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM workers WHERE role = 'serve' AND heartbeat_at > $1")
                .bind(now_ms() - within_ms)
                .fetch_one(p)
                .await?
        });
        Ok(n > 0)
    }
}
