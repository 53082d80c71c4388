//! Database operations on a real PostgreSQL: `/migrate` with its fixed procedure (tested
//! backup, fresh-database test, apply, drift, report), staging first for migrations, the
//! scratch databases it always drops, and the database URL kept out of everything.
//! Deckhand's own database is SQLite here, so its whole file can be searched for the URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Backend, TestDb, Workspace};

mod more;

/// The team's migration tool of these tests: `deckhand demo sql-migrate` over a folder.
fn migrate_command(dir: &Path) -> String {
    format!(
        r#"
name = "migrate"
description = "Apply pending migrations with the team's tool"
usage = "migrate ENVIRONMENT"
kind = "migrate"
idempotent = false
[[args]]
name = "environment"
kind = "environment"
[roles]
staging = "everyone"
production = "deployer"
[[steps]]
name = "migrate"
argv = ["deckhand", "demo", "sql-migrate"]
env = {{ MIGRATIONS_DIR = "{}" }}
timeout_seconds = 60
"#,
        dir.display()
    )
}

const DATABASES: &str = r#"
[environments.staging.database]
url_env = "STAGING_DATABASE_URL"

[environments.production.database]
url_env = "PRODUCTION_DATABASE_URL"
"#;

/// Two environment databases of their own, reached with a password in their URLs (the
/// server trusts loopback, so any password works; it only has to stay secret).
struct Envs {
    ws: Workspace,
    staging: TestDb,
    production: TestDb,
    password: String,
    migrations: PathBuf,
    /// This Deckhand's part of scratch database names.
    inst: String,
}

impl Envs {
    fn new() -> Option<Envs> {
        Self::with("")
    }

    /// With `extra` appended to the config.
    fn with(extra: &str) -> Option<Envs> {
        let staging = TestDb::new(Backend::Postgres)?;
        let production = TestDb::new(Backend::Postgres)?;
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let password = format!("pw-{}", hex::encode(b));
        let tmp = tempfile::tempdir().unwrap();
        let migrations = tmp.keep().join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        let ws = Workspace::new(
            Backend::Sqlite,
            &format!("{DATABASES}{extra}"),
            &[("migrate.toml", &migrate_command(&migrations))],
        )
        .unwrap();
        let mut e = Envs {
            ws,
            staging,
            production,
            password,
            migrations,
            inst: String::new(),
        };
        // Creates Deckhand's own database before any `deckhand run` shares it.
        let app =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(e.app()));
        e.inst = deckhand::jobs::dbops::installation(&app);
        Some(e)
    }

    /// `url` with the password put in.
    fn secret_url(&self, db: &TestDb) -> String {
        let mut u = url::Url::parse(&db.url).unwrap();
        u.set_password(Some(&self.password)).unwrap();
        u.to_string()
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "STAGING_DATABASE_URL".into(),
                self.secret_url(&self.staging),
            ),
            (
                "PRODUCTION_DATABASE_URL".into(),
                self.secret_url(&self.production),
            ),
        ]
    }

    fn add_migration(&self, name: &str, sql: &str) {
        std::fs::write(self.migrations.join(name), sql).unwrap();
    }

    /// `deckhand run ARGS…` with the database URLs set: (exit code, stdout + stderr).
    fn run(&self, args: &[&str]) -> (i32, String) {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        let out = self.ws.cmd(&a).envs(self.env()).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    async fn app(&self) -> Arc<deckhand::app::App> {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.ws.app(&pairs).await
    }

    /// Scratch databases of this Deckhand still on the server.
    async fn scratch_left(&self) -> Vec<String> {
        deckhand::store::envdb::list_scratch(&self.staging.url)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.contains(&format!("scratch_{}", self.inst)))
            .collect()
    }
}

/// SQL on one environment database.
async fn sql(db: &TestDb, q: &str) {
    let mut c = deckhand::store::envdb::connect(&db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(q.to_owned()))
        .execute(&mut c)
        .await
        .unwrap();
}

async fn tables(db: &TestDb) -> Vec<String> {
    deckhand::store::envdb::schema(&db.url)
        .await
        .unwrap()
        .tables
        .into_keys()
        .collect()
}

/// The value of the report field `label` in `deckhand run`'s output.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    let at = out
        .rfind(&format!("{label}:"))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"));
    out[at + label.len() + 1..].lines().next().unwrap().trim()
}

/// Watches every process's command line while it lives: (lines seen, any with `needle`).
struct CmdlineWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl CmdlineWatch {
    fn start() -> CmdlineWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !s.load(Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline"))
                        && !c.is_empty()
                    {
                        seen.insert(String::from_utf8_lossy(&c).replace('\0', " "));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen.into_iter().collect()
        });
        CmdlineWatch { stop, handle }
    }
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

