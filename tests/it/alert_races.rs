//! Repeats of one alert arriving at once, in one process and in two replicas on one
//! database: each is counted once, and the incident's newest message shows the count the
//! database holds (an alert storm once ended with 235 of 500 incidents showing one less).
//! Both backends.

use std::sync::Arc;

use crate::common::*;
use deckhand::app::App;

fn webhook(fp: &str) -> Vec<u8> {
    serde_json::json!({
        "version": "4", "status": "firing", "receiver": "deckhand",
        "groupLabels": {"alertname": "Race"},
        "commonLabels": {"alertname": "Race", "severity": "warning"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing",
            "labels": {"alertname": "Race", "severity": "warning"},
            "annotations": {"summary": "race"}, "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp}]
    })
    .to_string()
    .into_bytes()
}

async fn ingest(app: Arc<App>, body: Vec<u8>) {
    let parsed = deckhand::watch::alerts::parse("alertmanager", &body).unwrap();
    deckhand::watch::alerts::ingest(&app, parsed).await.unwrap();
}

/// The "Firing count" each of the incident's terminal messages showed, in order.
async fn counts_shown(app: &App, incident: i64) -> Vec<i64> {
    let bodies: Vec<String> = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar(
            "SELECT body FROM outbox WHERE thread_key = $1 AND platform = 'terminal' ORDER BY id",
        )
        .bind(format!("incident:{incident}"))
        .fetch_all(p)
        .await
        .unwrap()
    });
    bodies
        .iter()
        .filter_map(|b| {
            let n: serde_json::Value = serde_json::from_str(b).unwrap();
            n["fields"]
                .as_array()?
                .iter()
                .find(|f| f["label"] == "Firing count")?["value"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect()
}

both!(
    repeats_at_once_are_each_counted_and_shown_once,
    repeats_at_once
);
async fn repeats_at_once(b: Backend) {
    let Some(w) = Workspace::new(b, "[probes]\nenabled = false\n", &[]) else {
        return;
    };
    let (one, two) = (w.app(&[]).await, w.app(&[]).await);
    let body = webhook("race1");
    ingest(one.clone(), body.clone()).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(ingest(app, body.clone())));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let firing = one.db.firing_incidents().await.unwrap();
    assert_eq!(firing.len(), 1);
    let incident = &firing[0];
    assert_eq!(incident.firing_count, 41, "every repeat counted once");
    let mut shown = counts_shown(&one, incident.id).await;
    assert_eq!(
        shown.last(),
        Some(&41),
        "the newest message shows the true count"
    );
    shown.sort_unstable();
    assert_eq!(shown, (1..=41).collect::<Vec<_>>(), "each count shown once");
}
