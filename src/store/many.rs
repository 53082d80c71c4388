//! Many rows per statement, for the group commit (`store::group`): the new jobs of a batch
//! in one `INSERT`, the "queued behind" look of all of them in one `SELECT`, and their
//! notices and audit events in one `INSERT` per table.
//!
//! The rows travel as one JSON array bound as one parameter, read back by
//! `jsonb_to_recordset` (PostgreSQL) or `json_each` (SQLite), so each statement's text is
//! the same whatever the batch's size and is prepared once per connection. Each row keeps
//! the meaning it has when written alone: a job's idempotency conflict is its own
//! (`ON CONFLICT … DO NOTHING`, per row), a notice's follow-up look reads the thread as it
//! stood before the statement (the caller writes a thread's second notice of a batch on
//! its own, after the first), and every look is a search of the index it uses alone.

use serde_json::{Value, json};

use crate::store::jobs::NewJob;
use crate::store::outbox::insert_notice_from;
use crate::store::{AuditEvent, NewNotice};

/// The columns a new job is written with, as [`NewJob`] holds them.
const JOB_COLUMNS: &str = "command, kind, environment, version, args, state, requested_by, platform, \
     channel, reply_to, idempotency_key, concurrency_key, idempotent, approvals_needed, \
     approval_deadline, emergency";

/// `(name, PostgreSQL type)` of the rows `rows` reads; SQLite reads them by name.
fn row_source(pg: bool, param: &str, columns: &[(&str, &str)]) -> String {
    match pg {
        true => format!(
            "jsonb_to_recordset({param}::jsonb) AS v({})",
            columns
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        false => format!(
            "(SELECT {} FROM json_each({param}) ORDER BY key) AS v",
            columns
                .iter()
                .map(|(n, _)| format!("value ->> '{n}' AS {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Inserts the jobs of `$2` (see [`job_rows`]) at `$1`, each unless its idempotency key
/// is taken; returns `(id, idempotency_key)` of those inserted.
pub(crate) fn insert_jobs_sql(pg: bool) -> String {
    let src = row_source(
        pg,
        "$2",
        &[
            ("command", "text"),
            ("kind", "text"),
            ("environment", "text"),
            ("version", "text"),
            ("args", "text"),
            ("state", "text"),
            ("requested_by", "text"),
            ("platform", "text"),
            ("channel", "text"),
            ("reply_to", "text"),
            ("idempotency_key", "text"),
            ("concurrency_key", "text"),
            ("idempotent", "boolean"),
            ("approvals_needed", "bigint"),
            ("approval_deadline", "bigint"),
            ("emergency", "text"),
        ],
    );
    // SQLite reads `ON CONFLICT` after `SELECT … FROM …` as a join's, without a WHERE.
    format!(
        "INSERT INTO jobs ({JOB_COLUMNS}, run_at, created_at) SELECT {JOB_COLUMNS}, $1, $1 \
         FROM {src} WHERE true ON CONFLICT (idempotency_key) DO NOTHING \
         RETURNING id, idempotency_key"
    )
}

pub(crate) fn job_rows<'a>(jobs: impl Iterator<Item = &'a NewJob>) -> String {
    Value::Array(
        jobs.map(|j| {
            json!({
                "command": j.command, "kind": j.kind, "environment": j.environment,
                "version": j.version, "args": j.args, "state": j.state,
                "requested_by": j.requested_by, "platform": j.platform, "channel": j.channel,
                "reply_to": j.reply_to, "idempotency_key": j.idempotency_key,
                "concurrency_key": j.concurrency_key, "idempotent": j.idempotent,
                "approvals_needed": j.approvals_needed,
                "approval_deadline": j.approval_deadline, "emergency": j.emergency,
            })
        })
        .collect(),
    )
    .to_string()
}

/// For each `(id, key)` of `$1`, the job of concurrency key `key` it waits for: the last
/// one below it that is queued, running or holding its environment. Returns `(id,
/// behind)`; one index search per part, as the one-job look does.
pub(crate) fn behind_sql(pg: bool) -> String {
    let part = |cond: &str| {
        format!(
            "COALESCE((SELECT MAX(j.id) FROM jobs j WHERE j.concurrency_key = v.k AND {cond} \
             AND j.id < v.id), 0)"
        )
    };
    let parts = [
        part("j.state = 'queued'"),
        part("j.state = 'running'"),
        part("j.held_since IS NOT NULL"),
    ]
    .join(", ");
    let greatest = if pg { "GREATEST" } else { "MAX" };
    let src = row_source(pg, "$1", &[("id", "bigint"), ("k", "text")]);
    format!("SELECT v.id, NULLIF({greatest}({parts}), 0) FROM {src}")
}

pub(crate) fn behind_rows(jobs: &[(i64, &str)]) -> String {
    Value::Array(
        jobs.iter()
            .map(|(id, k)| json!({"id": id, "k": k}))
            .collect(),
    )
    .to_string()
}

/// Inserts the notices of `$1` (see [`notice_rows`]) at `$2`, each as
/// `insert_notice_sql` would alone.
pub(crate) fn insert_notices_sql(pg: bool) -> String {
    let src = row_source(
        pg,
        "$1",
        &[
            ("job_id", "bigint"),
            ("platform", "text"),
            ("channel", "text"),
            ("thread_key", "text"),
            ("body", "text"),
            ("whole", "boolean"),
            ("urgent", "boolean"),
        ],
    );
    insert_notice_from(
        pg,
        [
            "v.job_id",
            "v.platform",
            "v.channel",
            "v.thread_key",
            "v.body",
            "$2",
            "v.whole",
            "v.urgent",
        ],
        &format!(" FROM {src}"),
    )
}

pub(crate) fn notice_rows<'a>(notices: impl Iterator<Item = &'a NewNotice>) -> String {
    Value::Array(
        notices
            .map(|n| {
                json!({
                    "job_id": n.job_id, "platform": n.platform, "channel": n.channel,
                    "thread_key": n.thread_key, "body": n.body, "whole": n.whole,
                    "urgent": n.urgent,
                })
            })
            .collect(),
    )
    .to_string()
}

/// Inserts the audit events of `$1` at `$2`.
pub(crate) fn insert_audits_sql(pg: bool) -> String {
    let src = row_source(
        pg,
        "$1",
        &[
            ("actor", "text"),
            ("platform", "text"),
            ("action", "text"),
            ("environment", "text"),
            ("job_id", "bigint"),
            ("detail", "text"),
        ],
    );
    format!(
        "INSERT INTO audit_events (at, actor, platform, action, environment, job_id, detail) \
         SELECT $2, actor, platform, action, environment, job_id, detail FROM {src}"
    )
}

pub(crate) fn audit_rows<'a>(events: impl Iterator<Item = &'a AuditEvent>) -> String {
    Value::Array(
        events
            .map(|a| {
                json!({
                    "actor": a.actor, "platform": a.platform, "action": a.action,
                    "environment": a.environment, "job_id": a.job_id, "detail": a.detail,
                })
            })
            .collect(),
    )
    .to_string()
}
