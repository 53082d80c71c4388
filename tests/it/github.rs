//! GitHub: versions are commits of the repository, resolved to full SHAs before anything
//! runs, deploys pass the CI gate (`required_checks`) and open GitHub Deployments with
//! their statuses — against a fake GitHub API. What a deploy changes, and deployments
//! through an outage: `github/deployments.rs`. Continuous delivery: `github/webhook.rs`
//! (signed webhooks) and `github/polling.rs` (without one). GitHub Actions as a step:
//! `github/workflow.rs`.

mod app;
mod cd;
mod check;
mod deployments;
mod polling;
mod webhook;
mod workflow;

use std::process::Output;

use crate::common::github::FakeGitHub;
use crate::common::*;

pub(crate) const TOKEN: &str = "ghp_fakeTOKENthatMustNeverLeak0123456789";
pub(crate) const SHA_OK: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub(crate) const SHA_BAD: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA_WAIT: &str = "3333333ccccccccccccccccccccccccccccccccc";
const SHA_WAIT_BAD: &str = "4444444ddddddddddddddddddddddddddddddddd";

/// Staging with `required_checks = ["test"]` (no health check; people open it at
/// `https://staging.example`), a `ship` deploy whose step records what it received (and
/// `broke`, whose step fails, and `slow`, whose step takes a minute),
/// `[github] repository = "acme/shop"`, and job pages under `https://deckhand.example`.
pub(crate) fn ws(b: Backend) -> Option<Workspace> {
    let ship = deploy_command(
        "ship",
        "everyone",
        r#"["sh", "-c", "echo \"$DECKHAND_VERSION $DECKHAND_COMMIT_SHA\" >> \"$DECKHAND_DATA_DIR/ran\""]"#,
    );
    // The stock rollback, with a step that records what it received.
    let rollback = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/commands/rollback.toml"
    ))
    .unwrap()
    .replace(
        r#"argv = ["deckhand", "demo", "deploy"]"#,
        r#"argv = ["sh", "-c", "echo \"rollback $DECKHAND_VERSION\" >> \"$DECKHAND_DATA_DIR/ran\""]"#,
    );
    let w = Workspace::new(
        b,
        "\n[github]\nrepository = \"acme/shop\"\n[ui]\npublic_url = \"https://deckhand.example\"\n",
        &[
            ("ship.toml", &ship),
            ("rollback.toml", &rollback),
            (
                "broke.toml",
                &deploy_command("broke", "everyone", r#"["false"]"#),
            ),
            (
                "slow.toml",
                &deploy_command("slow", "everyone", r#"["sh", "-c", "sleep 60"]"#),
            ),
        ],
    )?;
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let staging = format!(
        "[environments.staging]\nhealth_url = \"http://127.0.0.1:{}/health\"\nexpect_version = \"json:version\"\nhealth_timeout_seconds = 10\n",
        w.staging_port
    );
    assert!(text.contains(&staging));
    let text = text.replace(
        &staging,
        "[environments.staging]\nurl = \"https://staging.example\"\nrequired_checks = [\"test\"]\nci_poll_seconds = 1\nci_timeout_seconds = 60\n",
    );
    std::fs::write(w.config_path(), text).unwrap();
    std::fs::create_dir_all(w.data_dir()).unwrap();
    Some(w)
}

pub(crate) fn run(w: &Workspace, gh: &FakeGitHub, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    let out: Output = w
        .cmd(&a)
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &gh.url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `deckhand run ARGS…` asking `gh`, started with its output piped, not waited for.
pub(crate) fn spawn_run(w: &Workspace, gh: &FakeGitHub, args: &[&str]) -> std::process::Child {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    w.cmd(&a)
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &gh.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

pub(crate) fn ran(w: &Workspace) -> String {
    std::fs::read_to_string(w.data_dir().join("ran")).unwrap_or_default()
}

/// Everything the database holds, as text (SQLite: the files; PostgreSQL: a data dump).
pub(crate) fn database_text(w: &Workspace) -> String {
    if w.db.url.starts_with("sqlite://") {
        let db = w.db.url.trim_start_matches("sqlite://").to_owned();
        [db.clone(), format!("{db}-wal")]
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    } else {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", &w.db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn gate_refuses_failing_and_unknown_refs_and_deploys_passing(b: Backend) {
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    gh.commit(SHA_BAD, &["broken"]);
    gh.check_run(SHA_BAD, "test", "completed", Some("failure"));
    gh.check_run(SHA_BAD, "lint", "completed", Some("failure"));
    let mut seen = String::new();

    // An unknown ref: refused naming it and the repository; nothing ran.
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "nope123"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("nope123 is not a commit, branch or tag of acme/shop"),
        "{err}"
    );
    seen += &(out + &err);

    // A failing required check: refused naming `test` with its link; `lint` is not required.
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "broken"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("failed required checks: test (failure: https://github.example/acme/shop/runs/2222222-test)"),
        "{err}"
    );
    assert!(!err.contains("lint"), "{err}");
    assert_eq!(ran(&w), "", "no step may run");
    seen += &(out + &err);

    // Bad credentials: a plain refusal that never shows the token.
    gh.script(401, &[], serde_json::json!({"message": "Bad credentials"}));
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "main"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("GitHub refused the credentials (401)"),
        "{err}"
    );
    assert_eq!(ran(&w), "");
    seen += &(out + &err);

    // Only reads so far: no GitHub deployment or status for the refused deploys.
    let refused = gh.calls();
    assert!(refused.iter().all(|c| c.method == "GET"), "{refused:?}");

    // A rate limit with Retry-After is waited out; then the passing ref deploys with its SHA.
    gh.script(
        403,
        &[("retry-after", "1"), ("x-ratelimit-remaining", "0")],
        serde_json::json!({"message": "API rate limit exceeded"}),
    );
    let before = gh.calls_to("/commits/main");
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        gh.calls_to("/commits/main") - before,
        2,
        "asked again after the wait"
    );
    assert_eq!(ran(&w).trim(), format!("main {SHA_OK}"));
    seen += &(out + &err);

    // The emergency override (the operator holds admin here) covers the gate.
    let (code, out, err) = run(
        &w,
        &gh,
        &["ship", "staging", "broken", "--emergency", "INC-1 hotfix"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        ran(&w).contains(&format!("broken {SHA_BAD}")),
        "{}",
        ran(&w)
    );
    seen += &(out + &err);

    // The token went to GitHub in the header only, and nowhere else.
    let calls = gh.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.auth.as_deref() == Some(&format!("Bearer {TOKEN}")[..]))
    );
    assert!(
        !seen.contains(TOKEN),
        "the token leaked into output or logs"
    );
    let (_, audit, _) = run(&w, &gh, &["audit"]);
    assert!(!audit.contains(TOKEN));
    let db = database_text(&w);
    assert!(db.contains(SHA_OK), "the dump holds the jobs");
    assert!(!db.contains(TOKEN), "the token is in the database");
}
both!(
    gate_refuses_failing_and_unknown_refs_and_deploys_passing,
    gate_refuses_failing_and_unknown_refs_and_deploys_passing
);

