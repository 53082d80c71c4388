//! A `deckhand serve` with Slack, Discord and alerts all on, against one fake API, and
//! requests signed as each platform signs them, from a chosen client address.

use serde_json::{Value, json};

use super::fake::FakeApi;
use super::{Backend, Server, Workspace};
use deckhand::platform::slack::signature;
use ed25519_dalek::{Signer, SigningKey};

pub const SLACK_SECRET: &str = "chat-test-signing-secret";
pub const ALERT_TOKEN: &str = "chat-test-alert-token";
/// The header the server takes the client's address from, so one test plays many clients.
pub const CLIENT_HEADER: &str = "X-Test-Client";

pub struct Chat {
    pub ws: Workspace,
    pub fake: FakeApi,
    pub server: Server,
    pub http: reqwest::Client,
    pub key: SigningKey,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A slash command's form body as Slack sends it.
pub fn slash(team: &str, user: &str, text: &str, trigger: &str, fake: &FakeApi) -> String {
    let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
    serde_urlencoded::to_string([
        ("team_id", team),
        ("api_app_id", "A0APP"),
        ("channel_id", "CDEPLOYS"),
        ("user_id", user),
        ("command", &format!("/{cmd}")),
        ("text", rest),
        ("response_url", &fake.url(&format!("/response/{trigger}"))),
        ("trigger_id", trigger),
    ])
    .unwrap()
}

/// A block_actions click: `team` is where it happened, `user_team` the clicker's own team.
pub fn click(
    team: &str,
    user_team: &str,
    user: &str,
    action: &str,
    value: &str,
    trigger: &str,
    fake: &FakeApi,
) -> Value {
    json!({
        "type": "block_actions",
        "api_app_id": "A0APP",
        "team": {"id": team, "domain": "x"},
        "user": {"id": user, "team_id": user_team},
        "channel": {"id": "CDEPLOYS"},
        "trigger_id": trigger,
        "response_url": fake.url(&format!("/response/{trigger}")),
        "actions": [{"action_id": action, "value": value, "action_ts": "1"}],
    })
}

/// A Discord slash command; `guild` `None` is a direct message.
pub fn interaction(
    id: &str,
    guild: Option<&str>,
    user: &str,
    name: &str,
    options: &[(&str, &str)],
) -> Value {
    let opts: Vec<Value> = options
        .iter()
        .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
        .collect();
    let mut v = json!({
        "type": 2, "id": id, "token": format!("tok-{id}"), "channel_id": "777",
        "data": {"name": name, "options": opts},
    });
    match guild {
        Some(g) => {
            v["guild_id"] = json!(g);
            v["member"] = json!({"user": {"id": user}, "roles": []});
        }
        None => v["user"] = json!({"id": user}),
    }
    v
}

impl Chat {
    pub fn start(
        backend: Backend,
        extra_config: &str,
        commands: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Option<Chat> {
        let ws = Workspace::new(backend, extra_config, commands)?;
        let fake = FakeApi::start();
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let public = hex::encode(key.verifying_key().to_bytes());
        let slack_api = fake.url("/api");
        let discord_api = fake.url("/api/v10");
        let mut vars = vec![
            ("SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("SLACK_BOT_TOKEN", "xoxb-chat-test"),
            ("SLACK_API_URL", slack_api.as_str()),
            ("DISCORD_PUBLIC_KEY", public.as_str()),
            ("DISCORD_BOT_TOKEN", "discord-chat-test"),
            ("DISCORD_APPLICATION_ID", "424242"),
            ("DISCORD_API_URL", discord_api.as_str()),
            ("DECKHAND_ALERT_TOKEN", ALERT_TOKEN),
            ("DECKHAND__SERVER__CLIENT_IP_HEADER", CLIENT_HEADER),
        ];
        vars.extend_from_slice(env);
        let server = Server::start(&ws, &vars);
        Some(Chat {
            ws,
            fake,
            server,
            http: reqwest::Client::new(),
            key,
        })
    }

    fn post(&self, path: &str, client: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.server.url(path))
            .header(CLIENT_HEADER, client)
    }

    /// POST a Slack form body signed with `secret` from `client`.
    pub async fn slack_as(
        &self,
        path: &str,
        body: &str,
        secret: &str,
        client: &str,
    ) -> reqwest::Response {
        let ts = now().to_string();
        self.post(path, client)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                signature(secret.as_bytes(), &ts, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// A correctly signed slash command: (status, ephemeral text).
    pub async fn command(&self, body: &str, client: &str) -> (u16, String) {
        let r = self
            .slack_as("/slack/commands", body, SLACK_SECRET, client)
            .await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        (status, v["text"].as_str().unwrap_or("").to_owned())
    }

    /// A correctly signed click: the status (the answer goes to its `response_url`).
    pub async fn click(&self, payload: &Value, client: &str) -> u16 {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.slack_as("/slack/interactions", &body, SLACK_SECRET, client)
            .await
            .status()
            .as_u16()
    }

    /// What a click's clicker was told privately (posted to its `response_url`).
    pub async fn told(&self, trigger: &str) -> String {
        self.fake.told(trigger).await
    }

    /// POST a Discord interaction signed with `key` from `client`.
    pub async fn discord_as(
        &self,
        body: &Value,
        key: &SigningKey,
        client: &str,
    ) -> reqwest::Response {
        let raw = body.to_string();
        let ts = now().to_string();
        let mut msg = ts.clone().into_bytes();
        msg.extend_from_slice(raw.as_bytes());
        self.post("/discord/interactions", client)
            .header("content-type", "application/json")
            .header(
                "x-signature-ed25519",
                hex::encode(key.sign(&msg).to_bytes()),
            )
            .header("x-signature-timestamp", ts)
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    /// A correctly signed interaction: (status, the ephemeral answer's text).
    pub async fn discord(&self, body: &Value, client: &str) -> (u16, String) {
        let r = self.discord_as(body, &self.key, client).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v["data"]["content"].as_str() {
            Some(c) => (status, c.to_owned()),
            None => (status, text),
        }
    }

    /// An alert with `token` from `client`: the status.
    pub async fn alert(&self, token: &str, client: &str) -> u16 {
        self.post("/alerts/generic", client)
            .header("authorization", format!("Bearer {token}"))
            .json(&json!({"title": "disk full", "severity": "warning", "environment": "staging"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}
