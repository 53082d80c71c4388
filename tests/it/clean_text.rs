//! Free text is clean text: a `text` argument, a lock reason or an `--emergency` reason with
//! a control character or a bidirectional override is refused, naming the character, before
//! anything is written.

use crate::common::*;
use deckhand::app::App;
use deckhand::intake::policy::Identity;
use deckhand::intake::{Invocation, Outcome, submit};

async fn say(app: &std::sync::Arc<App>, command: &str, args: &[&str]) -> Outcome {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    submit(
        app,
        Invocation {
            platform: "slack".into(),
            identity: Identity::Slack {
                user: "UADMIN".into(),
            },
            actor: "slack:UADMIN".into(),
            channel: Some("CTEST".into()),
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            request_id: Some(hex::encode(b)),
            reply_to: None,
        },
    )
    .await
    .unwrap()
}

/// NUL, another control character, and bidirectional overrides or isolates.
const UNCLEAN: &[(&str, &str)] = &[
    ("db\0down", "a control character (U+0000)"),
    ("db\u{1b}[31mdown", "a control character (U+001B)"),
    ("db\ndown", "a control character (U+000A)"),
    ("db\u{202E}nwod", "a bidirectional override (U+202E)"),
    ("db\u{2067}down", "a bidirectional override (U+2067)"),
];

fn refused(o: Outcome) -> String {
    match o {
        Outcome::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const NOTE: &str = r#"name = "note"
description = "Leave a note"
kind = "custom"
[[args]]
name = "text"
kind = "text"
pattern = "(?s).{1,200}"
[roles]
"*" = "everyone"
[[steps]]
name = "work"
argv = ["true"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_lock_reasons_are_refused_and_lock_nothing() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let app = ws.app(&[]).await;
    for (reason, why) in UNCLEAN {
        let r = refused(say(&app, "lock", &["staging", "maintenance", reason]).await);
        assert!(
            r.contains("the lock reason contains") && r.contains(why),
            "{reason:?}: {r}"
        );
        assert!(app.db.locks().await.unwrap().is_empty(), "{reason:?}");
    }
    // Clean text still locks.
    assert!(matches!(
        say(&app, "lock", &["staging", "db → maintenance"]).await,
        Outcome::Info(_)
    ));
    assert_eq!(app.db.locks().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_text_arguments_and_emergency_reasons_are_refused_and_queue_nothing() {
    let ws = Workspace::new(Backend::Sqlite, "", &[("note.toml", NOTE)]).unwrap();
    let app = ws.app(&[]).await;
    for (text, why) in UNCLEAN {
        let r = refused(say(&app, "note", &[text]).await);
        assert!(
            r.contains("TEXT contains") && r.contains(why),
            "{text:?}: {r}"
        );
        let r = refused(
            say(
                &app,
                "deploy",
                &["production", "zzz9999", "--emergency", text],
            )
            .await,
        );
        assert!(
            r.contains("the --emergency reason contains") && r.contains(why),
            "{text:?}: {r}"
        );
        let r = refused(
            say(
                &app,
                "deploy",
                &["production", "zzz9999", &format!("--emergency={text}")],
            )
            .await,
        );
        assert!(r.contains(why), "{text:?}: {r}");
        assert!(app.db.recent_jobs(5).await.unwrap().is_empty(), "{text:?}");
    }
    // Clean text is accepted.
    assert!(matches!(
        say(&app, "note", &["all good → ship"]).await,
        Outcome::Accepted { .. }
    ));
}
