//! The outbox sender: delivers notices written next to the state they report.
//!
//! Rows are taken in order per thread (a job, an incident): a thread's next notice waits
//! until the one before it is delivered, so a retry never reorders a job's story. A row is
//! claimed for a short while before it is sent and marked delivered right after, so a
//! crash between the two can at worst resend the one row in flight; platforms that allow
//! it make even that harmless (an update of the job's one message is idempotent).

pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::FromRow;

use crate::app::App;
use crate::domain::notice::Notice;
use crate::on_db;
use crate::store::{Db, Result};
use crate::domain::time::now_ms;

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

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Try again, not before this long (a 429's `Retry-After`, or backoff after a 5xx).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The platform refused the message for good (bad channel, bad token).
    Fatal(String),
}

/// How long to wait before attempt `n` (1-based) after a failure: 1 s doubling to 30 s,
/// so a platform that comes back is used again within half a minute.
pub fn backoff(attempt: i64) -> Duration {
    let secs = 1u64 << attempt.clamp(1, 6).saturating_sub(1);
    Duration::from_secs(secs.min(30))
}

/// Attempts after which a fatal refusal is given up on (and logged as lost).
pub const MAX_FATAL_ATTEMPTS: i64 = 5;

/// How long a claim on a notice lasts unless renewed. A sender renews its claims while it
/// holds them, so this is how long the notices of a sender that died stay held (no other
/// replica may post them meanwhile, or a message could be posted twice).
pub const CLAIM_MS: i64 = 20_000;

/// How often a sender renews the claim on the notice it is delivering.
const RENEW_EVERY: Duration = Duration::from_secs(5);

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

/// A delivery in flight.
pub type Delivery<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), DeliveryError>> + Send + 'a>>;

/// Where notices of one platform go. Each platform implements this; the sender knows
/// nothing else about them.
pub trait Deliver: Send + Sync {
    /// The platform name on outbox rows this delivers.
    fn platform(&self) -> &'static str;
    /// Minimum time between two messages to one channel.
    fn pace(&self) -> Duration;
    /// Send one notice (post, update or reply).
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> Delivery<'a>;
}

/// Any platform's deliverer.
pub type Deliverer = Box<dyn Deliver>;

/// The terminal of `deckhand serve`: the notice is printed on stdout. With `print` false
/// (an in-process `deckhand run`, which prints what it follows) it is only marked.
pub struct Terminal {
    pub print: bool,
}

impl Terminal {
    pub fn boxed(print: bool) -> Deliverer {
        Box::new(Terminal { print })
    }
}

