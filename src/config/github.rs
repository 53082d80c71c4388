//! `[github]`: the repository whose commits are the versions, and per environment the
//! checks a commit must pass (`[environments.X] repository`, `required_checks`,
//! `ci_timeout_seconds`) and the branch it follows (`auto_deploy`). The token comes only
//! from `GITHUB_TOKEN`, the webhook secret only from `GITHUB_WEBHOOK_SECRET`.

use serde::Deserialize;

use crate::config::{Config, ConfigError, Env, line_of, line_of_str};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// `owner/name`; environments without a `repository` of their own use it.
    pub repository: Option<String>,
    /// Every call to GitHub's API gives up after this long.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The longest wait a rate limit may impose before a call gives up instead.
    #[serde(default = "default_max_wait")]
    pub max_rate_limit_wait_seconds: u64,
    /// How often a `workflow` step asks about its run, unless the step says (`poll_ms`).
    #[serde(default = "default_workflow_poll_ms")]
    pub workflow_poll_ms: u64,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            repository: None,
            timeout_seconds: default_timeout(),
            max_rate_limit_wait_seconds: default_max_wait(),
            workflow_poll_ms: default_workflow_poll_ms(),
        }
    }
}

fn default_timeout() -> u64 {
    10
}
fn default_max_wait() -> u64 {
    60
}
fn default_workflow_poll_ms() -> u64 {
    5000
}

/// `[environments.X] auto_deploy = { branch = "main" }`: continuous delivery of a branch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDeploy {
    /// The branch whose head is deployed once its required checks pass.
    pub branch: String,
    /// The deploy command that runs it (a `kind = "deploy"` command of `commands/`).
    #[serde(default = "default_auto_command")]
    pub command: String,
    /// How often the branch's head is asked for (conditionally: unchanged costs nothing
    /// against the rate limit), besides webhooks. At least 60; 0 turns polling off
    /// (webhook only).
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
}

fn default_auto_command() -> String {
    "deploy".into()
}
fn default_poll_seconds() -> u64 {
    MIN_POLL_SECONDS
}

/// Polling asks at most once a minute per branch.
pub const MIN_POLL_SECONDS: u64 = 60;

/// `required_checks = ["test", "build"]` or `required_checks = "all"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RequiredChecks {
    Named(Vec<String>),
    Keyword(String),
}

impl RequiredChecks {
    /// Every check reported on the commit must pass.
    pub fn all(&self) -> bool {
        matches!(self, RequiredChecks::Keyword(k) if k == "all")
    }
    pub fn names(&self) -> &[String] {
        match self {
            RequiredChecks::Named(n) => n,
            RequiredChecks::Keyword(_) => &[],
        }
    }
}

impl Config {
    /// The environments that auto-deploy a branch, with their settings.
    pub fn auto_deploys(&self) -> impl Iterator<Item = (&str, &AutoDeploy)> {
        self.environments
            .iter()
            .filter_map(|(n, e)| e.auto_deploy.as_ref().map(|a| (n.as_str(), a)))
    }

    /// The repository an environment's versions are commits of, if GitHub is configured
    /// for it.
    pub fn repository_of(&self, env: &str) -> Option<&str> {
        self.environments
            .get(env)
            .and_then(|e| e.repository.as_deref())
            .or(self.github.repository.as_deref())
    }
}

/// `owner/name`, each part letters, digits, `-`, `_` or `.`.
pub fn valid_repository(r: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(r.split_once('/'), Some((o, n)) if part(o) && part(n))
}

