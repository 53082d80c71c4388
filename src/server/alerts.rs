//! `POST /alerts/{source}`: Alertmanager, Grafana and generic alerts, behind a bearer token
//! (`DECKHAND_ALERT_TOKEN`, compared in constant time). Alert senders do not sign requests.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::App;
use crate::domain::platform::Platform;
use crate::server::limits::ClientAddr;
use crate::support::ratelimit::SignedBudget;
use crate::watch::alerts::{AlertError, ingest, parse};

/// Alertmanager groups can be large: up to the documented 1 MiB is accepted, anything past
/// it is refused with 413. (`[server] max_body_bytes`, 1 MiB by default, applies too.)
pub const MAX_BODY: usize = 1024 * 1024;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/alerts/{source}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn receive(
    State(app): State<Arc<App>>,
    Path(source): Path<String>,
    budget: Option<Extension<Arc<SignedBudget>>>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &app.settings.secrets.alert_token else {
        return (
            StatusCode::NOT_FOUND,
            "alert intake is off (DECKHAND_ALERT_TOKEN is unset)",
        )
            .into_response();
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::support::secret::constant_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
        crate::support::metrics::command(Platform::Alerts.as_str(), "bad_signature");
        tracing::warn!(%source, "refused an alert without the right bearer token");
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    // Verified senders spend their own budget, per address: forged alerts cannot.
    if let (Some(Extension(b)), Some(Extension(ClientAddr(ip)))) = (&budget, &client)
        && let Err(wait) = b.take(None, &ip.to_string())
    {
        return crate::platform::too_many_requests(
            wait,
            "too many alerts from this sender; Alertmanager will retry",
        );
    }
    if app.health.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Deckhand is restarting; Alertmanager will retry",
        )
            .into_response();
    }
    let parsed = match parse(&source, &body) {
        Ok(p) => p,
        Err(e @ AlertError::UnknownSource(_)) => {
            return (StatusCode::NOT_FOUND, e.to_string()).into_response();
        }
        Err(e) => {
            crate::support::metrics::command(Platform::Alerts.as_str(), "refused");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    match ingest(&app, parsed).await {
        Ok(n) => {
            crate::support::metrics::command(Platform::Alerts.as_str(), "accepted");
            axum::Json(json!({"accepted": n})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot record alerts");
            // 5xx makes Alertmanager retry: nothing is lost.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the alert right now; retry",
            )
                .into_response()
        }
    }
}
