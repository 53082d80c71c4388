//! Deployment safety through the shared intake: roles, staging first, emergency override,
//! approvals, locks, health verification with auto-rollback, rollback targets, migrate and
//! rotate-secret.

use std::sync::Arc;

use crate::common::*;
use deckhand::app::App;
use deckhand::intake::policy::Identity;
use deckhand::intake::{Invocation, Outcome, submit};
use deckhand::store::jobs::{JobRow, state};
use deckhand::support::runner::CancelToken;

fn who(id: &str) -> (Identity, String) {
    match id {
        "operator" => (Identity::Operator, "terminal:operator".into()),
        u => (Identity::Slack { user: u.into() }, format!("slack:{u}")),
    }
}

async fn say(app: &Arc<App>, user: &str, line: &str) -> Outcome {
    let (identity, actor) = who(user);
    // The same splitting Slack's text gets.
    let mut words = deckhand::domain::text::split_args(line).unwrap();
    let command = words.remove(0);
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    submit(
        app,
        Invocation {
            platform: "slack".into(),
            identity,
            actor,
            channel: Some("CTEST".into()),
            command,
            args: words,
            request_id: Some(hex::encode(b)),
            reply_to: None,
        },
    )
    .await
    .unwrap()
}

fn job_of(o: &Outcome) -> i64 {
    match o {
        Outcome::Accepted { job_id, .. } => *job_id,
        other => panic!("expected a job, got {other:?}"),
    }
}

