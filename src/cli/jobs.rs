//! What the database recorded, printed: `deckhand jobs`, `deckhand logs JOB` and
//! `deckhand audit`; and `deckhand jobs release`, which frees a held environment.

use super::exit;
use crate::app::App;
use crate::config::Settings;
use crate::domain::text::describe;
use crate::domain::time::fmt_time;

/// `deckhand jobs [--limit N]`: the latest jobs, newest first.
pub(super) async fn jobs(settings: Settings, limit: i64) -> anyhow::Result<i32> {
    let app = App::build(settings).await?;
    outln!(
        "{:>6}  {:<19}  {:<18} {:<24} {:<11} {:>9}  BY",
        "JOB",
        "CREATED",
        "COMMAND",
        "WHAT",
        "STATE",
        "TOOK"
    );
    for j in app.db.recent_jobs(limit).await? {
        outln!(
            "{:>6}  {:<19}  {:<18} {:<24} {:<11} {:>9}  {}",
            j.id,
            fmt_time(j.created_at).trim_end_matches(" UTC"),
            j.command,
            describe("", j.environment.as_deref(), j.version.as_deref()).trim(),
            j.state,
            crate::jobs::job_duration(&j),
            j.requested_by
        );
    }
    Ok(exit::OK)
}

/// `deckhand jobs release JOB --reason "…"`: free the environment an interrupted job holds
/// for a step that may still be alive. The local operator counts as an admin, like `run`.
pub(super) async fn release(settings: Settings, job: &str, reason: &str) -> anyhow::Result<i32> {
    let id = crate::domain::JobId::parse(job)
        .map_err(|e| anyhow::anyhow!(e.0))?
        .0;
    let app = App::build(settings).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let actor = format!("terminal:{}", crate::domain::text::shorten(&user));
    let platform = crate::domain::platform::Platform::Terminal.as_str();
    Ok(
        match crate::jobs::release_by_admin(&app, id, &actor, platform, reason).await? {
            Ok(done) => {
                outln!("✔ {done}");
                exit::OK
            }
            Err(why) => {
                eprintln!("✖ refused: {why}");
                exit::REFUSED
            }
        },
    )
}

/// `deckhand logs JOB`: a job's stored log and its result.
pub(super) async fn logs(settings: Settings, job: &str) -> anyhow::Result<i32> {
    let id = crate::domain::JobId::parse(job)
        .map_err(|e| anyhow::anyhow!(e.0))?
        .0;
    let app = App::build(settings).await?;
    let Some(j) = app.db.job(id).await? else {
        eprintln!("deckhand: there is no job {id}");
        return Ok(exit::REFUSED);
    };
    outln!(
        "job {} {} — {}",
        j.id,
        describe(&j.command, j.environment.as_deref(), j.version.as_deref()),
        j.state
    );
    for l in app.db.job_log(id, 0).await? {
        outln!(
            "{}",
            crate::jobs::render_log_line(&l.step, &l.stream, &l.line)
        );
    }
    if let Some(r) = j.result {
        outln!("{r}");
    }
    Ok(exit::OK)
}

/// `deckhand audit [--env ENV] [--limit N]`.
pub(super) async fn audit(
    settings: Settings,
    env: Option<&str>,
    limit: i64,
) -> anyhow::Result<i32> {
    let app = App::build(settings).await?;
    for a in app.db.audit(env, limit).await? {
        outln!(
            "{}  {:<22} {:<9} {:<18} {:<11} {:<6} {}",
            fmt_time(a.at),
            a.actor,
            a.platform,
            a.action,
            a.environment.as_deref().unwrap_or("-"),
            a.job_id
                .map(|j| j.to_string())
                .unwrap_or_else(|| "-".into()),
            a.detail
        );
    }
    Ok(exit::OK)
}
