//! `/jobs/N`: the job's state, steps, approvals and final report, and its log: paged
//! (`?after=LINE`), searchable (`?q=`), step boundaries marked, and live while the job runs
//! (`/jobs/N/events`, Server-Sent Events, read by `assets/app.js`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::domain::notice::Notice;
use crate::domain::time::fmt_duration;
use crate::server::ui::html::{Text, Viewer, badge, esc, q, time};
use crate::server::ui::{Page, db_problem, problem};
use crate::store::jobs::{JobRow, state};
use crate::store::{LogRow, Result};

/// Log lines per page (and per live batch).
pub const LOG_PAGE: i64 = 500;
/// How often the live log looks for new lines.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Show lines after this line id.
    after: Option<i64>,
    /// Only lines containing this.
    q: Option<String>,
}

pub async fn page(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Query(p): Query<Params>,
) -> Response {
    let search = p.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > 200) {
        return problem(
            StatusCode::BAD_REQUEST,
            "A search is at most 200 characters.",
            &viewer,
        );
    }
    let job = match app.db.job(id).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                &format!("There is no job #{id}."),
                &viewer,
            );
        }
        Err(e) => return db_problem(e, &viewer),
    };
    match render(&app, &job, p.after.unwrap_or(0), search).await {
        Ok((body, live)) => {
            let page = Page::new(format!("Job #{id}"), body);
            let page = if live { page.with_script() } else { page };
            page.respond(StatusCode::OK, &viewer)
        }
        Err(e) => db_problem(e, &viewer),
    }
}

