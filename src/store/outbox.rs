//! The outbox table: notices waiting for delivery, their claims, retries and outcomes.

use std::time::Duration;

use sqlx::FromRow;

use crate::domain::notice::Notice;
use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Db, NewNotice, Result};

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
    /// See [`crate::store::NewNotice::whole`].
    pub whole: bool,
    /// See [`priority`].
    pub priority: i64,
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

impl NewNotice {
    pub fn new(
        job_id: Option<i64>,
        platform: impl Into<String>,
        channel: Option<String>,
        thread_key: impl Into<String>,
        n: &Notice,
    ) -> NewNotice {
        NewNotice {
            job_id,
            platform: platform.into(),
            channel,
            thread_key: thread_key.into(),
            body: n.to_json(),
            whole: !n.is_reply() && n.attachment.is_none(),
            urgent: false,
        }
    }

    /// Send before other due notices when it opens its thread's message.
    pub fn urgent(mut self, urgent: bool) -> NewNotice {
        self.urgent = urgent;
        self
    }
}

/// The sender's order among due notices (the `priority` column), most urgent first.
pub mod priority {
    /// A new message of a P0/P1 incident.
    pub const URGENT: i64 = 0;
    /// Any other new message.
    pub const NEW: i64 = 1;
    /// An edit of a message already posted (or about to be), or a reply under it.
    pub const FOLLOW_UP: i64 = 2;
}

/// Adds a notice; binds job_id, platform, channel, thread_key, body, now, whole, urgent.
/// A notice follows up when its thread already has a message in that channel, or an
/// undelivered notice before it; only a notice that opens its message can be urgent.
pub(crate) fn insert_notice_sql(db: &Db) -> &'static str {
    static PG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_notice(true));
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_notice(false));
    match db {
        Db::Postgres(_) => PG.as_str(),
        Db::Sqlite(_) => SQLITE.as_str(),
    }
}

fn insert_notice(pg: bool) -> String {
    insert_notice_from(pg, ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"], "") + " RETURNING id"
}

/// The notice insert over `from` (empty: one row of parameters), reading each row's job
/// id, platform, channel, thread key, body, time, `whole` and `urgent` from `cols`.
pub(crate) fn insert_notice_from(pg: bool, cols: [&str; 8], from: &str) -> String {
    let [
        job_id,
        platform,
        channel,
        thread_key,
        body,
        now,
        whole,
        urgent,
    ] = cols;
    let same_thread = format!(
        "e.platform = {platform} AND e.thread_key = {thread_key} \
         AND e.delivered_at IS NULL AND e.channel IS NOT DISTINCT FROM {channel}"
    );
    format!(
        "INSERT INTO outbox \
         (job_id, platform, channel, thread_key, body, created_at, next_attempt_at, whole, priority) \
         SELECT {job_id}, {platform}, {channel}, {thread_key}, {body}, {now}, {now}, {whole}, CASE WHEN {} \
         OR EXISTS (SELECT 1 FROM platform_messages m WHERE m.platform = {platform} \
           AND m.channel = COALESCE({channel}, '') AND m.thread_key = {thread_key}) THEN {} \
         WHEN {urgent} THEN {} ELSE {} END{from}",
        thread_look(pg, &same_thread, true),
        priority::FOLLOW_UP,
        priority::URGENT,
        priority::NEW
    )
}

/// "A notice of the thread matches `cond` (on `outbox e`)", or with `any` false, "none
/// does", as each backend's planner always answers with a search of
/// `outbox_thread_pending`. PostgreSQL, before autovacuum's first ANALYZE of a new
/// outbox, takes every index for equally cheap, and for `EXISTS` took
/// `outbox_pending_priority`, reading every pending notice on each insert and, in the
/// claim, for each pending notice (7.8 ms per insert with 20,000 waiting, 1.4 s per claim
/// with 3,000); a subquery ordered as that index is, it searches the index. SQLite plans
/// `EXISTS` with that index, and the ordered form with `outbox_pending` instead (6× slower
/// inserts under load), so it keeps `EXISTS`.
fn thread_look(pg: bool, cond: &str, any: bool) -> String {
    let not = if any { "" } else { "NOT " };
    if pg {
        let is = if any { "NOT " } else { "" };
        format!(
            "(SELECT e.id FROM outbox e WHERE {cond} \
             ORDER BY e.platform, e.thread_key, e.id LIMIT 1) IS {is}NULL"
        )
    } else {
        format!("{not}EXISTS (SELECT 1 FROM outbox e WHERE {cond})")
    }
}

/// What a paused sender must not take yet: one platform's sends of one kind (new
/// messages, or edits), in one channel or, with `channel` `None`, in all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Paused {
    pub platform: String,
    /// The channel (`""` for notices without one); `None`: every channel (a limit per
    /// workspace, such as Slack's `chat.update`).
    pub channel: Option<String>,
    /// Edits of a posted message; otherwise new messages and replies.
    pub edits: bool,
}