const USERS: &str = "CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n\
    INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com');\n";
const ORDERS: &str = "CREATE TABLE orders (id SERIAL PRIMARY KEY, user_id INT NOT NULL REFERENCES users(id), total NUMERIC(10,2));\n\
    CREATE INDEX orders_user ON orders (user_id);\n\
    INSERT INTO orders (user_id, total) VALUES (1, 9.50);\n\
    SELECT pg_sleep(0.3);\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_tests_the_backup_and_a_fresh_database_then_reports_drift_and_keeps_production_behind()
 {
    let Some(e) = Envs::new() else { return };
    e.add_migration("0001_users.sql", USERS);
    e.add_migration("0002_orders.sql", ORDERS);
    let mut outputs = Vec::new();

    // 1. Two migration files on an empty staging database.
    let watch = CmdlineWatch::start();
    let (code, out) = e.run(&["migrate", "staging"]);
    let cmdlines = watch.finish();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Migration applied to staging database, 2 tables added"),
        "{out}"
    );
    assert_eq!(field(&out, "Fresh database test"), "PASSED", "{out}");
    assert_eq!(field(&out, "Tables created"), "orders, users", "{out}");
    assert_eq!(field(&out, "Schema drift"), "None", "{out}");
    assert_eq!(field(&out, "Safe for production"), "Yes", "{out}");
    let backup = field(&out, "Backup").to_owned();
    assert!(
        backup.contains("restore tested (0 tables, 0 rows match)"),
        "{backup}"
    );
    let path = backup.split(", ").next().unwrap();
    assert!(
        path.contains("/data/backups/staging-") && path.ends_with(".dump"),
        "{path}"
    );
    let list = std::process::Command::new("pg_restore")
        .args(["--list", path])
        .output()
        .unwrap();
    assert!(list.status.success(), "pg_restore --list reads {path}");
    assert_eq!(
        tables(&e.staging).await.len(),
        3,
        "users, orders, schema_migrations"
    );
    // The steps ran, and no process had the URL or its password on its command line.
    for seen in [
        "demo sql-migrate",
        "pg_dump --format=custom",
        "pg_restore --no-owner",
    ] {
        assert!(
            cmdlines.iter().any(|c| c.contains(seen)),
            "{seen} was seen running ({} command lines)",
            cmdlines.len()
        );
    }
    for c in &cmdlines {
        assert!(
            !c.contains(&e.password),
            "a command line holds the password: {c}"
        );
    }
    assert!(
        e.scratch_left().await.is_empty(),
        "no scratch database after success"
    );
    outputs.push(out);

    // 2. The same set on production: accepted, staging ran it cleanly.
    let (code, out) = e.run(&["migrate", "production"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Migration applied to production database, 2 tables added"),
        "{out}"
    );
    outputs.push(out);

    // 3. A column added by hand on staging, then a third migration.
    sql(&e.staging, "ALTER TABLE users ADD COLUMN nickname TEXT").await;
    e.add_migration(
        "0003_items.sql",
        "CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT);",
    );
    let (code, out) = e.run(&["migrate", "staging"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Migration applied to staging database, 1 table added"),
        "{out}"
    );
    let drift = field(&out, "Schema drift");
    assert!(
        drift.starts_with("Found")
            && drift.contains("column users.nickname (text) only in staging"),
        "{drift}"
    );
    assert!(
        field(&out, "Safe for production").starts_with("No – schema drift"),
        "{out}"
    );
    assert!(
        field(&out, "Backup").contains("restore tested (3 tables, 5 rows match)"),
        "{out}"
    );
    // Taken before 0003: users (with the hand-made column) and orders, no items.
    let before_items = field(&out, "Backup").split(", ").next().unwrap().to_owned();
    outputs.push(out);
    let (code, out) = e.run(&["migrate", "production"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("refused by staging-first rule") && out.contains("users.nickname"),
        "production names the drift: {out}"
    );
    assert!(
        !tables(&e.production)
            .await
            .iter()
            .any(|t| t == "public.items")
    );
    outputs.push(out);

    // 4. A migration that fails on the fresh database never reaches staging.
    sql(&e.staging, "ALTER TABLE users DROP COLUMN nickname").await;
    e.add_migration(
        "0004_broken.sql",
        "ALTER TABLE no_such_table ADD COLUMN x INT;",
    );
    let before = deckhand::store::envdb::schema(&e.staging.url)
        .await
        .unwrap();
    let (code, out) = e.run(&["migrate", "staging"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        field(&out, "Fresh database test").starts_with("FAILED"),
        "{out}"
    );
    assert!(
        out.contains("relation \"no_such_table\" does not exist"),
        "the tool's error lines: {out}"
    );
    assert!(out.contains("staging's database was not touched"), "{out}");
    assert_eq!(
        deckhand::store::envdb::schema(&e.staging.url)
            .await
            .unwrap(),
        before
    );
    assert!(
        e.scratch_left().await.is_empty(),
        "no scratch database after a failure"
    );
    outputs.push(out);
    std::fs::remove_file(e.migrations.join("0004_broken.sql")).unwrap();

    // 5. Restore: the list, then the backup from before 0003, with a fresh backup first.
    let name = Path::new(&before_items)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (code, out) = e.run(&["restore", "staging"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Tested backups of staging") && out.contains(&name),
        "{out}"
    );
    let (code, out) = e.run(&["restore", "staging", "staging-20000101T000000Z.dump"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("is not a tested backup of staging; accepted:"),
        "{out}"
    );
    sql(
        &e.staging,
        "INSERT INTO users (email) VALUES ('c@example.com')",
    )
    .await;
    let (code, out) = e.run(&["restore", "staging", &name]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("Restored staging database from {name} (taken ")),
        "{out}"
    );
    let fresh = field(&out, "Fresh backup first");
    assert!(
        fresh.contains("restore tested (4 tables, 7 rows match)"),
        "{fresh}"
    );
    let fresh_path = fresh.split(", ").next().unwrap();
    assert!(
        Path::new(fresh_path).exists() && fresh_path != before_items,
        "{fresh_path}"
    );
    assert_eq!(
        tables(&e.staging).await,
        ["public.orders", "public.schema_migrations", "public.users"],
        "items is gone"
    );
    let s = deckhand::store::envdb::schema(&e.staging.url)
        .await
        .unwrap();
    assert!(
        s.tables["public.users"].contains_key("nickname"),
        "the earlier schema is back"
    );
    let rows = deckhand::store::envdb::row_counts(&e.staging.url, &["public.users".into()])
        .await
        .unwrap();
    assert_eq!(rows["public.users"], 2, "the earlier rows are back");
    assert!(
        e.scratch_left().await.is_empty(),
        "no scratch database after a restore"
    );
    outputs.push(out);

    // 6. On an environment with approvals, a restore waits for them as a deploy does.
    let mut env = e.env();
    env.push((
        "DECKHAND__ENVIRONMENTS__PRODUCTION__APPROVALS".into(),
        "1".into(),
    ));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = e.ws.app(&pairs).await;
    let backups = deckhand::jobs::dbops::restore::available(&app, "production")
        .await
        .unwrap();
    let (name, _) = backups
        .first()
        .expect("production's migration took a tested backup");
    let outcome = deckhand::intake::submit(
        &app,
        deckhand::intake::Invocation {
            platform: "terminal".into(),
            identity: deckhand::intake::policy::Identity::Operator,
            actor: "terminal:operator".into(),
            channel: None,
            command: "restore".into(),
            args: vec!["production".into(), name.clone()],
            request_id: Some("restore-production-1".into()),
            reply_to: None,
        },
    )
    .await
    .unwrap();
    let deckhand::intake::Outcome::Accepted { job_id, .. } = outcome else {
        panic!("{outcome:?}");
    };
    let job = app.db.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, "awaiting_approval");
    drop(app);

    assert_secret_nowhere(&e, &outputs).await;
}

/// The password (and so the URL) is in no output, job log, notice, audit entry, nor
/// anywhere in Deckhand's own database file.
async fn assert_secret_nowhere(e: &Envs, outputs: &[String]) {
    for o in outputs {
        assert!(!o.contains(&e.password), "output holds the password:\n{o}");
    }
    let app = e.app().await;
    let mut seen_log = 0;
    for id in 1..=20 {
        for l in app.db.job_log(id, 0).await.unwrap() {
            seen_log += 1;
            assert!(!l.line.contains(&e.password), "job log: {}", l.line);
        }
        for n in app.db.job_notices(id, "terminal", 0).await.unwrap() {
            assert!(!n.body.contains(&e.password), "notice: {}", n.body);
        }
    }
    assert!(seen_log > 0, "the job logs were read");
    for a in app.db.audit(None, 1000).await.unwrap() {
        assert!(!format!("{a:?}").contains(&e.password), "audit: {a:?}");
    }
    drop(app);
    let db_file = e.ws.db.url.trim_start_matches("sqlite://").to_owned();
    for f in [db_file.clone(), format!("{db_file}-wal")] {
        if let Ok(bytes) = std::fs::read(&f) {
            assert!(
                !bytes
                    .windows(e.password.len())
                    .any(|w| w == e.password.as_bytes()),
                "{f} holds the password"
            );
        }
    }
}
