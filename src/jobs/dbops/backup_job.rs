//! `/backup ENV` and the scheduled backups: a tested backup, the oldest beyond `keep`
//! deleted, and an *infrastructure issue* notice when the backup or its restore test fails.

use std::time::Instant;

use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::fmt_duration;
use crate::jobs::dbops::restore::record;
use crate::jobs::dbops::{DbJob, backup};
use crate::jobs::finish::end_writes;
use crate::jobs::run::JobRun;
use crate::store::Write;
use crate::store::jobs::state;
use crate::support::runner::Redactor;

pub(crate) async fn run(
    r: &JobRun<'_>,
    redactor: &Redactor,
) -> anyhow::Result<Option<(&'static str, Vec<Write>)>> {
    let started = Instant::now();
    let env = crate::jobs::env_of(r.job).to_owned();
    let issue = |why: String| {
        let n = Notice::new(
            NoticeKind::InfrastructureIssue,
            Tone::Danger,
            format!("Infrastructure issue: backup of {env} database failed: {why}"),
        )
        .env(Some(&env))
        .job(r.job.id)
        .field("Environment", &env)
        .field("Requested by", &r.job.requested_by);
        Ok(Some(end_writes(r, state::FAILED, n)))
    };
    let d = match DbJob::new(r.app, r.job, r.stops, redactor) {
        Ok(d) => d,
        Err(why) => return issue(why),
    };
    let b = match backup::take(&d, "backup").await {
        Ok(b) => b,
        Err(e) => {
            if r.stops.shutdown.is_cancelled() {
                return Ok(None);
            }
            return issue(e.to_string());
        }
    };
    let ok = b.tested.is_ok();
    record(&d, &b, i64::from(ok), "backup".into()).await;
    if let Err(e) = &b.tested {
        return issue(format!(
            "its restore test failed: {e} ({})",
            b.path.display()
        ));
    }
    let pruned = prune(&d).await;
    let mut n = Notice::new(
        NoticeKind::JobSucceeded,
        Tone::Success,
        format!("Backed up {env} database, restore tested"),
    )
    .env(Some(&env))
    .job(r.job.id)
    .field("Environment", &env)
    .field("Backup", b.describe())
    .field(
        "Duration",
        fmt_duration(started.elapsed().as_millis() as i64),
    )
    .field("Requested by", &r.job.requested_by);
    if pruned > 0 {
        n = n.field("Deleted", format!("{pruned} older backup(s) beyond keep"));
    }
    Ok(Some(end_writes(r, state::SUCCEEDED, n)))
}

/// Delete this environment's backups beyond the newest `keep` (files Deckhand made and
/// has on record only). Returns how many went.
async fn prune(d: &DbJob<'_>) -> usize {
    let keep = d
        .app
        .settings
        .config
        .environments
        .get(&d.env)
        .and_then(|e| e.database.as_ref())
        .map(|db| db.keep)
        .unwrap_or(7);
    let Ok(all) = d.app.db.backups_on_record(&d.env).await else {
        return 0;
    };
    let mut n = 0;
    for path in all.into_iter().skip(keep) {
        if std::fs::remove_file(&path).is_ok() || !std::path::Path::new(&path).exists() {
            let _ = d.app.db.forget_backup(&path).await;
            n += 1;
        }
    }
    n
}
