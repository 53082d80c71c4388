//! GitHub Deployments through an outage, and what a deploy changes (the compare list) on
//! the approval request and the report, escaped for each platform.

use serde_json::Value;

use super::{SHA_OK, TOKEN, database_text, ran, run, ws};
use crate::common::chat::{Chat, click, slash};
use crate::common::github::FakeGitHub;
use crate::common::*;
use deckhand::store::jobs::state;

const SHA_NEW: &str = "5555555eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
const HOSTILE: &str = "Fix <!channel> *bold* [x](http://evil.example) @everyone (#42)";

/// GitHub answering 502 to every deployment create for a while delays the deployment but
/// not the deploy: the job succeeds meanwhile; the deployment and its statuses arrive, in
/// order, once the fake recovers; the outbox keeps no token.
async fn a_github_outage_delays_the_deployment_but_not_the_deploy(b: Backend) {
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let server = Server::start(&w, &[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", &gh.url)]);
    gh.fail_creates(usize::MAX);

    // `deckhand run` follows the job the server runs.
    let (code, out, err) = run(&w, &gh, &["ship", "staging", "main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Deployed main to staging"), "{out}");
    assert_eq!(ran(&w).trim(), format!("main {SHA_OK}"));
    assert!(gh.deployments().is_empty(), "GitHub was down all along");
    let refused = gh.calls_to("/deployments");
    assert!(refused >= 1, "the create was tried during the deploy");

    gh.fail_creates(0);
    let d = eventually(60, "the deployment after the outage", || async {
        let d = gh.deployments();
        (d.len() == 1 && d[0].states().len() == 2).then(|| d[0].clone())
    })
    .await;
    assert_eq!(d.body["ref"], SHA_OK);
    assert_eq!(d.states(), ["in_progress", "success"]);
    // In order: every create before the statuses; one deployment, however many tries.
    let posts: Vec<String> = gh
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .map(|c| c.path)
        .collect();
    let first_status = posts.iter().position(|p| p.ends_with("/statuses")).unwrap();
    assert!(
        posts[..first_status]
            .iter()
            .all(|p| p.ends_with("/deployments"))
    );
    assert!(
        first_status >= 2,
        "a refused create, then the one that took: {posts:?}"
    );

    let app = w.app(&[("GITHUB_TOKEN", TOKEN)]).await;
    let job_id = d.body["payload"]["deckhand_job_id"].as_i64().unwrap();
    let rows = app.db.job_notices(job_id, "github", 0).await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.delivered_at.is_some()));
    assert!(rows[0].attempts >= 1 && rows[0].last_error.as_deref().unwrap().contains("502"));
    assert!(
        rows.iter()
            .all(|r| !r.body.contains(TOKEN)
                && !r.last_error.as_deref().unwrap_or("").contains(TOKEN))
    );
    assert!(!database_text(&w).contains(TOKEN));
    assert!(
        !server.output().contains(TOKEN),
        "the token is in the server's log"
    );
}
both!(
    a_github_outage_delays_the_deployment_but_not_the_deploy,
    a_github_outage_delays_the_deployment_but_not_the_deploy
);

