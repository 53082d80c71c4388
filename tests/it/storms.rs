//! The outbox under a storm (issue 19): newer states of a message supersede the waiting
//! ones, urgent new messages go first, and each kind of send is paced on its own. The
//! end-to-end storm (1,000 repeats of an alert, then a P0) is in `alerts.rs`.

use crate::common::*;
use deckhand::domain::notice::{Notice, NoticeKind, Tone};
use deckhand::outbox::OutboxRow;
use deckhand::store::{NewNotice, Write};

fn notice(thread: &str, channel: &str, title: &str, reply: bool) -> Write {
    let mut n = Notice::new(NoticeKind::InfrastructureIssue, Tone::Danger, title);
    if reply {
        n = n.as_reply();
    }
    Write::Notice(NewNotice::new(
        None,
        "slack",
        Some(channel.into()),
        thread,
        &n,
    ))
}

fn title(r: &OutboxRow) -> String {
    r.notice().unwrap().title
}

both!(
    newer_states_supersede_waiting_ones_but_never_a_reply,
    supersede
);
async fn supersede(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let ids = app
        .db
        .apply(&[
            notice("t", "C1", "a1", false),
            notice("t", "C1", "a2", false),
            notice("t", "C1", "a3", false),
            notice("t", "C1", "reply", true),
            notice("t", "C1", "a4", false),
            notice("t", "C1", "a5", false),
            notice("t", "C2", "other channel", false),
        ])
        .await
        .unwrap();
    // The thread's first notice is claimed; a2 and a3 wait behind it with the whole
    // message, so a3 goes in its place, a1 and a2 are settled as superseded.
    let first = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    assert_eq!(first.iter().map(title).collect::<Vec<_>>(), ["a1"]);
    let (newest, n) = app.db.supersede(&first[0], "s").await.unwrap().unwrap();
    assert_eq!((title(&newest), n), ("a3".to_owned(), 2));
    assert_eq!(newest.claimed_by.as_deref(), Some("s"));
    // a1 opened the message: the notice sent instead keeps its place in the order.
    assert_eq!(newest.priority, first[0].priority);
    assert_eq!(
        first[0].priority,
        deckhand::outbox::priority::NEW,
        "a new message"
    );
    for id in &ids[..2] {
        let r = row(&app, *id).await;
        assert!(superseded(&r), "{r:?}");
        assert!(r.delivered_at.is_some());
    }
    app.db.mark_delivered(newest.id).await.unwrap();
    // The reply needs the message as it was: it is not skipped, and nothing before it
    // supersedes past it.
    let next = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    assert_eq!(next.iter().map(title).collect::<Vec<_>>(), ["reply"]);
    app.db.mark_delivered(next[0].id).await.unwrap();
    let next = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    assert_eq!(next.iter().map(title).collect::<Vec<_>>(), ["a4"]);
    assert_eq!(next[0].priority, deckhand::outbox::priority::FOLLOW_UP);
    let (newest, n) = app.db.supersede(&next[0], "s").await.unwrap().unwrap();
    assert_eq!((title(&newest), n), ("a5".to_owned(), 1));
    app.db.mark_delivered(newest.id).await.unwrap();
    // Another channel's copy of the thread is its own message: never superseded by C1's.
    let other = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    assert_eq!(
        other.iter().map(title).collect::<Vec<_>>(),
        ["other channel"]
    );
    assert!(app.db.supersede(&other[0], "s").await.unwrap().is_none());
    assert!(!superseded(&row(&app, ids[6]).await));
}

both!(urgent_new_messages_go_first_and_edits_last, priority_order);
async fn priority_order(b: Backend) {
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let app = w.app(&[]).await;
    let urgent = |thread: &str, title: &str| {
        let n = Notice::new(NoticeKind::InfrastructureIssue, Tone::Danger, title);
        Write::Notice(NewNotice::new(None, "slack", Some("C".into()), thread, &n).urgent(true))
    };
    // An edit of a posted message, a new message, and a new P0 last of all.
    app.db
        .apply(&[notice("old", "C", "old post", false)])
        .await
        .unwrap();
    let posted = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    app.db.mark_delivered(posted[0].id).await.unwrap();
    app.db
        .set_message_ref("slack", "C", "old", "1700000000.000100")
        .await
        .unwrap();
    app.db
        .apply(&[
            notice("old", "C", "old edit", false),
            notice("job", "C", "job post", false),
            urgent("p0", "p0 post"),
            // An urgent notice that follows up its message is an edit like any other.
            urgent("old", "urgent edit"),
        ])
        .await
        .unwrap();
    let order = app.db.claim_notices(&["slack"], "s", 10).await.unwrap();
    assert_eq!(
        order.iter().map(title).collect::<Vec<_>>(),
        ["p0 post", "job post", "old edit"],
        "urgent new message, new message, edit (the urgent edit waits in its thread)"
    );
    let edit = order.iter().find(|r| title(r) == "old edit").unwrap();
    assert!(deckhand::outbox::is_edit(edit));
    assert!(!deckhand::outbox::is_edit(&order[0]));
    // A paused kind of send is left alone: with Slack's edits paused, only new messages
    // would be claimed.
    for r in &order {
        app.db.defer(&[r.id], 0).await.unwrap();
    }
    let paused = [deckhand::outbox::Paused {
        platform: "slack".into(),
        channel: None,
        edits: true,
    }];
    let claimed = app
        .db
        .claim_notices_except(&["slack"], "s", 10, &paused)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(title).collect::<Vec<_>>(),
        ["p0 post", "job post"]
    );
    // With new messages in channel C paused, only the edit is taken.
    for r in &claimed {
        app.db.defer(&[r.id], 0).await.unwrap();
    }
    let paused = [deckhand::outbox::Paused {
        platform: "slack".into(),
        channel: Some("C".into()),
        edits: false,
    }];
    let claimed = app
        .db
        .claim_notices_except(&["slack"], "s", 10, &paused)
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(title).collect::<Vec<_>>(), ["old edit"]);
}

