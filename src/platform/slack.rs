//! Slack: signed slash commands and button clicks in, one live message per job out.
//!
//! Requests are checked exactly as Slack specifies (HMAC-SHA256 over `v0:{ts}:{body}` with
//! the signing secret, constant-time compare, at most 5 minutes of clock difference) before
//! anything else reads them. The answer is always an immediate ephemeral acknowledgement;
//! the job then gets one message, posted with `chat.postMessage` and edited with
//! `chat.update` as it moves. We call the Web API with reqwest directly: four methods do
//! not justify slack-morphism's dependency tree and its https-only connector.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::ack_or_defer;
use crate::app::App;
use crate::domain::notice::Notice;
use crate::domain::text::split_args;
use crate::intake::Invocation;
use crate::intake::policy::Identity;
use crate::outbox::{DeliveryError, OutboxRow};

/// Slash-command and interaction bodies are small; anything larger is refused with 413.
pub const MAX_BODY: usize = 16 * 1024;
/// Requests older or newer than this are replays or broken clocks.
pub const MAX_SKEW_SECS: i64 = 300;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a request was not accepted as coming from Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl SigError {
    pub fn as_str(self) -> &'static str {
        match self {
            SigError::Missing => "missing signature headers",
            SigError::Malformed => "malformed signature headers",
            SigError::Stale => "timestamp more than 5 minutes away",
            SigError::Mismatch => "signature does not match",
        }
    }
}

/// Check a request's signature headers against its raw body.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SigError> {
    let ts = headers
        .get("x-slack-request-timestamp")
        .ok_or(SigError::Missing)?;
    let sig = headers.get("x-slack-signature").ok_or(SigError::Missing)?;
    let ts = ts.to_str().map_err(|_| SigError::Malformed)?;
    let sig = sig.to_str().map_err(|_| SigError::Malformed)?;
    let t: i64 = ts.parse().map_err(|_| SigError::Malformed)?;
    if !sig.starts_with("v0=") || sig.len() != 67 {
        return Err(SigError::Malformed);
    }
    if now.abs_diff(t) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SigError::Stale);
    }
    let given = hex::decode(&sig[3..]).map_err(|_| SigError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| SigError::Mismatch)
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
        crate::support::metrics::command("slack", "bad_signature");
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

fn ephemeral(text: &str) -> Response {
    axum::Json(json!({"response_type": "ephemeral", "text": text})).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SlashCommand {
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub user_id: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    pub trigger_id: String,
    #[serde(default)]
    pub response_url: Option<String>,
}

/// Parse a form-encoded slash command.
pub fn parse_command(body: &[u8]) -> Result<SlashCommand, String> {
    serde_urlencoded::from_bytes(body).map_err(|e| format!("malformed slash command: {e}"))
}

async fn commands(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = gate(&app, &headers, &body) {
        return r.into_response();
    }
    let cmd = match parse_command(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let args = match split_args(&cmd.text) {
        Ok(a) => a,
        Err(e) => return ephemeral(&format!("✖ {e}")),
    };
    let inv = Invocation {
        platform: "slack".into(),
        identity: Identity::Slack {
            user: cmd.user_id.clone(),
        },
        actor: format!("slack:{}", cmd.user_id),
        channel: cmd.channel_id.clone(),
        command: cmd.command.clone(),
        args,
        request_id: Some(format!("slack:{}", cmd.trigger_id)),
        reply_to: cmd.response_url.clone(),
    };
    let text = ack_or_defer(app.clone(), inv, move |app, text| async move {
        if let Some(url) = cmd.response_url {
            let _ = post_response_url(&app, &url, &text).await;
        }
    })
    .await;
    ephemeral(&text)
}

/// A block_actions payload: who clicked which button where.
#[derive(Debug, Deserialize)]
pub struct BlockActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: IdOnly,
    #[serde(default)]
    pub channel: Option<IdOnly>,
    #[serde(default)]
    pub trigger_id: Option<String>,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub actions: Vec<ActionPayload>,
}

#[derive(Debug, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct ActionPayload {
    pub action_id: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub action_ts: Option<String>,
}

#[derive(Deserialize)]
struct PayloadForm {
    payload: String,
}

/// Parse the `payload` field of an interaction.
pub fn parse_interaction(body: &[u8]) -> Result<BlockActions, String> {
    let form: PayloadForm =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("malformed interaction: {e}"))?;
    serde_json::from_str(&form.payload).map_err(|e| format!("malformed interaction payload: {e}"))
}

