//! `/incidents` and `/audit`: newest first, paged by id, filtered by query parameters.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::app::App;
use crate::server::ui::html::{Text, Viewer, badge, esc, q, time};
use crate::server::ui::{Page, db_problem, problem};
use crate::store::incidents::IncidentRow;
use crate::store::pages::AuditFilter;

/// Rows per page.
const PAGE: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    before: Option<i64>,
    env: Option<String>,
    person: Option<String>,
    command: Option<String>,
}

/// An empty filter field means "any".
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The environment filter: `None`, or a configured environment (else a message).
fn env_filter(app: &App, p: &Params) -> Result<Option<String>, String> {
    match given(&p.env) {
        Some(e) if !app.settings.config.environments.contains_key(&e) => {
            Err(format!("There is no environment named {e:?}."))
        }
        e => Ok(e),
    }
}

pub async fn incidents(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Query(p): Query<Params>,
) -> Response {
    let env = match env_filter(&app, &p) {
        Ok(e) => e,
        Err(m) => return problem(StatusCode::BAD_REQUEST, &m, &viewer),
    };
    let rows = match app.db.incidents_page(env.as_deref(), p.before, PAGE).await {
        Ok(r) => r,
        Err(e) => return db_problem(e, &viewer),
    };
    let t = Text::new(&app.redactor);
    let mut out = String::from("<h1>Incidents</h1>");
    if let Some(e) = &env {
        let _ = write!(
            out,
            "<p>Of {} · <a href=\"/incidents\">all environments</a></p>",
            esc(e)
        );
    }
    if rows.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        incident_table(&t, &rows, &mut out);
    }
    if rows.len() as i64 == PAGE
        && let Some(last) = rows.last()
    {
        let _ = write!(
            out,
            "<p class=\"pager\"><a href=\"/incidents?before={}{}\">Older →</a></p>",
            last.id,
            env.as_deref()
                .map(|e| format!("&amp;env={}", q(e)))
                .unwrap_or_default()
        );
    }
    Page::new("Incidents", out).respond(StatusCode::OK, &viewer)
}

/// A table of incidents.
pub fn incident_table(t: &Text<'_>, rows: &[IncidentRow], out: &mut String) {
    out.push_str(
        "<table><thead><tr><th>#</th><th>Severity</th><th>Status</th><th>Title</th><th>Environment</th>\
         <th>Service</th><th>First seen</th><th>Resolved</th><th>Seen</th><th>Acknowledged</th></tr></thead><tbody>",
    );
    for i in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}×</td><td>{}</td></tr>",
            i.id,
            t.t(&i.severity),
            badge(&i.status),
            t.t(&i.title),
            i.description
                .as_deref()
                .map(|d| format!("<br><small>{}</small>", t.t(d)))
                .unwrap_or_default(),
            t.o(i.environment.as_deref()),
            t.o(i.service.as_deref()),
            time(Some(i.first_seen)),
            time(i.resolved_at),
            i.firing_count,
            t.o(i.acked_by.as_deref()),
        );
    }
    out.push_str("</tbody></table>");
}

pub async fn audit(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Query(p): Query<Params>,
) -> Response {
    let environment = match env_filter(&app, &p) {
        Ok(e) => e,
        Err(m) => return problem(StatusCode::BAD_REQUEST, &m, &viewer),
    };
    let command = given(&p.command);
    if let Some(c) = &command
        && !app.catalog.names().contains(c)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("There is no command named {c:?}."),
            &viewer,
        );
    }
    let actor = given(&p.person);
    if let Some(a) = &actor
        && (a.chars().count() > 200 || a.chars().any(char::is_control))
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "A person is at most 200 characters, without control characters.",
            &viewer,
        );
    }
    let f = AuditFilter {
        environment,
        actor,
        command,
    };
    let rows = match app.db.audit_page(&f, p.before, PAGE).await {
        Ok(r) => r,
        Err(e) => return db_problem(e, &viewer),
    };
    let t = Text::new(&app.redactor);
    let mut out = String::from("<h1>Audit</h1>");
    filter_form(&app, &f, &mut out);
    if rows.is_empty() {
        out.push_str("<p>No events match.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>When</th><th>Person</th><th>Platform</th><th>Action</th>\
             <th>Environment</th><th>Job</th><th>Detail</th></tr></thead><tbody>",
        );
        for a in &rows {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(Some(a.at)),
                t.t(&a.actor),
                t.t(&a.platform),
                t.t(&a.action),
                t.o(a.environment.as_deref()),
                a.job_id
                    .map(|j| format!("<a href=\"/jobs/{j}\">#{j}</a>"))
                    .unwrap_or_else(|| "–".into()),
                t.t(&a.detail),
            );
        }
        out.push_str("</tbody></table>");
    }
    if rows.len() as i64 == PAGE
        && let Some(last) = rows.last()
    {
        let mut link = format!("/audit?before={}", last.id);
        for (k, v) in [
            ("env", &f.environment),
            ("person", &f.actor),
            ("command", &f.command),
        ] {
            if let Some(v) = v {
                let _ = write!(link, "&{k}={}", q(v));
            }
        }
        let _ = write!(
            out,
            "<p class=\"pager\"><a href=\"{}\">Older →</a></p>",
            esc(&link)
        );
    }
    Page::new("Audit", out).respond(StatusCode::OK, &viewer)
}

/// The filter form: a GET, so filtering is a link like any other.
fn filter_form(app: &App, f: &AuditFilter, out: &mut String) {
    let opt = |v: &str, sel: bool| {
        format!(
            "<option value=\"{}\"{}>{}</option>",
            esc(v),
            if sel { " selected" } else { "" },
            esc(v)
        )
    };
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/audit\"><label>Environment <select name=\"env\"><option value=\"\">any</option>");
    for e in app.settings.config.environments.keys() {
        out.push_str(&opt(e, f.environment.as_deref() == Some(e)));
    }
    let _ = write!(
        out,
        "</select></label> <label>Person <input name=\"person\" value=\"{}\" placeholder=\"slack:T…:U…\"></label> \
         <label>Command <select name=\"command\"><option value=\"\">any</option>",
        esc(f.actor.as_deref().unwrap_or(""))
    );
    for c in app.catalog.names() {
        out.push_str(&opt(&c, f.command.as_deref() == Some(c.as_str())));
    }
    out.push_str("</select></label> <button>Filter</button></form>");
}