/// Problems in `[github]` and the GitHub keys of `[environments.*]`, as (line, message).
pub(super) fn github_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let bad_repo = |r: &str| {
        format!(
            "repository = {:?} is not a GitHub repository; accepted: \"owner/name\" (letters, digits, '-', '_', '.')",
            crate::domain::text::shorten(r)
        )
    };
    if let Some(r) = &c.github.repository
        && !valid_repository(r)
    {
        out.push((
            line_of_str(text, "[github]"),
            format!("github.{}", bad_repo(r)),
        ));
    }
    if c.github.timeout_seconds == 0 || c.github.timeout_seconds > 120 {
        out.push((
            line_of_str(text, "[github]"),
            "github.timeout_seconds must be between 1 and 120".into(),
        ));
    }
    if c.github.workflow_poll_ms < crate::config::catalog::MIN_POLL_MS {
        out.push((
            line_of_str(text, "[github]"),
            format!(
                "github.workflow_poll_ms must be at least {}",
                crate::config::catalog::MIN_POLL_MS
            ),
        ));
    }
    for (name, e) in &c.environments {
        let line = line_of_str(text, &format!("[environments.{name}"));
        if let Some(r) = &e.repository
            && !valid_repository(r)
        {
            out.push((line, format!("environments.{name}.{}", bad_repo(r))));
        }
        if let Some(rc) = &e.required_checks {
            match rc {
                RequiredChecks::Keyword(k) if k != "all" => out.push((
                    line,
                    format!(
                        "environments.{name}.required_checks = {:?}; accepted: \"all\" or a list of check names",
                        crate::domain::text::shorten(k)
                    ),
                )),
                RequiredChecks::Named(n) if n.is_empty() || n.iter().any(|s| s.trim().is_empty()) => {
                    out.push((
                        line,
                        format!("environments.{name}.required_checks must name at least one check, none empty; or be \"all\""),
                    ))
                }
                _ => {}
            }
            if c.repository_of(name).is_none() {
                out.push((
                    line,
                    format!("environments.{name}.required_checks needs a repository: set [github] repository or environments.{name}.repository"),
                ));
            }
        }
        if let Some(a) = &e.auto_deploy {
            let line = key_line(text, name, "auto_deploy");
            out.extend(
                auto_deploy_problems(name, a, e.required_checks.is_some(), c.repository_of(name))
                    .into_iter()
                    .map(|m| (line, m)),
            );
        }
        if e.ci_poll_seconds == 0 || e.ci_timeout_seconds == 0 {
            out.push((
                line,
                format!(
                    "environments.{name}.ci_timeout_seconds and ci_poll_seconds must be at least 1"
                ),
            ));
        }
    }
    out
}

/// What is wrong with environment `env`'s `auto_deploy`.
fn auto_deploy_problems(
    env: &str,
    a: &AutoDeploy,
    has_checks: bool,
    repository: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let key = format!("environments.{env}.auto_deploy");
    if a.branch.trim().is_empty() {
        out.push(format!(
            "{key}.branch is empty; name the branch to deploy, e.g. branch = \"main\""
        ));
    } else if !crate::support::github_webhook::valid_branch(&a.branch) {
        out.push(format!(
            "{key}.branch = {:?} is not a git branch name",
            crate::domain::text::shorten(&a.branch)
        ));
    }
    if repository.is_none() {
        out.push(format!(
            "{key} needs a repository: set [github] repository or environments.{env}.repository"
        ));
    }
    if !has_checks {
        out.push(format!(
            "{key} needs environments.{env}.required_checks (check names, or \"all\"): a branch's head deploys only once its checks pass"
        ));
    }
    if a.poll_seconds != 0 && a.poll_seconds < MIN_POLL_SECONDS {
        out.push(format!(
            "{key}.poll_seconds = {} asks GitHub too often; accepted: 0 (webhook only) or at least {MIN_POLL_SECONDS}",
            a.poll_seconds
        ));
    }
    if !crate::domain::valid_name(&a.command) {
        out.push(format!(
            "{key}.command = {:?} is not a command name",
            crate::domain::text::shorten(&a.command)
        ));
    }
    out
}

/// The line of `key` in environment `env`'s section (or its own `[environments.ENV.KEY]`).
fn key_line(text: &str, env: &str, key: &str) -> usize {
    if let Some(o) = text.find(&format!("[environments.{env}.{key}]")) {
        return line_of(text, o);
    }
    let Some(h) = text.find(&format!("[environments.{env}]")) else {
        return 1;
    };
    let section_end = text[h + 1..].find("\n[").map_or(text.len(), |e| h + 1 + e);
    match text[h..section_end].find(key) {
        Some(o) => line_of(text, h + o),
        None => line_of(text, h),
    }
}

