//! `deckhand github check`: are the GitHub credentials good, and do they hold the
//! permissions each configured feature needs? One line per permission and repository,
//! saying which feature needs it; exits non-zero when any is missing.
//!
//! A GitHub App's installation lists its permissions, so they are compared exactly. A
//! token's cannot be listed (fine-grained tokens have no such endpoint): each read
//! permission is tried with a harmless `GET`, and a write permission that only a write
//! would prove is reported as not verified rather than guessed. A classic token's
//! `x-oauth-scopes` are read when GitHub sends them.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::exit;
use crate::config::Settings;
use crate::support::github::{GhError, GitHub};
use crate::support::github_app::GhAuth;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Read,
    Write,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
        }
    }
    fn parse(s: &str) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "write" | "admin" => Some(Level::Write),
            _ => None,
        }
    }
}

/// What one repository needs: permission → (level, the features that need it, each with
/// the environments it is configured on).
pub type Needs = BTreeMap<&'static str, (Level, Vec<(String, Vec<String>)>)>;

/// The permissions each repository needs for the features configured on its
/// environments.
pub fn needs(
    settings: &Settings,
    catalog: &crate::config::catalog::Catalog,
) -> BTreeMap<String, Needs> {
    let mut out: BTreeMap<String, Needs> = BTreeMap::new();
    let c = &settings.config;
    for (env, e) in &c.environments {
        let Some(repo) = c.repository_of(env) else {
            continue;
        };
        let n = out.entry(repo.to_owned()).or_default();
        let mut need = |perm: &'static str, level: Level, feature: String| {
            let entry = n.entry(perm).or_insert((level, Vec::new()));
            entry.0 = entry.0.max(level);
            match entry.1.iter_mut().find(|f| f.0 == feature) {
                Some(f) => f.1.push(env.clone()),
                None => entry.1.push((feature, vec![env.clone()])),
            }
        };
        need("contents", Level::Read, "versions are commits".into());
        need("deployments", Level::Write, "GitHub Deployments".into());
        if e.required_checks.is_some() || e.auto_deploy.is_some() {
            need("checks", Level::Read, "CI gate".into());
            need("statuses", Level::Read, "CI gate".into());
        }
        if let Some(a) = &e.auto_deploy {
            need(
                "contents",
                Level::Read,
                format!("auto_deploy of {}", a.branch),
            );
        }
        for cmd in workflow_commands(catalog, env) {
            need("actions", Level::Write, format!("workflow steps of {cmd}"));
        }
    }
    out
}

/// The commands with a `workflow` step that may run on `env`.
fn workflow_commands<'a>(catalog: &'a crate::config::catalog::Catalog, env: &str) -> Vec<&'a str> {
    catalog
        .commands
        .values()
        .filter(|c| c.steps.iter().any(|s| s.workflow.is_some()))
        .filter(|c| c.env_arg().is_some() && c.role_for(Some(env)).is_some())
        .map(|c| c.name.as_str())
        .collect()
}

/// One permission's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// Granted below what is needed (or not at all): what there is.
    Missing(String),
    /// Read was proven; the write it needs cannot be without writing.
    Unverified,
}

