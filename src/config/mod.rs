//! Settings: `deckhand.toml` plus environment variables, into typed values.
//!
//! The file declares environments, roles and queue/runner tuning. Secrets come only from
//! environment variables and are held as [`SecretString`], whose `Debug` hides the value.
//! Any file value can be overridden by an environment variable named
//! `DECKHAND__SECTION__KEY` (double underscores separate the path), for example
//! `DECKHAND__QUEUE__LEASE_SECONDS=5`.

pub mod alerts;
pub mod catalog;
pub mod cost;
pub mod digest;
pub mod probes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The bundled configuration, used when no `deckhand.toml` is found.
pub const EMBEDDED_CONFIG: &str = include_str!("../../deckhand.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
}

/// The file's contents, typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder of command files, relative to the config file.
    #[serde(default = "default_commands_dir")]
    pub commands_dir: PathBuf,
    /// Where steps and the demo keep state (pid files, backups), relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub runner: RunnerConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleGrant>,
    /// How rotate-secret generates each secret, by name; others get the default.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    #[serde(default)]
    pub locks: LocksConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Alert intake: routing of labels to incident channels and severities.
    #[serde(default)]
    pub alerts: crate::config::alerts::AlertsConfig,
    /// Uptime probes of every environment's health URL, plus extra endpoints.
    #[serde(default)]
    pub probes: crate::config::probes::ProbesConfig,
    /// Scheduled digests.
    #[serde(default)]
    pub digests: Vec<crate::config::digest::DigestConfig>,
    /// Where cost figures come from.
    #[serde(default)]
    pub costs: Vec<crate::config::cost::CostSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSpec {
    pub length: usize,
    pub alphabet: Alphabet,
}

impl Default for SecretSpec {
    fn default() -> Self {
        Self {
            length: 32,
            alphabet: Alphabet::Alnum,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// Letters and digits.
    Alnum,
    /// Lowercase hexadecimal.
    Hex,
    /// Letters, digits, `-` and `_`.
    Base64url,
}

impl Alphabet {
    pub fn chars(self) -> &'static str {
        match self {
            Alphabet::Alnum => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Hex => "0123456789abcdef",
            Alphabet::Base64url => {
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
        }
    }
}

/// `[storage]`: how hard SQLite works to keep each commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"full"` (default): every commit, so every acknowledged command, is fsynced before
    /// the answer — it survives a power cut, at the cost of one fsync per command.
    /// `"normal"`: commits survive a crash of Deckhand (kill -9) but the last ones may be
    /// lost if the machine itself loses power; several times faster on slow disks.
    pub sqlite_synchronous: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sqlite_synchronous: "full".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksConfig {
    /// A lock older than this gets a reminder in its channel, and again this often.
    pub remind_after_seconds: u64,
}

impl Default for LocksConfig {
    fn default() -> Self {
        Self {
            remind_after_seconds: 4 * 3600,
        }
    }
}

fn default_commands_dir() -> PathBuf {
    "commands".into()
}
fn default_data_dir() -> PathBuf {
    ".deckhand".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a claim holds a job without a heartbeat. A process that dies is noticed
    /// after this long, and its running jobs are reported as interrupted.
    pub lease_seconds: u64,
    /// Jobs run at once by one process (different environments run in parallel).
    pub workers: usize,
    /// Fallback poll interval when no wake-up arrives.
    pub poll_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_seconds: 30,
            workers: 4,
            poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Time between SIGTERM and SIGKILL when a step times out or is cancelled.
    pub kill_grace_seconds: u64,
    /// Timeout of a step that does not set one.
    pub default_timeout_seconds: u64,
    /// Names of environment variables whose values are secrets: a step may receive them
    /// (through `pass_env`), and their values are redacted from every log and message.
    pub secret_env: Vec<String>,
    /// Lines stored per job before the log is truncated with a note.
    pub max_log_lines: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            kill_grace_seconds: 10,
            default_timeout_seconds: 900,
            secret_env: Vec::new(),
            max_log_lines: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM, how long running jobs may go on before their steps are stopped.
    pub shutdown_grace_seconds: u64,
    /// Serve `/metrics` on this address instead of the public listener.
    pub metrics_listen: Option<String>,
    /// Largest request body accepted on any route (413 above it). The Slack routes keep
    /// their own, smaller limit.
    pub max_body_bytes: usize,
    /// Requests per minute one client may send to `/slack/*`, `/discord/*` and `/alerts/*`
    /// on average (429 with `Retry-After` above it); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Requests a client may send at once before the per-minute rate applies.
    pub rate_limit_burst: u32,
    /// Take the client's address from this header (its first address) instead of the TCP
    /// peer. Only behind a proxy that sets it, e.g. `Fly-Client-IP` on Fly.io: anyone can
    /// send the header, so trusting it elsewhere lets clients pick their own bucket.
    pub client_ip_header: Option<String>,
    /// A request not answered within this long gets 503. At least 3, so a slow database
    /// still leaves the platform handlers time to send their "answer follows" reply.
    pub request_timeout_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_seconds: 30,
            metrics_listen: None,
            max_body_bytes: 1024 * 1024,
            rate_limit_per_minute: 120,
            rate_limit_burst: 30,
            client_ip_header: None,
            request_timeout_seconds: 10,
        }
    }
}