async fn interactions(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = gate(&app, &headers, &body) {
        return r.into_response();
    }
    let p = match parse_interaction(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    if p.kind != "block_actions" {
        return StatusCode::OK.into_response();
    }
    let Some(action) = p.actions.first() else {
        return StatusCode::OK.into_response();
    };
    let Some((command, args)) =
        super::button_command(&app, &action.action_id, action.value.as_deref()).await
    else {
        return (StatusCode::BAD_REQUEST, "unknown button").into_response();
    };
    let inv = Invocation {
        platform: "slack".into(),
        identity: Identity::Slack {
            user: p.user.id.clone(),
        },
        actor: format!("slack:{}", p.user.id),
        channel: p.channel.as_ref().map(|c| c.id.clone()),
        command,
        args,
        request_id: Some(format!(
            "slack:{}:{}",
            p.trigger_id
                .as_deref()
                .or(action.action_ts.as_deref())
                .unwrap_or("-"),
            action.action_id
        )),
        reply_to: p.response_url.clone(),
    };
    let url = p.response_url.clone();
    let text = ack_or_defer(app.clone(), inv, |_, _| async {}).await;
    // The clicker learns the outcome privately; the job's message shows it to everyone.
    if let Some(url) = url {
        let app = app.clone();
        tokio::spawn(async move {
            let _ = post_response_url(&app, &url, &text).await;
        });
    }
    StatusCode::OK.into_response()
}

async fn post_response_url(app: &App, url: &str, text: &str) -> Result<(), DeliveryError> {
    let r = app
        .http
        .post(url)
        .json(&json!({"response_type": "ephemeral", "replace_original": false, "text": text}))
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

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_millis((s * 1000.0) as u64))
}

/// Delivers notices with the Web API (bot token) or, without one, the job's response_url.
pub struct SlackClient {
    pub base: String,
    http: reqwest::Client,
}

impl SlackClient {
    pub fn new(app: &App) -> Self {
        Self {
            base: app.settings.slack_api_url.trim_end_matches('/').to_owned(),
            http: app.http.clone(),
        }
    }

