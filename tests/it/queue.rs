//! Queue and storage behaviour, the same tests on SQLite and on PostgreSQL.

use std::sync::Arc;

use crate::common::*;
use deckhand::app::App;
use deckhand::intake::policy::Identity;
use deckhand::intake::{Invocation, Outcome, submit};
use deckhand::store::jobs::state;
use deckhand::support::runner::CancelToken;

fn inv(command: &str, args: &[&str], request: &str) -> Invocation {
    Invocation {
        platform: "terminal".into(),
        identity: Identity::Operator,
        actor: "terminal:tester".into(),
        channel: None,
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        request_id: Some(request.into()),
        reply_to: None,
    }
}

async fn accept(app: &Arc<App>, command: &str, args: &[&str], request: &str) -> i64 {
    match submit(app, inv(command, args, request)).await.unwrap() {
        Outcome::Accepted { job_id, .. } => job_id,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// Start workers and the sender in this process; returns a token that stops them.
fn start_workers(app: &Arc<App>) -> CancelToken {
    let stop = CancelToken::new();
    tokio::spawn(deckhand::jobs::run_workers(
        app.clone(),
        stop.clone(),
        CancelToken::new(),
    ));
    tokio::spawn(deckhand::outbox::run_sender(
        app.clone(),
        deckhand::server::deliverers(app, false),
        stop.clone(),
    ));
    stop
}

async fn wait_final(app: &App, id: i64, secs: u64) -> deckhand::store::jobs::JobRow {
    eventually(secs, &format!("job {id} to finish"), || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| state::is_final(&j.state))
    })
    .await
}

/// A deploy-kind command with no health URL check, whose step records its run.
fn slow() -> String {
    format!(
        "{}timeout_seconds = 30\n",
        deploy_command(
            "slow",
            "everyone",
            r#"["sh", "-c", "echo start; sleep 1; echo end"]"#
        )
    )
}

const NO_HEALTH: &str = r#"
[environments.qa]
[environments.dev]
"#;

both!(same_request_twice_makes_one_job, idempotency);
async fn idempotency(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let a = submit(&app, inv("deploy", &["staging", "abc1234"], "req-1"))
        .await
        .unwrap();
    let b2 = submit(&app, inv("deploy", &["staging", "abc1234"], "req-1"))
        .await
        .unwrap();
    let (
        Outcome::Accepted {
            job_id: j1,
            duplicate: d1,
            ..
        },
        Outcome::Accepted {
            job_id: j2,
            duplicate: d2,
            message,
        },
    ) = (a, b2)
    else {
        panic!("both should be accepted");
    };
    assert_eq!((j1, d1, d2), (j2, false, true));
    assert!(message.contains(&format!("job {j1}")), "{message}");
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);
}

both!(
    one_environment_at_a_time_environments_in_parallel,
    concurrency
);
async fn concurrency(b: Backend) {
    let Some(w) = Workspace::new(b, NO_HEALTH, &[("slow.toml", &slow())]) else {
        return;
    };
    let app = w.app(&[]).await;
    let s1 = accept(&app, "slow", &["qa", "v1"], "r1").await;
    let s2 = match submit(&app, inv("slow", &["qa", "v2"], "r2"))
        .await
        .unwrap()
    {
        Outcome::Accepted {
            job_id, message, ..
        } => {
            assert!(
                message.contains(&format!("queued behind job {s1}")),
                "{message}"
            );
            job_id
        }
        o => panic!("{o:?}"),
    };
    let p1 = accept(&app, "slow", &["dev", "v1"], "r3").await;
    let stop = start_workers(&app);
    let (j1, j2, j3) = (
        wait_final(&app, s1, 30).await,
        wait_final(&app, s2, 30).await,
        wait_final(&app, p1, 30).await,
    );
    stop.cancel();
    for j in [&j1, &j2, &j3] {
        assert_eq!(j.state, state::SUCCEEDED, "{j:?}");
    }
    let span = |j: &deckhand::store::jobs::JobRow| (j.started_at.unwrap(), j.finished_at.unwrap());
    let (a, b2, c) = (span(&j1), span(&j2), span(&j3));
    assert!(b2.0 >= a.1, "two jobs on qa overlapped: {a:?} {b2:?}");
    assert!(
        c.0 < a.1 && a.0 < c.1,
        "qa and dev did not run in parallel: {a:?} {c:?}"
    );
    // Starts and ends are read from the database's clock: it agrees with ours.
    let db_now: i64 = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {}", app.db.now_sql())))
            .fetch_one(p)
            .await
            .unwrap()
    });
    let ours = deckhand::domain::time::now_ms();
    assert!(
        (db_now - ours).abs() < 1_000,
        "database {db_now}, ours {ours}"
    );
}

