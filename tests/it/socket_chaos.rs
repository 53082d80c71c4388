//! Slack Socket Mode under stress: several replicas on one PostgreSQL database, each with
//! its own socket (Slack spreads an app's envelopes over all its connections), and a socket
//! that drops at random points. Every acknowledged command is exactly one job, and every
//! job is reported once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::common::fake::FakeApi;
use crate::common::socket::{FakeSocket, slash_envelope};
use crate::common::*;
use deckhand::store::jobs::state;
use serde_json::Value;

const APP_TOKEN: &str = "xapp-1-A0APP-chaos-test-app-token";
const BOT_TOKEN: &str = "xoxb-chaos-test-bot-token";

/// `ship fast vN`: a deploy with no work to an environment without a health check.
fn workspace(backend: Backend) -> Option<Workspace> {
    Workspace::new(
        backend,
        "[environments.fast]\n",
        &[(
            "ship.toml",
            &deploy_command("ship", "everyone", r#"["true"]"#),
        )],
    )
}

fn serve(ws: &Workspace, fake: &FakeApi) -> Server {
    Server::start(
        ws,
        &[
            ("SLACK_APP_TOKEN", APP_TOKEN),
            ("SLACK_BOT_TOKEN", BOT_TOKEN),
            ("SLACK_API_URL", &fake.url("/api")),
        ],
    )
}

/// Command `n`: `/ship fast v{n}` from its own channel (so that the reports, paced per
/// channel, do not queue behind each other), with trigger `trig-{n}`.
fn command(n: usize, envelope_id: &str, retry: u32) -> Value {
    let mut e = slash_envelope(
        envelope_id,
        retry,
        "UALICE",
        &format!("ship fast v{n}"),
        &format!("trig-{n}"),
    );
    e["payload"]["channel_id"] = Value::from(format!("CCHAOS{n}"));
    e
}

fn ack_text(sock: &FakeSocket, id: &str) -> Option<String> {
    let (ack, _) = sock.ack(id)?;
    Some(ack["payload"]["text"].as_str().unwrap_or("").to_owned())
}

/// Every job, by version: exactly the `n` commands, each once, all succeeded; and every
/// channel `CCHAOSi` got exactly one message, whose last state is the report.
async fn each_once(app: &deckhand::app::App, fake: &FakeApi, n: usize) {
    let jobs = app.db.recent_jobs(10 * n as i64).await.unwrap();
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for j in &jobs {
        *by_version
            .entry(j.version.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..n).map(|i| (format!("v{i}"), 1)).collect();
    assert_eq!(by_version, want, "one job per command");
    for j in &jobs {
        wait_state(app, j.id, state::SUCCEEDED).await;
    }
    outbox_drained(app, 60).await;
    let calls = fake.calls();
    for i in 0..n {
        let channel = format!("CCHAOS{i}");
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.status < 300 && c.body["channel"] == channel.as_str())
            .collect();
        let posts = mine
            .iter()
            .filter(|c| c.path == "/api/chat.postMessage")
            .count();
        assert_eq!(posts, 1, "one message in {channel}: {mine:#?}");
        let last = mine.last().unwrap().body["text"].as_str().unwrap_or("");
        assert!(
            last.contains(&format!("Deployed v{i} to fast")),
            "{channel}'s message ends as the report: {last}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_commands_over_two_replicas_make_fifty_jobs_and_fifty_reports() {
    let Some(ws) = workspace(Backend::Postgres) else {
        return;
    };
    let fake = FakeApi::start();
    let sock = FakeSocket::start();
    fake.set_socket_url(&sock.url());
    let _a = serve(&ws, &fake);
    let _b = serve(&ws, &fake);
    eventually(20, "both replicas to connect", || async {
        (sock.live().len() == 2).then_some(())
    })
    .await;
    let conns = sock.live();
    for i in 0..50 {
        assert!(sock.send_to(conns[i % 2], command(i, &format!("r{i}"), 0)));
    }
    for i in 0..50 {
        let id = format!("r{i}");
        let text = eventually(20, "the acknowledgement", || async { ack_text(&sock, &id) }).await;
        assert!(text.starts_with("Queued ship v"), "{id}: {text}");
        assert_eq!(
            sock.acked_on(&id),
            Some(conns[i % 2]),
            "{id} answered where sent"
        );
    }
    let app = ws.app(&[]).await;
    each_once(&app, &fake, 50).await;
}

both!(
    a_socket_dropped_at_random_points_loses_and_doubles_nothing,
    dropped_at_random_points
);
async fn dropped_at_random_points(backend: Backend) {
    let Some(ws) = workspace(backend) else {
        return;
    };
    let fake = FakeApi::start();
    let sock = FakeSocket::start();
    fake.set_socket_url(&sock.url());
    let server = serve(&ws, &fake);
    let mut rng = Rng::new();
    let newest = || async {
        eventually(20, "a live connection", || async {
            sock.live().last().copied()
        })
        .await
    };
    // Each command goes to the newest connection. A third of them are followed by a drop,
    // at once (before the bot can answer) or a few milliseconds later (before or after its
    // answer); the others are answered before the next is sent.
    for i in 0..20 {
        let conn = newest().await;
        let id = format!("c{i}");
        sock.send_to(conn, command(i, &id, 0));
        match rng.below(6) {
            0 => sock.drop_nth(conn),
            1 => {
                tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                sock.drop_nth(conn);
            }
            _ => {
                let answered = eventually(60, "the acknowledgement", || async { sock.ack(&id) });
                let _ = tokio::time::timeout(Duration::from_secs(3), answered).await;
            }
        }
    }
    // Slack redelivers what was not acknowledged within 3 s (retry_attempt > 0, same
    // trigger) to a connection that is still there, until each one is.
    let mut retries: HashMap<usize, u32> = HashMap::new();

    for round in 0.. {
        let unacked = || {
            (0..20)
                .filter(|i| sock.ack(&format!("c{i}")).is_none())
                .collect()
        };
        let all = eventually(60, "every acknowledgement", || async {
            let missing: Vec<usize> = unacked();
            missing.is_empty().then_some(())
        });
        if tokio::time::timeout(Duration::from_secs(3), all)
            .await
            .is_ok()
        {
            break;
        }
        let missing: Vec<usize> = unacked();
        assert!(round < 10, "never acknowledged: {missing:?}");
        for i in missing {
            let retry = retries.entry(i).or_default();
            *retry += 1;
            let conn = newest().await;
            sock.send_to(conn, command(i, &format!("c{i}"), *retry));
        }
    }
    let lost_acks = (0..20)
        .filter(|i| ack_text(&sock, &format!("c{i}")).is_some_and(|t| t.starts_with("Already")))
        .count();
    println!(
        "{} connections; redelivered {retries:?}; {lost_acks} of them had made their job \
         before their acknowledgement was lost",
        sock.connections()
    );
    // Acknowledged ones delivered once more, as when an acknowledgement is lost on the way.
    for i in (0..20).step_by(7) {
        let conn = newest().await;
        let id = format!("again{i}");
        sock.send_to(conn, command(i, &id, 1));
        let text = eventually(20, "the acknowledgement", || async { ack_text(&sock, &id) }).await;
        assert!(text.starts_with("Already received"), "{id}: {text}");
    }
    for i in 0..20 {
        let text = ack_text(&sock, &format!("c{i}")).unwrap();
        assert!(
            text.starts_with("Queued ship v") || text.starts_with("Already received"),
            "c{i}: {text}"
        );
    }
    let app = ws.app(&[]).await;
    each_once(&app, &fake, 20).await;
    let (_, metrics) = http_get(&server.url("/metrics")).unwrap();
    let connects = parse_metrics(&metrics)["deckhand_socket_connects_total{platform=\"slack\"}"];
    assert_eq!(connects as usize, sock.connections(), "{metrics}");
}
