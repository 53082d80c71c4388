//! A tested backup: `pg_dump --format=custom` into `data_dir/backups/ENV-TIMESTAMP.dump`,
//! restored into a scratch database whose tables and row counts must match the source's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::database::PgTarget;
use crate::jobs::dbops::{DbJob, fmt_bytes, scratch};
use crate::jobs::steps::{Program, run_program};
use crate::store::envdb;
use crate::support::runner::StepOutcome;

/// What a backup produced.
pub(crate) struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    pub took: Duration,
    /// `Ok(summary)`: restored and compared; `Err(why)`: it did not restore or differed.
    pub tested: Result<String, String>,
}

impl Backup {
    /// For the report: "FILE, 12.3 KiB in 0.4 s, restore tested (2 tables, 5 rows match)".
    pub fn describe(&self) -> String {
        let base = format!(
            "{}, {} in {:.1} s",
            self.path.display(),
            fmt_bytes(self.bytes),
            self.took.as_secs_f64()
        );
        match &self.tested {
            Ok(s) => format!("{base}, restore tested ({s})"),
            Err(e) => format!("{base}, restore test FAILED: {e}"),
        }
    }
}

/// The folder backups go to.
pub(crate) fn dir(d: &DbJob<'_>) -> PathBuf {
    d.app.settings.data_dir().join("backups")
}

/// The variables libpq reads: the target's connection without a URL in argv.
pub(crate) fn libpq_env(t: &PgTarget) -> BTreeMap<String, String> {
    t.libpq_env().into_iter().collect()
}

fn timeout(d: &DbJob<'_>) -> Duration {
    Duration::from_secs(d.app.settings.config.runner.default_timeout_seconds)
}

/// Take a backup of the environment's database and test it. `Err`: no backup at all.
pub(crate) async fn take(d: &DbJob<'_>, step: &str) -> anyhow::Result<Backup> {
    let folder = dir(d);
    std::fs::create_dir_all(&folder)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let path = folder.join(format!("{}-{stamp}.dump", d.env));
    let started = Instant::now();
    let argv = vec![
        "pg_dump".to_owned(),
        "--format=custom".to_owned(),
        "--no-password".to_owned(),
        "--file".to_owned(),
        path.display().to_string(),
    ];
    let p = Program {
        name: step.to_owned(),
        argv,
        env: libpq_env(&d.target),
        timeout: timeout(d),
    };
    let outcome = run_program(d.app, d.job.id, p, d.redactor, d.stops).await;
    if !outcome.success() {
        let _ = std::fs::remove_file(&path);
        anyhow::bail!("pg_dump {}", outcome.describe(timeout(d)));
    }
    let took = started.elapsed();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let tested = test_restore(d, &path).await;
    Ok(Backup {
        path,
        bytes,
        took,
        tested,
    })
}

/// Restore `path` into a scratch database and compare tables and row counts with the
/// environment's database.
pub(crate) async fn test_restore(d: &DbJob<'_>, path: &Path) -> Result<String, String> {
    let name = d.scratch_name("restore");
    let r = scratch::with_scratch(&d.target, &name, |copy| async move {
        restore_into(d, path, &copy, "restore test").await?;
        compare(&d.target, &copy).await
    })
    .await;
    r.map_err(|e| e.to_string())?
}

/// `pg_restore` of `path` into the database `into`; `--clean` replaces what is there.
pub(crate) async fn restore_into(
    d: &DbJob<'_>,
    path: &Path,
    into: &PgTarget,
    step: &str,
) -> anyhow::Result<()> {
    let mut argv = vec![
        "pg_restore".to_owned(),
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        "--no-password".to_owned(),
        "--single-transaction".to_owned(),
        "--exit-on-error".to_owned(),
    ];
    if into.dbname == d.target.dbname {
        argv.extend(["--clean".to_owned(), "--if-exists".to_owned()]);
    }
    argv.extend([
        "--dbname".to_owned(),
        into.dbname.clone(),
        path.display().to_string(),
    ]);
    let p = Program {
        name: step.to_owned(),
        argv,
        env: libpq_env(into),
        timeout: timeout(d),
    };
    match run_program(d.app, d.job.id, p, d.redactor, d.stops).await {
        StepOutcome::Exited(0) => Ok(()),
        o => anyhow::bail!("pg_restore {}", o.describe(timeout(d))),
    }
}

/// Same tables, same rows per table? `Ok(Ok(summary))` when they match.
async fn compare(src: &PgTarget, copy: &PgTarget) -> anyhow::Result<Result<String, String>> {
    let a = envdb::schema(&src.url()).await?;
    let b = envdb::schema(&copy.url()).await?;
    let ta: Vec<String> = a.tables.keys().cloned().collect();
    let tb: Vec<String> = b.tables.keys().cloned().collect();
    if ta != tb {
        let missing: Vec<&str> = ta
            .iter()
            .filter(|t| !tb.contains(t))
            .map(|t| super::schema::short(t))
            .collect();
        return Ok(Err(format!(
            "tables missing from the restored copy: {}",
            missing.join(", ")
        )));
    }
    let ca = envdb::row_counts(&src.url(), &ta).await?;
    let cb = envdb::row_counts(&copy.url(), &tb).await?;
    let differ: Vec<String> = ca
        .iter()
        .filter(|(t, n)| cb.get(*t) != Some(n))
        .map(|(t, n)| {
            format!(
                "{} has {n} rows, the copy {}",
                super::schema::short(t),
                cb.get(t).copied().unwrap_or(0)
            )
        })
        .collect();
    if !differ.is_empty() {
        return Ok(Err(differ.join("; ")));
    }
    let rows: i64 = ca.values().sum();
    Ok(Ok(format!("{} tables, {rows} rows match", ta.len())))
}
