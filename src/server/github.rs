//! `POST /github/webhook`: GitHub's webhook, signed with `GITHUB_WEBHOOK_SECRET`
//! (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body, compared in constant time).
//!
//! Without the secret the route answers 404 and takes nothing. A missing, malformed or
//! wrong signature is 401 (and spends the sender's unverified budget, like the other
//! webhook routes); a body over the limit 413; a signed request without a usable
//! `X-GitHub-Event` / `X-GitHub-Delivery` or JSON 400. Each delivery id is taken once,
//! durably: a delivery seen before is refused with 401 and changes nothing (if handling a
//! delivery fails, it is forgotten again, so GitHub's redelivery is taken). The answer
//! says what the event did; one still being judged after a few seconds is answered 202
//! and finishes in the background (the poll catches anything lost).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::App;
use crate::domain::time::now_ms;
use crate::intake::auto_deploy::on_event;
use crate::support::github_webhook::{parse, valid_delivery_id, verify};
use crate::support::ratelimit::SignedBudget;

/// GitHub caps payloads at 25 MB, but the events Deckhand reads are small: up to 1 MiB is
/// taken (`[server] max_body_bytes` applies too), anything larger is refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// GitHub gives up on an answer after 10 s; one not ready by then is answered 202.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The metrics and log label of this route's requests.
const PLATFORM: &str = "github";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/github/webhook", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn answer(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

async fn receive(
    State(app): State<Arc<App>>,
    budget: Option<Extension<Arc<SignedBudget>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &app.settings.secrets.github_webhook_secret else {
        return answer(
            StatusCode::NOT_FOUND,
            "GitHub webhook intake is off (GITHUB_WEBHOOK_SECRET is unset)",
        );
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    if let Err(e) = verify(
        secret.expose_secret().as_bytes(),
        header("x-hub-signature-256"),
        &body,
    ) {
        crate::support::metrics::command(PLATFORM, "bad_signature");
        tracing::warn!(reason = e.as_str(), "refused a GitHub webhook");
        return answer(StatusCode::UNAUTHORIZED, e.as_str());
    }
    let Some(event) = header("x-github-event").filter(|e| {
        !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "missing or malformed X-GitHub-Event header",
        );
    };
    let Some(delivery) = header("x-github-delivery").filter(|d| valid_delivery_id(d)) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "missing or malformed X-GitHub-Delivery header",
        );
    };
    let ev = match parse(event, &body) {
        Ok(ev) => ev,
        Err(why) => {
            crate::support::metrics::command(PLATFORM, "refused");
            return answer(StatusCode::BAD_REQUEST, &why);
        }
    };
    // Verified senders spend their own budget, per repository and event.
    if let Some(Extension(b)) = &budget {
        let repo = match &ev {
            crate::support::github_webhook::Event::Push { repository, .. }
            | crate::support::github_webhook::Event::Checks { repository, .. } => {
                repository.as_str()
            }
            _ => "-",
        };
        if let Err(wait) = b.take(Some(repo), &format!("{repo}:{event}")) {
            return crate::platform::too_many_requests(
                wait,
                "too many GitHub events for this repository; the poll catches up",
            );
        }
    }
    if app.health.draining() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "Deckhand is restarting; redeliver later (the poll catches up meanwhile)",
        );
    }
    match app.db.take_delivery(delivery, event, now_ms()).await {
        Ok(true) => {}
        Ok(false) => {
            crate::support::metrics::command(PLATFORM, "replayed");
            tracing::warn!(%delivery, %event, "refused a GitHub delivery seen before (a replay)");
            return answer(
                StatusCode::UNAUTHORIZED,
                "delivery already received: a replay changes nothing",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a GitHub delivery");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the delivery right now; redeliver it",
            );
        }
    }
    let task = {
        let (app, delivery) = (app.clone(), delivery.to_owned());
        tokio::spawn(async move {
            let res = on_event(&app, &ev).await;
            if let Err(e) = &res {
                tracing::error!(error = %format!("{e:#}"), "cannot apply a GitHub event");
                // Not applied: a redelivery of it must be taken.
                if let Err(e) = app.db.forget_delivery(&delivery).await {
                    tracing::warn!(error = %e, "cannot forget a failed GitHub delivery");
                }
            }
            res
        })
    };
    // Within the request deadline too, so the answer is this handler's, not the limit's.
    let within = ANSWER_WITHIN
        .min(Duration::from_secs(app.settings.config.server.request_timeout_seconds) / 2);
    match tokio::time::timeout(within, task).await {
        Ok(Ok(Ok(outcome))) => {
            crate::support::metrics::command(PLATFORM, "accepted");
            axum::Json(outcome.to_json()).into_response()
        }
        Ok(Ok(Err(_))) | Ok(Err(_)) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot apply the event right now; redeliver it",
        ),
        Err(_) => {
            crate::support::metrics::command(PLATFORM, "accepted");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "accepted", "detail": "still being judged"})),
            )
                .into_response()
        }
    }
}