/// Is this row, as far as the sender can tell before sending it, an edit of its thread's
/// message (as opposed to a new message or a reply)?
pub fn is_edit(row: &OutboxRow) -> bool {
    row.whole && row.priority == priority::FOLLOW_UP
}

/// The SQL form of [`is_edit`] on `outbox o`.
fn is_edit_sql() -> String {
    format!("(o.whole AND o.priority = {})", priority::FOLLOW_UP)
}

/// `$from, $from+1, …` for `n` values.
fn placeholders_from(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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

    /// [`Db::claim_notices`], leaving alone what `paused` holds back, most urgent first
    /// (see [`priority`]), then in the order written.
    pub async fn claim_notices_except(
        &self,
        platforms: &[&str],
        owner: &str,
        limit: i64,
        paused: &[Paused],
    ) -> Result<Vec<OutboxRow>> {
        if platforms.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // Binds from `first`: the platforms, then per pause its platform and its channel
        // (when it has one).
        let binds: Vec<&str> = platforms
            .iter()
            .copied()
            .chain(
                paused
                    .iter()
                    .flat_map(|p| std::iter::once(p.platform.as_str()).chain(p.channel.as_deref())),
            )
            .collect();
        // What may be claimed: `$now` is the time; `binds` are bound from `$first`.
        let pg = matches!(self, Db::Postgres(_));
        let claimable = |now: &str, first: usize| {
            let mut skip = String::new();
            let mut at = first + platforms.len();
            for p in paused {
                let method = if p.edits {
                    is_edit_sql()
                } else {
                    format!("NOT {}", is_edit_sql())
                };
                skip.push_str(&format!(" AND NOT (o.platform = ${at} AND {method}"));
                at += 1;
                if p.channel.is_some() {
                    skip.push_str(&format!(" AND COALESCE(o.channel, '') = ${at}"));
                    at += 1;
                }
                skip.push(')');
            }
            format!(
                "o.delivered_at IS NULL AND o.next_attempt_at <= {now} \
                 AND (o.claim_until IS NULL OR o.claim_until < {now}) \
                 AND o.platform IN ({}){skip} \
                 AND {}",
                placeholders_from(first, platforms.len()),
                thread_look(
                    pg,
                    "e.platform = o.platform AND e.thread_key = o.thread_key \
                     AND e.delivered_at IS NULL AND e.id < o.id",
                    false
                )
            )
        };
        // On PostgreSQL both statements are planned on each run rather than prepared once:
        // a generic plan made while the outbox was empty is kept until the next ANALYZE
        // and read every pending notice for each pending notice (2.9 s per claim with
        // 3,000 waiting, against 16 ms; see `thread_look` for the other half). Planning
        // costs about 0.5 ms, at most a few times a second.
        //
        // While channels wait for their pace, look before claiming: what is pending is then
        // mostly theirs, the claim is a write, and a read takes no write lock, so it does not
        // queue behind (or hold up) the intake.
        if !paused.is_empty() {
            let look = format!(
                "SELECT o.id FROM outbox o WHERE {} LIMIT 1",
                claimable("$1", 2)
            );
            let any: Option<i64> = on_db!(self, p => {
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(look))
                    .persistent(!pg)
                    .bind(now);
                for b in &binds {
                    q = q.bind(*b);
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
             SELECT o.id FROM outbox o WHERE {} ORDER BY o.priority, o.id LIMIT $4{lock}) RETURNING *",
            claimable("$3", 5)
        );
        let mut rows: Vec<OutboxRow> = on_db!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .persistent(!pg)
                .bind(owner)
                .bind(now + CLAIM_MS)
                .bind(now)
                .bind(limit);
            for b in &binds {
                q = q.bind(*b);
            }
            q.fetch_all(p).await?
        });
        rows.sort_by_key(|r| (r.priority, r.id));
        Ok(rows)
    }

    /// `row` is claimed by `owner` and carries the whole state of its message: when newer
    /// whole notices of its thread and channel are waiting (with no reply of that channel
    /// between, which needs the message as it was), mark `row` and all but the newest of
    /// them superseded, and claim the newest instead, returned with the most urgent
    /// priority of those it replaces. `None`: nothing newer, send `row`.
    pub async fn supersede(
        &self,
        row: &OutboxRow,
        owner: &str,
    ) -> Result<Option<(OutboxRow, usize)>> {
        let now = now_ms();
        let later_sql = "SELECT id, whole, priority FROM outbox WHERE platform = $1 \
             AND thread_key = $2 AND channel IS NOT DISTINCT FROM $3 AND id > $4 \
             AND delivered_at IS NULL ORDER BY id";
        let newest = |later: Vec<(i64, bool, i64)>| {
            let whole: Vec<(i64, i64)> = later
                .into_iter()
                .take_while(|r| r.1)
                .map(|r| (r.0, r.2))
                .collect();
            let (&(newest, _), older) = whole.split_last()?;
            let mut gone: Vec<i64> = older.iter().map(|r| r.0).collect();
            gone.push(row.id);
            let urgency = whole.iter().map(|r| r.1).chain([row.priority]).min();
            Some((newest, gone, urgency.unwrap_or(row.priority)))
        };
        // Mostly nothing newer waits: one indexed read, and no transaction, for that.
        let later: Vec<(i64, bool, i64)> = on_db!(self, p => {
            sqlx::query_as(later_sql)
                .bind(&row.platform)
                .bind(&row.thread_key)
                .bind(&row.channel)
                .bind(row.id)
                .fetch_all(p)
                .await?
        });
        let Some((newest, gone, urgency)) = newest(later) else {
            return Ok(None);
        };
        let list = placeholders_from(3, gone.len());
        let settle = format!(
            "UPDATE outbox SET delivered_at = $1, last_error = $2, claimed_by = NULL, \
             claim_until = NULL WHERE id IN ({list}) AND delivered_at IS NULL"
        );
        let taken: Option<(OutboxRow, usize)> = on_db!(self, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(sqlx::AssertSqlSafe(settle))
                .bind(now)
                .bind(format!("superseded by notice {newest}"));
            for id in &gone {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
            let taken: Option<OutboxRow> = sqlx::query_as(
                "UPDATE outbox SET claimed_by = $1, claim_until = $2, sends = sends + 1, \
                 priority = $3 WHERE id = $4 AND delivered_at IS NULL RETURNING *",
            )
            .bind(owner)
            .bind(now + CLAIM_MS)
            .bind(urgency)
            .bind(newest)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            taken.map(|t| (t, gone.len()))
        });
        Ok(taken)
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
        self.mark_all_delivered(&[id]).await
    }

    /// [`Db::mark_delivered`] for several rows, in one statement.
    pub async fn mark_all_delivered(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET delivered_at = $1, claimed_by = NULL, claim_until = NULL \
             WHERE id IN ({})",
            placeholders_from(2, ids.len())
        );
        on_db!(self, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
            for id in ids {
                q = q.bind(*id);
            }
            q.execute(p).await?;
        });
        Ok(())
    }

    /// Hand claimed rows back unsent, to be claimed again at `at_ms`: not an attempt, and
    /// not a send (so the next claim does not look for an earlier post of them).
    pub async fn defer(&self, ids: &[i64], at_ms: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = placeholders_from(2, ids.len());
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
