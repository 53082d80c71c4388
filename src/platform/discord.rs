//! Discord: signed interactions in, one live message per job out.
//!
//! Every request's Ed25519 signature (over timestamp + raw body, with the application's
//! public key) and the timestamp's age are checked before anything reads it; Discord probes
//! endpoints with bad signatures and removes those that accept them. Commands are answered
//! at once with an ephemeral message; the job then gets one channel message (bot token)
//! edited as it moves, ending in an embed report. The REST API is called with reqwest: the
//! handful of routes we use do not justify serenity, whose proxy setting is ignored while
//! its rate limiter is on and which logs interaction tokens at INFO.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ack_or_defer;
use crate::app::App;
use crate::config::Config;
use crate::config::catalog::{ArgKind, BUILTINS, Catalog};
use crate::domain::notice::{Notice, Tone};
use crate::domain::text::cut;
use crate::domain::text::cut_tail;
use crate::intake::Invocation;
use crate::intake::policy::Identity;
use crate::outbox::{DeliveryError, OutboxRow};

pub const MAX_BODY: usize = 64 * 1024;
const EPHEMERAL: u64 = 64;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/discord/interactions", post(interactions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Parse the application's public key (64 hex digits).
pub fn public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("DISCORD_PUBLIC_KEY must be 64 hex digits (the application's public key)")?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "DISCORD_PUBLIC_KEY is not a valid Ed25519 key".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

/// Check `X-Signature-Ed25519` over `X-Signature-Timestamp` + body, and the timestamp's age.
pub fn verify(
    key: &VerifyingKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SigError> {
    let sig = headers
        .get("x-signature-ed25519")
        .ok_or(SigError::Missing)?;
    let ts = headers
        .get("x-signature-timestamp")
        .ok_or(SigError::Missing)?;
    let ts = ts.to_str().map_err(|_| SigError::Malformed)?;
    let sig: [u8; 64] = hex::decode(sig.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigError::Malformed)?;
    let t: i64 = ts.parse().map_err(|_| SigError::Malformed)?;
    let mut msg = Vec::with_capacity(ts.len() + body.len());
    msg.extend_from_slice(ts.as_bytes());
    msg.extend_from_slice(body);
    // The signature first, so a forged request learns nothing from the clock check.
    key.verify(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| SigError::Mismatch)?;
    if now.abs_diff(t) > super::slack::MAX_SKEW_SECS.unsigned_abs() {
        return Err(SigError::Stale);
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub data: Option<Data>,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    pub user: User,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct Data {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub options: Vec<CommandOption>,
    #[serde(default)]
    pub custom_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CommandOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
}

pub fn parse(body: &[u8]) -> Result<Interaction, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed interaction: {e}"))
}

fn message(text: &str) -> Response {
    axum::Json(json!({"type": 4, "data": {"content": cut(text, 2000), "flags": EPHEMERAL}}))
        .into_response()
}

async fn interactions(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = app.settings.discord_public_key.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "Discord is not configured on this Deckhand (DISCORD_PUBLIC_KEY is unset)",
        )
            .into_response();
    };
    let key = match public_key(key) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = e, "cannot check Discord signatures");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Discord is misconfigured",
            )
                .into_response();
        }
    };
    if let Err(e) = verify(&key, &headers, &body, crate::domain::time::now_ms() / 1000) {
        crate::support::metrics::command("discord", "bad_signature");
        tracing::warn!(reason = ?e, "refused a Discord request with a bad signature");
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    let i = match parse(&body) {
        Ok(i) => i,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
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
    let (user, roles) = match (&i.member, &i.user) {
        (Some(m), _) => (m.user.id.clone(), m.roles.clone()),
        (None, Some(u)) => (u.id.clone(), Vec::new()),
        _ => return (StatusCode::BAD_REQUEST, "interaction without a user").into_response(),
    };
    let Some(data) = &i.data else {
        return (StatusCode::BAD_REQUEST, "interaction without data").into_response();
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
            match super::button_command(&app, action, Some(value)).await {
                Some(x) => x,
                None => return message("✖ This button is not known to Deckhand."),
            }
        }
        _ => return (StatusCode::BAD_REQUEST, "unsupported interaction type").into_response(),
    };
    let inv = Invocation {
        platform: "discord".into(),
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
                .json(&json!({"content": cut(&text, 2000), "flags": EPHEMERAL}))
                .send()
                .await;
        }
    })
    .await;
    message(&text)
}

