//! Chat platforms: HTTP intake, rendering of notices, and delivery.
//!
//! Each platform turns its requests into an [`Invocation`] for the shared intake and renders
//! the shared [`crate::domain::notice::Notice`] model generically (fields, body, buttons), so rules
//! and message content live in one place.

pub mod discord;
pub mod slack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::domain::platform::Platform;
use crate::intake::{Invocation, Outcome};
use crate::outbox::{Deliverer, DeliveryError};

/// A deliverer for every platform that can deliver.
pub fn deliverers(app: &App) -> Vec<Deliverer> {
    let mut d: Vec<Deliverer> = Vec::new();
    if app.settings.platform_enabled(Platform::Slack.as_str()) {
        d.push(Box::new(slack::SlackClient::new(app)));
    }
    if app.settings.platform_enabled(Platform::Discord.as_str()) {
        d.push(Box::new(discord::DiscordClient::new(app)));
    }
    d
}

/// How long intake may take before the platform's 3-second deadline is in danger.
const ACK_BUDGET: Duration = Duration::from_millis(2500);

/// Submit and answer in time: the outcome's text, or — when the database is slow — a
/// truthful "received, answer follows" while `late` delivers the outcome afterwards.
///
/// `elsewhere`: the request comes from a workspace, app or guild this Deckhand does not
/// serve (the reason): it is refused and audited without being looked at further.
pub async fn ack_or_defer<F, Fut>(
    app: Arc<App>,
    inv: Invocation,
    elsewhere: Option<String>,
    late: F,
) -> String
where
    F: FnOnce(Arc<App>, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let a = app.clone();
    let work = async move {
        match elsewhere {
            Some(reason) => crate::intake::refuse_elsewhere(&a, inv, reason).await,
            None => crate::intake::submit(&a, inv).await,
        }
    };
    in_time(app, work, late).await
}

/// The outcome of `work` as text within [`ACK_BUDGET`], else "answer follows" and `late`.
async fn in_time<W, F, Fut>(app: Arc<App>, work: W, late: F) -> String
where
    W: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
    F: FnOnce(Arc<App>, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut task = tokio::spawn(work);
    match tokio::time::timeout(ACK_BUDGET, &mut task).await {
        Ok(r) => outcome_text(r),
        Err(_) => {
            tokio::spawn(async move {
                let text = outcome_text(task.await);
                late(app, text).await;
            });
            "Received. Deckhand is slow to confirm right now; the answer follows shortly.".into()
        }
    }
}

fn outcome_text(r: Result<anyhow::Result<Outcome>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(Outcome::Refused(reason))) => format!("✖ {reason}"),
        Ok(Ok(o)) => o.message().to_owned(),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "intake failed");
            "✖ Deckhand could not record this command (a database problem); nothing was queued. Try again in a minute.".into()
        }
        Err(_) => "✖ Deckhand hit an internal error; nothing was queued.".into(),
    }
}

/// The answer to a signed request over its budget (`[server] rate_limit_*`): 429 with
/// `Retry-After` in whole seconds.
pub fn too_many_requests(wait: Duration, who: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    crate::support::metrics::rejected("rate_limited");
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = (axum::http::StatusCode::TOO_MANY_REQUESTS, who).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs),
    );
    r
}

/// What a button means as a typed command: approve/reject/cancel JOB, or rollback ENV for
/// the job's environment.
pub async fn button_command(
    app: &App,
    action: &str,
    value: Option<&str>,
) -> Option<(String, Vec<String>)> {
    let v = value?.to_owned();
    match action {
        "approve" | "reject" | "cancel" | "ack" => Some((action.to_owned(), vec![v])),
        "rollback" => {
            let id: i64 = v.parse().ok()?;
            let job = app.db.job(id).await.ok()??;
            Some(("rollback".into(), vec![job.environment?]))
        }
        _ => None,
    }
}

/// Sort an HTTP status into delivered, retry later, or refused for good.
pub fn classify(status: u16, after: Option<Duration>, what: &str) -> Result<(), DeliveryError> {
    match status {
        200..=299 => Ok(()),
        429 => Err(DeliveryError::Retry {
            after,
            reason: format!("{what}: rate limited (429)"),
        }),
        408 | 500..=599 => Err(DeliveryError::Retry {
            after: None,
            reason: format!("{what}: HTTP {status}"),
        }),
        _ => Err(DeliveryError::Fatal(format!("{what}: HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_retry_and_fatal() {
        assert!(classify(200, None, "x").is_ok());
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), "x"),
            Err(DeliveryError::Retry { after: Some(_), .. })
        ));
        assert!(matches!(
            classify(502, None, "x"),
            Err(DeliveryError::Retry { .. })
        ));
        assert!(matches!(
            classify(404, None, "x"),
            Err(DeliveryError::Fatal(_))
        ));
    }
}
