//! Delivery to Discord with the bot token: one channel message per job, edited as it
//! moves, through the rate-limit buckets Discord announces; without a token or without a
//! channel, the job's final notice as a follow-up on its interaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::render::render;
use crate::app::App;
use crate::domain::notice::Notice;
use crate::domain::platform::Platform;
use crate::outbox::{DeliveryError, OutboxRow, Scope};
use crate::platform::classify;

/// Delivers notices as channel messages with the bot token, honouring rate-limit buckets.
pub struct DiscordClient {
    base: String,
    pub(super) http: reqwest::Client,
    /// Not before this instant, per route bucket (from `X-RateLimit-Remaining: 0`).
    waits: Mutex<HashMap<String, tokio::time::Instant>>,
    /// With a bot token, a job's or incident's one message is edited in place.
    edits: bool,
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
            edits: app.settings.secrets.discord_bot_token.is_some(),
        }
    }

    pub async fn deliver(&self, app: &App, row: &OutboxRow) -> Result<(), DeliveryError> {
        let Some(notice) = row.notice() else {
            return Err(DeliveryError::Fatal("unreadable notice".into()));
        };
        let Some(token) = &app.settings.secrets.discord_bot_token else {
            return self.deliver_by_interaction(app, row, &notice).await;
        };
        // An interaction without a channel (a DM, say) is answered on the interaction.
        let Some(channel) = row.channel.clone() else {
            return self.deliver_by_interaction(app, row, &notice).await;
        };
        let body = render(&notice);
        let existing = app
            .db
            .message_ref(Platform::Discord.as_str(), &channel, &row.thread_key)
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
        if let Some(id) = existing
            && self.edit(&channel, &id, &auth, &body).await?
        {
            return Ok(());
        }
        self.post(app, row, &channel, &auth, body, notice.attachment)
            .await
    }

    /// Edit the thread's message `id`. `Ok(false)`: it is gone, post a new one.
    async fn edit(
        &self,
        channel: &str,
        id: &str,
        auth: &str,
        body: &Value,
    ) -> Result<bool, DeliveryError> {
        match self
            .call(
                reqwest::Method::PATCH,
                &format!("/channels/{channel}/messages/{id}"),
                auth,
                body,
            )
            .await
        {
            Err(DeliveryError::Gone(_)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Post the thread's message (with its chart, if it has one) and remember it.
    async fn post(
        &self,
        app: &App,
        row: &OutboxRow,
        channel: &str,
        auth: &str,
        mut body: Value,
        attachment: Option<i64>,
    ) -> Result<(), DeliveryError> {
        let path = format!("/channels/{channel}/messages");
        // Discord drops a second message with the same nonce (and returns the first), so a
        // retry after a crash mid-post cannot post the job's message twice.
        body["nonce"] = json!(format!("dh{}", row.id));
        body["enforce_nonce"] = json!(true);
        let answer = match attachment {
            Some(file) => {
                self.post_with_chart(app, row, &path, auth, &body, file)
                    .await?
            }
            None => self.call(reqwest::Method::POST, &path, auth, &body).await?,
        };
        if let Some(id) = answer.get("id").and_then(Value::as_str) {
            let _ = app
                .db
                .set_message_ref(Platform::Discord.as_str(), channel, &row.thread_key, id)
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

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: &Value,
    ) -> Result<Value, DeliveryError> {
        self.call_with(method, path, auth, |r| r.json(body)).await
    }

    /// A request with the body `with_body` sets, through the rate-limit buckets.
    pub(super) async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, DeliveryError> {
        let bucket = route_bucket(path);
        self.wait_for(&bucket).await;
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
        self.note_limit(bucket, h);
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
        if status == 404 {
            return Err(DeliveryError::Gone(format!("{what}: HTTP 404")));
        }
        classify(status, None, &what)?;
        Ok(v)
    }

    /// Until the bucket's limit resets, if its last answer used it up.
    async fn wait_for(&self, bucket: &str) {
        let wait = self
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .copied();
        if let Some(t) = wait {
            tokio::time::sleep_until(t).await;
        }
    }

    /// An answer with `X-RateLimit-Remaining: 0` holds the bucket back until its reset.
    fn note_limit(&self, bucket: String, h: &reqwest::header::HeaderMap) {
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
    }
}

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
        Platform::Discord.as_str()
    }
    /// New messages and edits are separate route buckets, each per channel; the buckets
    /// Discord announces do the rest.
    fn pace(&self, _edits: bool) -> (Scope, Duration) {
        (Scope::Channel, Duration::from_millis(100))
    }
    fn edits_in_place(&self) -> bool {
        self.edits
    }
    fn deliver<'a>(&'a self, app: &'a App, row: &'a OutboxRow) -> crate::outbox::Delivery<'a> {
        Box::pin(DiscordClient::deliver(self, app, row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
