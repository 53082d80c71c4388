//! Probe results: one row per probe of a target.

use crate::on_db;
use crate::store::{Db, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProbeRow {
    pub id: i64,
    pub target: String,
    pub environment: Option<String>,
    pub at: i64,
    pub ok: bool,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// One probe's result, to store.
#[derive(Debug, Clone, Copy)]
pub struct NewProbe<'a> {
    pub target: &'a str,
    pub environment: Option<&'a str>,
    pub at: i64,
    pub ok: bool,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

impl Db {
    pub async fn store_probe(&self, r: NewProbe<'_>) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("INSERT INTO probe_results (target, environment, at, ok, status, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(r.target)
                .bind(r.environment)
                .bind(r.at)
                .bind(r.ok)
                .bind(r.status)
                .bind(r.latency_ms)
                .bind(r.error)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The newest results of a target, newest first.
    pub async fn recent_probes(&self, target: &str, limit: i64) -> Result<Vec<ProbeRow>> {
        Ok(on_db!(self, p => {
            sqlx::query_as("SELECT * FROM probe_results WHERE target = $1 ORDER BY at DESC, id DESC LIMIT $2")
                .bind(target)
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }
}
