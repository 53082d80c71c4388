//! Slack: signed slash commands and button clicks in, one live message per job out.
//!
//! Requests are checked exactly as Slack specifies (HMAC-SHA256 over `v0:{ts}:{body}` with
//! the signing secret, constant-time compare, at most 5 minutes of clock difference) before
//! anything else reads them. The answer is always an immediate ephemeral acknowledgement;
//! the job then gets one message, posted with `chat.postMessage` and edited with
//! `chat.update` as it moves. We call the Web API with reqwest directly: four methods do
//! not justify slack-morphism's dependency tree and its https-only connector.
//!
//! This file owns the two routes and the gate they share; the signature check is in
//! `verify`, the request bodies in `payload`, where a request comes from and whether it is
//! served (`[slack] allowed_teams`, `app_id`) in `binding`, delivery in `client` (charts in
//! `chart`), Block Kit in `render`, the app manifest in `manifest`, and Socket Mode (the
//! same commands and clicks over an outbound WebSocket, `SLACK_APP_TOKEN`) in `socket`.

mod binding;
mod chart;
mod client;
mod manifest;
mod payload;
mod render;
mod socket;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret;
use serde_json::json;

use super::{ack_or_defer, too_many_requests};
use crate::app::App;
use crate::domain::text::split_args;
use crate::intake::Invocation;
use crate::intake::policy::Identity;
use crate::outbox::DeliveryError;

pub use binding::Origin;
pub use client::SlackClient;
pub use manifest::manifest;
pub use payload::{
    ActionPayload, ActionUser, BlockActions, IdOnly, SlashCommand, Team, parse_command,
    parse_interaction,
};
pub use render::render;
pub use socket::run as run_socket;
pub use verify::{MAX_SKEW_SECS, SigError, signature, verify};

use crate::domain::platform::Platform;
use client::retry_after;

/// Slash-command and interaction bodies are small; anything larger is refused with 413.
pub const MAX_BODY: usize = 16 * 1024;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn now_secs() -> i64 {
    crate::domain::time::now_ms() / 1000
}

/// The gate every Slack request passes: enabled, not draining, correctly signed.
fn gate(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(), (StatusCode, &'static str)> {
    let Some(secret) = &app.settings.secrets.slack_signing_secret else {
        return Err((
            StatusCode::NOT_FOUND,
            "Slack is not configured on this Deckhand (SLACK_SIGNING_SECRET is unset)",
        ));
    };
    if let Err(e) = verify(secret.expose_secret().as_bytes(), headers, body, now_secs()) {
        crate::support::metrics::command(Platform::Slack.as_str(), "bad_signature");
        tracing::warn!(
            reason = e.as_str(),
            "refused a Slack request with a bad signature"
        );
        return Err((StatusCode::UNAUTHORIZED, "invalid Slack signature"));
    }
    if app.health.draining() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "Deckhand is restarting; try again in a minute",
        ));
    }
    Ok(())
}

/// An ephemeral answer; its text is escaped like every Slack `text` (it may quote user text).
fn ephemeral(text: &str) -> Response {
    axum::Json(json!({"response_type": "ephemeral", "text": render::escape(text)})).into_response()
}

/// Spend one of `origin`'s requests from the Slack budget (`[server] rate_limit_*`),
/// which signed requests and Socket Mode envelopes share; over it, how long to wait.
fn over_budget(app: &App, origin: &Origin) -> Option<std::time::Duration> {
    app.budgets
        .slack
        .take(origin.budget_key(), &origin.qualified_user())
        .err()
}

const SLOW_DOWN: &str = "too many requests from you; slow down";

/// Over budget over HTTP: the 429 that says to wait.
fn spend(app: &App, origin: &Origin) -> Option<Response> {
    over_budget(app, origin).map(|wait| too_many_requests(wait, SLOW_DOWN))
}

/// Over budget over the socket, which has no status code: the answer that says to wait.
fn slow_down(wait: std::time::Duration) -> String {
    format!("✖ {SLOW_DOWN} (try again in {} s)", wait.as_secs().max(1))
}

