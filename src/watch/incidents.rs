//! Incidents: one message per incident, updated in place.
//!
//! An alert or a failing probe becomes an incident row while it fires; repeats update the
//! row and the same chat message (firing count, last seen). Resolution turns the message
//! into "resolved after 12 min" and posts a *blocker resolved* reply under it. Someone
//! acknowledges with a button; P0/P1 incidents that nobody acknowledged are reminded.

use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::platform::Platform;
use crate::domain::time::fmt_duration;
use crate::domain::time::fmt_time;
use crate::domain::time::now_ms;
use crate::store::Db;
use crate::store::group::GroupCommit;
use crate::store::incidents as store;
pub use crate::store::incidents::{Event, IncidentRow};
use crate::store::{AuditEvent, NewNotice, Result, Write};
use tokio::sync::Notify;

impl IncidentRow {
    pub fn routes(&self) -> Vec<(String, Option<String>)> {
        serde_json::from_str(&self.channels).unwrap_or_default()
    }
    pub fn thread(&self) -> String {
        format!("incident:{}", self.id)
    }
    /// The incident's message, as it should look now.
    pub fn notice(&self) -> Notice {
        let firing = self.status == "firing";
        let place = self.environment.as_deref().unwrap_or("-");
        let title = if firing {
            format!("[{}] {}: {}", self.severity, place, self.title)
        } else {
            format!(
                "Resolved after {}: [{}] {}: {}",
                fmt_duration(self.resolved_at.unwrap_or(self.last_seen) - self.first_seen),
                self.severity,
                place,
                self.title
            )
        };
        let tone = match (firing, self.severity.as_str()) {
            (false, _) => Tone::Success,
            (true, "P0" | "P1") => Tone::Danger,
            _ => Tone::Warning,
        };
        let mut n = Notice::new(NoticeKind::InfrastructureIssue, tone, title)
            .env(self.environment.as_deref())
            .field("Severity", &self.severity)
            .field("Environment", place)
            .field("Status", if firing { "firing" } else { "resolved" })
            .field("Firing count", self.firing_count.to_string())
            .field("First seen", fmt_time(self.first_seen))
            .field("Last seen", fmt_time(self.last_seen))
            .field("Source", &self.source);
        if let Some(s) = &self.service {
            n = n.field("Service", s);
        }
        if let Some(l) = &self.link {
            n = n.field("Link", l);
        }
        n = n.field(
            "Acknowledged by",
            self.acked_by.clone().unwrap_or_else(|| "nobody yet".into()),
        );
        if let Some(d) = &self.description {
            n = n.body(d.clone());
        }
        if firing && self.acked_by.is_none() {
            n = n.action("ack", "Acknowledge", self.id, false);
        }
        n
    }
}

pub(crate) fn notice_writes(row: &IncidentRow, n: &Notice) -> Vec<Write> {
    row.routes()
        .into_iter()
        .map(|(platform, channel)| {
            Write::Notice(
                NewNotice::new(None, platform, channel, row.thread(), n)
                    .urgent(matches!(row.severity.as_str(), "P0" | "P1")),
            )
        })
        .collect()
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Opened(i64),
    Updated(i64),
    Resolved(i64),
    /// A resolution for nothing open: nothing to do.
    Ignored,
}

/// Record one event: open, update or resolve its incident and write the notices, each
/// state change with its notices in one transaction.
///
/// Takes only what it uses: the database to read, the group-commit writer to write (an
/// alert storm's updates share commits, like a burst of commands), and the sender's wake-up.
pub async fn record(
    db: &Db,
    writer: &GroupCommit,
    wake: &Notify,
    e: &Event,
    routes: &[(String, Option<String>)],
) -> Result<Recorded> {
    let now = now_ms();
    // Events of one incident are recorded one at a time in this process, so their guarded
    // updates do not race each other (replicas can still race: the guard and a retry settle it).
    let _one_at_a_time = key_lock(&e.dedup_key).lock().await;
    for _ in 0..ATTEMPTS {
        match db.open_incident(&e.dedup_key).await? {
            None if e.resolved => return Ok(Recorded::Ignored),
            None => {
                let channels = serde_json::to_string(routes).unwrap_or_else(|_| "[]".into());
                let Some(id) = db.insert_incident(e, &channels).await? else {
                    continue;
                };
                let row = db.incident(id).await?.expect("just inserted");
                let mut w = notice_writes(&row, &row.notice());
                w.push(audit(&row, "incident_opened", &e.title));
                writer.apply(w).await?;
                wake.notify_one();
                return Ok(Recorded::Opened(id));
            }
            Some(mut row) if e.resolved => {
                row.status = "resolved".into();
                row.resolved_at = Some(e.at.clamp(row.first_seen, now));
                row.last_seen = now;
                let took = fmt_duration(row.resolved_at.unwrap_or(now) - row.first_seen);
                let reply = Notice::new(
                    NoticeKind::BlockerResolved,
                    Tone::Success,
                    format!(
                        "Blocker resolved: {} on {} after {took}",
                        row.title,
                        row.environment.as_deref().unwrap_or("-")
                    ),
                )
                .env(row.environment.as_deref())
                .as_reply();
                let mut w = vec![store::resolve(row.id, row.resolved_at.unwrap_or(now), now)];
                w.extend(notice_writes(&row, &row.notice()));
                w.extend(notice_writes(&row, &reply));
                w.push(audit(&row, "incident_resolved", &format!("after {took}")));
                if writer.apply_if_first(w).await? {
                    wake.notify_one();
                    return Ok(Recorded::Resolved(row.id));
                }
            }
            Some(mut row) => {
                let seen = row.firing_count;
                row.firing_count += 1;
                row.last_seen = now;
                row.title = e.title.clone();
                if e.description.is_some() {
                    row.description = e.description.clone();
                }
                let mut w = vec![store::repeat(
                    row.id,
                    now,
                    &e.title,
                    e.description.as_deref(),
                    seen,
                )];
                w.extend(notice_writes(&row, &row.notice()));
                if writer.apply_if_first(w).await? {
                    wake.notify_one();
                    return Ok(Recorded::Updated(row.id));
                }
            }
        }
    }
    // Moved by others every time: answer with an error, so the sender retries (nothing lost).
    Err(crate::store::StoreError::Conflict(format!(
        "incident {} kept changing under {ATTEMPTS} tries",
        e.dedup_key
    )))
}

