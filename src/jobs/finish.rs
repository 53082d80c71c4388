//! The end of a run: the job's final state, its report and final notice, and the writes
//! that record them in one transaction.

use std::time::Duration;

use crate::config::catalog::JobKind;
use crate::domain::notice::{Notice, NoticeKind, Report, Tone};
use crate::domain::state::JobState;
use crate::jobs::env_of;
use crate::jobs::health::HealthOutcome;
use crate::jobs::run::JobRun;
use crate::jobs::verify::Verdict;
use crate::jobs::watch::{self, WatchEnd};
use crate::outbox::github::gh_state;
use crate::outbox::routes::notices;
use crate::store::Write;
use crate::store::jobs::{audit, state, transition};

/// The final state, and `writes` completed with the transition, notices and audit entry.
pub(crate) fn finish(
    r: &JobRun<'_>,
    verdict: &Verdict,
    rolled_back: Option<&(String, HealthOutcome)>,
    took: Duration,
    mut writes: Vec<Write>,
) -> (&'static str, Vec<Write>) {
    let job = r.job;
    let mut report = report(r, verdict);
    report.duration_ms = took.as_millis() as i64;
    if matches!(r.kind, JobKind::Deploy | JobKind::Rollback) {
        let end = crate::domain::time::now_ms();
        report.extra.insert(
            0,
            (
                "Deploy time".into(),
                crate::domain::time::fmt_span(end - report.duration_ms, end),
            ),
        );
    }
    let cancelled = r.stops.cancel.is_cancelled();
    let (final_state, notice) = match (verdict.reason(), rolled_back) {
        (None, _) => (state::SUCCEEDED, succeeded(r, verdict, &mut report)),
        (Some(reason), Some((prev, h))) => (
            state::FAILED,
            rolled_back_notice(r, verdict, &reason, prev, h, &mut report),
        ),
        (Some(reason), None) => match verdict.watch_broke() {
            Some(b) if r.kind == JobKind::Deploy && !cancelled => (
                state::FAILED,
                infrastructure_issue(r, b, &reason, &mut report),
            ),
            _ => failed(r, &reason, cancelled, &mut report),
        },
    };
    // GitHub's deployments close with the job (`auto_inactive` retires the earlier ones).
    writes.extend(crate::jobs::github::close(
        r,
        &crate::jobs::github::key(job.id),
        crate::jobs::github::state_of(final_state),
        &notice.title,
    ));
    if let Some((prev, h)) = rolled_back {
        let state = if h.ok {
            gh_state::SUCCESS
        } else {
            gh_state::FAILURE
        };
        let what = format!("Rolled {} back to {prev}: {}", env_of(job), h.detail);
        writes.extend(crate::jobs::github::close(
            r,
            &crate::jobs::github::rollback_key(job.id),
            state,
            &what,
        ));
    }
    writes.extend(end_writes(r, final_state, notice.job(job.id)).1);
    (final_state, writes)
}

/// The state change, the notice and the audit entry that end a job, in one transaction.
pub(crate) fn end_writes(
    r: &JobRun<'_>,
    final_state: &'static str,
    notice: Notice,
) -> (&'static str, Vec<Write>) {
    let job = r.job;
    let mut writes = vec![transition(
        job.id,
        &[state::RUNNING],
        final_state,
        Some(notice.title.clone()),
        Some(&r.app.worker_id),
    )];
    writes.extend(notices(&r.app.settings, job, &notice));
    writes.push(audit(
        job,
        &format!("job_{final_state}"),
        notice.title.clone(),
    ));
    (final_state, writes)
}

/// The report's facts; its status and duration are filled in at the end.
fn report(r: &JobRun<'_>, verdict: &Verdict) -> Report {
    let job = r.job;
    let mut report = Report {
        environment: env_of(job).to_owned(),
        version: job.version.clone().unwrap_or_else(|| "-".into()),
        migration: verdict.migration.clone(),
        health_url: r.env_cfg.and_then(|e| e.health_url.clone()),
        health: verdict
            .health
            .as_ref()
            .map(|h| h.detail.clone())
            .unwrap_or_else(|| "not checked".into()),
        status: String::new(),
        duration_ms: 0,
        requested_by: job.requested_by.clone(),
        extra: Vec::new(),
    };
    report.extra.extend(verdict.changes.iter().cloned());
    for (k, v) in &verdict.facts {
        if k != "migration" {
            report.extra.push((capitalise(k), v.clone()));
        }
    }
    if let (Some(fp), Some(args)) = (&verdict.fingerprint, job.args_map().get("name")) {
        report.extra.push(("Secret".into(), args.clone()));
        report.extra.push(("Fingerprint".into(), fp.clone()));
    }
    if let Some(w) = &verdict.watch {
        let end = match &w.end {
            WatchEnd::Clean => format!("{} clean", watch::length(w.seconds)),
            WatchEnd::Broke(b) => format!("broke: {b}"),
            WatchEnd::Cancelled => "cancelled before its end".into(),
            WatchEnd::Abandoned => "stopped by shutdown".into(),
        };
        report.extra.push(("Watch".into(), end));
        for (name, line) in w.figure_lines() {
            report.extra.push((capitalise(&name), line));
        }
    }
    if let Some(ready) = &verdict.rollback_ready {
        report.extra.push(("Rollback ready".into(), ready.clone()));
    }
    if !verdict.commands.is_empty() {
        report
            .extra
            .push(("Commands".into(), verdict.commands.join("\n")));
    }
    if let Some(reason) = &job.emergency {
        report
            .extra
            .push(("Emergency override".into(), reason.clone()));
    }
    report
}

