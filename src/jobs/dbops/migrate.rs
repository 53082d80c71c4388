//! `/migrate ENV` on an environment with a database: the fixed procedure around the
//! command's steps (the team's own migration tool, reading `DATABASE_URL`):
//! backup → tested restore → fresh-database test → apply → drift → report.
//! Nothing touches the environment's database unless its backup restored and the steps
//! passed on a fresh database.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::database::PgTarget;
use crate::jobs::dbops::report::{MigrationFacts, finish};
use crate::jobs::dbops::{DbJob, backup, schema, scratch};
use crate::jobs::run::JobRun;
use crate::jobs::steps::{StepsHow, run_steps_with};
use crate::store::Write;
use crate::store::dbruns::{DbRun, kind};
use crate::store::envdb::{self, Schema};
use crate::support::runner::Redactor;

/// Label of the fresh-database test's steps in the job log.
const FRESH: &str = "fresh database: ";

/// Run the procedure; `Ok(None)`: abandoned at shutdown.
pub(crate) async fn run(
    r: &JobRun<'_>,
    redactor: &Redactor,
) -> anyhow::Result<Option<(&'static str, Vec<Write>)>> {
    let started = Instant::now();
    let mut f = MigrationFacts::default();
    let d = match DbJob::new(r.app, r.job, r.stops, redactor) {
        Ok(d) => d,
        Err(why) => {
            f.stopped = Some(why);
            return Ok(Some(finish(r, &f, started.elapsed())));
        }
    };
    let fresh_schema = procedure(&d, r, &mut f).await;
    if r.stops.shutdown.is_cancelled() {
        return Ok(None);
    }
    let drift = f.drift.clone().unwrap_or_default();
    let run = DbRun {
        environment: d.env.clone(),
        kind: kind::MIGRATE.into(),
        job_id: Some(r.job.id),
        at: crate::domain::time::now_ms(),
        ok: i64::from(matches!(f.applied, Some(Ok(_))) && f.drift.is_some()),
        schema_fp: fresh_schema.as_ref().map(schema::fingerprint),
        drift: f.drift.as_ref().map(|_| drift.join("; ")),
        backup_path: f.backup.as_ref().map(|b| b.path.display().to_string()),
        backup_bytes: f.backup.as_ref().map(|b| b.bytes as i64),
        backup_verified: i64::from(f.backup.as_ref().is_some_and(|b| b.tested.is_ok())),
        detail: f.migration_summary(),
        ..Default::default()
    };
    if let Err(e) = r.app.db.record_db_run(&run).await {
        tracing::warn!(error = %e, "cannot record the migration run");
    }
    Ok(Some(finish(r, &f, started.elapsed())))
}

/// The phases in order, filling in `f`; stops at the first that must stop it. Returns the
/// fresh database's schema when that test passed.
async fn procedure(d: &DbJob<'_>, r: &JobRun<'_>, f: &mut MigrationFacts) -> Option<Schema> {
    if let Err(why) = staging_first(d, r, None).await {
        f.stopped = Some(why);
        return None;
    }
    // 1–2. Backup, and its restore test.
    match backup::take(d, "backup").await {
        Ok(b) => {
            let tested = b.tested.clone();
            f.backup = Some(b);
            if let Err(e) = tested {
                f.stopped = Some(format!("its backup did not restore: {e}"));
                return None;
            }
        }
        Err(e) => {
            f.stopped = Some(format!("the backup failed: {e}"));
            return None;
        }
    }
    // 3. The steps on a new empty database.
    let fresh = match fresh_test(d, r).await {
        Ok(Ok(s)) => s,
        Ok(Err(failed)) => {
            f.fresh = Some(Err(failed));
            return None;
        }
        Err(e) => {
            f.fresh = Some(Err((e.to_string(), Vec::new())));
            return None;
        }
    };
    f.fresh = Some(Ok(schema::app_tables(&fresh)));
    if let Err(why) = staging_first(d, r, Some(&schema::fingerprint(&fresh))).await {
        f.stopped = Some(why);
        return Some(fresh);
    }
    // 4. Apply to the environment's database.
    let before = match envdb::schema(&d.target.url()).await {
        Ok(s) => s,
        Err(e) => {
            f.stopped = Some(format!("cannot read {}'s schema: {e}", d.env));
            return Some(fresh);
        }
    };
    let ran = steps(d, r, &d.target, "").await;
    let after = envdb::schema(&d.target.url()).await;
    match (ran, after) {
        (Ok(None), Ok(after)) => {
            f.applied = Some(Ok(schema::changes(&before, &after)));
            // 5. Drift: the environment against what the migrations build from nothing.
            f.drift = Some(schema::drift(&d.env, &after, &fresh));
        }
        (Ok(Some(failure)), _) => f.applied = Some(Err(failure)),
        (Err(e), _) => f.applied = Some(Err(e.to_string())),
        (_, Err(e)) => f.applied = Some(Err(format!("cannot read the schema afterwards: {e}"))),
    }
    Some(fresh)
}

/// The command's steps with `DATABASE_URL` naming `target`. `Ok(Some(why))`: a step failed.
async fn steps(
    d: &DbJob<'_>,
    r: &JobRun<'_>,
    target: &PgTarget,
    label: &str,
) -> anyhow::Result<Option<String>> {
    let extra = BTreeMap::from([("DATABASE_URL".to_owned(), target.url())]);
    let how = StepsHow {
        redactor: d.redactor,
        secret: None,
        stops: d.stops,
        extra_env: &extra,
        label,
    };
    let res = run_steps_with(d.app, d.job, r.cmd, None, how).await?;
    Ok(res.failure)
}

/// Run the steps on a scratch database: its schema, or why they failed with the tool's
/// error lines.
async fn fresh_test(
    d: &DbJob<'_>,
    r: &JobRun<'_>,
) -> anyhow::Result<Result<Schema, (String, Vec<String>)>> {
    let name = d.scratch_name("fresh");
    scratch::with_scratch(&d.target, &name, |fresh| async move {
        if let Some(why) = steps(d, r, &fresh, FRESH).await? {
            let lines = d
                .app
                .db
                .job_log(d.job.id, 0)
                .await?
                .into_iter()
                .filter(|l| l.step.starts_with(FRESH) && l.stream == "stderr")
                .map(|l| l.line)
                .collect::<Vec<_>>();
            let tail = lines[lines.len().saturating_sub(20)..].to_vec();
            return Ok(Err((why, tail)));
        }
        Ok(Ok(envdb::schema(&fresh.url()).await?))
    })
    .await
}

/// Staging first for migrations: an environment promoted from another accepts a migration
/// only once the source ran the same migration set (the same fresh-database schema,
/// `fingerprint`, when known) cleanly and without drift. An emergency override skips it.
async fn staging_first(
    d: &DbJob<'_>,
    r: &JobRun<'_>,
    fingerprint: Option<&str>,
) -> Result<(), String> {
    let Some(src) = r.env_cfg.and_then(|e| e.promote_from.clone()) else {
        return Ok(());
    };
    if r.job.emergency.is_some() {
        return Ok(());
    }
    let last = d
        .app
        .db
        .last_db_run(&src, kind::MIGRATE)
        .await
        .map_err(|e| format!("cannot read {src}'s migrations: {e}"))?;
    crate::jobs::dbops::migration_promotion(&src, last.as_ref(), fingerprint)
}
