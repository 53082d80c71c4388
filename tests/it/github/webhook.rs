//! `POST /github/webhook` and continuous delivery: signed events for `main` deploy its
//! head to staging once its checks pass (once, also with two replicas on one database);
//! forged, unsigned, malformed, oversized and replayed deliveries change nothing; failing
//! commits are not deployed; locks apply; the webhook secret appears nowhere.

use serde_json::Value;

use super::cd::{SECRET, app, cd_ws, check_suite, deliver, delivery, jobs, post, push, serve};
use super::{SHA_BAD, SHA_OK, TOKEN, database_text, ran, run};
use crate::common::github::FakeGitHub;
use crate::common::*;
use deckhand::store::jobs::state;

const SHA_WAIT: &str = "6666666fffffffffffffffffffffffffffffffff";
const SHA_NEXT: &str = "7777777abababababababababababababababab0";

/// What the answer says about staging.
fn said(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["environments"]["staging"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing about staging: {body}"))
        .to_owned()
}

async fn forged_unsigned_malformed_oversized_and_replayed_deliveries_change_nothing(b: Backend) {
    let Some(w) = cd_ws(b, 0) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_WAIT, &["main"]);
    gh.check_run(SHA_WAIT, "test", "in_progress", None);
    let server = serve(&w, &gh, true, &[("RUST_LOG", "deckhand=debug,info")]);
    let app = app(&w, &gh).await;
    let payload = check_suite(SHA_WAIT, "main", "ada", "success");
    let body = payload.to_string();
    let mut seen = String::new();

    let forged = deckhand::support::github_webhook::signature(b"not the secret", body.as_bytes());
    let ids: Vec<String> = (0..5).map(|_| delivery()).collect();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1_200_000));
    let big_sig = super::cd::sign(big.as_bytes());
    let sha1 = format!("sha1={}", &forged[7..47]);
    for (what, id, sig, body, want, says) in [
        (
            "forged",
            &ids[0],
            Some(forged.as_str()),
            body.as_bytes(),
            401,
            "signature does not match",
        ),
        (
            "unsigned",
            &ids[1],
            None,
            body.as_bytes(),
            401,
            "missing X-Hub-Signature-256",
        ),
        (
            "malformed",
            &ids[2],
            Some(sha1.as_str()),
            body.as_bytes(),
            401,
            "malformed X-Hub-Signature-256",
        ),
        (
            "oversized",
            &ids[3],
            Some(big_sig.as_str()),
            big.as_bytes(),
            413,
            "too large",
        ),
    ] {
        let (status, text) = post(&server, Some("check_suite"), Some(id), sig, body).await;
        assert_eq!(status, want, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
        seen += &text;
    }
    // Signed, but without a delivery id or with a body that is not JSON: 400.
    let sig = super::cd::sign(body.as_bytes());
    let (status, text) = post(
        &server,
        Some("check_suite"),
        None,
        Some(&sig),
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("X-GitHub-Delivery"), "{text}");
    let junk = b"{not json";
    let (status, text) = post(
        &server,
        Some("check_suite"),
        Some(&ids[4]),
        Some(&super::cd::sign(junk)),
        junk,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    seen += &text;
    // Nothing changed: no job, no delivery taken, GitHub never asked.
    assert!(jobs(&app).await.is_empty());
    for id in &ids {
        assert!(!app.db.delivery_taken(id).await.unwrap(), "{id}");
    }
    assert!(gh.calls().is_empty(), "{:?}", gh.calls());

    let (status, text) = deliver(
        &server,
        "ping",
        &delivery(),
        &serde_json::json!({"zen": "Keep it logically awesome."}),
    )
    .await;
    assert_eq!((status, text.contains("pong")), (200, true), "{text}");
    let (status, text) = deliver(
        &server,
        "issues",
        &delivery(),
        &serde_json::json!({"action": "opened"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ignored"), "{text}");

    // Pending: judged, nothing queued.
    let first = delivery();
    let (status, text) = deliver(&server, "check_suite", &first, &payload).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(said(&text), "waiting for checks: test (in progress)");
    assert!(jobs(&app).await.is_empty());

    // The check passes. Replaying the first delivery (the very same request) is refused
    // and asks nothing; a new delivery of the same event deploys.
    gh.check_run(SHA_WAIT, "test", "completed", Some("success"));
    let calls = gh.calls().len();
    let (status, text) = deliver(&server, "check_suite", &first, &payload).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("already received"), "{text}");
    assert_eq!(gh.calls().len(), calls, "a replay asked GitHub");
    assert!(jobs(&app).await.is_empty(), "a replay queued a deploy");
    let second = delivery();
    let (status, text) = deliver(&server, "check_suite", &second, &payload).await;
    assert_eq!(status, 200, "{text}");
    assert!(said(&text).starts_with("queued as job "), "{text}");
    let (status, _) = deliver(&server, "check_suite", &second, &payload).await;
    assert_eq!(status, 401);
    let j = jobs(&app).await;
    assert_eq!(j.len(), 1, "{j:?}");
    wait_state(&app, j[0].id, state::SUCCEEDED).await;
    assert_eq!(ran(&w).trim(), format!("{} {SHA_WAIT}", &SHA_WAIT[..12]));

    // The secret went nowhere: not in answers, logs, the database or notices.
    seen += &server.output();
    assert!(server.output().contains("refused a GitHub webhook"));
    assert!(
        !seen.contains(SECRET),
        "the webhook secret leaked into answers or logs"
    );
    assert!(
        !database_text(&w).contains(SECRET),
        "the webhook secret is in the database"
    );
    let (_, audit, _) = run(&w, &gh, &["audit"]);
    assert!(!audit.contains(SECRET));
    let out = w
        .cmd(&["check"])
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!format!("{out:?}").contains(SECRET));

    // Forgers spend their own address's budget, as on the other webhook routes: 429 before
    // their bodies are read (30 at once by default).
    let mut limited = None;
    for n in 0..40 {
        let (status, _) = post(
            &server,
            Some("push"),
            Some(&delivery()),
            Some(&forged),
            body.as_bytes(),
        )
        .await;
        if status == 429 {
            limited = Some(n);
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(limited.is_some(), "forged requests were never limited");
    assert_eq!(jobs(&app).await.len(), 1);
}
both!(
    forged_unsigned_malformed_oversized_and_replayed_deliveries_change_nothing,
    forged_unsigned_malformed_oversized_and_replayed_deliveries_change_nothing
);

/// Two replicas on one database both receive the same passing `check_suite` (as GitHub
/// sends one event to two hook URLs, with two delivery ids): one job, run once, by
/// `github:ada`; the same again changes nothing.
async fn a_passing_check_suite_deploys_main_once_across_two_replicas(b: Backend) {
    let Some(w) = cd_ws(b, 0) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let (one, two) = (serve(&w, &gh, true, &[]), serve(&w, &gh, true, &[]));
    let app = app(&w, &gh).await;
    let payload = check_suite(SHA_OK, "main", "ada", "success");

    let (d1, d2) = (delivery(), delivery());
    let (a, b2) = tokio::join!(
        deliver(&one, "check_suite", &d1, &payload),
        deliver(&two, "check_suite", &d2, &payload)
    );
    assert_eq!((a.0, b2.0), (200, 200), "{a:?} {b2:?}");
    let j = jobs(&app).await;
    assert_eq!(j.len(), 1, "{j:?}");
    let job = &j[0];
    assert_eq!(job.command, "ship");
    assert_eq!(job.environment.as_deref(), Some("staging"));
    assert_eq!(job.version.as_deref(), Some(&SHA_OK[..12]));
    assert_eq!(job.args_map()["commit_sha"], SHA_OK);
    assert_eq!(job.requested_by, "github:ada");
    assert_eq!(
        job.idempotency_key.as_deref(),
        Some(format!("auto_deploy:staging:{SHA_OK}").as_str())
    );
    wait_state(&app, job.id, state::SUCCEEDED).await;
    assert_eq!(ran(&w).lines().count(), 1, "{}", ran(&w));

    // Once deployed, the same event (new deliveries) to both changes nothing.
    for s in [&one, &two] {
        let (status, text) = deliver(s, "check_suite", &delivery(), &payload).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            ["already running", &format!("job {} deploys it", job.id)]
                .contains(&said(&text).as_str()),
            "{text}"
        );
    }
    assert_eq!(jobs(&app).await.len(), 1);
    let d = gh.nth_deployment_succeeded(1, 20).await;
    assert_eq!(d.body["ref"], SHA_OK);
    assert!(
        d.body["description"]
            .as_str()
            .unwrap()
            .contains("by github:ada"),
        "{}",
        d.body
    );
    assert!(one.output().contains("Queued ship") || two.output().contains("Queued ship"));
}
both!(
    a_passing_check_suite_deploys_main_once_across_two_replicas,
    a_passing_check_suite_deploys_main_once_across_two_replicas
);

/// A failing head is not deployed (logged once, not queued however many events come); a
/// push only records who pushed the new head, and its deploy waits for the checks; events
/// for other branches or repositories are ignored; a lock refuses the deploy (audited
/// once) until it is released.
async fn failing_heads_wait_pushes_record_and_locks_refuse(b: Backend) {
    let Some(w) = cd_ws(b, 0) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_BAD, &["main"]);
    gh.check_run(SHA_BAD, "test", "completed", Some("failure"));
    let server = serve(&w, &gh, true, &[]);
    let app = app(&w, &gh).await;

    for _ in 0..2 {
        let (status, text) = deliver(
            &server,
            "check_suite",
            &delivery(),
            &check_suite(SHA_BAD, "main", "ada", "failure"),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert!(
            said(&text).starts_with(
                "not deployed: required checks failed: test (failure: https://github.example/"
            ),
            "{text}"
        );
    }
    assert!(jobs(&app).await.is_empty());
    let failing = |out: String| out.matches("failed its required checks").count();
    assert_eq!(failing(server.output()), 1, "{}", server.output());

    // Other branches and repositories: nothing to do.
    let (_, text) = deliver(
        &server,
        "check_suite",
        &delivery(),
        &check_suite(SHA_OK, "feature", "ada", "success"),
    )
    .await;
    assert!(text.contains("no environment auto-deploys"), "{text}");
    let mut other = check_suite(SHA_OK, "main", "ada", "success");
    other["repository"]["full_name"] = "acme/other".into();
    let (_, text) = deliver(&server, "check_suite", &delivery(), &other).await;
    assert!(text.contains("no environment auto-deploys"), "{text}");

    // bob pushes a new head: recorded; its checks are still running, so no deploy yet.
    gh.commit(SHA_NEXT, &["main"]);
    gh.check_run(SHA_NEXT, "test", "queued", None);
    let (status, text) =
        deliver(&server, "push", &delivery(), &push(SHA_NEXT, "main", "bob")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("recorded"), "{text}");
    assert!(
        jobs(&app).await.is_empty(),
        "a push deployed before its checks"
    );

    // Staging is locked when the checks pass: refused, audited once.
    let (code, out, err) = run(&w, &gh, &["lock", "staging", "release freeze"]);
    assert_eq!(code, 0, "{out}{err}");
    gh.check_run(SHA_NEXT, "test", "completed", Some("success"));
    let done = check_suite(SHA_NEXT, "main", "github-actions[bot]", "success");
    for _ in 0..2 {
        let (_, text) = deliver(&server, "check_suite", &delivery(), &done).await;
        assert!(said(&text).contains("locked"), "{text}");
    }
    assert!(jobs(&app).await.is_empty());
    let refusals: Vec<_> = app
        .db
        .audit(Some("staging"), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "auto_deploy_refused")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].actor, "github:bob");

    // Unlocked, the next event deploys it as bob, who pushed it.
    let (code, out, err) = run(&w, &gh, &["unlock", "staging"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, text) = deliver(&server, "check_suite", &delivery(), &done).await;
    assert!(said(&text).starts_with("queued as job"), "{text}");
    let j = jobs(&app).await;
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].requested_by, "github:bob");
    assert_eq!(j[0].args_map()["commit_sha"], SHA_NEXT);
    wait_state(&app, j[0].id, state::SUCCEEDED).await;
}
both!(
    failing_heads_wait_pushes_record_and_locks_refuse,
    failing_heads_wait_pushes_record_and_locks_refuse
);
