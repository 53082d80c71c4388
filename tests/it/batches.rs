//! Group commit and batched claims, on SQLite and PostgreSQL: concurrent commands share
//! commits but each is answered only with its own row, a duplicate or a bad job fails
//! alone, and a claim of several jobs never takes two of one environment.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::common::*;
use deckhand::store::jobs::{Extra, NewJob, state, transition, transitions};

fn job(key: &str, env: Option<&str>) -> NewJob {
    NewJob {
        command: "noop".into(),
        kind: "custom".into(),
        environment: env.map(str::to_owned),
        args: "{}".into(),
        state: state::QUEUED.into(),
        requested_by: "tester".into(),
        platform: "terminal".into(),
        idempotency_key: Some(key.into()),
        concurrency_key: env.map(|e| format!("env:{e}")),
        ..Default::default()
    }
}

fn audited(what: &'static str) -> Arc<Extra> {
    Arc::new(move |id, _| {
        vec![deckhand::store::Write::Audit(deckhand::store::AuditEvent {
            actor: "tester".into(),
            platform: "terminal".into(),
            action: what.into(),
            environment: None,
            job_id: Some(id),
            detail: String::new(),
        })]
    })
}

fn counter(name: &str) -> f64 {
    parse_metrics(&deckhand::support::metrics::render(&[]))
        .get(name)
        .copied()
        .unwrap_or(0.0)
}

both!(
    concurrent_commands_share_commits_and_fail_alone,
    share_commits
);
async fn share_commits(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let (commits0, jobs0) = (
        counter("deckhand_intake_commits_total"),
        counter("deckhand_intake_requests_total"),
    );
    // 60 commands at once, two of them with one idempotency key.
    let mut ids = BTreeSet::new();
    let answers = at_once(
        &app,
        0..60,
        |i| match i {
            7 | 8 => "dup".to_owned(),
            _ => format!("k{i}"),
        },
        None,
    )
    .await;
    let mut dup = Vec::new();
    for (i, r) in answers {
        let e = r.unwrap();
        if i == 7 || i == 8 {
            dup.push(e);
        } else {
            assert!(e.created, "job {i}: {e:?}");
            assert!(ids.insert(e.id), "job {i} got a new id");
        }
    }
    assert_eq!(
        dup[0].id, dup[1].id,
        "one job for the two requests: {dup:?}"
    );
    assert_eq!(dup.iter().filter(|e| e.created).count(), 1, "{dup:?}");
    ids.insert(dup[0].id);
    // Fewer commits than jobs: the writer took the waiting ones together.
    let commits = counter("deckhand_intake_commits_total") - commits0;
    let jobs = counter("deckhand_intake_requests_total") - jobs0;
    assert_eq!(jobs, 60.0, "requests answered");
    assert!(commits <= jobs / 2.0, "{commits} commits for {jobs} jobs");
    println!("{jobs} jobs in {commits} commits");

    // 20 more at once, one of them bad: it fails alone.
    let answers = at_once(&app, 100..120, |i| format!("k{i}"), Some(110)).await;
    for (i, r) in answers {
        if i == 110 {
            assert!(r.is_err(), "the bad job fails: {r:?}");
        } else {
            let e = r.unwrap();
            assert!(e.created && ids.insert(e.id), "job {i}: {e:?}");
        }
    }
    // On disk: exactly the answered jobs, each with its audit row; nothing of the bad one.
    let rows = app.db.recent_jobs(1000).await.unwrap();
    let on_disk: BTreeSet<i64> = rows.iter().map(|j| j.id).collect();
    assert_eq!(on_disk, ids);
    assert!(
        rows.iter()
            .all(|j| j.idempotency_key.as_deref() != Some("k110"))
    );
    let audit = app.db.audit(None, 1000).await.unwrap();
    let audited: BTreeSet<i64> = audit.iter().filter_map(|a| a.job_id).collect();
    assert_eq!(audited, ids, "every job's audit row is in its transaction");

    // 30 commands for one environment in one batch (one of them twice): each waits for
    // the one before it (by id), as when they come one by one.
    let jobs: Vec<NewJob> = (0..31)
        .map(|i| job(&format!("s{}", i.min(29)), Some("staging")))
        .collect();
    // Each job's extra writes: its audit row, two notices of its thread (the second an
    // edit of the first's message: it follows up) and an urgent one of a thread of its own.
    let notice = |id: i64, thread: String, body: &str, urgent: bool| {
        deckhand::store::Write::Notice(deckhand::store::NewNotice {
            job_id: Some(id),
            platform: "slack".into(),
            channel: Some("C1".into()),
            thread_key: thread,
            body: body.into(),
            whole: true,
            urgent,
        })
    };
    let extra: Arc<Extra> = Arc::new(move |id, behind| {
        let mut w = self::audited("accepted")(id, behind);
        w.push(notice(id, format!("job:{id}"), "queued", false));
        w.push(notice(id, format!("job:{id}"), "still queued", false));
        w.push(notice(id, format!("job:{id}:loud"), "loud", true));
        w
    });
    let items: Vec<deckhand::store::group::Item> = jobs
        .iter()
        .map(|j| deckhand::store::group::Item::Job(j, &*extra))
        .collect();
    let done = app.db.commit_batch(&items).await.unwrap();
    let mut queued: Vec<_> = done
        .into_iter()
        .map(|d| match d {
            deckhand::store::group::Done::Job(e) => e,
            deckhand::store::group::Done::Applied(_) => panic!("a job's answer"),
        })
        .collect();
    let again = queued.pop().unwrap();
    assert!(!again.created && again.id == queued[29].id, "{again:?}");
    queued.sort_by_key(|e| e.id);
    assert!(queued.iter().all(|e| e.created), "{queued:?}");
    assert_eq!(queued[0].behind, None, "{queued:?}");
    for pair in queued.windows(2) {
        assert_eq!(pair[1].behind, Some(pair[0].id), "{queued:?}");
    }
    let audit = app.db.audit(None, 1000).await.unwrap();
    // The outbox's priorities: urgent 0, new 1, follow-up 2.
    let (urgent, new, follow_up) = (0, 1, 2);
    for e in &queued {
        assert_eq!(audit.iter().filter(|a| a.job_id == Some(e.id)).count(), 1);
        let rows = app.db.job_notices(e.id, "slack", 0).await.unwrap();
        let seen: Vec<(&str, i64)> = rows.iter().map(|r| (r.body.as_str(), r.priority)).collect();
        assert_eq!(
            seen,
            [
                ("queued", new),
                ("loud", urgent),
                ("still queued", follow_up)
            ],
            "job {}",
            e.id
        );
    }
}

