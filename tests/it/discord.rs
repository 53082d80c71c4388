//! Discord end to end: the real `deckhand serve`, interactions signed with a test Ed25519
//! key, and a fake Discord REST API on 127.0.0.1.

use crate::common::fake::{FakeApi, Scripted};
use crate::common::*;
use deckhand::store::jobs::state;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const BOT: &str = "discord-test-bot-token";
const APP_ID: &str = "424242";

/// Takes a while.
fn slow() -> String {
    deploy_command("slow", "everyone", r#"["sh", "-c", "sleep 2"]"#)
}

struct Discord {
    ws: Workspace,
    fake: FakeApi,
    server: Server,
    key: SigningKey,
    http: reqwest::Client,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Discord {
    fn start() -> Discord {
        let ws = Workspace::new(
            Backend::Sqlite,
            "[environments.qa]\n[environments.gated]\napprovals = 1\n",
            &[
                ("slow.toml", &slow()),
                ("hang.toml", &hang_command()),
                ("ship.toml", &gated_ship_command()),
            ],
        )
        .unwrap();
        let fake = FakeApi::start();
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let server = Server::start(
            &ws,
            &[
                (
                    "DISCORD_PUBLIC_KEY",
                    &hex::encode(key.verifying_key().to_bytes()),
                ),
                ("DISCORD_BOT_TOKEN", BOT),
                ("DISCORD_APPLICATION_ID", APP_ID),
                ("DISCORD_API_URL", &fake.url("/api/v10")),
            ],
        );
        Discord {
            ws,
            fake,
            server,
            key,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, body: &Value, ts: i64, key: &SigningKey) -> reqwest::Response {
        let raw = body.to_string();
        let mut msg = ts.to_string().into_bytes();
        msg.extend_from_slice(raw.as_bytes());
        self.http
            .post(self.server.url("/discord/interactions"))
            .header("content-type", "application/json")
            .header(
                "x-signature-ed25519",
                hex::encode(key.sign(&msg).to_bytes()),
            )
            .header("x-signature-timestamp", ts.to_string())
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    /// A slash command; returns the ephemeral answer's text.
    async fn command(&self, user: &str, name: &str, options: &[(&str, &str)], id: &str) -> String {
        let opts: Vec<Value> = options
            .iter()
            .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
            .collect();
        let body = json!({
            "type": 2, "id": id, "token": format!("tok-{id}"), "channel_id": "777",
            "member": {"user": {"id": user}, "roles": []},
            "data": {"name": name, "options": opts},
        });
        let r = self.send(&body, now(), &self.key).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], 4);
        assert_eq!(v["data"]["flags"], 64, "answers are ephemeral");
        v["data"]["content"].as_str().unwrap().to_owned()
    }

    async fn click(&self, user: &str, custom_id: &str, id: &str) -> String {
        let body = json!({
            "type": 3, "id": id, "token": format!("tok-{id}"), "channel_id": "777",
            "member": {"user": {"id": user}, "roles": []},
            "data": {"custom_id": custom_id, "component_type": 2},
        });
        let v: Value = self
            .send(&body, now(), &self.key)
            .await
            .json()
            .await
            .unwrap();
        v["data"]["content"].as_str().unwrap_or("").to_owned()
    }
}

fn job_id(text: &str) -> i64 {
    let lower = text.to_lowercase();
    lower
        .split("job ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_bad_signatures_get_401() {
    let d = Discord::start();
    let ping = json!({"type": 1, "id": "p1"});
    let r = d.send(&ping, now(), &d.key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"type": 1}));

    let deploy = json!({"type": 2, "id": "x1", "channel_id": "777", "member": {"user": {"id": "1001"}, "roles": []},
        "data": {"name": "deploy", "options": [{"name": "environment", "value": "staging"}, {"name": "version", "value": "abc1234"}]}});
    let forger = SigningKey::from_bytes(&[1u8; 32]);
    assert_eq!(d.send(&deploy, now(), &forger).await.status(), 401);
    assert_eq!(d.send(&deploy, now() - 600, &d.key).await.status(), 401);
    let unsigned = d
        .http
        .post(d.server.url("/discord/interactions"))
        .body(deploy.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let app = d.ws.app(&[]).await;
    assert!(app.db.recent_jobs(5).await.unwrap().is_empty());
    assert!(d.fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_ends_in_one_message_edited_into_a_report() {
    let d = Discord::start();
    let text = d
        .command(
            "1001",
            "deploy",
            &[("environment", "staging"), ("version", "abc1234")],
            "i1",
        )
        .await;
    assert!(
        text.starts_with("Queued deploy abc1234 → staging as job"),
        "{text}"
    );
    let again = d
        .command(
            "1001",
            "deploy",
            &[("environment", "staging"), ("version", "abc1234")],
            "i1",
        )
        .await;
    assert!(
        again.starts_with("Already received"),
        "a repeated interaction id makes one job: {again}"
    );
    let app = d.ws.app(&[]).await;
    assert_eq!(app.db.recent_jobs(5).await.unwrap().len(), 1);
    wait_state(&app, job_id(&text), state::SUCCEEDED).await;
    let last = eventually(20, "the report", || async {
        let patches = d.fake.ok_calls("/messages/900000000000000001");
        patches
            .last()
            .filter(|c| c.body.to_string().contains("Deployed abc1234 to staging"))
            .cloned()
    })
    .await;
    let posts: Vec<_> = d
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path == "/api/v10/channels/777/messages")
        .collect();
    assert_eq!(posts.len(), 1, "one message per job");
    assert_eq!(posts[0].auth.as_deref(), Some(&*format!("Bot {BOT}")));
    assert_eq!(last.method, "PATCH");
    let embed = &last.body["embeds"][0];
    let fields = embed["fields"].to_string();
    for want in ["staging", "abc1234", "verified working", "returning 200"] {
        assert!(fields.contains(want), "{want} missing: {fields}");
    }
    assert_eq!(embed["color"], 0x57F287, "green for success");
    assert_eq!(
        last.body["components"][0]["components"][0]["custom_id"],
        format!("rollback:{}", job_id(&text))
    );
    assert!(
        !d.server.output().contains(BOT),
        "the bot token reached a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_check_roles() {
    let d = Discord::start();
    let app = d.ws.app(&[]).await;
    let text = d
        .command(
            "1001",
            "ship",
            &[("environment", "gated"), ("version", "v1")],
            "s1",
        )
        .await;
    let id = job_id(&text);
    assert!(
        d.click("1001", &format!("approve:{id}"), "b1")
            .await
            .contains("two-person rule")
    );
    assert!(
        d.click("5555", &format!("approve:{id}"), "b2")
            .await
            .contains("needs the \"deployer\" role")
    );
    assert!(
        d.click("1002", &format!("approve:{id}"), "b3")
            .await
            .contains("approved by discord:1002")
    );
    wait_state(&app, id, state::SUCCEEDED).await;

    let text = d
        .command(
            "5555",
            "hang",
            &[("environment", "qa"), ("version", "v9")],
            "s2",
        )
        .await;
    let id = job_id(&text);
    wait_state(&app, id, state::RUNNING).await;
    assert!(
        d.click("6666", &format!("cancel:{id}"), "b4")
            .await
            .contains("refused by role rule")
    );
    assert!(
        d.click("5555", &format!("cancel:{id}"), "b5")
            .await
            .contains("Cancelling job")
    );
    eventually(20, "the job to be cancelled", || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| j.state == state::CANCELLED)
            .map(|_| ())
    })
    .await;

    for (v, i) in [("abc1234", "s3"), ("def5678", "s4")] {
        let t = d
            .command(
                "1001",
                "deploy",
                &[("environment", "staging"), ("version", v)],
                i,
            )
            .await;
        wait_state(&app, job_id(&t), state::SUCCEEDED).await;
    }
    let last = app.db.current_deployment("staging").await.unwrap().unwrap();
    let told = d
        .click("1001", &format!("rollback:{}", last.job_id), "b6")
        .await;
    assert!(told.contains("rollback abc1234 → staging"), "{told}");
    wait_state(&app, job_id(&told), state::SUCCEEDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_errors_lose_and_duplicate_nothing() {
    let d = Discord::start();
    d.fake
        .fail_next([Scripted::discord_429(0.5), Scripted::discord_429(0.3)]);
    d.fake.fail_next((0..3).map(|_| Scripted::status(500)));
    let text = d
        .command(
            "1001",
            "slow",
            &[("environment", "qa"), ("version", "v1")],
            "r1",
        )
        .await;
    let id = job_id(&text);
    let app = d.ws.app(&[]).await;
    wait_state(&app, id, state::SUCCEEDED).await;
    eventually(60, "every notice delivered", || async {
        (app.db.outbox_depth().await.unwrap().is_empty() && d.fake.pending_script() == 0)
            .then_some(())
    })
    .await;
    // Sent: every notice once, in order, except the states a newer one made unnecessary
    // while the channel was paused (each recorded as superseded, never sent).
    let rows = app.db.job_notices(id, "discord", 0).await.unwrap();
    let titles: Vec<String> = rows
        .iter()
        .filter(|r| !superseded(r))
        .map(|r| r.notice().unwrap().title)
        .collect();
    assert_eq!(
        rows.last().map(superseded),
        Some(false),
        "the last state is sent"
    );
    let sent: Vec<(String, String)> = d
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.status < 300)
        .map(|c| {
            (
                c.method.clone(),
                c.body["embeds"][0]["title"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sent.len(),
        titles.len(),
        "each notice not superseded exactly once:\n{sent:#?}\n{titles:#?}"
    );
    for ((_, got), want) in sent.iter().zip(&titles) {
        assert!(
            got.ends_with(want.as_str()),
            "out of order: {got} vs {want}"
        );
    }
    assert_eq!(sent[0].0, "POST");
    assert!(sent[1..].iter().all(|s| s.0 == "PATCH"));
    assert_eq!(d.fake.calls().iter().filter(|c| c.status >= 400).count(), 5);
}

#[test]
fn register_sends_every_command_with_environments_as_choices() {
    let ws = Workspace::new(Backend::Sqlite, "", &[("slow.toml", &slow())]).unwrap();
    let fake = FakeApi::start();
    let out = ws
        .cmd(&["discord", "register", "--guild", "31337"])
        .env("DISCORD_APPLICATION_ID", APP_ID)
        .env("DISCORD_BOT_TOKEN", BOT)
        .env("DISCORD_API_URL", fake.url("/api/v10"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "PUT");
    assert_eq!(
        calls[0].path,
        format!("/api/v10/applications/{APP_ID}/guilds/31337/commands")
    );
    assert_eq!(calls[0].auth.as_deref(), Some(&*format!("Bot {BOT}")));
    let cmds = calls[0].body.as_array().unwrap();
    let names: Vec<&str> = cmds.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for f in std::fs::read_dir(ws.dir.path().join("commands")).unwrap() {
        let name = f
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            names.contains(&name.as_str()),
            "{name} missing from {names:?}"
        );
    }
    for builtin in ["help", "status", "approve", "lock"] {
        assert!(names.contains(&builtin));
    }
    let deploy = cmds.iter().find(|c| c["name"] == "deploy").unwrap();
    let env = deploy["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "environment")
        .unwrap();
    let choices: Vec<&str> = env["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_str().unwrap())
        .collect();
    assert_eq!(choices, ["production", "staging"]);
    assert_eq!(env["type"], 3);
    assert_eq!(env["required"], true);
}
