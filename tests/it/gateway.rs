//! The Discord gateway end to end: the real `deckhand serve` with a bot token and no public
//! key, a fake Discord REST API whose `/gateway/bot` points at a fake gateway on 127.0.0.1,
//! INTERACTION_CREATE dispatches in, interaction callbacks and the job's message out.

use std::time::{Duration, Instant};

use crate::common::fake::FakeApi;
use crate::common::gateway::{FakeGateway, click, command};
use crate::common::*;
use deckhand::store::jobs::state;
use serde_json::Value;

const BOT: &str = "gateway-test-bot-token-Zm9vYmFy";
const APP_ID: &str = "424242";

struct Gw {
    ws: Workspace,
    fake: FakeApi,
    gw: FakeGateway,
    server: Server,
}

impl Gw {
    /// Only DISCORD_BOT_TOKEN, DISCORD_APPLICATION_ID and DISCORD_API_URL; logs at trace.
    async fn start() -> Gw {
        Self::with(Backend::Sqlite, &[]).await.unwrap()
    }

    async fn with(backend: Backend, extra: &[(&str, &str)]) -> Option<Gw> {
        let ws = Workspace::new(
            backend,
            "[environments.qa]\n[environments.gated]\napprovals = 1\n",
            &[
                ("ship.toml", &gated_ship_command()),
                ("hang.toml", &hang_command()),
            ],
        )?;
        let fake = FakeApi::start();
        let gw = FakeGateway::start(400);
        fake.set_gateway_url(&gw.url());
        let server = serve(&ws, &fake, extra);
        let g = Gw {
            ws,
            fake,
            gw,
            server,
        };
        g.up(1).await;
        Some(g)
    }

    /// Wait until the gateway has come up `n` times (READY or RESUMED).
    async fn up(&self, n: usize) {
        eventually(20, "the gateway session to come up", || async {
            (self.gw.ups().len() >= n && self.gw.live()).then_some(())
        })
        .await;
    }

    /// Dispatch an interaction and wait for its callback, sent within 3 s: its content.
    async fn answer(&self, d: Value) -> String {
        answered(&self.fake, &self.gw, d).await
    }

    /// The job's channel message says `want` (in its post or an edit).
    async fn reported(&self, want: &str) -> Value {
        eventually(30, "the report on Discord", || async {
            self.fake
                .calls()
                .into_iter()
                .filter(|c| c.status < 300 && c.path.starts_with("/api/v10/channels/777/messages"))
                .rev()
                .find(|c| c.body.to_string().contains(want))
                .map(|c| c.body)
        })
        .await
    }

    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        parse_metrics(&http_get(&self.server.url("/metrics")).unwrap().1)
    }
}

/// `deckhand serve` with the gateway's environment only (plus `extra`), logging at trace.
fn serve(ws: &Workspace, fake: &FakeApi, extra: &[(&str, &str)]) -> Server {
    let api = fake.url("/api/v10");
    let mut env = vec![
        ("DISCORD_BOT_TOKEN", BOT),
        ("DISCORD_APPLICATION_ID", APP_ID),
        ("DISCORD_API_URL", api.as_str()),
        (
            "RUST_LOG",
            "trace,tungstenite=trace,tokio_tungstenite=trace",
        ),
    ];
    env.extend_from_slice(extra);
    Server::start(ws, &env)
}

/// Dispatch `d` and wait for its one callback; it came within 3 s: its content.
async fn answered(fake: &FakeApi, gw: &FakeGateway, d: Value) -> String {
    let id = d["id"].as_str().unwrap().to_owned();
    gw.interaction(d);
    let cb = eventually(20, "the interaction callback", || async {
        fake.callbacks(&id).into_iter().next()
    })
    .await;
    let took = cb.at - gw.sent_at(&id).unwrap();
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(cb.body["type"], 4, "{}", cb.body);
    assert_eq!(cb.body["data"]["flags"], 64, "ephemeral: {}", cb.body);
    assert!(
        cb.path
            .ends_with(&format!("/interactions/{id}/itok-{id}-secret/callback"))
    );
    cb.body["data"]["content"].as_str().unwrap_or("").to_owned()
}