/// Enqueue jobs `range` concurrently through the group-commit writer, keyed by `key`;
/// job `bad` (if any) carries a write that fails. The answers, by job number.
async fn at_once(
    app: &Arc<deckhand::app::App>,
    range: std::ops::Range<usize>,
    key: impl Fn(usize) -> String,
    bad: Option<usize>,
) -> Vec<(
    usize,
    deckhand::store::Result<deckhand::store::jobs::Enqueued>,
)> {
    let mut tasks = Vec::new();
    for i in range {
        let (app, key) = (app.clone(), key(i));
        let extra = if bad == Some(i) {
            // Its first "notice" moves a job that does not exist.
            Arc::new(|_, _| {
                vec![transition(
                    9_999_999,
                    &[state::RUNNING],
                    state::SUCCEEDED,
                    None,
                    None,
                )]
            }) as Arc<Extra>
        } else {
            audited("accepted")
        };
        tasks.push(tokio::spawn(async move {
            (i, app.intake.enqueue(job(&key, None), extra).await)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

both!(a_claim_takes_several_jobs_but_one_per_environment, claims);
async fn claims(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let none: &Extra = &|_, _| Vec::new();
    let mut id = std::collections::BTreeMap::new();
    for (key, env) in [
        ("a1", Some("a")),
        ("a2", Some("a")),
        ("b1", Some("b")),
        ("n1", None),
        ("n2", None),
        ("n3", None),
    ] {
        id.insert(key, app.db.enqueue(&job(key, env), none).await.unwrap().id);
    }
    let ids =
        |jobs: &[deckhand::store::jobs::JobRow]| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    // At most k, oldest first.
    let first = app.db.claim_batch("w1", 30_000, 2).await.unwrap();
    assert_eq!(ids(&first), vec![id["a1"], id["b1"]]);
    assert!(first.iter().all(|j| j.state == state::RUNNING));
    // The rest, but not a2: a1 runs on its environment.
    let next = app.db.claim_batch("w1", 30_000, 10).await.unwrap();
    assert_eq!(ids(&next), vec![id["n1"], id["n2"], id["n3"]]);
    assert!(
        app.db
            .claim_batch("w1", 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    app.db
        .apply(&[transition(
            id["a1"],
            &[state::RUNNING],
            state::SUCCEEDED,
            None,
            Some("w1"),
        )])
        .await
        .unwrap();
    let last = app.db.claim_batch("w1", 30_000, 10).await.unwrap();
    assert_eq!(ids(&last), vec![id["a2"]]);
}

both!(concurrent_batched_claims_take_each_job_once, claims_race);
async fn claims_race(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let none: &Extra = &|_, _| Vec::new();
    let envs = ["e0", "e1", "e2"];
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| job(&format!("r{i}"), (i % 4 != 3).then(|| envs[i % 3])))
        .collect();
    let batch: Vec<(&NewJob, &Extra)> = jobs.iter().map(|j| (j, none)).collect();
    app.db.enqueue_batch(&batch).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            let mut idle = 0;
            while idle < 200 {
                let got = app.db.claim_batch(&owner, 30_000, 8).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                // Never two of one environment running at once.
                let running = app.db.open_jobs(None).await.unwrap();
                let mut keys = BTreeSet::new();
                for j in running.iter().filter(|j| j.state == state::RUNNING) {
                    if let Some(k) = &j.concurrency_key {
                        assert!(keys.insert(k.clone()), "two running on {k}");
                    }
                }
                let ids = got.iter().map(|j| j.id).collect();
                let done =
                    transitions(ids, &[state::RUNNING], state::SUCCEEDED, None, Some(&owner));
                app.intake.apply(vec![done]).await.unwrap();
                mine.extend(got.into_iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a job was claimed twice");
    assert_eq!(unique.len(), 300, "every job was claimed");
}

both!(a_claim_ends_in_one_statement_or_not_at_all, ends);
async fn ends(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let none: &Extra = &|_, _| Vec::new();
    for i in 0..5 {
        app.db
            .enqueue(&job(&format!("f{i}"), None), none)
            .await
            .unwrap();
    }
    let got = app.db.claim_batch("w1", 30_000, 5).await.unwrap();
    let ids: Vec<i64> = got.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 5);
    let state_of = |app: Arc<deckhand::app::App>, id: i64| async move {
        app.db.job(id).await.unwrap().unwrap().state
    };
    // Another owner's end of them is refused whole: nothing moves.
    let theirs = transitions(
        ids.clone(),
        &[state::RUNNING],
        state::SUCCEEDED,
        None,
        Some("w2"),
    );
    let e = app.db.apply(&[theirs]).await.unwrap_err();
    assert!(deckhand::store::jobs::is_conflict(&e), "{e}");
    for &id in &ids {
        assert_eq!(state_of(app.clone(), id).await, state::RUNNING);
    }
    // One already ended elsewhere: the whole statement is refused, the others stay running.
    app.db
        .apply(&[transition(
            ids[2],
            &[state::RUNNING],
            state::FAILED,
            None,
            Some("w1"),
        )])
        .await
        .unwrap();
    let all = transitions(
        ids.clone(),
        &[state::RUNNING],
        state::SUCCEEDED,
        None,
        Some("w1"),
    );
    let e = app.intake.apply(vec![all]).await.unwrap_err();
    assert!(deckhand::store::jobs::is_conflict(&e), "{e}");
    assert_eq!(state_of(app.clone(), ids[0]).await, state::RUNNING);
    // The rest end together, with their end time and without their lease.
    let rest: Vec<i64> = ids.iter().copied().filter(|&i| i != ids[2]).collect();
    let end = transitions(
        rest.clone(),
        &[state::RUNNING],
        state::SUCCEEDED,
        None,
        Some("w1"),
    );
    app.intake.apply(vec![end]).await.unwrap();
    for &id in &rest {
        let j = app.db.job(id).await.unwrap().unwrap();
        assert_eq!(j.state, state::SUCCEEDED);
        assert!(j.finished_at.is_some() && j.lease_owner.is_none(), "{j:?}");
    }
    assert_eq!(state_of(app.clone(), ids[2]).await, state::FAILED);
}
