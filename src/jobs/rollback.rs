//! Auto-rollback: a deploy that failed, on an environment that asks for it, goes back to
//! the last verified version by running the same steps for that version.

use crate::config::catalog::JobKind;
use crate::jobs::env_of;
use crate::jobs::health::{self, HealthOutcome};
use crate::jobs::run::JobRun;
use crate::jobs::steps::run_steps;
use crate::jobs::verify::Verdict;
use crate::store::Write;
use crate::store::history::status as dstatus;
use crate::support::runner::Redactor;

/// Roll back when the deploy failed, the environment has `auto_rollback`, nobody
/// cancelled, and there is a verified version to go back to. Returns that version and the
/// rollback's health; the rollback's deployment record is closed in `writes`.
pub(crate) async fn if_wanted(
    r: &JobRun<'_>,
    verdict: &Verdict,
    redactor: &Redactor,
    writes: &mut Vec<Write>,
) -> anyhow::Result<Option<(String, HealthOutcome)>> {
    let version = r.job.version.as_deref().unwrap_or("-");
    if let (Some(_), JobKind::Deploy, Some(e)) = (verdict.reason(), r.kind, r.env_cfg)
        && e.auto_rollback
        && !r.stops.cancel.is_cancelled()
        && let Some(prev) = r
            .app
            .db
            .previous_verified(env_of(r.job), Some(version))
            .await?
    {
        return Ok(Some(auto_rollback(r, &prev, redactor, writes).await?));
    }
    Ok(None)
}

async fn auto_rollback(
    r: &JobRun<'_>,
    prev: &str,
    redactor: &Redactor,
    writes: &mut Vec<Write>,
) -> anyhow::Result<(String, HealthOutcome)> {
    let (app, job) = (r.app, r.job);
    let env = env_of(job);
    tracing::warn!(
        job_id = job.id,
        to = prev,
        "health check failed; rolling back"
    );
    let mut start = vec![Write::DeploymentStart {
        job_id: job.id,
        environment: env.to_owned(),
        version: prev.to_owned(),
        kind: "auto_rollback".into(),
        requested_by: "deckhand (auto-rollback)".into(),
    }];
    let key = crate::jobs::github::rollback_key(job.id);
    start.extend(crate::jobs::github::open(r, &key, prev, "automatic rollback to").await);
    let id = app.db.apply(&start).await?[0];
    let steps = run_steps(app, job, r.cmd, Some(prev), redactor, None, r.stops).await?;
    let env_cfg = app.settings.config.environments.get(env);
    let h = match (&steps.failure, env_cfg) {
        (None, Some(e)) => health::verify(&app.http, e, Some(prev)).await,
        (Some(f), _) => HealthOutcome {
            ok: false,
            detail: f.clone(),
        },
        (None, None) => HealthOutcome {
            ok: true,
            detail: "not configured".into(),
        },
    };
    writes.push(Write::DeploymentFinish {
        id,
        status: if h.ok {
            dstatus::VERIFIED
        } else if steps.failure.is_some() {
            dstatus::FAILED
        } else {
            dstatus::UNHEALTHY
        }
        .into(),
        verified: h.ok,
        health: Some(h.detail.clone()),
        migration: None,
    });
    Ok((prev.to_owned(), h))
}
