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
    /// The workspace the command was typed in (`T…`).
    #[serde(default)]
    pub team_id: Option<String>,
    /// The Enterprise Grid organisation of that workspace (`E…`), if any.
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// The app the command was sent to (`A…`).
    #[serde(default)]
    pub api_app_id: Option<String>,
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
    pub user: ActionUser,
    #[serde(default)]
    pub channel: Option<IdOnly>,
    /// The workspace the click came from; `enterprise_id` on Enterprise Grid.
    #[serde(default)]
    pub team: Option<Team>,
    #[serde(default)]
    pub enterprise: Option<IdOnly>,
    #[serde(default)]
    pub api_app_id: Option<String>,
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

/// Who clicked. `team_id` is the user's own team: in a Slack Connect channel, the connected
/// organisation's; on Enterprise Grid, the organisation (`E…`).
#[derive(Debug, Deserialize)]
pub struct ActionUser {
    pub id: String,
    #[serde(default)]
    pub team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub enterprise_id: Option<String>,
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