fn refusal(o: Outcome) -> String {
    match o {
        Outcome::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn workers(app: &Arc<App>) -> CancelToken {
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

async fn done(app: &App, id: i64) -> JobRow {
    eventually(40, &format!("job {id} to end"), || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| state::is_final(&j.state))
    })
    .await
}

async fn run_ok(app: &Arc<App>, user: &str, line: &str) -> JobRow {
    let j = done(app, job_of(&say(app, user, line).await)).await;
    assert_eq!(j.state, state::SUCCEEDED, "{line}: {:?}", j.result);
    j
}

/// Every notice body of a job, on the Slack route.
async fn notices_of(app: &App, id: i64) -> Vec<String> {
    app.db
        .job_notices(id, "slack", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

const GATED: &str = r#"
[environments.gated]
approvals = 1
approval_timeout_seconds = 5
"#;

fn ws() -> Workspace {
    Workspace::new(
        Backend::Sqlite,
        GATED,
        &[("ship.toml", &gated_ship_command())],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_emergency_override() {
    let w = ws();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    // Anyone may deploy staging; production needs deployer.
    run_ok(&app, "UNOBODY", "deploy staging abc1234").await;
    let r = refusal(say(&app, "UNOBODY", "deploy production abc1234").await);
    assert!(
        r.contains("refused by role rule") && r.contains("needs the \"deployer\" role"),
        "{r}"
    );
    // A deployer without admin cannot skip staging.
    let r = refusal(
        say(
            &app,
            "UDEPLOYER",
            "deploy production zzz9999 --emergency \"INC-7 hotfix\"",
        )
        .await,
    );
    assert!(
        r.contains("refused by emergency rule") && r.contains("needs the \"admin\" role"),
        "{r}"
    );
    let r = refusal(say(&app, "UADMIN", "deploy production zzz9999 --emergency").await);
    assert!(r.contains("--emergency needs a reason"), "{r}");
    let r = refusal(say(&app, "UDEPLOYER", "deploy production zzz9999").await);
    assert!(r.contains("refused by staging-first rule: zzz9999 has not been verified on staging; staging runs abc1234"), "{r}");
    // An admin with a reason may, loudly and on the record.
    let j = run_ok(
        &app,
        "UADMIN",
        "deploy production zzz9999 --emergency \"INC-7 hotfix\"",
    )
    .await;
    let bodies = notices_of(&app, j.id).await.join("\n");
    assert!(
        bodies.contains("EMERGENCY OVERRIDE by slack:UADMIN") && bodies.contains("INC-7 hotfix"),
        "{bodies}"
    );
    let audit = app.db.audit(Some("production"), 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "emergency_override" && a.detail == "INC-7 hotfix")
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "command_refused" && a.detail.contains("staging-first"))
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_rule_and_expiry() {
    let w = ws();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    let id = job_of(&say(&app, "UDEPLOYER", "ship gated v1").await);
    assert_eq!(
        app.db.job(id).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    let r = refusal(say(&app, "UDEPLOYER", &format!("approve {id}")).await);
    assert!(r.contains("refused by two-person rule"), "{r}");
    let r = refusal(say(&app, "UNOBODY", &format!("approve {id}")).await);
    assert!(r.contains("needs the \"deployer\" role"), "{r}");
    assert!(matches!(
        say(&app, "UAPPROVER", &format!("approve {id}")).await,
        Outcome::Info(_)
    ));
    assert_eq!(done(&app, id).await.state, state::SUCCEEDED);

    // Nobody answers: the request expires and says so.
    let id = job_of(&say(&app, "UDEPLOYER", "ship gated v2").await);
    let j = done(&app, id).await;
    assert_eq!(j.state, state::EXPIRED);
    let bodies = notices_of(&app, id).await.join("\n");
    assert!(
        bodies.contains("expired: no approval arrived in time"),
        "{bodies}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_environment_refuses_with_who_and_why() {
    let w = ws();
    let app = w.app(&[]).await;
    let r = refusal(say(&app, "UNOBODY", "lock production db maintenance").await);
    assert!(r.contains("needs the \"deployer\" role"), "{r}");
    assert!(matches!(
        say(&app, "UDEPLOYER", "lock staging db maintenance until 14:00").await,
        Outcome::Info(_)
    ));
    for line in [
        "deploy staging abc1234",
        "rollback staging",
        "migrate staging",
    ] {
        let r = refusal(say(&app, "UADMIN", line).await);
        assert!(
            r.contains("refused by lock rule: staging is locked by slack:UDEPLOYER")
                && r.contains("db maintenance until 14:00"),
            "{line}: {r}"
        );
    }
    let Outcome::Info(status) = say(&app, "UNOBODY", "status staging").await else {
        panic!()
    };
    assert!(status.contains("LOCKED by slack:UDEPLOYER"), "{status}");
    assert!(matches!(
        say(&app, "UDEPLOYER", "unlock staging").await,
        Outcome::Info(_)
    ));
    assert!(matches!(
        say(&app, "UNOBODY", "deploy staging abc1234").await,
        Outcome::Accepted { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_health_check_rolls_production_back() {
    let w = ws();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    run_ok(&app, "UDEPLOYER", "deploy staging abc1234").await;
    run_ok(&app, "UDEPLOYER", "deploy production abc1234").await;
    // down-… versions of the demo app answer 500 on /health.
    let id = job_of(
        &say(
            &app,
            "UADMIN",
            "deploy production down-2 --emergency \"testing rollback\"",
        )
        .await,
    );
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    let title = j.result.unwrap();
    assert_eq!(
        title,
        "Deployment of down-2 to production failed health check; rolled back to abc1234, health check passing"
    );
    let (s, body) = http_get(&format!("http://127.0.0.1:{}/health", w.production_port)).unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("\"abc1234\""), "{body}");
    let current = app
        .db
        .current_deployment("production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (current.version.as_str(), current.verified),
        ("abc1234", true)
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_to_the_previous_verified_version() {
    let w = ws();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    run_ok(&app, "UNOBODY", "deploy staging v1").await;
    let bad = done(
        &app,
        job_of(&say(&app, "UNOBODY", "deploy staging down-1").await),
    )
    .await;
    assert_eq!(bad.state, state::FAILED);
    run_ok(&app, "UNOBODY", "deploy staging v2").await;
    let r = run_ok(&app, "UNOBODY", "rollback staging").await;
    assert_eq!(
        r.version.as_deref(),
        Some("v1"),
        "down-1 was the previous, v1 the previous verified"
    );
    let refused = refusal(say(&app, "UNOBODY", "rollback staging down-1").await);
    assert!(
        refused.contains("down-1 is not a verified version in staging's history; accepted: v1, v2"),
        "{refused}"
    );
    run_ok(&app, "UNOBODY", "rollback staging v2").await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_backs_up_first_then_reports_what_it_applied() {
    let w = ws();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    let j = run_ok(&app, "UNOBODY", "migrate staging").await;
    let title = j.result.unwrap();
    assert_eq!(
        title,
        "Migration on staging: applied 0001_create_users, 0002_create_orders"
    );
    let log = app.db.job_log(j.id, 0).await.unwrap();
    let backup_at = log
        .iter()
        .position(|l| l.line.starts_with("deckhand-report: backup="))
        .expect("a backup");
    let applied_at = log
        .iter()
        .position(|l| l.line.starts_with("applied 0001"))
        .unwrap();
    assert!(
        backup_at < applied_at,
        "the backup comes before the migration"
    );
    let path = log[backup_at]
        .line
        .trim_start_matches("deckhand-report: backup=");
    assert!(
        std::fs::metadata(path).unwrap().len() > 0,
        "backup file {path}"
    );
    let bodies = notices_of(&app, j.id).await.join("\n");
    assert!(
        bodies.contains(path),
        "the report names the backup: {bodies}"
    );
    let again = run_ok(&app, "UNOBODY", "migrate staging").await;
    assert_eq!(again.result.unwrap(), "Migration on staging: not needed");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_secret_reports_only_a_fingerprint() {
    let rotate = r#"
name = "rotate-test"
description = "Store a new secret, slowly"
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
argv = ["sh", "-c", "read v; printf %s \"$v\" > \"$DECKHAND_DATA_DIR/stored\"; echo stored; sleep 1"]
secret_stdin = true
"#;
    let w = Workspace::new(
        Backend::Sqlite,
        "[environments.vault]\n",
        &[("rotate-test.toml", rotate)],
    )
    .unwrap();
    let app = w.app(&[]).await;
    let stop = workers(&app);
    let id = job_of(&say(&app, "UNOBODY", "rotate-test vault STRIPE_KEY").await);
    let stored = w.data_dir().join("stored");
    let value = eventually(20, "the step to store the value", || async {
        std::fs::read_to_string(&stored)
            .ok()
            .filter(|v| v.len() == 32)
    })
    .await;
    // While the step still runs: no process carries it in argv or environment.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        for f in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(p.path().join(f)) {
                assert!(
                    !String::from_utf8_lossy(&b).contains(&value),
                    "{}/{f} holds the secret",
                    p.path().display()
                );
            }
        }
    }
    let j = done(&app, id).await;
    assert_eq!(j.state, state::SUCCEEDED, "{:?}", j.result);
    let fp = deckhand::jobs::fingerprint(&value);
    assert!(
        j.result
            .as_deref()
            .unwrap()
            .contains(&format!("Rotated STRIPE_KEY on vault (fingerprint {fp})")),
        "{:?}",
        j.result
    );
    // Nowhere in what Deckhand stored: the whole database file, and its WAL.
    app.db.close().await;
    let db = w.db.url.trim_start_matches("sqlite://").to_owned();
    for f in [db.clone(), format!("{db}-wal")] {
        if let Ok(bytes) = std::fs::read(&f) {
            assert!(
                !bytes.windows(value.len()).any(|x| x == value.as_bytes()),
                "{f} holds the secret"
            );
        }
    }
    let app = w.app(&[]).await;
    let all: Vec<String> = notices_of(&app, id).await;
    assert!(all.iter().any(|b| b.contains(&fp)));
    let audit = w.cmd(&["audit"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&audit.stdout).contains(&value));
    let logs = w.cmd(&["logs", &id.to_string()]).output().unwrap();
    assert!(!String::from_utf8_lossy(&logs.stdout).contains(&value));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_reminders_reach_the_channel_once_per_interval() {
    // Both reminder passes below must fall inside one interval, even on a loaded machine.
    let w = Workspace::new(Backend::Sqlite, "[locks]\nremind_after_seconds = 3\n", &[]).unwrap();
    let app = w.app(&[]).await;
    assert!(matches!(
        say(&app, "UDEPLOYER", "lock staging freeze").await,
        Outcome::Info(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    deckhand::jobs::remind_locks(&app).await.unwrap();
    deckhand::jobs::remind_locks(&app).await.unwrap();
    let reminders: i64 = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE channel = 'CTEST' AND body LIKE '%Reminder: staging has been locked by slack:UDEPLOYER%'")
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert_eq!(reminders, 1);
}

both!(
    simultaneous_approvals_by_one_person_count_once,
    simultaneous_approvals
);
async fn simultaneous_approvals(b: Backend) {
    let config =
        format!("{GATED}\n[environments.pair]\napprovals = 2\napproval_timeout_seconds = 600\n");
    let Some(w) = Workspace::new(b, &config, &[("ship.toml", &gated_ship_command())]) else {
        return;
    };
    let app = w.app(&[]).await;
    // One approval needed (the click queues the job) and two (the job keeps waiting).
    for (env, queued) in [("gated", true), ("pair", false)] {
        let id = job_of(&say(&app, "UDEPLOYER", &format!("ship {env} v1")).await);
        let clicks = (0..5).map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let (identity, actor) = who("UAPPROVER");
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                submit(
                    &app,
                    Invocation {
                        platform: "slack".into(),
                        identity,
                        actor,
                        channel: Some("CTEST".into()),
                        command: "approve".into(),
                        args: vec![id.to_string()],
                        request_id: Some(hex::encode(b)),
                        reply_to: None,
                    },
                )
                .await
            })
        });
        let mut approved = 0;
        for c in clicks.collect::<Vec<_>>() {
            match c.await.unwrap() {
                Ok(Outcome::Info(i)) if i.contains("approved by slack:UAPPROVER") => approved += 1,
                Ok(Outcome::Refused(r)) => {
                    assert_eq!(r, format!("you have already approved job {id}"), "{env}")
                }
                other => panic!("{env}: {other:?}"),
            }
        }
        assert_eq!(approved, 1, "{env}");
        assert_eq!(
            app.db.approvals(id).await.unwrap(),
            vec!["slack:UAPPROVER".to_string()],
            "{env}"
        );
        let want = if queued {
            state::QUEUED
        } else {
            state::AWAITING_APPROVAL
        };
        assert_eq!(app.db.job(id).await.unwrap().unwrap().state, want, "{env}");
        let audit = app.db.audit(Some(env), 100).await.unwrap();
        assert_eq!(
            audit.iter().filter(|a| a.action == "job_approved").count(),
            1,
            "{env}: {audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_or_an_admin_unlocks_someone_elses_lock() {
    let w = ws();
    let app = w.app(&[]).await;
    assert!(matches!(
        say(&app, "UDEPLOYER", "lock staging db maintenance").await,
        Outcome::Info(_)
    ));
    // Anyone may change staging, but not release another person's lock.
    let r = refusal(say(&app, "UNOBODY", "unlock staging").await);
    assert!(
        r.contains("staging is locked by slack:UDEPLOYER")
            && r.contains("only they or someone with the \"admin\" role"),
        "{r}"
    );
    assert!(app.db.lock_of("staging").await.unwrap().is_some());
    let audit = app.db.audit(Some("staging"), 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "unlock_refused" && a.actor == "slack:UNOBODY"),
        "{audit:?}"
    );
    // An admin may.
    assert!(matches!(
        say(&app, "UADMIN", "unlock staging").await,
        Outcome::Info(_)
    ));
    assert!(app.db.lock_of("staging").await.unwrap().is_none());

    // With `unlock_others = "everyone"`, whoever may change the environment may.
    let w = Workspace::new(
        Backend::Sqlite,
        "[locks]\nunlock_others = \"everyone\"\n",
        &[],
    )
    .unwrap();
    let app = w.app(&[]).await;
    assert!(matches!(
        say(&app, "UDEPLOYER", "lock staging db maintenance").await,
        Outcome::Info(_)
    ));
    assert!(matches!(
        say(&app, "UNOBODY", "unlock staging").await,
        Outcome::Info(_)
    ));
}
