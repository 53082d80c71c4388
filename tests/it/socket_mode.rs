//! Slack Socket Mode end to end: the real `deckhand serve` with an app token and no signing
//! secret, a fake Web API whose `apps.connections.open` points at a fake Socket Mode server
//! on 127.0.0.1, envelopes in, acknowledgements and the job's message out.

use std::time::Duration;

use crate::common::chat::click;
use crate::common::fake::FakeApi;
use crate::common::socket::{FakeSocket, interactive_envelope, slash_envelope};
use crate::common::*;
use deckhand::store::jobs::state;
use serde_json::Value;

const APP_TOKEN: &str = "xapp-1-A0APP-socket-test-app-token";
const BOT_TOKEN: &str = "xoxb-socket-test-bot-token";

struct Socket {
    ws: Workspace,
    fake: FakeApi,
    sock: FakeSocket,
    server: Server,
}

impl Socket {
    /// Only SLACK_APP_TOKEN, SLACK_BOT_TOKEN and SLACK_API_URL for Slack; logs at trace.
    async fn start() -> Socket {
        Self::on(Backend::Sqlite).await.unwrap()
    }

    /// `None` on PostgreSQL when no test database is configured.
    async fn on(backend: Backend) -> Option<Socket> {
        Self::with(backend, &[]).await
    }

    /// With `extra` environment variables for the server.
    async fn with(backend: Backend, extra: &[(&str, &str)]) -> Option<Socket> {
        let ws = Workspace::new(
            backend,
            "[environments.gated]\napprovals = 1\n",
            &[("ship.toml", &gated_ship_command())],
        )?;
        let fake = FakeApi::start();
        let sock = FakeSocket::start();
        fake.set_socket_url(&sock.url());
        let api = fake.url("/api");
        let mut env = vec![
            ("SLACK_APP_TOKEN", APP_TOKEN),
            ("SLACK_BOT_TOKEN", BOT_TOKEN),
            ("SLACK_API_URL", api.as_str()),
            // Naming tungstenite's own modules must not turn its traces back on.
            (
                "RUST_LOG",
                "trace,tungstenite=trace,tungstenite::handshake::client=trace",
            ),
        ];
        env.extend_from_slice(extra);
        let server = Server::start(&ws, &env);
        let s = Socket {
            ws,
            fake,
            sock,
            server,
        };
        s.connected(1).await;
        Some(s)
    }

    async fn connected(&self, n: usize) {
        eventually(20, "the bot to connect", || async {
            (self.sock.connections() >= n).then_some(())
        })
        .await;
    }

    /// Send an envelope and wait for its acknowledgement: (ack, how long it took).
    async fn exchange(&self, envelope: Value) -> (Value, Duration) {
        let id = envelope["envelope_id"].as_str().unwrap().to_owned();
        self.sock.send(envelope);
        eventually(20, "the acknowledgement", || async { self.sock.ack(&id) }).await
    }

    /// A slash command over the socket, acknowledged within 3 s: the ephemeral answer.
    async fn command(&self, id: &str, retry: u32, user: &str, text: &str, trigger: &str) -> String {
        let (ack, took) = self
            .exchange(slash_envelope(id, retry, user, text, trigger))
            .await;
        assert!(took < Duration::from_secs(3), "acknowledged after {took:?}");
        assert_eq!(ack["envelope_id"], id);
        assert_eq!(ack["payload"]["response_type"], "ephemeral", "{ack}");
        ack["payload"]["text"].as_str().unwrap_or("").to_owned()
    }

    /// What the clicker of a click with this trigger was told privately.
    async fn told(&self, trigger: &str) -> String {
        self.fake.told(trigger).await
    }

    /// The job's message says `want`: in an edit, or in the post itself when the job ended
    /// before the post went out (the outbox sends only the latest state).
    async fn reported(&self, want: &str) -> Value {
        eventually(30, "the report on Slack", || async {
            self.fake
                .calls()
                .into_iter()
                .filter(|c| {
                    c.status < 300
                        && (c.path == "/api/chat.update" || c.path == "/api/chat.postMessage")
                })
                .rev()
                .find(|c| c.body["text"].as_str().unwrap_or("").contains(want))
                .map(|c| c.body)
        })
        .await
    }
}