impl Deliver for Terminal {
    fn platform(&self) -> &'static str {
        "terminal"
    }
    fn pace(&self) -> Duration {
        Duration::ZERO
    }
    fn deliver<'a>(&'a self, _app: &'a App, row: &'a OutboxRow) -> Delivery<'a> {
        if self.print
            && let Some(n) = row.notice()
        {
            println!("{}", n.render_text());
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Deliver until `stop` fires. Wakes on `app.outbox_wake` or every 250 ms.
///
/// Pacing: a channel gets at most one message per [`Deliverer::pace`]. A channel that is
/// not due is left out of the claim, and a second message for one channel in a batch is
/// handed back until it is due, so a busy channel never holds up the others and costs no
/// database writes while it waits.
pub async fn run_sender(
    app: Arc<App>,
    deliverers: Vec<Deliverer>,
    stop: crate::support::runner::CancelToken,
) {
    use tokio::time::Instant;
    let platforms: Vec<&str> = deliverers.iter().map(|d| d.platform()).collect();
    // When each channel may get its next message.
    let mut due_at: HashMap<String, Instant> = HashMap::new();
    loop {
        if stop.is_cancelled() {
            break;
        }
        let now = Instant::now();
        due_at.retain(|_, due| *due > now);
        let paused: Vec<String> = due_at.keys().cloned().collect();
        let rows = match app
            .db
            .claim_notices_except(&platforms, &app.worker_id, 50, &paused)
            .await
        {
            Ok(r) => {
                app.health.set_outbox_error(None);
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read pending notices");
                app.health.set_outbox_error(Some(e.to_string()));
                Vec::new()
            }
        };
        app.health.outbox_tick();

        // One message per paced channel now; the rest of the batch for that channel goes
        // back until the channel is due.
        let mut send: Vec<(OutboxRow, String, &dyn Deliver)> = Vec::new();
        let mut later: HashMap<String, (Duration, Vec<i64>)> = HashMap::new();
        for row in rows {
            let Some(d) = deliverers.iter().find(|d| d.platform() == row.platform) else {
                continue;
            };
            let key = channel_key(&row.platform, row.channel.as_deref());
            if !d.pace().is_zero() && send.iter().any(|(_, k, _)| *k == key) {
                later
                    .entry(key)
                    .or_insert((d.pace(), Vec::new()))
                    .1
                    .push(row.id);
            } else {
                send.push((row, key, d.as_ref()));
            }
        }
        for (pace, ids) in later.values() {
            if let Err(e) = app.db.defer(ids, now_ms() + pace.as_millis() as i64).await {
                // They stay claimed: another sender takes them when the claim runs out.
                tracing::warn!(error = %e, "outbox: cannot hand back notices for later");
            }
        }

        let busy = !send.is_empty();
        for (row, key, d) in send {
            // A row claimed a while ago (slow sends before it): make sure it is still ours.
            let claimed_for = row.claim_until.unwrap_or(0) - now_ms();
            if claimed_for < CLAIM_MS - RENEW_EVERY.as_millis() as i64 {
                match app.db.renew_claim(row.id, &app.worker_id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            outbox_id = row.id,
                            "outbox: claim lapsed; another sender has this notice"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot renew a claim")
                    }
                }
            }
            // Keep the claim while the send is in flight.
            let result = {
                let delivery = d.deliver(&app, &row);
                tokio::pin!(delivery);
                loop {
                    tokio::select! {
                        r = &mut delivery => break r,
                        _ = tokio::time::sleep(RENEW_EVERY) => {
                            if let Err(e) = app.db.renew_claim(row.id, &app.worker_id).await {
                                tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot renew a claim");
                            }
                        }
                    }
                }
            };
            if !d.pace().is_zero() {
                due_at.insert(key, Instant::now() + d.pace());
            }
            let done = match &result {
                Ok(()) => app.db.mark_delivered(row.id).await,
                Err(DeliveryError::Retry { after, reason }) => {
                    let wait = after.unwrap_or_else(|| backoff(row.attempts + 1));
                    tracing::warn!(platform = %row.platform, outbox_id = row.id, retry_in_ms = wait.as_millis() as u64, reason = %reason, "delivery deferred");
                    crate::support::metrics::delivery_failure(&row.platform);
                    app.db.mark_retry(row.id, wait, reason).await
                }
                Err(DeliveryError::Fatal(reason)) if row.attempts + 1 >= MAX_FATAL_ATTEMPTS => {
                    tracing::error!(platform = %row.platform, outbox_id = row.id, reason = %reason, "notice refused for good; giving up");
                    crate::support::metrics::delivery_failure(&row.platform);
                    app.db.mark_failed(row.id, reason).await
                }
                Err(DeliveryError::Fatal(reason)) => {
                    crate::support::metrics::delivery_failure(&row.platform);
                    app.db
                        .mark_retry(row.id, backoff(row.attempts + 3), reason)
                        .await
                }
            };
            if result.is_ok() {
                crate::support::metrics::delivered(&row.platform);
            }
            if let Err(e) = done {
                tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot record delivery");
            }
        }
        if !busy && due_at.is_empty() {
            // Idle: until new work arrives, or 250 ms.
            tokio::select! {
                _ = app.outbox_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.cancelled() => {}
            }
        } else if !busy {
            // Channels are waiting for their pace: look again when the first is due, or
            // within 100 ms for other channels, not on every wake-up. (A look passes over
            // the waiting channels' backlog; a flood of commands to one channel would
            // otherwise make the sender look thousands of times a second.)
            let soon = Instant::now() + Duration::from_millis(100);
            let until = due_at.values().copied().fold(soon, Instant::min);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }
}
