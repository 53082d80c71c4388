//! The application: settings, catalog and database, shared by every part of a process.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::config::Settings;
use crate::config::catalog::Catalog;
use crate::domain::time::now_ms;
use crate::store::Db;
use crate::store::group::GroupCommit;
use crate::support::ratelimit::SignedBudgets;
use crate::support::runner::Redactor;

pub struct App {
    pub settings: Settings,
    pub catalog: Catalog,
    pub db: Db,
    /// Every configured secret value, for redacting step output.
    pub redactor: Redactor,
    /// Woken when a job is enqueued or finishes (a queued job may now be claimable).
    pub wake: Notify,
    /// Woken when notices are written.
    pub outbox_wake: Notify,
    /// This process's identity on leases and outbox claims: host, pid and a random part.
    pub worker_id: String,
    pub http: reqwest::Client,
    /// GitHub's credentials (a token or an App and its minted tokens), when set.
    pub github_auth: Option<crate::support::github_app::GhAuth>,
    pub health: Liveness,
    /// What verified senders may spend, over HTTP and the sockets alike.
    pub budgets: SignedBudgets,
    /// New jobs go through this writer, which commits concurrent ones together.
    pub intake: GroupCommit,
}

/// What `/ready` needs to know about the background loops.
#[derive(Default)]
pub struct Liveness {
    pub worker_tick: AtomicI64,
    pub outbox_tick: AtomicI64,
    pub workers_started: AtomicBool,
    pub outbox_started: AtomicBool,
    /// Set while the server drains on shutdown: new commands get 503.
    pub draining: AtomicBool,
    /// Jobs this process is executing: its own recovery never reports them interrupted,
    /// even when a database outage let their leases run out (their heartbeats renew them
    /// once the database is back).
    pub in_flight: Mutex<std::collections::HashSet<i64>>,
    outbox_error: Mutex<Option<String>>,
    /// Slack Socket Mode, when `SLACK_APP_TOKEN` is set: since when (ms) the socket has
    /// been down, 0 while it is up.
    pub slack_socket_configured: AtomicBool,
    pub slack_socket_down_since: AtomicI64,
    /// The Discord gateway, when `DISCORD_BOT_TOKEN` is set without `DISCORD_PUBLIC_KEY`:
    /// whether this replica holds the session's lease (else it stands by), and since when
    /// (ms) the session has been down, 0 while it is up.
    pub discord_gateway_configured: AtomicBool,
    pub discord_gateway_holder: AtomicBool,
    pub discord_gateway_down_since: AtomicI64,
}

