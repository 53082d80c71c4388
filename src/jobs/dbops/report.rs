//! The Migration Check report, in the runbooks' template: Fresh database test · Tables
//! created · Schema drift · Backup · Safe for production, titled like "Migration applied to
//! staging database, 2 tables added".

use std::time::Duration;

use crate::domain::notice::{Notice, NoticeKind, Report, Tone};
use crate::jobs::dbops::backup::Backup;
use crate::jobs::finish::end_writes;
use crate::jobs::run::JobRun;
use crate::store::Write;
use crate::store::jobs::state;

/// A failed phase: why, and the tool's error lines.
pub(crate) type Failed = (String, Vec<String>);
/// What applying did: tables added, tables changed.
pub(crate) type Changes = (Vec<String>, Vec<String>);

/// What the procedure found, phase by phase; `None`: the phase did not run.
#[derive(Default)]
pub(crate) struct MigrationFacts {
    pub backup: Option<Backup>,
    /// `Ok(tables created)`, or `Err((why, the tool's error lines))`.
    pub fresh: Option<Result<Vec<String>, Failed>>,
    /// `Ok((tables added, tables changed))`, or why applying failed.
    pub applied: Option<Result<Changes, String>>,
    pub drift: Option<Vec<String>>,
    /// Why the procedure stopped before its end (a refusal, a backup that did not restore).
    pub stopped: Option<String>,
}

impl MigrationFacts {
    /// "Yes", or "No – the first reason".
    pub fn safe_for_production(&self) -> String {
        let no = |r: &str| format!("No – {r}");
        if let Some(s) = &self.stopped {
            return no(s);
        }
        match &self.fresh {
            Some(Ok(_)) => {}
            Some(Err((why, _))) => return no(&format!("the fresh database test failed ({why})")),
            None => return no("the fresh database test did not run"),
        }
        match self.backup.as_ref().map(|b| &b.tested) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return no(&format!("the backup did not restore ({e})")),
            None => return no("no backup was taken"),
        }
        match &self.applied {
            Some(Ok(_)) => {}
            Some(Err(e)) => return no(&format!("applying failed ({e})")),
            None => return no("the migration was not applied"),
        }
        match &self.drift {
            Some(d) if d.is_empty() => "Yes".into(),
            Some(d) => no(&format!("schema drift: {}", d.join("; "))),
            None => no("drift was not checked"),
        }
    }

    /// The job's final state, the title and its tone.
    fn outcome(&self, env: &str) -> (&'static str, String, Tone) {
        if let Some(s) = &self.stopped {
            return (
                state::FAILED,
                format!("Migration on {env} stopped before touching its database: {s}"),
                Tone::Danger,
            );
        }
        match (&self.fresh, &self.applied) {
            (Some(Err((why, _))), _) => (
                state::FAILED,
                format!(
                    "Migration on {env} stopped: fresh database test FAILED ({why}); {env}'s database was not touched"
                ),
                Tone::Danger,
            ),
            (_, Some(Err(e))) => (
                state::FAILED,
                format!("Migration on {env} database failed: {e}"),
                Tone::Danger,
            ),
            (_, Some(Ok((added, changed)))) => {
                let drift = self.drift.as_ref().is_some_and(|d| !d.is_empty());
                let mut title = match (added.len(), changed.len()) {
                    (0, 0) => format!("Migration not needed on {env} database, schema unchanged"),
                    (a, 0) => format!(
                        "Migration applied to {env} database, {}",
                        tables(a, "added")
                    ),
                    (0, c) => format!(
                        "Migration applied to {env} database, {}",
                        tables(c, "changed")
                    ),
                    (a, c) => format!(
                        "Migration applied to {env} database, {}, {c} changed",
                        tables(a, "added")
                    ),
                };
                if drift {
                    title.push_str("; schema drift found");
                }
                (
                    state::SUCCEEDED,
                    title,
                    if drift { Tone::Warning } else { Tone::Success },
                )
            }
            _ => (
                state::FAILED,
                format!("Migration on {env} did not finish"),
                Tone::Danger,
            ),
        }
    }

    /// "applied – 2 tables added (orders, users)" for the Migration field and history.
    pub fn migration_summary(&self) -> String {
        match &self.applied {
            Some(Ok((a, c))) if a.is_empty() && c.is_empty() => "not needed".into(),
            Some(Ok((a, c))) => {
                let mut parts = Vec::new();
                if !a.is_empty() {
                    parts.push(format!("{} ({})", tables(a.len(), "added"), a.join(", ")));
                }
                if !c.is_empty() {
                    parts.push(format!("{} ({})", tables(c.len(), "changed"), c.join(", ")));
                }
                format!("applied – {}", parts.join(", "))
            }
            Some(Err(e)) => format!("failed – {e}"),
            None => "not applied".into(),
        }
    }
}

fn tables(n: usize, what: &str) -> String {
    format!("{n} table{} {what}", if n == 1 { "" } else { "s" })
}

/// The writes that end a migration job: its state, the report notice, the audit entry.
pub(crate) fn finish(
    r: &JobRun<'_>,
    f: &MigrationFacts,
    took: Duration,
) -> (&'static str, Vec<Write>) {
    let job = r.job;
    let env = crate::jobs::env_of(job);
    let (final_state, title, tone) = f.outcome(env);
    let mut report = Report {
        environment: env.to_owned(),
        version: "-".into(),
        migration: f.migration_summary(),
        health_url: None,
        health: "not checked".into(),
        status: final_state.into(),
        duration_ms: took.as_millis() as i64,
        requested_by: job.requested_by.clone(),
        extra: Vec::new(),
    };
    let x = &mut report.extra;
    x.push((
        "Fresh database test".into(),
        match &f.fresh {
            Some(Ok(_)) => "PASSED".into(),
            Some(Err((why, _))) => format!("FAILED – {why}"),
            None => "not run".into(),
        },
    ));
    if let Some(Ok(t)) = &f.fresh {
        x.push((
            "Tables created".into(),
            if t.is_empty() {
                "none".into()
            } else {
                t.join(", ")
            },
        ));
    }
    if let Some(d) = &f.drift {
        x.push((
            "Schema drift".into(),
            if d.is_empty() {
                "None".into()
            } else {
                format!("Found – {}", d.join("; "))
            },
        ));
    }
    x.push((
        "Backup".into(),
        f.backup
            .as_ref()
            .map(|b| b.describe())
            .unwrap_or_else(|| "none taken".into()),
    ));
    x.push(("Safe for production".into(), f.safe_for_production()));
    if let Some(reason) = &job.emergency {
        x.push(("Emergency override".into(), reason.clone()));
    }
    let kind = if final_state == state::SUCCEEDED {
        NoticeKind::MigrationApplied
    } else {
        NoticeKind::DeploymentFailed
    };
    let mut notice = report.apply(Notice::new(kind, tone, title)).job(job.id);
    if let Some(Err((_, lines))) = &f.fresh
        && !lines.is_empty()
    {
        notice = notice.body(lines.join("\n"));
    }
    end_writes(r, final_state, notice)
}
