//! Operability, end to end with real `deckhand serve` processes: metrics that move, a
//! separate metrics listener, graceful shutdown on SIGTERM (short and long jobs), logs that
//! carry job context and no secrets, and the inbound limits (413, 429, 503 on timeout).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::fake::{FakeApi, Scripted};
use crate::common::*;
use deckhand::platform::slack::signature;
use deckhand::store::jobs::state;
use serde_json::Value;

const SECRET: &str = "ops-signing-secret-5f1e2d";
const TOKEN: &str = "xoxb-ops-bot-token-77aa";

/// A deploy that runs for about two seconds.
fn ship() -> String {
    deploy_command(
        "ship",
        "everyone",
        r#"["sh", "-c", "echo shipping; sleep 2"]"#,
    )
}

/// A custom job that fails.
const BOOM: &str = r#"
name = "boom"
description = "Always fails"
kind = "custom"
[[args]]
name = "environment"
kind = "environment"
[roles]
"*" = "everyone"
[[steps]]
name = "fail"
argv = ["false"]
"#;

/// A deploy far longer than any grace period in these tests.
fn long() -> String {
    format!(
        "{}timeout_seconds = 120\n",
        deploy_command(
            "long",
            "everyone",
            r#"["sh", "-c", "echo pid=$$; sleep 60"]"#
        )
    )
}

/// A step that prints a secret it was given.
const LEAK: &str = r#"
name = "leak"
description = "Prints a secret from its environment"
kind = "custom"
[[args]]
name = "environment"
kind = "environment"
[roles]
"*" = "everyone"
[[steps]]
name = "print"
argv = ["sh", "-c", "echo token=$DEPLOY_TOKEN; echo done"]
pass_env = ["DEPLOY_TOKEN"]
"#;

const ROTATE: &str = r#"
name = "rotate-test"
description = "Store a new secret"
kind = "rotate_secret"
[[args]]
name = "environment"
kind = "environment"
[[args]]
name = "name"
kind = "secret_name"
[roles]
"*" = "everyone"
[[steps]]
name = "store"
argv = ["sh", "-c", "read v; printf %s \"$v\" > \"$DECKHAND_DATA_DIR/stored\"; echo stored"]
secret_stdin = true
"#;