/// The done-when line of issue 14: refused deploys (a failing `test`, an unknown ref)
/// start nothing and create no GitHub deployment; a passing ref deploys and creates ONE
/// deployment of its full SHA for `staging`, with `in_progress` then `success`.
async fn a_passing_deploy_opens_one_github_deployment_and_refusals_none(b: Backend) {
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    gh.commit(SHA_BAD, &["broken"]);
    gh.check_run(SHA_BAD, "test", "completed", Some("failure"));

    let (code, out, err) = run(&w, &gh, &["ship", "staging", "broken"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("failed required checks: test"), "{err}");
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "nope123"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("nope123 is not a commit"), "{err}");
    assert_eq!(ran(&w), "", "no step may start");
    assert!(gh.deployments().is_empty());
    assert!(gh.calls().iter().all(|c| c.method == "GET"));

    let (code, out, err) = run(&w, &gh, &["ship", "staging", "main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&w).trim(), format!("main {SHA_OK}"));
    let d = eventually(15, "the deployment's success status", || async {
        let d = gh.deployments();
        (d.len() == 1 && d[0].states().len() == 2).then(|| d[0].clone())
    })
    .await;
    assert_eq!(d.body["ref"], SHA_OK);
    assert_eq!(d.body["environment"], "staging");
    assert_eq!(d.body["auto_merge"], false);
    assert_eq!(d.body["required_contexts"], serde_json::json!([]));
    let job_id = d.body["payload"]["deckhand_job_id"].as_i64().unwrap();
    assert!(
        d.body["description"]
            .as_str()
            .unwrap()
            .contains("deploy main"),
        "{}",
        d.body
    );
    assert_eq!(d.states(), ["in_progress", "success"]);
    let success = &d.statuses[1].1;
    assert_eq!(success["environment_url"], "https://staging.example");
    assert_eq!(
        success["log_url"],
        format!("https://deckhand.example/jobs/{job_id}")
    );

    // The next deploy of the environment retires this one (GitHub's `auto_inactive`).
    let (code, out, err) = run(&w, &gh, &["ship", "staging", &SHA_OK[..7]]);
    assert_eq!(code, 0, "{out}{err}");
    gh.nth_deployment_succeeded(2, 15).await;
    assert_eq!(
        gh.deployments()[0].states(),
        ["in_progress", "success", "inactive"]
    );

    // A rollback opens one too, of the commit the version stood for when deployed.
    let (code, out, err) = run(&w, &gh, &["rollback", "staging", "main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&w).ends_with("rollback main\n"), "{}", ran(&w));
    let d = gh.nth_deployment_succeeded(3, 15).await;
    assert_eq!(d.body["ref"], SHA_OK);
    assert!(
        d.body["description"]
            .as_str()
            .unwrap()
            .contains("rollback to main"),
        "{}",
        d.body
    );
    assert_eq!(gh.deployments()[1].states().last().unwrap(), "inactive");
    assert!(
        gh.calls()
            .iter()
            .all(|c| !format!("{:?}", c.body).contains(TOKEN))
    );
    assert!(
        !database_text(&w).contains(TOKEN),
        "the token is in the database"
    );
}
both!(
    a_passing_deploy_opens_one_github_deployment_and_refusals_none,
    a_passing_deploy_opens_one_github_deployment_and_refusals_none
);

async fn pending_checks_are_waited_for(b: Backend) {
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_WAIT, &["wait"]);
    gh.check_run(SHA_WAIT, "test", "in_progress", None);
    gh.commit(SHA_WAIT_BAD, &["waitbad"]);
    gh.status(SHA_WAIT_BAD, "test", "pending");

    for (git_ref, sha, pass) in [("wait", SHA_WAIT, true), ("waitbad", SHA_WAIT_BAD, false)] {
        let child = spawn_run(&w, &gh, &["ship", "staging", git_ref]);
        let path = if pass { "check-runs" } else { "/status" };
        let at = format!("/commits/{sha}/");
        // Intake asks once; the job asks again (and says it waits) before anything runs.
        eventually(30, "the job to poll the checks", || async {
            (gh.calls()
                .iter()
                .filter(|c| c.path.contains(&at) && c.path.contains(path))
                .count()
                >= 3)
                .then_some(())
        })
        .await;
        assert!(!ran(&w).contains(sha), "ran before its checks finished");
        if pass {
            gh.check_run(sha, "test", "completed", Some("success"));
        } else {
            gh.status(sha, "test", "failure");
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let waiting = if pass {
            "waiting for CI: test (in progress)"
        } else {
            "waiting for CI: test (pending)"
        };
        assert!(stdout.contains(waiting), "{stdout}");
        assert_eq!(out.status.success(), pass, "{stdout}{stderr}");
        assert_eq!(ran(&w).contains(sha), pass, "{stdout}");
        if !pass {
            assert!(
                stdout.contains("did not start: refused by CI rule"),
                "{stdout}"
            );
        }
        assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    }
}
both!(pending_checks_are_waited_for, pending_checks_are_waited_for);

/// `deckhand check` with a token set: whether it passed, and all it printed.
fn check_config(w: &Workspace) -> (bool, String) {
    let out = w
        .cmd(&["check"])
        .env("GITHUB_TOKEN", TOKEN)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn check_validates_the_github_config() {
    let w = Workspace::new(Backend::Sqlite, "\n[github]\nrepository = \"acme\"\n", &[]).unwrap();
    let check = || {
        let (ok, all) = check_config(&w);
        assert!(!ok, "{all}");
        all
    };
    let all = check();
    assert!(all.contains("accepted: \"owner/name\""), "{all}");

    // An environment's url (the deployments' environment_url) must be a web address.
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let text = text
        .replace("repository = \"acme\"", "repository = \"acme/shop\"")
        .replace(
            "[environments.staging]\n",
            "[environments.staging]\nurl = \"staging.example\"\n",
        );
    std::fs::write(w.config_path(), text).unwrap();
    let all = check();
    assert!(
        all.contains("environments.staging.url must start with http:// or https://"),
        "{all}"
    );
}

/// `deckhand check` names each `auto_deploy` problem with its line: an empty branch, an
/// unknown key, a missing repository, a command that is not a deploy.
#[test]
fn check_validates_auto_deploy_with_line_numbers() {
    let w = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let base = std::fs::read_to_string(w.config_path()).unwrap();
    let check = |github: &str, auto: &str| {
        // Without a repository, `required_checks` would be the first problem reported.
        let checks = if github.is_empty() {
            ""
        } else {
            "required_checks = [\"test\"]\n"
        };
        let text = base.replace(
            "[environments.staging]\n",
            &format!("[environments.staging]\n{checks}auto_deploy = {auto}\n"),
        ) + github;
        std::fs::write(w.config_path(), &text).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("auto_deploy"))
            .unwrap()
            + 1;
        let (ok, all) = check_config(&w);
        (ok, line, all)
    };
    let repo = "\n[github]\nrepository = \"acme/shop\"\n";
    for (github, auto, says) in [
        (
            repo,
            r#"{ branch = "" }"#,
            "environments.staging.auto_deploy.branch is empty",
        ),
        (
            repo,
            r#"{ branch = "main", brnch = "x" }"#,
            "unknown field `brnch`",
        ),
        (
            "",
            r#"{ branch = "main" }"#,
            "environments.staging.auto_deploy needs a repository",
        ),
        (
            repo,
            r#"{ branch = "main", poll_seconds = 10 }"#,
            "poll_seconds = 10 asks GitHub too often",
        ),
    ] {
        let (ok, line, all) = check(github, auto);
        assert!(!ok, "{all}");
        assert!(
            all.contains(&format!("deckhand.toml:{line}: ")),
            "line {line}: {all}"
        );
        assert!(all.contains(says), "{all}");
    }
    let (ok, _, all) = check(repo, r#"{ branch = "main", command = "rollback" }"#);
    assert!(!ok, "{all}");
    assert!(
        all.contains("auto_deploy.command = \"rollback\" is not a deploy command"),
        "{all}"
    );
    let (ok, _, all) = check(repo, r#"{ branch = "release/2.x", poll_seconds = 0 }"#);
    assert!(ok, "{all}");
}
