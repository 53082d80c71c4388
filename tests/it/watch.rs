//! The watch window after a deploy, against a fake Prometheus query API: a clean watch
//! verifies the version only at its end; a check over its bound, no data, or a P0/P1
//! alert breaks it (rollback with `auto_rollback`, else an infrastructure-issue notice with
//! a Roll back button); `/cancel` ends it unverified; a hanging Prometheus stalls nothing
//! else; staging-first counts only clean watches. Both backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::prom::{Answer, FakeProm};
use crate::common::*;
use deckhand::app::App;
use deckhand::intake::policy::Identity;
use deckhand::intake::{Invocation, Outcome, submit};
use deckhand::store::jobs::{JobRow, state};
use deckhand::support::runner::CancelToken;

pub(crate) const ERR: &str =
    "sum(rate(http_requests_total{code=~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))";
pub(crate) const P95: &str =
    "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[1m])) by (le))";
const TOKEN: &str = "prom-token-never-shown-7f3a";
const HELLO: &str = r#"name = "hello"
description = "Say hello"
kind = "custom"
[roles]
"*" = "everyone"
[[steps]]
name = "work"
argv = ["true"]
"#;

/// A workspace whose `env` watches for `seconds` with the error-rate and p95 checks.
fn ws(
    backend: Backend,
    prom: &FakeProm,
    env: &str,
    seconds: u64,
    extra: &str,
) -> Option<Workspace> {
    let config = format!(
        r#"
[prometheus]
url = "{}"
timeout_seconds = 1

[environments.{env}.watch]
seconds = {seconds}
interval_seconds = 1
{extra}

[[environments.{env}.watch.checks]]
name = "error rate"
query = '{ERR}'
max = 0.05

[[environments.{env}.watch.checks]]
name = "latency p95"
query = '{P95}'
max = 0.5
"#,
        prom.url()
    );
    Workspace::new(backend, &config, &[("hello.toml", HELLO)])
}

/// A fake Prometheus answering `[error rate, p95]` (`None`: unscripted, an empty result), a
/// workspace watching `env` for `seconds`, its app (with `vars`) and running workers.
pub(crate) async fn setup(
    backend: Backend,
    env: &str,
    seconds: u64,
    extra: &str,
    answers: [Option<Answer>; 2],
    vars: &[(&str, &str)],
) -> Option<(FakeProm, Workspace, Arc<App>, CancelToken)> {
    let prom = FakeProm::start();
    for (q, a) in [ERR, P95].into_iter().zip(answers) {
        if let Some(a) = a {
            prom.set(q, a);
        }
    }
    let w = ws(backend, &prom, env, seconds, extra)?;
    let app = w.app(vars).await;
    let stop = workers(&app);
    Some((prom, w, app, stop))
}

async fn say(app: &Arc<App>, user: &str, line: &str) -> Outcome {
    let mut words = deckhand::domain::text::split_args(line).unwrap();
    let command = words.remove(0);
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    submit(
        app,
        Invocation {
            platform: "slack".into(),
            identity: Identity::Slack { user: user.into() },
            actor: format!("slack:{user}"),
            channel: Some("CTEST".into()),
            command,
            args: words,
            request_id: Some(hex::encode(b)),
            reply_to: None,
        },
    )
    .await
    .unwrap()
}

pub(crate) async fn start(app: &Arc<App>, line: &str) -> i64 {
    match say(app, "UDEPLOYER", line).await {
        Outcome::Accepted { job_id, .. } => job_id,
        other => panic!("{line}: expected a job, got {other:?}"),
    }
}

fn workers(app: &Arc<App>) -> CancelToken {
    let stop = CancelToken::new();
    tokio::spawn(deckhand::jobs::run_workers(
        app.clone(),
        stop.clone(),
        CancelToken::new(),
    ));
    stop
}

pub(crate) async fn done(app: &App, id: i64) -> JobRow {
    eventually(40, &format!("job {id} to end"), || async {
        app.db
            .job(id)
            .await
            .unwrap()
            .filter(|j| state::is_final(&j.state))
    })
    .await
}

