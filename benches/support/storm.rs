//! The alert storm (issue 17): Alertmanager webhooks at 1,000/s for 10 s over 500 alert
//! groups, into `deckhand serve`, open loop. Measured: the acknowledgement latency, then
//! what reached a fake Discord on 127.0.0.1 (incidents routed over 10 channels by a `team`
//! label): one message per incident, and how long until every message shows its latest
//! state (each group fired 20 times, so "Firing count 20").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use serde_json::json;

use super::{Serve, percentile, serve, workspace};

pub const RATE: u64 = 1000;
pub const SECS: u64 = 10;
pub const GROUPS: usize = 500;
const TEAMS: usize = 10;
const TOKEN: &str = "bench-alert-token";

/// One message the fake holds: its group, how often it was posted, its newest body.
#[derive(Default)]
struct Message {
    group: Option<usize>,
    body: String,
}

#[derive(Default)]
struct Fake {
    /// By message id.
    messages: HashMap<u64, Message>,
    next_id: u64,
    posts: usize,
    edits: usize,
}

/// The group a message is about, from its text ("storm group N").
fn group_of(body: &str) -> Option<usize> {
    let at = body.find("storm group ")? + "storm group ".len();
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn handle(
    State(f): State<Arc<Mutex<Fake>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> String {
    let text = String::from_utf8_lossy(&body).into_owned();
    let parts: Vec<&str> = uri.path().split('/').collect();
    let mut f = f.lock().unwrap();
    // …/channels/C/messages (POST) and …/channels/C/messages/ID (PATCH).
    match (method, parts.iter().rposition(|p| *p == "messages")) {
        (Method::POST, Some(i)) if i + 1 == parts.len() => {
            f.next_id += 1;
            f.posts += 1;
            let id = f.next_id;
            f.messages.insert(
                id,
                Message {
                    group: group_of(&text),
                    body: text,
                },
            );
            json!({"id": id.to_string(), "channel_id": parts[i - 1]}).to_string()
        }
        (Method::PATCH, Some(i)) if i + 2 == parts.len() => {
            let id: u64 = parts[i + 1].parse().unwrap_or(0);
            f.edits += 1;
            if let Some(m) = f.messages.get_mut(&id) {
                m.body = text;
            }
            json!({"id": id.to_string()}).to_string()
        }
        _ => "{}".into(),
    }
}

fn config() -> String {
    let mut c = String::from("[alerts]\nchannels = { discord = \"900\" }\n");
    for t in 0..TEAMS {
        c.push_str(&format!(
            "[[alerts.routes]]\nlabels = {{ team = \"t{t}\" }}\nchannels = {{ discord = \"90{t}\" }}\n"
        ));
    }
    c
}

fn webhook(group: usize) -> String {
    let summary = format!("storm group {group} error rate above 5%");
    let labels = json!({"alertname": format!("Storm{group}"), "team": format!("t{}", group % TEAMS), "severity": "warning"});
    json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"Storm{group}\"}}"), "truncatedAlerts": 0,
        "status": "firing", "receiver": "deckhand", "groupLabels": {"alertname": format!("Storm{group}")},
        "commonLabels": labels, "commonAnnotations": {"summary": summary}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": summary},
            "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("storm{group:04}")}]
    })
    .to_string()
}

pub struct Storm {
    pub sent: usize,
    pub ok: usize,
    /// The answers other than 200, counted.
    pub statuses: String,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Incidents whose message shows their latest state, messages posted, edits, and
    /// seconds from the storm's end until the last message showed its latest state.
    pub settled: usize,
    pub posts: usize,
    /// Incidents posted more than once.
    pub doubled: usize,
    pub edits: usize,
    pub settle_s: Option<f64>,
}