/// Options in the order the command file declares its arguments; `emergency` becomes the
/// `--emergency REASON` flag. Builtins take theirs in a fixed order.
pub fn options_to_args(catalog: &Catalog, name: &str, opts: &[CommandOption]) -> Vec<String> {
    let get = |n: &str| {
        opts.iter()
            .find(|o| o.name == n)
            .and_then(|o| o.value.as_ref())
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    };
    let mut out = Vec::new();
    if let Some(cmd) = catalog.get(name) {
        for a in &cmd.args {
            match get(&a.name) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        if let Some(r) = get("emergency") {
            out.push("--emergency".into());
            out.push(r);
        }
    } else {
        for n in builtin_options(name).iter().map(|o| o.0) {
            if let Some(v) = get(n) {
                out.extend(crate::domain::text::split_args(&v).unwrap_or_else(|_| vec![v]));
            }
        }
    }
    out
}

/// (name, Discord option type, required) of each builtin's options.
fn builtin_options(name: &str) -> &'static [(&'static str, u8, bool)] {
    match name {
        "status" => &[("environment", 3, false)],
        "history" | "unlock" => &[("environment", 3, true)],
        "lock" => &[("environment", 3, true), ("reason", 3, true)],
        "approve" | "reject" | "cancel" => &[("job", 4, true)],
        "ack" => &[("incident", 4, true)],
        _ => &[],
    }
}

/// The bulk-overwrite body for `PUT /applications/{id}/commands`.
pub fn registration(catalog: &Catalog, config: &Config) -> Value {
    let envs: Vec<Value> = config
        .environments
        .keys()
        .take(25)
        .map(|e| json!({"name": e, "value": e}))
        .collect();
    let mut cmds = Vec::new();
    for c in catalog.commands.values() {
        let mut options: Vec<Value> = c
            .args
            .iter()
            .map(|a| {
                let mut o = json!({
                    "type": 3,
                    "name": a.name,
                    "description": cut(if a.description.is_empty() { &a.name } else { &a.description }, 100),
                    "required": a.required,
                });
                match &a.kind {
                    ArgKind::Environment => o["choices"] = Value::Array(envs.clone()),
                    ArgKind::Choice(ch) => {
                        o["choices"] = ch.iter().take(25).map(|x| json!({"name": x, "value": x})).collect()
                    }
                    _ => {}
                }
                o
            })
            .collect();
        if c.kind == crate::config::catalog::JobKind::Deploy {
            options.push(json!({"type": 3, "name": "emergency", "description": "Admins only: skip staging-first, with this reason", "required": false}));
        }
        cmds.push(json!({"name": c.name, "type": 1, "description": cut(&c.description, 100), "options": options}));
    }
    for (name, desc, _) in BUILTINS {
        let options: Vec<Value> = builtin_options(name)
            .iter()
            .map(|(n, t, req)| {
                let mut o = json!({"type": t, "name": n, "description": n, "required": req});
                if *n == "environment" {
                    o["choices"] = Value::Array(envs.clone());
                }
                o
            })
            .collect();
        cmds.push(json!({"name": name, "type": 1, "description": desc, "options": options}));
    }
    Value::Array(cmds)
}

/// `deckhand discord register [--guild ID]`.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    app_id: &str,
    token: &str,
    guild: Option<&str>,
    body: &Value,
) -> Result<usize, String> {
    let path = match guild {
        Some(g) => format!("{base}/applications/{app_id}/guilds/{g}/commands"),
        None => format!("{base}/applications/{app_id}/commands"),
    };
    let r = http
        .put(path)
        .header("authorization", format!("Bot {token}"))
        .json(body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach Discord: {}",
                crate::support::net::net_reason(&e)
            )
        })?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        return Err(format!("Discord answered {status}: {}", cut(&text, 500)));
    }
    Ok(body.as_array().map(Vec::len).unwrap_or(0))
}

/// Colour of an embed by the notice's tone.
fn colour(t: Tone) -> u32 {
    match t {
        Tone::Info => 0x5865F2,
        Tone::Progress => 0xFEE75C,
        Tone::Success => 0x57F287,
        Tone::Warning => 0xF0B232,
        Tone::Danger => 0xED4245,
    }
}

