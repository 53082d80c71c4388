//! `deckhand github check` against the fake GitHub: an App's installation permissions
//! compared with what the configured features need, a token's tried one read at a time,
//! and each missing one named with the feature that needs it.

use std::process::Output;

use serde_json::json;

use super::workflow::workflow_command;
use super::{SHA_OK, TOKEN, ws};
use crate::common::github::FakeGitHub;
use crate::common::github_app::{APP_ID, APP_KEY};
use crate::common::*;

/// `deckhand github check` with these variables: (exit code, stdout, stderr).
fn github_check(w: &Workspace, gh: &FakeGitHub, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = w.cmd(&["github", "check"]);
    c.env("GITHUB_API_URL", &gh.url);
    for (k, v) in env {
        c.env(k, v);
    }
    let out: Output = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`ws`] with `gha`, a deploy whose step is a workflow (Actions: write).
fn ws_with_workflow() -> Option<Workspace> {
    let w = ws(Backend::Sqlite)?;
    let text = workflow_command("gha", "deploy.yml", 30);
    std::fs::write(w.dir.path().join("commands/gha.toml"), text).unwrap();
    Some(w)
}

fn line<'a>(out: &'a str, part: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(part))
        .unwrap_or_else(|| panic!("no line with {part:?} in:\n{out}"))
}

#[test]
fn an_apps_permissions_are_compared_with_what_each_feature_needs() {
    let Some(w) = ws_with_workflow() else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    let app = [
        ("GITHUB_APP_ID", APP_ID),
        ("GITHUB_APP_PRIVATE_KEY", APP_KEY),
    ];
    gh.app(
        APP_KEY,
        &["acme/shop"],
        json!({"metadata": "read", "contents": "read", "checks": "read", "statuses": "read", "deployments": "write", "actions": "write"}),
    );
    let (code, out, err) = github_check(&w, &gh, &app);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("as the GitHub App 424242 (deckhand-acme)"),
        "{out}"
    );
    assert!(
        line(&out, "deployments: write")
            .trim_start()
            .starts_with("ok"),
        "{out}"
    );
    let actions = line(&out, "actions: write");
    assert!(
        actions.trim_start().starts_with("ok")
            && actions.contains("workflow steps of gha (production, staging)"),
        "{out}"
    );
    // staging gates on CI: checks and statuses are needed, and said why.
    let checks = line(&out, "checks: read");
    assert!(
        checks.trim_start().starts_with("ok") && checks.contains("CI gate (staging)"),
        "{out}"
    );
    assert!(out.ends_with("deckhand github check: ok\n"), "{out}");

    // Deployments granted read only: missing, named, and the exit code says so.
    gh.app(
        APP_KEY,
        &["acme/shop"],
        json!({"metadata": "read", "contents": "read", "checks": "read", "statuses": "read", "deployments": "read"}),
    );
    let (code, out, err) = github_check(&w, &gh, &app);
    assert_eq!(code, 2, "{out}{err}");
    let d = line(&out, "deployments: write");
    assert!(
        d.trim_start().starts_with("MISSING") && d.contains("(has: read)"),
        "{out}"
    );
    let a = line(&out, "actions: write");
    assert!(
        a.trim_start().starts_with("MISSING") && a.contains("(has: none)"),
        "{out}"
    );
    assert!(
        err.contains(
            "2 permission(s) missing: actions: write on acme/shop; deployments: write on acme/shop"
        ),
        "{err}"
    );

    // Not installed on the repository: said so, non-zero.
    gh.app(APP_KEY, &["acme/other"], json!({}));
    let (code, out, err) = github_check(&w, &gh, &app);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("the GitHub App 424242 is not installed on acme/shop"),
        "{out}"
    );
    for l in APP_KEY.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!out.contains(l) && !err.contains(l));
    }
}

#[test]
fn a_tokens_permissions_are_tried_and_refusals_named() {
    let Some(w) = ws_with_workflow() else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    let token = [("GITHUB_TOKEN", TOKEN)];
    gh.deny_token("checks");
    let (code, out, err) = github_check(&w, &gh, &token);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("as the token in GITHUB_TOKEN"), "{out}");
    assert!(
        line(&out, "contents: read").trim_start().starts_with("ok"),
        "{out}"
    );
    assert!(
        line(&out, "statuses: read").trim_start().starts_with("ok"),
        "{out}"
    );
    assert!(
        line(&out, "checks: read")
            .trim_start()
            .starts_with("MISSING"),
        "{out}"
    );
    // A write only a write would prove is not claimed either way.
    assert!(
        line(&out, "deployments: write")
            .trim_start()
            .starts_with("unknown"),
        "{out}"
    );
    assert!(
        line(&out, "actions: write")
            .trim_start()
            .starts_with("unknown"),
        "{out}"
    );
    assert!(err.contains("checks: read on acme/shop"), "{err}");

    // Bad credentials: a plain failure, never the token.
    gh.script(401, &[], json!({"message": "Bad credentials"}));
    let (code, out, err) = github_check(&w, &gh, &token);
    assert_ne!(code, 0);
    assert!(
        out.contains("GitHub refused the credentials (401)"),
        "{out}{err}"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    // No credentials at all.
    let (code, _, err) = github_check(&w, &gh, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no GitHub credentials are set"), "{err}");
}
