//! GitHub App credentials (`GITHUB_APP_ID`, `GITHUB_APP_PRIVATE_KEY`) against the fake
//! GitHub, which checks the App's JWT as GitHub does and refuses any call without a live
//! installation token: deploys mint one, mint again when it nears its expiry or is
//! refused, and neither the key, the JWTs nor the tokens appear anywhere but in the
//! `Authorization` header.

use std::process::Output;
use std::time::Duration;

use serde_json::json;

use super::{SHA_OK, database_text, ran, ws};
use crate::common::github::FakeGitHub;
use crate::common::github_app::{APP_ID, APP_KEY, INSTALLATION};
use crate::common::*;

/// `deckhand ARGS` as the App, with `RUST_LOG=trace`: (exit code, stdout + stderr).
fn as_app(w: &Workspace, gh: &FakeGitHub, app_id: &str, key: &str, args: &[&str]) -> (i32, String) {
    let out: Output = w
        .cmd(args)
        .env("GITHUB_APP_ID", app_id)
        .env("GITHUB_APP_PRIVATE_KEY", key)
        .env("GITHUB_API_URL", &gh.url)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn permissions() -> serde_json::Value {
    json!({"metadata": "read", "contents": "read", "checks": "read", "statuses": "read", "deployments": "write", "actions": "write"})
}

/// A deploy whose step takes three seconds, so a token minted to last 5 min 2 s (renewed
/// 5 min before its end) must be minted again before the deploy's last calls; the step
/// is given the App's key and prints it, as a careless script would.
fn nap_command() -> String {
    deploy_command(
        "nap",
        "everyone",
        r#"["sh", "-c", "sleep 3; echo \"$GITHUB_APP_PRIVATE_KEY\"; echo \"nap $DECKHAND_COMMIT_SHA\" >> \"$DECKHAND_DATA_DIR/ran\""]"#,
    ) + "pass_env = [\"GITHUB_APP_PRIVATE_KEY\"]\n"
}

async fn an_app_deploys_with_minted_tokens_that_never_leak(b: Backend) {
    let Some(w) = ws(b) else { return };
    std::fs::write(w.dir.path().join("commands/nap.toml"), nap_command()).unwrap();
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    gh.app(APP_KEY, &["acme/shop"], permissions());
    let mut seen = String::new();

    // The first repository call is refused as a revoked token would be: Deckhand mints a
    // new one and asks again, and the deploy goes through.
    gh.script(401, &[], json!({"message": "Bad credentials"}));
    let (code, out) = as_app(
        &w,
        &gh,
        APP_ID,
        APP_KEY,
        &["run", "ship", "staging", "main"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(ran(&w).trim(), format!("main {SHA_OK}"));
    assert_eq!(gh.minted().len(), 2, "minted again after the 401");
    let d = gh.nth_deployment_succeeded(1, 30).await;
    assert_eq!(d.body["ref"], SHA_OK);
    seen += &out;

    // A token about to expire is minted again before it does.
    gh.app_token_ttl(Duration::from_secs(5 * 60 + 2));
    let before = gh.minted().len();
    let (code, out) = as_app(&w, &gh, APP_ID, APP_KEY, &["run", "nap", "staging", "main"]);
    assert_eq!(code, 0, "{out}");
    assert!(ran(&w).contains(&format!("nap {SHA_OK}")), "{}", ran(&w));
    let d = gh.nth_deployment_succeeded(2, 30).await;
    let calls = gh.calls();
    assert!(
        gh.minted().len() - before >= 2,
        "renewed during the deploy: {:?}",
        gh.minted()
    );
    seen += &out;

    // JWTs went to the App's routes only, installation tokens everywhere else, and apart
    // from the one scripted refusal nothing was answered 401.
    let mut jwts = Vec::new();
    for c in &calls {
        let bearer = c
            .auth
            .as_deref()
            .unwrap_or("")
            .trim_start_matches("Bearer ");
        let app_route = c.path.starts_with("/app/") || c.path.ends_with("/installation");
        if app_route {
            assert!(bearer.starts_with("eyJ"), "{c:?}");
            jwts.push(bearer.to_owned());
        } else {
            assert!(bearer.starts_with("ghs_"), "{c:?}");
        }
    }
    assert_eq!(
        calls.iter().filter(|c| c.status == 401).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.path.ends_with("/installation"))
            .count(),
        3,
        "the installation is asked once per process, and again after the refusal"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path == format!("/app/installations/{INSTALLATION}/access_tokens"))
    );

    // The key (any line of it), the JWTs and the tokens are nowhere: not in output or
    // logs at trace level, the audit log, the job log, or the database.
    let job = d.body["payload"]["deckhand_job_id"].to_string();
    seen += &as_app(&w, &gh, APP_ID, APP_KEY, &["audit"]).1;
    let log = as_app(&w, &gh, APP_ID, APP_KEY, &["logs", &job]).1;
    assert!(
        log.contains("[redacted]"),
        "the step printed the key: {log}"
    );
    seen += &log;
    seen += &database_text(&w);
    let key_lines: Vec<&str> = APP_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(key_lines.len() > 20);
    for l in key_lines {
        assert!(!seen.contains(l), "a line of the App key leaked: {l}");
    }
    for t in gh.minted().iter().chain(&jwts) {
        assert!(!seen.contains(t.as_str()), "a token leaked: {t}");
    }
    assert!(
        seen.contains("minted a GitHub App installation token"),
        "{seen}"
    );
}
both!(
    an_app_deploys_with_minted_tokens_that_never_leak,
    an_app_deploys_with_minted_tokens_that_never_leak
);

/// Wrong or half credentials are plain refusals that name what to fix, never the key.
#[test]
fn bad_app_credentials_are_refused_naming_what_to_fix() {
    let Some(w) = ws(Backend::Sqlite) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    gh.app(APP_KEY, &["acme/shop"], permissions());
    let key_line = APP_KEY.lines().nth(5).unwrap();

    // Another App's id: GitHub refuses the JWT.
    let (code, out) = as_app(&w, &gh, "999", APP_KEY, &["run", "ship", "staging", "main"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("GitHub refused the App's JWT (401): check GITHUB_APP_ID (999)"),
        "{out}"
    );

    // Installed elsewhere only.
    gh.app(APP_KEY, &["acme/other"], permissions());
    let (code, out2) = as_app(
        &w,
        &gh,
        APP_ID,
        APP_KEY,
        &["run", "ship", "staging", "main"],
    );
    assert_ne!(code, 0, "{out2}");
    assert!(
        out2.contains("the GitHub App 424242 is not installed on acme/shop"),
        "{out2}"
    );
    assert_eq!(ran(&w), "", "nothing ran");
    assert!(gh.deployments().is_empty());

    // A key that is not one, and half an App: `deckhand check` and the start say so.
    let garbled = APP_KEY.replace(key_line, "not base64 at all!");
    let (code, out3) = as_app(&w, &gh, APP_ID, &garbled, &["check"]);
    assert_ne!(code, 0, "{out3}");
    assert!(
        out3.contains("GITHUB_APP_PRIVATE_KEY is not a PEM RSA private key"),
        "{out3}"
    );
    let (code, out4) = as_app(
        &w,
        &gh,
        APP_ID,
        &garbled,
        &["run", "ship", "staging", "main"],
    );
    assert_ne!(code, 0, "{out4}");
    assert!(out4.contains("GITHUB_APP_PRIVATE_KEY"), "{out4}");
    let out5 = w
        .cmd(&["check"])
        .env("GITHUB_APP_ID", APP_ID)
        .env("GITHUB_TOKEN", "ghp_x")
        .output()
        .unwrap();
    let out5 =
        String::from_utf8_lossy(&out5.stderr).into_owned() + &String::from_utf8_lossy(&out5.stdout);
    assert!(out5.contains("set only one"), "{out5}");
    for o in [&out, &out2, &out3, &out4, &out5] {
        assert!(!o.contains(key_line) && !o.contains("ghp_x"), "{o}");
        for l in APP_KEY.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!o.contains(l), "{o}");
        }
    }
}
