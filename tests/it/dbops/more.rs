//! Database operations, continued: the sweep after `kill -9`, `/backup` and its schedule,
//! and the demo's databases.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Envs, USERS, field, sql, tables};
use crate::common::{Backend, Server, TestDb, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_database_left_by_kill_9_mid_migration_is_dropped_at_the_next_start() {
    let Some(e) = Envs::new() else { return };
    e.add_migration("0001_users.sql", USERS);
    e.add_migration("0002_slow.sql", "SELECT pg_sleep(30);");
    let mut child =
        e.ws.cmd(&["run", "migrate", "staging"])
            .envs(e.env())
            .spawn()
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let s = e.scratch_left().await;
        if s.iter().any(|n| n.contains("_fresh_")) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the fresh-database test never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !e.scratch_left().await.is_empty(),
        "killed mid-migration: {left:?} is left"
    );
    let env = e.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(&e.ws, &pairs);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !e.scratch_left().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restarted server did not drop {:?}:\n{}",
            e.scratch_left().await,
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !server.output().contains(&e.password),
        "{}",
        server.output()
    );
    assert!(
        tables(&e.staging).await.is_empty(),
        "staging was never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_tested_kept_to_keep_scheduled_once_per_firing_and_shown_in_the_digest() {
    let extra = r#"
[[digests]]
name = "weekly"
cron = "0 9 * * MON"
include = ["deployments"]
"#;
    let Some(e) = Envs::with(extra) else { return };
    // keep = 2 and a schedule for staging, set through the usual override variables.
    let cfg = e.ws.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "url_env = \"STAGING_DATABASE_URL\"",
        "url_env = \"STAGING_DATABASE_URL\"\nbackup_cron = \"*/5 * * * *\"\ntimezone = \"Europe/Amsterdam\"\nkeep = 2",
    );
    std::fs::write(&cfg, text).unwrap();
    sql(
        &e.staging,
        "CREATE TABLE notes (id INT); INSERT INTO notes VALUES (1), (2);",
    )
    .await;
    let (_, digest) = {
        let out =
            e.ws.cmd(&["digest", "weekly", "--now"])
                .envs(e.env())
                .output()
                .unwrap();
        (0, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(
        digest.contains("Last verified backup: none yet"),
        "{digest}"
    );
    let mut files = Vec::new();
    for _ in 0..3 {
        let (code, out) = e.run(&["backup", "staging"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("Backed up staging database, restore tested"),
            "{out}"
        );
        let b = field(&out, "Backup");
        assert!(b.contains("restore tested (1 tables, 2 rows match)"), "{b}");
        files.push(b.split(", ").next().unwrap().to_owned());
    }
    let kept: Vec<bool> = files.iter().map(|f| Path::new(f).exists()).collect();
    assert_eq!(kept, [false, true, true], "keep = 2 deletes the oldest");
    let out =
        e.ws.cmd(&["digest", "weekly", "--now"])
            .envs(e.env())
            .output()
            .unwrap();
    let digest = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        digest.contains("Last verified backup 20") && digest.contains(" ago"),
        "{digest}"
    );
    assert!(!digest.contains(&e.password), "{digest}");

    // One job per firing, however often the schedule is looked at.
    let app = e.app().await;
    let t0 = chrono::Utc::now();
    assert!(
        deckhand::jobs::dbops::schedule::tick(&app, t0)
            .await
            .unwrap()
            .is_empty()
    );
    let later = t0 + chrono::Duration::minutes(11);
    assert_eq!(
        deckhand::jobs::dbops::schedule::tick(&app, later)
            .await
            .unwrap(),
        ["staging"]
    );
    assert!(
        deckhand::jobs::dbops::schedule::tick(&app, later)
            .await
            .unwrap()
            .is_empty()
    );
    drop(app);

    // A backup that cannot be taken is an infrastructure issue.
    let mut env = e.env();
    env[0].1 = env[0].1.replace(
        &e.staging.url.rsplit('/').next().unwrap().to_owned(),
        "no_such_database",
    );
    let out =
        e.ws.cmd(&["run", "backup", "staging"])
            .envs(env)
            .output()
            .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("Infrastructure issue: backup of staging database failed"),
        "{text}"
    );
    assert!(!text.contains(&e.password), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gets_real_postgresql_databases_when_asked_and_keeps_sqlite_otherwise() {
    let Some(admin) = crate::common::pg_admin_url() else {
        assert!(TestDb::new(Backend::Postgres).is_none());
        return;
    };
    let drop_demo = || {
        for env in ["staging", "production"] {
            crate::common::pg_exec(
                &admin,
                &format!("DROP DATABASE IF EXISTS deckhand_demo_{env} WITH (FORCE)"),
            );
        }
    };
    drop_demo();
    // The bundled commands, no [environments.*.database]: the demo's SQLite path.
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let (code, out, _) = ws.run(&["migrate", "staging"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Migration on staging: applied 0001_create_users, 0002_create_orders"),
        "{out}"
    );
    // With DECKHAND_DEMO_POSTGRES_URL: the whole procedure on a real database.
    let mut u = url::Url::parse(&admin).unwrap();
    u.set_password(Some("demo-secret-pw")).unwrap();
    let out = ws
        .cmd(&["run", "migrate", "production"])
        .env("DECKHAND_DEMO_POSTGRES_URL", u.as_str())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "production waits for staging: {text}"
    );
    assert!(
        text.contains("refused by staging-first rule: no migration has run on staging yet"),
        "{text}"
    );
    // The emergency override (the operator is an admin here) is announced and reported.
    let out = ws
        .cmd(&[
            "run",
            "migrate",
            "production",
            "--emergency",
            "first demo run",
        ])
        .env("DECKHAND_DEMO_POSTGRES_URL", u.as_str())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("EMERGENCY OVERRIDE"), "{text}");
    assert_eq!(
        field(&text, "Emergency override"),
        "first demo run",
        "{text}"
    );
    let out = ws
        .cmd(&["run", "migrate", "staging"])
        .env("DECKHAND_DEMO_POSTGRES_URL", u.as_str())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Migration applied to staging database, 2 tables added"),
        "{text}"
    );
    assert_eq!(field(&text, "Tables created"), "orders, users", "{text}");
    assert_eq!(field(&text, "Safe for production"), "Yes", "{text}");
    assert!(!text.contains("demo-secret-pw"), "{text}");
    let base = admin.rsplit_once('/').unwrap().0;
    let t = deckhand::store::envdb::schema(&format!("{base}/deckhand_demo_staging"))
        .await
        .unwrap();
    assert!(
        t.tables.contains_key("public.orders"),
        "{:?}",
        t.tables.keys()
    );
    drop_demo();
}