/// Problems in `[server]`, as (key, message).
fn server_problems(s: &ServerConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if s.max_body_bytes < 1024 {
        out.push((
            "max_body_bytes",
            "server.max_body_bytes must be at least 1024".into(),
        ));
    }
    if s.rate_limit_per_minute > 0 && s.rate_limit_burst == 0 {
        out.push((
            "rate_limit_burst",
            "server.rate_limit_burst must be at least 1 (or set rate_limit_per_minute = 0 to turn the limit off)".into(),
        ));
    }
    if let Some(h) = &s.client_ip_header
        && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        out.push((
            "client_ip_header",
            format!("server.client_ip_header = {h:?} is not a valid HTTP header name"),
        ));
    }
    if s.request_timeout_seconds < 3 {
        out.push((
            "request_timeout_seconds",
            "server.request_timeout_seconds must be at least 3 (Slack and Discord allow 3 s for an answer)".into(),
        ));
    }
    if let Some(a) = &s.metrics_listen
        && !a
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        out.push((
            "metrics_listen",
            format!("server.metrics_listen = {a:?} is not an address such as \"127.0.0.1:9090\""),
        ));
    }
    out
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Polled after deploys and rollbacks, and by the uptime probes.
    pub health_url: Option<String>,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// Where the health answer names the running version: `"json:FIELD"` for a JSON field,
    /// or `"body"` for the version appearing anywhere in the body. Unset: not checked.
    pub expect_version: Option<String>,
    #[serde(default = "default_health_timeout")]
    pub health_timeout_seconds: u64,
    /// The environment a version must be verified on before it may be deployed here.
    pub promote_from: Option<String>,
    /// Approvals needed from people other than the requester.
    #[serde(default)]
    pub approvals: u32,
    /// The role an approver must hold.
    #[serde(default = "default_approver_role")]
    pub approver_role: String,
    /// Unanswered approval requests expire after this long.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_seconds: u64,
    /// Roll back to the last verified version when the health check fails.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Channel per platform for this environment's job messages.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
}

fn default_expect_status() -> u16 {
    200
}
fn default_approver_role() -> String {
    "deployer".into()
}
fn default_approval_timeout() -> u64 {
    3600
}
fn default_health_timeout() -> u64 {
    300
}

/// Who holds a role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleGrant {
    /// The local operator (`deckhand run` in a terminal).
    pub operator: bool,
    pub slack_users: Vec<String>,
    pub discord_users: Vec<String>,
    pub discord_roles: Vec<String>,
}

/// Secrets and endpoints, from the environment only.
#[derive(Clone, Default)]
pub struct Secrets {
    pub slack_signing_secret: Option<SecretString>,
    pub slack_bot_token: Option<SecretString>,
    pub discord_bot_token: Option<SecretString>,
    pub alert_token: Option<SecretString>,
    /// Values of `runner.secret_env`, by variable name.
    pub step_secrets: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<SecretString>| if o.is_some() { "[set]" } else { "[unset]" };
        f.debug_struct("Secrets")
            .field("slack_signing_secret", &set(&self.slack_signing_secret))
            .field("slack_bot_token", &set(&self.slack_bot_token))
            .field("discord_bot_token", &set(&self.discord_bot_token))
            .field("alert_token", &set(&self.alert_token))
            .field(
                "step_secrets",
                &self.step_secrets.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Secrets {
    /// Every secret value known to the process, for redaction.
    pub fn values(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.slack_signing_secret,
            &self.slack_bot_token,
            &self.discord_bot_token,
            &self.alert_token,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose_secret().to_owned())
        .collect();
        out.extend(
            self.step_secrets
                .values()
                .map(|s| s.expose_secret().to_owned()),
        );
        out.retain(|s| !s.is_empty());
        out
    }
}

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
    /// What `deckhand` as a step's argv[0] runs: this very binary.
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

/// Line number (1-based) of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the first occurrence of `needle`, or 1.
pub fn line_of_str(text: &str, needle: &str) -> usize {
    text.find(needle).map(|o| line_of(text, o)).unwrap_or(1)
}

impl Settings {
    /// Resolve settings: `--config`, else `DECKHAND_CONFIG`, else `./deckhand.toml`, else
    /// the embedded default.
    pub fn load(
        config_flag: Option<&Path>,
        listen_flag: Option<&str>,
        env: &dyn Env,
    ) -> Result<Self, ConfigError> {
        let explicit = config_flag
            .map(Path::to_path_buf)
            .or_else(|| env.get("DECKHAND_CONFIG").map(PathBuf::from));
        let (file, text) = match explicit {
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
        };
        let name = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded deckhand.toml>".into());
        let config = parse_config(&name, &text, env)?;
        validate_config(&name, &text, &config)?;
        let base_dir = file
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));

