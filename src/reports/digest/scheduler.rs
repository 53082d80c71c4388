//! When digests go out: every few seconds, each schedule's firings since the last one
//! handled are looked up; the newest is posted once, even with several replicas, and late
//! ones say so.
//!
//! * `schedule_state` keeps, per digest, the last firing handled. A schedule seen for the
//!   first time starts at "now", so adding a digest does not post its history.
//! * Firings between that instant and now come from [`Schedule::firings_between`] (DST
//!   rules live there). Only the newest is posted; if it is more than [`LATE_AFTER`] old it
//!   is marked late and names how many earlier ones were missed. Nothing is skipped
//!   silently, and nothing is posted twice.
//! * The firing is claimed with a unique row `claims ("digest:NAME", fire instant in ms)`,
//!   inserted in the same transaction as the notices and the new `schedule_state`: the
//!   replica whose insert lands posts; the others find the row and only move their state
//!   on. A crash before commit leaves no claim, so the next tick retries.
//! * The clock is a parameter of [`tick`], so tests drive it through DST changes and
//!   downtime without waiting.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::{DigestConfig, Late};
use crate::app::App;
use crate::store::reports::advance;
use crate::store::{NewNotice, Write};
use crate::support::runner::CancelToken;
use crate::support::schedule::Schedule;

/// How often schedules are looked at.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(5);
/// A firing posted later than this after its instant is marked late.
pub const LATE_AFTER: Duration = Duration::minutes(2);
/// Charts are kept this long: long enough for any delivery retry, short enough that a daily
/// digest does not grow the database for ever.
const ATTACHMENT_DAYS: i64 = 30;
/// Firings counted per look-up; a longer outage is still counted, in steps of this many.
const BATCH: usize = 1000;
/// Counting stops here ("at least this many missed") so an every-minute schedule after a
/// year offline does not stall the loop.
const MAX_COUNTED: usize = 100_000;

/// What one tick did with one digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub digest: String,
    /// The scheduled instant posted (the newest due).
    pub at: DateTime<Utc>,
    pub late: bool,
    /// Earlier due firings folded into this one.
    pub missed: usize,
    /// False when another replica had already claimed it.
    pub posted: bool,
}

/// The `schedule_state` name of a digest.
pub fn state_key(name: &str) -> String {
    format!("digest:{name}")
}

/// The newest firing in `(last, now]` and how many there are in all.
pub fn due(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, usize)> {
    let mut cursor = last;
    let mut count = 0;
    let mut newest = None;
    loop {
        let batch = schedule.firings_between(cursor, now, BATCH);
        count += batch.len();
        if let Some(l) = batch.last() {
            newest = Some(*l);
            cursor = *l;
        }
        if batch.len() < BATCH {
            break;
        }
        if count >= MAX_COUNTED {
            // Jump to the last day: the newest firing is there for any schedule that fires
            // this often, and the count is reported as a floor.
            let recent = schedule.firings_between(now - Duration::days(1), now, usize::MAX);
            newest = recent.last().copied().or(newest);
            break;
        }
    }
    newest.map(|n| (n, count))
}

/// Look at every digest once, as if the time were `now`.
pub async fn tick(app: &App, now: DateTime<Utc>) -> anyhow::Result<Vec<Fired>> {
    let mut out = Vec::new();
    for cfg in &app.settings.config.digests {
        match tick_one(app, cfg, now).await {
            Ok(Some(f)) => out.push(f),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(digest = %cfg.name, error = %format!("{e:#}"), "digest not sent; retrying next tick")
            }
        }
    }
    Ok(out)
}

