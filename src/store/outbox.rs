//! The outbox table: notices waiting for delivery, their claims, retries and outcomes.

use std::time::Duration;

use sqlx::FromRow;

use crate::domain::notice::Notice;
use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Db, Result};

#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub job_id: Option<i64>,
    pub platform: String,
    pub channel: Option<String>,
    pub thread_key: String,
    pub body: String,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    pub sends: i64,
    pub claimed_by: Option<String>,
    pub claim_until: Option<i64>,
}

impl OutboxRow {
    pub fn notice(&self) -> Option<Notice> {
        Notice::from_json(&self.body).ok()
    }

    /// An earlier claim of this row ended without a recorded outcome (its process died
    /// mid-delivery): the platform may already have it, so check before posting again.
    pub fn maybe_delivered(&self) -> bool {
        self.sends > self.attempts + 1
    }
}

/// How long a claim on a notice lasts unless renewed. A sender renews its claims while it
/// holds them, so this is how long the notices of a sender that died stay held (no other
/// replica may post them meanwhile, or a message could be posted twice).
pub const CLAIM_MS: i64 = 20_000;

/// A channel as the sender paces it: `platform:channel` (no channel: the platform's
/// fallback, e.g. Slack's `response_url`).
pub fn channel_key(platform: &str, channel: Option<&str>) -> String {
    format!("{platform}:{}", channel.unwrap_or_default())
}

impl Db {
    /// Claim up to `limit` due rows that are first in their thread, on these platforms.
    pub async fn claim_notices(
        &self,
        platforms: &[&str],
        owner: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        self.claim_notices_except(platforms, owner, limit, &[])
            .await
    }

    /// [`Db::claim_notices`], leaving alone the channels in `paused` (as
    /// [`channel_key`]s): channels that must not get another message yet.
    pub async fn claim_notices_except(
        &self,
        platforms: &[&str],
        owner: &str,
        limit: i64,
        paused: &[String],
    ) -> Result<Vec<OutboxRow>> {
        if platforms.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let placeholders = |from: usize, n: usize| {
            (from..from + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // What may be claimed: `$now` is the time; platforms, then paused channels, are
        // bound from `$first`.
        let claimable = |now: &str, first: usize| {
            let skip = if paused.is_empty() {
                String::new()
            } else {
                format!(
                    " AND (o.platform || ':' || COALESCE(o.channel, '')) NOT IN ({})",
                    placeholders(first + platforms.len(), paused.len())
                )
            };
            format!(
                "o.delivered_at IS NULL AND o.next_attempt_at <= {now} \
                 AND (o.claim_until IS NULL OR o.claim_until < {now}) \
                 AND o.platform IN ({}){skip} \
                 AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.platform = o.platform \
                 AND e.thread_key = o.thread_key AND e.delivered_at IS NULL AND e.id < o.id)",
                placeholders(first, platforms.len())
            )
        };
        // While channels wait for their pace, look before claiming: what is pending is then
        // mostly theirs, the claim is a write, and a read takes no write lock, so it does not
        // queue behind (or hold up) the intake.
        if !paused.is_empty() {
            let look = format!(
                "SELECT o.id FROM outbox o WHERE {} LIMIT 1",
                claimable("$1", 2)
            );
            let any: Option<i64> = on_db!(self, p => {
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(look)).bind(now);
                for pl in platforms {
                    q = q.bind(*pl);
                }
                for k in paused {
                    q = q.bind(k);
                }
                q.fetch_optional(p).await?
            });
            if any.is_none() {
                return Ok(Vec::new());
            }
        }
        let lock = match self {
            Db::Postgres(_) => " FOR UPDATE OF o SKIP LOCKED",
            Db::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claim_until = $2, sends = sends + 1 WHERE id IN (\
             SELECT o.id FROM outbox o WHERE {} ORDER BY o.id LIMIT $4{lock}) RETURNING *",
            claimable("$3", 5)
        );
        let mut rows: Vec<OutboxRow> = on_db!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(now + CLAIM_MS)
                .bind(now)
                .bind(limit);
            for pl in platforms {
                q = q.bind(*pl);
            }
            for k in paused {
                q = q.bind(k);
            }
            q.fetch_all(p).await?
        });
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Extend this sender's claim on an undelivered notice. False when the claim is gone:
    /// it ran out and another sender took the notice, or it was delivered.
    pub async fn renew_claim(&self, id: i64, owner: &str) -> Result<bool> {
        let n = on_db!(self, p => {
            sqlx::query(
                "UPDATE outbox SET claim_until = $1 WHERE id = $2 AND claimed_by = $3 \
                 AND delivered_at IS NULL",
            )
            .bind(now_ms() + CLAIM_MS)
            .bind(id)
            .bind(owner)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn mark_delivered(&self, id: i64) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("UPDATE outbox SET delivered_at = $1, claimed_by = NULL, claim_until = NULL WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Hand claimed rows back unsent, to be claimed again at `at_ms`: not an attempt, and
    /// not a send (so the next claim does not look for an earlier post of them).
    pub async fn defer(&self, ids: &[i64], at_ms: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = (0..ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE outbox SET next_attempt_at = $1, sends = sends - 1, \
             claimed_by = NULL, claim_until = NULL WHERE id IN ({list})"
        );
        on_db!(self, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at_ms);
            for id in ids {
                q = q.bind(*id);
            }
            q.execute(p).await?;
        });
        Ok(())
    }

    /// Put a row back for a later attempt.
    pub async fn mark_retry(&self, id: i64, after: Duration, error: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                 claimed_by = NULL, claim_until = NULL WHERE id = $3",
            )
            .bind(now_ms() + after.as_millis() as i64)
            .bind(error)
            .bind(id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Give up on a row the platform keeps refusing; it stays in the table with its error.
    pub async fn mark_failed(&self, id: i64, error: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, delivered_at = $1, last_error = $2, \
                 claimed_by = NULL, claim_until = NULL WHERE id = $3",
            )
            .bind(now_ms())
            .bind(format!("gave up: {error}"))
            .bind(id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Notices of a job on one platform after row `after`, delivered or not.
    pub async fn job_notices(
        &self,
        job_id: i64,
        platform: &str,
        after: i64,
    ) -> Result<Vec<OutboxRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM outbox WHERE job_id = $1 AND platform = $2 AND id > $3 ORDER BY id")
                .bind(job_id)
                .bind(platform)
                .bind(after)
                .fetch_all(p)
                .await?
        }))
    }

    /// Undelivered rows by platform.
    pub async fn outbox_depth(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT platform, COUNT(*) FROM outbox WHERE delivered_at IS NULL GROUP BY platform ORDER BY platform")
                .fetch_all(p)
                .await?
        }))
    }

    /// The platform's id for the message of a thread in a channel (Slack `ts`, Discord id).
    pub async fn message_ref(
        &self,
        platform: &str,
        channel: &str,
        thread: &str,
    ) -> Result<Option<String>> {
        Ok(on_db!(self, p => {
            sqlx::query_scalar(
                "SELECT message_ref FROM platform_messages WHERE platform = $1 AND channel = $2 AND thread_key = $3",
            )
            .bind(platform)
            .bind(channel)
            .bind(thread)
            .fetch_optional(p)
            .await?
        }))
    }

    pub async fn set_message_ref(
        &self,
        platform: &str,
        channel: &str,
        thread: &str,
        r: &str,
    ) -> Result<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO platform_messages (platform, channel, thread_key, message_ref) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (platform, channel, thread_key) DO UPDATE SET message_ref = $4",
            )
            .bind(platform)
            .bind(channel)
            .bind(thread)
            .bind(r)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}
