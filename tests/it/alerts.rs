//! Alerts into incident channels, and uptime probes, against a fake Slack API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::fake::FakeApi;
use crate::common::*;
use serde_json::{Value, json};

const TOKEN: &str = "alert-token-5f2a9c";

const ROUTING: &str = r#"
[alerts]
channels = { slack = "CINCIDENTS" }
reminder_seconds = { P0 = 1 }

[[alerts.routes]]
labels = { environment = "production", severity = "critical" }
severity = "P0"
channels = { slack = "CPAGE" }

[probes]
enabled = false
"#;

/// Alertmanager's webhook v4 example, as its documentation shows it.
fn alertmanager(status: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "deckhand",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "environment": "production", "severity": "critical"},
        "commonAnnotations": {"summary": "Error rate above 5% on checkout"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HighErrorRate", "environment": "production", "severity": "critical", "service": "checkout"},
            "annotations": {"summary": "Error rate above 5% on checkout", "description": "5xx ratio 7.2% over 5m"},
            "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": if status == "resolved" { "2026-11-25T10:12:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus:9090/graph?g0.expr=rate",
            "fingerprint": "c8b2f5e0a1d3"
        }]
    })
}

/// Grafana's webhook: the same shape plus orgId, title, state and message.
fn grafana() -> Value {
    json!({
        "receiver": "deckhand", "status": "firing", "orgId": 1, "title": "[FIRING:1] DiskFull", "state": "alerting",
        "message": "Disk on db-1 is 95% full", "version": "1", "groupKey": "{}:{alertname=\"DiskFull\"}",
        "truncatedAlerts": 0, "externalURL": "http://grafana:3000/", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "environment": "staging", "severity": "warning"},
            "annotations": {"summary": "Disk 95% full on db-1"}, "startsAt": "2026-11-25T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana:3000/alerting/grafana/abc/view", "fingerprint": "9f1e"}]
    })
}

struct Env {
    ws: Workspace,
    fake: FakeApi,
    server: Server,
    http: reqwest::Client,
}

impl Env {
    fn start() -> Env {
        Env::with_config(ROUTING)
    }

    fn with_config(config: &str) -> Env {
        Env::with_server_keys(config, "")
    }