async fn tick_one(
    app: &App,
    cfg: &DigestConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Fired>> {
    let key = state_key(&cfg.name);
    let Some(last) = app.db.schedule_last(&key).await? else {
        app.db.schedule_init(&key, now.timestamp_millis()).await?;
        return Ok(None);
    };
    let last = DateTime::from_timestamp_millis(last).unwrap_or(now);
    let Some((at, count)) = due(&cfg.schedule, last, now) else {
        return Ok(None);
    };
    let at_ms = at.timestamp_millis();
    let fired = |posted| Fired {
        digest: cfg.name.clone(),
        at,
        late: now - at > LATE_AFTER,
        missed: count - 1,
        posted,
    };
    if app.db.claimed(&key, &at_ms.to_string()).await? {
        app.db.apply(&[advance(&key, at_ms)]).await?;
        return Ok(Some(fired(false)));
    }
    let f = fired(true);
    let digest = super::build(app, cfg, at).await?;
    let late = f.late.then_some(Late {
        now,
        missed: f.missed,
    });
    let mut notice = super::notice(&digest, late);
    match super::chart(&digest, &app.settings.config.costs) {
        Ok(png) => {
            let name = format!("digest-{}-{}.png", cfg.name, at.format("%Y%m%d-%H%M"));
            notice.attachment = Some(app.db.store_attachment(&name, "image/png", &png).await?);
        }
        Err(e) => {
            tracing::warn!(digest = %cfg.name, error = %e, "digest chart failed; sending the text alone")
        }
    }
    let mut writes = vec![super::claim_write(&key, &at_ms.to_string(), &app.worker_id)];
    for (platform, channel) in crate::outbox::routes::destinations(&app.settings, &cfg.channels) {
        writes.push(Write::Notice(NewNotice::new(
            None,
            platform,
            channel,
            format!("{key}:{at_ms}"),
            &notice,
        )));
    }
    writes.push(advance(&key, at_ms));
    if app.db.apply_if_first(&writes).await? {
        app.outbox_wake.notify_one();
        tracing::info!(digest = %cfg.name, at = %at, late = f.late, missed = f.missed, "digest posted");
        Ok(Some(f))
    } else {
        // Another replica won the race while this one was building.
        if let Some(id) = notice.attachment {
            let _ = app.db.delete_attachment(id).await;
        }
        app.db.apply(&[advance(&key, at_ms)]).await?;
        Ok(Some(Fired { posted: false, ..f }))
    }
}

/// The scheduler of `deckhand serve`: digests every `TICK`; once an hour, old charts are
/// pruned and (one replica per hour) cost budgets are checked, in a task of their own so a
/// slow cost command never makes a digest late.
pub async fn run(app: Arc<App>, stop: CancelToken) {
    let has_budgets = app
        .settings
        .config
        .costs
        .iter()
        .any(|c| c.budget_monthly.is_some());
    if app.settings.config.digests.is_empty() && !has_budgets {
        return;
    }
    let (mut pruned, mut checked) = (None, None);
    let mut budgets: Option<tokio::task::JoinHandle<()>> = None;
    while !stop.is_cancelled() {
        let now = Utc::now();
        if let Err(e) = tick(&app, now).await {
            tracing::warn!(error = %format!("{e:#}"), "digest scheduler tick failed");
        }
        let hour = now.timestamp() / 3600;
        if pruned != Some(hour) {
            pruned = Some(hour);
            let old = now.timestamp_millis() - ATTACHMENT_DAYS * 86_400_000;
            if let Err(e) = app.db.prune_attachments(old).await {
                tracing::warn!(error = %e, "cannot prune old digest charts");
            }
        }
        let idle = budgets.as_ref().is_none_or(|b| b.is_finished());
        if has_budgets && idle && checked != Some(hour) {
            checked = Some(hour);
            let app = app.clone();
            budgets = Some(tokio::spawn(async move {
                match app
                    .db
                    .claim_once("cost-check", &hour.to_string(), &app.worker_id)
                    .await
                {
                    Ok(true) => {
                        if let Err(e) = crate::reports::cost::check_budgets(&app, now).await {
                            tracing::warn!(error = %format!("{e:#}"), "cost budget check failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot claim the cost budget check"),
                }
            }));
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => {}
        }
    }
    if let Some(b) = budgets {
        b.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn due_finds_the_newest_and_counts_the_rest() {
        let s = Schedule::parse("0 9 * * *", "Europe/Amsterdam").unwrap();
        let (at, n) = due(&s, t("2026-11-20T12:00:00Z"), t("2026-11-23T12:00:00Z")).unwrap();
        assert_eq!(at, t("2026-11-23T08:00:00Z"));
        assert_eq!(n, 3);
        assert!(due(&s, t("2026-11-23T08:00:00Z"), t("2026-11-23T12:00:00Z")).is_none());
    }

    #[test]
    fn due_counts_past_one_batch() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let (at, n) = due(&s, t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:30Z")).unwrap();
        assert_eq!(at, t("2026-11-21T00:00:00Z"));
        assert_eq!(n, 1440);
    }
}