pub(crate) async fn notices_of(app: &App, id: i64) -> Vec<String> {
    app.db
        .job_notices(id, "slack", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// Wait until job `id` announced its watch.
async fn watching(app: &App, id: i64) {
    eventually(30, "the watch to start", || async {
        notices_of(app, id)
            .await
            .iter()
            .any(|b| b.contains("watching"))
            .then_some(())
    })
    .await;
}

async fn clean_watch_verifies_only_at_its_end(backend: Backend) {
    let Some((prom, _w, app, stop)) = setup(
        backend,
        "production",
        3,
        "",
        [Some(Answer::Value(0.01)), Some(Answer::Value(0.2))],
        &[("PROMETHEUS_TOKEN", TOKEN)],
    )
    .await
    else {
        return;
    };
    let s = done(&app, start(&app, "deploy staging abc1234").await).await;
    assert_eq!(s.state, state::SUCCEEDED, "{:?}", s.result);
    assert!(prom.calls().is_empty(), "staging has no watch");
    let id = start(&app, "deploy production abc1234").await;
    watching(&app, id).await;
    let calls_at_watch = prom.calls().len();
    assert!(calls_at_watch >= 2, "the baseline ran before the deploy");
    assert!(
        !app.db.verified_on("production", "abc1234").await.unwrap(),
        "not verified while watching"
    );
    assert_eq!(app.db.job(id).await.unwrap().unwrap().state, state::RUNNING);
    let j = done(&app, id).await;
    assert_eq!(j.state, state::SUCCEEDED, "{:?}", j.result);
    assert_eq!(
        j.result.as_deref(),
        Some("Deployed abc1234 to production, health check passing, 3 s watch clean")
    );
    assert!(app.db.verified_on("production", "abc1234").await.unwrap());
    let calls = prom.calls();
    assert!(
        calls.len() >= calls_at_watch + 4,
        "checks ran during the watch: {calls:?}"
    );
    assert!(calls.iter().any(|c| c.query == ERR) && calls.iter().any(|c| c.query == P95));
    assert!(
        calls
            .iter()
            .all(|c| c.auth.as_deref() == Some(&format!("Bearer {TOKEN}") as &str)),
        "every query carries the bearer token"
    );
    let n = notices_of(&app, id).await;
    let last = n.last().unwrap();
    assert!(last.contains("0.01 (before 0.01)"), "{last}");
    assert!(last.contains("0.2 (before 0.2)"), "{last}");
    assert!(last.contains("3 s clean"), "{last}");
    assert!(last.contains("no — no earlier verified version"), "{last}");
    for b in &n {
        assert!(!b.contains(TOKEN), "token in a notice: {b}");
    }
    for l in app.db.job_log(id, 0).await.unwrap() {
        assert!(!l.line.contains(TOKEN));
    }
    stop.cancel();
}
both!(clean_watch, clean_watch_verifies_only_at_its_end);

async fn broken_check_or_alert_rolls_back_naming_it(backend: Backend) {
    let Some((prom, w, app, stop)) = setup(
        backend,
        "production",
        4,
        "",
        [Some(Answer::Value(0.01)), Some(Answer::Value(0.2))],
        &[],
    )
    .await
    else {
        return;
    };
    for line in [
        "deploy staging abc1234",
        "deploy production abc1234",
        "deploy staging def5678",
    ] {
        let j = done(&app, start(&app, line).await).await;
        assert_eq!(j.state, state::SUCCEEDED, "{line}: {:?}", j.result);
    }
    let id = start(&app, "deploy production def5678").await;
    watching(&app, id).await;
    prom.set(ERR, Answer::Value(0.25));
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    assert_eq!(
        j.result.as_deref(),
        Some(
            "Deployment of def5678 to production failed its watch (error rate 0.25 (above max 0.05)); rolled back to abc1234, health check passing"
        )
    );
    let (s, body) = http_get(&format!("http://127.0.0.1:{}/health", w.production_port)).unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("\"abc1234\""), "{body}");
    assert!(!app.db.verified_on("production", "def5678").await.unwrap());
    let cur = app
        .db
        .current_deployment("production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cur.version.as_str(), cur.verified), ("abc1234", true));

    // An Alertmanager alert for production arriving during the watch breaks it too.
    prom.set(ERR, Answer::Value(0.01));
    let staged = done(&app, start(&app, "deploy staging fed4321").await).await;
    assert_eq!(staged.state, state::SUCCEEDED, "{:?}", staged.result);
    let id = start(&app, "deploy production fed4321").await;
    watching(&app, id).await;
    ingest(
        &app,
        &alert("production", "HighErrorRate", "critical", "brk1"),
    )
    .await;
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    assert_eq!(
        j.result.as_deref(),
        Some(
            "Deployment of fed4321 to production failed its watch (alert HighErrorRate (P0) fired); rolled back to abc1234, health check passing"
        )
    );
    assert!(!app.db.verified_on("production", "fed4321").await.unwrap());
    stop.cancel();
}
both!(broken_check, broken_check_or_alert_rolls_back_naming_it);

async fn no_data_fails_by_default_and_staging_first_refuses(backend: Backend) {
    let Some((prom, _w, app, stop)) = setup(
        backend,
        "staging",
        2,
        "",
        [Some(Answer::Error), Some(Answer::Value(0.2))],
        &[],
    )
    .await
    else {
        return;
    };
    let id = start(&app, "deploy staging abc1234").await;
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    let title = j.result.unwrap();
    assert!(
        title.starts_with("Infrastructure issue on staging after deploying abc1234: its watch broke, no data for error rate (query error (400)"),
        "{title}"
    );
    let last = notices_of(&app, id).await.pop().unwrap();
    assert!(last.contains("Roll back"), "a Roll back button: {last}");
    // Staging-first: a version whose staging watch broke is not promoted.
    match say(&app, "UDEPLOYER", "deploy production abc1234").await {
        Outcome::Refused(r) => assert!(r.contains("staging"), "{r}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // An empty result is no data too.
    prom.set(ERR, Answer::Empty);
    let j = done(&app, start(&app, "deploy staging def5678").await).await;
    assert!(
        j.result
            .as_deref()
            .unwrap()
            .contains("no data for error rate (empty result)"),
        "{:?}",
        j.result
    );
    stop.cancel();
}
both!(
    no_data_fails,
    no_data_fails_by_default_and_staging_first_refuses
);

async fn no_data_passes_when_told(backend: Backend) {
    let Some((_prom, _w, app, stop)) = setup(
        backend,
        "staging",
        2,
        "on_no_data = \"pass\"",
        [None, Some(Answer::Value(0.2))],
        &[],
    )
    .await
    else {
        return;
    };
    let id = start(&app, "deploy staging abc1234").await;
    let j = done(&app, id).await;
    assert_eq!(j.state, state::SUCCEEDED, "{:?}", j.result);
    let last = notices_of(&app, id).await.pop().unwrap();
    assert!(last.contains("no data (before no data)"), "{last}");
    // Staging's clean watch lets production take it.
    assert!(matches!(
        say(&app, "UDEPLOYER", "deploy production abc1234").await,
        Outcome::Accepted { .. }
    ));
    stop.cancel();
}
both!(no_data_passes, no_data_passes_when_told);

async fn a_hanging_prometheus_stalls_nothing_else(backend: Backend) {
    let Some((_prom, _w, app, stop)) = setup(
        backend,
        "staging",
        3,
        "",
        [Some(Answer::Hang), Some(Answer::Hang)],
        &[],
    )
    .await
    else {
        return;
    };
    let t = Instant::now();
    let id = start(&app, "deploy staging abc1234").await;
    // Baseline queries hang (1 s timeout each, together), then the deploy runs.
    watching(&app, id).await;
    let other = done(&app, start(&app, "hello").await).await;
    assert_eq!(other.state, state::SUCCEEDED, "{:?}", other.result);
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    assert!(
        j.result
            .as_deref()
            .unwrap()
            .contains("no data for error rate (timed out)"),
        "{:?}",
        j.result
    );
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    stop.cancel();
}
both!(hanging_prometheus, a_hanging_prometheus_stalls_nothing_else);

async fn cancel_or_alert_during_the_watch(backend: Backend) {
    let Some((_prom, _w, app, stop)) = setup(
        backend,
        "staging",
        60,
        "",
        [Some(Answer::Value(0.0)), Some(Answer::Value(0.1))],
        &[],
    )
    .await
    else {
        return;
    };
    let id = start(&app, "deploy staging abc1234").await;
    watching(&app, id).await;
    // Staging-first: a version whose staging watch has not finished is not proven.
    match say(&app, "UDEPLOYER", "deploy production abc1234").await {
        Outcome::Refused(r) => assert!(r.contains("staging"), "{r}"),
        other => panic!("expected a refusal while staging watches, got {other:?}"),
    }
    app.db
        .apply(&[deckhand::store::jobs::request_cancel(id)])
        .await
        .unwrap();
    let j = done(&app, id).await;
    assert_eq!(j.state, state::CANCELLED);
    assert_eq!(
        j.result.as_deref(),
        Some(&format!(
            "Deployment of abc1234 to staging was cancelled during its watch; abc1234 stays unverified (job {id})"
        ) as &str)
    );
    assert!(!app.db.verified_on("staging", "abc1234").await.unwrap());

    // A P1 alert for the environment arriving during the watch breaks it.
    let id = start(&app, "deploy staging def5678").await;
    watching(&app, id).await;
    ingest(
        &app,
        &alert("staging", "HighErrorRate", "critical", "watch1"),
    )
    .await;
    let j = done(&app, id).await;
    assert_eq!(j.state, state::FAILED);
    assert!(
        j.result
            .as_deref()
            .unwrap()
            .contains("its watch broke, alert HighErrorRate (P0) fired"),
        "{:?}",
        j.result
    );
    // Staging has no auto_rollback: the infrastructure-issue notice offers the rollback.
    let last: serde_json::Value =
        serde_json::from_str(&notices_of(&app, id).await.pop().unwrap()).unwrap();
    assert_eq!(last["kind"], "infrastructure_issue", "{last}");
    assert_eq!(last["actions"][0]["action"], "rollback", "{last}");
    stop.cancel();
}
both!(cancel_or_alert, cancel_or_alert_during_the_watch);

async fn kill_9_during_a_watch_ends_it_unverified(backend: Backend) {
    let prom = FakeProm::start();
    prom.set(ERR, Answer::Value(0.0));
    prom.set(P95, Answer::Value(0.1));
    let Some(w) = ws(backend, &prom, "staging", 120, "") else {
        return;
    };
    let mut server = Server::start(&w, &[]);
    let app = w.app(&[]).await;
    let mut follower = w
        .cmd(&["run", "deploy", "staging", "abc1234"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let job = eventually(30, "the watch to start", || async {
        app.db
            .recent_jobs(1)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.state == state::RUNNING && j.watch_until.is_some())
    })
    .await;
    let queries = prom.calls().len();
    server.kill9();
    let _ = follower.kill();
    let _ = follower.wait();
    let _restarted = Server::start(&w, &[]);
    let j = eventually(30, "the job to be reported interrupted", || async {
        app.db
            .job(job.id)
            .await
            .unwrap()
            .filter(|j| j.state == state::INTERRUPTED)
    })
    .await;
    let title = j.result.unwrap();
    assert!(
        title.contains("was interrupted during its watch")
            && title.contains("abc1234 stays unverified; recovery runs no rollback"),
        "{title}"
    );
    assert!(!app.db.verified_on("staging", "abc1234").await.unwrap());
    assert!(
        app.db
            .current_deployment("staging")
            .await
            .unwrap()
            .is_none(),
        "an interrupted watch leaves no verified (or unhealthy) current version"
    );
    // The watch is over: nothing queries Prometheus for that job any more.
    let after = prom.calls().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        prom.calls().len(),
        after,
        "no watch goes on ({queries} before the kill)"
    );
}
both!(kill_9_watch, kill_9_during_a_watch_ends_it_unverified);

/// A new service has no samples for a scrape or two: no data within
/// `no_data_grace_seconds` does not break the watch once data arrives.
async fn no_data_at_first_is_forgiven_within_the_grace(backend: Backend) {
    let Some((prom, _w, app, stop)) = setup(
        backend,
        "staging",
        4,
        "no_data_grace_seconds = 3",
        [Some(Answer::Empty), Some(Answer::Value(0.1))],
        &[],
    )
    .await
    else {
        return;
    };
    let id = start(&app, "deploy staging abc1234").await;
    watching(&app, id).await;
    prom.set(ERR, Answer::Value(0.0));
    let j = done(&app, id).await;
    assert_eq!(
        j.result.as_deref(),
        Some("Deployed abc1234 to staging, health check passing, 4 s watch clean")
    );
    stop.cancel();
}
both!(no_data_grace, no_data_at_first_is_forgiven_within_the_grace);

/// An Alertmanager alert for `env`, firing.
pub(crate) fn alert(env: &str, name: &str, severity: &str, fp: &str) -> Vec<u8> {
    serde_json::json!({
        "version": "4", "status": "firing", "receiver": "deckhand",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "environment": env, "severity": severity},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing",
            "labels": {"alertname": name, "environment": env, "severity": severity},
            "annotations": {}, "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fp}]
    })
    .to_string()
    .into_bytes()
}

pub(crate) async fn ingest(app: &Arc<App>, body: &[u8]) {
    let parsed = deckhand::watch::alerts::parse("alertmanager", body).unwrap();
    deckhand::watch::alerts::ingest(app, parsed).await.unwrap();
}
