//! One job's run from its start to the writes that end it: the start notice and deployment
//! record, the rotate-secret value, the steps, then verification, rollback and the report
//! (in [`super::verify`], [`super::rollback`] and [`super::finish`]).

use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::app::App;
use crate::config::EnvironmentConfig;
use crate::config::catalog::{Command, JobKind};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::jobs::steps::{fingerprint, generate_secret, run_steps};
use crate::jobs::{Stops, apply_retrying, env_of, finish, rollback, verify, watch};
use crate::outbox::routes::notices;
use crate::store::Write;
use crate::store::jobs::{JobRow, audit};

/// What every phase of a run reads.
pub(crate) struct JobRun<'a> {
    pub app: &'a Arc<App>,
    pub job: &'a JobRow,
    pub cmd: &'a Command,
    pub kind: JobKind,
    /// The job's environment, when it has one that is still configured.
    pub env_cfg: Option<&'a EnvironmentConfig>,
    pub stops: &'a Stops,
}

impl<'a> JobRun<'a> {
    fn new(app: &'a Arc<App>, job: &'a JobRow, stops: &'a Stops) -> anyhow::Result<Self> {
        let cmd = app.catalog.get(&job.command).ok_or_else(|| {
            anyhow::anyhow!("command {:?} is no longer in the catalog", job.command)
        })?;
        Ok(Self {
            app,
            job,
            cmd,
            kind: JobKind::parse(&job.kind).unwrap_or(JobKind::Custom),
            env_cfg: job
                .environment
                .as_ref()
                .and_then(|e| app.settings.config.environments.get(e)),
            stops,
        })
    }
}

/// The job's steps and checks, and the writes that record its end. `Ok(None)`: abandoned
/// at shutdown.
pub(crate) async fn run(
    app: &Arc<App>,
    job: &JobRow,
    stops: &Stops,
) -> anyhow::Result<Option<(&'static str, Vec<Write>)>> {
    let r = JobRun::new(app, job, stops)?;
    let started = Instant::now();
    match crate::jobs::ci::wait(&r).await? {
        crate::jobs::ci::Waited::Go => {}
        crate::jobs::ci::Waited::Abandon => return Ok(None),
        crate::jobs::ci::Waited::End(end) => return Ok(Some(end)),
    }
    // The commits since the running version, asked for alongside the steps (a slow
    // GitHub never holds up the deploy); the report waits for the answer.
    let changes = match (r.kind, job.args_map().get("commit_sha")) {
        (JobKind::Deploy, Some(sha)) => {
            let (app, env, sha) = (app.clone(), env_of(job).to_owned(), sha.clone());
            Some(tokio::spawn(async move { app.changes(&env, &sha).await }))
        }
        _ => None,
    };
    let deployment_id = start(&r).await?;

    let secret = new_secret(&r)?;
    let redactor = match &secret {
        Some(s) => app.redactor.with(s),
        None => app.redactor.clone(),
    };
    if r.kind == JobKind::Migrate && r.env_cfg.is_some_and(|e| e.database.is_some()) {
        return crate::jobs::dbops::migrate::run(&r, &redactor).await;
    }
    if r.kind == JobKind::Restore {
        return crate::jobs::dbops::restore::run(&r, &redactor).await;
    }
    if r.kind == JobKind::Backup {
        return crate::jobs::dbops::backup_job::run(&r, &redactor).await;
    }
    // The watch's baseline: the checks once, just before the deploy.
    let watch_plan = watch::plan(&r);
    let baseline = match watch_plan {
        Some(w) => Some(watch::readings(&r, w).await),
        None => None,
    };
    let steps = run_steps(
        app,
        job,
        r.cmd,
        job.version.as_deref(),
        &redactor,
        secret.as_ref(),
        stops,
    )
    .await?;
    if steps.abandoned {
        return Ok(None);
    }
    let fingerprint = secret.as_ref().map(|s| fingerprint(s));
    drop(secret);

    let mut verdict = verify::verify(&r, steps, fingerprint).await;
    if let Some(c) = changes {
        verdict.changes = c.await.unwrap_or_default();
    }
    if let (Some(w), Some(b), None) = (watch_plan, baseline, verdict.reason()) {
        let outcome = watch::watch(&r, w, b).await;
        if outcome.end == watch::WatchEnd::Abandoned {
            return Ok(None);
        }
        verdict.watch = Some(outcome);
    }
    if r.kind == JobKind::Deploy
        && let Some(v) = &job.version
    {
        let now = crate::domain::time::now_ms();
        verdict.rollback_ready = app
            .db
            .previous_verified_at(env_of(job), Some(v))
            .await
            .ok()
            .map(|p| match p {
                Some((p, at)) => format!(
                    "yes — {p} verified {}",
                    crate::domain::time::fmt_ago(now - at)
                ),
                None => "no — no earlier verified version".into(),
            });
    }
    let mut writes = Vec::new();
    if let Some(id) = deployment_id {
        writes.push(verdict.deployment_finish(id));
    }
    let rolled_back = rollback::if_wanted(&r, &verdict, &redactor, &mut writes).await?;
    if rolled_back.is_some() && stops.shutdown.is_cancelled() {
        return Ok(None);
    }
    Ok(Some(finish::finish(
        &r,
        &verdict,
        rolled_back.as_ref(),
        started.elapsed(),
        writes,
    )))
}

