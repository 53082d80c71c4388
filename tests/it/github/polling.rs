//! Continuous delivery without a webhook: the poll asks for `main`'s head at most once per
//! interval (conditionally: a 304 changes nothing), deploys a new passing head once, does
//! not ask again about a failing one, waits out a rate limit until its reset, and is
//! claimed by one replica at a time. `poll::tick` takes the time, so the tests step the
//! clock instead of sleeping; one test runs the real loop in `deckhand serve`.

use std::sync::Arc;

use super::cd::{app, cd_ws, jobs, serve};
use super::{SHA_BAD, SHA_OK};
use crate::common::github::FakeGitHub;
use crate::common::*;
use deckhand::app::App;
use deckhand::domain::time::now_ms;
use deckhand::intake::auto_deploy::Judged;
use deckhand::intake::auto_deploy::poll::tick;
use deckhand::store::jobs::state;

const SHA_NEW: &str = "8888888cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd0";
const MIN: i64 = 60_000;

async fn staging(app: &Arc<App>, now: i64) -> Option<Judged> {
    let mut polled = tick(app, now).await.unwrap();
    assert!(polled.len() <= 1, "{polled:?}");
    polled.pop().map(|(env, j)| {
        assert_eq!(env, "staging");
        j
    })
}

async fn a_new_head_deploys_once_unchanged_is_304_and_a_rate_limit_waits(b: Backend) {
    let Some(w) = cd_ws(b, 60) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let app = app(&w, &gh).await;
    // In the past, so that the rate limits below come at the real time GitHub's
    // `x-ratelimit-reset` is measured from.
    let t0 = now_ms() - 8 * MIN;

    // The first poll: the head, its checks, then intake's own look; one job by the author.
    let Some(Judged::Queued {
        job_id,
        created: true,
    }) = staging(&app, t0).await
    else {
        panic!("the head was not queued");
    };
    let first = gh.branch_calls("main");
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].status, first[0].if_none_match.as_deref()),
        (200, None)
    );
    let job = app.db.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.requested_by, "github:ada");
    assert_eq!(job.args_map()["commit_sha"], SHA_OK);

    // Not due again within the minute: GitHub is not asked.
    let calls = gh.calls().len();
    assert_eq!(staging(&app, t0 + MIN - 1).await, None);
    assert_eq!(gh.calls().len(), calls);

    // A minute on: asked with the ETag, answered 304, nothing new (nor checks asked).
    assert_eq!(
        staging(&app, t0 + MIN).await,
        Some(Judged::Queued {
            job_id,
            created: false
        })
    );
    let calls_now = gh.calls();
    assert_eq!(calls_now.len(), calls + 1, "{:?}", &calls_now[calls..]);
    let second = &calls_now[calls];
    assert!(second.path.ends_with("/branches/main"));
    assert_eq!(second.status, 304);
    assert!(
        second
            .if_none_match
            .as_deref()
            .is_some_and(|e| e.contains(SHA_OK))
    );
    assert_eq!(jobs(&app).await.len(), 1);

    // A new head whose check failed: judged once, then not asked about again.
    gh.commit(SHA_BAD, &["main"]);
    gh.check_run(SHA_BAD, "test", "completed", Some("failure"));
    assert!(matches!(
        staging(&app, t0 + 2 * MIN).await,
        Some(Judged::Failed(_))
    ));
    let runs = gh.calls_to(&format!("{SHA_BAD}/check-runs"));
    assert_eq!(runs, 1);
    assert!(matches!(
        staging(&app, t0 + 3 * MIN).await,
        Some(Judged::Failed(_))
    ));
    assert_eq!(gh.branch_calls("main").last().unwrap().status, 304);
    assert_eq!(
        gh.calls_to(&format!("{SHA_BAD}/check-runs")),
        runs,
        "asked again about a failing commit"
    );

    // A passing head by someone else: deployed once, as them.
    gh.commit(SHA_NEW, &["main"]);
    gh.author(SHA_NEW, "grace");
    gh.check_run(SHA_NEW, "test", "completed", Some("success"));
    let Some(Judged::Queued {
        job_id: new_job,
        created: true,
    }) = staging(&app, t0 + 4 * MIN).await
    else {
        panic!("the new head was not queued");
    };
    assert_eq!(
        app.db.job(new_job).await.unwrap().unwrap().requested_by,
        "github:grace"
    );
    assert_eq!(jobs(&app).await.len(), 2);

    // A primary rate limit: the next poll waits for its reset, however often ticked.
    let now = now_ms();
    let reset = now / 1000 + 600;
    gh.script(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset.to_string()),
        ],
        serde_json::json!({"message": "API rate limit exceeded"}),
    );
    assert!(
        matches!(staging(&app, now).await, Some(Judged::Unknown(w)) if w.contains("rate limit"))
    );
    let row = app.db.auto_branch_row("staging").await.unwrap().unwrap();
    assert!(
        (row.next_poll_at - reset * 1000).abs() <= 2_000,
        "next poll at {} for a reset at {}",
        row.next_poll_at,
        reset * 1000
    );
    let calls = gh.calls().len();
    for later in [1, 4, 8] {
        assert_eq!(staging(&app, now + later * MIN).await, None);
    }
    assert_eq!(gh.calls().len(), calls, "asked before the reset");
    assert!(staging(&app, row.next_poll_at).await.is_some());
    assert_eq!(gh.calls().len(), calls + 1, "asked again after the reset");
    assert_eq!(jobs(&app).await.len(), 2);

    // A secondary rate limit's Retry-After is honoured the same way.
    let then = row.next_poll_at + MIN;
    gh.script(
        429,
        &[("retry-after", "300")],
        serde_json::json!({"message": "secondary rate limit"}),
    );
    assert!(matches!(
        staging(&app, then).await,
        Some(Judged::Unknown(_))
    ));
    let row = app.db.auto_branch_row("staging").await.unwrap().unwrap();
    assert_eq!(row.next_poll_at, then + 300_000);
    assert_eq!(staging(&app, then + 299_999).await, None);
    assert!(staging(&app, then + 300_000).await.is_some());
}
both!(
    a_new_head_deploys_once_unchanged_is_304_and_a_rate_limit_waits,
    a_new_head_deploys_once_unchanged_is_304_and_a_rate_limit_waits
);

