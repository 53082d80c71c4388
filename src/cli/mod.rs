//! The command line: `deckhand serve | run | jobs | logs | audit | check | …`.

pub mod demo;
mod digest;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{ProcessEnv, Settings};
use crate::intake::policy::Identity;
use crate::intake::{Invocation, Outcome};
use crate::support::runner::CancelToken;

/// Exit codes: 0 success, 1 the job failed, 2 refused or bad input, 3 Deckhand itself failed.
pub mod exit {
    pub const OK: i32 = 0;
    pub const JOB_FAILED: i32 = 1;
    pub const REFUSED: i32 = 2;
    pub const ERROR: i32 = 3;
}

#[derive(Parser, Debug)]
#[command(
    name = "deckhand",
    version,
    about = "A chat-ops deploy bot for Slack and Discord"
)]
pub struct Cli {
    /// Config file (else DECKHAND_CONFIG, else ./deckhand.toml, else the bundled default).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the bot: HTTP endpoints, job workers and the notice sender.
    Serve {
        /// Listen address (else DECKHAND_LISTEN, else 127.0.0.1:3000).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Submit a command as the local operator and follow it to its end.
    Run {
        /// The command, e.g. deploy.
        command: String,
        /// Its arguments, e.g. staging abc1234.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List recent jobs.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Print a job's stored log.
    Logs { job: String },
    /// Print the audit log.
    Audit {
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Validate the config and every command file; exits non-zero on any problem.
    Check,
    // --- digests (src/digest) ---
    /// Print a digest now with `--now` (and write its chart), or show when it fires.
    Digest {
        /// The digest's name, from [[digests]] in deckhand.toml, e.g. weekly.
        name: String,
        /// Build the digest for this instant and print it.
        #[arg(long)]
        now: bool,
        /// Where `--now` writes the PNG chart (default: digest-NAME.png here).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    // --- end digests ---
    /// Exit 0 when the local server answers /health (for container health checks).
    Healthcheck {
        #[arg(long)]
        url: Option<String>,
    },
    /// Slack helpers.
    Slack {
        #[command(subcommand)]
        command: SlackCmd,
    },
    /// Discord helpers.
    Discord {
        #[command(subcommand)]
        command: DiscordCmd,
    },
    /// The demo service the bundled environments deploy.
    #[command(hide = true)]
    DemoApp {
        #[arg(long)]
        version: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Steps of the bundled demo commands.
    #[command(hide = true)]
    Demo { action: String },
}

#[derive(Subcommand, Debug)]
pub enum SlackCmd {
    /// Print a Slack app manifest (JSON) for every command in `commands/`.
    Manifest {
        /// The public base URL of this Deckhand, e.g. https://deckhand.example.com
        #[arg(long)]
        url: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DiscordCmd {
    /// Bulk-overwrite the application's commands from `commands/` (needs
    /// DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN).
    Register {
        /// Register in one guild (instant) instead of globally.
        #[arg(long)]
        guild: Option<String>,
    },
}

/// Logs go to stderr: JSON when `LOG_FORMAT=json` or stderr is not a terminal.
pub fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        b.try_init()
    };
}

/// Parse the command line and run it; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Cmd::Serve { .. });
    init_logging(if quiet {
        "warn,sqlx=error"
    } else {
        "info,sqlx=warn"
    });
    match cli.command {
        Cmd::Demo { action } => return report(crate::cli::demo::action(&action).map(|_| exit::OK)),
        Cmd::Check => return check(cli.config),
        Cmd::Slack {
            command: SlackCmd::Manifest { url },
        } => return slack_manifest(cli.config, &url),
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(Err(e.into())),
    };
    report(rt.block_on(async_main(cli)))
}

fn report(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deckhand: {e:#}");
            exit::ERROR
        }
    }
}

async fn async_main(cli: Cli) -> anyhow::Result<i32> {
    let listen_flag = match &cli.command {
        Cmd::Serve { listen } => listen.clone(),
        _ => None,
    };
    match cli.command {
        Cmd::DemoApp {
            version,
            port,
            pid_file,
        } => {
            crate::cli::demo::serve_app(version, port, pid_file).await?;
            return Ok(exit::OK);
        }
        Cmd::Healthcheck { url } => return healthcheck(url).await,
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref(), listen_flag.as_deref(), &ProcessEnv)?;
    match cli.command {
        Cmd::Serve { .. } => {
            let listen = settings.listen.clone();
            let app = App::build(settings).await?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            crate::server::serve(app, listener, crate::server::signal()).await?;
            Ok(exit::OK)
        }
        Cmd::Run { command, args } => run(App::build(settings).await?, command, args).await,
        Cmd::Discord {
            command: DiscordCmd::Register { guild },
        } => discord_register(settings, guild).await,
        Cmd::Jobs { limit } => {
            let app = App::build(settings).await?;
            println!(
                "{:>6}  {:<19}  {:<18} {:<24} {:<11} {:>9}  BY",
                "JOB", "CREATED", "COMMAND", "WHAT", "STATE", "TOOK"
            );
            for j in app.db.recent_jobs(limit).await? {
                println!(
                    "{:>6}  {:<19}  {:<18} {:<24} {:<11} {:>9}  {}",
                    j.id,
                    crate::domain::time::fmt_time(j.created_at).trim_end_matches(" UTC"),
                    j.command,
                    crate::domain::text::describe(
                        "",
                        j.environment.as_deref(),
                        j.version.as_deref()
                    )
                    .trim(),
                    j.state,
                    crate::jobs::job_duration(&j),
                    j.requested_by
                );
            }
            Ok(exit::OK)
        }
        Cmd::Logs { job } => {
            let id = crate::domain::JobId::parse(&job)
                .map_err(|e| anyhow::anyhow!(e.0))?
                .0;
            let app = App::build(settings).await?;
            let Some(j) = app.db.job(id).await? else {
                eprintln!("deckhand: there is no job {id}");
                return Ok(exit::REFUSED);
            };
            println!(
                "job {} {} — {}",
                j.id,
                crate::domain::text::describe(
                    &j.command,
                    j.environment.as_deref(),
                    j.version.as_deref()
                ),
                j.state
            );
            for l in app.db.job_log(id, 0).await? {
                println!(
                    "{}",
                    crate::jobs::render_log_line(&l.step, &l.stream, &l.line)
                );
            }
            if let Some(r) = j.result {
                println!("{r}");
            }
            Ok(exit::OK)
        }
        // --- digests ---
        Cmd::Digest { name, now, chart } => {
            let app = App::build(settings).await?;
            digest::run(&app, &name, now, chart.as_deref()).await
        }
        // --- end digests ---
        Cmd::Audit { env, limit } => {
            let app = App::build(settings).await?;
            for a in app.db.audit(env.as_deref(), limit).await? {
                println!(
                    "{}  {:<22} {:<9} {:<18} {:<11} {:<6} {}",
                    crate::domain::time::fmt_time(a.at),
                    a.actor,
                    a.platform,
                    a.action,
                    a.environment.as_deref().unwrap_or("-"),
                    a.job_id
                        .map(|j| j.to_string())
                        .unwrap_or_else(|| "-".into()),
                    a.detail
                );
            }
            Ok(exit::OK)
        }
        Cmd::Check
        | Cmd::Demo { .. }
        | Cmd::DemoApp { .. }
        | Cmd::Healthcheck { .. }
        | Cmd::Slack { .. } => unreachable!("handled above"),
    }
}

/// `deckhand check`: every problem in the config and in `commands/`, with file and line.
fn check(config: Option<PathBuf>) -> i32 {
    let settings = match Settings::load(config.as_deref(), None, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::REFUSED;
        }
    };
    let file = settings
        .config_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<embedded deckhand.toml>".into());
    match crate::config::catalog::Catalog::load(
        settings.commands_dir().as_deref(),
        &settings.config,
    ) {
        Ok(c) => {
            println!(
                "{file}: ok ({} environments); commands: {}",
                settings.config.environments.len(),
                c.commands.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            exit::OK
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            exit::REFUSED
        }
    }
}

fn slack_manifest(config: Option<PathBuf>, url: &str) -> i32 {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        eprintln!("--url must be the public base URL, e.g. https://deckhand.example.com");
        return exit::REFUSED;
    }
    let loaded = Settings::load(config.as_deref(), None, &ProcessEnv)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            crate::config::catalog::Catalog::load(s.commands_dir().as_deref(), &s.config).map_err(
                |ps| {
                    ps.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )
        });
    match loaded {
        Ok(catalog) => {
            let m = crate::platform::slack::manifest(url, &catalog);
            println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::REFUSED
        }
    }
}

async fn discord_register(settings: Settings, guild: Option<String>) -> anyhow::Result<i32> {
    use secrecy::ExposeSecret;
    let (Some(app_id), Some(token)) = (
        &settings.discord_application_id,
        &settings.secrets.discord_bot_token,
    ) else {
        eprintln!(
            "deckhand: set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN to register commands"
        );
        return Ok(exit::REFUSED);
    };
    let catalog =
        crate::config::catalog::Catalog::load(settings.commands_dir().as_deref(), &settings.config)
            .map_err(|ps| {
                anyhow::anyhow!(
                    "{}",
                    ps.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
    let body = crate::platform::discord::registration(&catalog, &settings.config);
    let base = settings.discord_api_url.trim_end_matches('/').to_owned();
    match crate::platform::discord::register(
        &reqwest::Client::new(),
        &base,
        app_id,
        token.expose_secret(),
        guild.as_deref(),
        &body,
    )
    .await
    {
        Ok(n) => {
            println!(
                "registered {n} commands{}",
                guild
                    .map(|g| format!(" in guild {g}"))
                    .unwrap_or_else(|| " globally".into())
            );
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("deckhand: {e}");
            Ok(exit::ERROR)
        }
    }
}

async fn healthcheck(url: Option<String>) -> anyhow::Result<i32> {
    let url = url.unwrap_or_else(|| {
        let listen = std::env::var("DECKHAND_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let port = listen.rsplit(':').next().unwrap_or("3000").to_owned();
        format!("http://127.0.0.1:{port}/health")
    });
    let ok = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    Ok(if ok { exit::OK } else { exit::JOB_FAILED })
}

/// `deckhand run`: submit as the local operator, then follow the job in the terminal.
async fn run(app: Arc<App>, command: String, args: Vec<String>) -> anyhow::Result<i32> {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let inv = Invocation {
        platform: "terminal".into(),
        identity: Identity::Operator,
        actor: format!("terminal:{}", crate::domain::text::shorten(&user)),
        channel: None,
        command,
        args,
        request_id: Some(format!("terminal:{}", hex::encode(b))),
        reply_to: None,
    };
    let outcome = crate::intake::submit(&app, inv).await?;
    let job_id = match outcome {
        Outcome::Refused(r) => {
            eprintln!("✖ refused: {r}");
            return Ok(exit::REFUSED);
        }
        Outcome::Info(i) => {
            println!("{i}");
            return Ok(exit::OK);
        }
        // A new job's first notice says it was queued; a repeat says which job it is.
        Outcome::Accepted {
            job_id,
            message,
            duplicate,
        } => {
            if duplicate {
                println!("{message}");
            }
            job_id
        }
    };

    // Without a live `serve` on this database, run the job here.
    let local = !app.db.live_server(6_000).await?;
    let stop = CancelToken::new();
    let shutdown = CancelToken::new();
    let mut tasks = Vec::new();
    if local {
        tasks.push(tokio::spawn(crate::jobs::run_workers(
            app.clone(),
            stop.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(crate::outbox::run_sender(
            app.clone(),
            crate::server::deliverers(&app, false),
            stop.clone(),
        )));
    } else {
        println!("(a running `deckhand serve` will run it; following)");
    }
    let code = tokio::select! {
        r = follow(&app, job_id) => r?,
        _ = crate::server::signal() => {
            eprintln!("interrupted: stopping; job {job_id} is reported as interrupted at the next start");
            shutdown.cancel();
            130
        }
    };
    if local {
        // Let other platforms' notices of this job go out before leaving.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until && code != 130 {
            let pending: i64 = app
                .db
                .outbox_depth()
                .await
                .map(|d| d.iter().filter(|x| x.0 != "terminal").map(|x| x.1).sum())
                .unwrap_or(0);
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
    }
    Ok(code)
}

/// Print the job's notices and log lines in the order they happened; return its exit code
/// at the end.
async fn follow(app: &App, job_id: i64) -> anyhow::Result<i32> {
    let (mut last_notice, mut last_log) = (0i64, 0i64);
    loop {
        let job = app.db.job(job_id).await?.context("the job disappeared")?;
        let mut out: Vec<(i64, String)> = Vec::new();
        for l in app.db.job_log(job_id, last_log).await? {
            out.push((
                l.at,
                crate::jobs::render_log_line(&l.step, &l.stream, &l.line),
            ));
            last_log = l.id;
        }
        for n in app.db.job_notices(job_id, "terminal", last_notice).await? {
            if let Some(notice) = n.notice() {
                out.push((n.created_at, notice.render_text()));
            }
            last_notice = n.id;
        }
        out.sort_by_key(|o| o.0);
        for (_, line) in out {
            println!("{line}");
        }
        if crate::store::jobs::state::is_final(&job.state) {
            return Ok(if job.state == crate::store::jobs::state::SUCCEEDED {
                exit::OK
            } else {
                exit::JOB_FAILED
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