pub(super) async fn check(settings: Settings) -> anyhow::Result<i32> {
    let catalog =
        crate::config::catalog::Catalog::load(settings.commands_dir().as_deref(), &settings.config)
            .map_err(|p| {
                anyhow::anyhow!(
                    "the commands have {} problem(s); run `deckhand check`",
                    p.len()
                )
            })?;
    let auth = match crate::app::github_auth(&settings)? {
        Some(a) => a,
        None => {
            eprintln!(
                "no GitHub credentials are set: set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY"
            );
            return Ok(exit::REFUSED);
        }
    };
    let needs = needs(&settings, &catalog);
    if needs.is_empty() {
        eprintln!("no GitHub repository is configured: set [github] repository = \"owner/name\"");
        return Ok(exit::REFUSED);
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("deckhand/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let g = &settings.config.github;
    let gh = GitHub {
        http: &http,
        api_url: &settings.github_api_url,
        auth: &auth,
        timeout: Duration::from_secs(g.timeout_seconds),
        max_wait: Duration::from_secs(g.max_rate_limit_wait_seconds),
    };
    let who = match &auth {
        GhAuth::Token(_) => "the token in GITHUB_TOKEN".to_owned(),
        GhAuth::App(app) => match app.as_app(&gh, Method::GET, "/app").await {
            Ok(v) => format!(
                "the GitHub App {} ({})",
                app.id,
                crate::domain::text::shorten(v["slug"].as_str().unwrap_or("?"))
            ),
            Err(e) => {
                eprintln!("deckhand github check: {e}");
                return Ok(exit::REFUSED);
            }
        },
    };
    outln!("GitHub at {}, as {who}", settings.github_api_url);
    let mut missing = Vec::new();
    let mut failed = false;
    for (repo, needs) in &needs {
        outln!("{repo}:");
        let verdicts = match &auth {
            GhAuth::App(app) => app_verdicts(&gh, app, repo, needs).await,
            GhAuth::Token(_) => token_verdicts(&gh, repo, needs).await,
        };
        let verdicts = match verdicts {
            Ok(v) => v,
            Err(e) => {
                outln!("  FAILED   {e}");
                failed = true;
                continue;
            }
        };
        for (perm, (level, features)) in needs {
            let v = verdicts
                .get(perm)
                .cloned()
                .unwrap_or(Verdict::Missing("none".into()));
            let (mark, note) = match &v {
                Verdict::Ok => ("ok", String::new()),
                Verdict::Missing(has) => {
                    missing.push(format!("{perm}: {} on {repo}", level.as_str()));
                    ("MISSING", format!(" (has: {has})"))
                }
                Verdict::Unverified => (
                    "unknown",
                    " (read works; a token's write permission shows only when used)".to_owned(),
                ),
            };
            outln!(
                "  {mark:<8} {perm}: {}{note} — {}",
                level.as_str(),
                features
                    .iter()
                    .map(|(f, envs)| format!("{f} ({})", envs.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    webhook_advice(&settings);
    if failed {
        eprintln!("deckhand github check: GitHub could not be asked about every repository");
        return Ok(exit::REFUSED);
    }
    if !missing.is_empty() {
        eprintln!(
            "deckhand github check: {} permission(s) missing: {}",
            missing.len(),
            missing.join("; ")
        );
        return Ok(exit::REFUSED);
    }
    outln!("deckhand github check: ok");
    Ok(exit::OK)
}

/// An App's installation lists what it was granted: compare.
async fn app_verdicts(
    gh: &GitHub<'_>,
    app: &crate::support::github_app::GitHubApp,
    repo: &str,
    needs: &Needs,
) -> Result<BTreeMap<&'static str, Verdict>, GhError> {
    let (_, inst) = app.look_up_installation(gh, repo).await?;
    // And the installation token really is minted and works.
    gh.get(&format!("/repos/{repo}")).await?;
    Ok(needs
        .iter()
        .map(|(perm, (level, _))| {
            let has = inst["permissions"][*perm].as_str().unwrap_or("none");
            let v = if Level::parse(has).is_some_and(|h| h >= *level) {
                Verdict::Ok
            } else {
                Verdict::Missing(has.to_owned())
            };
            (*perm, v)
        })
        .collect())
}

/// A token's permissions, tried: each read with a harmless `GET`; classic tokens by
/// their scopes.
async fn token_verdicts(
    gh: &GitHub<'_>,
    repo: &str,
    needs: &Needs,
) -> Result<BTreeMap<&'static str, Verdict>, GhError> {
    let res = send(gh, &format!("/repos/{repo}")).await?;
    match res.status().as_u16() {
        200 => {}
        401 => return Err(GhError::Failed(gh.refused(&format!("/repos/{repo}")).await)),
        404 => {
            return Err(GhError::Failed(format!(
                "the token cannot see {repo}: give it access to the repository (Repository access → Only select repositories)"
            )));
        }
        s => return Err(GhError::Failed(format!("GitHub answered {s} for {repo}"))),
    }
    if let Some(scopes) = res
        .headers()
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
    {
        let repo_scope = scopes.split(',').any(|s| s.trim() == "repo");
        return Ok(needs
            .keys()
            .map(|p| {
                let v = if repo_scope {
                    Verdict::Ok
                } else {
                    Verdict::Missing(format!("classic token scopes: {scopes:?}, needs repo"))
                };
                (*p, v)
            })
            .collect());
    }
    // Contents: read is the commit list itself; its newest commit is what the checks and
    // statuses are tried on.
    let commits = format!("/repos/{repo}/commits?per_page=1");
    let listed = send(gh, &commits).await?;
    let contents = judged(gh, &commits, listed.status().as_u16(), Level::Read).await?;
    let head = match contents {
        Verdict::Ok => listed
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v[0]["sha"].as_str().map(str::to_owned)),
        _ => None,
    };
    let mut out = BTreeMap::from([("contents", contents)]);
    for (perm, (level, _)) in needs {
        let path = match (*perm, &head) {
            ("contents", _) => continue,
            ("checks", Some(sha)) => format!("/repos/{repo}/commits/{sha}/check-runs?per_page=1"),
            ("statuses", Some(sha)) => format!("/repos/{repo}/commits/{sha}/status"),
            ("deployments", _) => format!("/repos/{repo}/deployments?per_page=1"),
            ("actions", _) => format!("/repos/{repo}/actions/workflows?per_page=1"),
            _ => {
                out.insert(
                    *perm,
                    Verdict::Missing("not tried: the repository has no commit to try it on".into()),
                );
                continue;
            }
        };
        let status = send(gh, &path).await?.status().as_u16();
        out.insert(*perm, judged(gh, &path, status, *level).await?);
    }
    Ok(out)
}

/// What GitHub's answer `status` to a `GET` of `path` says of a permission at `level`.
async fn judged(
    gh: &GitHub<'_>,
    path: &str,
    status: u16,
    level: Level,
) -> Result<Verdict, GhError> {
    Ok(match status {
        200..=299 if level == Level::Write => Verdict::Unverified,
        200..=299 => Verdict::Ok,
        403 | 404 => Verdict::Missing("none".into()),
        401 => return Err(GhError::Failed(gh.refused(path).await)),
        s => return Err(GhError::Failed(format!("GitHub answered {s}"))),
    })
}

async fn send(gh: &GitHub<'_>, path: &str) -> Result<reqwest::Response, GhError> {
    let res = gh
        .request(Method::GET, path)
        .await?
        .send()
        .await
        .map_err(|e| GhError::Failed(format!("GitHub: {}", crate::support::net::net_reason(&e))))?;
    if let Some(w) = crate::support::github::rate_limit_wait(res.status().as_u16(), res.headers()) {
        return Err(GhError::RateLimited(w));
    }
    Ok(res)
}

/// What the webhook needs, when an environment auto-deploys.
fn webhook_advice(settings: &Settings) {
    let auto: Vec<String> = settings
        .config
        .auto_deploys()
        .map(|(env, a)| format!("{env} follows {}", a.branch))
        .collect();
    if auto.is_empty() {
        return;
    }
    let url = settings
        .config
        .ui
        .base_url()
        .map(|u| format!("{u}/github/webhook"))
        .unwrap_or_else(|| "https://<your deckhand>/github/webhook".into());
    if settings.secrets.github_webhook_secret.is_some() {
        outln!(
            "webhook: GITHUB_WEBHOOK_SECRET is set; GitHub must send check_suite and status events to {url} ({})",
            auto.join(", ")
        );
    } else {
        outln!(
            "webhook: GITHUB_WEBHOOK_SECRET is not set, so {} learn of new commits by polling only (at most once a minute)",
            auto.join(", ")
        );
    }
}
