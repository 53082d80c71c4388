//! `/`: every environment at a glance, then the newest jobs.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::app::App;
use crate::domain::time::fmt_duration;
use crate::server::ui::html::{Text, Viewer, badge, esc, q, time, uptime_chart, verdict};
use crate::server::ui::{Page, UptimeCache, db_problem, slo, uptime};
use crate::store::Result;

/// Open jobs listed per environment (the rest are counted).
const OPEN_SHOWN: i64 = 5;
/// Jobs in the list under the environments.
const RECENT: i64 = 15;

pub async fn page(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Viewer>,
    Extension(cache): Extension<Arc<UptimeCache>>,
) -> Response {
    match render(&app, &cache).await {
        Ok(body) => Page::new("Overview", body).respond(StatusCode::OK, &viewer),
        Err(e) => db_problem(e, &viewer),
    }
}

/// The overview's body.
async fn render(app: &App, cache: &UptimeCache) -> Result<String> {
    let t = Text::new(&app.redactor);
    let mut out = String::with_capacity(16 * 1024);
    let firing = app.db.firing_incidents().await?;
    out.push_str("<h1>Environments</h1>");
    if !firing.is_empty() {
        let _ = write!(
            out,
            "<p class=\"alert\"><a href=\"/incidents\">{} incident{} firing</a></p>",
            firing.len(),
            if firing.len() == 1 { "" } else { "s" }
        );
    }
    out.push_str("<div class=\"cards\">");
    for (name, cfg) in &app.settings.config.environments {
        card(app, cache, &t, name, cfg, &mut out).await?;
    }
    out.push_str("</div>");
    recent_jobs(app, &t, &mut out).await?;
    Ok(out)
}

async fn card(
    app: &App,
    cache: &UptimeCache,
    t: &Text<'_>,
    name: &str,
    cfg: &crate::config::EnvironmentConfig,
    out: &mut String,
) -> Result<()> {
    let current = app.db.current_deployment(name).await?;
    let last = app.db.deployments_page(name, None, 1).await?.pop();
    let probe = app.db.latest_probe(name).await?;
    let lock = app.db.lock_of(name).await?;
    let (open, open_n) = app.db.open_jobs_page(name, OPEN_SHOWN).await?;
    let (days, pct) = uptime(app, cache, name, 7).await?;
    let slo = slo(app);
    let _ = write!(
        out,
        "<section class=\"card\" data-env=\"{n}\"><h2><a href=\"/environments/{u}\">{n}</a></h2><dl>",
        n = esc(name),
        u = q(name)
    );
    // What runs there, and whether it is verified.
    match &current {
        Some(d) => {
            let _ = write!(
                out,
                "<dt>Version</dt><dd><code class=\"version\">{}</code> {}</dd>",
                t.t(&d.version),
                verdict(d.verified)
            );
        }
        None => out.push_str("<dt>Version</dt><dd>nothing deployed yet</dd>"),
    }
    // Health now: the newest probe when it is newer than the deployment's own check.
    let deployed_at = current
        .as_ref()
        .and_then(|d| d.finished_at)
        .unwrap_or(i64::MIN);
    out.push_str("<dt>Health</dt><dd class=\"health\">");
    match (&probe, &current) {
        (Some(p), _) if p.at >= deployed_at => {
            let what = match (p.ok, p.status) {
                (true, Some(s)) => format!("healthy, returning {s} in {} ms", p.latency_ms),
                (true, None) => format!("healthy in {} ms", p.latency_ms),
                (false, _) => format!("down: {}", p.error.as_deref().unwrap_or("failing")),
            };
            let _ = write!(
                out,
                "{} {} <small>probed {}</small>",
                badge(if p.ok { "healthy" } else { "down" }),
                t.t(&what),
                time(Some(p.at))
            );
        }
        (_, Some(d)) => {
            let _ = write!(
                out,
                "{} {} {} <small>at deploy, {}</small>",
                badge(if d.verified { "healthy" } else { "failing" }),
                t.o(cfg.health_url.as_deref()),
                t.o(d.health.as_deref()),
                time(d.finished_at)
            );
        }
        _ => out.push_str("not checked yet"),
    }
    out.push_str("</dd>");
    // Uptime over 7 days against the SLO.
    let _ = write!(
        out,
        "<dt>Uptime 7 d</dt><dd>{} <small>SLO {slo} %</small><br>{}</dd>",
        match pct {
            Some(p) => format!("{p:.2} %"),
            None => "no probe data".into(),
        },
        uptime_chart(&days, slo)
    );
    if let Some(l) = &lock {
        let _ = write!(
            out,
            "<dt>Lock</dt><dd>{} by {} since {}: <q class=\"reason\">{}</q></dd>",
            badge("locked"),
            t.t(&l.locked_by),
            time(Some(l.locked_at)),
            t.t(&l.reason)
        );
    }
    out.push_str("<dt>Jobs</dt><dd>");
    if open.is_empty() {
        out.push_str("none running or queued");
    } else {
        out.push_str("<ul class=\"plain\">");
        for j in &open {
            let _ = write!(
                out,
                "<li><a href=\"/jobs/{id}\">#{id}</a> {} {} {}</li>",
                badge(&j.state),
                t.t(&j.command),
                t.o(j.version.as_deref()),
                id = j.id
            );
        }
        if open_n > open.len() as i64 {
            let _ = write!(out, "<li>and {} more</li>", open_n - open.len() as i64);
        }
        out.push_str("</ul>");
    }
    out.push_str("</dd>");
    if let Some(d) = &last {
        let _ = write!(
            out,
            "<dt>Last deploy</dt><dd><a href=\"/jobs/{}\">{}</a> {} by {}, {}{}</dd>",
            d.job_id,
            t.t(&d.version),
            badge(&d.status),
            t.t(&d.requested_by),
            time(Some(d.started_at)),
            d.duration_ms
                .map(|ms| format!(", took {}", fmt_duration(ms)))
                .unwrap_or_default()
        );
    }
    out.push_str("</dl></section>");
    Ok(())
}

async fn recent_jobs(app: &App, t: &Text<'_>, out: &mut String) -> Result<()> {
    let jobs = app.db.jobs_page(None, RECENT).await?;
    out.push_str("<h2>Recent jobs</h2>");
    if jobs.is_empty() {
        out.push_str("<p>No jobs yet.</p>");
        return Ok(());
    }
    out.push_str(
        "<table><thead><tr><th>Job</th><th>Command</th><th>Environment</th><th>Version</th>\
         <th>State</th><th>By</th><th>Created</th></tr></thead><tbody>",
    );
    for j in &jobs {
        let _ = write!(
            out,
            "<tr><td><a href=\"/jobs/{id}\">#{id}</a></td><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            t.t(&j.command),
            t.o(j.environment.as_deref()),
            t.o(j.version.as_deref()),
            badge(&j.state),
            t.t(&j.requested_by),
            time(Some(j.created_at)),
            id = j.id
        );
    }
    out.push_str("</tbody></table>");
    Ok(())
}