fn job_id(text: &str) -> i64 {
    text.to_lowercase()
        .split("job ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

fn deploy(id: &str, version: &str) -> Value {
    command(
        id,
        "1001",
        &[],
        "deploy",
        &[("environment", "staging"), ("version", version)],
    )
}

/// The first line: answered through the callback within 3 s, reported through the
/// REST API; op 7 → RESUME (session id, last sequence) at the resume URL → the next one is
/// answered too; no token in the logs at trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_by_callback_reported_and_resumed_after_op7() {
    let g = Gw::start().await;
    let bot = g.fake.ok_calls("/gateway/bot");
    assert_eq!(bot[0].auth.as_deref(), Some(&*format!("Bot {BOT}")));
    let id = &g.gw.identifies()[0];
    assert_eq!(id["token"], BOT);
    assert_eq!(id["intents"], 0, "no privileged intents");
    assert_eq!(g.gw.paths(), ["/"]);

    let text = g.answer(deploy("8001", "abc1234")).await;
    assert!(
        text.starts_with("Queued deploy abc1234 → staging as job"),
        "{text}"
    );
    let app = g.ws.app(&[]).await;
    wait_state(&app, job_id(&text), state::SUCCEEDED).await;
    let report = g.reported("Deployed abc1234 to staging").await;
    assert!(report.to_string().contains("verified working"), "{report}");

    // Heartbeats go out (every 400 ms here) and are acknowledged.
    eventually(10, "heartbeats", || async {
        (g.gw.heartbeats() >= 2).then_some(())
    })
    .await;

    g.gw.reconnect();
    g.up(2).await;
    let resume = &g.gw.resumes()[0];
    assert_eq!(resume["session_id"], "sess-1");
    assert_eq!(resume["seq"], 2, "READY was 1, the interaction 2");
    assert_eq!(resume["token"], BOT);
    assert_eq!(
        g.gw.paths(),
        ["/", "/resume/"],
        "resumed at resume_gateway_url"
    );
    assert_eq!(g.gw.identifies().len(), 1, "resumed, not identified anew");

    let text = g.answer(deploy("8002", "def5678")).await;
    assert!(text.starts_with("Queued deploy def5678"), "{text}");
    wait_state(&app, job_id(&text), state::SUCCEEDED).await;
    g.reported("Deployed def5678 to staging").await;
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 2);

    let m = g.metrics();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get("deckhand_socket_connects_total{platform=\"discord\"}"),
        2.0,
        "{m:?}"
    );
    assert_eq!(get("deckhand_gateway_resumes_total"), 1.0, "{m:?}");
    assert_eq!(
        get("deckhand_gateway_dispatches_total{event=\"INTERACTION_CREATE\"}"),
        2.0,
        "{m:?}"
    );
    assert_eq!(
        get("deckhand_socket_disconnects_total{platform=\"discord\",reason=\"reconnect\"}"),
        1.0,
        "{m:?}"
    );
    let (status, ready) = http_get(&g.server.url("/ready")).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("\"discord_gateway\":\"connected\""),
        "{ready}"
    );

    let log = g.server.output();
    assert!(log.contains("Discord gateway connected"), "{log}");
    assert!(log.contains("\"level\":\"TRACE\""), "the log is at trace");
    assert!(!log.contains(BOT), "the bot token was logged");
    assert!(!log.contains("-secret"), "an interaction token was logged");
}

