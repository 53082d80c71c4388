//! The Discord gateway: no public URL. With `DISCORD_BOT_TOKEN` set and no
//! `DISCORD_PUBLIC_KEY`, one replica holds a gateway session (v10, JSON) and takes
//! `INTERACTION_CREATE` dispatches through the very same [`answer`](super::answer) as the
//! signed HTTP endpoint (same parse, role checks, idempotency key `discord:<id>` and
//! answer), sending the answer to `POST /interactions/{id}/{token}/callback`.
//!
//! Written on the tokio-tungstenite already in the tree (no crate added). Spiked first:
//! twilight-gateway 0.18 (default features off) against a loopback fake did IDENTIFY, op 7
//! → RESUME at the resume URL with the last sequence; but it adds 15 crates and a second
//! WebSocket stack (tokio-websockets), ~160 s of cold debug build at -j1 (twilight-model
//! alone 95 s), panics in `ConfigBuilder::new` unless a rustls provider is installed,
//! reconnects after 2^n s without jitter, and puts the whole raw event (an interaction's
//! token included) in the text of its deserialize error; and its typed model would be a
//! second parse beside the HTTP path's. serenity: its HTTP client ignores a fake's address
//! under its rate limiter and logs interaction tokens at INFO (see CRATES.md).
//!
//! Discord sends every event of a shard to each session on it, so the session is held by
//! one replica: the one holding the `leases` row named after the application, renewed every
//! [`RENEW_EVERY`]; the others stand by and take the lease when it expires. A holder that
//! cannot renew in time drops its session before its lease runs out.
//!
//! The bot token is sent only in IDENTIFY and RESUME frames and the `Authorization` header
//! of `GET /gateway/bot`; interaction tokens only in callback URLs. Neither is logged:
//! tungstenite's frame traces are filtered out in `cli::init_logging`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Answer, RESTARTING, SLOW_DOWN, message};
use crate::app::App;
use crate::domain::platform::Platform;
use crate::domain::time::now_ms;
use crate::support::backoff::{MAX_BACKOFF, backoff, jitter};
use crate::support::runner::CancelToken;

/// How long a lease lasts without renewal, and how often the holder renews it. A standby
/// looks every [`STANDBY_POLL`], so it takes over at most `LEASE_FOR + STANDBY_POLL` after
/// the holder's last renewal (plus a connect).
const LEASE_FOR: Duration = Duration::from_secs(8);
const RENEW_EVERY: Duration = Duration::from_secs(2);
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// HELLO must come this soon after connecting.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// One gateway frame.
#[derive(Debug, Deserialize)]
struct Frame {
    op: u8,
    #[serde(default)]
    d: Value,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<String>,
}

/// What a RESUME needs: the session, where to resume it, and the last sequence seen.
#[derive(Default)]
struct Session {
    id: Option<String>,
    resume_url: Option<String>,
    seq: Option<u64>,
    /// Whether the last connection came up (READY or RESUMED): failures count afresh.
    came_up: bool,
}