both!(a_died_process_leaves_an_interrupted_job, lease_expiry);
async fn lease_expiry(b: Backend) {
    let idem = slow().replace("name = \"slow\"", "name = \"slow-idem\"\nidempotent = true");
    let Some(w) = Workspace::new(
        b,
        NO_HEALTH,
        &[("slow.toml", &slow()), ("slow-idem.toml", &idem)],
    ) else {
        return;
    };
    let app = w.app(&[]).await;
    let plain = accept(&app, "slow", &["qa", "v1"], "r1").await;
    let idem_id = accept(&app, "slow-idem", &["dev", "v1"], "r2").await;
    // A "process" claims both and dies: nobody heartbeats.
    let dead = "otherhost:1:dead";
    assert!(app.db.claim(dead, 300).await.unwrap().is_some());
    assert!(app.db.claim(dead, 300).await.unwrap().is_some());
    assert!(
        app.db.claim(dead, 300).await.unwrap().is_none(),
        "nothing else is queued"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // let the short leases run out
    let stop = start_workers(&app);
    let j = wait_final(&app, plain, 20).await;
    assert_eq!(j.state, state::INTERRUPTED);
    assert_eq!(j.attempts, 1, "a non-idempotent job is never re-run");
    let again = wait_final(&app, idem_id, 20).await;
    assert_eq!(
        again.state,
        state::SUCCEEDED,
        "an idempotent job runs again"
    );
    assert_eq!(again.attempts, 2);
    // The interruption was reported, and the notice delivered.
    let rows = eventually(10, "the interrupted notice to be delivered", || async {
        let rows = app.db.job_notices(plain, "terminal", 0).await.unwrap();
        rows.iter()
            .all(|r| r.delivered_at.is_some())
            .then_some(rows)
    })
    .await;
    let last = rows.last().unwrap().notice().unwrap();
    assert!(
        last.title.contains("was interrupted") && last.title.contains("will not be re-run"),
        "{}",
        last.title
    );
    stop.cancel();
}

both!(notices_keep_their_order_per_job, outbox_order);
async fn outbox_order(b: Backend) {
    let Some(w) = Workspace::new(b, NO_HEALTH, &[("slow.toml", &slow())]) else {
        return;
    };
    let app = w.app(&[]).await;
    let id = accept(&app, "slow", &["qa", "v1"], "r1").await;
    let stop = start_workers(&app);
    wait_final(&app, id, 30).await;
    let rows = eventually(10, "all notices delivered", || async {
        let rows = app.db.job_notices(id, "terminal", 0).await.unwrap();
        rows.iter()
            .all(|r| r.delivered_at.is_some())
            .then_some(rows)
    })
    .await;
    stop.cancel();
    let kinds: Vec<String> = rows
        .iter()
        .map(|r| format!("{:?}", r.notice().unwrap().kind))
        .collect();
    assert_eq!(
        kinds,
        [
            "JobQueued",
            "DeploymentStarted",
            "StepStarted",
            "DeploymentComplete"
        ]
    );
    let delivered: Vec<i64> = rows.iter().map(|r| r.delivered_at.unwrap()).collect();
    assert!(
        delivered.windows(2).all(|w| w[0] <= w[1]),
        "delivered out of order: {delivered:?}"
    );
}

both!(a_configured_secret_never_reaches_the_log, redaction);
async fn redaction(b: Backend) {
    let leak = r#"
name = "leak"
description = "Print a secret"
kind = "custom"
role = "everyone"
[[steps]]
name = "print"
argv = ["sh", "-c", "echo token=$API_TOKEN; echo $API_TOKEN >&2; echo b64=$(printf %s $API_TOKEN | base64)"]
pass_env = ["API_TOKEN"]
"#;
    let Some(w) = Workspace::new(b, "", &[("leak.toml", leak)]) else {
        return;
    };
    let secret = "sk_live_51HxTestSecretValue";
    // With the variable declared secret, it is redacted everywhere.
    let text = std::fs::read_to_string(w.config_path()).unwrap().replace(
        "default_timeout_seconds = 60",
        "default_timeout_seconds = 60\nsecret_env = [\"API_TOKEN\"]",
    );
    std::fs::write(w.config_path(), text).unwrap();
    let o = w
        .cmd(&["run", "leak"])
        .env("API_TOKEN", secret)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("token=[redacted]"), "{out}");
    assert!(
        !out.contains(secret),
        "the secret reached the terminal:\n{out}"
    );
    let app = w.app(&[("API_TOKEN", secret)]).await;
    let jobs = app.db.recent_jobs(1).await.unwrap();
    let log = app.db.job_log(jobs[0].id, 0).await.unwrap();
    assert!(log.iter().any(|l| l.line == "token=[redacted]"), "{log:?}");
    // Its base64 form too.
    assert!(log.iter().any(|l| l.line == "b64=[redacted]"), "{log:?}");
    assert!(log.iter().all(|l| !l.line.contains(secret)));
    let logs = w.cmd(&["logs", &jobs[0].id.to_string()]).output().unwrap();
    assert!(!String::from_utf8_lossy(&logs.stdout).contains(secret));
}

