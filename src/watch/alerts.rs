//! Alert intake: Alertmanager (webhook v4), Grafana and a small generic JSON, into
//! incidents. Alert senders do not sign their requests, so the endpoints take a bearer
//! token (`DECKHAND_ALERT_TOKEN`, compared in constant time).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::app::App;
use crate::config::alerts::AlertsConfig;
use crate::outbox::routes::destinations;
use crate::watch::incidents::{Event, severity_of};

/// An alert with the labels routing looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub event: Event,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct WebhookV4 {
    #[serde(default)]
    alerts: Vec<WebhookAlert>,
    #[serde(default, rename = "groupKey")]
    group_key: Option<String>,
    /// Grafana adds a title and a message for the group.
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WebhookAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(default, rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// The small documented JSON of `POST /alerts/generic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    title: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    link: Option<String>,
}

fn ms(ts: Option<&str>) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts?).ok()?;
    // Alertmanager's zero time means "not set".
    (t.timestamp() > 0).then(|| t.timestamp_millis())
}

fn fingerprint_of(labels: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Why an alert body was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// Not one of the endpoints: 404.
    #[error("unknown alert source {0:?}; accepted: alertmanager, grafana, generic")]
    UnknownSource(String),
    /// The body does not have the source's shape: 400.
    #[error("{0}")]
    Malformed(String),
}

/// Parse a webhook body from `source` (alertmanager, grafana or generic).
pub fn parse(source: &str, body: &[u8]) -> Result<Vec<Parsed>, AlertError> {
    let now = crate::domain::time::now_ms();
    match source {
        "alertmanager" | "grafana" => parse_webhook(source, body, now),
        "generic" => parse_generic(body, now).map(|p| vec![p]),
        other => Err(AlertError::UnknownSource(other.to_owned())),
    }
}

/// Alertmanager's webhook v4, which Grafana also sends: one event per alert of the group.
fn parse_webhook(source: &str, body: &[u8], now: i64) -> Result<Vec<Parsed>, AlertError> {
    let p: WebhookV4 = serde_json::from_slice(body)
        .map_err(|e| AlertError::Malformed(format!("malformed {source} payload: {e}")))?;
    let _ = &p.group_key;
    Ok(p.alerts
        .into_iter()
        .map(|a| webhook_alert(source, a, p.message.as_deref(), now))
        .collect())
}

/// One alert of a webhook group; the group's `message` stands in for a missing description.
fn webhook_alert(source: &str, a: WebhookAlert, message: Option<&str>, now: i64) -> Parsed {
    let fp = a
        .fingerprint
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| fingerprint_of(&a.labels));
    let resolved = a.status == "resolved";
    let title = a
        .annotations
        .get("summary")
        .or_else(|| a.labels.get("alertname"))
        .cloned()
        .unwrap_or_else(|| "alert".into());
    let label = |k: &str, or: &str| a.labels.get(k).or_else(|| a.labels.get(or)).cloned();
    let event = Event {
        dedup_key: format!("{source}:{fp}"),
        source: source.into(),
        title: crate::domain::text::cut(&title, 200),
        severity: severity_of(label("severity", "priority").as_deref()),
        environment: label("environment", "env"),
        service: label("service", "job"),
        description: a
            .annotations
            .get("description")
            .cloned()
            .or_else(|| message.map(str::to_owned))
            .map(|d| crate::domain::text::cut(&d, 2000)),
        link: a.generator_url.clone().filter(|u| !u.is_empty()),
        resolved,
        at: if resolved {
            ms(a.ends_at.as_deref())
        } else {
            ms(a.starts_at.as_deref())
        }
        .unwrap_or(now),
    };
    Parsed {
        event,
        labels: a.labels,
    }
}

/// The generic JSON: one event, deduplicated by `dedup_key` or by its title and labels.
fn parse_generic(body: &[u8], now: i64) -> Result<Parsed, AlertError> {
    let g: Generic = serde_json::from_slice(body).map_err(|e| AlertError::Malformed(format!("malformed generic alert: {e}; expected {{\"title\", \"severity\", \"environment\", \"service\", \"description\", \"dedup_key\", \"status\": \"firing\"|\"resolved\", \"link\"}}")))?;
    let resolved = match g.status.as_deref() {
        None | Some("firing") | Some("triggered") => false,
        Some("resolved") => true,
        Some(other) => {
            return Err(AlertError::Malformed(format!(
                "status {other:?} is not accepted; expected \"firing\" or \"resolved\""
            )));
        }
    };
    if g.title.trim().is_empty() {
        return Err(AlertError::Malformed("title must not be empty".into()));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("environment", &g.environment),
        ("severity", &g.severity),
        ("service", &g.service),
    ] {
        if let Some(v) = v {
            labels.insert(k.to_owned(), v.clone());
        }
    }
    let key = g.dedup_key.clone().unwrap_or_else(|| {
        let mut l = labels.clone();
        l.insert("title".into(), g.title.clone());
        fingerprint_of(&l)
    });
    Ok(Parsed {
        event: Event {
            dedup_key: format!("generic:{}", crate::domain::text::cut(&key, 200)),
            source: "generic".into(),
            title: crate::domain::text::cut(&g.title, 200),
            severity: severity_of(g.severity.as_deref()),
            environment: g.environment,
            service: g.service,
            description: g.description.map(|d| crate::domain::text::cut(&d, 2000)),
            link: g.link,
            resolved,
            at: now,
        },
        labels,
    })
}

/// Where an incident goes and how severe it is: the first route whose labels all match.
pub fn route(
    cfg: &AlertsConfig,
    labels: &BTreeMap<String, String>,
    severity: &str,
) -> (String, BTreeMap<String, String>) {
    for r in &cfg.routes {
        if r.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            let channels = if r.channels.is_empty() {
                cfg.channels.clone()
            } else {
                r.channels.clone()
            };
            return (
                r.severity.clone().unwrap_or_else(|| severity.to_owned()),
                channels,
            );
        }
    }
    (severity.to_owned(), cfg.channels.clone())
}

/// Record every alert of a payload; returns how many.
pub async fn ingest(app: &App, parsed: Vec<Parsed>) -> anyhow::Result<usize> {
    let mut n = 0;
    for mut p in parsed {
        let (severity, channels) = route(&app.settings.config.alerts, &p.labels, &p.event.severity);
        p.event.severity = severity;
        let dest = destinations(&app.settings, &channels);
        let recorded = crate::watch::incidents::record(
            &app.db,
            &app.intake,
            &app.outbox_wake,
            &p.event,
            &dest,
        )
        .await?;
        if let crate::watch::incidents::Recorded::Opened(id) = recorded
            && let Some(row) = app.db.incident(id).await?
            && let Err(e) = crate::watch::deploys::link(app, &row).await
        {
            // The incident itself is recorded; only its link to a deploy is missing.
            tracing::warn!(incident = id, error = %e, "cannot link the alert to a deploy");
        }
        n += 1;
    }
    Ok(n)
}
