//! `[environments.NAME]`: where each environment answers its health checks, what it is
//! promoted from, who approves its deploys, and where its job messages go.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{Config, line_of_str};
use crate::domain::platform::Platform;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Polled after deploys and rollbacks, and by the uptime probes.
    pub health_url: Option<String>,
    /// Where people open the environment: the GitHub deployment's `environment_url`
    /// (else `health_url`).
    pub url: Option<String>,
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
    /// The environment's own database, for `/migrate`, `/backup` and `/restore`.
    pub database: Option<crate::config::database::DatabaseConfig>,
    /// The watch window after a deploy's health check: checks, probes and alerts.
    pub watch: Option<crate::config::watch::WatchConfig>,
    /// This environment's GitHub repository (`owner/name`), instead of `[github] repository`.
    pub repository: Option<String>,
    /// Checks a commit must have passed before it deploys here: names, or `"all"`.
    pub required_checks: Option<crate::config::github::RequiredChecks>,
    /// How long a deploy waits for pending required checks before it is refused.
    #[serde(default = "default_ci_timeout")]
    pub ci_timeout_seconds: u64,
    /// How often a waiting deploy asks GitHub again.
    #[serde(default = "default_ci_poll")]
    pub ci_poll_seconds: u64,
    /// Continuous delivery: deploy the branch's head here once its checks pass.
    pub auto_deploy: Option<crate::config::github::AutoDeploy>,
}

fn default_ci_timeout() -> u64 {
    1800
}
fn default_ci_poll() -> u64 {
    10
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

/// Problems in `[environments.*]`, as (line, message).
pub(super) fn environment_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out = Vec::new();
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
        for (key, url) in [("health_url", &e.health_url), ("url", &e.url)] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                out.push((
                    line,
                    format!("environments.{env_name}.{key} must start with http:// or https://"),
                ));
            }
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
            if Platform::parse_chat(p).is_none() {
                out.push((
                    line,
                    format!("environments.{env_name}.channels: unknown platform {p:?}; accepted: slack, discord"),
                ));
            }
        }
    }
    out
}