async fn row(app: &deckhand::app::App, id: i64) -> OutboxRow {
    deckhand::on_db!(&app.db, p => {
        sqlx::query_as("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap()
    })
}

both!(
    each_kind_of_send_has_its_own_pace_and_retry_after,
    paced_by_method
);
async fn paced_by_method(b: Backend) {
    use crate::common::fake::{FakeApi, Scripted};
    use std::time::Duration;
    let Some(w) = Workspace::new(b, "", &[]) else {
        return;
    };
    let fake = FakeApi::start();
    let api = fake.url("/api");
    let app = w
        .app(&[("SLACK_BOT_TOKEN", "xoxb-pace"), ("SLACK_API_URL", &api)])
        .await;
    let stop = deckhand::support::runner::CancelToken::new();
    let sender = tokio::spawn(deckhand::outbox::run_sender(
        app.clone(),
        deckhand::server::deliverers(&app, false),
        stop.clone(),
    ));
    let ok = |path: &'static str, title: &'static str| {
        let fake = &fake;
        move || async move {
            fake.ok_calls(path)
                .into_iter()
                .find(|c| c.body["text"].as_str().unwrap_or("").contains(title))
        }
    };
    app.db
        .apply(&[
            notice("a", "C1", "a posted", false),
            notice("c", "C2", "c posted", false),
        ])
        .await
        .unwrap();
    app.poke();
    eventually(20, "a posted", ok("/api/chat.postMessage", "a posted")).await;
    eventually(20, "c posted", ok("/api/chat.postMessage", "c posted")).await;

    // Slack answers the next call, an edit, with 429 and Retry-After: 3.
    fake.fail_next([Scripted::slack_429(3)]);
    app.db
        .apply(&[notice("a", "C1", "a edited", false)])
        .await
        .unwrap();
    app.poke();
    let limited = eventually(20, "the edit refused with 429", || async {
        fake.calls().into_iter().find(|c| c.status == 429)
    })
    .await;
    assert_eq!(limited.path, "/api/chat.update");
    // The 429 pauses edits, in every channel (a workspace-wide tier), for as long as Slack
    // asked; a new message is another method and does not wait it out.
    app.db
        .apply(&[
            notice("b", "C1", "b posted", false),
            notice("c", "C2", "c edited", false),
        ])
        .await
        .unwrap();
    app.poke();
    let b_post = eventually(20, "b posted", ok("/api/chat.postMessage", "b posted")).await;
    let a_edit = eventually(20, "a edited", ok("/api/chat.update", "a edited")).await;
    let c_edit = eventually(20, "c edited", ok("/api/chat.update", "c edited")).await;
    for (what, edit) in [("a", &a_edit), ("c", &c_edit)] {
        assert!(
            b_post.at < edit.at,
            "the post went while edits waited ({what})"
        );
        assert!(
            edit.at - limited.at >= Duration::from_millis(2900),
            "{what}'s edit waited for Retry-After: {:?}",
            edit.at - limited.at
        );
    }
    assert!(
        b_post.at - limited.at < Duration::from_millis(2500),
        "the post did not wait for the edits' Retry-After: {:?}",
        b_post.at - limited.at
    );

    // Edits are one workspace-wide tier: two channels' edits due at once go 1.2 s apart.
    app.db
        .apply(&[
            notice("a", "C1", "a again", false),
            notice("c", "C2", "c again", false),
        ])
        .await
        .unwrap();
    app.poke();
    let first = eventually(20, "a again", ok("/api/chat.update", "a again")).await;
    let second = eventually(20, "c again", ok("/api/chat.update", "c again")).await;
    let gap = if second.at > first.at {
        second.at - first.at
    } else {
        first.at - second.at
    };
    assert!(gap >= Duration::from_millis(1150), "{gap:?}");
    stop.cancel();
    let _ = sender.await;
}
