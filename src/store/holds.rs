//! A step's process group on record, and the hold it leaves on its environment when its job
//! stops running while the group may still be alive (see `jobs::orphans`).
//!
//! The step is recorded before it is spawned (host and deadline) and again once its group
//! exists (group id and leader identity), so a crash at any point leaves enough to decide
//! when the environment is free. A held job (`held_since` set) keeps every other job of its
//! environment, and itself when re-queued, from being claimed.

use sqlx::FromRow;

use crate::on_db;
use crate::store::{Arg, Db, Result, Write};

/// The running step's process group, and the hold on the environment it may leave.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct StepGroup {
    /// Process group id of the running step.
    #[sqlx(rename = "step_pgid")]
    pub pgid: Option<i64>,
    /// The host the group runs on (only a process there can see or signal it).
    #[sqlx(rename = "step_host")]
    pub host: Option<String>,
    /// The leader's identity (`support::pgroup::leader_identity`), against pid reuse.
    #[sqlx(rename = "step_leader")]
    pub leader: Option<String>,
    /// When the step's timeout and kill grace are over (ms): the latest it could run, had
    /// the process running it lived.
    #[sqlx(rename = "step_deadline")]
    pub deadline: Option<i64>,
    /// Set when the job stopped running while this step's group might still be alive: the
    /// environment is held until the group is gone, the deadline passed, or an admin
    /// released it.
    pub held_since: Option<i64>,
}

impl StepGroup {
    /// Was a step running (or about to run) when the job stopped?
    pub fn recorded(&self) -> bool {
        self.pgid.is_some() || self.deadline.is_some()
    }
}

impl Db {
    /// A step is about to be spawned on `host`; it ends by `deadline` (ms) at the latest.
    pub async fn step_starting(&self, id: i64, host: &str, deadline: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE jobs SET step_host = $1, step_deadline = $2, step_pgid = NULL, step_leader = NULL \
                 WHERE id = $3",
            )
            .bind(host)
            .bind(deadline)
            .bind(id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The step's group exists: its id and its leader's identity.
    pub async fn step_group(&self, id: i64, pgid: i64, leader: Option<&str>) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("UPDATE jobs SET step_pgid = $1, step_leader = $2 WHERE id = $3")
                .bind(pgid)
                .bind(leader)
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The step ended and its runner stopped what was left of its group. A job that is
    /// already held keeps its record: the hold decides from it.
    pub async fn step_ended(&self, id: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE jobs SET step_pgid = NULL, step_host = NULL, step_leader = NULL, step_deadline = NULL \
                 WHERE id = $1 AND held_since IS NULL",
            )
            .bind(id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Jobs holding their environment for a step that may still be alive, oldest first.
    pub async fn held_jobs(&self) -> Result<Vec<crate::store::jobs::JobRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM jobs WHERE held_since IS NOT NULL ORDER BY id")
                .fetch_all(p)
                .await?
        }))
    }
}

/// Hold the job's environment from `now` (in the transaction that reports the job stopped).
/// `host` and `deadline` fill in a record made before they were kept (an upgrade).
pub fn hold(id: i64, now: i64, host: Option<&str>, deadline: i64) -> Write {
    Write::sql(
        "UPDATE jobs SET held_since = $1, step_host = COALESCE(step_host, $2), \
         step_deadline = COALESCE(step_deadline, $3) WHERE id = $4",
        vec![
            Arg::Int(now),
            host.map_or(Arg::Null, |h| Arg::Text(h.to_owned())),
            Arg::Int(deadline),
            Arg::Int(id),
        ],
    )
}

/// Release a held job's environment; matches nothing when it was already released, so with
/// [`Db::apply_if_first`] one replica (or admin) does it.
pub fn release(id: i64) -> Write {
    Write::sql(
        "UPDATE jobs SET held_since = NULL WHERE id = $1 AND held_since IS NOT NULL",
        vec![Arg::Int(id)],
    )
}
