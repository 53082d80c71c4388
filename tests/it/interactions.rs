//! Discord interactions Deckhand cannot take as they are: without an `id` (the idempotency
//! key) they are refused with 400; options a command does not take, or given twice, are
//! refused with the options it accepts; without a `channel_id` the command is taken and
//! answered on the interaction itself, with nothing left waiting in the outbox.

use crate::common::chat::*;
use crate::common::*;
use deckhand::store::jobs::state;

fn quick() -> String {
    deploy_command("quick", "everyone", r#"["true"]"#)
}

fn start() -> Chat {
    Chat::start(
        Backend::Sqlite,
        "[environments.qa]\n",
        &[("quick.toml", &quick())],
        &[],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_id_or_with_bad_options_nothing_is_queued() {
    let c = start();
    let app = c.ws.app(&[]).await;
    let ip = "10.3.0.1";
    let deploy =
        |id: &str, opts: &[(&str, &str)]| interaction(id, Some("31337"), "1001", "quick", opts);

    let mut no_id = deploy("x", &[("environment", "qa"), ("version", "abc1234")]);
    no_id.as_object_mut().unwrap().remove("id");
    let (status, text) = c.discord(&no_id, ip).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("without an id"), "{text}");

    let (status, text) = c
        .discord(
            &deploy(
                "o1",
                &[
                    ("environment", "qa"),
                    ("environment", "staging"),
                    ("version", "abc1234"),
                ],
            ),
            ip,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("option \"environment\" is given twice")
            && text.contains("accepted options: environment, version"),
        "{text}"
    );
    let (_, text) = c
        .discord(
            &deploy(
                "o2",
                &[
                    ("environment", "qa"),
                    ("version", "abc1234"),
                    ("colour", "red"),
                ],
            ),
            ip,
        )
        .await;
    assert!(
        text.contains(
            "/quick has no option \"colour\"; accepted options: environment, version, emergency"
        ),
        "{text}"
    );
    // Built-ins too.
    let lock = interaction(
        "o3",
        Some("31337"),
        "1001",
        "lock",
        &[("environment", "qa"), ("reason", "x"), ("force", "yes")],
    );
    let (_, text) = c.discord(&lock, ip).await;
    assert!(
        text.contains("/lock has no option \"force\"; accepted options: environment, reason"),
        "{text}"
    );
    let help = interaction("o4", Some("31337"), "1001", "help", &[("verbose", "1")]);
    let (_, text) = c.discord(&help, ip).await;
    assert!(text.contains("accepted options: none"), "{text}");

    assert!(app.db.recent_jobs(5).await.unwrap().is_empty());
    assert!(app.db.lock_of("qa").await.unwrap().is_none());
    // The same command, well formed, is taken.
    let (_, text) = c
        .discord(
            &deploy("o5", &[("environment", "qa"), ("version", "abc1234")]),
            ip,
        )
        .await;
    assert!(text.starts_with("Queued"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_channel_the_answer_goes_to_the_interaction() {
    let c = start();
    let app = c.ws.app(&[]).await;
    let mut body = interaction(
        "n1",
        Some("31337"),
        "1001",
        "quick",
        &[("environment", "qa"), ("version", "abc1234")],
    );
    body.as_object_mut().unwrap().remove("channel_id");
    let (status, text) = c.discord(&body, "10.3.0.2").await;
    assert_eq!(status, 200);
    assert!(text.starts_with("Queued"), "{text}");
    let job = app.db.recent_jobs(1).await.unwrap()[0].id;
    wait_state(&app, job, state::SUCCEEDED).await;
    // The report is a follow-up on the interaction's token...
    let follow_up = eventually(20, "the follow-up", || async {
        c.fake
            .ok_calls("/api/v10/webhooks/424242/tok-n1")
            .into_iter()
            .find(|call| call.body.to_string().contains("abc1234"))
    })
    .await;
    assert_eq!(follow_up.method, "POST");
    // ...nothing goes to a channel, and nothing is left to retry.
    eventually(20, "an empty outbox", || async {
        let pending: i64 = app
            .db
            .outbox_depth()
            .await
            .unwrap()
            .iter()
            .map(|d| d.1)
            .sum();
        (pending == 0).then_some(())
    })
    .await;
    assert!(
        !c.fake
            .calls()
            .iter()
            .any(|call| call.path.contains("/channels/")),
        "{:#?}",
        c.fake.calls()
    );
}
