//! Alerts linked to deploys: after a clean watch, an alert for the environment within
//! `link_alerts_seconds` names the deploy it followed, with a Roll back button, under the
//! incident's message and in the job's thread. Both backends.

use crate::common::prom::Answer;
use crate::common::*;
use crate::watch::{alert, done, ingest, notices_of, setup, start};
use deckhand::app::App;
use deckhand::store::jobs::state;

async fn thread_bodies(app: &App, thread: &str) -> Vec<String> {
    deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar::<_, String>("SELECT body FROM outbox WHERE thread_key = $1 ORDER BY id")
            .bind(thread)
            .fetch_all(p)
            .await
            .unwrap()
    })
}

/// After a clean watch, an alert within `link_alerts_seconds` names the deploy it followed
/// with a Roll back button, under the incident and in the job's thread; past the window,
/// or on another environment, it names nothing.
async fn an_alert_after_the_watch_names_the_deploy(backend: Backend) {
    let Some((_prom, _w, app, stop)) = setup(
        backend,
        "staging",
        1,
        "link_alerts_seconds = 600",
        [Some(Answer::Value(0.0)), Some(Answer::Value(0.1))],
        &[],
    )
    .await
    else {
        return;
    };
    let id = start(&app, "deploy staging abc1234").await;
    let j = done(&app, id).await;
    assert_eq!(j.state, state::SUCCEEDED, "{:?}", j.result);
    let before = notices_of(&app, id).await.len();

    ingest(
        &app,
        &alert("staging", "HighErrorRate", "warning", "after1"),
    )
    .await;
    let incident = app.db.firing_incidents().await.unwrap();
    let incident = incident
        .iter()
        .find(|i| i.title.contains("HighErrorRate"))
        .expect("the incident");
    let linked = |b: &String| {
        b.contains("HighErrorRate fired ")
            && b.contains(" after abc1234 reached staging — Roll back?")
    };
    let under_incident = thread_bodies(&app, &format!("incident:{}", incident.id)).await;
    assert_eq!(under_incident.len(), 2, "{under_incident:#?}");
    assert!(linked(&under_incident[1]), "{}", under_incident[1]);
    let reply: serde_json::Value = serde_json::from_str(&under_incident[1]).unwrap();
    assert_eq!(reply["reply"], true, "{reply}");
    assert_eq!(reply["actions"][0]["action"], "rollback", "{reply}");
    assert_eq!(reply["actions"][0]["job_id"], id, "{reply}");
    let in_job = notices_of(&app, id).await;
    assert_eq!(in_job.len(), before + 1, "{in_job:#?}");
    assert!(linked(in_job.last().unwrap()), "{}", in_job.last().unwrap());

    // Production had no deploy: its alert names none.
    ingest(&app, &alert("production", "DiskFull", "warning", "after2")).await;
    let all = app.db.firing_incidents().await.unwrap();
    let disk = all.iter().find(|i| i.title.contains("DiskFull")).unwrap();
    let bodies = thread_bodies(&app, &format!("incident:{}", disk.id)).await;
    assert_eq!(bodies.len(), 1, "no link: {bodies:#?}");
    stop.cancel();
}
both!(alert_after_watch, an_alert_after_the_watch_names_the_deploy);