/// Why a connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Deckhand is stopping.
    Stopped,
    /// Discord asked us to reconnect (op 7, op 9 with d=true): resume at once.
    Resume(&'static str),
    /// The session cannot be resumed (op 9 with d=false, close 4007/4009): identify anew.
    Identify(&'static str),
    /// An error, a close or a missed heartbeat ACK: resume after a backoff.
    Failed(&'static str, String),
    /// Discord refused the bot (bad token, intents, shard): retrying soon cannot help.
    Refused(&'static str, String),
}

/// Hold the gateway session while this replica holds its lease, until `stop`.
pub async fn run(app: Arc<App>, stop: CancelToken) {
    let Some(token) = app.settings.secrets.discord_bot_token.clone() else {
        return;
    };
    // With a public key Discord sends interactions to the endpoint URL, never the gateway.
    if app.settings.discord_public_key.is_some() {
        return;
    }
    let health = &app.health;
    health
        .discord_gateway_configured
        .store(true, Ordering::Relaxed);
    let lease = lease_name(&app);
    let holder = app.worker_id.clone();
    loop {
        health
            .discord_gateway_holder
            .store(false, Ordering::Relaxed);
        if !stand_by(&app, &lease, &holder, &stop).await {
            break;
        }
        tracing::info!("this replica holds the Discord gateway session");
        health
            .discord_gateway_down_since
            .store(now_ms(), Ordering::Relaxed);
        health.discord_gateway_holder.store(true, Ordering::Relaxed);
        let ended = tokio::select! {
            _ = sessions(&app, token.expose_secret(), &stop) => None,
            lost = keep_lease(&app, &lease, &holder) => Some(lost),
        };
        match ended {
            None => {
                if let Err(e) = app.db.release_lease(&lease, &holder).await {
                    tracing::warn!(error = %e, "could not release the Discord gateway lease");
                }
                break;
            }
            Some(why) => {
                tracing::warn!(reason = why, "gave up the Discord gateway session");
                crate::support::metrics::socket_disconnected(Platform::Discord.as_str(), why);
            }
        }
    }
    health
        .discord_gateway_holder
        .store(false, Ordering::Relaxed);
    tracing::info!("Discord gateway closed");
}

/// The lease's name: one session per bot, so per application where it is known.
fn lease_name(app: &App) -> String {
    format!(
        "discord-gateway:{}",
        app.settings
            .discord_application_id
            .as_deref()
            .unwrap_or("default")
    )
}

/// Wait until this replica holds the lease (`true`), or `stop` (`false`).
async fn stand_by(app: &App, lease: &str, holder: &str, stop: &CancelToken) -> bool {
    let mut said = false;
    loop {
        let now = now_ms();
        match app
            .db
            .take_lease(lease, holder, now, now + LEASE_FOR.as_millis() as i64)
            .await
        {
            Ok(true) => return true,
            Ok(false) if !said => {
                said = true;
                tracing::info!("standing by: another replica holds the Discord gateway session");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the Discord gateway lease"),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(STANDBY_POLL.mul_f64(0.75 + 0.25 * jitter())) => {}
        }
    }
}

/// Renew the lease every [`RENEW_EVERY`]; returns why it is lost: another replica holds
/// it, or it could not be renewed before it would run out.
async fn keep_lease(app: &App, lease: &str, holder: &str) -> &'static str {
    let mut expires = Instant::now() + LEASE_FOR;
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let started = Instant::now();
        let now = now_ms();
        let until = now + LEASE_FOR.as_millis() as i64;
        match tokio::time::timeout(RENEW_EVERY, app.db.take_lease(lease, holder, now, until)).await
        {
            Ok(Ok(true)) => expires = started + LEASE_FOR,
            Ok(Ok(false)) => return "lease_taken",
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the Discord gateway lease"),
            Err(_) => tracing::warn!("renewing the Discord gateway lease timed out"),
        }
        // Another try would end after the lease: stop while it is still ours.
        if Instant::now() + RENEW_EVERY * 2 >= expires {
            return "lease_not_renewed";
        }
    }
}

/// Keep a session, reconnecting (resuming where it can) with backoff and jitter.
async fn sessions(app: &Arc<App>, token: &str, stop: &CancelToken) {
    let health = &app.health;
    let mut session = Session::default();
    let mut failures: u32 = 0;
    loop {
        session.came_up = false;
        let end = connect(app, token, &mut session, stop).await;
        if session.came_up {
            failures = 0;
        }
        if health.discord_gateway_down_since.load(Ordering::Relaxed) == 0 {
            health
                .discord_gateway_down_since
                .store(now_ms(), Ordering::Relaxed);
        }
        let wait = match end {
            End::Stopped => return,
            End::Resume(reason) => {
                tracing::info!(reason, "Discord asked to reconnect the gateway");
                failures = 0;
                backoff(0, jitter())
            }
            End::Identify(reason) => {
                tracing::info!(
                    reason,
                    "the Discord gateway session ended; identifying anew"
                );
                session = Session::default();
                failures = 0;
                // Discord asks for a wait of 1 to 5 s before the next IDENTIFY.
                Duration::from_secs(1).mul_f64(1.0 + 4.0 * jitter())
            }
            End::Failed(reason, ref detail) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, jitter());
                tracing::warn!(reason, error = %detail, retry_in_ms = wait.as_millis() as u64, "Discord gateway lost");
                wait
            }
            End::Refused(reason, ref detail) => {
                tracing::error!(reason, error = %detail, "Discord refused the gateway session; check DISCORD_BOT_TOKEN");
                session = Session::default();
                failures = failures.saturating_add(1);
                MAX_BACKOFF
            }
        };
        let reason = match &end {
            End::Resume(r) | End::Identify(r) | End::Failed(r, _) | End::Refused(r, _) => r,
            End::Stopped => "stopped",
        };
        crate::support::metrics::socket_disconnected(Platform::Discord.as_str(), reason);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `GET /gateway/bot`: where to connect.
async fn gateway_url(app: &App, token: &str) -> Result<String, String> {
    let base = app.settings.discord_api_url.trim_end_matches('/');
    let r = app
        .http
        .get(format!("{base}/gateway/bot"))
        .header("authorization", format!("Bot {token}"))
        .send()
        .await
        .map_err(|e| format!("GET /gateway/bot: {}", crate::support::net::net_reason(&e)))?;
    let status = r.status();
    let v: Value = r
        .json()
        .await
        .map_err(|_| format!("GET /gateway/bot: HTTP {status}, not JSON"))?;
    match v["url"].as_str() {
        Some(u) if status.is_success() => Ok(u.to_owned()),
        _ => Err(format!(
            "GET /gateway/bot: HTTP {status}, {}",
            v["message"].as_str().unwrap_or("no url")
        )),
    }
}

/// The URL to open: the gateway's, with the version and encoding Deckhand speaks.
fn versioned(url: &str) -> String {
    if url.contains('?') {
        url.to_owned()
    } else {
        format!("{}/?v=10&encoding=json", url.trim_end_matches('/'))
    }
}

/// The frame that starts (IDENTIFY, no privileged intents) or resumes a session.
fn opening(token: &str, s: &Session) -> Value {
    match (&s.id, s.resume_url.is_some()) {
        (Some(id), true) => json!({"op": 6, "d": {"token": token, "session_id": id, "seq": s.seq}}),
        _ => json!({"op": 2, "d": {
            "token": token,
            "intents": 0,
            "properties": {"os": std::env::consts::OS, "browser": "deckhand", "device": "deckhand"},
        }}),
    }
}

/// What a close code from Discord means for the next connection.
fn closed(code: u16) -> End {
    match code {
        4004 | 4010 | 4011 | 4012 | 4013 | 4014 => {
            End::Refused("refused", format!("closed with code {code}"))
        }
        4007 | 4009 => End::Identify("session_expired"),
        _ => End::Failed("closed", format!("closed with code {code}")),
    }
}

/// One connection: open, HELLO, IDENTIFY or RESUME, then heartbeats and dispatches.
async fn connect(app: &Arc<App>, token: &str, s: &mut Session, stop: &CancelToken) -> End {
    let resuming = s.id.is_some() && s.resume_url.is_some();
    let opened = async {
        let url = match (&s.resume_url, resuming) {
            (Some(u), true) => u.clone(),
            _ => gateway_url(app, token)
                .await
                .map_err(|e| End::Failed("open_failed", e))?,
        };
        match tokio::time::timeout(
            HELLO_WITHIN,
            tokio_tungstenite::connect_async(versioned(&url)),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(End::Failed("connect_failed", e.to_string())),
            Err(_) => Err(End::Failed("connect_failed", "timed out".into())),
        }
    };
    let ws = tokio::select! {
        _ = stop.cancelled() => return End::Stopped,
        r = opened => match r {
            Ok(ws) => ws,
            Err(end) => return end,
        },
    };
    let (mut write, mut read) = ws.split();
    // HELLO comes first and says how often to beat.
    let hello = tokio::select! {
        _ = stop.cancelled() => return End::Stopped,
        f = tokio::time::timeout(HELLO_WITHIN, read.next()) => f,
    };
    let interval = match hello {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<Frame>(t.as_str()) {
            Ok(f) if f.op == 10 => f.d["heartbeat_interval"].as_u64().unwrap_or(41_250),
            _ => return End::Failed("error", "the first frame was not HELLO".into()),
        },
        Ok(Some(Ok(Message::Close(c)))) => return closed(c.map_or(1000, |c| c.code.into())),
        Ok(_) => return End::Failed("error", "no HELLO".into()),
        Err(_) => return End::Failed("silent", "no HELLO within 10 s".into()),
    };
    let interval = Duration::from_millis(interval.max(100));
    if let Err(e) = write
        .send(Message::text(opening(token, s).to_string()))
        .await
    {
        return End::Failed("error", e.to_string());
    }
    // Callback answers are computed concurrently; nothing comes back on the socket.
    let (beats, mut beat_now) = mpsc::unbounded_channel::<()>();
    let mut beat = tokio::time::interval_at(Instant::now() + interval.mul_f64(jitter()), interval);
    let mut acked = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = write.send(Message::Close(None)).await;
                return End::Stopped;
            }
            _ = beat.tick() => {
                if !acked {
                    // A dead connection: close with a non-1000 code so the session stays resumable.
                    let _ = write.send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: 4000.into(),
                        reason: "heartbeat ACK missed".into(),
                    }))).await;
                    return End::Failed("missed_ack", "no heartbeat ACK".into());
                }
                acked = false;
                if let Err(e) = write.send(Message::text(json!({"op": 1, "d": s.seq}).to_string())).await {
                    return End::Failed("error", e.to_string());
                }
            }
            Some(()) = beat_now.recv() => {
                if let Err(e) = write.send(Message::text(json!({"op": 1, "d": s.seq}).to_string())).await {
                    return End::Failed("error", e.to_string());
                }
            }
            m = read.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => return closed(c.map_or(1000, |c| c.code.into())),
                    None => return End::Failed("closed", "the socket was closed".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return End::Failed("error", e.to_string()),
                };
                let f: Frame = match serde_json::from_str(text.as_str()) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignored a malformed Discord gateway frame");
                        continue;
                    }
                };
                match f.op {
                    0 => dispatch(app, s, f),
                    1 => { let _ = beats.send(()); }
                    7 => return End::Resume("reconnect"),
                    9 if f.d == Value::Bool(true) => return End::Resume("invalid_session_resumable"),
                    9 => return End::Identify("invalid_session"),
                    11 => acked = true,
                    op => tracing::debug!(op, "ignored a Discord gateway frame"),
                }
            }
        }
    }
}

