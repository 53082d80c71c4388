//! Shared test harness: throw-away databases on both backends, a config in a temporary
//! folder with free ports, and helpers to run the real binary and wait for it.

pub mod browser;
pub mod chat;
pub mod fake;
pub mod gateway;
pub mod github;
pub mod github_actions;
pub mod github_app;
pub mod prom;
pub mod prometheus;
pub mod socket;

/// Run one test body on each backend: `both!(name, body)` makes `name::sqlite` and
/// `name::postgres`, each calling `body(Backend::…)` from the invoking module (which must
/// have `Backend` in scope). `main.rs` declares this module with `#[macro_use]` first, so
/// every test module can use it.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::Backend::Postgres).await
            }
        }
    };
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deckhand::app::App;
use deckhand::config::Settings;

pub const BIN: &str = env!("CARGO_BIN_EXE_deckhand");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server URL tests create their databases on, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn pg_admin_url() -> Option<String> {
    std::env::var("DECKHAND_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A database of its own for one test; dropped afterwards.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// `None` (with a printed reason) when PostgreSQL is asked for but not configured.
    /// In CI a missing URL is a failure, so a green run always covered both backends.
    pub fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("deckhand.db").display());
                Some(TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let Some(admin) = pg_admin_url() else {
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!(
                            "CI=true but DECKHAND_TEST_POSTGRES_URL is not set: PostgreSQL tests must run in CI"
                        );
                    }
                    eprintln!(
                        "skipped: DECKHAND_TEST_POSTGRES_URL is not set, so this PostgreSQL test does not run"
                    );
                    return None;
                };
                let mut b = [0u8; 6];
                getrandom::fill(&mut b).unwrap();
                let name = format!("deckhand_t_{}", hex::encode(b));
                pg_exec(&admin, &format!("CREATE DATABASE {name}"));
                let base = admin
                    .rsplit_once('/')
                    .map(|x| x.0)
                    .unwrap_or(&admin)
                    .to_owned();
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(name), Some(admin)) = (&self.pg_name, pg_admin_url()) {
            pg_exec(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Run SQL as the PostgreSQL admin (create and drop test databases, fault injection).
pub fn pg_exec(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    // A thread with its own runtime: works from sync code, async tests and Drop alike.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .expect("PostgreSQL admin statement");
            })
    })
    .join()
    .unwrap();
}

/// A free port on 127.0.0.1 for a server a test starts later (bound and released).
///
/// Chosen below the kernel's ephemeral range (32768–60999 on Linux by default): a port the
/// kernel hands out for `bind(0)` is also one it hands to outgoing connections, and one of
/// the many connections a test run makes could take it before the server binds it.
pub fn free_port() -> u16 {
    loop {
        let port = 10_000 + (getrandom::u32().unwrap() % 22_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A deckhand folder: `deckhand.toml`, `commands/` (the bundled ones plus extras) and a
/// data folder, with both demo environments on free ports.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub staging_port: u16,
    pub production_port: u16,
}

impl Workspace {
    /// `extra_config` is appended to the generated `deckhand.toml`; `commands` are
    /// (file name, TOML) pairs added to `commands/`.
    pub fn new(
        backend: Backend,
        extra_config: &str,
        commands: &[(&str, &str)],
    ) -> Option<Workspace> {
        let db = TestDb::new(backend)?;
        let dir = tempfile::tempdir().unwrap();
        let (sp, pp) = (free_port(), free_port());
        let cmd_dir = dir.path().join("commands");
        std::fs::create_dir_all(&cmd_dir).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in std::fs::read_dir(repo.join("commands")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, cmd_dir.join(f.file_name().unwrap())).unwrap();
        }
        for (name, text) in commands {
            std::fs::write(cmd_dir.join(name), text).unwrap();
        }
        let config = format!(
            r#"commands_dir = "commands"
data_dir = "data"

[queue]
lease_seconds = 3
workers = 4
poll_ms = 100

[runner]
kill_grace_seconds = 1
default_timeout_seconds = 60

[server]
shutdown_grace_seconds = 10

[environments.staging]
health_url = "http://127.0.0.1:{sp}/health"
expect_version = "json:version"
health_timeout_seconds = 10

[environments.production]
health_url = "http://127.0.0.1:{pp}/health"
expect_version = "json:version"
health_timeout_seconds = 5
promote_from = "staging"
auto_rollback = true

[roles.deployer]
operator = true
slack_users = ["UDEPLOYER", "UAPPROVER"]
discord_users = ["1001", "1002"]

[roles.admin]
operator = true
slack_users = ["UADMIN"]
discord_users = ["1009"]
{extra_config}"#
        );
        std::fs::write(dir.path().join("deckhand.toml"), config).unwrap();
        Some(Workspace {
            dir,
            db,
            staging_port: sp,
            production_port: pp,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("deckhand.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Settings as `deckhand` would load them, with these extra environment variables.
    pub fn settings(&self, env: &[(&str, &str)]) -> Settings {
        let mut vars: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("DATABASE_URL".into(), self.db.url.clone());
        let mut s = Settings::load(Some(&self.config_path()), Some("127.0.0.1:0"), &vars).unwrap();
        s.deckhand_exe = BIN.into();
        s
    }

    pub async fn app(&self, env: &[(&str, &str)]) -> Arc<App> {
        App::build(self.settings(env)).await.unwrap()
    }

    /// The binary, with this workspace's config and database and a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--config", self.config_path().to_str().unwrap()])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DATABASE_URL", &self.db.url)
            .env("LOG_FORMAT", "json")
            .current_dir(self.dir.path());
        c
    }

    /// `deckhand run …`: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        let out = self.cmd(&a).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Stop demo apps this workspace started (they also exit once their pid file goes).
        for env in ["staging", "production"] {
            let pid = self.data_dir().join("demo").join(format!("{env}.pid"));
            deckhand::cli::demo::stop_app(&pid);
        }
    }
}

/// A running `deckhand serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    pub fn start(ws: &Workspace, env: &[(&str, &str)]) -> Server {
        Self::start_on(ws, env, "127.0.0.1")
    }

    /// [`Server::start`] listening on `host` (e.g. `0.0.0.0`, a listener that is not
    /// loopback); tests still reach it on 127.0.0.1.
    pub fn start_on(ws: &Workspace, env: &[(&str, &str)], host: &str) -> Server {
        let port = free_port();
        let log = ws.dir.path().join(format!("serve-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut c = ws.cmd(&["serve", "--listen", &format!("{host}:{port}")]);
        c.envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        let child = c.spawn().unwrap();
        let s = Server { child, port, log };
        s.wait_ready();
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Poll `/ready` until it answers 200 (or fail after 30 s with the server's output).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http_get(&self.url("/ready"))
                && r.0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become ready:\n{}", self.output());
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET: (status, body).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let (status, body) = std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let r = reqwest::Client::new()
                        .get(url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let s = r.status().as_u16();
                    Ok::<_, String>((s, r.text().await.unwrap_or_default()))
                })
        })
        .join()
        .unwrap()
    })?;
    Ok((status, body))
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Is this process gone (or a zombie)?
pub fn process_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// Prometheus text → series (name with labels, as printed) → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// How much a series grew between two scrapes (absent counts as 0).
pub fn metric_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    series: &str,
) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

