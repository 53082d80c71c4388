//! Continuous delivery's setup, shared by the webhook and polling tests: staging (with
//! `required_checks = ["test"]`) auto-deploys `main` of acme/shop with the `ship` command,
//! and signed webhook requests as GitHub sends them.

use serde_json::{Value, json};

use super::{TOKEN, ws};
use crate::common::github::FakeGitHub;
use crate::common::*;

pub(crate) const SECRET: &str = "whsec_fakeSECRETthatMustNeverLeak9876543210";

/// [`ws`] with `auto_deploy = { branch = "main", command = "ship", poll_seconds = … }` on
/// staging.
pub(crate) fn cd_ws(b: Backend, poll_seconds: u64) -> Option<Workspace> {
    let w = ws(b)?;
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let checks = "required_checks = [\"test\"]\n";
    assert!(text.contains(checks));
    let text = text.replace(
        checks,
        &format!(
            "{checks}auto_deploy = {{ branch = \"main\", command = \"ship\", poll_seconds = {poll_seconds} }}\n"
        ),
    );
    std::fs::write(w.config_path(), text).unwrap();
    Some(w)
}

/// A `deckhand serve` of `w` asking `gh`, with the webhook secret when `secret`.
pub(crate) fn serve(
    w: &Workspace,
    gh: &FakeGitHub,
    secret: bool,
    extra: &[(&str, &str)],
) -> Server {
    let mut env = vec![("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url.as_str())];
    if secret {
        env.push(("GITHUB_WEBHOOK_SECRET", SECRET));
    }
    env.extend_from_slice(extra);
    Server::start(w, &env)
}

/// An App on `w`'s database, asking `gh`.
pub(crate) async fn app(w: &Workspace, gh: &FakeGitHub) -> std::sync::Arc<deckhand::app::App> {
    w.app(&[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", &gh.url)])
        .await
}

/// A fresh delivery id, shaped like GitHub's GUIDs.
pub(crate) fn delivery() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub(crate) fn sign(body: &[u8]) -> String {
    deckhand::support::github_webhook::signature(SECRET.as_bytes(), body)
}

/// POST to `/github/webhook` with these headers (`None`: left out): (status, body).
pub(crate) async fn post(
    server: &Server,
    event: Option<&str>,
    delivery: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(server.url("/github/webhook"))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/test")
        .timeout(std::time::Duration::from_secs(20))
        .body(body.to_vec());
    for (k, v) in [
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", signature),
    ] {
        if let Some(v) = v {
            r = r.header(k, v);
        }
    }
    let res = r.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A correctly signed delivery of `payload` as `event`: (status, body).
pub(crate) async fn deliver(
    server: &Server,
    event: &str,
    id: &str,
    payload: &Value,
) -> (u16, String) {
    let body = payload.to_string();
    post(
        server,
        Some(event),
        Some(id),
        Some(&sign(body.as_bytes())),
        body.as_bytes(),
    )
    .await
}

fn repository() -> Value {
    json!({"id": 1296269, "name": "shop", "full_name": "acme/shop", "private": true})
}

/// `check_suite` `completed` on `branch` at `sha`, sent by `sender`.
pub(crate) fn check_suite(sha: &str, branch: &str, sender: &str, conclusion: &str) -> Value {
    json!({
        "action": "completed",
        "check_suite": {"id": 5, "head_branch": branch, "head_sha": sha, "status": "completed",
            "conclusion": conclusion, "app": {"slug": "github-actions"}},
        "repository": repository(),
        "sender": {"login": sender, "type": "User"}
    })
}

/// `push` of `sha` to `branch` by `pusher`.
pub(crate) fn push(sha: &str, branch: &str, pusher: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000001",
        "after": sha,
        "repository": repository(),
        "pusher": {"name": pusher, "email": format!("{pusher}@example.com")},
        "sender": {"login": pusher},
        "head_commit": {"id": sha, "message": "Fix the thing"}
    })
}

/// The jobs of `app`'s database, oldest first.
pub(crate) async fn jobs(app: &deckhand::app::App) -> Vec<deckhand::store::jobs::JobRow> {
    let mut j = app.db.recent_jobs(100).await.unwrap();
    j.reverse();
    j
}