/// Render a notice as one embed plus buttons, within Discord's limits. Fields are walked
/// generically: a field added to a notice shows here without Discord-specific code.
pub fn render(n: &Notice) -> Value {
    let title = cut(&format!("{} {}", n.tone.symbol(), n.title), 256);
    let mut budget = 6000usize.saturating_sub(title.chars().count());
    let mut fields = Vec::new();
    for f in n.fields.iter().take(25) {
        let name = cut(&f.label, 256);
        let value = cut(if f.value.is_empty() { "-" } else { &f.value }, 1024);
        let size = name.chars().count() + value.chars().count();
        if size > budget.saturating_sub(200) {
            break;
        }
        budget -= size;
        fields.push(json!({"name": name, "value": value, "inline": value.chars().count() <= 40}));
    }
    let mut footer = Vec::new();
    if let Some(j) = n.job_id {
        footer.push(format!("job {j}"));
    }
    if let Some(e) = &n.environment {
        footer.push(e.clone());
    }
    if let Some(v) = &n.version {
        footer.push(v.clone());
    }
    let footer = cut(&footer.join(" · "), 200);
    budget = budget.saturating_sub(footer.chars().count());
    let mut embed = json!({"title": title, "color": colour(n.tone), "fields": fields});
    if !footer.is_empty() {
        embed["footer"] = json!({"text": footer});
    }
    if let Some(b) = &n.body {
        let room = budget.min(4096).saturating_sub(8);
        if room > 50 {
            embed["description"] = json!(format!("```\n{}\n```", cut_tail(b, room)));
        }
    }
    let buttons: Vec<Value> = n
        .actions
        .iter()
        .take(5)
        .map(|a| {
            json!({
                "type": 2,
                "style": if a.danger { 4 } else { 1 },
                "label": cut(&a.label, 80),
                "custom_id": cut(&format!("{}:{}", a.action, a.job_id), 100),
            })
        })
        .collect();
    let components = if buttons.is_empty() {
        json!([])
    } else {
        json!([{"type": 1, "components": buttons}])
    };
    json!({"content": "", "embeds": [embed], "components": components, "allowed_mentions": {"parse": []}})
}