    pub async fn deliver(&self, app: &App, row: &OutboxRow) -> Result<(), DeliveryError> {
        let Some(notice) = row.notice() else {
            return Err(DeliveryError::Fatal("unreadable notice".into()));
        };
        let Some(token) = &app.settings.secrets.slack_bot_token else {
            return self.deliver_by_response_url(app, row, &notice).await;
        };
        let Some(channel) = row.channel.clone() else {
            return Err(DeliveryError::Fatal("no channel to post to".into()));
        };
        let (text, blocks) = render(&notice);
        let mut existing = app
            .db
            .message_ref("slack", &channel, &row.thread_key)
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: e.to_string(),
            })?;
        // A process that died mid-post may have posted the thread's message: find it by
        // the metadata we attach, so the retry edits it instead of posting a second one.
        if existing.is_none() && !notice.is_reply() && row.maybe_delivered() {
            existing = self
                .find_posted(token.expose_secret(), &channel, &row.thread_key)
                .await?;
            if let Some(ts) = &existing {
                let _ = app
                    .db
                    .set_message_ref("slack", &channel, &row.thread_key, ts)
                    .await;
            }
        }
        if notice.is_reply() {
            let Some(ts) = existing else { return Ok(()) };
            let body = json!({"channel": channel, "thread_ts": ts, "text": text, "blocks": blocks});
            self.call(token.expose_secret(), "chat.postMessage", &body)
                .await?;
            return self
                .attach_chart(
                    app,
                    token.expose_secret(),
                    &channel,
                    row,
                    &notice,
                    Some(&ts),
                )
                .await;
        }
        if let Some(ts) = existing {
            let body = json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks});
            match self.call(token.expose_secret(), "chat.update", &body).await {
                Err(DeliveryError::Fatal(e)) if e.contains("message_not_found") => {}
                Ok(_) => {
                    return self
                        .attach_chart(
                            app,
                            token.expose_secret(),
                            &channel,
                            row,
                            &notice,
                            Some(&ts),
                        )
                        .await;
                }
                other => return other.map(|_| ()),
            }
        }
        let body = json!({
            "channel": channel, "text": text, "blocks": blocks,
            "metadata": {"event_type": METADATA_EVENT, "event_payload": {"thread": row.thread_key}},
        });
        let answer = self
            .call(token.expose_secret(), "chat.postMessage", &body)
            .await?;
        // Remember the message first: a crash before the row is marked delivered then
        // makes the retry an idempotent update, never a second post.
        let posted_ts = answer.get("ts").and_then(Value::as_str);
        if let Some(ts) = posted_ts {
            let ch = answer
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or(&channel);
            let _ = app
                .db
                .set_message_ref("slack", ch, &row.thread_key, ts)
                .await;
            if ch != channel {
                let _ = app
                    .db
                    .set_message_ref("slack", &channel, &row.thread_key, ts)
                    .await;
            }
        }
        self.attach_chart(
            app,
            token.expose_secret(),
            &channel,
            row,
            &notice,
            posted_ts,
        )
        .await
    }

    /// The `ts` of a message we posted for `thread` among the channel's recent messages.
    async fn find_posted(
        &self,
        token: &str,
        channel: &str,
        thread: &str,
    ) -> Result<Option<String>, DeliveryError> {
        let body = json!({"channel": channel, "limit": 100, "include_all_metadata": true});
        let v = self.call(token, "conversations.history", &body).await?;
        Ok(v.get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| {
                m.pointer("/metadata/event_type").and_then(Value::as_str) == Some(METADATA_EVENT)
                    && m.pointer("/metadata/event_payload/thread")
                        .and_then(Value::as_str)
                        == Some(thread)
            })
            .and_then(|m| m.get("ts").and_then(Value::as_str).map(str::to_owned)))
    }

    /// No bot token: the job's final notice goes to the command's response_url (one of
    /// its five uses); progress notices are skipped.
    async fn deliver_by_response_url(
        &self,
        app: &App,
        row: &OutboxRow,
        n: &Notice,
    ) -> Result<(), DeliveryError> {
        if !n.kind.is_final() {
            return Ok(());
        }
        let Some(job) = row.job_id else { return Ok(()) };
        let job = app.db.job(job).await.map_err(|e| DeliveryError::Retry {
            after: None,
            reason: e.to_string(),
        })?;
        let Some(url) = job.and_then(|j| j.reply_to) else {
            return Ok(());
        };
        let (text, blocks) = render(n);
        let r = app
            .http
            .post(&url)
            .json(&json!({"response_type": "in_channel", "text": text, "blocks": blocks}))
            .send()
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: crate::support::net::net_reason(&e),
            })?;
        super::classify(
            r.status().as_u16(),
            retry_after(r.headers()),
            "response_url",
        )
        .map(|_| ())
    }

    /// Call a Web API method; sort the answer into delivered, retry later, or refused.
    async fn call(&self, token: &str, method: &str, body: &Value) -> Result<Value, DeliveryError> {
        let req = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token)
            .json(body);
        self.send(req, method).await
    }

    /// Send a Web API request; sort the answer into delivered, retry later, or refused.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        method: &str,
    ) -> Result<Value, DeliveryError> {
        let resp = req.send().await.map_err(|e| DeliveryError::Retry {
            after: None,
            reason: format!("{method}: {}", crate::support::net::net_reason(&e)),
        })?;
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        super::classify(status, after, method)?;
        let v: Value = resp.json().await.map_err(|_| DeliveryError::Retry {
            after: None,
            reason: format!("{method}: unreadable answer"),
        })?;
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(v);
        }
        let err = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error")
            .to_owned();
        match err.as_str() {
            "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout" => Err(DeliveryError::Retry {
                after,
                reason: format!("{method}: {err}"),
            }),
            _ => Err(DeliveryError::Fatal(format!("{method}: {err}"))),
        }
    }
}

// --- digest charts: Slack's external file upload ---
impl SlackClient {
    /// Upload a notice's chart, if it has one and it is not up yet, into the thread of the
    /// message just posted (`thread_ts`). The text is already out, so an upload that keeps
    /// failing is dropped after a few tries (or at once under a reply, whose retry would
    /// post the reply twice) rather than holding the message back.
    async fn attach_chart(
        &self,
        app: &App,
        token: &str,
        channel: &str,
        row: &OutboxRow,
        notice: &Notice,
        thread_ts: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let Some(id) = notice.attachment else {
            return Ok(());
        };
        // Marks a finished upload so a retry of the row does not share the chart twice.
        let done = format!("{}#chart", row.thread_key);
        let db_err = |e: crate::store::StoreError| DeliveryError::Retry {
            after: None,
            reason: e.to_string(),
        };
        if app
            .db
            .message_ref("slack", channel, &done)
            .await
            .map_err(db_err)?
            .is_some()
        {
            return Ok(());
        }
        let Some(file) = app.db.attachment(id).await.map_err(db_err)? else {
            return Ok(());
        };
        match self
            .upload(token, channel, thread_ts, &file, &notice.title)
            .await
        {
            Ok(file_id) => {
                let _ = app
                    .db
                    .set_message_ref("slack", channel, &done, &file_id)
                    .await;
                Ok(())
            }
            Err(e @ DeliveryError::Retry { .. })
                if !notice.is_reply() && row.attempts + 1 < crate::reports::digest::CHART_TRIES =>
            {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(outbox_id = row.id, error = ?e, "chart upload to Slack failed; the message went without it");
                Ok(())
            }
        }
    }

