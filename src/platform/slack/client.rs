//! Delivery to Slack with the Web API: one message per job, posted with `chat.postMessage`
//! and edited with `chat.update` as it moves, replies in its thread; without a bot token,
//! the job's final notice on its `response_url`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::render::render;
use crate::app::App;
use crate::domain::notice::Notice;
use crate::domain::platform::Platform;
use crate::outbox::{DeliveryError, OutboxRow, Scope};
use crate::platform::classify;

/// Message metadata marking Deckhand's posts, so a crashed delivery can find its message.
const METADATA_EVENT: &str = "deckhand_notice";

/// Delivers notices with the Web API (bot token) or, without one, the job's response_url.
pub struct SlackClient {
    pub base: String,
    pub(super) http: reqwest::Client,
    /// With a bot token, a job's or incident's one message is edited in place.
    edits: bool,
}

/// `chat.postMessage`: about one message per second per channel.
const POST_PACE: Duration = Duration::from_millis(1000);
/// `chat.update` is a Tier 3 method: 50+ calls a minute per workspace.
const UPDATE_PACE: Duration = Duration::from_millis(1200);

impl SlackClient {
    pub fn new(app: &App) -> Self {
        Self {
            base: app.settings.slack_api_url.trim_end_matches('/').to_owned(),
            http: app.http.clone(),
            edits: app.settings.secrets.slack_bot_token.is_some(),
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
        let token = token.expose_secret();
        let (text, blocks) = render(&notice);
        let existing = self.existing(app, token, &channel, row, &notice).await?;
        if notice.is_reply() {
            let Some(ts) = existing else { return Ok(()) };
            let body = json!({"channel": channel, "thread_ts": ts, "text": text, "blocks": blocks});
            self.call(token, "chat.postMessage", &body).await?;
            return self
                .attach_chart(app, token, &channel, row, &notice, Some(&ts))
                .await;
        }
        if let Some(ts) = existing
            && self.update(token, &channel, &ts, &text, &blocks).await?
        {
            return self
                .attach_chart(app, token, &channel, row, &notice, Some(&ts))
                .await;
        }
        let posted_ts = self.post(app, token, &channel, row, &text, &blocks).await?;
        self.attach_chart(app, token, &channel, row, &notice, posted_ts.as_deref())
            .await
    }

    /// The `ts` of the thread's message, if it was posted. A process that died mid-post
    /// may have posted it without a record: find it by the metadata we attach, so the
    /// retry edits it instead of posting a second one.
    async fn existing(
        &self,
        app: &App,
        token: &str,
        channel: &str,
        row: &OutboxRow,
        notice: &Notice,
    ) -> Result<Option<String>, DeliveryError> {
        let mut existing = app
            .db
            .message_ref(Platform::Slack.as_str(), channel, &row.thread_key)
            .await
            .map_err(|e| DeliveryError::Retry {
                after: None,
                reason: e.to_string(),
            })?;
        if existing.is_none() && !notice.is_reply() && row.maybe_delivered() {
            existing = self.find_posted(token, channel, &row.thread_key).await?;
            if let Some(ts) = &existing {
                let _ = app
                    .db
                    .set_message_ref(Platform::Slack.as_str(), channel, &row.thread_key, ts)
                    .await;
            }
        }
        Ok(existing)
    }

    /// Edit the thread's message `ts`. `Ok(false)`: it is gone, post a new one.
    async fn update(
        &self,
        token: &str,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<bool, DeliveryError> {
        let body = json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks});
        match self.call(token, "chat.update", &body).await {
            Err(DeliveryError::Gone(_)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Post the thread's message, with the metadata that finds it again; returns its `ts`.
    async fn post(
        &self,
        app: &App,
        token: &str,
        channel: &str,
        row: &OutboxRow,
        text: &str,
        blocks: &Value,
    ) -> Result<Option<String>, DeliveryError> {
        let body = json!({
            "channel": channel, "text": text, "blocks": blocks,
            "metadata": {"event_type": METADATA_EVENT, "event_payload": {"thread": row.thread_key}},
        });
        let answer = self.call(token, "chat.postMessage", &body).await?;
        // Remember the message first: a crash before the row is marked delivered then
        // makes the retry an idempotent update, never a second post.
        let posted_ts = answer.get("ts").and_then(Value::as_str);
        if let Some(ts) = posted_ts {
            let ch = answer
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or(channel);
            let _ = app
                .db
                .set_message_ref(Platform::Slack.as_str(), ch, &row.thread_key, ts)
                .await;
            if ch != channel {
                let _ = app
                    .db
                    .set_message_ref(Platform::Slack.as_str(), channel, &row.thread_key, ts)
                    .await;
            }
        }
        Ok(posted_ts.map(str::to_owned))
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
        classify(
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
    pub(super) async fn send(
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
        classify(status, after, method)?;
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
            "message_not_found" => Err(DeliveryError::Gone(format!("{method}: {err}"))),
            _ => Err(DeliveryError::Fatal(format!("{method}: {err}"))),
        }
    }
}

/// The wait Slack asks for in `Retry-After` (seconds).
pub(super) fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_millis((s * 1000.0) as u64))
}

impl crate::outbox::Deliver for SlackClient {
    fn platform(&self) -> &'static str {
        Platform::Slack.as_str()
    }
    fn pace(&self, edits: bool) -> (Scope, Duration) {
        if edits && self.edits {
            (Scope::Workspace, UPDATE_PACE)
        } else {
            (Scope::Channel, POST_PACE)
        }
    }
    fn edits_in_place(&self) -> bool {
        self.edits
    }
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> crate::outbox::Delivery<'a> {
        Box::pin(SlackClient::deliver(self, app, row))
    }
}