/// A dispatch (op 0): note its sequence; READY and RESUMED bring the session up;
/// interactions are answered concurrently.
fn dispatch(app: &Arc<App>, s: &mut Session, f: Frame) {
    if let Some(n) = f.s {
        s.seq = Some(n);
    }
    let event = f.t.as_deref().unwrap_or("");
    crate::support::metrics::gateway_dispatch(event);
    tracing::debug!(event, seq = f.s, "Discord gateway dispatch");
    match event {
        "READY" => {
            s.id = f.d["session_id"].as_str().map(str::to_owned);
            s.resume_url = f.d["resume_gateway_url"].as_str().map(str::to_owned);
            s.came_up = true;
            up(app, "identified");
        }
        "RESUMED" => {
            s.came_up = true;
            crate::support::metrics::gateway_resumed();
            up(app, "resumed");
        }
        "INTERACTION_CREATE" => {
            tokio::spawn(interaction(app.clone(), f.d));
        }
        _ => {}
    }
}

fn up(app: &App, how: &'static str) {
    app.health
        .discord_gateway_down_since
        .store(0, Ordering::Relaxed);
    crate::support::metrics::socket_connected(Platform::Discord.as_str());
    tracing::info!(how, "Discord gateway connected");
}

/// Answer one `INTERACTION_CREATE` through the interaction callback.
async fn interaction(app: Arc<App>, d: Value) {
    let i = match serde_json::to_vec(&d)
        .map_err(|e| e.to_string())
        .and_then(|raw| super::parse(&raw))
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = e, "ignored a malformed gateway interaction");
            return;
        }
    };
    let body = match super::answer(app.clone(), &i, Some(&app.budgets.discord)).await {
        Answer::Reply(v) => v,
        Answer::Bad(why) => {
            tracing::warn!(reason = why, "ignored a gateway interaction");
            return;
        }
        Answer::Draining => message(RESTARTING),
        Answer::OverBudget(wait) => message(&format!(
            "✖ {SLOW_DOWN} (try again in {} s)",
            wait.as_secs().max(1)
        )),
    };
    let Some(token) = &i.token else {
        tracing::warn!("a gateway interaction without a token cannot be answered");
        return;
    };
    let url = format!(
        "{}/interactions/{}/{token}/callback",
        app.settings.discord_api_url.trim_end_matches('/'),
        i.id
    );
    match app.http.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "Discord refused an interaction callback"
        ),
        Err(e) => tracing::warn!(
            error = crate::support::net::net_reason(&e),
            "could not send an interaction callback"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_with_a_resume_url_resumes_else_identifies() {
        let mut s = Session::default();
        let f = opening("tok", &s);
        assert_eq!(f["op"], 2);
        assert_eq!(f["d"]["intents"], 0);
        s.id = Some("sess".into());
        s.seq = Some(7);
        assert_eq!(opening("tok", &s)["op"], 2, "no resume URL yet");
        s.resume_url = Some("ws://x".into());
        let f = opening("tok", &s);
        assert_eq!(f["op"], 6);
        assert_eq!(f["d"]["session_id"], "sess");
        assert_eq!(f["d"]["seq"], 7);
    }

    #[test]
    fn close_codes_decide_resume_identify_or_refusal() {
        assert!(matches!(closed(4004), End::Refused(..)));
        assert!(matches!(closed(4014), End::Refused(..)));
        assert_eq!(closed(4009), End::Identify("session_expired"));
        assert!(matches!(closed(1006), End::Failed("closed", _)));
        assert!(matches!(closed(4000), End::Failed("closed", _)));
    }

    #[test]
    fn the_gateway_url_gets_version_and_encoding() {
        assert_eq!(
            versioned("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            versioned("ws://127.0.0.1:9/"),
            "ws://127.0.0.1:9/?v=10&encoding=json"
        );
        assert_eq!(versioned("ws://h/?v=10"), "ws://h/?v=10");
    }
}