/// Announce the start and record it (nothing runs before its start is on record); for
/// deploys and rollbacks also open the deployment record, whose id this returns.
async fn start(r: &JobRun<'_>) -> anyhow::Result<Option<i64>> {
    let job = r.job;
    let title = match (r.kind, &job.version) {
        (JobKind::Deploy, Some(v)) => format!("Deploying {v} to {} (job {})", env_of(job), job.id),
        (JobKind::Rollback, Some(v)) => {
            format!("Rolling {} back to {v} (job {})", env_of(job), job.id)
        }
        _ => format!(
            "Running {} on {} (job {})",
            job.command,
            env_of(job),
            job.id
        ),
    };
    let mut writes = notices(
        &r.app.settings,
        job,
        &Notice::new(NoticeKind::DeploymentStarted, Tone::Progress, title)
            .env(job.environment.as_deref())
            .version(job.version.as_deref())
            .job(job.id)
            .field("Requested by", &job.requested_by)
            .action("cancel", "Cancel", job.id, true),
    );
    writes.push(audit(
        job,
        "job_started",
        format!("attempt {}", job.attempts),
    ));
    let mut deployment_id = None;
    if matches!(r.kind, JobKind::Deploy | JobKind::Rollback)
        && let (Some(e), Some(v)) = (&job.environment, &job.version)
    {
        writes.insert(
            0,
            Write::DeploymentStart {
                job_id: job.id,
                environment: e.clone(),
                version: v.clone(),
                kind: job.kind.clone(),
                requested_by: job.requested_by.clone(),
            },
        );
        // The GitHub deployment opens with the steps, `in_progress`.
        let what = if r.kind == JobKind::Rollback {
            "rollback to"
        } else {
            "deploy"
        };
        writes
            .extend(crate::jobs::github::open(r, &crate::jobs::github::key(job.id), v, what).await);
        deployment_id = Some(apply_retrying(r.app, &writes).await?[0]);
    }
    if deployment_id.is_none() {
        apply_retrying(r.app, &writes).await?;
    }
    r.app.outbox_wake.notify_one();
    Ok(deployment_id)
}

/// Rotate-secret: a fresh value from the OS, only ever on the step's stdin.
fn new_secret(r: &JobRun<'_>) -> anyhow::Result<Option<Zeroizing<String>>> {
    if r.kind != JobKind::RotateSecret {
        return Ok(None);
    }
    let name = r.job.args_map().get("name").cloned().unwrap_or_default();
    let spec = r
        .app
        .settings
        .config
        .secrets
        .get(&name)
        .cloned()
        .unwrap_or_default();
    Ok(Some(generate_secret(
        spec.length,
        spec.alphabet.chars().as_bytes(),
    )?))
}