        let secret = |k: &str| env.get(k).map(SecretString::from);
        let step_secrets = config
            .runner
            .secret_env
            .iter()
            .filter_map(|k| env.get(k).map(|v| (k.clone(), SecretString::from(v))))
            .collect();
        Ok(Self {
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://deckhand.db".into()),
            listen: listen_flag
                .map(str::to_owned)
                .or_else(|| env.get("DECKHAND_LISTEN"))
                .unwrap_or_else(|| "127.0.0.1:3000".into()),
            secrets: Secrets {
                slack_signing_secret: secret("SLACK_SIGNING_SECRET"),
                slack_bot_token: secret("SLACK_BOT_TOKEN"),
                discord_bot_token: secret("DISCORD_BOT_TOKEN"),
                alert_token: secret("DECKHAND_ALERT_TOKEN"),
                step_secrets,
            },
            slack_api_url: env
                .get("SLACK_API_URL")
                .unwrap_or_else(|| "https://slack.com/api".into()),
            discord_api_url: env
                .get("DISCORD_API_URL")
                .unwrap_or_else(|| "https://discord.com/api/v10".into()),
            discord_public_key: env.get("DISCORD_PUBLIC_KEY"),
            discord_application_id: env.get("DISCORD_APPLICATION_ID"),
            config,
            config_file: file,
            base_dir,
            deckhand_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("deckhand")),
        })
    }

    /// Can notices be delivered on this platform?
    pub fn platform_enabled(&self, platform: &str) -> bool {
        match platform {
            "terminal" => true,
            // With a bot token: the Web API; with only the signing secret: response_url.
            "slack" => {
                self.secrets.slack_bot_token.is_some()
                    || self.secrets.slack_signing_secret.is_some()
            }
            // With a bot token: channel messages; with only the key: interaction follow-ups.
            "discord" => {
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

/// Parse the file and apply `DECKHAND__…` overrides.
pub fn parse_config(name: &str, text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let invalid = |line, message: String| ConfigError::Invalid {
        file: name.to_owned(),
        line,
        message,
    };
    let overrides: Vec<(Vec<String>, String)> = env
        .vars()
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("DECKHAND__")?;
            Some((
                rest.split("__").map(|s| s.to_ascii_lowercase()).collect(),
                v,
            ))
        })
        .collect();
    if overrides.is_empty() {
        return toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            invalid(line, e.message().trim().to_owned())
        });
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        invalid(line, e.message().trim().to_owned())
    })?;
    for (path, raw) in overrides {
        let value = raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| raw.parse::<bool>().map(toml::Value::Boolean))
            .unwrap_or(toml::Value::String(raw));
        let mut t = &mut table;
        for part in &path[..path.len() - 1] {
            t = match t
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()))
            {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(invalid(
                        1,
                        format!(
                            "override DECKHAND__{}: {part} is not a table",
                            path.join("__")
                        ),
                    ));
                }
            };
        }
        t.insert(path[path.len() - 1].clone(), value);
    }
    Config::deserialize(toml::Value::Table(table)).map_err(|e| {
        invalid(
            1,
            format!("after DECKHAND__ overrides: {}", e.message().trim()),
        )
    })
}

/// Checks that need the whole config: references between environments and roles.
pub fn validate_config(name: &str, text: &str, c: &Config) -> Result<(), ConfigError> {
    let mut problems = config_problems(text, c);
    if problems.is_empty() {
        Ok(())
    } else {
        let (line, message) = problems.remove(0);
        Err(ConfigError::Invalid {
            file: name.to_owned(),
            line,
            message,
        })
    }
}