/// op 9 resumable → RESUME; op 9 not resumable → a new IDENTIFY; a missed heartbeat ACK →
/// the connection is dropped and resumed. Each time the next interaction is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sessions_and_missed_acks_resume_or_identify() {
    let g = Gw::start().await;
    g.gw.invalid_session(true);
    g.up(2).await;
    assert_eq!(g.gw.resumes().len(), 1);
    assert!(
        g.answer(command("8101", "1001", &[], "help", &[]))
            .await
            .contains("Commands you may run")
    );

    g.gw.invalid_session(false);
    g.up(3).await;
    assert_eq!(g.gw.identifies().len(), 2, "identified anew");
    assert!(
        g.answer(command("8102", "1001", &[], "help", &[]))
            .await
            .contains("Commands you may run")
    );

    g.gw.freeze();
    g.up(4).await;
    assert_eq!(g.gw.resumes().len(), 2, "resumed after the missed ACK");
    assert_eq!(g.gw.resumes()[1]["session_id"], "sess-2");
    assert!(
        g.answer(command("8103", "1001", &[], "help", &[]))
            .await
            .contains("Commands you may run")
    );
    let m = g.metrics();
    assert_eq!(
        m.get("deckhand_socket_disconnects_total{platform=\"discord\",reason=\"missed_ack\"}"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("deckhand_socket_disconnects_total{platform=\"discord\",reason=\"invalid_session\"}"),
        Some(&1.0),
        "{m:?}"
    );
}

/// Approve, cancel and roll back over the gateway, with the role checks of HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_over_the_gateway_have_the_http_role_checks() {
    let g = Gw::start().await;
    let app = g.ws.app(&[]).await;
    let ship = command(
        "8201",
        "1001",
        &[],
        "ship",
        &[("environment", "gated"), ("version", "v1")],
    );
    let id = job_id(&g.answer(ship).await);
    let approve = format!("approve:{id}");
    let t = g.answer(click("8202", "1001", &[], &approve)).await;
    assert!(t.contains("two-person rule"), "{t}");
    let t = g.answer(click("8203", "5555", &[], &approve)).await;
    assert!(t.contains("needs the \"deployer\" role"), "{t}");
    let t = g.answer(click("8204", "1002", &[], &approve)).await;
    assert!(t.contains("approved by discord:1002"), "{t}");
    wait_state(&app, id, state::SUCCEEDED).await;

    let hang = command(
        "8205",
        "5555",
        &[],
        "hang",
        &[("environment", "qa"), ("version", "v9")],
    );
    let id = job_id(&g.answer(hang).await);
    wait_state(&app, id, state::RUNNING).await;
    let cancel = format!("cancel:{id}");
    let t = g.answer(click("8206", "6666", &[], &cancel)).await;
    assert!(t.contains("refused by role rule"), "{t}");
    let t = g.answer(click("8207", "5555", &[], &cancel)).await;
    assert!(t.contains("Cancelling job"), "{t}");
    wait_state(&app, id, state::CANCELLED).await;

    for (v, i) in [("abc1234", "8208"), ("def5678", "8209")] {
        let t = g.answer(deploy(i, v)).await;
        wait_state(&app, job_id(&t), state::SUCCEEDED).await;
    }
    let last = app.db.current_deployment("staging").await.unwrap().unwrap();
    let rollback = format!("rollback:{}", last.job_id);
    let t = g.answer(click("8210", "1001", &[], &rollback)).await;
    assert!(t.contains("rollback abc1234 → staging"), "{t}");
    wait_state(&app, job_id(&t), state::SUCCEEDED).await;
}

/// Gateway interactions spend `/discord`'s signed budget: one person over it is told to
/// slow down, another is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_interactions_spend_the_signed_budget() {
    let tight = [
        ("DECKHAND__SERVER__RATE_LIMIT_PER_MINUTE", "6"),
        ("DECKHAND__SERVER__RATE_LIMIT_BURST", "3"),
    ];
    let g = Gw::with(Backend::Sqlite, &tight).await.unwrap();
    for i in 0..3 {
        let t = g
            .answer(command(&format!("83{i:02}"), "1001", &[], "help", &[]))
            .await;
        assert!(t.contains("Commands you may run"), "command {i}: {t}");
    }
    let t = g.answer(command("8310", "1001", &[], "help", &[])).await;
    assert!(
        t.contains("too many requests from you; slow down (try again in"),
        "{t}"
    );
    let t = g.answer(command("8311", "1002", &[], "help", &[])).await;
    assert!(t.contains("Commands you may run"), "another person: {t}");
}

