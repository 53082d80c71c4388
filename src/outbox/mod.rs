//! The outbox sender: delivers notices written next to the state they report.
//!
//! Rows are taken in order per thread (a job, an incident): a thread's next notice waits
//! until the one before it is delivered, so a retry never reorders a job's story. A row is
//! claimed for a short while before it is sent and marked delivered right after, so a
//! crash between the two can at worst resend the one row in flight; platforms that allow
//! it make even that harmless (an update of the job's one message is idempotent). Printed
//! notices (the terminal) are marked together after the claim's sends: a crash can print
//! a claim's lines twice, and it saves a commit per line in a storm.

pub mod github;
pub(crate) mod routes;

pub use crate::store::outbox::{CLAIM_MS, OutboxRow, Paused, is_edit, priority};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::app::App;
use crate::domain::time::now_ms;

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
    /// The message to edit no longer exists (deleted by someone): post a new one.
    Gone(String),
}

/// How long to wait before attempt `n` (1-based) after a failure: 1 s doubling to 30 s,
/// so a platform that comes back is used again within half a minute.
pub fn backoff(attempt: i64) -> Duration {
    let secs = 1u64 << attempt.clamp(1, 6).saturating_sub(1);
    Duration::from_secs(secs.min(30))
}

/// Attempts after which a fatal refusal is given up on (and logged as lost).
pub const MAX_FATAL_ATTEMPTS: i64 = 5;

/// How often a sender renews the claim on the notice it is delivering.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// A delivery in flight.
pub type Delivery<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), DeliveryError>> + Send + 'a>,
>;

/// Which of a platform's limits a send counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One channel's (Slack's `chat.postMessage`, Discord's per-channel routes).
    Channel,
    /// The whole workspace's (Slack's `chat.update`, a per-workspace tier).
    Workspace,
}

/// Where notices of one platform go. Each platform implements this; the sender knows
/// nothing else about them.
pub trait Deliver: Send + Sync {
    /// The platform name on outbox rows this delivers.
    fn platform(&self) -> &'static str;
    /// Minimum time between two sends of one kind, new messages (and replies) or `edits`
    /// of a posted message, and whether that limit holds per channel or per workspace.
    /// Zero: unpaced.
    fn pace(&self, edits: bool) -> (Scope, Duration);
    /// Whether a thread's message is edited in place, so that of several waiting whole
    /// states of one message only the newest need be sent.
    fn edits_in_place(&self) -> bool {
        false
    }
    /// Send one notice (post, update or reply).
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> Delivery<'a>;
    /// Whether sending a notice again is harmless (printing it), so that the delivered
    /// marks of a whole claim are written together after its sends, not one per send.
    fn marks_together(&self) -> bool {
        false
    }
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
        crate::domain::platform::Platform::Terminal.as_str()
    }
    fn pace(&self, _edits: bool) -> (Scope, Duration) {
        (Scope::Channel, Duration::ZERO)
    }
    fn marks_together(&self) -> bool {
        true
    }
    fn deliver<'a>(&'a self, _app: &'a App, row: &'a OutboxRow) -> Delivery<'a> {
        if self.print
            && let Some(n) = row.notice()
        {
            crate::support::stdout::line(format_args!("{}", n.render_text()));
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Deliver until `stop` fires. Wakes on `app.outbox_wake` or every 250 ms.
///
/// Order: what is due goes most urgent first (a new P0/P1 incident message, then other
/// new messages, then edits and replies; see `store::outbox::priority`), each thread in
/// the order written.
///
/// Pacing: each kind of send gets at most one message per [`Deliver::pace`] in its scope
/// (a channel, or the workspace), and a 429's `Retry-After` pauses that kind alone. What
/// is not due is left out of the claim, and a second send of one kind in a batch is
/// handed back until it is due, so a busy channel never holds up the others and costs no
/// database writes while it waits.
///
/// Storms: where messages are edited in place, a notice with newer whole states of its
/// message waiting behind it is not sent; the newest goes instead (see
/// [`crate::store::Db::supersede`]), so 1,000 updates of one incident cost a handful of
/// edits, not 1,000 paced ones.
pub async fn run_sender(
    app: Arc<App>,
    deliverers: Vec<Deliverer>,
    stop: crate::support::runner::CancelToken,
) {
    let platforms: Vec<&str> = deliverers.iter().map(|d| d.platform()).collect();
    // When each kind of send may go next.
    let mut due_at: HashMap<Paused, Instant> = HashMap::new();
    while !stop.is_cancelled() {
        let now = Instant::now();
        due_at.retain(|_, due| *due > now);
        let rows = claim(&app, &platforms, &due_at).await;
        let (send, later) = plan(rows, &deliverers);
        for (pace, ids) in later.values() {
            if let Err(e) = app.db.defer(ids, now_ms() + pace.as_millis() as i64).await {
                // They stay claimed: another sender takes them when the claim runs out.
                tracing::warn!(error = %e, "outbox: cannot hand back notices for later");
            }
        }
        let busy = !send.is_empty();
        // Sent notices whose marks are written together (printed ones: a crash before the
        // mark prints them again, and nothing else).
        let mut printed = Vec::new();
        for Planned { row, key, pace, d } in send {
            let row = newest(&app, row, d).await;
            let Some(result) = send_holding_claim(&app, &row, d).await else {
                continue;
            };
            // A 429 pauses this kind of send for as long as the platform asked.
            let wait = match &result {
                Err(DeliveryError::Retry { after: Some(a), .. }) => pace.max(*a),
                _ => pace,
            };
            if !wait.is_zero() {
                due_at.insert(key, Instant::now() + wait);
            }
            if d.marks_together() && result.is_ok() {
                crate::support::metrics::delivered(&row.platform);
                printed.push(row.id);
                continue;
            }
            record(&app, &row, &result).await;
        }
        if let Err(e) = app.db.mark_all_delivered(&printed).await {
            // They stay claimed: printed again once the claim runs out.
            tracing::warn!(error = %e, "outbox: cannot record deliveries");
        }
        if !busy {
            wait(&app, &stop, &due_at).await;
        }
    }
}

/// Claim what may be sent now, leaving out the kinds of send that wait for their pace.
async fn claim(app: &App, platforms: &[&str], due_at: &HashMap<Paused, Instant>) -> Vec<OutboxRow> {
    let paused: Vec<Paused> = due_at.keys().cloned().collect();
    let rows = match app
        .db
        .claim_notices_except(platforms, &app.worker_id, 50, &paused)
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
    rows
}

/// The newest waiting whole state of `row`'s message, claimed in its place (the older ones
/// are marked superseded), or `row` itself. A row that may have been posted by a sender
/// that died goes as it is: its retry looks for that post first.
async fn newest(app: &App, row: OutboxRow, d: &dyn Deliver) -> OutboxRow {
    if !d.edits_in_place() || !row.whole || row.maybe_delivered() {
        return row;
    }
    match app.db.supersede(&row, &app.worker_id).await {
        Ok(Some((newer, n))) => {
            tracing::debug!(platform = %row.platform, outbox_id = row.id, newest = newer.id, superseded = n, "outbox: sending the newest state only");
            crate::support::metrics::superseded(&row.platform, n);
            newer
        }
        Ok(None) => row,
        Err(e) => {
            tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot look for newer states; sending this one");
            row
        }
    }
}

/// One notice to send now, with the pace it counts against.
struct Planned<'a> {
    row: OutboxRow,
    key: Paused,
    pace: Duration,
    d: &'a dyn Deliver,
}

