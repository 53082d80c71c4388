//! `/environments/NAME`: deployment history (paged), incidents, 30 days of uptime, the lock
//! and the last verified backup.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::app::App;
use crate::domain::time::fmt_duration;
use crate::server::ui::html::{Text, Viewer, badge, esc, q, time, uptime_chart, verdict};
use crate::server::ui::{Page, UptimeCache, db_problem, problem, slo, uptime};
use crate::store::Result;

/// Deployments per page.
const PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct Params {
    /// Show deployments older than this deployment id.
    before: Option<i64>,
}

pub async fn page(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Extension(cache): Extension<Arc<UptimeCache>>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    if !app.settings.config.environments.contains_key(&name) {
        return problem(
            StatusCode::NOT_FOUND,
            &format!("There is no environment named {name:?}."),
            &viewer,
        );
    }
    match render(&app, &cache, &name, p.before).await {
        Ok(body) => Page::new(name, body).respond(StatusCode::OK, &viewer),
        Err(e) => db_problem(e, &viewer),
    }
}

async fn render(app: &App, cache: &UptimeCache, name: &str, before: Option<i64>) -> Result<String> {
    let t = Text::new(&app.redactor);
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(out, "<h1>{}</h1>", esc(name));
    let current = app.db.current_deployment(name).await?;
    out.push_str("<dl class=\"facts\">");
    match &current {
        Some(d) => {
            let _ = write!(
                out,
                "<dt>Runs</dt><dd><code class=\"version\">{}</code> {} since {}</dd>",
                t.t(&d.version),
                verdict(d.verified),
                time(d.finished_at)
            );
        }
        None => out.push_str("<dt>Runs</dt><dd>nothing deployed yet</dd>"),
    }
    if let Some(l) = app.db.lock_of(name).await? {
        let _ = write!(
            out,
            "<dt>Lock</dt><dd>{} by {} since {}: <q class=\"reason\">{}</q></dd>",
            badge("locked"),
            t.t(&l.locked_by),
            time(Some(l.locked_at)),
            t.t(&l.reason)
        );
    }
    match app.db.last_backup(name).await? {
        Some((job, at, path)) => {
            let _ = write!(
                out,
                "<dt>Last verified backup</dt><dd><code>{}</code> (<a href=\"/jobs/{job}\">job #{job}</a>, {})</dd>",
                t.t(&path),
                time(at)
            );
        }
        None => out.push_str("<dt>Last verified backup</dt><dd>none recorded</dd>"),
    }
    let slo = slo(app);
    let (days, pct) = uptime(app, cache, name, 30).await?;
    let _ = write!(
        out,
        "<dt>Uptime 30 d</dt><dd>{} <small>SLO {slo} %</small><br>{}</dd></dl>",
        match pct {
            Some(p) => format!("{p:.2} %"),
            None => "no probe data".into(),
        },
        uptime_chart(&days, slo)
    );
    deployments(app, &t, name, before, &mut out).await?;
    incidents(app, &t, name, &mut out).await?;
    Ok(out)
}

async fn deployments(
    app: &App,
    t: &Text<'_>,
    name: &str,
    before: Option<i64>,
    out: &mut String,
) -> Result<()> {
    let rows = app.db.deployments_page(name, before, PAGE).await?;
    out.push_str("<h2>Deployments</h2>");
    if rows.is_empty() {
        out.push_str("<p>None.</p>");
        return Ok(());
    }
    out.push_str(
        "<table><thead><tr><th>Version</th><th>Kind</th><th>Outcome</th><th>Health</th><th>By</th>\
         <th>Started</th><th>Duration</th><th>Job</th></tr></thead><tbody>",
    );
    for d in &rows {
        let kind = if d.kind == "rollback" {
            format!(
                "<a class=\"rollback\" href=\"/jobs/{}\">rollback</a>",
                d.job_id
            )
        } else {
            t.t(&d.kind)
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/jobs/{job}\">#{job}</a></td></tr>",
            t.t(&d.version),
            badge(&d.status),
            t.o(d.health.as_deref()),
            t.t(&d.requested_by),
            time(Some(d.started_at)),
            d.duration_ms
                .map(fmt_duration)
                .unwrap_or_else(|| "–".into()),
            job = d.job_id
        );
    }
    out.push_str("</tbody></table>");
    if rows.len() as i64 == PAGE
        && let Some(last) = rows.last()
    {
        let _ = write!(
            out,
            "<p class=\"pager\"><a href=\"/environments/{}?before={}\">Older deployments →</a></p>",
            q(name),
            last.id
        );
    }
    Ok(())
}

async fn incidents(app: &App, t: &Text<'_>, name: &str, out: &mut String) -> Result<()> {
    let rows = app.db.incidents_page(Some(name), None, 10).await?;
    out.push_str("<h2>Incidents</h2>");
    if rows.is_empty() {
        out.push_str("<p>None.</p>");
        return Ok(());
    }
    super::lists::incident_table(t, &rows, out);
    let _ = write!(
        out,
        "<p class=\"pager\"><a href=\"/incidents?env={}\">All incidents of {} →</a></p>",
        q(name),
        esc(name)
    );
    Ok(())
}
