//! The status pages in headless Chromium (DevTools protocol, see `common::browser`): the
//! overview after a deploy, a running job's log arriving live, hostile text staying text,
//! and no console errors (CSP violations included) anywhere. Screenshots go to
//! `target/ui-screenshots/`; their paths are printed.

use crate::common::browser::Browser;
use crate::common::*;
use crate::ui::{INJECT, SECRET, pages, seed_hostile, with_secret};

/// After `deckhand run deploy staging abc1234`, `/` shows staging running abc1234,
/// verified, with its health, and production its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_what_runs_where() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let server = Server::start(&ws, &[]);
    let (code, out, err) = ws.run(&["deploy", "staging", "abc1234"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut tab = browser.tab().await;
    tab.goto(&server.url("/")).await;
    let card = |env: &str| format!("document.querySelector('[data-env={env}]').innerText");
    let staging = tab.eval(&card("staging")).await;
    let staging = staging.as_str().unwrap();
    for want in ["abc1234", "verified", "returning 200"] {
        assert!(
            staging.contains(want),
            "staging card lacks {want:?}:\n{staging}"
        );
    }
    let version = tab
        .eval("document.querySelector('[data-env=staging] code.version').textContent")
        .await;
    assert_eq!(version, "abc1234");
    let production = tab.eval(&card("production")).await;
    let production = production.as_str().unwrap();
    assert!(
        production.contains("nothing deployed yet") && !production.contains("abc1234"),
        "{production}"
    );
    let shot = tab.screenshot("overview").await;
    println!("screenshot of / after the deploy: {}", shot.display());
    let small = tab.screenshot_clip("overview-small", 1200, 570, 0.7).await;
    println!(
        "the same, smaller (docs/status-page.png is one): {}",
        small.display()
    );
    tab.settle(300).await;
    assert!(tab.problems.is_empty(), "console: {:#?}", tab.problems);
    // The watcher sees problems, and the CSP stops an inline script the page did not sign.
    tab.eval(
        "const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.appendChild(s)",
    )
    .await;
    tab.settle(300).await;
    assert_eq!(tab.eval("window.__ran === undefined").await, true);
    assert!(
        tab.problems
            .iter()
            .any(|p| p.contains("Content Security Policy")),
        "the CSP violation is reported: {:#?}",
        tab.problems
    );
}

/// A custom command with two slow steps.
const SLOW: &str = r#"name = "slow"
description = "Prints a line every half second"
kind = "custom"
[[args]]
name = "environment"
kind = "environment"
[roles]
"*" = "everyone"
[[steps]]
name = "warm up"
argv = ["sh", "-c", "for i in 1 2 3; do echo tick-$i; sleep 0.5; done"]
[[steps]]
name = "finish"
argv = ["sh", "-c", "for i in 4 5 6; do echo tick-$i; sleep 0.5; done; echo done >&2"]
"#;

/// A running job's page shows new lines as they are written, with the step boundaries,
/// and the final report when the job ends, all without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_shows_the_log_live() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let ws = Workspace::new(Backend::Sqlite, "", &[("slow.toml", SLOW)]).unwrap();
    let server = Server::start(&ws, &[]);
    let app = ws.app(&[]).await;
    let mut run = ws
        .cmd(&["run", "slow", "staging"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let job = eventually(20, "the job", || async {
        app.db.recent_jobs(1).await.unwrap().first().map(|j| j.id)
    })
    .await;
    wait_state(&app, job, "running").await;
    let mut tab = browser.tab().await;
    tab.goto(&server.url(&format!("/jobs/{job}"))).await;
    let first = tab.eval("document.getElementById('log').innerText").await;
    let first = first.as_str().unwrap().to_owned();
    assert!(
        !first.contains("tick-6"),
        "the job should still be running: {first}"
    );
    assert_eq!(
        tab.eval("document.getElementById('report').innerText")
            .await,
        ""
    );
    // A mark that a reload would wipe.
    tab.eval("window.__samePage = 'yes'").await;
    tab.wait_for(
        "document.getElementById('log').innerText.includes('tick-6')",
        30,
    )
    .await;
    tab.wait_for(
        "document.getElementById('report').innerText.includes('slow')",
        30,
    )
    .await;
    assert_eq!(
        tab.eval("window.__samePage").await,
        "yes",
        "the page was reloaded"
    );
    let log = tab.eval("document.getElementById('log').innerText").await;
    let log = log.as_str().unwrap();
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("{s:?} not in {log}"));
    assert!(at("▶ warm up") < at("tick-1") && at("tick-3") < at("▶ finish"));
    assert!(at("▶ finish") < at("tick-4") && at("tick-6") < at("done"));
    assert_eq!(log.matches("tick-").count(), 6, "each line once: {log}");
    let state = tab.eval("document.getElementById('state').innerText").await;
    assert_eq!(state, "succeeded");
    assert_eq!(
        tab.eval("document.getElementById('count').textContent")
            .await,
        "7"
    );
    let shot = tab.screenshot("job-live").await;
    println!(
        "screenshot of the job page after its live log: {}",
        shot.display()
    );
    tab.settle(300).await;
    assert!(tab.problems.is_empty(), "console: {:#?}", tab.problems);
    assert!(run.wait().unwrap().success());
}

/// Hostile text in a version, a lock reason, a log line, an incident and the audit log is
/// shown as text on every page: no script runs, no dialog opens, no CSP violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_stays_text_in_the_browser() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    with_secret(&ws);
    let env = [("UI_TEST_SECRET", SECRET)];
    let server = Server::start(&ws, &env);
    assert_eq!(ws.run(&["lock", "staging", INJECT]).0, 0);
    let app = ws.app(&env).await;
    let job = seed_hostile(&app).await;
    let mut tab = browser.tab().await;
    for path in pages(job) {
        tab.goto(&server.url(&path)).await;
        let text = tab.text().await;
        assert!(
            text.contains("<script>alert(1)</script>") && text.contains("<!channel>"),
            "{path} does not show the text as text:\n{text}"
        );
        assert!(!text.contains(SECRET), "{path} shows the secret");
        let scripts = tab
            .eval(
                "[...document.scripts].filter(s => s.getAttribute('src') !== '/ui/app.js').length",
            )
            .await;
        assert_eq!(scripts, 0, "{path} has a script element of the text");
    }
    tab.settle(300).await;
    assert!(tab.dialogs.is_empty(), "a script ran: {:?}", tab.dialogs);
    assert!(tab.problems.is_empty(), "console: {:#?}", tab.problems);
}