/// Two replicas polling one database: the poll is claimed by one; both ticking later make
/// no second job; delivery ids and judgements are shared.
async fn replicas_share_the_poll_and_the_deliveries(b: Backend) {
    let Some(w) = cd_ws(b, 60) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let (one, two) = (app(&w, &gh).await, app(&w, &gh).await);
    let t0 = now_ms();
    let (a, b2) = tokio::join!(tick(&one, t0), tick(&two, t0));
    let polled: Vec<_> = a.unwrap().into_iter().chain(b2.unwrap()).collect();
    assert_eq!(polled.len(), 1, "both replicas polled: {polled:?}");
    assert_eq!(gh.branch_calls("main").len(), 1);
    assert_eq!(jobs(&one).await.len(), 1);
    // Due again a minute on: still one of them polls (a 304), and no second job.
    let (a, b2) = tokio::join!(tick(&one, t0 + MIN), tick(&two, t0 + MIN));
    let polled: Vec<_> = a.unwrap().into_iter().chain(b2.unwrap()).collect();
    assert_eq!(polled.len(), 1, "both replicas polled: {polled:?}");
    assert_eq!(gh.branch_calls("main").len(), 2);
    assert_eq!(jobs(&two).await.len(), 1);

    // Deliveries: taken once, by either; pruned by age.
    assert!(one.db.take_delivery("d-1", "push", t0).await.unwrap());
    assert!(!two.db.take_delivery("d-1", "push", t0 + 1).await.unwrap());
    assert!(two.db.take_delivery("d-2", "push", t0 + 10).await.unwrap());
    two.db.forget_delivery("d-2").await.unwrap();
    assert!(one.db.take_delivery("d-2", "push", t0 + 10).await.unwrap());
    assert_eq!(one.db.prune_deliveries(t0 + 5).await.unwrap(), 1);
    assert!(!one.db.delivery_taken("d-1").await.unwrap());
    assert!(one.db.delivery_taken("d-2").await.unwrap());
    // A judgement is recorded by the one call that changes it.
    assert!(
        one.db
            .judge("staging", SHA_BAD, "failed", "test")
            .await
            .unwrap()
    );
    assert!(
        !two.db
            .judge("staging", SHA_BAD, "failed", "test")
            .await
            .unwrap()
    );
    assert!(
        two.db
            .judge("staging", SHA_BAD, "failed", "test, lint")
            .await
            .unwrap()
    );
    // The config names another branch: its row starts again, due at once.
    let before = one
        .db
        .auto_branch("staging", "acme/shop", "main")
        .await
        .unwrap();
    assert_eq!(before.head_sha.as_deref(), Some(SHA_OK));
    let row = one
        .db
        .auto_branch("staging", "acme/shop", "develop")
        .await
        .unwrap();
    assert_eq!((row.branch.as_str(), row.next_poll_at), ("develop", 0));
    assert_eq!((row.head_sha, row.etag, row.judged_sha), (None, None, None));
}
both!(
    replicas_share_the_poll_and_the_deliveries,
    replicas_share_the_poll_and_the_deliveries
);

/// The real loop of `deckhand serve` without a webhook secret: its first poll deploys the
/// head, which runs to success; the webhook route says it is off.
async fn serve_without_a_webhook_polls_and_deploys_the_head(b: Backend) {
    let Some(w) = cd_ws(b, 60) else { return };
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    let server = serve(&w, &gh, false, &[]);
    let app = app(&w, &gh).await;
    let job = eventually(30, "the polled head's job", || async {
        jobs(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(job.args_map()["commit_sha"], SHA_OK);
    wait_state(&app, job.id, state::SUCCEEDED).await;
    assert_eq!(
        gh.branch_calls("main").len(),
        1,
        "polled more than once a minute"
    );
    let (status, text) = super::cd::post(&server, Some("ping"), Some("x"), None, b"{}").await;
    assert_eq!(status, 404);
    assert!(text.contains("GITHUB_WEBHOOK_SECRET is unset"), "{text}");
}
both!(
    serve_without_a_webhook_polls_and_deploys_the_head,
    serve_without_a_webhook_polls_and_deploys_the_head
);
