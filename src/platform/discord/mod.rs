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
mod gateway;
mod interaction;
mod register;
mod render;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{ack_or_defer, too_many_requests};
use crate::app::App;
use crate::intake::Invocation;
use crate::intake::policy::Identity;
use crate::support::ratelimit::SignedBudget;

use crate::domain::platform::Platform;
pub use client::DiscordClient;
pub use gateway::run as run_gateway;
pub use interaction::{
    CommandOption, Data, Interaction, Member, User, check_options, options_to_args, parse,
};
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

/// An ephemeral message answer (interaction response type 4).
fn message(text: &str) -> Value {
    json!({"type": 4, "data": {
        "content": render::content(text), "flags": EPHEMERAL, "allowed_mentions": render::no_mentions(),
    }})
}

/// What an interaction is answered, over HTTP and over the gateway alike.
pub(crate) enum Answer {
    /// The interaction response: the HTTP body, or the gateway's callback.
    Reply(Value),
    /// Malformed: 400 over HTTP; over the gateway, not answered.
    Bad(&'static str),
    /// Deckhand is draining: 503 over HTTP, a message over the gateway.
    Draining,
    /// The sender is over the signed budget for this long.
    OverBudget(std::time::Duration),
}

const RESTARTING: &str = "Deckhand is restarting; try again in a minute";
const SLOW_DOWN: &str = "too many requests from you; slow down";

async fn interactions(
    State(app): State<Arc<App>>,
    budget: Option<Extension<Arc<SignedBudget>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let i = match signed_interaction(&app, &headers, &body) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match answer(app, &i, budget.as_ref().map(|b| &*b.0)).await {
        Answer::Reply(v) => axum::Json(v).into_response(),
        Answer::Bad(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        Answer::Draining => (StatusCode::SERVICE_UNAVAILABLE, RESTARTING).into_response(),
        Answer::OverBudget(wait) => too_many_requests(wait, SLOW_DOWN),
    }
}

/// Answer one interaction: PING, or a command or click through the intake, spending
/// `budget` (the signed budget of `/discord`, which the gateway spends too).
pub(crate) async fn answer(
    app: Arc<App>,
    i: &Interaction,
    budget: Option<&SignedBudget>,
) -> Answer {
    if i.kind == 1 {
        return Answer::Reply(json!({"type": 1}));
    }
    if app.health.draining() {
        return Answer::Draining;
    }
    // The id is the idempotency key: without one, two requests would be one job.
    if i.id.is_empty() {
        return Answer::Bad("interaction without an id");
    }
    let Some((user, roles)) = who(i) else {
        return Answer::Bad("interaction without a user");
    };
    if let Some(b) = budget
        && let Err(wait) = b.take(i.guild_id.as_deref(), &user)
    {
        return Answer::OverBudget(wait);
    }
    let app_id = app.settings.discord_application_id.clone();
    let token = i.token.clone();
    let late = move |app: Arc<App>, text: String| async move {
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
    };
    let inv = Invocation {
        platform: Platform::Discord.as_str().into(),
        identity: Identity::Discord {
            user: user.clone(),
            roles,
        },
        actor: format!("{}:{user}", Platform::Discord.as_str()),
        channel: i.channel_id.clone(),
        command: String::new(),
        args: Vec::new(),
        request_id: Some(format!("{}:{}", Platform::Discord.as_str(), i.id)),
        reply_to: i.token.clone(),
    };
    if let Err(reason) = served(&app, i) {
        let command = i
            .data
            .as_ref()
            .and_then(|d| d.name.clone().or(d.custom_id.clone()))
            .unwrap_or_default();
        let inv = Invocation { command, ..inv };
        return Answer::Reply(message(
            &ack_or_defer(app.clone(), inv, Some(reason), late).await,
        ));
    }
    let (command, args) = match command(&app, i).await {
        Ok(c) => c,
        Err(Refused::Bad(m)) => return Answer::Bad(m),
        Err(Refused::Say(m)) => return Answer::Reply(message(&m)),
    };
    let inv = Invocation {
        command,
        args,
        ..inv
    };
    Answer::Reply(message(&ack_or_defer(app.clone(), inv, None, late).await))
}

/// Who asks: the member (with their roles) in a guild, the user in a direct message.
fn who(i: &Interaction) -> Option<(String, Vec<String>)> {
    match (&i.member, &i.user) {
        (Some(m), _) => Some((m.user.id.clone(), m.roles.clone())),
        (None, Some(u)) => Some((u.id.clone(), Vec::new())),
        _ => None,
    }
}

/// `Err(refusal)` when the interaction comes from a guild `[discord] allowed_guilds` does
/// not list; with the list set, a direct message (no guild) is from elsewhere too.
fn served(app: &App, i: &Interaction) -> Result<(), String> {
    let allowed = &app.settings.config.discord.allowed_guilds;
    match &i.guild_id {
        _ if allowed.is_empty() => Ok(()),
        Some(g) if allowed.contains(g) => Ok(()),
        Some(g) => Err(format!(
            "refused: this Deckhand does not serve the Discord server {g}; nothing was done"
        )),
        None => Err(
            "refused: this Deckhand takes commands in its Discord servers only, not in direct messages; nothing was done"
                .into(),
        ),
    }
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
    Say(String),
}

/// What a slash command (type 2) or a button click (type 3) asks for.
async fn command(app: &App, i: &Interaction) -> Result<(String, Vec<String>), Refused> {
    let Some(data) = &i.data else {
        return Err(Refused::Bad("interaction without data"));
    };
    match i.kind {
        2 => {
            let name = data.name.clone().unwrap_or_default();
            check_options(&app.catalog, &name, &data.options)
                .map_err(|e| Refused::Say(format!("✖ {e}")))?;
            let args = options_to_args(&app.catalog, &name, &data.options);
            Ok((name, args))
        }
        3 => {
            let custom = data.custom_id.clone().unwrap_or_default();
            let (action, value) = custom.split_once(':').unwrap_or((&custom, ""));
            super::button_command(app, action, Some(value))
                .await
                .ok_or_else(|| Refused::Say("✖ This button is not known to Deckhand.".into()))
        }
        _ => Err(Refused::Bad("unsupported interaction type")),
    }
}