    /// files.getUploadURLExternal, POST the bytes to the URL it returns, then
    /// files.completeUploadExternal to share the file. Returns the file id.
    async fn upload(
        &self,
        token: &str,
        channel: &str,
        thread_ts: Option<&str>,
        file: &crate::reports::digest::Attachment,
        title: &str,
    ) -> Result<String, DeliveryError> {
        let form = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let method = "files.getUploadURLExternal";
        let size = file.data.len().to_string();
        let req = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token)
            .form(&form(&[("filename", &file.name), ("length", &size)]));
        let v = self.send(req, method).await?;
        let (Some(url), Some(file_id)) = (
            v.get("upload_url").and_then(Value::as_str),
            v.get("file_id").and_then(Value::as_str),
        ) else {
            return Err(DeliveryError::Fatal(format!(
                "{method}: no upload_url in the answer"
            )));
        };
        // The URL is pre-signed: the bot token is not sent there.
        let r = self
            .http
            .post(url)
            .header("content-type", &file.content_type)
            .body(file.data.clone())
            .send()
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: format!("file upload: {}", crate::support::net::net_reason(&e)),
            })?;
        super::classify(r.status().as_u16(), retry_after(r.headers()), "file upload")?;
        let method = "files.completeUploadExternal";
        let files =
            json!([{"id": file_id, "title": crate::domain::text::cut(title, 250)}]).to_string();
        let mut pairs = vec![("files", files.as_str()), ("channel_id", channel)];
        if let Some(ts) = thread_ts {
            pairs.push(("thread_ts", ts));
        }
        let req = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token)
            .form(&form(&pairs));
        self.send(req, method).await?;
        Ok(file_id.to_owned())
    }
}
// --- end digest charts ---

/// Block Kit limits (see PLATFORMS.md), with a margin under the ~13k total.
const SECTION_TEXT: usize = 3000;
const FIELD_TEXT: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;
const TOTAL_BUDGET: usize = 11_000;

/// Render a notice as Block Kit plus a plain-text fallback. Fields are walked generically:
/// a field added to a notice shows here without Slack-specific code.
pub fn render(n: &Notice) -> (String, Value) {
    let title = format!("{} {}", n.tone.symbol(), n.title);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": crate::domain::text::cut(&format!("*{}*", escape(&title)), SECTION_TEXT)}
    })];
    let mut used = title.len();
    for chunk in n.fields.chunks(FIELDS_PER_SECTION) {
        let fields: Vec<Value> = chunk
            .iter()
            .map(|f| {
                let t = crate::domain::text::cut(
                    &format!("*{}*\n{}", escape(&f.label), escape(&f.value)),
                    FIELD_TEXT,
                );
                used += t.len();
                json!({"type": "mrkdwn", "text": t})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(body) = &n.body {
        let room = SECTION_TEXT
            .min(TOTAL_BUDGET.saturating_sub(used))
            .saturating_sub(8);
        if room > 100 {
            let text = crate::domain::text::cut_tail(body, room);
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", text)}}));
        }
    }
    if !n.actions.is_empty() {
        let elements: Vec<Value> = n
            .actions
            .iter()
            .take(25)
            .map(|a| {
                let mut b = json!({
                    "type": "button",
                    "text": {"type": "plain_text", "text": crate::domain::text::cut(&a.label, 75)},
                    "action_id": a.action,
                    "value": a.job_id.to_string(),
                });
                if a.danger {
                    b["style"] = json!("danger");
                }
                b
            })
            .collect();
        blocks.push(json!({"type": "actions", "elements": elements}));
    }
    let mut context = Vec::new();
    if let Some(j) = n.job_id {
        context.push(format!("job {j}"));
    }
    if let Some(e) = &n.environment {
        context.push(format!("environment {e}"));
    }
    if let Some(v) = &n.version {
        context.push(format!("version {v}"));
    }
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(&context.join(" · "))}]}));
    }
    (crate::domain::text::cut(&title, 3000), Value::Array(blocks))
}

/// Message metadata marking Deckhand's posts, so a crashed delivery can find its message.
const METADATA_EVENT: &str = "deckhand_notice";

