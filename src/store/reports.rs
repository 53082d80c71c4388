//! Once-only claims, schedules and attachments: what digests and budget checks keep.

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Arg, Db, Result, Write};

/// A once-only claim as a write, so it commits or rolls back with the notices it guards
/// (`Db::claim_once` in a transaction): put it first in [`Db::apply_if_first`].
pub fn claim_write(kind: &str, key: &str, owner: &str) -> Write {
    Write::sql(
        "INSERT INTO claims (kind, key, at, owner) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO NOTHING",
        vec![
            Arg::Text(kind.into()),
            Arg::Text(key.into()),
            Arg::Int(now_ms()),
            Arg::Text(owner.into()),
        ],
    )
}

/// A file stored for a notice.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Db {
    /// Has someone already claimed this? A cheap look before expensive work; the claim
    /// itself is still made atomically with the work's result.
    pub async fn claimed(&self, kind: &str, key: &str) -> Result<bool> {
        let n: i64 = on_db!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM claims WHERE kind = $1 AND key = $2")
                .bind(kind).bind(key).fetch_one(p).await?
        });
        Ok(n > 0)
    }

    pub async fn store_attachment(
        &self,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<i64> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("INSERT INTO attachments (created_at, name, content_type, data) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(now_ms()).bind(name).bind(content_type).bind(data).fetch_one(p).await?
        }))
    }

    pub async fn attachment(&self, id: i64) -> Result<Option<Attachment>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT name, content_type, data FROM attachments WHERE id = $1")
                .bind(id).fetch_optional(p).await?
        }))
    }

    /// Remove attachments created before `before` (ms).
    pub async fn prune_attachments(&self, before: i64) -> Result<u64> {
        Ok(on_db!(self, p => {
            sqlx::query("DELETE FROM attachments WHERE created_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    pub async fn delete_attachment(&self, id: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM attachments WHERE id = $1").bind(id).execute(p).await?;
        });
        Ok(())
    }
}

impl Db {
    pub async fn schedule_last(&self, name: &str) -> Result<Option<i64>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar("SELECT last_fire_at FROM schedule_state WHERE name = $1")
                .bind(name).fetch_optional(p).await?
        }))
    }

    /// Start a schedule at `at` unless another replica already did.
    pub async fn schedule_init(&self, name: &str, at: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("INSERT INTO schedule_state (name, last_fire_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name).bind(at).execute(p).await?;
        });
        Ok(())
    }
}

/// Move a schedule's state forward to `at` (never back).
pub fn advance(name: &str, at: i64) -> Write {
    Write::sql(
        "UPDATE schedule_state SET last_fire_at = $1 WHERE name = $2 AND last_fire_at < $1",
        vec![Arg::Int(at), Arg::Text(name.into())],
    )
}

impl Db {
    /// Probe results of `env` weighted by time, per target: `(up_ms, monitored_ms)` of
    /// `[from, to)`. A result counts from its `at` until the target's next result, at most
    /// `cap_ms`, clipped to the period (a result shortly before `from` covers its start).
    pub async fn probe_time(
        &self,
        env: &str,
        from: i64,
        to: i64,
        cap_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        // Window functions and CASE (not LEAST/GREATEST or MIN/MAX of two) so the same
        // text runs on SQLite and PostgreSQL.
        let rows: Vec<(String, i64, i64)> = on_db!(self, p => {
            sqlx::query_as(
                "SELECT target, \
                   CAST(COALESCE(SUM(CASE WHEN ok THEN w ELSE 0 END), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(w), 0) AS BIGINT) \
                 FROM ( \
                   SELECT target, ok, \
                     (CASE WHEN stop > $3 THEN $3 ELSE stop END) - (CASE WHEN at < $2 THEN $2 ELSE at END) AS w \
                   FROM ( \
                     SELECT target, ok, at, \
                       CASE WHEN next_at IS NOT NULL AND next_at < at + $4 THEN next_at ELSE at + $4 END AS stop \
                     FROM ( \
                       SELECT target, ok, at, LEAD(at) OVER (PARTITION BY target ORDER BY at, id) AS next_at \
                       FROM probe_results WHERE environment = $1 AND at >= $5 AND at < $3 \
                     ) r \
                   ) s \
                 ) t WHERE w > 0 GROUP BY target ORDER BY target",
            )
            .bind(env).bind(from).bind(to).bind(cap_ms).bind(from.saturating_sub(cap_ms))
            .fetch_all(p).await?
        });
        Ok(rows.into_iter().map(|(_, up, all)| (up, all)).collect())
    }

    /// Incidents of `env` open at any time in `[from, to)`: (severity, first_seen, resolved_at).
    pub async fn incident_spans(
        &self,
        env: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, Option<i64>)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT severity, first_seen, resolved_at FROM incidents WHERE environment = $1 \
                 AND first_seen < $3 AND (resolved_at IS NULL OR resolved_at > $2) ORDER BY first_seen",
            )
            .bind(env).bind(from).bind(to).fetch_all(p).await?
        }))
    }

    /// Deployments of `env` started in `[from, to)`: (kind, status, duration_ms).
    pub async fn deployment_spans(
        &self,
        env: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, Option<i64>)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT kind, status, duration_ms FROM deployments WHERE environment = $1 \
                 AND started_at >= $2 AND started_at < $3 ORDER BY id",
            )
            .bind(env).bind(from).bind(to).fetch_all(p).await?
        }))
    }
}