/// The headers every response carries (see `server::observe`).
pub fn assert_security_headers(h: &reqwest::header::HeaderMap, what: &str) {
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            h.get(k).and_then(|v| v.to_str().ok()),
            Some(v),
            "{what}: header {k}"
        );
    }
    assert!(h.contains_key("content-security-policy"), "{what}: CSP");
}

/// Send `request` over a raw socket and read the answer: (status, text, time to answer).
/// The request may stop short of its declared body, like a client that stalls.
pub fn raw_http(port: u16, request: &[u8]) -> (u16, String, Duration) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    // The server may answer (and close) before taking everything.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut took = None;
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        took.get_or_insert_with(|| started.elapsed());
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text, took.unwrap_or_default())
}

/// A `commands/` file for `name <environment> <version>`: a deploy that holders of `role` may
/// run, with one step running `argv` (a TOML array). Step settings can follow it.
pub fn deploy_command(name: &str, role: &str, argv: &str) -> String {
    format!(
        r#"name = "{name}"
description = "A test deploy"
kind = "deploy"
[[args]]
name = "environment"
kind = "environment"
[[args]]
name = "version"
kind = "version"
[roles]
"*" = "{role}"
[[steps]]
name = "work"
argv = {argv}
"#
    )
}

/// Wait up to 30 s for job `id` to reach `want`; otherwise fail with the job's row and log.
pub async fn wait_state(app: &App, id: i64, want: &str) -> deckhand::store::jobs::JobRow {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match app.db.job(id).await.unwrap() {
            Some(j) if j.state == want => return j,
            j if Instant::now() > deadline => {
                let log = app.db.job_log(id, 0).await.unwrap_or_default();
                let log: Vec<&str> = log.iter().map(|l| l.line.as_str()).collect();
                panic!("job {id} is not {want} after 30 s: {j:?}\nlog: {log:#?}");
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A deploy that runs until it is cancelled.
pub fn hang_command() -> String {
    deploy_command("hang", "everyone", r#"["sleep", "120"]"#)
}

/// A deploy with no work that needs the deployer role (for gated environments).
pub fn gated_ship_command() -> String {
    deploy_command("ship", "deployer", r#"["true"]"#)
}

/// A notice the sender did not send because a newer state of its message was waiting.
pub fn superseded(r: &deckhand::outbox::OutboxRow) -> bool {
    r.last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("superseded by notice "))
}

/// Wait (up to `secs`) until no notice waits for delivery on any platform.
pub async fn outbox_drained(app: &App, secs: u64) {
    eventually(secs, "every notice delivered", || async {
        app.db
            .outbox_depth()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
}

/// Serve on a free loopback port in a thread of its own (with its own runtime, so the
/// server outlives any test runtime): `serve` gets the bound listener. Returns the port.
pub fn serve_on_loopback<F, Fut>(serve: F) -> u16
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            serve(l).await;
        });
    });
    rx.recv().unwrap()
}

/// A small xorshift for chaos tests' random points: seeded at random and printed, or from
/// `DECKHAND_CHAOS_SEED` to repeat a run.
pub struct Rng(u64);
impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("DECKHAND_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                u64::from_le_bytes(b) | 1
            });
        println!("chaos seed {seed} (set DECKHAND_CHAOS_SEED={seed} to repeat)");
        Rng(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
