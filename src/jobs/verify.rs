//! After the steps: whether the job worked. Deploys and rollbacks must report the new
//! version on the environment's health URL; a rotated secret must leave the environment
//! healthy after its restart. The verdict also closes the deployment record.

use std::collections::BTreeMap;

use crate::config::catalog::JobKind;
use crate::jobs::StepsResult;
use crate::jobs::health::{self, HealthOutcome};
use crate::jobs::run::JobRun;
use crate::jobs::watch::{WatchEnd, WatchOutcome};
use crate::store::Write;
use crate::store::history::status as dstatus;

/// What the steps and the health check showed.
pub(crate) struct Verdict {
    /// Which step failed and how; `None` when all succeeded.
    pub failure: Option<String>,
    /// Facts the steps reported (`deckhand-report: KEY=VALUE`).
    pub facts: BTreeMap<String, String>,
    /// `None`: not checked (the steps failed, or this kind of job is not verified).
    pub health: Option<HealthOutcome>,
    /// Whether a migration ran, for the report; empty when it does not apply.
    pub migration: String,
    /// Of the rotated secret, for the report.
    pub fingerprint: Option<String>,
    /// The watch after the health check; `None` when there was none.
    pub watch: Option<WatchOutcome>,
    /// Deploys: "yes — abc1234" or "no — no earlier verified version", for the report.
    pub rollback_ready: Option<String>,
    /// The steps run, with their argv (redacted) and outcome, for the report.
    pub commands: Vec<String>,
    /// Deploys with GitHub: the commits since the running version (`Changes`, `Compare`).
    pub changes: Vec<(String, String)>,
}

impl Verdict {
    /// Why the job failed: its step, else its health check. `None`: it worked.
    pub fn reason(&self) -> Option<String> {
        self.failure.clone().or_else(|| {
            self.health
                .as_ref()
                .filter(|h| !h.ok)
                .map(|h| format!("health check failed: {}", h.detail))
                .or_else(|| match self.watch.as_ref().map(|w| &w.end) {
                    Some(WatchEnd::Broke(b)) => Some(format!("watch broke: {b}")),
                    Some(WatchEnd::Cancelled) => Some("cancelled during the watch".into()),
                    Some(WatchEnd::Abandoned) => {
                        Some("stopped by shutdown during the watch".into())
                    }
                    _ => None,
                })
        })
    }

    /// The watch broke (not cancelled): the infrastructure-issue path.
    pub fn watch_broke(&self) -> Option<&str> {
        match self.watch.as_ref().map(|w| &w.end) {
            Some(WatchEnd::Broke(b)) if self.failure.is_none() => Some(b),
            _ => None,
        }
    }

    /// The end of the deployment record `id` opened at the start.
    pub fn deployment_finish(&self, id: i64) -> Write {
        Write::DeploymentFinish {
            id,
            status: match (&self.failure, &self.health) {
                (Some(_), _) => dstatus::FAILED,
                (None, Some(h)) if !h.ok => dstatus::UNHEALTHY,
                _ if self.watch_broke().is_some() => dstatus::UNHEALTHY,
                // Cancelled during the watch: not verified, not shown as unhealthy.
                _ if self.reason().is_some() => dstatus::FAILED,
                _ => dstatus::VERIFIED,
            }
            .into(),
            // Verified means watched: only a clean watch (or none) verifies.
            verified: self.reason().is_none(),
            health: self.health.as_ref().map(|h| h.detail.clone()),
            migration: Some(self.migration.clone()),
        }
    }
}

/// Check the environment's health when the steps succeeded and the job kind calls for it.
pub(crate) async fn verify(
    r: &JobRun<'_>,
    steps: StepsResult,
    fingerprint: Option<String>,
) -> Verdict {
    let verifies = matches!(
        r.kind,
        JobKind::Deploy | JobKind::Rollback | JobKind::RotateSecret
    );
    let health = match (&steps.failure, verifies, r.env_cfg) {
        (None, true, Some(e)) if r.kind == JobKind::RotateSecret && e.health_url.is_some() => {
            Some(health::verify(&r.app.http, e, None).await)
        }
        (None, true, Some(e)) if r.kind != JobKind::RotateSecret => {
            Some(health::verify(&r.app.http, e, r.job.version.as_deref()).await)
        }
        _ => None,
    };
    // Deploys and migrations always say whether a migration ran; other jobs only if a
    // step reported one.
    let migration = steps.facts.get("migration").cloned().unwrap_or_else(|| {
        if matches!(
            r.kind,
            JobKind::Deploy | JobKind::Rollback | JobKind::Migrate
        ) {
            "not needed".into()
        } else {
            String::new()
        }
    });
    Verdict {
        failure: steps.failure,
        facts: steps.facts,
        commands: steps.commands,
        health,
        migration,
        fingerprint,
        watch: None,
        rollback_ready: None,
        changes: Vec::new(),
    }
}
