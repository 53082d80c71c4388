//! Alerts linked to deploys: an incident opened for an environment soon after a deploy
//! there finished its watch names that deploy — "HighErrorRate fired 3 min after abc1234
//! reached production — Roll back?" — with a Roll back button, under the incident's
//! message and in the deploy job's thread. During the watch the job itself is told (a
//! P0/P1 alert breaks it), so a running deploy is never linked.

use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::now_ms;
use crate::outbox::routes::notices;
use crate::store::jobs::state;
use crate::watch::incidents::{IncidentRow, notice_writes};

/// "3 min", "40 s", "2 h": how long after.
fn after(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// Link the just-opened incident `row` to its environment's last deploy, if that deploy
/// ended clean within the environment's `watch.link_alerts_seconds`. `Ok(true)`: linked.
pub(crate) async fn link(app: &App, row: &IncidentRow) -> anyhow::Result<bool> {
    let Some(env) = row.environment.as_deref() else {
        return Ok(false);
    };
    let Some(window) = app
        .settings
        .config
        .environments
        .get(env)
        .and_then(|e| e.watch.as_ref())
        .map(|w| w.link_alerts_seconds)
        .filter(|s| *s > 0)
    else {
        return Ok(false);
    };
    let Some(job) = app.db.last_deploy_job(env).await? else {
        return Ok(false);
    };
    let (Some(version), Some(ended)) = (job.version.as_deref(), job.finished_at) else {
        return Ok(false);
    };
    let since = now_ms() - ended;
    if job.state != state::SUCCEEDED || since > (window * 1000) as i64 {
        return Ok(false);
    }
    let title = format!(
        "{} fired {} after {version} reached {env} — Roll back?",
        row.title,
        after(since)
    );
    let tone = if matches!(row.severity.as_str(), "P0" | "P1") {
        Tone::Danger
    } else {
        Tone::Warning
    };
    let n = Notice::new(NoticeKind::InfrastructureIssue, tone, title)
        .env(Some(env))
        .version(Some(version))
        .field("Alert", &row.title)
        .field("Severity", &row.severity)
        .field("Deploy", format!("job {}: {version}", job.id))
        .action("rollback", "Roll back", job.id, true)
        .as_reply();
    let mut writes = notice_writes(row, &n);
    writes.extend(notices(&app.settings, &job, &n.clone().job(job.id)));
    app.intake.apply(writes).await?;
    app.outbox_wake.notify_one();
    tracing::info!(incident = row.id, job_id = job.id, %env, "alert linked to the deploy it followed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_reads_as_a_person_says_it() {
        assert_eq!(super::after(40_000), "40 s");
        assert_eq!(super::after(180_000), "3 min");
        assert_eq!(super::after(7_200_000), "2 h");
    }
}
