//! The watch against a real Prometheus (Debian's, started by the test) scraping the demo
//! app every second, through a real `deckhand serve` with Slack and Discord on a fake API:
//! a good version's watch is clean and its report — on Slack, on Discord and in the
//! terminal — gives the deploy time, the error rate and p95 before and after, rollback
//! readiness and the commands run; `bad-2` passes its health check, starts failing every
//! other request two seconds later, and is rolled back during its watch naming the error
//! rate and its value, after which the demo app answers the old version again.

use crate::common::chat::*;
use crate::common::prometheus::Prometheus;
use crate::common::*;
use deckhand::app::App;
use deckhand::store::jobs::{JobRow, state};

const ERR: &str = r#"sum(rate(http_requests_total{job="production",code=~"5.."}[5s])) / sum(rate(http_requests_total{job="production"}[5s]))"#;
const P95: &str = r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="production"}[5s])))"#;

fn config(prom_port: u16) -> String {
    format!(
        r#"
[prometheus]
url = "http://127.0.0.1:{prom_port}"
timeout_seconds = 2

[environments.production.channels]
discord = "555000111"

[environments.production.watch]
seconds = 8
interval_seconds = 1

[[environments.production.watch.checks]]
name = "error rate"
query = '{ERR}'
max = 0.05
unit = "ratio"

[[environments.production.watch.checks]]
name = "latency p95"
query = '{P95}'
max = 0.25
unit = "seconds"
"#
    )
}

/// The newest job of `env`, once it ended after `after` (a job id).
async fn ended(app: &App, env: &str, after: i64) -> JobRow {
    eventually(60, &format!("a job on {env} to end"), || async {
        app.db.recent_jobs(20).await.unwrap().into_iter().find(|j| {
            j.id > after && j.environment.as_deref() == Some(env) && state::is_final(&j.state)
        })
    })
    .await
}

/// What the fake received for `path_part` whose body mentions `needle`: the newest one.
async fn sent(c: &Chat, path_part: &str, needle: &str) -> String {
    eventually(
        30,
        &format!("a message with {needle:?} at {path_part}"),
        || async {
            c.fake
                .calls()
                .into_iter()
                .rev()
                .map(|call| (call.path, call.body.to_string()))
                .find(|(p, b)| p.contains(path_part) && b.contains(needle))
                .map(|(_, b)| b)
        },
    )
    .await
}

fn assert_report(platform: &str, body: &str) {
    for want in [
        "Deploy time",
        "Error rate",
        "(before 0 %)",
        "Latency p95",
        " ms (before ",
        "Rollback ready",
        "Commands",
        "start the demo app: deckhand demo deploy (succeeded)",
    ] {
        assert!(
            body.contains(want),
            "{platform} report lacks {want:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_deploy_watches_clean_and_bad_2_is_rolled_back_during_its_watch() {
    if !Prometheus::available() {
        return;
    }
    let prom_port = free_port();
    let c = Chat::start(Backend::Sqlite, &config(prom_port), &[], &[]).unwrap();
    let (sp, pp) = (c.ws.staging_port, c.ws.production_port);
    let prom = Prometheus::start(prom_port, &[("production", pp), ("staging", sp)])
        .await
        .unwrap();
    let app = c.ws.app(&[]).await;

    // Production already runs v0, started as a step would start it, before Deckhand's
    // first deploy there: the baseline has figures to compare with.
    let data = c.ws.data_dir();
    let st = std::process::Command::new(BIN)
        .args(["demo", "deploy"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DECKHAND_DATA_DIR", &data)
        .env("DECKHAND_ENVIRONMENT", "production")
        .env("DECKHAND_VERSION", "v0")
        .env(
            "DECKHAND_HEALTH_URL",
            format!("http://127.0.0.1:{pp}/health"),
        )
        .status()
        .unwrap();
    assert!(st.success());
    eventually(60, "Prometheus to have production's error rate", || async {
        let (e, p) = (prom.value(ERR).await, prom.value(P95).await);
        (e.is_some() && p.is_some()).then_some(())
    })
    .await;

    let ip = "10.9.0.1";
    let say = |text: &str, trigger: &str| slash("T1", "UDEPLOYER", text, trigger, &c.fake);
    let (s, _) = c.command(&say("deploy staging abc1234", "t1"), ip).await;
    assert_eq!(s, 200);
    let staged = ended(&app, "staging", 0).await;
    assert_eq!(staged.state, state::SUCCEEDED, "{:?}", staged.result);

    let (s, _) = c.command(&say("deploy production abc1234", "t2"), ip).await;
    assert_eq!(s, 200);
    let good = ended(&app, "production", 0).await;
    assert_eq!(
        (good.state.as_str(), good.result.as_deref()),
        (
            state::SUCCEEDED,
            Some("Deployed abc1234 to production, health check passing, 8 s watch clean")
        ),
        "{}",
        prom.log()
    );
    assert!(app.db.verified_on("production", "abc1234").await.unwrap());
    // The one report, on Slack (the asking channel) and Discord (production's channel).
    let slack = sent(&c, "chat.", "8 s watch clean").await;
    assert_report("Slack", &slack);
    assert!(
        slack.contains("no — no earlier verified version"),
        "{slack}"
    );
    let discord = sent(&c, "/channels/555000111/messages", "8 s watch clean").await;
    assert_report("Discord", &discord);

    // bad-2: staging has no watch, so its passing health check verifies it there.
    let (s, _) = c.command(&say("deploy staging bad-2", "t3"), ip).await;
    assert_eq!(s, 200);
    let staged = ended(&app, "staging", staged.id).await;
    assert_eq!(staged.state, state::SUCCEEDED, "{:?}", staged.result);
    // In production, from the terminal: health passes, then the watch sees the errors.
    let (code, out, err) = c.ws.run(&["deploy", "production", "bad-2"]);
    assert_ne!(code, 0, "{out}{err}");
    let bad = ended(&app, "production", good.id).await;
    assert_eq!(bad.state, state::FAILED);
    let title = bad.result.clone().unwrap();
    assert!(
        title.contains("bad-2")
            && title.contains("rolled back to abc1234")
            && title.contains("error rate ")
            && title.contains("% (above max 5 %)"),
        "{title}\n{}",
        prom.log()
    );
    // The terminal shows the same report.
    for want in [
        "error rate",
        "Deploy time",
        "Rollback ready",
        "yes — abc1234 verified",
        "Commands",
        "start the demo app: deckhand demo deploy (succeeded)",
    ] {
        assert!(out.contains(want), "terminal lacks {want:?}: {out}");
    }
    let discord = sent(&c, "/channels/555000111/messages", "rolled back to abc1234").await;
    assert!(discord.contains("above max 5 %"), "{discord}");
    // The old version answers again, and is what production runs.
    let (s, body) = http_get(&format!("http://127.0.0.1:{pp}/health")).unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("\"abc1234\""), "{body}");
    let current = app
        .db
        .current_deployment("production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (current.version.as_str(), current.verified),
        ("abc1234", true)
    );
}