both!(a_step_past_its_timeout_is_killed_with_its_children, timeout);
async fn timeout(b: Backend) {
    let hang = r#"
name = "hang"
description = "Never ends"
kind = "custom"
role = "everyone"
[[steps]]
name = "hang"
argv = ["sh", "-c", "sh -c 'trap \"\" TERM; sleep 300' & echo child=$!; echo leader=$$; sleep 300"]
timeout_seconds = 1
"#;
    let Some(w) = Workspace::new(b, "", &[("hang.toml", hang)]) else {
        return;
    };
    let app = w.app(&[]).await;
    let id = accept(&app, "hang", &[], "r1").await;
    let stop = start_workers(&app);
    let j = wait_final(&app, id, 30).await;
    stop.cancel();
    assert_eq!(j.state, state::FAILED);
    assert!(
        j.result
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 1 s"),
        "{:?}",
        j.result
    );
    let log = app.db.job_log(id, 0).await.unwrap();
    for key in ["child=", "leader="] {
        let pid: i32 = log
            .iter()
            .find_map(|l| l.line.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap();
        assert!(process_dead(pid), "{key}{pid} survived the timeout");
    }
}

both!(a_busy_channel_does_not_hold_up_another, channel_pacing);
/// A Slack notice for `channel`, alone in its thread `thread` (also its title).
fn slack_notice(channel: &str, thread: &str) -> deckhand::store::Write {
    use deckhand::domain::notice::{Notice, NoticeKind, Tone};
    deckhand::store::Write::Notice(deckhand::store::NewNotice::new(
        None,
        "slack",
        Some(channel.into()),
        thread,
        &Notice::new(NoticeKind::EnvironmentReady, Tone::Info, thread),
    ))
}

async fn channel_pacing(b: Backend) {
    use deckhand::store::Write;
    let Some(w) = Workspace::new(b, NO_HEALTH, &[]) else {
        return;
    };
    let fake = crate::common::fake::FakeApi::start();
    let api = fake.url("/api");
    let app = w
        .app(&[("SLACK_BOT_TOKEN", "xoxb-pacing"), ("SLACK_API_URL", &api)])
        .await;
    // Four messages for a busy channel (separate threads, so all are ready at once), then
    // one for a quiet channel.
    let mut writes: Vec<Write> = (1..=4)
        .map(|i| slack_notice("CBUSY", &format!("busy-{i}")))
        .collect();
    writes.push(slack_notice("CQUIET", "quiet"));
    app.db.apply(&writes).await.unwrap();

    let stop = CancelToken::new();
    let sender = tokio::spawn(deckhand::outbox::run_sender(
        app.clone(),
        deckhand::server::deliverers(&app, false),
        stop.clone(),
    ));
    let posts = eventually(30, "every message posted", || async {
        let posts = fake.ok_calls("/api/chat.postMessage");
        (posts.len() == 5).then_some(posts)
    })
    .await;
    stop.cancel();
    let _ = sender.await;
    let channels: Vec<&str> = posts
        .iter()
        .map(|c| c.body["channel"].as_str().unwrap())
        .collect();
    // The quiet channel's message went out second, not behind the busy channel's backlog.
    assert_eq!(
        channels,
        ["CBUSY", "CQUIET", "CBUSY", "CBUSY", "CBUSY"],
        "{channels:?}"
    );
    // The busy channel still got at most one message a second, in order.
    let busy: Vec<_> = posts
        .iter()
        .filter(|c| c.body["channel"] == "CBUSY")
        .collect();
    for pair in busy.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= std::time::Duration::from_millis(950), "{gap:?}");
    }
    let texts: Vec<&str> = busy
        .iter()
        .map(|c| c.body["text"].as_str().unwrap())
        .collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(t.contains(&format!("busy-{}", i + 1)), "{texts:?}");
    }
    // Handing a message back for later is not a send: none of them was looked up as a
    // possible earlier post.
    assert!(fake.ok_calls("/api/conversations.history").is_empty());
}

both!(a_lapsed_notice_claim_is_not_used_twice, claim_renewal);
async fn claim_renewal(b: Backend) {
    let Some(w) = Workspace::new(b, NO_HEALTH, &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let id = app.db.apply(&[slack_notice("CX", "t")]).await.unwrap()[0];
    let first = app
        .db
        .claim_notices(&["slack"], "sender-a", 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let until = first[0].claim_until.unwrap();
    let ahead = until - deckhand::domain::time::now_ms();
    assert!(
        ahead > 15_000 && ahead <= deckhand::outbox::CLAIM_MS,
        "a claim lasts CLAIM_MS: {ahead} ms"
    );
    // Held: nobody else gets it, and its holder can renew it.
    assert!(
        app.db
            .claim_notices(&["slack"], "sender-b", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(app.db.renew_claim(id, "sender-a").await.unwrap());
    // Sender A stalls past its claim; sender B takes the notice. A must not send it too.
    deckhand::on_db!(&app.db, p => {
        sqlx::query("UPDATE outbox SET claim_until = 1 WHERE id = $1")
            .bind(id)
            .execute(p)
            .await
            .unwrap();
    });
    let second = app
        .db
        .claim_notices(&["slack"], "sender-b", 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert!(!app.db.renew_claim(id, "sender-a").await.unwrap());
    assert!(app.db.renew_claim(id, "sender-b").await.unwrap());
    // Once delivered, nobody holds it.
    app.db.mark_delivered(id).await.unwrap();
    assert!(!app.db.renew_claim(id, "sender-b").await.unwrap());
}
