//! Slack end to end: the real `deckhand serve`, correctly signed requests, and a fake Slack
//! Web API on 127.0.0.1 that records what the bot sent.

use std::time::Duration;

use crate::common::fake::{FakeApi, Scripted};
use crate::common::*;
use deckhand::platform::slack::signature;
use deckhand::store::jobs::state;
use serde_json::Value;

const SECRET: &str = "test-signing-secret-1234";
const TOKEN: &str = "xoxb-test-bot-token";

struct Slack {
    ws: Workspace,
    fake: FakeApi,
    server: Server,
    http: reqwest::Client,
}

/// Takes a while.
fn slow() -> String {
    deploy_command("slow", "everyone", r#"["sh", "-c", "sleep 3"]"#)
}

impl Slack {
    fn start() -> Slack {
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
        let server = Server::start(
            &ws,
            &[
                ("SLACK_SIGNING_SECRET", SECRET),
                ("SLACK_BOT_TOKEN", TOKEN),
                ("SLACK_API_URL", &fake.url("/api")),
            ],
        );
        Slack {
            ws,
            fake,
            server,
            http: reqwest::Client::new(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    async fn post_signed(
        &self,
        path: &str,
        body: &str,
        ts: i64,
        secret: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                signature(secret.as_bytes(), &ts.to_string(), body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// A slash command as Slack sends it; returns (status, ephemeral text).
    async fn command(&self, user: &str, text: &str, trigger: &str) -> (u16, String) {
        let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
        let body = serde_urlencoded::to_string([
            ("token", "legacy"),
            ("team_id", "T1"),
            ("channel_id", "CDEPLOYS"),
            ("user_id", user),
            ("command", &format!("/{cmd}")),
            ("text", rest),
            (
                "response_url",
                &self.fake.url(&format!("/response/{trigger}")),
            ),
            ("trigger_id", trigger),
        ])
        .unwrap();
        let r = self
            .post_signed("/slack/commands", &body, Self::now(), SECRET)
            .await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        (status, v["text"].as_str().unwrap_or("").to_owned())
    }

    async fn click(&self, user: &str, action: &str, job: i64, trigger: &str) -> u16 {
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": user},
            "channel": {"id": "CDEPLOYS"},
            "trigger_id": trigger,
            "response_url": self.fake.url(&format!("/response/{trigger}")),
            "actions": [{"action_id": action, "value": job.to_string(), "action_ts": "1"}],
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.post_signed("/slack/interactions", &body, Self::now(), SECRET)
            .await
            .status()
            .as_u16()
    }

    async fn app(&self) -> std::sync::Arc<deckhand::app::App> {
        self.ws.app(&[]).await
    }

    /// What the clicker was told privately.
    async fn told(&self, trigger: &str) -> String {
        self.fake.told(trigger).await
    }
}

fn job_id(text: &str) -> i64 {
    text.to_lowercase()
        .split("job ")
        .nth(1)
        .map(str::to_owned)
        .as_deref()
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

/// Every message text the fake received for a channel, in order.
fn texts(fake: &FakeApi) -> Vec<(String, String)> {
    fake.calls()
        .into_iter()
        .filter(|c| c.status < 300 && c.path.starts_with("/api/chat."))
        .map(|c| {
            (
                c.path.clone(),
                c.body["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_gives_one_message_updated_into_a_report() {
    let s = Slack::start();
    let (status, text) = s.command("UALICE", "deploy staging abc1234", "t1").await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with("Queued deploy abc1234 → staging as job "),
        "{text}"
    );
    let app = s.app().await;
    let id = job_id(&text);
    wait_state(&app, id, state::SUCCEEDED).await;
    let calls = eventually(20, "the report on Slack", || async {
        let all = s.fake.ok_calls("/api/chat.update");
        all.last()
            .filter(|c| {
                c.body["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Deployed abc1234")
            })
            .map(|_| s.fake.calls())
    })
    .await;
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.path == "/api/chat.postMessage" && c.status == 200)
        .collect();
    assert_eq!(posts.len(), 1, "one message per job: {posts:?}");
    assert_eq!(posts[0].body["channel"], "CDEPLOYS");
    assert_eq!(posts[0].auth.as_deref(), Some(&*format!("Bearer {TOKEN}")));
    let last = s.fake.ok_calls("/api/chat.update").last().unwrap().clone();
    let blocks = last.body["blocks"].to_string();
    for want in [
        "staging",
        "abc1234",
        &format!(
            "http://127.0.0.1:{}/health returning 200",
            s.ws.staging_port
        ),
        "verified working",
    ] {
        assert!(
            blocks.contains(want),
            "{want} missing from the report: {blocks}"
        );
    }
    // The report carries a Rollback button.
    assert!(blocks.contains("\"action_id\":\"rollback\""), "{blocks}");
    // The bot token never appears in what the server logged.
    assert!(!s.server.output().contains(TOKEN));
    assert!(!s.server.output().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_unsigned_and_oversized_requests_create_nothing() {
    let s = Slack::start();
    let body = "command=%2Fdeploy&text=staging+abc1234&user_id=U1&channel_id=C1&trigger_id=x1";
    let now = Slack::now();
    assert_eq!(
        s.post_signed("/slack/commands", body, now, "wrong-secret")
            .await
            .status(),
        401
    );
    assert_eq!(
        s.post_signed("/slack/commands", body, now - 600, SECRET)
            .await
            .status(),
        401
    );
    let unsigned = s
        .http
        .post(s.server.url("/slack/commands"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // Over the 16 KiB limit: a correctly signed body is still refused for its size. Sent
    // on a raw socket, since the server answers before reading it all.
    let big = format!("{body}&pad={}", "a".repeat(20 * 1024));
    let sig = signature(SECRET.as_bytes(), &now.to_string(), big.as_bytes());
    let head = format!(
        "POST /slack/commands HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\nx-slack-request-timestamp: {now}\r\nx-slack-signature: {sig}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        big.len()
    );
    let (status, _, _) = raw_http(s.server.port, &[head.as_bytes(), big.as_bytes()].concat());
    assert_eq!(status, 413);
    let forged_click = s
        .post_signed("/slack/interactions", "payload=%7B%7D", now, "nope")
        .await;
    assert_eq!(forged_click.status(), 401);
    let app = s.app().await;
    assert!(app.db.recent_jobs(10).await.unwrap().is_empty());
    assert!(s.fake.calls().is_empty());
    let metrics = http_get(&s.server.url("/metrics")).unwrap().1;
    assert!(
        metrics.contains("deckhand_commands_total{platform=\"slack\",outcome=\"bad_signature\"} 4"),
        "{metrics}"
    );
    // Nothing of the refused bodies reached the log.
    assert!(!s.server.output().contains("abc1234"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_trigger_id_makes_one_job() {
    let s = Slack::start();
    let (_, a) = s.command("UALICE", "slow qa v1", "same-trigger").await;
    let (_, b) = s.command("UALICE", "slow qa v1", "same-trigger").await;
    assert_eq!(job_id(&a), job_id(&b));
    assert!(b.starts_with("Already received"), "{b}");
    let app = s.app().await;
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledgement_does_not_wait_for_the_job() {
    let s = Slack::start();
    let started = std::time::Instant::now();
    let (status, text) = s.command("UALICE", "slow qa v1", "t-ack").await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let app = s.app().await;
    let j = app.db.job(job_id(&text)).await.unwrap().unwrap();
    assert!(
        !state::is_final(&j.state),
        "the job (a 3 s step) already ended before the answer: {j:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    wait_state(&app, j.id, state::SUCCEEDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_approve_cancel_and_roll_back_with_role_checks() {
    let s = Slack::start();
    let app = s.app().await;
    // Approve: the requester cannot, someone without the role cannot, a deployer can.
    let (_, text) = s.command("UDEPLOYER", "ship gated v1", "g1").await;
    let id = job_id(&text);
    assert_eq!(
        app.db.job(id).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    assert_eq!(s.click("UDEPLOYER", "approve", id, "c1").await, 200);
    assert!(s.told("c1").await.contains("two-person rule"));
    assert_eq!(s.click("UNOBODY", "approve", id, "c2").await, 200);
    assert!(s.told("c2").await.contains("needs the \"deployer\" role"));
    assert_eq!(
        app.db.job(id).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    assert_eq!(s.click("UAPPROVER", "approve", id, "c3").await, 200);
    wait_state(&app, id, state::SUCCEEDED).await;

    // Cancel a running job: another user without the role cannot; the requester can.
    let (_, text) = s.command("UALICE", "hang qa v2", "g2").await;
    let id = job_id(&text);
    wait_state(&app, id, state::RUNNING).await;
    s.click("UBOB", "cancel", id, "c4").await;
    assert!(s.told("c4").await.contains("refused by role rule"));
    s.click("UALICE", "cancel", id, "c5").await;
    assert!(s.told("c5").await.contains("Cancelling job"));
    wait_state(&app, id, state::CANCELLED).await;

    // Roll back from a completed deploy's button, with the same rule as typing /rollback.
    for (v, t) in [("abc1234", "d1"), ("def5678", "d2")] {
        let (_, text) = s.command("UALICE", &format!("deploy staging {v}"), t).await;
        wait_state(&app, job_id(&text), state::SUCCEEDED).await;
    }
    let deployed = app.db.current_deployment("staging").await.unwrap().unwrap();
    assert_eq!(
        s.click("UALICE", "rollback", deployed.job_id, "c6").await,
        200
    );
    let told = s.told("c6").await;
    assert!(told.contains("rollback abc1234 → staging"), "{told}");
    wait_state(&app, job_id(&told), state::SUCCEEDED).await;
    assert_eq!(
        app.db
            .current_deployment("staging")
            .await
            .unwrap()
            .unwrap()
            .version,
        "abc1234"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_lose_and_duplicate_nothing() {
    let s = Slack::start();
    // Slack says 429 twice, then is down (500) for a while, then recovers.
    s.fake
        .fail_next([Scripted::slack_429(1), Scripted::slack_429(1)]);
    s.fake.fail_next((0..4).map(|_| Scripted::status(500)));
    let mut ids = Vec::new();
    for (i, env) in ["qa", "staging"].iter().enumerate() {
        let v = if *env == "qa" { "v1" } else { "abc1234" };
        let cmd = if *env == "qa" { "slow" } else { "deploy" };
        let (_, text) = s
            .command("UALICE", &format!("{cmd} {env} {v}"), &format!("r{i}"))
            .await;
        ids.push(job_id(&text));
    }
    let app = s.app().await;
    for id in &ids {
        wait_state(&app, *id, state::SUCCEEDED).await;
    }
    eventually(60, "every notice delivered", || async {
        (app.db.outbox_depth().await.unwrap().is_empty() && s.fake.pending_script() == 0)
            .then_some(())
    })
    .await;
    for id in ids {
        let rows = app.db.job_notices(id, "slack", 0).await.unwrap();
        assert_eq!(
            rows.last().map(superseded),
            Some(false),
            "the last state is sent"
        );
        let titles: Vec<String> = rows
            .iter()
            .filter(|r| !superseded(r))
            .map(|r| r.notice().unwrap().title)
            .collect();
        // The successful calls for this job's message, in order, match its notices one to
        // one, except the states a newer one made unnecessary while Slack was slow.
        let first = &titles[0];
        let calls: Vec<(String, String)> = texts(&s.fake);
        let start = calls
            .iter()
            .position(|c| c.1.contains(first.as_str()))
            .expect("the first notice was posted");
        let ts_calls: Vec<&(String, String)> = calls[start..]
            .iter()
            .filter(|c| titles.iter().any(|t| c.1.contains(t.as_str())))
            .collect();
        let sent: Vec<&str> = ts_calls.iter().map(|c| c.1.as_str()).collect();
        let expected: Vec<String> = titles.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            sent.len(),
            expected.len(),
            "each notice exactly once: sent {sent:#?}\nexpected {expected:#?}"
        );
        for (got, want) in sent.iter().zip(&expected) {
            assert!(got.contains(want.as_str()), "out of order: {got} vs {want}");
        }
        assert_eq!(ts_calls[0].0, "/api/chat.postMessage");
        assert!(ts_calls[1..].iter().all(|c| c.0 == "/api/chat.update"));
    }
    let failures: Vec<_> = s
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.status >= 400)
        .collect();
    assert_eq!(failures.len(), 6, "the scripted failures were all hit");
}

#[test]
fn the_manifest_lists_every_command() {
    let ws = Workspace::new(Backend::Sqlite, "", &[("slow.toml", &slow())]).unwrap();
    let out = ws
        .cmd(&["slack", "manifest", "--url", "https://bot.example.com"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cmds: Vec<&str> = m["features"]["slash_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    for f in std::fs::read_dir(ws.dir.path().join("commands")).unwrap() {
        let name = f
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            cmds.contains(&format!("/{name}").as_str()),
            "/{name} missing from {cmds:?}"
        );
    }
    assert_eq!(
        m["settings"]["interactivity"]["request_url"],
        "https://bot.example.com/slack/interactions"
    );
    let scopes = m["oauth_config"]["scopes"]["bot"].to_string();
    assert!(scopes.contains("commands") && scopes.contains("chat:write"));
}