/// A deploy whose step fails ends its GitHub deployment with `failure`; one whose
/// process dies mid-step is found interrupted after a restart and ends with `error`.
async fn failed_and_interrupted_deploys_end_their_deployments(b: Backend) {
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let (code, out, err) = run(&w, &gh, &["broke", "staging", "main"]);
    assert_ne!(code, 0, "{out}{err}");
    eventually(15, "the failure status", || async {
        let d = gh.deployments();
        (d.len() == 1 && d[0].states() == ["in_progress", "failure"]).then_some(())
    })
    .await;

    let env = [("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url.as_str())];
    let mut server = Server::start(&w, &env);
    let mut follower = w
        .cmd(&["run", "slow", "staging", "main"])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the deployment is in progress (no GitHub row in flight).
    eventually(20, "the second deployment in progress", || async {
        let d = gh.deployments();
        (d.len() == 2 && d[1].states() == ["in_progress"]).then_some(())
    })
    .await;
    server.kill9();
    let _ = follower.kill();
    let _ = follower.wait();
    let _restarted = Server::start(&w, &env);
    eventually(40, "the error status after the restart", || async {
        (gh.deployments()[1].states() == ["in_progress", "error"]).then_some(())
    })
    .await;
    let app = w.app(&env).await;
    let job = gh.deployments()[1].body["payload"]["deckhand_job_id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.db.job(job).await.unwrap().unwrap().state,
        state::INTERRUPTED
    );
}
both!(
    failed_and_interrupted_deploys_end_their_deployments,
    failed_and_interrupted_deploys_end_their_deployments
);

/// The deliverer's verdicts, one row at a time: a 5xx is retried with backoff, a rate
/// limit with its wait, a refusal (401) is fatal; once the create is given up, the
/// statuses that follow are dropped without a call; no reason carries the token. A
/// deployment GitHub created is found again by a new process (after a restart).
async fn refusals_are_fatal_outages_retried_and_orphan_statuses_dropped(b: Backend) {
    use deckhand::outbox::github::{GitHubDeployments, gh_state, open, status};
    use deckhand::outbox::{Deliver, DeliveryError};
    use deckhand::store::github::OpenedDeployment;
    let Some(w) = ws(b) else { return };
    let gh = FakeGitHub::start();
    let app = w
        .app(&[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", &gh.url)])
        .await;
    let d = OpenedDeployment {
        key: "77",
        job_id: 77,
        repository: "acme/shop",
        environment: "staging",
        version: "main",
        sha: Some(SHA_OK),
    };
    let mut writes = open(&app.settings, &d, "deploy main");
    writes.push(status(
        &app.settings,
        77,
        "77",
        "acme/shop",
        "staging",
        gh_state::SUCCESS,
        "done",
    ));
    app.db.apply(&writes).await.unwrap();
    let next = || async {
        let rows = app.db.claim_notices(&["github"], "test", 10).await.unwrap();
        assert_eq!(rows.len(), 1, "one at a time per job: {rows:?}");
        rows.into_iter().next().unwrap()
    };
    let deliverer = GitHubDeployments;
    let create = next().await;
    assert!(create.body.contains(SHA_OK) && !create.body.contains(TOKEN));

    gh.fail_creates(1);
    match deliverer.deliver(&app, &create).await {
        Err(DeliveryError::Retry {
            after: None,
            reason,
        }) => assert!(reason.contains("502"), "{reason}"),
        r => panic!("{r:?}"),
    }
    gh.script(
        403,
        &[("retry-after", "7"), ("x-ratelimit-remaining", "0")],
        serde_json::json!({"message": "rate"}),
    );
    match deliverer.deliver(&app, &create).await {
        Err(DeliveryError::Retry { after: Some(a), .. }) => assert_eq!(a.as_secs(), 7),
        r => panic!("{r:?}"),
    }
    gh.fail_creates_with(1, 401);
    let reason = match deliverer.deliver(&app, &create).await {
        Err(DeliveryError::Fatal(reason)) => reason,
        r => panic!("{r:?}"),
    };
    assert!(
        reason.contains("401") && !reason.contains(TOKEN),
        "{reason}"
    );
    assert!(gh.deployments().is_empty());

    // Given up for good: what follows on the thread has nothing to post to.
    app.db.mark_failed(create.id, &reason).await.unwrap();
    let posts = gh.calls().len();
    for _ in 0..2 {
        let row = next().await;
        assert_eq!(deliverer.deliver(&app, &row).await, Ok(()));
        app.db.mark_delivered(row.id).await.unwrap();
    }
    assert_eq!(gh.calls().len(), posts, "no status was posted");
    assert_eq!(app.db.github_deployment_id("77").await.unwrap(), Some(None));

    // A create that takes is remembered: a new process (after a restart) posts the
    // status to the deployment GitHub created.
    let d = OpenedDeployment {
        key: "78",
        job_id: 78,
        ..d
    };
    app.db
        .apply(&open(&app.settings, &d, "deploy main"))
        .await
        .unwrap();
    let create = next().await;
    assert_eq!(deliverer.deliver(&app, &create).await, Ok(()));
    app.db.mark_delivered(create.id).await.unwrap();
    let id = gh.deployments()[0].id;
    assert_eq!(
        app.db.github_deployment_id("78").await.unwrap(),
        Some(Some(id))
    );
    drop(app);
    let again = w
        .app(&[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", &gh.url)])
        .await;
    let rows = again
        .db
        .claim_notices(&["github"], "test2", 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(deliverer.deliver(&again, &rows[0]).await, Ok(()));
    assert_eq!(gh.deployments()[0].states(), ["in_progress"]);
}
both!(
    refusals_are_fatal_outages_retried_and_orphan_statuses_dropped,
    refusals_are_fatal_outages_retried_and_orphan_statuses_dropped
);

/// Every message body the fake Slack and Discord received for the job channel, as JSON.
fn bodies(c: &Chat, slack: bool) -> Vec<Value> {
    c.fake
        .calls()
        .into_iter()
        .filter(|x| x.status < 300)
        .filter(|x| {
            if slack {
                x.path.starts_with("/api/chat.") && x.body["channel"] == "CDEPLOYS"
            } else {
                x.path.contains("/channels/777/messages")
            }
        })
        .map(|x| x.body)
        .collect()
}

/// The text of every field and title of a message body, joined.
fn strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn message_with(c: &Chat, slack: bool, parts: &[&str]) -> Option<String> {
    bodies(c, slack).iter().find_map(|b| {
        let mut s = String::new();
        strings(b, &mut s);
        parts.iter().all(|p| s.contains(p)).then_some(s)
    })
}

/// The approval request and the report list the commits since the running version
/// (count, titles with their PR numbers, the compare link) in the terminal, on Slack and
/// on Discord; a title's markup is escaped for each platform (shown as typed in the
/// terminal). The first deploy, with nothing to compare with, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_request_and_report_list_the_commits_escaped_per_platform() {
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["v1"]);
    gh.commit(SHA_NEW, &["v2"]);
    gh.compare(
        SHA_OK,
        SHA_NEW,
        0,
        &["Add search (#41)\n\nwith a body", HOSTILE],
    );
    let extra = "[github]\nrepository = \"acme/shop\"\n\n[environments.gated]\napprovals = 1\nchannels = { slack = \"CDEPLOYS\", discord = \"777\" }\n";
    let env = [("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url.as_str())];
    let c = Chat::start(
        Backend::Sqlite,
        extra,
        &[("ship.toml", &gated_ship_command())],
        &env,
    )
    .unwrap();
    let app = c.ws.app(&[("GITHUB_TOKEN", TOKEN)]).await;
    let ip = "10.1.0.1";

    // v1 from Slack: nothing deployed before, so nothing to compare with.
    let (_, text) = c
        .command(
            &slash("T1", "UDEPLOYER", "ship gated v1", "t1", &c.fake),
            ip,
        )
        .await;
    assert!(text.contains("waits for 1 approval"), "{text}");
    let first: i64 = text
        .split("Job ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    eventually(15, "the first approval request", || async {
        message_with(
            &c,
            true,
            &[
                "needs 1 approval",
                "no earlier version here to compare with",
            ],
        )
    })
    .await;
    c.click(
        &click(
            "T1",
            "T1",
            "UAPPROVER",
            "approve",
            &first.to_string(),
            "c1",
            &c.fake,
        ),
        ip,
    )
    .await;
    wait_state(&app, first, state::SUCCEEDED).await;

    // v2 from the terminal, routed to Slack and Discord too.
    let child =
        c.ws.cmd(&["run", "ship", "gated", "v2"])
            .envs(env)
            // Chat credentials make the terminal's job route to the gated channels too (the
            // server delivers them).
            .env("SLACK_BOT_TOKEN", "xoxb-chat-test")
            .env("DISCORD_BOT_TOKEN", "discord-chat-test")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let second = first + 1;
    wait_state(&app, second, state::AWAITING_APPROVAL).await;
    let link = format!("https://github.example/acme/shop/compare/{SHA_OK}...{SHA_NEW}");
    let listed = [
        "2 commits since 1111111:",
        "Add search (#41)",
        link.as_str(),
    ];
    let mut asked = listed.to_vec();
    asked.push("needs 1 approval");
    let slack_ask = eventually(15, "the approval request on Slack", || async {
        message_with(&c, true, &asked)
    })
    .await;
    let discord_ask = eventually(15, "the approval request on Discord", || async {
        message_with(&c, false, &asked)
    })
    .await;
    c.click(
        &click(
            "T1",
            "T1",
            "UAPPROVER",
            "approve",
            &second.to_string(),
            "c2",
            &c.fake,
        ),
        ip,
    )
    .await;
    wait_state(&app, second, state::SUCCEEDED).await;
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");

    let mut reported = listed.to_vec();
    reported.push("Deployed v2 to gated");
    let slack_report = eventually(15, "the report on Slack", || async {
        message_with(&c, true, &reported)
    })
    .await;
    let discord_report = eventually(15, "the report on Discord", || async {
        message_with(&c, false, &reported)
    })
    .await;

    // The terminal: the approval request and the report, each with the list, newest first.
    let ask_at = stdout.find("needs 1 approval").expect(&stdout);
    let report_at = stdout.find("Deployed v2 to gated").expect(&stdout);
    for at in [ask_at, report_at] {
        let rest = &stdout[at..];
        for p in listed {
            assert!(rest.contains(p), "{p} missing from {rest}");
        }
        assert!(rest.contains(&format!("• {HOSTILE}")), "{rest}");
        assert!(
            rest.find("(#42)").unwrap() < rest.find("(#41)").unwrap(),
            "{rest}"
        );
    }

    // Slack: `<`, `>` and `&` escaped, so no channel ping or link; nothing unescaped left.
    for m in [&slack_ask, &slack_report] {
        assert!(m.contains("Fix &lt;!channel&gt; *bold*"), "{m}");
        assert!(!m.contains("<!channel>"), "{m}");
    }
    // Discord: markdown, links and mentions escaped.
    for m in [&discord_ask, &discord_report] {
        assert!(
            m.contains(r"Fix \<!channel\> \*bold\* \[x\](http://evil.example) \@everyone (#42)"),
            "{m}"
        );
        assert!(!m.contains(" @everyone"), "{m}");
    }
    assert!(!stdout.contains(TOKEN));
}
