//! `deckhand run`: a command submitted as the local operator and followed in the terminal,
//! run right here when no `deckhand serve` shares the database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::exit;
use crate::app::App;
use crate::domain::platform::Platform;
use crate::intake::policy::Identity;
use crate::intake::{Invocation, Outcome};
use crate::support::runner::CancelToken;

/// `deckhand run`: submit as the local operator, then follow the job in the terminal.
pub(super) async fn run(app: Arc<App>, command: String, args: Vec<String>) -> anyhow::Result<i32> {
    let job_id = match submit(&app, command, args).await? {
        Ok(id) => id,
        Err(code) => return Ok(code),
    };
    // Without a live `serve` on this database, run the job here.
    let local = !app.db.live_server(6_000).await?;
    let stop = CancelToken::new();
    let shutdown = CancelToken::new();
    let mut tasks = Vec::new();
    if local {
        tasks.push(tokio::spawn(crate::jobs::run_workers(
            app.clone(),
            stop.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(crate::outbox::run_sender(
            app.clone(),
            crate::server::deliverers(&app, false),
            stop.clone(),
        )));
    } else {
        outln!("(a running `deckhand serve` will run it; following)");
    }
    let code = tokio::select! {
        r = follow(&app, job_id) => r?,
        _ = crate::server::signal() => {
            eprintln!("interrupted: stopping; job {job_id} is reported as interrupted at the next start");
            shutdown.cancel();
            130
        }
    };
    if local {
        if code != 130 {
            flush_notices(&app).await;
        }
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
    }
    Ok(code)
}

/// Submit as the local operator: the job to follow, or the exit code when there is none
/// (refused, or a built-in's answer, printed here).
async fn submit(
    app: &Arc<App>,
    command: String,
    args: Vec<String>,
) -> anyhow::Result<Result<i64, i32>> {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let inv = Invocation {
        platform: Platform::Terminal.as_str().into(),
        identity: Identity::Operator,
        actor: format!("terminal:{}", crate::domain::text::shorten(&user)),
        channel: None,
        command,
        args,
        request_id: Some(format!("terminal:{}", hex::encode(b))),
        reply_to: None,
    };
    Ok(match crate::intake::submit(app, inv).await? {
        Outcome::Refused(r) => {
            eprintln!("✖ refused: {r}");
            Err(exit::REFUSED)
        }
        Outcome::Info(i) => {
            outln!("{i}");
            Err(exit::OK)
        }
        // A new job's first notice says it was queued; a repeat says which job it is.
        Outcome::Accepted {
            job_id,
            message,
            duplicate,
        } => {
            if duplicate {
                outln!("{message}");
            }
            Ok(job_id)
        }
    })
}

/// Let other platforms' notices of the job (and its GitHub deployment statuses, paced a
/// second apart) go out before leaving, for up to 10 s; what is left goes out with the
/// next sender.
async fn flush_notices(app: &App) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let pending: i64 = app
            .db
            .outbox_depth()
            .await
            .map(|d| {
                d.iter()
                    .filter(|x| x.0 != Platform::Terminal.as_str())
                    .map(|x| x.1)
                    .sum()
            })
            .unwrap_or(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Print the job's notices and log lines in the order they happened; return its exit code
/// at the end.
async fn follow(app: &App, job_id: i64) -> anyhow::Result<i32> {
    let (mut last_notice, mut last_log) = (0i64, 0i64);
    loop {
        let job = app.db.job(job_id).await?.context("the job disappeared")?;
        let mut out: Vec<(i64, String)> = Vec::new();
        for l in app.db.job_log(job_id, last_log).await? {
            out.push((
                l.at,
                crate::jobs::render_log_line(&l.step, &l.stream, &l.line),
            ));
            last_log = l.id;
        }
        for n in app
            .db
            .job_notices(job_id, Platform::Terminal.as_str(), last_notice)
            .await?
        {
            if let Some(notice) = n.notice() {
                out.push((n.created_at, notice.render_text()));
            }
            last_notice = n.id;
        }
        out.sort_by_key(|o| o.0);
        for (_, line) in out {
            outln!("{line}");
        }
        if crate::store::jobs::state::is_final(&job.state) {
            return Ok(if job.state == crate::store::jobs::state::SUCCEEDED {
                exit::OK
            } else {
                exit::JOB_FAILED
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