/// A server with Slack configured against a fake Slack API.
struct Bot {
    ws: Workspace,
    fake: FakeApi,
    server: Server,
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl Bot {
    fn start(extra_config: &str, commands: &[(&str, &str)], env: &[(&str, &str)]) -> Bot {
        let ws = Workspace::new(Backend::Sqlite, extra_config, commands).unwrap();
        Bot::start_in(ws, env)
    }

    fn start_in(ws: Workspace, env: &[(&str, &str)]) -> Bot {
        let fake = FakeApi::start();
        let mut all: Vec<(String, String)> = vec![
            ("SLACK_SIGNING_SECRET".into(), SECRET.into()),
            ("SLACK_BOT_TOKEN".into(), TOKEN.into()),
            ("SLACK_API_URL".into(), fake.url("/api")),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let server = start_server(&ws, &all);
        Bot {
            ws,
            fake,
            server,
            env: all,
            http: reqwest::Client::new(),
        }
    }

    /// Start another `deckhand serve` on the same folder, database and fake Slack.
    fn restart(&mut self) {
        self.server = start_server(&self.ws, &self.env);
    }

    async fn post_signed(&self, path: &str, body: &str, secret: &str) -> reqwest::Response {
        let ts = now().to_string();
        self.http
            .post(self.server.url(path))
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

    fn command_body(&self, user: &str, text: &str, trigger: &str) -> String {
        let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
        serde_urlencoded::to_string([
            ("token", "raw-body-marker-q9z"),
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
        .unwrap()
    }

    /// A signed slash command; (status, ephemeral text).
    async fn command(&self, user: &str, text: &str, trigger: &str) -> (u16, String) {
        let body = self.command_body(user, text, trigger);
        let r = self.post_signed("/slack/commands", &body, SECRET).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (
            status,
            v["text"]
                .as_str()
                .or(v.as_str())
                .unwrap_or_default()
                .to_owned(),
        )
    }

    async fn metrics(&self) -> BTreeMap<String, f64> {
        let r = self
            .http
            .get(self.server.url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        parse_metrics(&r.text().await.unwrap())
    }

    /// Wait for the process to exit after a signal: (exit code, time taken).
    fn wait_exit(&mut self, since: Instant, limit: Duration) -> (i32, Duration) {
        loop {
            if let Some(status) = self.server.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), since.elapsed());
            }
            if since.elapsed() > limit {
                panic!(
                    "deckhand serve did not exit within {limit:?}:\n{}",
                    self.server.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll `/ready` until it reports the drain (503, "shutting down").
    async fn wait_draining(&self) {
        eventually(10, "/ready to report the drain", || async {
            let r = self.http.get(self.server.url("/ready")).send().await.ok()?;
            (r.status() == 503 && r.text().await.ok()?.contains("shutting down")).then_some(())
        })
        .await
    }
}

fn start_server(ws: &Workspace, env: &[(String, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(ws, &pairs)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn job_id(text: &str) -> i64 {
    text.to_lowercase()
        .split("job ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_commands_jobs_and_deliveries() {
    let bot = Bot::start(
        "[environments.qa]\n",
        &[("ship.toml", &ship()), ("boom.toml", BOOM)],
        &[],
    );
    let app = bot.ws.app(&[]).await;
    let before = bot.metrics().await;
    // Every gauge is there from the start, at zero.
    for s in [
        "deckhand_queue_depth{state=\"queued\"}",
        "deckhand_queue_depth{state=\"running\"}",
        "deckhand_queue_depth{state=\"awaiting_approval\"}",
        "deckhand_outbox_depth{platform=\"slack\"}",
        "deckhand_outbox_depth{platform=\"terminal\"}",
        "deckhand_draining",
    ] {
        assert_eq!(before.get(s), Some(&0.0), "{s} in {before:#?}");
    }
    // Slack fails the first two deliveries, so notices wait in the outbox for a while.
    bot.fake
        .fail_next([Scripted::status(500), Scripted::status(500)]);

    let (status, text) = bot.command("UALICE", "ship qa v1", "m1").await;
    assert_eq!(status, 200, "{text}");
    let ship = job_id(&text);
    let (status, text) = bot.command("UALICE", "boom qa", "m2").await;
    assert_eq!(status, 200, "{text}");
    let boom = job_id(&text);
    let (status, text) = bot
        .command("UNOBODY", "deploy production abc1234", "m3")
        .await;
    assert_eq!(status, 200);
    assert!(text.starts_with('✖'), "refused: {text}");
    let forged = bot
        .post_signed(
            "/slack/commands",
            &bot.command_body("UALICE", "ship qa v9", "m4"),
            "not-the-secret",
        )
        .await;
    assert_eq!(forged.status(), 401);

    // While the deploy runs, the gauges show it and the undelivered notices.
    let during = eventually(20, "running and pending work in the gauges", || async {
        let m = bot.metrics().await;
        (m["deckhand_queue_depth{state=\"running\"}"] >= 1.0
            && m["deckhand_outbox_depth{platform=\"slack\"}"] >= 1.0)
            .then_some(m)
    })
    .await;
    wait_state(&app, ship, state::SUCCEEDED).await;
    wait_state(&app, boom, state::FAILED).await;
    let slack_notices = app.db.job_notices(ship, "slack", 0).await.unwrap().len()
        + app.db.job_notices(boom, "slack", 0).await.unwrap().len();
    assert!(slack_notices >= 4, "{slack_notices} notices");
    // A row is marked delivered before the counter moves: wait for both.
    let delivered = "deckhand_notices_delivered_total{platform=\"slack\"}";
    // Or, where a newer state of the same message was waiting, superseded unsent.
    let superseded_total = "deckhand_notices_superseded_total{platform=\"slack\"}";
    let after = eventually(30, "every notice delivered and counted", || async {
        let m = bot.metrics().await;
        (m["deckhand_outbox_depth{platform=\"slack\"}"] == 0.0
            && m["deckhand_outbox_depth{platform=\"terminal\"}"] == 0.0
            && m["deckhand_queue_depth{state=\"running\"}"] == 0.0
            && metric_delta(&before, &m, delivered) + metric_delta(&before, &m, superseded_total)
                == slack_notices as f64)
            .then_some(m)
    })
    .await;

    let mut settled = app.db.job_notices(ship, "slack", 0).await.unwrap();
    settled.extend(app.db.job_notices(boom, "slack", 0).await.unwrap());
    let skipped = settled.iter().filter(|r| superseded(r)).count();
    let slash = "route=\"/slack/commands\"";
    for (series, want) in [
        (
            "deckhand_commands_total{platform=\"slack\",outcome=\"accepted\"}".to_owned(),
            2.0,
        ),
        (
            "deckhand_commands_total{platform=\"slack\",outcome=\"refused\"}".into(),
            1.0,
        ),
        (
            "deckhand_commands_total{platform=\"slack\",outcome=\"bad_signature\"}".into(),
            1.0,
        ),
        (
            "deckhand_jobs_total{kind=\"deploy\",state=\"succeeded\"}".into(),
            1.0,
        ),
        (
            "deckhand_jobs_total{kind=\"custom\",state=\"failed\"}".into(),
            1.0,
        ),
        (
            "deckhand_job_duration_seconds_count{kind=\"deploy\"}".into(),
            1.0,
        ),
        (
            "deckhand_job_duration_seconds_count{kind=\"custom\"}".into(),
            1.0,
        ),
        // The two-second deploy lands above the 1 s bucket, the instant failure well below
        // 2.5 s (bounds leave room for a loaded machine).
        (
            "deckhand_job_duration_seconds_bucket{kind=\"deploy\",le=\"1\"}".into(),
            0.0,
        ),
        (
            "deckhand_job_duration_seconds_bucket{kind=\"deploy\",le=\"30\"}".into(),
            1.0,
        ),
        (
            "deckhand_job_duration_seconds_bucket{kind=\"custom\",le=\"2.5\"}".into(),
            1.0,
        ),
        (
            "deckhand_delivery_failures_total{platform=\"slack\"}".into(),
            2.0,
        ),
        (
            "deckhand_notices_delivered_total{platform=\"slack\"}".into(),
            (slack_notices - skipped) as f64,
        ),
        (
            "deckhand_notices_superseded_total{platform=\"slack\"}".into(),
            skipped as f64,
        ),
        // Two accepted and one refused command answered 200; the forged one 401.
        (
            format!("deckhand_http_request_duration_seconds_count{{{slash},status=\"200\"}}"),
            3.0,
        ),
        (
            format!("deckhand_http_request_duration_seconds_count{{{slash},status=\"401\"}}"),
            1.0,
        ),
    ] {
        assert_eq!(metric_delta(&before, &after, &series), want, "{series}");
    }
    assert!(
        metric_delta(
            &before,
            &after,
            "deckhand_job_duration_seconds_sum{kind=\"deploy\"}"
        ) >= 2.0
    );
    assert!(during["deckhand_queue_depth{state=\"running\"}"] >= 1.0);
    assert!(during["deckhand_outbox_depth{platform=\"slack\"}"] >= 1.0);
    assert!(after.keys().any(|k| k.starts_with(&format!(
        "deckhand_http_request_duration_seconds_bucket{{{slash},status=\"200\",le="
    ))));
    // Each family is declared once with its type.
    let text = bot
        .http
        .get(bot.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (family, ty) in [
        ("deckhand_commands_total", "counter"),
        ("deckhand_jobs_total", "counter"),
        ("deckhand_job_duration_seconds", "histogram"),
        ("deckhand_notices_delivered_total", "counter"),
        ("deckhand_delivery_failures_total", "counter"),
        ("deckhand_http_request_duration_seconds", "histogram"),
        ("deckhand_queue_depth", "gauge"),
        ("deckhand_outbox_depth", "gauge"),
    ] {
        let decl = format!("# TYPE {family} {ty}\n");
        assert_eq!(text.matches(&decl).count(), 1, "{decl}in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_listener() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let server = Server::start(
        &ws,
        &[
            ("DECKHAND__SERVER__METRICS_LISTEN", &listen),
            ("DECKHAND__PROBES__INTERVAL_SECONDS", "1"),
        ],
    );
    let http = reqwest::Client::new();
    let public = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    assert_security_headers(public.headers(), "public /metrics");
    let apart = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(apart.status(), 200);
    assert_security_headers(apart.headers(), "metrics listener");
    let text = apart.text().await.unwrap();
    assert!(
        text.contains("deckhand_queue_depth{state=\"queued\"} 0"),
        "{text}"
    );
    // The public 404 was measured like any request.
    assert!(
        text.contains(
            "deckhand_http_request_duration_seconds_count{route=\"unmatched\",status=\"404\"} 1"
        ),
        "{text}"
    );
    // Probe results count up as the probes run (nothing listens on staging's port).
    let down = "deckhand_probe_results_total{environment=\"staging\",result=\"down\"}";
    let first = eventually(20, "a probe result", || async {
        let m = parse_metrics(
            &reqwest::get(format!("http://{listen}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?,
        );
        m.get(down).copied()
    })
    .await;
    eventually(20, "another probe result", || async {
        let m = parse_metrics(
            &reqwest::get(format!("http://{listen}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?,
        );
        (m.get(down).copied()? > first).then_some(())
    })
    .await;
    // Only /metrics lives there.
    let other = http
        .get(format!("http://{listen}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_job_finish_and_refuses_new_commands() {
    // Long enough that exiting before it proves the bot did not wait for it: the 2 s job and
    // the paced flush of its four Slack messages take about 5 s.
    const GRACE: u64 = 15;
    let mut bot = Bot::start(
        "[environments.qa]\n",
        &[("ship.toml", &ship())],
        &[(
            "DECKHAND__SERVER__SHUTDOWN_GRACE_SECONDS",
            &GRACE.to_string(),
        )],
    );
    let app = bot.ws.app(&[]).await;
    let (status, text) = bot.command("UALICE", "ship qa v1", "s1").await;
    assert_eq!(status, 200, "{text}");
    let id = job_id(&text);
    wait_state(&app, id, state::RUNNING).await;

    bot.server.sigterm();
    let signalled = Instant::now();
    bot.wait_draining().await;
    // A command arriving during the drain is refused out loud, and nothing is queued.
    let (status, text) = bot.command("UALICE", "ship qa v2", "s2").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("restarting"), "{text}");
    let metrics = parse_metrics(
        &reqwest::get(bot.server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(metrics.get("deckhand_draining"), Some(&1.0));

    let (code, took) = bot.wait_exit(signalled, Duration::from_secs(GRACE + 10));
    eprintln!("short job: exit {code} {took:?} after SIGTERM (grace {GRACE} s)");
    assert_eq!(code, 0, "{}", bot.server.output());
    assert!(
        took < Duration::from_secs(GRACE),
        "exited after {took:?}, grace {GRACE} s"
    );
    let j = app.db.job(id).await.unwrap().unwrap();
    assert_eq!(j.state, state::SUCCEEDED, "{j:?}");
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);
    // The outbox was flushed before exit: Slack got the final report.
    let rows = app.db.job_notices(id, "slack", 0).await.unwrap();
    assert!(rows.iter().all(|r| r.delivered_at.is_some()), "{rows:?}");
    let last = bot.fake.ok_calls("/api/chat.update");
    let last = last.last().expect("the job's message was updated");
    let text = last.body["text"].as_str().unwrap_or_default();
    assert!(text.contains("Deployed v1 to qa"), "{text}");
    assert!(bot.server.output().contains("deckhand stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_grace_is_left_and_reported_interrupted_at_next_start() {
    const GRACE: u64 = 2;
    let mut bot = Bot::start(
        "[environments.qa]\n",
        &[("long.toml", &long())],
        &[(
            "DECKHAND__SERVER__SHUTDOWN_GRACE_SECONDS",
            &GRACE.to_string(),
        )],
    );
    let app = bot.ws.app(&[]).await;
    let (status, text) = bot.command("UALICE", "long qa v1", "l1").await;
    assert_eq!(status, 200, "{text}");
    let id = job_id(&text);
    wait_state(&app, id, state::RUNNING).await;
    let step_pid: i32 = eventually(20, "the step to start", || async {
        let log = app.db.job_log(id, 0).await.unwrap();
        log.iter()
            .find_map(|l| l.line.strip_prefix("pid=").and_then(|p| p.parse().ok()))
    })
    .await;

    bot.server.sigterm();
    let signalled = Instant::now();
    // Grace, then the step's group gets SIGTERM (kill_grace 1 s), then at most 5 s of flush.
    let (code, took) = bot.wait_exit(signalled, Duration::from_secs(GRACE + 1 + 5 + 5));
    eprintln!("long job: exit {code} {took:?} after SIGTERM (grace {GRACE} s)");
    assert_eq!(code, 0, "{}", bot.server.output());
    assert!(
        took >= Duration::from_secs(GRACE),
        "left before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(GRACE + 1 + 5), "{took:?}");
    assert!(
        process_dead(step_pid),
        "the step's process group was stopped"
    );
    let j = app.db.job(id).await.unwrap().unwrap();
    assert_eq!(j.state, state::RUNNING, "left for the next start: {j:?}");
    let out = bot.server.output();
    let left: Value = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("job left running at shutdown"))
        })
        .unwrap_or_else(|| panic!("the abandonment is logged: {out}"));
    assert_eq!(left["span"]["job_id"], id);
    assert_eq!(left["span"]["environment"], "qa");
    assert_eq!(left["span"]["command"], "long");

    bot.restart();
    let j = wait_state(&app, id, state::INTERRUPTED).await;
    assert_eq!(j.attempts, 1, "not idempotent: never re-run");
    let reported = eventually(20, "the interrupted notice on Slack", || async {
        bot.fake
            .ok_calls("")
            .into_iter()
            .filter(|c| c.path.starts_with("/api/chat."))
            .find(|c| {
                c.body["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("long on qa (job {id}) was interrupted")))
            })
    })
    .await;
    assert_eq!(reported.body["channel"], "CDEPLOYS");
    // The fake records the call before the bot hears its answer and marks the row delivered.
    eventually(20, "the interrupted notice marked delivered", || async {
        let rows = app.db.job_notices(id, "slack", 0).await.unwrap();
        rows.last().and_then(|r| r.delivered_at)
    })
    .await;
    let log = app.db.job_log(id, 0).await.unwrap();
    assert_eq!(log.iter().filter(|l| l.line.starts_with("pid=")).count(), 1);
}

/// Where a field of a JSON log line is: at the top (flattened event fields) or in its span.
fn field<'a>(line: &'a Value, key: &str) -> Option<&'a Value> {
    line.get(key)
        .or_else(|| line.get("span").and_then(|s| s.get(key)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_job_context_and_no_secrets() {
    const STEP_SECRET: &str = "step-secret-value-8c41d0";
    let ws = Workspace::new(
        Backend::Sqlite,
        "[environments.qa]\n[environments.vault]\n",
        &[("leak.toml", LEAK), ("rotate-test.toml", ROTATE)],
    )
    .unwrap();
    // `secret_env` is a list, which DECKHAND__ overrides cannot express: edit the file.
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::write(
        ws.config_path(),
        cfg.replacen(
            "[runner]\n",
            "[runner]\nsecret_env = [\"DEPLOY_TOKEN\"]\n",
            1,
        ),
    )
    .unwrap();
    let mut bot = Bot::start_in(ws, &[("DEPLOY_TOKEN", STEP_SECRET), ("LOG_FORMAT", "json")]);
    let app = bot.ws.app(&[]).await;

    let leak_body = bot.command_body("UALICE", "leak qa", "g1");
    let (status, text) = bot.command("UALICE", "leak qa", "g1").await;
    assert_eq!(status, 200, "{text}");
    let leak = job_id(&text);
    let (status, text) = bot
        .command("UALICE", "rotate-test vault STRIPE_KEY", "g2")
        .await;
    assert_eq!(status, 200, "{text}");
    let rotate = job_id(&text);
    let forged_body = bot.command_body("UMALLORY", "leak qa", "g3");
    assert_eq!(
        bot.post_signed("/slack/commands", &forged_body, "forged")
            .await
            .status(),
        401
    );
    let j = wait_state(&app, leak, state::SUCCEEDED).await;
    assert!(j.result.is_some());
    wait_state(&app, rotate, state::SUCCEEDED).await;
    let rotated = std::fs::read_to_string(bot.ws.data_dir().join("stored")).unwrap();
    assert_eq!(rotated.len(), 32);
    // The step did print the secret, and it was redacted before it was stored.
    let stored: Vec<String> = app
        .db
        .job_log(leak, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert!(stored.iter().any(|l| l.starts_with("token=")), "{stored:?}");
    assert!(
        !stored.iter().any(|l| l.contains(STEP_SECRET)),
        "{stored:?}"
    );
    outbox_drained(&app, 20).await;

    bot.server.sigterm();
    let (code, _) = bot.wait_exit(Instant::now(), Duration::from_secs(20));
    assert_eq!(code, 0);
    let out = bot.server.output();
    for (what, s) in [
        ("the signing secret", SECRET),
        ("the bot token", TOKEN),
        ("the step secret", STEP_SECRET),
        ("the rotated secret", rotated.as_str()),
        ("a raw request body", leak_body.as_str()),
        ("a forged raw request body", forged_body.as_str()),
        ("a field only in request bodies", "raw-body-marker-q9z"),
    ] {
        assert!(!out.contains(s), "{what} reached the log:\n{out}");
    }

    // Every JSON line about a job says which job, where and what.
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() > 3, "{out}");
    let in_job: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            field(l, "job_id").is_some()
                || l.get("span").and_then(|s| s.get("name")) == Some(&Value::from("job"))
        })
        .collect();
    let finished: Vec<&&Value> = in_job
        .iter()
        .filter(|l| l["message"] == "job finished")
        .collect();
    assert_eq!(finished.len(), 2, "{out}");
    let missing: Vec<String> = in_job
        .iter()
        .filter(|l| {
            ["job_id", "environment", "command"]
                .iter()
                .any(|k| field(l, k).is_none())
        })
        .map(|l| l.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "job log lines without job_id, environment and command:\n{}",
        missing.join("\n")
    );
    let l = finished
        .iter()
        .find(|l| field(l, "job_id") == Some(&Value::from(leak)))
        .unwrap();
    assert_eq!(field(l, "environment"), Some(&Value::from("qa")));
    assert_eq!(field(l, "command"), Some(&Value::from("leak")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_over_rate_and_slow_requests_are_refused() {
    let bot = Bot::start(
        "",
        &[],
        &[
            ("DECKHAND__SERVER__RATE_LIMIT_PER_MINUTE", "6"),
            ("DECKHAND__SERVER__RATE_LIMIT_BURST", "3"),
            ("DECKHAND__SERVER__CLIENT_IP_HEADER", "Fly-Client-IP"),
            ("DECKHAND__SERVER__REQUEST_TIMEOUT_SECONDS", "3"),
            ("DECKHAND__SERVER__MAX_BODY_BYTES", "65536"),
        ],
    );
    let http = &bot.http;
    let post = |path: &str, client: Option<&str>, body: String| {
        let mut r = http.post(bot.server.url(path)).body(body);
        if let Some(c) = client {
            r = r.header("Fly-Client-IP", c);
        }
        r.send()
    };

    // 413. Each client sends a little past the limit and then waits, as one that is cut
    // off would: sending a whole large body would race the server closing the connection.
    let port = bot.server.port;
    let head = |path: &str, client: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nFly-Client-IP: {client}\r\nConnection: close\r\n{framing}\r\n"
        )
    };
    let over_slack = "a".repeat(16 * 1024 + 512);
    // Slack's routes stop at 16 KiB as the body is read, with or without a Content-Length.
    let (status, text, _) = raw_http(
        port,
        (head("/slack/commands", "10.0.0.9", "Content-Length: 20480\r\n") + &over_slack).as_bytes(),
    );
    assert_eq!(status, 413, "{text}");
    assert!(
        text.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    let chunked = format!("{:x}\r\n{over_slack}", over_slack.len());
    let (status, text, _) = raw_http(
        port,
        (head(
            "/slack/interactions",
            "10.0.0.7",
            "Transfer-Encoding: chunked\r\n",
        ) + &chunked)
            .as_bytes(),
    );
    assert_eq!(status, 413, "{text}");
    // Every route refuses a declared length past max_body_bytes before reading any of it.
    for path in ["/ready", "/alerts/generic", "/nowhere"] {
        let (status, text, _) = raw_http(
            port,
            head(path, "10.0.0.8", "Content-Length: 102400\r\n").as_bytes(),
        );
        assert_eq!(status, 413, "{path}: {text}");
    }

    // 429: three failed requests at once, then one every ten seconds, per client.
    for i in 0..3 {
        let r = post("/slack/commands", Some("10.0.0.1"), "x=1".into())
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "request {i} is within the burst");
    }
    let r = post("/slack/commands", Some("10.0.0.1"), "x=1".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_security_headers(r.headers(), "429");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // The same client is limited on both Slack routes (they share Slack's budget)...
    let r = post("/slack/interactions", Some("10.0.0.1"), "x=1".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // ...while Discord and alerts have budgets of their own (unconfigured here: 404).
    for path in ["/discord/interactions", "/alerts/generic"] {
        let r = post(path, Some("10.0.0.1"), "x=1".into()).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // ...but not on health checks; other clients have their own buckets; the header's
    // first address is the client.
    let r = http
        .get(bot.server.url("/health"))
        .header("Fly-Client-IP", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post("/slack/commands", Some("10.0.0.2, 10.0.0.1"), "x=1".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Without the header the TCP peer is the client.
    for _ in 0..3 {
        assert_eq!(
            post("/slack/commands", None, "x=1".into())
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert_eq!(
        post("/slack/commands", None, "x=1".into())
            .await
            .unwrap()
            .status(),
        429
    );

    // 503: a body that trickles in slower than request_timeout_seconds.
    let (status, text, took) = raw_http(
        bot.server.port,
        b"POST /slack/commands HTTP/1.1\r\nHost: x\r\nFly-Client-IP: 10.0.0.3\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nConnection: close\r\n\r\ncommand=",
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("request timed out"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );

    let m = bot.metrics().await;
    assert!(m["deckhand_http_rejected_total{reason=\"rate_limited\"}"] >= 3.0);
    assert!(m["deckhand_http_rejected_total{reason=\"body_too_large\"}"] >= 5.0);
    assert_eq!(m["deckhand_http_rejected_total{reason=\"timeout\"}"], 1.0);
    assert!(
        m["deckhand_http_request_duration_seconds_count{route=\"/slack/commands\",status=\"429\"}"]
            >= 2.0
    );
}

#[test]
fn check_reports_bad_server_limits() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let out = ws
        .cmd(&["check"])
        .env("DECKHAND__SERVER__REQUEST_TIMEOUT_SECONDS", "1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("request_timeout_seconds must be at least 3"),
        "{err}"
    );
    let out = ws
        .cmd(&["check"])
        .env("DECKHAND__SERVER__CLIENT_IP_HEADER", "Fly Client IP")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid HTTP header name"), "{err}");
    let out = ws.cmd(&["check"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_credentials_never_reach_the_log() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let token = "alert-token-4f9c1e7d2b";
    let server = Server::start(
        &ws,
        &[("DECKHAND_ALERT_TOKEN", token), ("RUST_LOG", "trace")],
    );
    let http = reqwest::Client::new();
    let a = http.get(server.url("/health")).send().await.unwrap();
    let b = http.get(server.url("/health")).send().await.unwrap();
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id(&a).len(), 36, "a UUID: {}", id(&a));
    assert_ne!(id(&a), id(&b));
    // One the caller sent is kept.
    let kept = http
        .get(server.url("/health"))
        .header("x-request-id", "caller-7")
        .send()
        .await
        .unwrap();
    assert_eq!(id(&kept), "caller-7");
    // A bearer token, right or wrong, and a Slack signature are not logged at trace level.
    for bearer in [token, "wrong-token-0a8b3c"] {
        let r = http
            .post(server.url("/alerts/generic"))
            .bearer_auth(bearer)
            .header("x-slack-signature", "v0=deadbeefsignature")
            .json(&serde_json::json!({"title": "disk full"}))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("x-request-id"));
    }
    let log = eventually(10, "the request spans in the log", || async {
        let out = server.output();
        out.contains("caller-7").then_some(out)
    })
    .await;
    for secret in [token, "wrong-token-0a8b3c", "deadbeefsignature"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_bearer_token() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let token = "metrics-token-7c3e9a1f";
    let server = Server::start(
        &ws,
        &[("DECKHAND_METRICS_TOKEN", token), ("RUST_LOG", "trace")],
    );
    let http = reqwest::Client::new();
    let get = |bearer: Option<&str>| {
        let mut r = http.get(server.url("/metrics"));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    for bearer in [None, Some("wrong-token-5d2c"), Some("")] {
        let r = get(bearer).await.unwrap();
        assert_eq!(r.status(), 401, "{bearer:?}");
        assert_security_headers(r.headers(), "refused /metrics");
        let body = r.text().await.unwrap();
        assert!(!body.contains("deckhand_"), "{bearer:?}: {body}");
    }
    let r = get(Some(token)).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("deckhand_queue_depth"), "{text}");
    // The other endpoints do not need it, and neither token reaches the log.
    assert_eq!(get_status(&http, &server.url("/health")).await, 200);
    let log = eventually(10, "the request spans in the log", || async {
        let out = server.output();
        out.contains("refused /metrics").then_some(out)
    })
    .await;
    for secret in [token, "wrong-token-5d2c"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

async fn get_status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url).send().await.unwrap().status().as_u16()
}
