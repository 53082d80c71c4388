//! `/restore ENV [BACKUP]`: without BACKUP, the environment's tested backups; with one, a
//! fresh tested backup first, then the environment's database emptied and BACKUP restored
//! into it. Should that restore fail, the fresh backup is put back.

use std::path::PathBuf;
use std::time::Instant;

use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::{fmt_duration, fmt_time, now_ms};
use crate::jobs::dbops::{DbJob, backup, schema};
use crate::jobs::finish::end_writes;
use crate::jobs::run::JobRun;
use crate::store::Write;
use crate::store::dbruns::{DbRun, kind};
use crate::store::envdb;
use crate::store::jobs::state;
use crate::support::runner::Redactor;

/// Tested backups of `env` still on disk, newest first: (file name, when taken).
pub async fn available(app: &App, env: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for r in app.db.verified_backups(env, 200).await? {
        let Some(p) = r.backup_path.as_deref().map(PathBuf::from) else {
            continue;
        };
        if let (true, Some(name)) = (p.exists(), p.file_name()) {
            out.push((name.to_string_lossy().into_owned(), r.at));
        }
    }
    Ok(out)
}

/// What `/restore ENV` answers: the backups to choose from.
pub async fn listing(app: &App, env: &str) -> anyhow::Result<String> {
    let list = available(app, env).await?;
    if list.is_empty() {
        return Ok(format!(
            "{env} has no tested backups yet; /migrate {env} and /backup {env} take them"
        ));
    }
    let mut s =
        format!("Tested backups of {env} (newest first); restore one with /restore {env} BACKUP:");
    for (name, at) in list.iter().take(20) {
        s.push_str(&format!("\n  {name}  (taken {})", fmt_time(*at)));
    }
    Ok(s)
}

/// Is `name` one of `env`'s tested backups? Otherwise the refusal, naming those accepted.
pub async fn check_named(app: &App, env: &str, name: &str) -> anyhow::Result<Result<(), String>> {
    let list = available(app, env).await?;
    if list.iter().any(|(n, _)| n == name) {
        return Ok(Ok(()));
    }
    let names: Vec<&str> = list.iter().take(5).map(|(n, _)| n.as_str()).collect();
    Ok(Err(format!(
        "refused by backup rule: {name:?} is not a tested backup of {env}; accepted: {}",
        if names.is_empty() {
            "none yet".to_owned()
        } else {
            names.join(", ")
        }
    )))
}

/// Run the restore; `Ok(None)`: abandoned at shutdown.
pub(crate) async fn run(
    r: &JobRun<'_>,
    redactor: &Redactor,
) -> anyhow::Result<Option<(&'static str, Vec<Write>)>> {
    let started = Instant::now();
    let env = crate::jobs::env_of(r.job).to_owned();
    let name = r.job.args_map().get("backup").cloned().unwrap_or_default();
    let fail = |why: String| {
        let n = Notice::new(
            NoticeKind::DeploymentFailed,
            Tone::Danger,
            format!("Restore of {env} database failed: {why}"),
        )
        .env(Some(&env))
        .job(r.job.id)
        .field("Environment", &env)
        .field("Backup", &name)
        .field("Requested by", &r.job.requested_by);
        Ok(Some(end_writes(r, state::FAILED, n)))
    };
    let d = match DbJob::new(r.app, r.job, r.stops, redactor) {
        Ok(d) => d,
        Err(why) => return fail(why),
    };
    let taken = match available(r.app, &env)
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
    {
        Some((_, at)) => at,
        None => return fail(format!("{name:?} is not a tested backup of {env}")),
    };
    let path = backup::dir(&d).join(&name);
    // A fresh backup first: the way back from this restore.
    let fresh = match backup::take(&d, "backup").await {
        Ok(b) if b.tested.is_ok() => b,
        Ok(b) => {
            return fail(format!(
                "the fresh backup did not restore, so nothing was changed: {}",
                b.describe()
            ));
        }
        Err(e) => {
            return fail(format!(
                "the fresh backup failed, so nothing was changed: {e}"
            ));
        }
    };
    record(
        &d,
        &fresh,
        1,
        format!("fresh backup before restoring {name}"),
    )
    .await;
    let restored = replace(&d, &path).await;
    if r.stops.shutdown.is_cancelled() {
        return Ok(None);
    }
    if let Err(e) = restored {
        let back = replace(&d, &fresh.path).await;
        return fail(format!(
            "{e}; {}",
            match back {
                Ok(()) => format!(
                    "{env} was put back from the fresh backup {}",
                    fresh.path.display()
                ),
                Err(e2) => format!(
                    "putting back the fresh backup {} failed too: {e2}",
                    fresh.path.display()
                ),
            }
        ));
    }
    let tables = envdb::schema(&d.target.url())
        .await
        .map(|s| schema::app_tables(&s).join(", "))
        .unwrap_or_else(|e| format!("cannot read: {e}"));
    let title = format!(
        "Restored {env} database from {name} (taken {})",
        fmt_time(taken)
    );
    let n = Notice::new(NoticeKind::JobSucceeded, Tone::Success, title)
        .env(Some(&env))
        .job(r.job.id)
        .field("Environment", &env)
        .field("Restored from", path.display().to_string())
        .field("Taken", fmt_time(taken))
        .field("Fresh backup first", fresh.describe())
        .field("Tables now", tables)
        .field(
            "Duration",
            fmt_duration(started.elapsed().as_millis() as i64),
        )
        .field("Requested by", &r.job.requested_by);
    Ok(Some(end_writes(r, state::SUCCEEDED, n)))
}

/// Empty the environment's database and restore `path` into it.
async fn replace(d: &DbJob<'_>, path: &std::path::Path) -> anyhow::Result<()> {
    envdb::reset_schemas(&d.target.url())
        .await
        .map_err(|e| anyhow::anyhow!("cannot empty {}'s database: {e}", d.env))?;
    backup::restore_into(d, path, &d.target, "restore").await
}

/// A backup on record (for `/restore`'s list and the digest).
pub(crate) async fn record(d: &DbJob<'_>, b: &backup::Backup, ok: i64, detail: String) {
    let run = DbRun {
        environment: d.env.clone(),
        kind: kind::BACKUP.into(),
        job_id: Some(d.job.id),
        at: now_ms(),
        ok,
        backup_path: Some(b.path.display().to_string()),
        backup_bytes: Some(b.bytes as i64),
        backup_verified: i64::from(b.tested.is_ok()),
        detail,
        ..Default::default()
    };
    if let Err(e) = d.app.db.record_db_run(&run).await {
        tracing::warn!(error = %e, "cannot record a backup");
    }
}
