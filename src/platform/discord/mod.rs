//! Discord: signed interactions in, one live message per job out.
//!
//! Every request's Ed25519 signature (over timestamp + raw body, with the application's
//! public key) and the timestamp's age are checked before anything reads it; Discord probes
//! endpoints with bad signatures and removes those that accept them. Commands are answered
//! at once with an ephemeral message; the job then gets one channel message (bot token)
//! edited as it moves, ending in an embed report. The REST API is called with reqwest: the
//! handful of routes we use do not justify serenity, whose proxy setting is ignored while
//! its rate limiter is on and which logs interaction tokens at INFO.
//!
//! This file owns the interactions route; the signature check is in `verify`, the payload
//! and its options in `interaction`, delivery in `client` (charts in `chart`), embeds in
//! `render` and command registration in `register`.

mod chart;
mod client;
mod interaction;
mod register;
mod render;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::ack_or_defer;
use crate::app::App;
use crate::intake::Invocation;
use crate::intake::policy::Identity;

use crate::domain::platform::Platform;
pub use client::DiscordClient;
pub use interaction::{CommandOption, Data, Interaction, Member, User, options_to_args, parse};
pub use register::{register, registration};
pub use render::render;
pub use verify::{SigError, public_key, verify};

pub const MAX_BODY: usize = 64 * 1024;
const EPHEMERAL: u64 = 64;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/discord/interactions", post(interactions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn message(text: &str) -> Response {
    axum::Json(json!({"type": 4, "data": {
        "content": render::content(text), "flags": EPHEMERAL, "allowed_mentions": render::no_mentions(),
    }}))
    .into_response()
}

async fn interactions(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let i = match signed_interaction(&app, &headers, &body) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    if i.kind == 1 {
        return axum::Json(json!({"type": 1})).into_response();
    }
    if app.health.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Deckhand is restarting; try again in a minute",
        )
            .into_response();
    }
    let inv = match invocation(&app, &i).await {
        Ok(inv) => inv,
        Err(r) => return r.into_response(),
    };
    let app_id = app.settings.discord_application_id.clone();
    let token = i.token.clone();
    let text = ack_or_defer(app.clone(), inv, move |app, text| async move {
        if let (Some(a), Some(t)) = (app_id, token) {
            let url = format!(
                "{}/webhooks/{a}/{t}",
                app.settings.discord_api_url.trim_end_matches('/')
            );
            let _ = app
                .http
                .post(url)
                .json(&json!({
                    "content": render::content(&text), "flags": EPHEMERAL,
                    "allowed_mentions": render::no_mentions(),
                }))
                .send()
                .await;
        }
    })
    .await;
    message(&text)
}

/// The interaction, once Discord is configured here and the request is signed by it.
fn signed_interaction(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Interaction, (StatusCode, String)> {
    let Some(key) = app.settings.discord_public_key.as_deref() else {
        return Err((
            StatusCode::NOT_FOUND,
            "Discord is not configured on this Deckhand (DISCORD_PUBLIC_KEY is unset)".into(),
        ));
    };
    let key = public_key(key).map_err(|e| {
        tracing::error!(error = e, "cannot check Discord signatures");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Discord is misconfigured".into(),
        )
    })?;
    if let Err(e) = verify(&key, headers, body, crate::domain::time::now_ms() / 1000) {
        crate::support::metrics::command(Platform::Discord.as_str(), "bad_signature");
        tracing::warn!(reason = ?e, "refused a Discord request with a bad signature");
        return Err((StatusCode::UNAUTHORIZED, "invalid request signature".into()));
    }
    parse(body).map_err(|e| (StatusCode::BAD_REQUEST, e))
}

/// Why an interaction does not become a command.
enum Refused {
    /// A malformed request: 400.
    Bad(&'static str),
    /// Answered with an ephemeral message.
    Say(&'static str),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Bad(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            Refused::Say(m) => message(m),
        }
    }
}

/// What a slash command (type 2) or a button click (type 3) asks for, and who asks.
async fn invocation(app: &App, i: &Interaction) -> Result<Invocation, Refused> {
    let (user, roles) = match (&i.member, &i.user) {
        (Some(m), _) => (m.user.id.clone(), m.roles.clone()),
        (None, Some(u)) => (u.id.clone(), Vec::new()),
        _ => return Err(Refused::Bad("interaction without a user")),
    };
    let Some(data) = &i.data else {
        return Err(Refused::Bad("interaction without data"));
    };
    let (command, args) = match i.kind {
        2 => {
            let name = data.name.clone().unwrap_or_default();
            (
                name.clone(),
                options_to_args(&app.catalog, &name, &data.options),
            )
        }
        3 => {
            let custom = data.custom_id.clone().unwrap_or_default();
            let (action, value) = custom.split_once(':').unwrap_or((&custom, ""));
            match super::button_command(app, action, Some(value)).await {
                Some(x) => x,
                None => return Err(Refused::Say("✖ This button is not known to Deckhand.")),
            }
        }
        _ => return Err(Refused::Bad("unsupported interaction type")),
    };
    Ok(Invocation {
        platform: Platform::Discord.as_str().into(),
        identity: Identity::Discord {
            user: user.clone(),
            roles,
        },
        actor: format!("discord:{user}"),
        channel: i.channel_id.clone(),
        command,
        args,
        request_id: Some(format!("discord:{}", i.id)),
        reply_to: i.token.clone(),
    })
}
