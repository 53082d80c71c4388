//! No untested deployments: with GitHub configured for the environment, a deploy's version
//! must be a commit of the repository (resolved to its full SHA before anything runs) and
//! its required checks must not have failed. Checks still running are waited for by the
//! job (`jobs::ci`); the emergency override (admin + reason) skips the gate.

use std::collections::BTreeSet;

use crate::app::App;
use crate::config::EnvironmentConfig;
use crate::support::github::{Gate, GhError, describe_checks, gate};

/// The full SHA of `version` when GitHub is configured for `env` (`Ok(None)` when it is
/// not), or the refusal.
pub(super) async fn check_commit(
    app: &App,
    env: &str,
    env_cfg: &EnvironmentConfig,
    version: &str,
    emergency: Option<&str>,
    held: &BTreeSet<String>,
) -> anyhow::Result<Result<Option<String>, String>> {
    let Some((gh, repo)) = app.github(env) else {
        return Ok(Ok(None));
    };
    let shown = crate::domain::text::shorten(version);
    let commit = match gh.commit(&repo, version).await {
        Ok(c) => c,
        Err(GhError::NotFound) => {
            return Ok(Err(format!(
                "refused by commit rule: {shown} is not a commit, branch or tag of {repo}; accepted: a SHA (7 or more hex digits), branch or tag that exists in {repo}"
            )));
        }
        Err(e) => {
            return Ok(Err(format!(
                "refused: cannot resolve {shown} in {repo}: {e}; nothing was run"
            )));
        }
    };
    // A version written as a SHA must be that commit, not a branch or tag named like one.
    let hex = (7..=40).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && !commit.sha.starts_with(&version.to_ascii_lowercase()) {
        return Ok(Err(format!(
            "refused by commit rule: {shown} names a branch or tag of {repo} (commit {}), not the commit with that prefix; deploy it by its full SHA",
            &commit.sha[..7]
        )));
    }
    let Some(rc) = &env_cfg.required_checks else {
        return Ok(Ok(Some(commit.sha)));
    };
    if let Some(reason) = emergency {
        return Ok(crate::intake::policy::check_emergency(reason, held).map(|_| Some(commit.sha)));
    }
    let checks = match gh.checks(&repo, &commit.sha).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(format!(
                "refused: cannot read the checks of {shown} in {repo}: {e}; nothing was run"
            )));
        }
    };
    match gate(rc.all(), rc.names(), &checks) {
        Gate::Failed(f) => Ok(Err(format!(
            "refused by CI rule: {shown} ({}) failed required checks: {}. Fix them and deploy a passing commit, or, in an emergency, an admin can add --emergency \"reason\"",
            &commit.sha[..7],
            describe_checks(&f, true)
        ))),
        // Pending: the job waits for them before its first step.
        Gate::Passed | Gate::Pending(_) => Ok(Ok(Some(commit.sha))),
    }
}