/// Notices to send now (one per paced kind of send), and per kind the ids to hand back
/// until it is due.
type Plan<'a> = (Vec<Planned<'a>>, HashMap<Paused, (Duration, Vec<i64>)>);

fn plan(rows: Vec<OutboxRow>, deliverers: &[Deliverer]) -> Plan<'_> {
    let mut send: Vec<Planned> = Vec::new();
    let mut later: HashMap<Paused, (Duration, Vec<i64>)> = HashMap::new();
    for row in rows {
        let Some(d) = deliverers.iter().find(|d| d.platform() == row.platform) else {
            continue;
        };
        let edits = is_edit(&row);
        let (scope, pace) = d.pace(edits);
        let key = Paused {
            platform: row.platform.clone(),
            channel: (scope == Scope::Channel).then(|| row.channel.clone().unwrap_or_default()),
            edits,
        };
        if !pace.is_zero() && send.iter().any(|p| p.key == key) {
            later
                .entry(key)
                .or_insert((pace, Vec::new()))
                .1
                .push(row.id);
        } else {
            send.push(Planned {
                row,
                key,
                pace,
                d: d.as_ref(),
            });
        }
    }
    (send, later)
}

/// Send one notice, renewing its claim while the send is in flight. `None` when the claim
/// lapsed and another sender has the notice.
async fn send_holding_claim(
    app: &App,
    row: &OutboxRow,
    d: &dyn Deliver,
) -> Option<std::result::Result<(), DeliveryError>> {
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
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot renew a claim")
            }
        }
    }
    let delivery = d.deliver(app, row);
    tokio::pin!(delivery);
    loop {
        tokio::select! {
            r = &mut delivery => return Some(r),
            _ = tokio::time::sleep(RENEW_EVERY) => {
                if let Err(e) = app.db.renew_claim(row.id, &app.worker_id).await {
                    tracing::warn!(error = %e, outbox_id = row.id, "outbox: cannot renew a claim");
                }
            }
        }
    }
}

/// Record a send's outcome: delivered, retry later, or given up.
async fn record(app: &App, row: &OutboxRow, result: &std::result::Result<(), DeliveryError>) {
    let done = match result {
        Ok(()) => app.db.mark_delivered(row.id).await,
        Err(DeliveryError::Retry { after, reason }) => {
            let wait = after.unwrap_or_else(|| backoff(row.attempts + 1));
            tracing::warn!(platform = %row.platform, outbox_id = row.id, retry_in_ms = wait.as_millis() as u64, reason = %reason, "delivery deferred");
            crate::support::metrics::delivery_failure(&row.platform);
            app.db.mark_retry(row.id, wait, reason).await
        }
        Err(DeliveryError::Fatal(reason) | DeliveryError::Gone(reason))
            if row.attempts + 1 >= MAX_FATAL_ATTEMPTS =>
        {
            tracing::error!(platform = %row.platform, outbox_id = row.id, reason = %reason, "notice refused for good; giving up");
            crate::support::metrics::delivery_failure(&row.platform);
            app.db.mark_failed(row.id, reason).await
        }
        Err(DeliveryError::Fatal(reason) | DeliveryError::Gone(reason)) => {
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

/// Nothing was sent: wait for new work (or 250 ms) when no channel waits for its pace;
/// otherwise look again when the first is due, or within 100 ms for other channels, not on
/// every wake-up. (A look passes over the waiting channels' backlog; a flood of commands to
/// one channel would otherwise make the sender look thousands of times a second.)
async fn wait(
    app: &App,
    stop: &crate::support::runner::CancelToken,
    due_at: &HashMap<Paused, Instant>,
) {
    if due_at.is_empty() {
        tokio::select! {
            _ = app.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => {}
        }
    } else {
        let soon = Instant::now() + Duration::from_millis(100);
        let until = due_at.values().copied().fold(soon, Instant::min);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = stop.cancelled() => {}
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
