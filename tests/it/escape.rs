//! User text is text: one hostile lock reason sent through lock, lock reminder, status,
//! "refused by lock rule" and an emergency override on Slack, Discord and the terminal.

use crate::common::fake::FakeApi;
use crate::common::*;
use deckhand::platform::slack::signature;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

/// A Slack channel ping, a Slack link dressed as a login prompt, a Slack mention, a Discord
/// masked link, a Discord `@everyone`, Discord mention syntax and bold.
const HOSTILE: &str = "<!channel> <http://evil.example/login|Deckhand session expired> <@U123> [login](http://evil.example) @everyone <@&42> **now**";

/// Raw pieces that must never reach a platform unescaped.
const SLACK_RAW: &[&str] = &["<!channel>", "<http://evil", "<@U123>", "<@&42>"];
const DISCORD_RAW: &[&str] = &["<@U123>", "<@&42>", "[login](", "**now**", "<!channel>"];

const CONFIG: &str = "[locks]\nremind_after_seconds = 1\n";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assert_no_raw(what: &str, text: &str, raw: &[&str]) {
    for r in raw {
        assert!(!text.contains(r), "{what} carries {r:?} unescaped: {text}");
    }
}

const SLACK_SECRET: &str = "test-signing-secret-1234";

async fn slack_command(
    http: &reqwest::Client,
    server: &Server,
    fake: &FakeApi,
    user: &str,
    text: &str,
    trigger: &str,
) -> String {
    let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
    let body = serde_urlencoded::to_string([
        ("team_id", "T1"),
        ("channel_id", "CDEPLOYS"),
        ("user_id", user),
        ("command", &format!("/{cmd}")),
        ("text", rest),
        ("response_url", &fake.url(&format!("/response/{trigger}"))),
        ("trigger_id", trigger),
    ])
    .unwrap();
    let ts = now().to_string();
    let r = http
        .post(server.url("/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header(
            "x-slack-signature",
            signature(SLACK_SECRET.as_bytes(), &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["text"].as_str().unwrap().to_owned()
}

/// The posted message (top-level `text` and blocks) whose text contains `needle`.
async fn slack_post(fake: &FakeApi, needle: &str) -> Value {
    eventually(30, needle, || async {
        fake.ok_calls("/api/chat.postMessage")
            .into_iter()
            .chain(fake.ok_calls("/api/chat.update"))
            .map(|c| c.body)
            .find(|b| b["text"].as_str().is_some_and(|t| t.contains(needle)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lock_reason_is_escaped_in_every_slack_field() {
    let ws = Workspace::new(Backend::Sqlite, CONFIG, &[]).unwrap();
    let fake = FakeApi::start();
    let server = Server::start(
        &ws,
        &[
            ("SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("SLACK_BOT_TOKEN", "xoxb-test"),
            ("SLACK_API_URL", &fake.url("/api")),
        ],
    );
    let http = reqwest::Client::new();
    let escaped =
        "&lt;!channel&gt; &lt;http://evil.example/login|Deckhand session expired&gt; &lt;@U123&gt;";

    // Lock: the ephemeral answer and the channel's message.
    let said = slack_command(
        &http,
        &server,
        &fake,
        "UDEPLOYER",
        &format!("lock staging {HOSTILE}"),
        "t1",
    )
    .await;
    assert!(said.contains(escaped), "{said}");
    assert_no_raw("the lock answer", &said, SLACK_RAW);
    let lock = slack_post(&fake, "staging locked by slack:T1:UDEPLOYER").await;
    assert!(lock["text"].as_str().unwrap().contains(escaped), "{lock}");
    assert!(lock["blocks"].to_string().contains(escaped), "{lock}");

    // The reminder, a second later.
    let reminder = slack_post(&fake, "Reminder: staging has been locked").await;
    assert!(
        reminder["text"].as_str().unwrap().contains(escaped),
        "{reminder}"
    );

    // Status and the lock rule's refusal.
    let status = slack_command(&http, &server, &fake, "UNOBODY", "status staging", "t2").await;
    assert!(
        status.contains("LOCKED") && status.contains(escaped),
        "{status}"
    );
    let refused = slack_command(
        &http,
        &server,
        &fake,
        "UADMIN",
        "deploy staging abc1234",
        "t3",
    )
    .await;
    assert!(
        refused.contains("refused by lock rule") && refused.contains(escaped),
        "{refused}"
    );

    // An emergency override with the same text as its reason.
    let said = slack_command(
        &http,
        &server,
        &fake,
        "UADMIN",
        &format!("deploy production zzz9999 --emergency \"{HOSTILE}\""),
        "t4",
    )
    .await;
    assert_no_raw("the emergency answer", &said, SLACK_RAW);
    let emergency = slack_post(&fake, "EMERGENCY OVERRIDE by slack:T1:UADMIN").await;
    assert!(
        emergency["text"].as_str().unwrap().contains(escaped),
        "{emergency}"
    );

    // Nothing Deckhand sent to Slack (posts, updates, response_url answers) carries it raw.
    let calls = fake.calls();
    assert!(!calls.is_empty());
    for c in calls {
        assert_no_raw(&c.path, &c.body.to_string(), SLACK_RAW);
    }
}

const DISCORD_APP: &str = "424242";

async fn discord_command(
    http: &reqwest::Client,
    server: &Server,
    key: &SigningKey,
    user: &str,
    name: &str,
    options: &[(&str, &str)],
    id: &str,
) -> Value {
    let opts: Vec<Value> = options
        .iter()
        .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
        .collect();
    let body = json!({
        "type": 2, "id": id, "token": format!("tok-{id}"), "channel_id": "777",
        "member": {"user": {"id": user}, "roles": []},
        "data": {"name": name, "options": opts},
    })
    .to_string();
    let ts = now().to_string();
    let mut msg = ts.clone().into_bytes();
    msg.extend_from_slice(body.as_bytes());
    let r = http
        .post(server.url("/discord/interactions"))
        .header("content-type", "application/json")
        .header(
            "x-signature-ed25519",
            hex::encode(key.sign(&msg).to_bytes()),
        )
        .header("x-signature-timestamp", ts)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["data"]["allowed_mentions"],
        json!({"parse": []}),
        "an answer pings no one: {v}"
    );
    assert_no_raw("an answer", &v.to_string(), DISCORD_RAW);
    v
}

fn content(v: &Value) -> String {
    v["data"]["content"].as_str().unwrap().to_owned()
}

/// The channel message (as posted or edited) whose embed title contains `needle`.
async fn discord_message(fake: &FakeApi, needle: &str) -> Value {
    eventually(30, needle, || async {
        fake.calls()
            .into_iter()
            .filter(|c| c.path.starts_with("/api/v10/channels/777/messages"))
            .map(|c| c.body)
            .find(|b| {
                b["embeds"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains(needle))
            })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lock_reason_is_escaped_in_every_discord_message() {
    let ws = Workspace::new(Backend::Sqlite, CONFIG, &[]).unwrap();
    let fake = FakeApi::start();
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let server = Server::start(
        &ws,
        &[
            (
                "DISCORD_PUBLIC_KEY",
                &hex::encode(key.verifying_key().to_bytes()),
            ),
            ("DISCORD_BOT_TOKEN", "discord-test-bot-token"),
            ("DISCORD_APPLICATION_ID", DISCORD_APP),
            ("DISCORD_API_URL", &fake.url("/api/v10")),
        ],
    );
    let http = reqwest::Client::new();
    let escaped = r"\<!channel\> \<http://evil.example/login\|Deckhand session expired\> \<\@U123\> \[login\](http://evil.example) \@everyone \<\@&42\> \*\*now\*\*";

    let v = discord_command(
        &http,
        &server,
        &key,
        "1001",
        "lock",
        &[("environment", "staging"), ("reason", HOSTILE)],
        "i1",
    )
    .await;
    assert!(content(&v).contains(escaped), "{v}");
    let lock = discord_message(&fake, "staging locked by discord:1001").await;
    assert!(
        lock["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains(escaped),
        "{lock}"
    );
    let reminder = discord_message(&fake, "Reminder: staging has been locked").await;
    assert!(
        reminder["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains(r"\<!channel\>"),
        "{reminder}"
    );
    assert!(
        reminder["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains(". Run `unlock staging` when it is safe"),
        "{reminder}"
    );

    let v = discord_command(
        &http,
        &server,
        &key,
        "1005",
        "status",
        &[("environment", "staging")],
        "i2",
    )
    .await;
    assert!(content(&v).contains(escaped), "{v}");
    let v = discord_command(
        &http,
        &server,
        &key,
        "1009",
        "deploy",
        &[("environment", "staging"), ("version", "abc1234")],
        "i3",
    )
    .await;
    assert!(
        content(&v).contains("refused by lock rule") && content(&v).contains(escaped),
        "{v}"
    );
    // The bot's own formatting survives next to the escaped reason: its hint stays a code
    // span, not "\`unlock staging\`".
    assert!(
        content(&v).ends_with("Ask them, or run `unlock staging` once it is safe"),
        "{v}"
    );
    discord_command(
        &http,
        &server,
        &key,
        "1009",
        "deploy",
        &[
            ("environment", "production"),
            ("version", "zzz9999"),
            ("emergency", HOSTILE),
        ],
        "i4",
    )
    .await;
    let emergency = discord_message(&fake, "EMERGENCY OVERRIDE by discord:1009").await;
    assert!(
        emergency["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains(r"\[login\](http://evil.example)"),
        "{emergency}"
    );

    // Every message Deckhand sent disables mentions and carries no raw markup.
    let calls = fake.calls();
    assert!(!calls.is_empty());
    for c in calls {
        if c.body.get("embeds").is_some() || c.body.get("content").is_some() {
            assert_eq!(
                c.body["allowed_mentions"],
                json!({"parse": []}),
                "{} {}: {}",
                c.method,
                c.path,
                c.body
            );
        }
        assert_no_raw(&c.path, &c.body.to_string(), DISCORD_RAW);
    }
}

#[test]
fn hostile_lock_reason_is_shown_as_itself_in_the_terminal() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let (code, out, err) = ws.run(&["lock", "staging", HOSTILE]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(HOSTILE), "{out}");
    let (_, status, _) = ws.run(&["status", "staging"]);
    assert!(status.contains(HOSTILE), "{status}");
    let (code, out, err) = ws.run(&["deploy", "staging", "abc1234"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("refused by lock rule") && err.contains(HOSTILE),
        "{out}{err}"
    );
}