/// With a repository configured, a token must be there to ask GitHub with.
pub(super) fn env_problem(c: &Config, env: &dyn Env) -> Result<(), ConfigError> {
    let configured =
        c.github.repository.is_some() || c.environments.values().any(|e| e.repository.is_some());
    let secret = |k: &str| env.get(k).map(secrecy::SecretString::from);
    let auth = crate::support::github_app::GhAuth::from_env(
        secret("GITHUB_TOKEN").as_ref(),
        env.get("GITHUB_APP_ID").as_deref(),
        secret("GITHUB_APP_PRIVATE_KEY").as_ref(),
    )
    .map_err(|e| ConfigError::Env(e.0))?;
    if configured && auth.is_none() {
        return Err(ConfigError::Env(
            "a GitHub repository is configured but no GitHub credentials are set; set GITHUB_TOKEN to a fine-grained token, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY for a GitHub App (the README's GitHub section lists the permissions)".into(),
        ));
    }
    if let Some(u) = env.get("GITHUB_API_URL")
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(ConfigError::Env(
            "GITHUB_API_URL must start with https:// or http://".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{config_problems, parse_config};

    fn problems(text: &str) -> Vec<String> {
        let c = parse_config("t", text, &BTreeMap::new()).unwrap();
        config_problems(text, &c).into_iter().map(|p| p.1).collect()
    }

    #[test]
    fn repositories_and_required_checks_are_validated() {
        assert!(valid_repository("acme/shop"));
        assert!(valid_repository("a-b.c/d_e"));
        for bad in ["acme", "acme/", "/shop", "a/b/c", "acme/sh op", "../x"] {
            assert!(!valid_repository(bad), "{bad}");
        }
        let ok = "[github]\nrepository = \"acme/shop\"\n[environments.staging]\nrequired_checks = [\"test\"]\n[environments.qa]\nrequired_checks = \"all\"\n";
        assert!(problems(ok).is_empty(), "{:?}", problems(ok));
        let p = problems("[github]\nrepository = \"acme\"\n");
        assert!(p[0].contains("\"owner/name\""), "{p:?}");
        let p =
            problems("[environments.staging]\nrequired_checks = \"some\"\nrepository = \"a/b\"\n");
        assert!(p[0].contains("accepted: \"all\""), "{p:?}");
        let p = problems("[environments.staging]\nrequired_checks = [\"test\"]\n");
        assert!(p[0].contains("needs a repository"), "{p:?}");
    }

    #[test]
    fn auto_deploy_is_validated_with_its_line() {
        let ok = "[github]\nrepository = \"acme/shop\"\n[environments.staging]\nrequired_checks = [\"test\"]\nauto_deploy = { branch = \"main\" }\n";
        assert!(problems(ok).is_empty(), "{:?}", problems(ok));
        let c = parse_config("t", ok, &BTreeMap::new()).unwrap();
        let a = c.environments["staging"].auto_deploy.clone().unwrap();
        assert_eq!((a.command.as_str(), a.poll_seconds), ("deploy", 60));
        assert_eq!(c.auto_deploys().count(), 1);

        let text = "[environments.qa]\nurl = \"https://qa.example\"\n\n[environments.staging]\nurl = \"https://s.example\"\nauto_deploy = { branch = \"\", poll_seconds = 5 }\n";
        let c = parse_config("t", text, &BTreeMap::new()).unwrap();
        let p = config_problems(text, &c);
        let at = |needle: &str| {
            p.iter()
                .find(|(_, m)| m.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {p:?}"))
                .0
        };
        assert_eq!(at("auto_deploy.branch is empty"), 6);
        assert_eq!(at("auto_deploy needs a repository"), 6);
        assert_eq!(at("needs environments.staging.required_checks"), 6);
        assert_eq!(at("poll_seconds = 5 asks GitHub too often"), 6);

        // Unknown keys are the parser's, with their line.
        let text = "[github]\nrepository = \"a/b\"\n[environments.staging]\nauto_deploy = { branch = \"main\", brnch = \"x\" }\n";
        let e = parse_config("d.toml", text, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("d.toml:4:") && e.contains("brnch"), "{e}");
        let p = problems(
            "[github]\nrepository = \"a/b\"\n[environments.staging]\nrequired_checks = \"all\"\nauto_deploy = { branch = \"a..b\", poll_seconds = 0 }\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("not a git branch name"), "{p:?}");
    }

    #[test]
    fn a_repository_needs_a_token() {
        let c = parse_config(
            "t",
            "[github]\nrepository = \"acme/shop\"\n",
            &BTreeMap::new(),
        )
        .unwrap();
        let e = env_problem(&c, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("GITHUB_TOKEN"), "{e}");
        let env: BTreeMap<String, String> =
            [("GITHUB_TOKEN".to_string(), "ghp_x".to_string())].into();
        assert!(env_problem(&c, &env).is_ok());
        assert_eq!(c.repository_of("staging"), Some("acme/shop"));
    }
}
