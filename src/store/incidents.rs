//! The incidents table: one row per firing incident, keyed by its dedup key.

use serde::{Deserialize, Serialize};

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::{Arg, Result, Write};

/// What an alert or a probe says about one thing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Same key, same incident: `alertmanager:<fingerprint>`, `probe:<target>`.
    pub dedup_key: String,
    pub source: String,
    pub title: String,
    /// P0–P3.
    pub severity: String,
    pub environment: Option<String>,
    pub service: Option<String>,
    pub description: Option<String>,
    pub link: Option<String>,
    pub resolved: bool,
    /// When it started (or resolved), ms; now when the source does not say.
    pub at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IncidentRow {
    pub id: i64,
    pub dedup_key: String,
    pub source: String,
    pub title: String,
    pub severity: String,
    pub environment: Option<String>,
    pub service: Option<String>,
    pub description: Option<String>,
    pub link: Option<String>,
    pub channels: String,
    pub status: String,
    pub firing_count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
    pub acked_by: Option<String>,
    pub acked_at: Option<i64>,
    pub reminded_at: Option<i64>,
}

impl crate::store::Db {
    pub async fn open_incident(&self, key: &str) -> Result<Option<IncidentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM incidents WHERE dedup_key = $1 AND status = 'firing'")
                .bind(key)
                .fetch_optional(p)
                .await?
        }))
    }

    pub async fn incident(&self, id: i64) -> Result<Option<IncidentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM incidents WHERE id = $1").bind(id).fetch_optional(p).await?
        }))
    }

    pub async fn firing_incidents(&self) -> Result<Vec<IncidentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM incidents WHERE status = 'firing' ORDER BY id").fetch_all(p).await?
        }))
    }

    /// Ids and titles of the P0/P1 incidents firing for `env`: what breaks a watch.
    pub async fn firing_severe(&self, env: &str) -> Result<Vec<IncidentRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as(
                "SELECT * FROM incidents WHERE status = 'firing' AND environment = $1 \
                 AND severity IN ('P0', 'P1') ORDER BY id",
            )
            .bind(env)
            .fetch_all(p)
            .await?
        }))
    }

    pub async fn insert_incident(&self, e: &Event, channels: &str) -> Result<Option<i64>> {
        let r: std::result::Result<i64, sqlx::Error> = on_db!(self, p => {
            sqlx::query_scalar(
                "INSERT INTO incidents (dedup_key, source, title, severity, environment, service, description, link, \
                 channels, status, firing_count, first_seen, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'firing', 1, $10, $11) RETURNING id",
            )
            .bind(&e.dedup_key)
            .bind(&e.source)
            .bind(&e.title)
            .bind(&e.severity)
            .bind(&e.environment)
            .bind(&e.service)
            .bind(&e.description)
            .bind(&e.link)
            .bind(channels)
            .bind(e.at.min(now_ms()))
            .bind(now_ms())
            .fetch_one(p)
            .await
        });
        match r {
            Ok(id) => Ok(Some(id)),
            // Another replica (or request) opened it a moment ago: update that one.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Resolve a firing incident (guarded: nothing when it is no longer firing).
pub fn resolve(id: i64, resolved_at: i64, now: i64) -> Write {
    Write::sql(
        "UPDATE incidents SET status = 'resolved', resolved_at = $1, last_seen = $2 WHERE id = $3 AND status = 'firing'",
        vec![Arg::Int(resolved_at), Arg::Int(now), Arg::Int(id)],
    )
}

/// Count a repeat of a firing incident, with its latest title and description.
/// Count one more firing (guarded: only while it fires and its count is still `seen`, the
/// count its new message was built from, so two repeats at once cannot both show the same
/// count while the row says one more).
pub fn repeat(id: i64, now: i64, title: &str, description: Option<&str>, seen: i64) -> Write {
    Write::sql(
        "UPDATE incidents SET firing_count = firing_count + 1, last_seen = $1, title = $2, \
         description = COALESCE($3, description) WHERE id = $4 AND status = 'firing' \
         AND firing_count = $5",
        vec![
            Arg::Int(now),
            Arg::Text(title.to_owned()),
            description
                .map(|d| Arg::Text(d.to_owned()))
                .unwrap_or(Arg::Null),
            Arg::Int(id),
            Arg::Int(seen),
        ],
    )
}

/// Record who took an incident (guarded: only the first taker).
pub fn acknowledge(id: i64, actor: &str, now: i64) -> Write {
    Write::sql(
        "UPDATE incidents SET acked_by = $1, acked_at = $2 WHERE id = $3 AND acked_by IS NULL",
        vec![Arg::Text(actor.to_owned()), Arg::Int(now), Arg::Int(id)],
    )
}

/// Record a reminder (guarded: only when nobody reminded or acknowledged since `last`).
pub fn reminded(id: i64, now: i64, last: i64) -> Write {
    Write::sql(
        "UPDATE incidents SET reminded_at = $1 WHERE id = $2 AND COALESCE(reminded_at, first_seen) = $3 AND acked_by IS NULL",
        vec![Arg::Int(now), Arg::Int(id), Arg::Int(last)],
    )
}
