//! Settings: `deckhand.toml` plus environment variables, into typed values.
//!
//! The file declares environments, roles and queue/runner tuning. Secrets come only from
//! environment variables and are held as [`secrecy::SecretString`], whose `Debug` hides
//! the value. Any file value can be overridden by an environment variable named
//! `DECKHAND__SECTION__KEY` (double underscores separate the path), for example
//! `DECKHAND__QUEUE__LEASE_SECONDS=5`.
//!
//! This file owns the file's top level, the `DECKHAND__` overrides and the checks across
//! sections; each section's type is in its own file, [`Settings`] in `settings`.

pub mod alerts;
mod bound;
pub mod catalog;
pub mod cost;
pub mod database;
pub mod digest;
mod environment;
pub mod github;
pub mod probes;
mod roles;
mod runtime;
mod secrets;
mod server;
mod settings;
pub mod ui;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use bound::{DiscordConfig, SlackConfig, binding_warnings, valid_slack_user};
pub use environment::EnvironmentConfig;
pub use roles::RoleGrant;
pub use runtime::{LocksConfig, QueueConfig, RunnerConfig, StorageConfig};
pub use secrets::{Alphabet, SecretSpec, Secrets};
pub use server::ServerConfig;
pub use settings::{Env, ProcessEnv, Settings};

use bound::bound_problems;
use environment::environment_problems;
use roles::role_problems;
use runtime::runtime_problems;
use server::server_problems;
use ui::ui_problems;

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
    /// An environment variable with a value that cannot be right (never echoes the value).
    #[error("{0}")]
    Env(String),
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
    /// Which Slack workspaces and app this Deckhand serves.
    #[serde(default)]
    pub slack: SlackConfig,
    /// Which Discord guilds this Deckhand serves.
    #[serde(default)]
    pub discord: DiscordConfig,
    /// The status pages: access and the address chat reports link to.
    #[serde(default)]
    pub ui: crate::config::ui::UiConfig,
    /// Where watch checks query metrics.
    #[serde(default)]
    pub prometheus: crate::config::watch::PrometheusConfig,
    /// The repository whose commits are the versions, and how to ask GitHub.
    #[serde(default)]
    pub github: crate::config::github::GithubConfig,
}

fn default_commands_dir() -> PathBuf {
    "commands".into()
}
fn default_data_dir() -> PathBuf {
    ".deckhand".into()
}

/// Line number (1-based) of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the first occurrence of `needle`, or 1.
pub fn line_of_str(text: &str, needle: &str) -> usize {
    text.find(needle).map(|o| line_of(text, o)).unwrap_or(1)
}

/// Parse the file and apply `DECKHAND__…` overrides.
pub fn parse_config(name: &str, text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let invalid = |line, message: String| ConfigError::Invalid {
        file: name.to_owned(),
        line,
        message,
    };
    let overrides = overrides(env);
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
        apply_override(&mut table, &path, raw).map_err(|m| invalid(1, m))?;
    }
    Config::deserialize(toml::Value::Table(table)).map_err(|e| {
        invalid(
            1,
            format!("after DECKHAND__ overrides: {}", e.message().trim()),
        )
    })
}

/// `DECKHAND__SECTION__KEY=VALUE` variables, as (lowercase path, value).
fn overrides(env: &dyn Env) -> Vec<(Vec<String>, String)> {
    env.vars()
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("DECKHAND__")?;
            Some((
                rest.split("__").map(|s| s.to_ascii_lowercase()).collect(),
                v,
            ))
        })
        .collect()
}

/// Set `path` in the file's table to `raw`, typed as an integer or a boolean when it reads
/// as one.
fn apply_override(table: &mut toml::Table, path: &[String], raw: String) -> Result<(), String> {
    let value = raw
        .parse::<i64>()
        .map(toml::Value::Integer)
        .or_else(|_| raw.parse::<bool>().map(toml::Value::Boolean))
        .unwrap_or(toml::Value::String(raw));
    let mut t = table;
    for part in &path[..path.len() - 1] {
        t = match t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()))
        {
            toml::Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "override DECKHAND__{}: {part} is not a table",
                    path.join("__")
                ));
            }
        };
    }
    t.insert(path[path.len() - 1].clone(), value);
    Ok(())
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
    out.extend(environment_problems(text, c));
    for (needle, message) in crate::config::watch::watch_problems(c) {
        out.push((line_of_str(text, &needle), message));
    }
    out.extend(role_problems(text, c));
    out.extend(bound_problems(text, c));
    out.extend(runtime_problems(text, c));
    out.extend(crate::config::github::github_problems(text, c));
    for (key, message) in server_problems(&c.server) {
        out.push((line_of_str(text, key), message));
    }
    for (key, message) in ui_problems(&c.ui) {
        out.push((line_of_str(text, key), message));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::SecretString;

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
        let secrets = Secrets {
            metrics_token: Some(SecretString::from("metrics-very-secret")),
            ..Default::default()
        };
        let dbg = format!("{secrets:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("metrics_token: \"[set]\""), "{dbg}");
        assert_eq!(secrets.values(), vec!["metrics-very-secret".to_string()]);
    }
}
