//! `kill -9` while the group-commit writer has batches in flight under load: every
//! acknowledged command has its row, and every row belongs to a command that was
//! acknowledged, told "slow to confirm", or got no answer at all (the process died between
//! the commit and the reply; Slack's retry then finds the job, as for a lone command).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{command, job_id, slack_env, start};
use crate::common::fake::FakeApi;
use crate::common::*;

const NOOP: &str = r#"
name = "noop"
description = "Does nothing"
kind = "custom"
role = "everyone"
[[steps]]
name = "true"
argv = ["true"]
"#;

/// What one command got back.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Job(i64),
    Slow,
    Other(String),
    None,
}

fn answer(r: Option<(u16, String)>) -> Answer {
    match r {
        None => Answer::None,
        Some((200, t)) if t.starts_with("Queued ") => Answer::Job(job_id(&t)),
        Some((200, t)) if t.contains("slow to confirm") => Answer::Slow,
        Some((s, t)) => Answer::Other(format!("{s} {t}")),
    }
}

async fn kill_mid_batch(backend: Backend) {
    let Some(ws) = Workspace::new(
        backend,
        "[probes]\nenabled = false\n",
        &[("noop.toml", NOOP)],
    ) else {
        return;
    };
    let fake = FakeApi::start();
    let mut server = start(&ws, &slack_env(&fake));
    let url = server.url("");
    let acked = Arc::new(AtomicUsize::new(0));
    // 400 commands from 40 senders at once; the server dies once 100 are acknowledged.
    let mut tasks = Vec::new();
    for s in 0..40 {
        let (url, acked) = (url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10 {
                let trigger = format!("t{s}-{i}");
                let a = answer(command(&url, "noop", &trigger).await);
                if matches!(a, Answer::Job(_)) {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                got.push((trigger, a));
            }
            got
        }));
    }
    eventually(60, "100 acknowledgements", || async {
        (acked.load(Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    server.kill9();
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let app = ws.app(&[]).await;
    let rows: BTreeMap<String, i64> = app
        .db
        .recent_jobs(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| {
            let key = j.idempotency_key.unwrap_or_default();
            (key.trim_start_matches("slack:").to_owned(), j.id)
        })
        .collect();
    let count = |f: fn(&Answer) -> bool| answers.values().filter(|a| f(a)).count();
    println!(
        "{} acknowledged, {} slow to confirm, {} unanswered, {} rows",
        count(|a| matches!(a, Answer::Job(_))),
        count(|a| *a == Answer::Slow),
        count(|a| *a == Answer::None),
        rows.len()
    );
    let odd: Vec<_> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Other(_)))
        .collect();
    assert!(odd.is_empty(), "answers other than a job or slow: {odd:?}");
    // Nothing acknowledged is lost: each acknowledged command has its row, with its id.
    for (trigger, a) in &answers {
        if let Answer::Job(id) = a {
            assert_eq!(
                rows.get(trigger),
                Some(id),
                "{trigger} was acknowledged as job {id}"
            );
        }
    }
    // Nothing is on disk that was not asked for, and no command has two rows.
    let asked: BTreeSet<&String> = answers.keys().collect();
    assert!(
        rows.keys().all(|k| asked.contains(k)),
        "a row nobody asked for"
    );
    assert!(
        count(|a| matches!(a, Answer::Job(_))) >= 100,
        "the kill came after 100 acknowledgements"
    );
    // Slack retries what got no answer: a row that was committed is found, not doubled;
    // one that was not is made now.
    let restarted = start(&ws, &slack_env(&fake));
    for (trigger, a) in answers
        .iter()
        .filter(|(_, a)| **a == Answer::None || **a == Answer::Slow)
    {
        let (_, text) = command(&restarted.url(""), "noop", trigger).await.unwrap();
        match rows.get(trigger) {
            Some(id) => {
                assert!(
                    text.starts_with("Already received"),
                    "{trigger} ({a:?}): {text}"
                );
                assert_eq!(job_id(&text), *id);
            }
            None => assert!(text.starts_with("Queued "), "{trigger} ({a:?}): {text}"),
        }
    }
    let after = app.db.recent_jobs(10_000).await.unwrap();
    let keys: BTreeSet<_> = after.iter().map(|j| j.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), after.len(), "one row per command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn kill_9_mid_batch_under_load_sqlite() {
    kill_mid_batch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/test-faults"]
async fn kill_9_mid_batch_under_load_postgres() {
    kill_mid_batch(Backend::Postgres).await;
}