/// The fake drops the connection at random points while 20 commands arrive: every
/// command answered through its callback is exactly one job, and none is answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_drops_lose_and_duplicate_no_acknowledged_command() {
    let g = Gw::start().await;
    let app = g.ws.app(&[]).await;
    // The drop points differ per command; the printed seed repeats a run.
    let mut rng = Rng::new();
    let ids: Vec<String> = (0..20).map(|i| format!("84{i:02}")).collect();
    let mut drops = 0;
    for (i, id) in ids.iter().enumerate() {
        g.up(1 + drops).await;
        let d = command(
            id,
            "1001",
            &[],
            "deploy",
            &[("environment", "staging"), ("version", &format!("v{id}"))],
        );
        // At least 4 drops in all, whatever the seed: the last commands drop if they must.
        let must = ids.len() - i <= 4 - drops.min(4);
        match if must { rng.below(2) } else { rng.below(4) } {
            // Dropped right after the dispatch: delivered, or replayed on RESUME.
            0 => {
                g.gw.interaction(d);
                g.gw.drop_connection();
                drops += 1;
            }
            // Dropped just before it: the dispatch waits in the session's log.
            1 => {
                g.gw.drop_connection();
                drops += 1;
                g.gw.interaction(d);
            }
            _ => g.gw.interaction(d),
        }
    }
    assert!(drops >= 4, "only {drops} drops");
    for id in &ids {
        eventually(30, "every command's callback", || async {
            (!g.fake.callbacks(id).is_empty()).then_some(())
        })
        .await;
    }
    let jobs = app.db.recent_jobs(100).await.unwrap();
    for id in &ids {
        let n = jobs
            .iter()
            .filter(|j| j.idempotency_key.as_deref() == Some(&*format!("discord:{id}")))
            .count();
        let told = &g.fake.callbacks(id)[0].body["data"]["content"];
        assert_eq!(n, 1, "interaction {id} made {n} jobs: {told}");
        assert_eq!(
            g.fake.callbacks(id).len(),
            1,
            "interaction {id} answered twice"
        );
    }
    assert_eq!(jobs.len(), 20);
    assert_eq!(g.gw.identifies().len(), 1, "every drop was resumed");
}

/// Two replicas on PostgreSQL: one holds the session, the other stands by (and is ready);
/// kill -9 of the holder → the other connects within 15 s and answers the next interaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hold_one_session_and_take_over_after_kill9() {
    let Some(g) = Gw::with(Backend::Postgres, &[]).await else {
        return;
    };
    let second = serve(&g.ws, &g.fake, &[]);
    let ready = |s: &Server| http_get(&s.url("/ready")).unwrap().1;
    eventually(20, "the second replica to stand by", || async {
        ready(&second).contains("standby").then_some(())
    })
    .await;
    assert!(ready(&g.server).contains("\"discord_gateway\":\"connected\""));
    assert!(second.output().contains("standing by"));
    assert_eq!(g.gw.identifies().len(), 1, "one session for two replicas");
    assert_eq!(g.gw.live_sessions(), 1);
    let t = g.answer(command("8501", "1001", &[], "help", &[])).await;
    assert!(t.contains("Commands you may run"), "{t}");

    let mut g = g;
    g.server.kill9();
    let killed = Instant::now();
    eventually(20, "the standby to take over", || async {
        (g.gw.identifies().len() == 2 && g.gw.live()).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "took over after {took:?}");
    eprintln!("took over {took:?} after kill -9");
    let t = answered(&g.fake, &g.gw, command("8502", "1001", &[], "help", &[])).await;
    assert!(t.contains("Commands you may run"), "{t}");
    assert!(ready(&second).contains("\"discord_gateway\":\"connected\""));
    assert_eq!(g.fake.callbacks("8501").len(), 1);
    assert_eq!(g.fake.callbacks("8502").len(), 1);
}