/// Tries of [`record`] when another replica moved the incident first.
const ATTEMPTS: usize = 8;

/// One of a fixed set of locks, by the incident's key: events of one incident share one.
fn key_lock(key: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    static LOCKS: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    &locks[(h.finish() % locks.len() as u64) as usize]
}

fn audit(row: &IncidentRow, action: &str, detail: &str) -> Write {
    Write::Audit(AuditEvent {
        actor: row.source.clone(),
        platform: Platform::Alerts.as_str().into(),
        action: action.into(),
        environment: row.environment.clone(),
        job_id: None,
        detail: format!(
            "incident {} [{}] {}: {detail}",
            row.id, row.severity, row.title
        ),
    })
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Recorded: the incident's title.
    Taken(String),
    NoSuchIncident,
    AlreadyAcknowledged {
        by: String,
    },
    AlreadyResolved,
    /// Someone else acknowledged it between our read and our write.
    LostRace,
}

impl Ack {
    /// The answer for the person who clicked, and whether it is a refusal.
    pub fn answer(&self, id: i64) -> (bool, String) {
        match self {
            Ack::Taken(title) => (false, format!("You took incident {id}: {title}")),
            Ack::NoSuchIncident => (true, format!("there is no incident {id}")),
            Ack::AlreadyAcknowledged { by } => (
                false,
                format!("Incident {id} was already acknowledged by {by}"),
            ),
            Ack::AlreadyResolved => (false, format!("Incident {id} is already resolved")),
            Ack::LostRace => (
                false,
                format!("Incident {id} was acknowledged by someone else a moment ago"),
            ),
        }
    }
}

/// Someone takes the incident: record who, and show it on the message.
pub async fn acknowledge(
    db: &Db,
    wake: &Notify,
    id: i64,
    actor: &str,
    platform: &str,
) -> Result<Ack> {
    let Some(mut row) = db.incident(id).await? else {
        return Ok(Ack::NoSuchIncident);
    };
    if let Some(by) = &row.acked_by {
        return Ok(Ack::AlreadyAcknowledged { by: by.clone() });
    }
    if row.status != "firing" {
        return Ok(Ack::AlreadyResolved);
    }
    let now = now_ms();
    row.acked_by = Some(actor.to_owned());
    row.acked_at = Some(now);
    let mut w = vec![store::acknowledge(id, actor, now)];
    w.extend(notice_writes(&row, &row.notice()));
    w.push(Write::Audit(AuditEvent {
        actor: actor.into(),
        platform: platform.into(),
        action: "incident_acknowledged".into(),
        environment: row.environment.clone(),
        job_id: None,
        detail: format!("incident {id}: {}", row.title),
    }));
    if !db.apply_if_first(&w).await? {
        return Ok(Ack::LostRace);
    }
    wake.notify_one();
    Ok(Ack::Taken(row.title))
}

/// Remind P0/P1 incidents that fire unacknowledged, once per interval across replicas.
pub async fn remind(app: &App) -> anyhow::Result<usize> {
    let now = now_ms();
    let mut sent = 0;
    for row in app.db.firing_incidents().await? {
        let Some(every) = app
            .settings
            .config
            .alerts
            .reminder_seconds
            .get(&row.severity)
        else {
            continue;
        };
        if row.acked_by.is_some() {
            continue;
        }
        let last = row.reminded_at.unwrap_or(row.first_seen);
        if now < last + *every as i64 * 1000 {
            continue;
        }
        let n = Notice::new(
            NoticeKind::InfrastructureIssue,
            Tone::Danger,
            format!(
                "Reminder: [{}] {} on {} has been firing for {} and nobody has acknowledged it",
                row.severity,
                row.title,
                row.environment.as_deref().unwrap_or("-"),
                fmt_duration(now - row.first_seen)
            ),
        )
        .env(row.environment.as_deref())
        .as_reply();
        let mut w = vec![store::reminded(row.id, now, last)];
        w.extend(notice_writes(&row, &n));
        if app.db.apply_if_first(&w).await? {
            sent += 1;
        }
    }
    if sent > 0 {
        app.outbox_wake.notify_one();
    }
    Ok(sent)
}

/// Map a severity label to P0–P3: PagerDuty's words, common synonyms, or P-levels as is.
pub fn severity_of(label: Option<&str>) -> String {
    match label.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("p0" | "critical" | "crit" | "page" | "sev0" | "sev1") => "P0",
        Some("p1" | "error" | "high" | "major" | "sev2") => "P1",
        Some("p2" | "warning" | "warn" | "medium" | "minor" | "sev3") => "P2",
        _ => "P3",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_p_levels() {
        assert_eq!(severity_of(Some("critical")), "P0");
        assert_eq!(severity_of(Some("ERROR")), "P1");
        assert_eq!(severity_of(Some("warning")), "P2");
        assert_eq!(severity_of(Some("info")), "P3");
        assert_eq!(severity_of(Some("P1")), "P1");
        assert_eq!(severity_of(None), "P3");
    }
}
