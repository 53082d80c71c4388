//! The status pages: `/`, `/environments/NAME`, `/jobs/N` (with its live log at
//! `/jobs/N/events`), `/incidents`, `/audit`, and their two assets under `/ui/`.
//!
//! Read-only: every route is a GET and no handler writes. Server-rendered HTML (see
//! [`html`]); the one script (the live log) is a file embedded in the binary, loaded with a
//! per-response nonce that the page's Content-Security-Policy names. Who may read is
//! [`access`]'s business.

pub(crate) mod access;
mod environment;
pub(crate) mod html;
mod job;
mod lists;
mod overview;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::server::ui::html::{Viewer, esc, frame};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The page routes (behind [`access::guard`]) and the assets (open: they hold no data).
pub fn routes(access: Arc<access::Access>) -> Router<Arc<App>> {
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/environments/{name}", get(environment::page))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/events", get(job::events))
        .route("/incidents", get(lists::incidents))
        .route("/audit", get(lists::audit))
        .layer(axum::Extension(Arc::new(UptimeCache::default())))
        .layer(axum::middleware::from_fn_with_state(access, access::guard));
    Router::new()
        .route("/ui/app.css", get(css))
        .route("/ui/app.js", get(js))
        .merge(pages)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, kind)], body).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    r
}

/// A fresh nonce for one response's script.
fn nonce() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}

/// A rendered page with its Content-Security-Policy: styles from this server only, the
/// one script only with this response's nonce, no inline style or script otherwise.
pub(crate) struct Page {
    pub title: String,
    pub body: String,
    pub script: bool,
}

impl Page {
    pub fn new(title: impl Into<String>, body: String) -> Self {
        Self {
            title: title.into(),
            body,
            script: false,
        }
    }
    pub fn with_script(mut self) -> Self {
        self.script = true;
        self
    }
    pub fn respond(self, status: StatusCode, viewer: &Viewer) -> Response {
        let n = nonce();
        let html = frame(&self.title, &n, viewer, self.script, &self.body);
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'nonce-{n}'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        );
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&csp) {
            r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
        }
        r
    }
}

/// A page that says what went wrong (`message` is escaped).
pub(crate) fn problem(status: StatusCode, message: &str, viewer: &Viewer) -> Response {
    Page::new(
        status.canonical_reason().unwrap_or("Error"),
        format!(
            "<h1>{}</h1><p class=\"problem\">{}</p><p><a href=\"/\">Back to the overview</a></p>",
            status.as_u16(),
            esc(message)
        ),
    )
    .respond(status, viewer)
}

/// A database error as a page (its text is short and carries no query or secret).
pub(crate) fn db_problem(e: crate::store::StoreError, viewer: &Viewer) -> Response {
    tracing::warn!(error = %e, "status page: database error");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer; try again",
        viewer,
    )
}

/// The SLO the pages measure uptime against: the first digest's, else 99.5 %.
pub(crate) fn slo(app: &App) -> f64 {
    app.settings
        .config
        .digests
        .first()
        .map(|d| d.slo_percent)
        .unwrap_or(99.5)
}

/// Probe counts of whole past days, by (environment, UTC day): they no longer change, so
/// each is read from the database once; only today's are counted on every request.
#[derive(Default)]
pub(crate) struct UptimeCache(
    std::sync::Mutex<std::collections::HashMap<(String, i64), (i64, i64)>>,
);

/// Days kept in [`UptimeCache`] (the longest chart, plus one).
const CACHED_DAYS: i64 = 31;

/// Daily uptime of `env` over the last `days` days, oldest first, as the chart takes it,
/// and the whole period's percentage (`None` without probe results).
pub(crate) async fn uptime(
    app: &App,
    cache: &UptimeCache,
    env: &str,
    days: i64,
) -> crate::store::Result<(Vec<(String, Option<f64>)>, Option<f64>)> {
    const DAY: i64 = 86_400_000;
    let today = crate::domain::time::now_ms() / DAY;
    let first = today - days + 1;
    let missing: Option<i64> = {
        let c = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        (first..today).find(|d| !c.contains_key(&(env.to_owned(), *d)))
    };
    if let Some(from) = missing {
        let rows = app.db.uptime_days(env, from * DAY, today * DAY).await?;
        let mut c = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|k, _| k.1 > today - CACHED_DAYS);
        for d in from..today {
            let r = rows.iter().find(|r| r.0 == d).map(|r| (r.1, r.2));
            c.insert((env.to_owned(), d), r.unwrap_or((0, 0)));
        }
    }
    let now_rows = app.db.uptime_days(env, today * DAY, i64::MAX).await?;
    let counts: Vec<(i64, (i64, i64))> = {
        let c = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        (first..today)
            .map(|d| (d, c.get(&(env.to_owned(), d)).copied().unwrap_or((0, 0))))
            .chain(std::iter::once((
                today,
                now_rows.first().map(|r| (r.1, r.2)).unwrap_or((0, 0)),
            )))
            .collect()
    };
    let (mut good, mut all) = (0i64, 0i64);
    let out = counts
        .into_iter()
        .map(|(d, (g, n))| {
            let label = chrono::DateTime::from_timestamp_millis(d * DAY)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            good += g;
            all += n;
            (label, (n > 0).then(|| g as f64 * 100.0 / n as f64))
        })
        .collect();
    Ok((out, (all > 0).then(|| good as f64 * 100.0 / all as f64)))
}
