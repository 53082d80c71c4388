//! The bodies Slack sends: a form-encoded slash command, and an interaction whose
//! `payload` field holds the JSON of a button click.

use serde::Deserialize;

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