/// A gateway that cannot be reached: `/ready` says so at once and turns not ready after 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_down_for_30_seconds_makes_the_server_not_ready() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let fake = FakeApi::start(); // no gateway URL: /gateway/bot answers 401
    let server = serve(&ws, &fake, &[]);
    // Standby until the lease is taken (at once: no other replica), then reconnecting.
    let (status, body) = eventually(10, "/ready to report the gateway", || async {
        let (status, body) = http_get(&server.url("/ready")).unwrap();
        body.contains("reconnecting for").then_some((status, body))
    })
    .await;
    assert_eq!(
        status, 200,
        "down for less than 30 s is still ready: {body}"
    );
    assert!(
        body.contains("\"discord_gateway\":\"reconnecting for"),
        "{body}"
    );
    let body = eventually(45, "/ready to say not ready", || async {
        let (status, body) = http_get(&server.url("/ready")).unwrap();
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body.contains("the Discord gateway has been down for"),
        "{body}"
    );
    let log = server.output();
    assert!(log.contains("GET /gateway/bot: HTTP 401"), "{log}");
    assert!(!log.contains(BOT), "the bot token was logged");
}

/// The lease on both backends: one holder at a time, renewable by it, free once expired or
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_a_lease_until_it_expires_or_is_released() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(ws) = Workspace::new(backend, "", &[]) else {
            continue;
        };
        let app = ws.app(&[]).await;
        let db = &app.db;
        assert!(db.take_lease("gw", "a", 1_000, 11_000).await.unwrap());
        assert!(
            !db.take_lease("gw", "b", 2_000, 12_000).await.unwrap(),
            "held by a"
        );
        assert!(
            db.take_lease("gw", "a", 3_000, 13_000).await.unwrap(),
            "a renews"
        );
        assert!(
            !db.take_lease("gw", "b", 12_999, 22_999).await.unwrap(),
            "not yet expired"
        );
        assert!(
            db.take_lease("gw", "b", 13_000, 23_000).await.unwrap(),
            "expired: b takes it"
        );
        assert_eq!(
            db.lease_holder("gw").await.unwrap(),
            Some(("b".into(), 23_000))
        );
        assert!(!db.take_lease("gw", "a", 14_000, 24_000).await.unwrap());
        db.release_lease("gw", "a").await.unwrap();
        assert!(
            db.lease_holder("gw").await.unwrap().is_some(),
            "a cannot release b's"
        );
        db.release_lease("gw", "b").await.unwrap();
        assert!(
            db.take_lease("gw", "a", 15_000, 25_000).await.unwrap(),
            "released: free"
        );
        assert!(
            db.take_lease("other", "b", 15_000, 25_000).await.unwrap(),
            "leases are per name"
        );
    }
}

/// SIGTERM: the session is closed through the drain and the lease given up, so a standby
/// need not wait for it to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_session_and_releases_the_lease() {
    let mut g = Gw::start().await;
    let app = g.ws.app(&[]).await;
    let lease = format!("discord-gateway:{APP_ID}");
    assert!(app.db.lease_holder(&lease).await.unwrap().is_some());
    g.server.sigterm();
    let pid = g.server.child.id() as i32;
    eventually(30, "the server to exit", || async {
        process_dead(pid).then_some(())
    })
    .await;
    let _ = g.server.child.wait();
    assert!(g.server.output().contains("Discord gateway closed"));
    assert_eq!(app.db.lease_holder(&lease).await.unwrap(), None, "released");
    assert!(!g.gw.live(), "the connection is closed");
}
