//! Slack Socket Mode: no public URL. With `SLACK_APP_TOKEN` set, Deckhand asks
//! `apps.connections.open` for a WebSocket URL and keeps one socket open to it; slash
//! commands and button clicks arrive as envelopes and go through the very same
//! [`answer_command`](super::answer_command) / [`answer_click`](super::answer_click) path
//! as the signed HTTP endpoints. A command's envelope is acknowledged with its ephemeral
//! answer as the payload (within the intake's 2.5 s budget, else "slow to confirm").
//!
//! Written on tokio-tungstenite rather than slack-morphism's listener: that listener's
//! `SlackCommandEvent` drops `api_app_id` and `enterprise_id` (so `[slack] app_id` and
//! Enterprise Grid checks could not be the HTTP ones), retries a failed connect every 30 s
//! flat without jitter, and tells its user neither connects nor disconnects, which `/ready`
//! and `/metrics` need.
//!
//! The socket is authenticated by the app token (sent only in the `Authorization` header of
//! `apps.connections.open`); the socket URL carries a one-time ticket and is never logged.
//! A redelivered envelope (`retry_attempt` > 0) is handled like the first: the intake's
//! `slack:<trigger_id>` request id makes it the same job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::binding::Origin;
use super::payload::{BlockActions, SlashCommand};
use super::render::escape;
use crate::app::App;
use crate::domain::platform::Platform;
use crate::domain::time::now_ms;
use crate::support::backoff::{backoff, jitter};
use crate::support::runner::CancelToken;

/// Send a ping this often; a socket silent for [`SILENT`] is dead.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENT: Duration = Duration::from_secs(30);

/// One envelope as Slack sends it.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_attempt: u32,
}

/// Why a connection ended.
enum End {
    /// Deckhand is stopping.
    Stopped,
    /// Slack asked us to go (`disconnect` with this reason): reconnect at once.
    Asked(String),
    /// An error or a silent socket: reconnect with backoff.
    Failed(&'static str, String),
}

/// Keep a Socket Mode connection until `stop`, reconnecting with backoff and jitter.
pub async fn run(app: Arc<App>, stop: CancelToken) {
    let Some(token) = app.settings.secrets.slack_app_token.clone() else {
        return;
    };
    let health = &app.health;
    health
        .slack_socket_configured
        .store(true, Ordering::Relaxed);
    health
        .slack_socket_down_since
        .store(now_ms(), Ordering::Relaxed);
    let mut failures: u32 = 0;
    loop {
        // `connect` watches `stop` itself, so that a stop closes the socket cleanly.
        let end = connect(&app, token.expose_secret(), &stop).await;
        // Down since 0: the connection got its `hello`, so a failure now is a first one
        // (a socket that lived for hours waits 1 s, not what an old outage had grown to).
        let was_up = health.slack_socket_down_since.load(Ordering::Relaxed) == 0;
        if was_up {
            failures = 0;
            health
                .slack_socket_down_since
                .store(now_ms(), Ordering::Relaxed);
        }
        let wait = match end {
            End::Stopped => break,
            End::Asked(reason) => {
                tracing::info!(%reason, "Slack asked to reconnect the socket");
                crate::support::metrics::socket_disconnected(Platform::Slack.as_str(), &reason);
                failures = 0;
                backoff(0, jitter())
            }
            End::Failed(reason, detail) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, jitter());
                tracing::warn!(
                    reason,
                    error = %detail,
                    retry_in_ms = wait.as_millis() as u64,
                    "Slack socket lost"
                );
                crate::support::metrics::socket_disconnected(Platform::Slack.as_str(), reason);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("Slack socket closed");
}

/// `apps.connections.open`: the socket URL for this app token.
async fn open_url(app: &App, token: &str) -> Result<String, String> {
    let base = app.settings.slack_api_url.trim_end_matches('/');
    let r = app
        .http
        .post(format!("{base}/apps.connections.open"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            format!(
                "apps.connections.open: {}",
                crate::support::net::net_reason(&e)
            )
        })?;
    let status = r.status();
    let v: Value = r
        .json()
        .await
        .map_err(|_| format!("apps.connections.open: HTTP {status}, not JSON"))?;
    match v["url"].as_str() {
        Some(u) if v["ok"] == true => Ok(u.to_owned()),
        _ => Err(format!(
            "apps.connections.open: HTTP {status}, {}",
            v["error"].as_str().unwrap_or("no url")
        )),
    }
}

/// One connection: open, read envelopes and answer them until it ends.
async fn connect(app: &Arc<App>, token: &str, stop: &CancelToken) -> End {
    let opened = async {
        let url = open_url(app, token)
            .await
            .map_err(|e| End::Failed("open_failed", e))?;
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| End::Failed("connect_failed", e.to_string()))
    };
    let (ws, _) = tokio::select! {
        _ = stop.cancelled() => return End::Stopped,
        r = opened => match r {
            Ok(c) => c,
            Err(end) => return end,
        },
    };
    let (mut write, mut read) = ws.split();
    // Answers are computed concurrently and come back here to be written in turn.
    let (acks, mut to_send) = mpsc::unbounded_channel::<String>();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = write.send(Message::Close(None)).await;
                return End::Stopped;
            }
            Some(ack) = to_send.recv() => {
                if let Err(e) = write.send(Message::text(ack)).await {
                    return End::Failed("error", e.to_string());
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > SILENT {
                    return End::Failed("silent", format!("nothing heard for {} s", SILENT.as_secs()));
                }
                if let Err(e) = write.send(Message::Ping(Vec::new().into())).await {
                    return End::Failed("error", e.to_string());
                }
            }
            m = read.next() => {
                heard = tokio::time::Instant::now();
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        return End::Failed("closed", "the socket was closed".into());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return End::Failed("error", e.to_string()),
                };
                let env: Envelope = match serde_json::from_str(text.as_str()) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignored a malformed Socket Mode frame");
                        continue;
                    }
                };
                match env.kind.as_str() {
                    "hello" => {
                        app.health.slack_socket_down_since.store(0, Ordering::Relaxed);
                        crate::support::metrics::socket_connected(Platform::Slack.as_str());
                        tracing::info!("Slack socket connected");
                    }
                    "disconnect" => {
                        return End::Asked(env.reason.unwrap_or_else(|| "unspecified".into()));
                    }
                    _ => {
                        let app = app.clone();
                        let acks = acks.clone();
                        tokio::spawn(async move {
                            if let Some(ack) = answer(app, env).await {
                                let _ = acks.send(ack.to_string());
                            }
                        });
                    }
                }
            }
        }
    }
}

