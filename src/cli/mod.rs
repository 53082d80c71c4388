//! The command line: `deckhand serve | run | jobs | logs | audit | check | …`.

/// `println!` that a closed stdout does not turn into a panic (`deckhand jobs | head -1`):
/// see [`crate::support::stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::support::stdout::line(format_args!($($arg)*))
    };
}

mod check;
pub mod demo;
pub mod demo_app;
mod demo_db;
mod digest;
mod github;
mod jobs;
mod platforms;
mod run;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{ProcessEnv, Settings};

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
    /// List recent jobs; `jobs release JOB --reason "…"` frees an interrupted job's environment.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(subcommand)]
        action: Option<JobsCmd>,
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
    /// GitHub helpers.
    Github {
        #[command(subcommand)]
        command: GithubCmd,
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
pub enum GithubCmd {
    /// Verify the GitHub credentials and the permissions each configured feature needs;
    /// exits non-zero when one is missing.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// Stop waiting for an interrupted job's step that may still run (on a host this one
    /// cannot see): its environment is free again at once. Audited.
    Release {
        /// The interrupted job, e.g. 12.
        job: String,
        /// What you checked, e.g. "host-a is down; the step there did not finish".
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SlackCmd {
    /// Print a Slack app manifest (JSON) for every command in `commands/`.
    Manifest {
        /// The public base URL of this Deckhand, e.g. https://deckhand.example.com
        #[arg(
            long,
            required_unless_present = "socket_mode",
            conflicts_with = "socket_mode"
        )]
        url: Option<String>,
        /// Socket Mode (`SLACK_APP_TOKEN`): no request URLs, `socket_mode_enabled: true`.
        #[arg(long)]
        socket_mode: bool,
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tungstenite traces the Socket Mode handshake (its URL holds a one-time ticket) and
    // every frame (envelopes hold response URLs). Dropped by a filter of its own, which no
    // RUST_LOG directive (however specific) can turn back on.
    let no_socket_traces = tracing_subscriber::filter::filter_fn(|m| {
        !(m.target().starts_with("tungstenite") && *m.level() == tracing::Level::TRACE)
    });
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
            .finish()
            .with(no_socket_traces)
            .try_init()
    } else {
        b.finish().with(no_socket_traces).try_init()
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
        Cmd::Check => return report(Ok(check::check(cli.config))),
        Cmd::Slack {
            command: SlackCmd::Manifest { url, .. },
        } => return report(Ok(platforms::slack_manifest(cli.config, url.as_deref()))),
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
        Ok(code) if crate::support::stdout::failed() && code == exit::OK => exit::ERROR,
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
            crate::cli::demo_app::serve_app(version, port, pid_file).await?;
            return Ok(exit::OK);
        }
        Cmd::Healthcheck { url } => return serve::healthcheck(url).await,
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref(), listen_flag.as_deref(), &ProcessEnv)?;
    match cli.command {
        Cmd::Serve { .. } => serve::serve(settings).await,
        Cmd::Run { command, args } => run::run(App::build(settings).await?, command, args).await,
        Cmd::Discord {
            command: DiscordCmd::Register { guild },
        } => platforms::discord_register(settings, guild).await,
        Cmd::Jobs {
            action: Some(JobsCmd::Release { job, reason }),
            ..
        } => jobs::release(settings, &job, &reason).await,
        Cmd::Jobs { limit, .. } => jobs::jobs(settings, limit).await,
        Cmd::Logs { job } => jobs::logs(settings, &job).await,
        // --- digests ---
        Cmd::Digest { name, now, chart } => {
            let app = App::build(settings).await?;
            digest::run(&app, &name, now, chart.as_deref()).await
        }
        // --- end digests ---
        Cmd::Audit { env, limit } => jobs::audit(settings, env.as_deref(), limit).await,
        Cmd::Github {
            command: GithubCmd::Check,
        } => github::check(settings).await,
        Cmd::Check
        | Cmd::Demo { .. }
        | Cmd::DemoApp { .. }
        | Cmd::Healthcheck { .. }
        | Cmd::Slack { .. } => unreachable!("handled above"),
    }
}
