//! Digest charts on Slack: the external file upload, into the thread of the message the
//! chart belongs to.

use serde_json::{Value, json};

use super::client::{SlackClient, retry_after};
use crate::app::App;
use crate::domain::notice::Notice;
use crate::domain::platform::Platform;
use crate::outbox::{DeliveryError, OutboxRow};
use crate::platform::classify;

impl SlackClient {
    /// Upload a notice's chart, if it has one and it is not up yet, into the thread of the
    /// message just posted (`thread_ts`). The text is already out, so an upload that keeps
    /// failing is dropped after a few tries (or at once under a reply, whose retry would
    /// post the reply twice) rather than holding the message back.
    pub(super) async fn attach_chart(
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
            .message_ref(Platform::Slack.as_str(), channel, &done)
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
                    .set_message_ref(Platform::Slack.as_str(), channel, &done, &file_id)
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
        classify(r.status().as_u16(), retry_after(r.headers()), "file upload")?;
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