/// The acknowledgement of one envelope, or `None` for one without an id.
async fn answer(app: Arc<App>, env: Envelope) -> Option<Value> {
    let id = env.envelope_id?;
    tracing::debug!(
        kind = %env.kind,
        retry_attempt = env.retry_attempt,
        "Socket Mode envelope"
    );
    let text = |t: &str| json!({"response_type": "ephemeral", "text": escape(t)});
    let payload = if app.health.draining() {
        Some(text("Deckhand is restarting; try again in a minute"))
    } else {
        match env.kind.as_str() {
            "slash_commands" => Some(match serde_json::from_value::<SlashCommand>(env.payload) {
                // Envelopes spend the budget signed requests spend (per person, per team).
                Ok(cmd) => match super::over_budget(&app, &Origin::of_command(&cmd)) {
                    Some(wait) => text(&super::slow_down(wait)),
                    None => text(&super::answer_command(app, cmd).await),
                },
                Err(e) => text(&format!("✖ malformed slash command: {e}")),
            }),
            "interactive" => {
                match serde_json::from_value::<BlockActions>(env.payload) {
                    // Acknowledged at once: the clicker's answer goes to the click's
                    // response_url anyway, and the intake may take most of Slack's 3 s.
                    Ok(p) => {
                        tokio::spawn(async move {
                            if let Some(wait) = super::over_budget(&app, &Origin::of_click(&p)) {
                                if let Some(url) = &p.response_url {
                                    let _ = super::post_response_url(
                                        &app,
                                        url,
                                        &super::slow_down(wait),
                                    )
                                    .await;
                                }
                                return;
                            }
                            if let Err(e) = super::answer_click(app, p).await {
                                tracing::warn!(error = e, "refused a Socket Mode click");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "malformed Socket Mode interaction"),
                }
                None
            }
            // Events API and anything newer: acknowledged, not acted on.
            _ => None,
        }
    };
    Some(match payload {
        Some(p) => json!({"envelope_id": id, "payload": p}),
        None => json!({"envelope_id": id}),
    })
}