fn succeeded(r: &JobRun<'_>, verdict: &Verdict, report: &mut Report) -> Notice {
    let job = r.job;
    let (version, env) = (job.version.as_deref().unwrap_or("-"), env_of(job));
    let health = &verdict.health;
    // "verified working" only when a health check proved it.
    report.status = if health
        .as_ref()
        .is_some_and(|h| h.ok && h.detail != "not configured")
    {
        "verified working".into()
    } else {
        JobState::Succeeded.as_str().into()
    };
    let (k, title) = match r.kind {
        JobKind::Deploy => (
            NoticeKind::DeploymentComplete,
            format!(
                "Deployed {version} to {env}, {}{}",
                health_phrase(health),
                verdict
                    .watch
                    .as_ref()
                    .map(|w| format!(", {} watch clean", watch::length(w.seconds)))
                    .unwrap_or_default()
            ),
        ),
        JobKind::Rollback => (
            NoticeKind::RolledBack,
            format!("Rolled {env} back to {version}, {}", health_phrase(health)),
        ),
        JobKind::Migrate => (
            NoticeKind::MigrationApplied,
            format!("Migration on {env}: {}", verdict.migration),
        ),
        JobKind::RotateSecret => (
            NoticeKind::SecretRotated,
            format!(
                "Rotated {} on {env} (fingerprint {})",
                job.args_map().get("name").cloned().unwrap_or_default(),
                verdict.fingerprint.clone().unwrap_or_default()
            ),
        ),
        JobKind::Restore | JobKind::Backup | JobKind::Custom => (
            NoticeKind::JobSucceeded,
            format!("{} on {env} succeeded (job {})", job.command, job.id),
        ),
    };
    let n = report.apply(Notice::new(k, Tone::Success, title));
    if r.kind == JobKind::Deploy {
        n.action("rollback", "Roll back", job.id, true)
    } else {
        n
    }
}

/// A failed deploy that was rolled back to `prev`, whose health is `h`.
fn rolled_back_notice(
    r: &JobRun<'_>,
    verdict: &Verdict,
    reason: &str,
    prev: &str,
    h: &HealthOutcome,
    report: &mut Report,
) -> Notice {
    let (version, env) = (r.job.version.as_deref().unwrap_or("-"), env_of(r.job));
    report.status = format!("failed – {reason}");
    report
        .extra
        .push(("Rolled back to".into(), prev.to_owned()));
    report
        .extra
        .push(("Rollback health".into(), h.detail.clone()));
    let title = format!(
        "Deployment of {version} to {env} failed {}; rolled back to {prev}, {}",
        match (verdict.failure.is_none(), verdict.watch_broke()) {
            (true, Some(b)) => format!("its watch ({b})"),
            // No step failed, so the health check did.
            (true, None) => "health check".into(),
            (false, _) => "a step".into(),
        },
        if h.ok {
            "health check passing".to_owned()
        } else {
            format!("but the rollback health check failed too: {}", h.detail)
        }
    );
    report.apply(Notice::new(NoticeKind::RolledBack, Tone::Danger, title))
}

/// A deploy whose watch broke, with no automatic rollback: say so loudly, and offer one.
fn infrastructure_issue(r: &JobRun<'_>, broke: &str, reason: &str, report: &mut Report) -> Notice {
    let (version, env) = (r.job.version.as_deref().unwrap_or("-"), env_of(r.job));
    report.status = format!("failed – {reason}");
    let title = format!(
        "Infrastructure issue on {env} after deploying {version}: its watch broke, {broke}; {version} stays unverified"
    );
    report
        .apply(Notice::new(
            NoticeKind::InfrastructureIssue,
            Tone::Danger,
            title,
        ))
        .action("rollback", "Roll back", r.job.id, true)
}

/// A job that failed or was cancelled, without a rollback.
fn failed(
    r: &JobRun<'_>,
    reason: &str,
    cancelled: bool,
    report: &mut Report,
) -> (&'static str, Notice) {
    let job = r.job;
    let (version, env) = (job.version.as_deref().unwrap_or("-"), env_of(job));
    report.status = if cancelled {
        JobState::Cancelled.as_str().into()
    } else {
        format!("failed – {reason}")
    };
    let what = match r.kind {
        JobKind::Deploy => format!("Deployment of {version} to {env}"),
        JobKind::Rollback => format!("Rollback of {env} to {version}"),
        _ => format!("{} on {env}", job.command),
    };
    if cancelled {
        (
            state::CANCELLED,
            report.apply(Notice::new(
                NoticeKind::JobCancelled,
                Tone::Warning,
                if reason == "cancelled during the watch" {
                    format!(
                        "{what} was cancelled during its watch; {version} stays unverified (job {})",
                        job.id
                    )
                } else {
                    format!("{what} was cancelled (job {})", job.id)
                },
            )),
        )
    } else {
        (
            state::FAILED,
            report.apply(Notice::new(
                NoticeKind::DeploymentFailed,
                Tone::Danger,
                format!("{what} failed: {reason}"),
            )),
        )
    }
}

fn health_phrase(h: &Option<HealthOutcome>) -> String {
    match h {
        Some(h) if h.detail == "not configured" => "no health check configured".into(),
        Some(_) => "health check passing".into(),
        None => "not health-checked".into(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