/// An invocation by the person `origin` names.
fn invocation(origin: &Origin, command: String, args: Vec<String>) -> Invocation {
    let user = origin.qualified_user();
    Invocation {
        platform: Platform::Slack.as_str().into(),
        actor: format!("{}:{user}", Platform::Slack.as_str()),
        identity: Identity::Slack { user },
        channel: None,
        command,
        args,
        request_id: None,
        reply_to: None,
    }
}

async fn commands(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = gate(&app, &headers, &body) {
        return r.into_response();
    }
    let cmd = match parse_command(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let origin = Origin::of_command(&cmd);
    if let Some(r) = spend(&app, &origin) {
        return r;
    }
    ephemeral(&answer_command(app, cmd).await)
}

/// A slash command from a verified source (a signed request or the app's own socket),
/// through the binding check and the intake: the ephemeral answer's text.
async fn answer_command(app: Arc<App>, cmd: SlashCommand) -> String {
    let origin = Origin::of_command(&cmd);
    let reply = cmd.response_url.clone();
    let late = move |app: Arc<App>, text: String| async move {
        if let Some(url) = reply {
            let _ = post_response_url(&app, &url, &text).await;
        }
    };
    if let Err(reason) = origin.check(&app.settings.config.slack) {
        let inv = invocation(&origin, cmd.command.clone(), Vec::new());
        return ack_or_defer(app.clone(), inv, Some(reason), late).await;
    }
    let args = match split_args(&cmd.text) {
        Ok(a) => a,
        Err(e) => return format!("✖ {e}"),
    };
    let inv = Invocation {
        channel: cmd.channel_id.clone(),
        request_id: Some(format!("slack:{}", cmd.trigger_id)),
        reply_to: cmd.response_url.clone(),
        ..invocation(&origin, cmd.command.clone(), args)
    };
    ack_or_defer(app.clone(), inv, None, late).await
}

async fn interactions(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = gate(&app, &headers, &body) {
        return r.into_response();
    }
    let p = match parse_interaction(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let origin = Origin::of_click(&p);
    if let Some(r) = spend(&app, &origin) {
        return r;
    }
    match answer_click(app, p).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// A button click from a verified source, through the binding check and the intake; the
/// clicker's answer goes to the click's `response_url`. `Err` for a button we never made.
async fn answer_click(app: Arc<App>, p: BlockActions) -> Result<(), &'static str> {
    if p.kind != "block_actions" {
        return Ok(());
    }
    let Some(action) = p.actions.first() else {
        return Ok(());
    };
    let origin = Origin::of_click(&p);
    let text = if let Err(reason) = origin.check(&app.settings.config.slack) {
        let args = action.value.iter().cloned().collect();
        let inv = invocation(&origin, action.action_id.clone(), args);
        ack_or_defer(app.clone(), inv, Some(reason), |_, _| async {}).await
    } else {
        let Some((command, args)) =
            super::button_command(&app, &action.action_id, action.value.as_deref()).await
        else {
            return Err("unknown button");
        };
        let inv = Invocation {
            channel: p.channel.as_ref().map(|c| c.id.clone()),
            request_id: Some(format!(
                "slack:{}:{}",
                p.trigger_id
                    .as_deref()
                    .or(action.action_ts.as_deref())
                    .unwrap_or("-"),
                action.action_id
            )),
            reply_to: p.response_url.clone(),
            ..invocation(&origin, command, args)
        };
        ack_or_defer(app.clone(), inv, None, |_, _| async {}).await
    };
    // The clicker learns the outcome privately; the job's message shows it to everyone.
    if let Some(url) = p.response_url.clone() {
        let app = app.clone();
        tokio::spawn(async move {
            let _ = post_response_url(&app, &url, &text).await;
        });
    }
    Ok(())
}

async fn post_response_url(app: &App, url: &str, text: &str) -> Result<(), DeliveryError> {
    let r = app
        .http
        .post(url)
        .json(&json!({"response_type": "ephemeral", "replace_original": false, "text": render::escape(text)}))
        .send()
        .await
        .map_err(|e| DeliveryError::Retry {
            after: None,
            reason: format!("response_url: {}", crate::support::net::net_reason(&e)),
        })?;
    super::classify(
        r.status().as_u16(),
        retry_after(r.headers()),
        "response_url",
    )
    .map(|_| ())
}
