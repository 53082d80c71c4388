//! Digest charts on Discord: the message and its chart in one multipart request, the
//! chart shown inside the embed.

use serde_json::{Value, json};

use super::client::DiscordClient;
use crate::app::App;
use crate::outbox::{DeliveryError, OutboxRow};

impl DiscordClient {
    /// Post the message with its chart as `files[0]` of a multipart request, shown inside
    /// the embed (`attachment://NAME`). The text matters more than the picture: when the
    /// upload is refused, or keeps failing, the message goes without it.
    pub(super) async fn post_with_chart(
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