/// Slack's three control characters in mrkdwn.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `deckhand slack manifest --url URL`: a Slack app manifest for every command.
pub fn manifest(app_url: &str, catalog: &crate::config::catalog::Catalog) -> Value {
    let base = app_url.trim_end_matches('/');
    let mut commands: Vec<Value> = catalog
        .commands
        .values()
        .map(|c| {
            json!({
                "command": format!("/{}", c.name),
                "url": format!("{base}/slack/commands"),
                "description": crate::domain::text::cut(&c.description, 100),
                "usage_hint": crate::domain::text::cut(c.usage.split_once(' ').map(|x| x.1).unwrap_or(""), 100),
                "should_escape": false,
            })
        })
        .collect();
    for (name, desc, usage) in crate::config::catalog::BUILTINS {
        commands.push(json!({
            "command": format!("/{name}"),
            "url": format!("{base}/slack/commands"),
            "description": desc,
            "usage_hint": usage.split_once(' ').map(|x| x.1).unwrap_or(""),
            "should_escape": false,
        }));
    }
    json!({
        "display_information": {
            "name": "Deckhand",
            "description": "Deploys, rollbacks, migrations and secret rotation from chat",
        },
        "features": {
            "bot_user": {"display_name": "Deckhand", "always_online": true},
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": ["commands", "chat:write", "chat:write.public", "channels:history", "groups:history", "files:write"]}},
        "settings": {
            "interactivity": {"is_enabled": true, "request_url": format!("{base}/slack/interactions")},
            "org_deploy_enabled": false,
            "socket_mode_enabled": false,
            "token_rotation_enabled": false,
        },
    })
}

impl crate::outbox::Deliver for SlackClient {
    fn platform(&self) -> &'static str {
        "slack"
    }
    fn pace(&self) -> Duration {
        Duration::from_millis(1000)
    }
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> crate::outbox::Delivery<'a> {
        Box::pin(SlackClient::deliver(self, app, row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::{Notice, NoticeKind, Tone};

    #[test]
    fn signature_matches_slacks_documented_example() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(
                b"8f742231b10e8888abcd99yyyzzz85a5",
                "1531420618",
                body.as_bytes()
            ),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    fn headers(ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-slack-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn verify_refuses_forged_stale_and_missing() {
        let now = 1_800_000_000;
        let good = signature(b"s3cret", &now.to_string(), b"a=1");
        assert_eq!(verify(b"s3cret", &headers(now, &good), b"a=1", now), Ok(()));
        assert_eq!(
            verify(b"s3cret", &headers(now, &good), b"a=2", now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &headers(now, &good), b"a=1", now),
            Err(SigError::Mismatch)
        );
        let old = signature(b"s3cret", &(now - 301).to_string(), b"a=1");
        assert_eq!(
            verify(b"s3cret", &headers(now - 301, &old), b"a=1", now),
            Err(SigError::Stale)
        );
        assert_eq!(
            verify(b"s3cret", &HeaderMap::new(), b"a=1", now),
            Err(SigError::Missing)
        );
        assert_eq!(
            verify(b"s3cret", &headers(now, "v1=abc"), b"a=1", now),
            Err(SigError::Malformed)
        );
    }

    #[test]
    fn render_respects_block_kit_limits() {
        let mut n = Notice::new(
            NoticeKind::DeploymentComplete,
            Tone::Success,
            "Deployed abc1234 to staging",
        )
        .env(Some("staging"))
        .version(Some("abc1234"))
        .job(7)
        .body("x".repeat(50_000))
        .action("rollback", "Roll back", 7, true);
        for i in 0..23 {
            n = n.field(&format!("F{i}"), "v".repeat(5000));
        }
        let (text, blocks) = render(&n);
        assert!(text.contains("Deployed abc1234 to staging"));
        let b = blocks.as_array().unwrap();
        assert!(b.len() <= 50);
        for block in b {
            if let Some(fields) = block.get("fields") {
                let f = fields.as_array().unwrap();
                assert!(f.len() <= 10);
                for x in f {
                    assert!(x["text"].as_str().unwrap().chars().count() <= 2000);
                }
            }
            if let Some(t) = block.pointer("/text/text") {
                assert!(t.as_str().unwrap().chars().count() <= 3000);
            }
        }
        let actions = b.iter().find(|x| x["type"] == "actions").unwrap();
        assert_eq!(actions["elements"][0]["action_id"], "rollback");
        assert_eq!(actions["elements"][0]["value"], "7");
    }
}