    /// `server` is added to the workspace's `[server]` table.
    fn with_server_keys(config: &str, server: &str) -> Env {
        let ws = Workspace::new(Backend::Sqlite, config, &[]).unwrap();
        let path = ws.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("[server]\n", &format!("[server]\n{server}\n"), 1),
        )
        .unwrap();
        let fake = FakeApi::start();
        let server = Server::start(
            &ws,
            &[
                ("DECKHAND_ALERT_TOKEN", TOKEN),
                ("SLACK_SIGNING_SECRET", "sig"),
                ("SLACK_BOT_TOKEN", "xoxb-alerts"),
                ("SLACK_API_URL", &fake.url("/api")),
            ],
        );
        Env {
            ws,
            fake,
            server,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, source: &str, body: &str, token: Option<&str>) -> (u16, String) {
        let mut r = self
            .http
            .post(self.server.url(&format!("/alerts/{source}")))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// Successful Slack calls as (method, channel, text, thread_ts).
fn slack_calls(fake: &FakeApi) -> Vec<(String, String, String, Option<String>)> {
    fake.calls()
        .into_iter()
        .filter(|c| c.status < 300 && c.path.starts_with("/api/chat."))
        .map(|c| {
            (
                c.path.trim_start_matches("/api/").to_owned(),
                c.body["channel"].as_str().unwrap_or("").to_owned(),
                c.body["text"].as_str().unwrap_or("").to_owned(),
                c.body["thread_ts"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_alerts_route_update_resolve_and_get_acknowledged() {
    let e = Env::start();
    let (s, body) = e
        .post(
            "alertmanager",
            &alertmanager("firing").to_string(),
            Some(TOKEN),
        )
        .await;
    assert_eq!((s, body.as_str()), (200, "{\"accepted\":1}"));
    let first = eventually(20, "the incident message", || async {
        slack_calls(&e.fake).into_iter().next()
    })
    .await;
    assert_eq!(first.0, "chat.postMessage");
    assert_eq!(first.1, "CPAGE", "routed by environment and severity");
    assert_eq!(
        first.2,
        "✖ [P0] production: Error rate above 5% on checkout"
    );

    // A repeat updates the same message.
    e.post(
        "alertmanager",
        &alertmanager("firing").to_string(),
        Some(TOKEN),
    )
    .await;
    eventually(20, "the update", || async {
        slack_calls(&e.fake)
            .iter()
            .any(|c| c.0 == "chat.update")
            .then_some(())
    })
    .await;
    let update = e.fake.ok_calls("/api/chat.update").pop().unwrap();
    assert!(
        update.body["blocks"]
            .to_string()
            .contains("*Firing count*\\n2"),
        "{}",
        update.body["blocks"]
    );

    // The Acknowledge button records who took it.
    let app = e.ws.app(&[]).await;
    let incident = app
        .db
        .open_incident("alertmanager:c8b2f5e0a1d3")
        .await
        .unwrap()
        .unwrap();
    let out = deckhand::intake::submit(
        &app,
        deckhand::intake::Invocation {
            platform: "slack".into(),
            identity: deckhand::intake::policy::Identity::Slack {
                user: "UONCALL".into(),
            },
            actor: "slack:UONCALL".into(),
            channel: Some("CPAGE".into()),
            command: "ack".into(),
            args: vec![incident.id.to_string()],
            request_id: Some("ack-1".into()),
            reply_to: None,
        },
    )
    .await
    .unwrap();
    assert!(out.message().contains("You took incident"), "{out:?}");
    assert_eq!(
        app.db
            .incident(incident.id)
            .await
            .unwrap()
            .unwrap()
            .acked_by
            .as_deref(),
        Some("slack:UONCALL")
    );

    // Resolved: the message says so, and a "blocker resolved" reply follows in its thread.
    e.post(
        "alertmanager",
        &alertmanager("resolved").to_string(),
        Some(TOKEN),
    )
    .await;
    let calls = eventually(20, "the resolution", || async {
        let c = slack_calls(&e.fake);
        c.iter()
            .any(|x| x.2.contains("Blocker resolved"))
            .then_some(c)
    })
    .await;
    let last_update = calls.iter().rfind(|c| c.0 == "chat.update").unwrap();
    assert!(
        last_update
            .2
            .starts_with("✔ Resolved after 12 min 0 s: [P0] production"),
        "{}",
        last_update.2
    );
    let reply = calls
        .iter()
        .find(|c| c.2.contains("Blocker resolved"))
        .unwrap();
    assert!(
        reply.3.is_some(),
        "the blocker-resolved notice is a thread reply"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.0 == "chat.postMessage" && c.3.is_none())
            .count(),
        1,
        "one message per incident"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_alerts_use_the_default_channel_and_mapped_severity() {
    let e = Env::start();
    let (s, _) = e.post("grafana", &grafana().to_string(), Some(TOKEN)).await;
    assert_eq!(s, 200);
    let first = eventually(20, "the incident message", || async {
        slack_calls(&e.fake).into_iter().next()
    })
    .await;
    assert_eq!(first.1, "CINCIDENTS");
    assert_eq!(first.2, "⚠ [P2] staging: Disk 95% full on db-1");
    let blocks = e.fake.ok_calls("/api/chat.postMessage")[0].body["blocks"].to_string();
    assert!(
        blocks.contains("Disk on db-1 is 95% full"),
        "Grafana's message is the description: {blocks}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_alerts_record_nothing() {
    let e = Env::start();
    let good = alertmanager("firing").to_string();
    assert_eq!(e.post("alertmanager", &good, None).await.0, 401);
    assert_eq!(
        e.post("alertmanager", &good, Some("wrong-token")).await.0,
        401
    );
    let (s, reason) = e
        .post("alertmanager", "{\"alerts\": [{\"status\": 5}", Some(TOKEN))
        .await;
    assert_eq!(s, 400);
    assert!(
        reason.contains("malformed alertmanager payload"),
        "{reason}"
    );
    let (s, reason) = e
        .post("generic", "{\"severity\": \"critical\"}", Some(TOKEN))
        .await;
    assert_eq!(s, 400);
    assert!(reason.contains("missing field `title`"), "{reason}");
    let app = e.ws.app(&[]).await;
    assert!(app.db.firing_incidents().await.unwrap().is_empty());
    assert!(e.fake.calls().is_empty());
    // The generic format works with the right token.
    let (s, _) = e.post("generic", &json!({"title": "Queue backlog", "severity": "error", "environment": "production", "dedup_key": "q1"}).to_string(), Some(TOKEN)).await;
    assert_eq!(s, 200);
    let i = app.db.open_incident("generic:q1").await.unwrap().unwrap();
    assert_eq!(i.severity, "P1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_p0_gets_reminders() {
    // Reminders go out on the probe tick (30 s by default): tick every second here.
    let e = Env::with_config(&format!("{ROUTING}interval_seconds = 1\n"));
    e.post(
        "alertmanager",
        &alertmanager("firing").to_string(),
        Some(TOKEN),
    )
    .await;
    let reminder = eventually(20, "a reminder", || async {
        slack_calls(&e.fake).into_iter().find(|c| {
            c.2.contains("Reminder: [P0] Error rate above 5% on checkout")
        })
    })
    .await;
    assert!(reminder.3.is_some(), "reminders are thread replies");
}

/// A local endpoint that can be switched down and up.
async fn switchable() -> (u16, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_goes_down_and_up_makes_one_incident_with_its_downtime() {
    let (port, up) = switchable().await;
    let cfg = format!(
        "[environments.web]\nhealth_url = \"http://127.0.0.1:{port}/health\"\n\n[probes]\ninterval_seconds = 1\ntimeout_seconds = 1\nfailures_before_incident = 2\nsuccesses_before_resolve = 2\n"
    );
    let ws = Workspace::new(Backend::Sqlite, &cfg, &[]).unwrap();
    let app = ws.app(&[]).await;
    // Only probe "web": the demo environments are not running in this test.
    let stop = deckhand::support::runner::CancelToken::new();
    tokio::spawn(deckhand::watch::probes::run(app.clone(), stop.clone()));
    eventually(10, "a healthy probe", || async {
        app.db
            .recent_probes("web", 1)
            .await
            .unwrap()
            .first()
            .filter(|r| r.ok)
            .map(|_| ())
    })
    .await;
    up.store(false, Ordering::SeqCst);
    let down_at = deckhand::domain::time::now_ms();
    let opened = eventually(20, "the infrastructure issue", || async {
        app.db.open_incident("probe:web").await.unwrap()
    })
    .await;
    up.store(true, Ordering::SeqCst);
    let up_at = deckhand::domain::time::now_ms();
    let resolved = eventually(20, "the resolution", || async {
        app.db
            .incident(opened.id)
            .await
            .unwrap()
            .filter(|i| i.status == "resolved")
    })
    .await;
    stop.cancel();
    let downtime = resolved.resolved_at.unwrap() - resolved.first_seen;
    let real = up_at - down_at;
    assert!(
        (downtime - real).abs() <= 2_500,
        "measured downtime {downtime} ms vs real {real} ms (probes are 1 s apart)"
    );
    let web: i64 = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM incidents WHERE dedup_key = 'probe:web'").fetch_one(p).await.unwrap()
    });
    assert_eq!(web, 1, "one incident for the outage");
    let notices = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar::<_, String>("SELECT body FROM outbox WHERE thread_key = $1 ORDER BY id")
            .bind(format!("incident:{}", opened.id))
            .fetch_all(p)
            .await
            .unwrap()
    });
    assert_eq!(
        notices.len(),
        3,
        "opened, resolved, blocker-resolved reply: {notices:#?}"
    );
    assert!(notices[0].contains("web is down"));
    assert!(notices[1].contains("Resolved after"));
    assert!(notices[2].contains("Blocker resolved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_alertmanager_group_up_to_one_mib_is_accepted() {
    let e = Env::with_config("[probes]\nenabled = false\n");
    // A group of ten alerts, each with a long description: about 900 KiB in all.
    let mut group = alertmanager("firing");
    let one = group["alerts"][0].clone();
    group["alerts"] = (0..10)
        .map(|i| {
            let mut a = one.clone();
            a["fingerprint"] = json!(format!("big{i}"));
            a["labels"]["environment"] = json!("staging");
            a["labels"]["severity"] = json!("warning");
            a["annotations"]["description"] = json!("x".repeat(90 * 1024));
            a
        })
        .collect();
    let body = group.to_string();
    assert!(
        body.len() > 900 * 1024 && body.len() < 1024 * 1024,
        "{}",
        body.len()
    );
    let (s, text) = e.post("alertmanager", &body, Some(TOKEN)).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("\"accepted\":10"), "{text}");

    // Past 1 MiB: refused by its declared length, and as it is read when it has none.
    let head = |framing: &str| {
        format!(
            "POST /alerts/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nConnection: close\r\n{framing}\r\n"
        )
    };
    let over = "a".repeat(1024 * 1024 + 512);
    let (s, text, _) = raw_http(
        e.server.port,
        (head(&format!("Content-Length: {}\r\n", over.len())) + &over).as_bytes(),
    );
    assert_eq!(s, 413, "{text}");
    let chunked = format!("{:x}\r\n{over}\r\n0\r\n\r\n", over.len());
    let (s, text, _) = raw_http(
        e.server.port,
        (head("Transfer-Encoding: chunked\r\n") + &chunked).as_bytes(),
    );
    assert_eq!(s, 413, "{text}");
}

/// Issue 19: 1,000 repeats of one alert, then a new P0. The P0's message must not wait
/// behind the repeats' updates, and the repeated incident's message ends at its true count
/// after a handful of edits (each newer state supersedes the ones still waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_repeats_never_buries_a_new_p0() {
    let e = Env::with_server_keys(
        &ROUTING.replace("reminder_seconds = { P0 = 1 }\n", ""),
        "rate_limit_per_minute = 0",
    );
    let storm = alertmanager("firing").to_string();
    let storm_began = std::time::Instant::now();
    for i in 0..1000 {
        let (s, body) = e.post("alertmanager", &storm, Some(TOKEN)).await;
        assert_eq!(s, 200, "repeat {i}: {body}");
    }
    let mut p0 = alertmanager("firing");
    p0["alerts"][0]["fingerprint"] = json!("77aa00ff11bb");
    p0["alerts"][0]["annotations"]["summary"] = json!("Checkout database is down");
    p0["commonAnnotations"]["summary"] = json!("Checkout database is down");
    let storm_took = storm_began.elapsed();
    let sent = std::time::Instant::now();
    assert_eq!(
        e.post("alertmanager", &p0.to_string(), Some(TOKEN)).await.0,
        200
    );
    eventually(10, "the new P0's message within 10 s", || async {
        slack_calls(&e.fake)
            .into_iter()
            .any(|c| c.0 == "chat.postMessage" && c.2.contains("Checkout database is down"))
            .then_some(())
    })
    .await;
    let p0_after = sent.elapsed();

    let storm_updates = |calls: &[(String, String, String, Option<String>)]| {
        calls
            .iter()
            .filter(|c| c.0 == "chat.update" && c.2.contains("Error rate above 5%"))
            .count()
    };
    eventually(60, "the storm's message shows all 1,000", || async {
        e.fake
            .ok_calls("/api/chat.update")
            .last()
            .filter(|u| {
                u.body["blocks"]
                    .to_string()
                    .contains("*Firing count*\\n1000")
            })
            .map(|_| ())
    })
    .await;
    let calls = slack_calls(&e.fake);
    let storm_posts: Vec<_> = e
        .fake
        .calls()
        .into_iter()
        .filter(|c| {
            // (A reminder under it is a reply: its alert began days ago.)
            c.path == "/api/chat.postMessage"
                && c.body.get("thread_ts").is_none()
                && c.body["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Error rate above 5%")
        })
        .collect();
    let posts = storm_posts.len();
    let updates = storm_updates(&calls);
    eprintln!(
        "1,000 repeats in {storm_took:?}; new P0 posted after {p0_after:?}; the storm cost {posts} post and {updates} updates"
    );
    assert_eq!(
        posts, 1,
        "one message for the repeated incident: {storm_posts:#?}"
    );
    // At most one edit per pace of `chat.update` (1.2 s) while the storm lasts, and the
    // last state: a handful, not one per repeat (on this machine the 1,000 repeats take
    // a few seconds).
    let paced = (storm_took.as_secs_f64() / 1.2).ceil() as usize + 3;
    assert!(
        updates <= paced.min(40),
        "{updates} updates for a storm of {storm_took:?}: more than one per pace"
    );
    // The superseded states are accounted for, not lost: every row is settled.
    let app = e.ws.app(&[]).await;
    outbox_drained(&app, 10).await;
}