/// Delivers notices as channel messages with the bot token, honouring rate-limit buckets.
pub struct DiscordClient {
    base: String,
    http: reqwest::Client,
    /// Not before this instant, per route bucket (from `X-RateLimit-Remaining: 0`).
    waits: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl DiscordClient {
    pub fn new(app: &App) -> Self {
        Self {
            base: app
                .settings
                .discord_api_url
                .trim_end_matches('/')
                .to_owned(),
            http: app.http.clone(),
            waits: Mutex::new(HashMap::new()),
        }
    }

    pub async fn deliver(&self, app: &App, row: &OutboxRow) -> Result<(), DeliveryError> {
        let Some(notice) = row.notice() else {
            return Err(DeliveryError::Fatal("unreadable notice".into()));
        };
        let Some(token) = &app.settings.secrets.discord_bot_token else {
            return self.deliver_by_interaction(app, row, &notice).await;
        };
        let Some(channel) = row.channel.clone() else {
            return Err(DeliveryError::Fatal("no channel to post to".into()));
        };
        let body = render(&notice);
        let existing = app
            .db
            .message_ref("discord", &channel, &row.thread_key)
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: e.to_string(),
            })?;
        let auth = format!("Bot {}", token.expose_secret());
        if notice.is_reply() {
            let mut body = body;
            if let Some(id) = &existing {
                body["message_reference"] = json!({"message_id": id, "fail_if_not_exists": false});
            }
            return self
                .call(
                    reqwest::Method::POST,
                    &format!("/channels/{channel}/messages"),
                    &auth,
                    &body,
                )
                .await
                .map(|_| ());
        }
        if let Some(id) = existing {
            match self
                .call(
                    reqwest::Method::PATCH,
                    &format!("/channels/{channel}/messages/{id}"),
                    &auth,
                    &body,
                )
                .await
            {
                Err(DeliveryError::Fatal(e)) if e.contains("404") => {}
                other => return other.map(|_| ()),
            }
        }
        let path = format!("/channels/{channel}/messages");
        // Discord drops a second message with the same nonce (and returns the first), so a
        // retry after a crash mid-post cannot post the job's message twice.
        let mut body = body;
        body["nonce"] = json!(format!("dh{}", row.id));
        body["enforce_nonce"] = json!(true);
        let answer = match notice.attachment {
            Some(file) => {
                self.post_with_chart(app, row, &path, &auth, &body, file)
                    .await?
            }
            None => {
                self.call(reqwest::Method::POST, &path, &auth, &body)
                    .await?
            }
        };
        if let Some(id) = answer.get("id").and_then(Value::as_str) {
            let _ = app
                .db
                .set_message_ref("discord", &channel, &row.thread_key, id)
                .await;
        }
        Ok(())
    }

    /// Without a bot token, a job's final notice is a follow-up on its interaction (valid
    /// for 15 minutes); progress notices are skipped.
    async fn deliver_by_interaction(
        &self,
        app: &App,
        row: &OutboxRow,
        n: &Notice,
    ) -> Result<(), DeliveryError> {
        let (Some(job), Some(app_id)) = (row.job_id, &app.settings.discord_application_id) else {
            return Ok(());
        };
        if !n.kind.is_final() {
            return Ok(());
        }
        let job = app.db.job(job).await.map_err(|e| DeliveryError::Retry {
            after: None,
            reason: e.to_string(),
        })?;
        let Some(token) = job.and_then(|j| j.reply_to) else {
            return Ok(());
        };
        self.call(
            reqwest::Method::POST,
            &format!("/webhooks/{app_id}/{token}"),
            "",
            &render(n),
        )
        .await
        .map(|_| ())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: &Value,
    ) -> Result<Value, DeliveryError> {
        self.call_with(method, path, auth, |r| r.json(body)).await
    }

    /// A request with the body `with_body` sets, through the rate-limit buckets.
    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, DeliveryError> {
        let bucket = route_bucket(path);
        let wait = self
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&bucket)
            .copied();
        if let Some(t) = wait {
            tokio::time::sleep_until(t).await;
        }
        let mut req = with_body(self.http.request(method, format!("{}{path}", self.base)));
        if !auth.is_empty() {
            req = req.header("authorization", auth);
        }
        // Webhook paths carry a token: never name the path in an error.
        let what = bucket.clone();
        let resp = req.send().await.map_err(|e| DeliveryError::Retry {
            after: None,
            reason: format!("{what}: {}", crate::support::net::net_reason(&e)),
        })?;
        let status = resp.status().as_u16();
        let h = resp.headers();
        if h.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()) == Some("0")
            && let Some(reset) = h
                .get("x-ratelimit-reset-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
        {
            let until =
                tokio::time::Instant::now() + Duration::from_millis((reset * 1000.0) as u64);
            self.waits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(bucket, until);
        }
        let header_after = h
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 429 {
            let secs = v
                .get("retry_after")
                .and_then(Value::as_f64)
                .or(header_after)
                .unwrap_or(1.0);
            return Err(DeliveryError::Retry {
                after: Some(Duration::from_millis((secs * 1000.0) as u64)),
                reason: format!("{what}: rate limited (429)"),
            });
        }
        super::classify(status, None, &what)?;
        Ok(v)
    }
}

// --- digest charts: a message with an attached file ---
impl DiscordClient {
    /// Post the message with its chart as `files[0]` of a multipart request, shown inside
    /// the embed (`attachment://NAME`). The text matters more than the picture: when the
    /// upload is refused, or keeps failing, the message goes without it.
    async fn post_with_chart(
        &self,
        app: &App,
        row: &OutboxRow,
        path: &str,
        auth: &str,
        body: &Value,
        attachment: i64,
    ) -> Result<Value, DeliveryError> {
        let file = app
            .db
            .attachment(attachment)
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: e.to_string(),
            })?;
        let Some(file) = file else {
            return self.call(reqwest::Method::POST, path, auth, body).await;
        };
        let mut payload = body.clone();
        payload["attachments"] = json!([{"id": 0, "filename": file.name}]);
        if let Some(embed) = payload
            .get_mut("embeds")
            .and_then(|e| e.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            embed.insert(
                "image".into(),
                json!({"url": format!("attachment://{}", file.name)}),
            );
        }
        let (content_type, bytes) = multipart(&payload, &file);
        let sent = self
            .call_with(reqwest::Method::POST, path, auth, |r| {
                r.header("content-type", content_type).body(bytes)
            })
            .await;
        match sent {
            Ok(v) => Ok(v),
            Err(e @ DeliveryError::Retry { .. })
                if row.attempts + 1 < crate::reports::digest::CHART_TRIES =>
            {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(outbox_id = row.id, error = ?e, "chart upload to Discord failed; posting the message without it");
                self.call(reqwest::Method::POST, path, auth, body).await
            }
        }
    }
}