impl Liveness {
    pub fn worker_tick(&self) {
        self.worker_tick.store(now_ms(), Ordering::Relaxed);
    }
    pub fn outbox_tick(&self) {
        self.outbox_tick.store(now_ms(), Ordering::Relaxed);
    }
    pub fn set_outbox_error(&self, e: Option<String>) {
        *self.outbox_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
    pub fn outbox_error(&self) -> Option<String> {
        self.outbox_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
    /// How long the configured Slack socket has been down (ms), if it is configured and down.
    pub fn slack_socket_down_ms(&self) -> Option<i64> {
        let since = self.slack_socket_down_since.load(Ordering::Relaxed);
        (self.slack_socket_configured.load(Ordering::Relaxed) && since != 0)
            .then(|| now_ms() - since)
    }
    /// How long the Discord gateway has been down (ms), if this replica holds its lease
    /// and it is down.
    pub fn discord_gateway_down_ms(&self) -> Option<i64> {
        let since = self.discord_gateway_down_since.load(Ordering::Relaxed);
        (self.discord_gateway_configured.load(Ordering::Relaxed)
            && self.discord_gateway_holder.load(Ordering::Relaxed)
            && since != 0)
            .then(|| now_ms() - since)
    }
}

/// Intake's group-commit writers on PostgreSQL (see [`GroupCommit::start`]).
const INTAKE_LANES: usize = 4;

impl App {
    /// Connect to the database, apply migrations, load the catalog.
    ///
    /// Connections to PostgreSQL: the shared pool (`storage.max_connections`, default
    /// `queue.workers + 4`) and intake's own `INTAKE_LANES + 1`.
    pub async fn build(settings: Settings) -> anyhow::Result<Arc<App>> {
        use anyhow::Context;
        let catalog =
            Catalog::load(settings.commands_dir().as_deref(), &settings.config).map_err(|ps| {
                anyhow::anyhow!(
                    "the command catalog has problems:\n{}",
                    ps.iter()
                        .map(|p| format!("  {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
        let (url, storage) = (&settings.database_url, &settings.config.storage);
        let open = |size: Option<u32>, acquire: std::time::Duration| async move {
            Db::connect_pool_waiting(url, storage, size, acquire)
                .await
                .with_context(|| {
                    format!("cannot open the database {}", crate::store::redact_url(url))
                })
        };
        let shared = storage
            .max_connections
            .unwrap_or(settings.config.queue.workers as u32 + 4);
        let db = open(Some(shared), std::time::Duration::from_secs(5)).await?;
        db.migrate()
            .await
            .context("cannot apply database migrations")?;
        let data = settings.data_dir();
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create the data folder {}", data.display()))?;
        create_demo_databases(&settings).await?;
        let redactor = Redactor::new(settings.secrets.values());
        let http = reqwest::Client::builder()
            .user_agent(concat!("deckhand/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .context("cannot build the HTTP client")?;
        let github_auth = github_auth(&settings)?;
        let settings_budgets = settings.config.server.signed_budgets();
        // Intake's writers hold one connection each; their own pool (one more for the
        // one-by-one retry of a failed batch) means a new command never waits behind
        // workers or the sender for a connection, and waiting at most 2 s for one, a
        // command answers within its acknowledgement budget (2.5 s) also while the
        // database is down: "nothing was queued", not "slow to confirm". SQLite takes one
        // writer at a time, so one lane; PostgreSQL commits INTAKE_LANES batches at once.
        let lanes = if url.starts_with("sqlite:") {
            1
        } else {
            INTAKE_LANES
        };
        let intake = GroupCommit::start(
            open(Some(lanes as u32 + 1), std::time::Duration::from_secs(2)).await?,
            lanes,
        );
        Ok(Arc::new(App {
            settings,
            catalog,
            db,
            redactor,
            wake: Notify::new(),
            outbox_wake: Notify::new(),
            worker_id: worker_id(),
            http,
            github_auth,
            health: Liveness::default(),
            budgets: settings_budgets,
            intake,
        }))
    }

    /// Wake the workers and the sender after writing jobs or notices.
    /// `notify_one` keeps a permit when nobody waits, so a wake-up is never lost.
    pub fn poke(&self) {
        self.wake.notify_one();
        self.outbox_wake.notify_one();
    }
}

/// With `DECKHAND_DEMO_POSTGRES_URL` set, the demo environments' databases exist before any
/// job needs them.
async fn create_demo_databases(settings: &Settings) -> anyhow::Result<()> {
    use crate::config::database::{DEMO_URL_ENV, PgTarget, demo_db_name};
    use secrecy::ExposeSecret;
    // Any demo environment's URL names the server; its maintenance database is always there.
    let Some(url) = settings
        .config
        .environments
        .iter()
        .find(|(_, e)| {
            e.database
                .as_ref()
                .is_some_and(|d| d.url_env == DEMO_URL_ENV)
        })
        .and_then(|(n, _)| settings.secrets.database_urls.get(n))
        .map(|s| s.expose_secret().to_owned())
    else {
        return Ok(());
    };
    let server = PgTarget::parse(&url)
        .map_err(|e| anyhow::anyhow!("{DEMO_URL_ENV}: {e}"))?
        .with_db("postgres");
    for (name, e) in &settings.config.environments {
        if e.database
            .as_ref()
            .is_some_and(|d| d.url_env == DEMO_URL_ENV)
        {
            crate::store::envdb::ensure_database(&server.url(), &demo_db_name(name))
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the demo database of {name}: {e}"))?;
        }
    }
    Ok(())
}

/// The GitHub credentials the environment gives, if any (a bad App key stops the start
/// with the reason, never its text).
pub fn github_auth(
    settings: &Settings,
) -> anyhow::Result<Option<crate::support::github_app::GhAuth>> {
    let s = &settings.secrets;
    crate::support::github_app::GhAuth::from_env(
        s.github_token.as_ref(),
        s.github_app_id.as_deref(),
        s.github_app_private_key.as_ref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn worker_id() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    format!("{}:{}:{}", hostname(), std::process::id(), hex::encode(b))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

impl App {
    /// A GitHub client and the repository of `env`, when GitHub is configured for it.
    pub fn github(&self, env: &str) -> Option<(crate::support::github::GitHub<'_>, String)> {
        let repo = self.settings.config.repository_of(env)?;
        let auth = self.github_auth.as_ref()?;
        let g = &self.settings.config.github;
        Some((
            crate::support::github::GitHub {
                http: &self.http,
                api_url: &self.settings.github_api_url,
                auth,
                timeout: std::time::Duration::from_secs(g.timeout_seconds),
                max_wait: std::time::Duration::from_secs(g.max_rate_limit_wait_seconds),
            },
            repo.to_owned(),
        ))
    }

    /// What deploying `sha` to `env` changes, as report fields (`Changes`, `Compare`):
    /// the commits since what `env` runs now. Never fails and never waits out a rate
    /// limit: when GitHub cannot say, the field says so and the deploy goes on.
    pub async fn changes(&self, env: &str, sha: &str) -> Vec<(String, String)> {
        use crate::support::github_compare::fields;
        let Some((gh, repo)) = self.github(env) else {
            return Vec::new();
        };
        let gh = crate::support::github::GitHub {
            max_wait: std::time::Duration::ZERO,
            ..gh
        };
        match self.db.running_commit(env).await {
            Ok(Some(base)) => fields(Some(&base), gh.compare(&repo, &base, sha).await),
            Ok(None) => fields(None, Err(crate::support::github::GhError::NotFound)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the running version to compare with");
                vec![(
                    "Changes".into(),
                    "not known: the database did not answer".into(),
                )]
            }
        }
    }
}