fn job_id(text: &str) -> i64 {
    text.to_lowercase()
        .split("job ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

both!(
    a_command_over_the_socket_is_acknowledged_reported_and_survives_a_refresh,
    acknowledged_reported_and_survives_a_refresh
);
async fn acknowledged_reported_and_survives_a_refresh(backend: Backend) {
    let Some(s) = Socket::on(backend).await else {
        return;
    };
    let app = s.ws.app(&[]).await;
    // The socket was opened with the app token; the HTTP endpoint stays off without a secret.
    let open = s.fake.ok_calls("/api/apps.connections.open");
    assert_eq!(
        open[0].auth.as_deref(),
        Some(&*format!("Bearer {APP_TOKEN}"))
    );
    let r = reqwest::Client::new()
        .post(s.server.url("/slack/commands"))
        .body("command=%2Fdeploy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no signing secret: no HTTP endpoint");

    let text = s
        .command("e1", 0, "UALICE", "deploy staging abc1234", "t1")
        .await;
    assert!(
        text.starts_with("Queued deploy abc1234 → staging as job "),
        "{text}"
    );
    let first = job_id(&text);
    wait_state(&app, first, state::SUCCEEDED).await;
    let report = s.reported("Deployed abc1234").await;
    let blocks = report["blocks"].to_string();
    assert!(blocks.contains("verified working"), "{blocks}");
    assert_eq!(s.fake.ok_calls("/api/chat.postMessage").len(), 1);
    assert_eq!(report["channel"], "CDEPLOYS");

    // Slack rotates the socket: the bot goes and comes back.
    s.sock.disconnect("refresh_requested");
    s.connected(2).await;
    // A redelivered copy of the first envelope is the same job, not a second one.
    let again = s
        .command("e1-retry", 1, "UALICE", "deploy staging abc1234", "t1")
        .await;
    assert!(again.starts_with("Already received"), "{again}");
    assert_eq!(job_id(&again), first);
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);

    // A second command after the reconnect is reported too, in its own message.
    let text = s
        .command("e2", 0, "UALICE", "deploy staging def5678", "t2")
        .await;
    let second = job_id(&text);
    assert_ne!(second, first);
    wait_state(&app, second, state::SUCCEEDED).await;
    s.reported("Deployed def5678").await;
    assert_eq!(s.fake.ok_calls("/api/chat.postMessage").len(), 2);
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 2);

    let (_, metrics) = http_get(&s.server.url("/metrics")).unwrap();
    let m = parse_metrics(&metrics);
    assert_eq!(
        m.get("deckhand_socket_connects_total{platform=\"slack\"}"),
        Some(&2.0),
        "{metrics}"
    );
    assert_eq!(
        m.get("deckhand_socket_disconnects_total{platform=\"slack\",reason=\"refresh_requested\"}"),
        Some(&1.0),
        "{metrics}"
    );
    // At RUST_LOG=trace the log shows the socket's life but neither token nor the ticket.
    let log = s.server.output();
    assert!(log.contains("Slack socket connected"), "{log}");
    assert!(!log.contains(APP_TOKEN), "the app token was logged");
    assert!(!log.contains(BOT_TOKEN), "the bot token was logged");
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains("t-1234")).collect();
    assert!(leaks.is_empty(), "the socket ticket was logged: {leaks:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_over_the_socket_have_the_http_role_checks() {
    let s = Socket::start().await;
    let app = s.ws.app(&[]).await;
    let text = s.command("s1", 0, "UDEPLOYER", "ship gated v1", "g1").await;
    let id = job_id(&text);
    assert_eq!(
        app.db.job(id).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    let press = |n: &str, user: &str| {
        let payload = click("T1", "T1", user, "approve", &id.to_string(), n, &s.fake);
        interactive_envelope(&format!("env-{n}"), payload)
    };
    // The requester cannot approve their own job; someone without the role cannot either.
    let (ack, _) = s.exchange(press("c1", "UDEPLOYER")).await;
    assert_eq!(ack, serde_json::json!({"envelope_id": "env-c1"}));
    assert!(s.told("c1").await.contains("two-person rule"));
    s.exchange(press("c2", "UNOBODY")).await;
    assert!(s.told("c2").await.contains("needs the \"deployer\" role"));
    assert_eq!(
        app.db.job(id).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    // A deployer who did not ask can.
    s.exchange(press("c3", "UAPPROVER")).await;
    wait_state(&app, id, state::SUCCEEDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_and_keeps_answering() {
    let s = Socket::start().await;
    s.sock.drop_connection();
    s.connected(2).await;
    let text = s.command("d1", 0, "UALICE", "help", "d1").await;
    assert!(!text.is_empty());
    let (_, metrics) = http_get(&s.server.url("/metrics")).unwrap();
    let m = parse_metrics(&metrics);
    let lost: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("deckhand_socket_disconnects_total{platform=\"slack\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(lost, 1.0, "{metrics}");
}

#[test]
fn check_and_the_socket_mode_manifest() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let out = ws
        .cmd(&["check"])
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A bot token where the app token belongs is refused, without echoing it.
    let out = ws
        .cmd(&["check"])
        .env("SLACK_APP_TOKEN", BOT_TOKEN)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLACK_APP_TOKEN must be"), "{err}");
    assert!(!err.contains(BOT_TOKEN), "{err}");

    let out = ws
        .cmd(&["slack", "manifest", "--socket-mode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["settings"]["socket_mode_enabled"], true);
    assert_eq!(m["settings"]["interactivity"]["is_enabled"], true);
    let text = m.to_string();
    assert!(
        !text.contains("request_url") && !text.contains("\"url\""),
        "{text}"
    );
    assert!(text.contains("\"/deploy\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_down_for_30_seconds_makes_the_server_not_ready() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    // apps.connections.open fails: no socket URL was set on the fake.
    let fake = FakeApi::start();
    let server = Server::start(
        &ws,
        &[
            ("SLACK_APP_TOKEN", APP_TOKEN),
            ("SLACK_API_URL", &fake.url("/api")),
        ],
    );
    let (status, body) = http_get(&server.url("/ready")).unwrap();
    assert_eq!(
        status, 200,
        "down for less than 30 s is still ready: {body}"
    );
    assert!(
        body.contains("\"slack_socket\":\"reconnecting for"),
        "{body}"
    );
    let body = eventually(45, "/ready to say not ready", || async {
        let (status, body) = http_get(&server.url("/ready")).unwrap();
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body.contains("the Slack socket (Socket Mode) has been down for"),
        "{body}"
    );
    // Attempts back off: each gap is longer than the one two before it, whatever the jitter.
    let at: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/apps.connections.open"))
        .map(|c| c.at)
        .collect();
    assert!((4..=8).contains(&at.len()), "{} attempts in 30 s", at.len());
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for w in gaps.windows(3) {
        assert!(w[2] > w[0], "no backoff: {gaps:?}");
    }
    let (_, metrics) = http_get(&server.url("/metrics")).unwrap();
    assert!(
        metrics.contains(
            "deckhand_socket_disconnects_total{platform=\"slack\",reason=\"open_failed\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_replaced() {
    let s = Socket::start().await;
    let started = std::time::Instant::now();
    s.sock.freeze();
    // The watchdog gives up 30 to 40 s after the last frame it heard.
    eventually(60, "a new connection", || async {
        (s.sock.connections() >= 2).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "replaced a socket that was not silent long: {:?}",
        started.elapsed()
    );
    let text = s.command("q1", 0, "UALICE", "help", "q1").await;
    assert!(!text.is_empty());
    let (_, metrics) = http_get(&s.server.url("/metrics")).unwrap();
    assert!(
        metrics
            .contains("deckhand_socket_disconnects_total{platform=\"slack\",reason=\"silent\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_socket_through_the_drain() {
    let mut s = Socket::start().await;
    s.server.sigterm();
    let code = tokio::task::block_in_place(|| s.server.child.wait().unwrap());
    assert_eq!(code.code(), Some(0), "{}", s.server.output());
    eventually(10, "the bot to close its socket", || async {
        (s.sock.closed_by_client() == 1).then_some(())
    })
    .await;
    assert_eq!(s.sock.connections(), 1, "no reconnect while stopping");
    assert!(s.server.output().contains("Slack socket closed"));
}

/// Envelopes spend the budget signed requests spend: per person (and team), so one person
/// over it is told to slow down over the socket too, and another is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_commands_spend_the_signed_budget() {
    let tight = [
        ("DECKHAND__SERVER__RATE_LIMIT_PER_MINUTE", "6"),
        ("DECKHAND__SERVER__RATE_LIMIT_BURST", "3"),
    ];
    let s = Socket::with(Backend::Sqlite, &tight).await.unwrap();
    for i in 0..3 {
        let t = s
            .command(&format!("b{i}"), 0, "U1", "help", &format!("tb{i}"))
            .await;
        assert!(t.contains("Commands you may run"), "command {i}: {t}");
    }
    let t = s.command("b3", 0, "U1", "help", "tb3").await;
    assert!(
        t.contains("too many requests from you; slow down (try again in"),
        "{t}"
    );
    let t = s.command("b4", 0, "U2", "help", "tb4").await;
    assert!(t.contains("Commands you may run"), "another person: {t}");
}