/// The page's body, and whether the live log should run.
async fn render(
    app: &App,
    job: &JobRow,
    after: i64,
    search: Option<&str>,
) -> Result<(String, bool)> {
    let t = Text::new(&app.redactor);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<h1>Job #{} <span id=\"state\">{}</span></h1><dl class=\"facts\">\
         <dt>Command</dt><dd>{}</dd><dt>Environment</dt><dd>{}</dd><dt>Version</dt><dd><code class=\"version\">{}</code></dd>\
         <dt>Requested by</dt><dd>{} on {}</dd><dt>Created</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd><dt>Finished</dt><dd>{}</dd>",
        job.id,
        badge(&job.state),
        t.t(&job.command),
        match &job.environment {
            Some(e) => format!("<a href=\"/environments/{}\">{}</a>", q(e), t.t(e)),
            None => "–".into(),
        },
        t.o(job.version.as_deref()),
        t.t(&job.requested_by),
        t.t(&job.platform),
        time(Some(job.created_at)),
        time(job.started_at),
        time(job.finished_at),
    );
    if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
        let _ = write!(out, "<dt>Duration</dt><dd>{}</dd>", fmt_duration(f - s));
    }
    if let Some(r) = &job.emergency {
        let _ = write!(
            out,
            "<dt>Emergency override</dt><dd class=\"reason\">{}</dd>",
            t.t(r)
        );
    }
    if job.attempts > 1 {
        let _ = write!(out, "<dt>Attempts</dt><dd>{}</dd>", job.attempts);
    }
    // Approvals.
    if job.approvals_needed > 0 {
        let decisions = app.db.job_decisions(job.id).await?;
        let _ = write!(out, "<dt>Approvals</dt><dd>{} needed", job.approvals_needed);
        for d in &decisions {
            let _ = write!(
                out,
                "<br>{} {} {}",
                badge(&d.decision),
                t.t(&d.approver),
                time(Some(d.at))
            );
        }
        out.push_str("</dd>");
    }
    // Steps: the command's, marked by whether they have started (have log lines).
    let started = app.db.log_steps(job.id).await?;
    let steps: Vec<String> = app
        .catalog
        .get(&job.command)
        .map(|c| c.steps.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    if !steps.is_empty() || !started.is_empty() {
        out.push_str("<dt>Steps</dt><dd><ol class=\"steps\">");
        let mut names = steps.clone();
        for (s, _) in &started {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
        for s in &names {
            match started.iter().find(|x| &x.0 == s) {
                Some((_, first)) => {
                    let _ = write!(
                        out,
                        "<li><a href=\"/jobs/{}?after={}#l{first}\">{}</a></li>",
                        job.id,
                        first - 1,
                        t.t(s)
                    );
                }
                None => {
                    let _ = write!(out, "<li>{}</li>", t.t(s));
                }
            }
        }
        out.push_str("</ol></dd>");
    }
    out.push_str("</dl>");
    // The final report, as the chat got it.
    out.push_str("<section id=\"report\" class=\"report\">");
    if let Some(n) = final_notice(app, job.id).await? {
        report(&t, &n, &mut out);
    }
    out.push_str("</section>");
    // The log.
    let total = app.db.log_count(job.id).await?;
    let lines = app.db.log_page(job.id, after, search, LOG_PAGE).await?;
    let _ = write!(
        out,
        "<h2>Log <small><span id=\"count\">{total}</span> line{}</small></h2>\
         <form class=\"filters\" method=\"get\" action=\"/jobs/{}\"><label>Search <input name=\"q\" value=\"{}\"></label> \
         <button>Search</button>{}</form>",
        if total == 1 { "" } else { "s" },
        job.id,
        esc(search.unwrap_or("")),
        if search.is_some() || after > 0 {
            format!(" <a href=\"/jobs/{}\">whole log from the start</a>", job.id)
        } else {
            String::new()
        }
    );
    let last_id = lines.last().map(|l| l.id).unwrap_or(after);
    let at_end = (lines.len() as i64) < LOG_PAGE;
    let live = at_end && search.is_none() && !state::is_final(&job.state);
    let _ = write!(
        out,
        "<table class=\"log\" id=\"log\" data-job=\"{}\" data-after=\"{last_id}\" data-live=\"{}\" data-step=\"{}\"><tbody>",
        job.id,
        if live { "1" } else { "0" },
        esc(&lines.last().map(|l| l.step.clone()).unwrap_or_default())
    );
    log_rows(&t, &lines, &mut out);
    out.push_str("</tbody></table>");
    if lines.is_empty() {
        out.push_str(if search.is_some() {
            "<p id=\"nolog\">No line matches.</p>"
        } else {
            "<p id=\"nolog\">No output yet.</p>"
        });
    }
    if !at_end {
        let _ = write!(
            out,
            "<p class=\"pager\"><a href=\"/jobs/{}?after={last_id}{}\">Next {LOG_PAGE} lines →</a></p>",
            job.id,
            search
                .map(|s| format!("&amp;q={}", q(s)))
                .unwrap_or_default()
        );
    }
    if live {
        out.push_str("<noscript><p>This job is running: reload to see new lines.</p></noscript>");
    }
    Ok((out, live))
}

/// Rows of the log table, a step heading wherever the step changes.
fn log_rows(t: &Text<'_>, lines: &[LogRow], out: &mut String) {
    let mut step: Option<&str> = None;
    for l in lines {
        if step != Some(l.step.as_str()) {
            let _ = write!(
                out,
                "<tr class=\"step\"><th colspan=\"2\">▶ {}</th></tr>",
                t.t(&l.step)
            );
            step = Some(&l.step);
        }
        let _ = write!(
            out,
            "<tr id=\"l{}\" class=\"{}\"><td class=\"n\">{}</td><td>{}</td></tr>",
            l.id,
            match l.stream.as_str() {
                "stderr" => "err",
                "note" => "note",
                _ => "out",
            },
            l.id,
            t.t(&l.line)
        );
    }
}

/// The newest notice of the job that ends its story.
async fn final_notice(app: &App, job_id: i64) -> Result<Option<Notice>> {
    Ok(app
        .db
        .newest_job_notices(job_id, 20)
        .await?
        .iter()
        .filter_map(|b| Notice::from_json(b).ok())
        .find(|n| n.kind.is_final()))
}

fn report(t: &Text<'_>, n: &Notice, out: &mut String) {
    let _ = write!(
        out,
        "<h2 class=\"tone-{}\">{} {}</h2><dl class=\"facts\">",
        match n.tone {
            crate::domain::notice::Tone::Success => "good",
            crate::domain::notice::Tone::Danger => "bad",
            crate::domain::notice::Tone::Warning => "warn",
            _ => "plain",
        },
        n.tone.symbol(),
        t.t(&n.title)
    );
    for f in &n.fields {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", t.t(&f.label), t.t(&f.value));
    }
    out.push_str("</dl>");
}

/// A line as the live log sends it.
#[derive(serde::Serialize)]
struct LiveLine {
    id: i64,
    step: String,
    stream: String,
    line: String,
}

/// The end of the live log: the final state and report.
#[derive(serde::Serialize)]
struct LiveEnd {
    state: String,
    title: Option<String>,
    tone: Option<String>,
    fields: Vec<(String, String)>,
}

/// Server-Sent Events: `lines` (a JSON array of new lines, redacted, not escaped: the
/// script sets them as text) until the job is final and every line is sent, then `end`.
pub async fn events(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Query(p): Query<Params>,
) -> Response {
    match app.db.job(id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                &format!("There is no job #{id}."),
                &viewer,
            );
        }
        Err(e) => return db_problem(e, &viewer),
    }
    struct S {
        app: Arc<App>,
        id: i64,
        after: i64,
        done: bool,
        first: bool,
    }
    let s = S {
        app,
        id,
        after: p.after.unwrap_or(0),
        done: false,
        first: true,
    };
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            if !s.first {
                tokio::time::sleep(POLL).await;
            }
            s.first = false;
            if s.app.health.draining() {
                return None;
            }
            // The state first: lines written before it went final are all read below.
            let job = s.app.db.job(s.id).await.ok().flatten()?;
            let lines = s
                .app
                .db
                .log_page(s.id, s.after, None, LOG_PAGE)
                .await
                .ok()?;
            if let Some(l) = lines.last() {
                s.after = l.id;
                let out: Vec<LiveLine> = lines
                    .into_iter()
                    .map(|l| LiveLine {
                        id: l.id,
                        line: s.app.redactor.redact(&l.line),
                        step: s.app.redactor.redact(&l.step),
                        stream: l.stream,
                    })
                    .collect();
                let ev = Event::default()
                    .event("lines")
                    .json_data(&out)
                    .unwrap_or_default();
                s.first = true;
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if state::is_final(&job.state) {
                let n = final_notice(&s.app, s.id).await.ok().flatten();
                let r = &s.app.redactor;
                let end = LiveEnd {
                    state: job.state.clone(),
                    title: n
                        .as_ref()
                        .map(|n| format!("{} {}", n.tone.symbol(), r.redact(&n.title))),
                    tone: n.as_ref().map(|n| format!("{:?}", n.tone).to_lowercase()),
                    fields: n
                        .map(|n| {
                            n.fields
                                .iter()
                                .map(|f| (r.redact(&f.label), r.redact(&f.value)))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                s.done = true;
                let ev = Event::default()
                    .event("end")
                    .json_data(&end)
                    .unwrap_or_default();
                return Some((Ok(ev), s));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
