//! Polling for continuous delivery: every `poll_seconds` (at least a minute; 0 turns it
//! off), one replica asks GitHub for each auto-deployed branch's head, with
//! `If-None-Match` and the ETag of the last answer (a 304 costs nothing against the rate
//! limit), and judges the head like a webhook event would. It runs whether or not a
//! webhook is set up: GitHub does not redeliver a webhook that failed, so the poll is what
//! catches a missed one (and a deploy refused while the environment was locked).
//!
//! The schedule lives in the database (`github_branches.next_poll_at`): a replica polls a
//! branch only after moving its next poll on, so replicas together ask once per interval;
//! a rate limit (`Retry-After`, or `x-ratelimit-remaining: 0` with `x-ratelimit-reset`)
//! moves it to when GitHub allows calls again. [`tick`] takes the time, so tests drive it
//! without waiting.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::domain::time::now_ms;
use crate::intake::auto_deploy::{Judged, current_head, judge, requester, targets};
use crate::support::runner::CancelToken;

/// How often the loop looks for branches due a poll.
pub const TICK: Duration = Duration::from_secs(5);
/// Webhook deliveries are remembered this long (GitHub redelivers for three days).
pub const DELIVERY_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// How often old deliveries are pruned.
const PRUNE_EVERY_MS: i64 = 3600 * 1000;

/// Poll every branch due at `now` (ms) that no other replica claimed first: each
/// environment polled, with its branch head's judgement.
pub async fn tick(app: &Arc<App>, now: i64) -> anyhow::Result<Vec<(String, Judged)>> {
    let mut out = Vec::new();
    for t in targets(app) {
        if t.cfg.poll_seconds == 0 {
            continue;
        }
        let row = app.db.auto_branch(t.env, &t.repo, &t.cfg.branch).await?;
        if row.next_poll_at > now {
            continue;
        }
        let next = now + (t.cfg.poll_seconds * 1000) as i64;
        if !app.db.claim_poll(t.env, now, next).await? {
            continue;
        }
        let j = match current_head(app, &t, &row, now).await? {
            Ok(head) => {
                // Re-read: the answer may have come with a push's pusher meanwhile.
                let row = app.db.auto_branch_row(t.env).await?.unwrap_or(row);
                let who = requester(&row, &head, None);
                judge(app, &t, &head, &who, false, now).await?
            }
            Err(j) => j,
        };
        if let Judged::Unknown(why) = &j {
            tracing::warn!(env = t.env, %why, "auto-deploy: cannot poll the branch");
        }
        out.push((t.env.to_owned(), j));
    }
    Ok(out)
}

/// Whether this process has anything to poll or prune.
pub fn wanted(app: &App) -> bool {
    app.settings.secrets.github_webhook_secret.is_some()
        || app.settings.config.auto_deploys().next().is_some()
}

/// Poll until `stop`, and prune old webhook deliveries hourly.
pub async fn run(app: Arc<App>, stop: CancelToken) {
    if !wanted(&app) {
        return;
    }
    let mut pruned_at = 0;
    loop {
        let now = now_ms();
        if let Err(e) = tick(&app, now).await {
            tracing::warn!(error = %format!("{e:#}"), "auto-deploy: a poll failed");
        }
        if now - pruned_at >= PRUNE_EVERY_MS {
            match app.db.prune_deliveries(now - DELIVERY_RETENTION_MS).await {
                Ok(n) => {
                    pruned_at = now;
                    if n > 0 {
                        tracing::debug!(pruned = n, "old GitHub webhook deliveries pruned");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot prune GitHub webhook deliveries"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => break,
        }
    }
}
