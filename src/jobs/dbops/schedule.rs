//! Scheduled backups (`[environments.X.database] backup_cron`): each firing enqueues one
//! `backup` job whose idempotency key is the firing (`backup:ENV:MS`), so with several
//! replicas each firing still makes one job. `schedule_state` keeps the last firing
//! handled; a schedule seen for the first time starts at "now".

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::store::jobs::{NewJob, state};

/// How often the schedules are looked at.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(15);

/// Enqueue the backups due at `now`; returns the environments enqueued for.
pub async fn tick(app: &App, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if app.catalog.get("backup").is_none() {
        return Ok(out);
    }
    for (env, cfg) in &app.settings.config.environments {
        let Some(schedule) = cfg
            .database
            .as_ref()
            .and_then(|d| d.backup_schedule.as_ref())
        else {
            continue;
        };
        let key = format!("backup:{env}");
        let Some(last) = app.db.schedule_last(&key).await? else {
            app.db.schedule_init(&key, now.timestamp_millis()).await?;
            continue;
        };
        let last = DateTime::from_timestamp_millis(last).unwrap_or(now);
        // Only the newest due firing runs: a backup now covers the missed ones.
        let Some(at) = schedule.firings_between(last, now, 10_000).last().copied() else {
            continue;
        };
        let at_ms = at.timestamp_millis();
        let job = NewJob {
            command: "backup".into(),
            kind: "backup".into(),
            environment: Some(env.clone()),
            version: None,
            args: serde_json::json!({ "environment": env }).to_string(),
            state: state::QUEUED.into(),
            requested_by: "schedule".into(),
            platform: crate::domain::platform::Platform::Terminal.as_str().into(),
            channel: None,
            reply_to: None,
            idempotency_key: Some(format!("{key}:{at_ms}")),
            concurrency_key: Some(format!("env:{env}")),
            idempotent: true,
            approvals_needed: 0,
            approval_deadline: None,
            emergency: None,
        };
        app.db.enqueue(&job, &|_, _| Vec::new()).await?;
        app.db
            .apply(&[crate::store::reports::advance(&key, at_ms)])
            .await?;
        out.push(env.clone());
    }
    if !out.is_empty() {
        app.poke();
    }
    Ok(out)
}