/// A multipart/form-data body of `payload_json` and `files[0]`, built by hand (a few
/// lines, instead of reqwest's multipart feature). The boundary is random, so it cannot
/// be predicted into the PNG's bytes.
fn multipart(payload: &Value, file: &crate::reports::digest::Attachment) -> (String, Vec<u8>) {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    let boundary = format!("deckhand-{}", hex::encode(b));
    let mut out = Vec::with_capacity(file.data.len() + 1024);
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{payload}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            file.name.replace(['"', '\r', '\n'], "_"),
            file.content_type
        )
        .as_bytes(),
    );
    out.extend_from_slice(&file.data);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}
// --- end digest charts ---

/// A route with its ids replaced, as a rate-limit bucket and a safe name for messages.
/// Channel ids stay (buckets are per channel); message ids and webhook tokens go.
fn route_bucket(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let back = |n: usize| if i >= n { parts[i - n] } else { "" };
            if back(1) == "channels" {
                (*p).to_owned()
            } else if back(1) == "webhooks"
                || back(2) == "webhooks"
                || (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                ":id".to_owned()
            } else {
                (*p).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl crate::outbox::Deliver for DiscordClient {
    fn platform(&self) -> &'static str {
        "discord"
    }
    fn pace(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> crate::outbox::Delivery<'a> {
        Box::pin(DiscordClient::deliver(self, app, row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::NoticeKind;
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn headers(sk: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
        let mut msg = ts.to_string().into_bytes();
        msg.extend_from_slice(body);
        let sig = sk.sign(&msg);
        let mut h = HeaderMap::new();
        h.insert(
            "x-signature-ed25519",
            hex::encode(sig.to_bytes()).parse().unwrap(),
        );
        h.insert("x-signature-timestamp", ts.to_string().parse().unwrap());
        h
    }

    #[test]
    fn verifies_ed25519_and_freshness() {
        let sk = key();
        let pk = public_key(&hex::encode(sk.verifying_key().to_bytes())).unwrap();
        let now = 1_800_000_000;
        let body = br#"{"type":1}"#;
        assert_eq!(verify(&pk, &headers(&sk, now, body), body, now), Ok(()));
        assert_eq!(
            verify(&pk, &headers(&sk, now, body), br#"{"type":2}"#, now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&pk, &headers(&sk, now - 400, body), body, now),
            Err(SigError::Stale)
        );
        assert_eq!(
            verify(&pk, &HeaderMap::new(), body, now),
            Err(SigError::Missing)
        );
        let other = SigningKey::from_bytes(&[9u8; 32]);
        assert_eq!(
            verify(&pk, &headers(&other, now, body), body, now),
            Err(SigError::Mismatch)
        );
        assert!(public_key("abcd").is_err());
    }

    #[test]
    fn render_stays_within_embed_limits() {
        let mut n = Notice::new(
            NoticeKind::DeploymentComplete,
            Tone::Success,
            "x".repeat(400),
        )
        .job(3)
        .body("y".repeat(10_000))
        .action("rollback", "Roll back", 3, true);
        for i in 0..30 {
            n = n.field(&format!("F{i}"), "v".repeat(2000));
        }
        let v = render(&n);
        let e = &v["embeds"][0];
        assert!(e["title"].as_str().unwrap().chars().count() <= 256);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= 25);
        let total: usize = e["title"].as_str().unwrap().chars().count()
            + e["description"]
                .as_str()
                .map(|d| d.chars().count())
                .unwrap_or(0)
            + e["footer"]["text"]
                .as_str()
                .map(|d| d.chars().count())
                .unwrap_or(0)
            + fields
                .iter()
                .map(|f| {
                    f["name"].as_str().unwrap().chars().count()
                        + f["value"].as_str().unwrap().chars().count()
                })
                .sum::<usize>();
        assert!(total <= 6000, "{total}");
        assert_eq!(
            v["components"][0]["components"][0]["custom_id"],
            "rollback:3"
        );
        assert_eq!(e["color"], 0x57F287);
    }

    #[test]
    fn buckets_hide_tokens() {
        assert_eq!(
            route_bucket("/channels/123/messages/456"),
            "/channels/123/messages/:id"
        );
        assert_eq!(
            route_bucket("/webhooks/99/secret-token"),
            "/webhooks/:id/:id"
        );
    }
}