/// One storm on the database at `url`.
pub async fn run(url: &str) -> Storm {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api/v10", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let dir = workspace(&config());
    let s: Serve = serve(
        dir.path(),
        url,
        &[
            ("DECKHAND_ALERT_TOKEN", TOKEN),
            ("DISCORD_PUBLIC_KEY", &public),
            ("DISCORD_BOT_TOKEN", "bench-discord-token"),
            ("DISCORD_APPLICATION_ID", "424242"),
            ("DISCORD_API_URL", &api),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{}/alerts/alertmanager", s.port);
    let bodies: Vec<String> = (0..GROUPS).map(webhook).collect();
    let total = (RATE * SECS) as usize;
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / RATE as f64)).await;
        let req = client
            .post(&endpoint)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(bodies[i % GROUPS].clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            (t.elapsed().as_secs_f64() * 1000.0, status)
        }));
    }
    let (mut lat, mut statuses) = (Vec::with_capacity(total), std::collections::BTreeMap::new());
    for h in handles {
        let (ms, status) = h.await.unwrap();
        lat.push(ms);
        *statuses.entry(status).or_insert(0usize) += 1;
    }
    let ok = statuses.get(&200).copied().unwrap_or(0);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ended = Instant::now();
    // Each incident's true count, from the database: its message must end showing it.
    let app = super::app(dir.path(), url, "full").await;
    let expected: HashMap<usize, String> = app
        .db
        .firing_incidents()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| {
            let g = group_of(&i.title)?;
            Some((
                g,
                format!("\"name\":\"Firing count\",\"value\":\"{}\"", i.firing_count),
            ))
        })
        .collect();
    app.db.close().await;
    let count = |f: &Fake| {
        f.messages
            .values()
            .filter(|m| {
                m.group
                    .and_then(|g| expected.get(&g))
                    .is_some_and(|want| m.body.contains(want))
            })
            .count()
    };
    let mut settle_s = None;
    while ended.elapsed() < Duration::from_secs(300) {
        if count(&fake.lock().unwrap()) >= expected.len().max(1) {
            settle_s = Some(ended.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    let f = fake.lock().unwrap();
    Storm {
        sent: total,
        ok,
        statuses: statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(s, n)| {
                if *s == 0 {
                    format!("{n} unanswered")
                } else {
                    format!("{n} × {s}")
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: *lat.last().unwrap_or(&f64::NAN),
        settled: count(&f),
        posts: f.posts,
        doubled: {
            let mut per: HashMap<usize, usize> = HashMap::new();
            for g in f.messages.values().filter_map(|m| m.group) {
                *per.entry(g).or_default() += 1;
            }
            per.values().filter(|n| **n > 1).count()
        },
        edits: f.edits,
        settle_s,
    }
}

/// The storm on each backend: printed lines and a section of BENCHMARKS.md.
pub async fn section(backends: &[(&str, &str)]) -> String {
    use std::fmt::Write as _;
    let mut rows = String::new();
    for (name, url) in backends {
        let r = run(url).await;
        let settle = r
            .settle_s
            .map_or("not within 300 s".to_owned(), |s| format!("{s:.1} s"));
        println!(
            "storm {name:<28} {RATE}/s for {SECS} s over {GROUPS} groups: acked {}/{} ({}) p50 {:.2} ms p99 {:.2} ms max {:.2} ms; {} of {GROUPS} incidents show their latest state after {settle}; {} posts ({} incidents posted twice), {} edits",
            r.ok,
            r.sent,
            if r.statuses.is_empty() {
                "all 200"
            } else {
                &r.statuses
            },
            r.p50,
            r.p99,
            r.max,
            r.settled,
            r.posts,
            r.doubled,
            r.edits
        );
        let _ = writeln!(
            rows,
            "| {name} | {}/{} | {:.2} | {:.2} | {:.2} | {}/{GROUPS} | {settle} | {} | {} | {} |",
            r.ok, r.sent, r.p50, r.p99, r.max, r.settled, r.posts, r.doubled, r.edits
        );
    }
    format!(
        "## Alert storm: Alertmanager webhooks at {RATE}/s for {SECS} s over {GROUPS} alert groups (each fires {} times), incidents routed to 10 Discord channels on a fake API\n\n\
         | backend | acked | p50 ms | p99 ms | max ms | incidents showing their latest state | after the storm, until the last did | messages posted | incidents posted twice | edits |\n|---|---|---|---|---|---|---|---|---|---|\n{rows}",
        RATE * SECS / GROUPS as u64
    )
}
