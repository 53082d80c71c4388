//! Fault injection: the "nothing lost" promises under outages, crashes and hostile steps.
//!
//! These take minutes and some restart the shared PostgreSQL server, so they are ignored in
//! the normal run and executed one at a time by `scripts/test-faults` (which CI runs after
//! the main suite).

mod batch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::fake::{FakeApi, Scripted};
use crate::common::*;
use deckhand::store::jobs::state;
use serde_json::Value;

const SECRET: &str = "fault-signing-secret";
const TOKEN: &str = "xoxb-fault-token";

/// Takes two seconds.
fn slow() -> String {
    deploy_command(
        "slow",
        "everyone",
        r#"["sh", "-c", "echo working; sleep 2; echo done"]"#,
    )
}

const ENVS: &str =
    "[environments.qa]\n[environments.dev]\n[environments.ops]\n[probes]\nenabled = false\n";

fn slack_env(fake: &FakeApi) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
        ("SLACK_BOT_TOKEN", TOKEN.to_owned()),
        ("SLACK_API_URL", fake.url("/api")),
        // These tests are about outages and crashes, not the per-client limiter.
        ("DECKHAND__SERVER__RATE_LIMIT_PER_MINUTE", "0".to_owned()),
    ]
}

fn start(ws: &Workspace, env: &[(&'static str, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(ws, &pairs)
}

fn now() -> i64 {
    deckhand::domain::time::now_ms() / 1000
}

/// A signed slash command: (HTTP status, text), or None when the connection failed.
async fn command(server_url: &str, text: &str, trigger: &str) -> Option<(u16, String)> {
    let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
    let body = serde_urlencoded::to_string([
        ("command", format!("/{cmd}")),
        ("text", rest.to_owned()),
        ("user_id", "UFAULT".into()),
        ("channel_id", "CFAULT".into()),
        ("trigger_id", trigger.to_owned()),
    ])
    .unwrap();
    let ts = now().to_string();
    let sig = deckhand::platform::slack::signature(SECRET.as_bytes(), &ts, body.as_bytes());
    let r = reqwest::Client::new()
        .post(format!("{server_url}/slack/commands"))
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    Some((status, v["text"].as_str().unwrap_or("").to_owned()))
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

/// Each job's Slack notices went out exactly once, in order, unless superseded: the
/// successful calls that carry its notices' titles are its titles, one to one.
async fn assert_delivered_once_in_order(app: &deckhand::app::App, fake: &FakeApi, ids: &[i64]) {
    eventually(120, "every notice delivered", || async {
        app.db
            .outbox_depth()
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| p != "slack")
            .then_some(())
    })
    .await;
    let calls: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.status < 300 && c.path.starts_with("/api/chat."))
        .map(|c| c.body["text"].as_str().unwrap_or("").to_owned())
        .collect();
    for id in ids {
        // A state superseded by a newer one of the same message (while Slack was away) is
        // settled without a send; the newest is always sent.
        let rows = app.db.job_notices(*id, "slack", 0).await.unwrap();
        assert_eq!(
            rows.last().map(superseded),
            Some(false),
            "job {id}: the last state is sent"
        );
        let titles: Vec<String> = rows
            .iter()
            .filter(|r| !superseded(r))
            .map(|r| r.notice().unwrap().title)
            .collect();
        let mine: Vec<&String> = calls
            .iter()
            .filter(|c| titles.iter().any(|t| c.ends_with(t.as_str())))
            .collect();
        assert_eq!(
            mine.len(),
            titles.len(),
            "job {id}: each notice exactly once\n{mine:#?}\n{titles:#?}"
        );
        for (got, want) in mine.iter().zip(&titles) {
            assert!(
                got.ends_with(want.as_str()),
                "job {id} out of order: {got} / {want}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn chat_api_down_for_a_minute_then_back() {
    let ws = Workspace::new(Backend::Sqlite, ENVS, &[("slow.toml", &slow())]).unwrap();
    let fake = FakeApi::start();
    fake.fail_for(
        Duration::from_secs(60),
        vec![
            Scripted::slack_429(2),
            Scripted::status(500),
            Scripted::status(503),
        ],
    );
    let server = start(&ws, &slack_env(&fake));
    let mut ids = Vec::new();
    for (i, env) in ["qa", "dev", "ops"].iter().enumerate() {
        let (s, text) = command(
            &server.url(""),
            &format!("slow {env} v{i}"),
            &format!("out-{i}"),
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        ids.push(job_id(&text));
    }
    let app = ws.app(&[]).await;
    for id in &ids {
        eventually(60, "the job to finish during the outage", || async {
            app.db
                .job(*id)
                .await
                .unwrap()
                .filter(|j| j.state == state::SUCCEEDED)
                .map(|_| ())
        })
        .await;
    }
    assert!(
        fake.calls().iter().all(|c| c.status >= 400),
        "everything failed during the outage"
    );
    assert_delivered_once_in_order(&app, &fake, &ids).await;
}

/// The machine's PostgreSQL cluster, stopped for a test; started again when dropped.
struct PgCluster {
    down: bool,
}

impl PgCluster {
    fn ctl(action: &str) -> bool {
        let version = std::fs::read_dir("/etc/postgresql")
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let mut args = vec![
            "--skip-systemctl-redirect",
            version.to_str().unwrap(),
            "main",
            action,
        ];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        std::process::Command::new("pg_ctlcluster")
            .args(&args)
            .status()
            .unwrap()
            .success()
    }

    fn stop() -> PgCluster {
        assert!(PgCluster::ctl("stop"), "pg_ctlcluster stop failed");
        PgCluster { down: true }
    }

    fn is_down(&self) -> bool {
        self.down
    }

    fn start(&mut self) {
        assert!(PgCluster::ctl("start"), "pg_ctlcluster start failed");
        self.down = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.down {
            PgCluster::ctl("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn postgres_restart_while_jobs_run_and_commands_arrive() {
    let Some(ws) = Workspace::new(
        Backend::Postgres,
        ENVS,
        &[("slow.toml", &slow()), ("ship.toml", &quick())],
    ) else {
        return;
    };
    let fake = FakeApi::start();
    let server = start(&ws, &slack_env(&fake));
    let url = server.url("");
    let mut accepted = Vec::new();
    for i in 0..3 {
        let env = ["qa", "dev", "ops"][i];
        let (_, text) = command(
            &url,
            &format!("slow {env} before{i}"),
            &format!("pg-before-{i}"),
        )
        .await
        .unwrap();
        accepted.push(job_id(&text));
    }
    // Stop PostgreSQL while those run, keep it down for a few seconds while commands arrive
    // and /ready is read, then start it again. (A bare `restart` is down for ~0.1 s here:
    // too short to observe.) The guard starts it again even if this test fails.
    let mut pg = PgCluster::stop();
    let stopped = Instant::now();
    let mut saw_outage = false;
    let mut recovered = false;
    let mut refused_honestly = 0;
    let mut i = 0;
    while stopped.elapsed() < Duration::from_secs(90) {
        let ready = http_get(&server.url("/ready")).map(|r| r.0).unwrap_or(0);
        if ready == 503 && !saw_outage {
            saw_outage = true;
            eprintln!("/ready 503 at {:?} after the stop", stopped.elapsed());
        }
        if pg.is_down() && saw_outage && stopped.elapsed() >= Duration::from_secs(4) {
            pg.start();
            eprintln!("PostgreSQL started again at {:?}", stopped.elapsed());
        }
        // A command every half second, at most eight: enough to land during and after the
        // outage without queueing minutes of work.
        let send = i % 5 == 0 && i / 5 < 8;
        let answer = if send {
            command(
                &url,
                &format!("ship dev during{i}"),
                &format!("pg-during-{i}"),
            )
            .await
        } else {
            None
        };
        if let Some((s, text)) = answer {
            if text.starts_with("Queued") || text.starts_with("Already") {
                accepted.push(job_id(&text));
            } else {
                assert!(s == 200 || s == 503, "{s} {text}");
                assert!(
                    text.contains("nothing was queued")
                        || s == 503
                        || text.contains("slow to confirm"),
                    "not an honest refusal: {text}"
                );
                refused_honestly += 1;
            }
        }
        i += 1;
        if !pg.is_down() && ready == 200 {
            if !recovered {
                eprintln!("/ready 200 again at {:?} after the stop", stopped.elapsed());
            }
            recovered = true;
            if i / 5 >= 8 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_outage, "/ready never reported the outage");
    assert!(!pg.is_down(), "PostgreSQL was never started again");
    assert!(recovered, "/ready never reported the recovery");
    let app = ws.app(&[]).await;
    for id in &accepted {
        let j = eventually(120, &format!("accepted job {id} to finish"), || async {
            app.db
                .job(*id)
                .await
                .ok()
                .flatten()
                .filter(|j| state::is_final(&j.state))
        })
        .await;
        assert_eq!(j.state, state::SUCCEEDED, "job {id}: {:?}", j.result);
    }
    eprintln!(
        "accepted {} commands, {refused_honestly} refused during the outage",
        accepted.len()
    );
    assert_delivered_once_in_order(&app, &fake, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn kill_9_during_outbox_delivery_posts_nothing_twice() {
    let ws = Workspace::new(Backend::Sqlite, ENVS, &[("slow.toml", &slow())]).unwrap();
    let fake = FakeApi::start();
    // The first post hangs long enough to kill the server while it is in flight.
    fake.delay_next(Duration::from_secs(3));
    let mut server = start(&ws, &slack_env(&fake));
    let (_, text) = command(&server.url(""), "slow qa v1", "kd-1")
        .await
        .unwrap();
    let id = job_id(&text);
    eventually(20, "the first post to be in flight", || async {
        (!fake.calls_started().is_empty()).then_some(())
    })
    .await;
    server.kill9();
    let killed = Instant::now();
    // Slack received that post even though nobody was left to hear the answer.
    eventually(10, "the orphaned post to land", || async {
        (fake.ok_calls("/api/chat.postMessage").len() == 1).then_some(())
    })
    .await;
    let restarted = start(&ws, &slack_env(&fake));
    let app = ws.app(&[]).await;
    // The job was interrupted by the kill (not idempotent): reported, not re-run.
    let j = eventually(60, "the job to end", || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| state::is_final(&j.state))
    })
    .await;
    assert!(
        j.state == state::INTERRUPTED || j.state == state::SUCCEEDED,
        "{j:?}"
    );
    // The killed process's claim on the in-flight post runs out 20 s after its last renewal
    // (`outbox::CLAIM_MS`); the rest of the thread waits behind it, then goes out paced.
    // Well within a minute: before claims were renewed they lasted 60 s.
    eventually(50, "all notices delivered", || async {
        app.db
            .outbox_depth()
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| p != "slack")
            .then_some(())
    })
    .await;
    eprintln!(
        "every notice delivered {:?} after the kill",
        killed.elapsed()
    );
    let posts: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            c.status < 300 && c.path == "/api/chat.postMessage" && c.body.get("thread_ts").is_none()
        })
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "the job's message was posted once: {posts:#?}"
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn kill_9_between_enqueue_and_acknowledgement_loses_nothing() {
    let ws = Workspace::new(Backend::Sqlite, ENVS, &[("slow.toml", &slow())]).unwrap();
    let fake = FakeApi::start();
    let mut env = slack_env(&fake);
    env.push(("DECKHAND_FAULT", "abort-after-enqueue".into()));
    // No worker of the dying process may claim the job in the microseconds between its
    // commit and the abort (a periodic poll once did, and the job then ended interrupted,
    // as it should): its workers poll at start, then not for 5 s, long after it is gone.
    env.push(("DECKHAND__QUEUE__POLL_MS", "5000".into()));
    let mut server = start(&ws, &env);
    let answer = command(&server.url(""), "slow qa v1", "lost-ack").await;
    assert!(
        answer.is_none(),
        "the process died before answering: {answer:?}"
    );
    server.kill9();
    let restarted = start(&ws, &slack_env(&fake));
    let app = ws.app(&[]).await;
    let jobs = app.db.recent_jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 1, "the accepted job is on disk");
    let id = jobs[0].id;
    // Slack's user retries the same request: the same job, not a second one.
    let (_, text) = command(&restarted.url(""), "slow qa v1", "lost-ack")
        .await
        .unwrap();
    assert!(text.starts_with("Already received"), "{text}");
    let j = eventually(60, "the job to run once", || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| state::is_final(&j.state))
    })
    .await;
    assert_eq!(j.state, state::SUCCEEDED);
    assert_eq!(j.attempts, 1);
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);
}

const FLOOD: &str = r#"
name = "flood"
description = "Hundreds of MB on stdout"
kind = "custom"
role = "everyone"
[[steps]]
name = "flood"
argv = ["sh", "-c", "yes 'deckhand flood line' | head -c 300000000; sleep 300 & echo child=$!"]
timeout_seconds = 120
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn a_step_flooding_stdout_is_truncated_and_the_bot_stays_responsive() {
    let ws = Workspace::new(
        Backend::Sqlite,
        &format!("{ENVS}\n"),
        &[("flood.toml", FLOOD)],
    )
    .unwrap();
    let server = start(&ws, &[]);
    let app = ws.app(&[]).await;
    let mut follower = ws
        .cmd(&["run", "flood"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.child.id();
    let mut worst_health = Duration::ZERO;
    let mut peak_rss = 0u64;
    let job = eventually(20, "the job", || async {
        app.db.recent_jobs(1).await.unwrap().pop()
    })
    .await;
    loop {
        let t = Instant::now();
        let (s, _) = http_get(&server.url("/health")).unwrap();
        assert_eq!(s, 200);
        worst_health = worst_health.max(t.elapsed());
        peak_rss = peak_rss.max(rss_kib(pid));
        if app
            .db
            .job(job.id)
            .await
            .unwrap()
            .is_some_and(|j| state::is_final(&j.state))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = follower.wait();
    let j = app.db.job(job.id).await.unwrap().unwrap();
    assert_eq!(j.state, state::SUCCEEDED, "{:?}", j.result);
    let log = app.db.job_log(job.id, 0).await.unwrap();
    assert!(log.len() <= 10_001, "{} lines stored", log.len());
    assert!(
        log.last().unwrap().line.contains("[log truncated:"),
        "{:?}",
        log.last()
    );
    eprintln!("flood: worst /health {worst_health:?}, peak serve RSS {peak_rss} KiB");
    assert!(
        worst_health < Duration::from_secs(1),
        "the bot stalled: {worst_health:?}"
    );
    assert!(peak_rss < 200 * 1024, "memory grew to {peak_rss} KiB");
    let orphan: Option<i32> = log
        .iter()
        .find_map(|l| l.line.strip_prefix("child=").and_then(|p| p.parse().ok()));
    if let Some(o) = orphan {
        eventually(10, "the orphan to be gone", || async {
            process_dead(o).then_some(())
        })
        .await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A health endpoint that hangs, answers slowly, or flaps.
async fn odd_health(mode: &'static str) -> u16 {
    let n = Arc::new(AtomicU32::new(0));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                match mode {
                    "hang" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (axum::http::StatusCode::OK, "never".to_owned())
                    }
                    "slow" => {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        (axum::http::StatusCode::OK, "ok".to_owned())
                    }
                    _ if i.is_multiple_of(2) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down".to_owned(),
                    ),
                    _ => (axum::http::StatusCode::OK, "ok".to_owned()),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

/// A deploy with no work.
fn quick() -> String {
    deploy_command("ship", "everyone", r#"["true"]"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn health_endpoints_that_hang_crawl_or_flap() {
    let (hang, slow, flap) = (
        odd_health("hang").await,
        odd_health("slow").await,
        odd_health("flap").await,
    );
    let cfg = format!(
        "[environments.hang]\nhealth_url = \"http://127.0.0.1:{hang}/health\"\nhealth_timeout_seconds = 4\n\
         [environments.slow]\nhealth_url = \"http://127.0.0.1:{slow}/health\"\nhealth_timeout_seconds = 10\n\
         [environments.flap]\nhealth_url = \"http://127.0.0.1:{flap}/health\"\nhealth_timeout_seconds = 10\n[probes]\nenabled = false\n"
    );
    let ws = Workspace::new(Backend::Sqlite, &cfg, &[("ship.toml", &quick())]).unwrap();
    let t = Instant::now();
    let (code, out, _) = ws.run(&["ship", "hang", "v1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("unreachable: timed out (gave up after 4 s)"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "a hanging endpoint stalled the job: {:?}",
        t.elapsed()
    );
    let (code, out, _) = ws.run(&["ship", "slow", "v1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("returning 200"), "{out}");
    let (code, out, _) = ws.run(&["ship", "flap", "v1"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn a_database_refusing_writes_refuses_commands_honestly() {
    let Some(ws) = Workspace::new(Backend::Postgres, ENVS, &[("slow.toml", &slow())]) else {
        return;
    };
    let fake = FakeApi::start();
    let server = start(&ws, &slack_env(&fake));
    let name = ws.db.url.rsplit('/').next().unwrap().to_owned();
    let admin = pg_admin_url().unwrap();
    let sql = format!(
        "ALTER DATABASE {name} SET default_transaction_read_only = on; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid();"
    );
    pg_exec(&admin, &sql);
    let mut texts = Vec::new();
    for i in 0..3 {
        if let Some((s, text)) = command(&server.url(""), "slow qa v1", &format!("ro-{i}")).await {
            assert_eq!(s, 200);
            texts.push(text);
        }
    }
    assert!(!texts.is_empty());
    for t in &texts {
        assert!(
            t.contains("could not record this command") && t.contains("nothing was queued"),
            "{t}"
        );
    }
    pg_exec(
        &admin,
        &format!("ALTER DATABASE {name} SET default_transaction_read_only = off"),
    );
    let app = ws.app(&[]).await;
    assert!(
        app.db.recent_jobs(10).await.unwrap().is_empty(),
        "a refused command left a job"
    );
}