/// Every problem found, as (line, message).
pub fn config_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = crate::config::digest::config_problems(c)
        .into_iter()
        .map(|(needle, message)| (line_of_str(text, &needle), message))
        .collect();
    let envs: Vec<&str> = c.environments.keys().map(String::as_str).collect();
    for (env_name, e) in &c.environments {
        let line = line_of_str(text, &format!("[environments.{env_name}"));
        if !crate::domain::valid_name(env_name) {
            out.push((
                line,
                format!("environment name {env_name:?} is invalid; expected lowercase letters, digits, '-' or '_'"),
            ));
        }
        if let Some(src) = &e.promote_from
            && (!c.environments.contains_key(src) || src == env_name)
        {
            out.push((
                    line,
                    format!(
                        "environments.{env_name}.promote_from = {src:?} is not another configured environment; accepted: {}",
                        envs.join(", ")
                    ),
                ));
        }
        if let Some(url) = &e.health_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push((
                line,
                format!("environments.{env_name}.health_url must start with http:// or https://"),
            ));
        }
        if let Some(ev) = &e.expect_version
            && ev != "body"
            && !ev.starts_with("json:")
        {
            out.push((
                    line,
                    format!("environments.{env_name}.expect_version = {ev:?}; accepted: \"body\" or \"json:FIELD\""),
                ));
        }
        for p in e.channels.keys() {
            if !["slack", "discord", "terminal"].contains(&p.as_str()) {
                out.push((
                    line,
                    format!("environments.{env_name}.channels: unknown platform {p:?}; accepted: slack, discord"),
                ));
            }
        }
    }
    for role in c.roles.keys() {
        if !crate::domain::valid_name(role) || role == "everyone" {
            out.push((
                line_of_str(text, &format!("[roles.{role}")),
                format!("role name {role:?} is invalid or reserved; \"everyone\" is built in"),
            ));
        }
    }
    if c.queue.lease_seconds < 2 {
        out.push((
            line_of_str(text, "lease_seconds"),
            "queue.lease_seconds must be at least 2".into(),
        ));
    }
    if !["full", "normal"].contains(&c.storage.sqlite_synchronous.as_str()) {
        out.push((
            line_of_str(text, "sqlite_synchronous"),
            format!(
                "storage.sqlite_synchronous = {:?}; accepted: \"full\" or \"normal\"",
                c.storage.sqlite_synchronous
            ),
        ));
    }
    if c.queue.workers == 0 {
        out.push((
            line_of_str(text, "workers"),
            "queue.workers must be at least 1".into(),
        ));
    }
    for (key, message) in server_problems(&c.server) {
        out.push((line_of_str(text, key), message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_config_is_valid() {
        let c = parse_config("embedded", EMBEDDED_CONFIG, &env(&[])).unwrap();
        assert!(c.environments.contains_key("staging"));
        assert_eq!(
            c.environments["production"].promote_from.as_deref(),
            Some("staging")
        );
        assert!(config_problems(EMBEDDED_CONFIG, &c).is_empty());
    }

    #[test]
    fn env_overrides_file_values() {
        let c = parse_config(
            "x",
            "[queue]\nlease_seconds = 30\n",
            &env(&[("DECKHAND__QUEUE__LEASE_SECONDS", "5")]),
        )
        .unwrap();
        assert_eq!(c.queue.lease_seconds, 5);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let text = "[queue]\nworkers = 2\n\n[environments.staging]\nhelth_url = \"x\"\n";
        let err = parse_config("d.toml", text, &env(&[])).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("d.toml:5:"), "{s}");
        assert!(s.contains("helth_url"), "{s}");
    }

    #[test]
    fn unknown_promotion_source_is_reported() {
        let text = "[environments.production]\npromote_from = \"stagin\"\n";
        let c = parse_config("d.toml", text, &env(&[])).unwrap();
        let p = config_problems(text, &c);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, 1);
        assert!(p[0].1.contains("stagin"));
    }

    #[test]
    fn secrets_debug_hides_values() {
        let s = Settings::load(
            Some(Path::new("/nonexistent/deckhand.toml")),
            None,
            &env(&[]),
        );
        assert!(s.is_err());
        let secrets = Secrets {
            slack_bot_token: Some(SecretString::from("xoxb-very-secret")),
            ..Default::default()
        };
        let dbg = format!("{secrets:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert_eq!(secrets.values(), vec!["xoxb-very-secret".to_string()]);
    }
}
