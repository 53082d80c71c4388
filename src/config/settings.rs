//! What the process runs with: the config file found (`--config`, `DECKHAND_CONFIG`,
//! `./deckhand.toml` or the embedded default), resolved against the environment variables
//! that hold secrets, endpoints and addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::config::{Config, ConfigError, EMBEDDED_CONFIG, Secrets, parse_config, validate_config};
use crate::domain::platform::Platform;

/// Everything the process needs to start, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// The file read, or `None` for the embedded default.
    pub config_file: Option<PathBuf>,
    /// Relative paths in the config are resolved against this folder.
    pub base_dir: PathBuf,
    pub database_url: String,
    pub listen: String,
    pub secrets: Secrets,
    pub slack_api_url: String,
    pub discord_api_url: String,
    pub discord_public_key: Option<String>,
    pub discord_application_id: Option<String>,
    /// `GITHUB_API_URL`, default `https://api.github.com` (GitHub Enterprise and tests set it).
    pub github_api_url: String,
    /// What `deckhand` as a step's `argv[0]` runs: this very binary.
    pub deckhand_exe: PathBuf,
}

/// A source of environment variables; a map in tests, the process environment otherwise.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Settings {
    /// Resolve settings: `--config`, else `DECKHAND_CONFIG`, else `./deckhand.toml`, else
    /// the embedded default.
    pub fn load(
        config_flag: Option<&Path>,
        listen_flag: Option<&str>,
        env: &dyn Env,
    ) -> Result<Self, ConfigError> {
        let (file, text) = read_config(config_flag, env)?;
        let name = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded deckhand.toml>".into());
        let mut config = parse_config(&name, &text, env)?;
        validate_config(&name, &text, &config)?;
        let demo_urls = crate::config::database::demo_databases(&mut config, env)?;
        if env
            .get("SLACK_APP_TOKEN")
            .is_some_and(|t| !t.starts_with("xapp-"))
        {
            return Err(ConfigError::Env(
                "SLACK_APP_TOKEN must be a Slack app-level token (xapp-…) with the connections:write scope".into(),
            ));
        }
        crate::config::github::env_problem(&config, env)?;
        let base_dir = file
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self {
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://deckhand.db".into()),
            listen: listen_flag
                .map(str::to_owned)
                .or_else(|| env.get("DECKHAND_LISTEN"))
                .unwrap_or_else(|| "127.0.0.1:3000".into()),
            secrets: {
                let mut s = secrets(&config, env);
                s.database_urls.extend(demo_urls);
                s
            },
            slack_api_url: env
                .get("SLACK_API_URL")
                .unwrap_or_else(|| "https://slack.com/api".into()),
            discord_api_url: env
                .get("DISCORD_API_URL")
                .unwrap_or_else(|| "https://discord.com/api/v10".into()),
            discord_public_key: env.get("DISCORD_PUBLIC_KEY"),
            github_api_url: env
                .get("GITHUB_API_URL")
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| "https://api.github.com".into()),
            discord_application_id: env.get("DISCORD_APPLICATION_ID"),
            config,
            config_file: file,
            base_dir,
            deckhand_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("deckhand")),
        })
    }

    /// Can notices be delivered on this platform?
    pub fn platform_enabled(&self, platform: &str) -> bool {
        match Platform::parse_chat(platform) {
            Some(Platform::Terminal) => true,
            // With a bot token: the Web API; with only the signing secret: response_url.
            Some(Platform::Slack) => {
                self.secrets.slack_bot_token.is_some()
                    || self.secrets.slack_signing_secret.is_some()
                    || self.secrets.slack_app_token.is_some()
            }
            // With a bot token: channel messages; with only the key: interaction follow-ups.
            Some(Platform::Discord) => {
                self.secrets.discord_bot_token.is_some() || self.discord_public_key.is_some()
            }
            _ => false,
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.config.data_dir)
    }

    /// The commands folder, or `None` when the embedded command set is in use.
    pub fn commands_dir(&self) -> Option<PathBuf> {
        self.config_file
            .as_ref()
            .map(|_| self.resolve(&self.config.commands_dir))
    }
}

/// The config file named by the flag or `DECKHAND_CONFIG` (which must be readable), else
/// `./deckhand.toml`, else the embedded default (`None`), with its text.
fn read_config(
    config_flag: Option<&Path>,
    env: &dyn Env,
) -> Result<(Option<PathBuf>, String), ConfigError> {
    let explicit = config_flag
        .map(Path::to_path_buf)
        .or_else(|| env.get("DECKHAND_CONFIG").map(PathBuf::from));
    Ok(match explicit {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                file: p.display().to_string(),
                source,
            })?;
            (Some(p), text)
        }
        None => {
            let p = PathBuf::from("deckhand.toml");
            match std::fs::read_to_string(&p) {
                Ok(text) => (Some(p), text),
                Err(_) => (None, EMBEDDED_CONFIG.to_owned()),
            }
        }
    })
}

/// The platform tokens, and the values of the variables `runner.secret_env` names.
fn secrets(config: &Config, env: &dyn Env) -> Secrets {
    let secret = |k: &str| env.get(k).map(SecretString::from);
    Secrets {
        slack_signing_secret: secret("SLACK_SIGNING_SECRET"),
        slack_bot_token: secret("SLACK_BOT_TOKEN"),
        slack_app_token: secret("SLACK_APP_TOKEN"),
        discord_bot_token: secret("DISCORD_BOT_TOKEN"),
        alert_token: secret("DECKHAND_ALERT_TOKEN"),
        metrics_token: secret("DECKHAND_METRICS_TOKEN"),
        ui_token: secret("DECKHAND_UI_TOKEN"),
        prometheus_token: secret("PROMETHEUS_TOKEN"),
        github_token: secret("GITHUB_TOKEN"),
        github_app_id: env.get("GITHUB_APP_ID"),
        github_app_private_key: secret("GITHUB_APP_PRIVATE_KEY"),
        github_webhook_secret: secret("GITHUB_WEBHOOK_SECRET"),
        step_secrets: config
            .runner
            .secret_env
            .iter()
            .filter_map(|k| env.get(k).map(|v| (k.clone(), SecretString::from(v))))
            .collect(),
        database_urls: config
            .environments
            .iter()
            .filter_map(|(name, e)| {
                let var = &e.database.as_ref()?.url_env;
                env.get(var).map(|v| (name.clone(), SecretString::from(v)))
            })
            .collect(),
    }
}
