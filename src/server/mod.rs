//! The HTTP server and the background loops of `deckhand serve`.
//!
//! Shutdown (SIGTERM or SIGINT) drains in order: new commands get 503 at once, workers
//! stop claiming, running jobs get the configured grace period to finish, then their step
//! process groups are stopped and the jobs are left for the next start to report as
//! interrupted; the outbox is flushed as far as the platforms allow; the process exits 0.
//!
//! Every route passes `server::limits` (rate budgets per route group on the command and
//! alert endpoints, body size, request deadline) inside `observe`, so refusals are measured and
//! carry the security headers too.
//!
//! Both listeners serve through `server::conn`: header-read and idle timeouts, and a cap
//! on open connections that sheds idle ones rather than refusing new clients.

pub(crate) mod alerts;
pub(crate) mod conn;
pub(crate) mod github;
pub(crate) mod limits;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::domain::platform::Platform;
use crate::domain::time::now_ms;
use crate::outbox::{Deliverer, run_sender};
use crate::server::limits::{Limits, enforce};
use crate::support::runner::CancelToken;

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The router of the public listener on `addr`: public endpoints, the status pages
/// (guarded as `addr` and `[ui]` say) and (unless served apart) `/metrics`.
pub fn router(app: Arc<App>, with_metrics: bool, addr: std::net::SocketAddr) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    if with_metrics {
        r = r.route("/metrics", get(metrics));
    }
    let pages = Arc::new(ui::access::Access::new(&app.settings, addr));
    harden(&app, r.merge(routes()).merge(ui::routes(pages))).with_state(app)
}

/// The router of the separate metrics listener (`[server] metrics_listen`).
pub fn metrics_router(app: Arc<App>) -> Router {
    harden(&app, Router::new().route("/metrics", get(metrics))).with_state(app)
}

/// What every route gets, outermost first: latency metrics and security headers, the
/// inbound limits (rate, size, deadline), and a body cap for the extractors (routes may
/// set a smaller one, as Slack's do).
///
/// Outside those: every request gets an `x-request-id` (kept when the caller sent one, and
/// echoed on the response) and a tracing span named by it; the headers that carry
/// credentials are marked sensitive first, so no log at any level prints them.
fn harden(app: &App, r: Router<Arc<App>>) -> Router<Arc<App>> {
    let limits = Arc::new(Limits::new(&app.settings.config.server, &app.budgets));
    let request_id = header::HeaderName::from_static("x-request-id");
    r.layer(DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn_with_state(limits, enforce))
        .layer(axum::middleware::from_fn(observe))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(span))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new(
            SENSITIVE_HEADERS.map(header::HeaderName::from_static),
        ))
}

/// Request headers that carry credentials or signatures.
const SENSITIVE_HEADERS: [&str; 5] = [
    "authorization",
    "x-slack-signature",
    "x-signature-ed25519",
    "x-hub-signature-256",
    "cookie",
];

/// The span of one request: method, path (never the query) and request id.
fn span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::debug_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// Latency by route, and the headers every response carries.
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let mut resp = next.run(req).await;
    crate::support::metrics::http(
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The status pages set their own (with their script's nonce).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn health() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = app.db.ready().await {
        problems.push(e);
    }
    let stale = |t: i64| now_ms() - t > 10_000;
    if !app.health.workers_started.load(Ordering::Relaxed)
        || stale(app.health.worker_tick.load(Ordering::Relaxed))
    {
        problems.push("job workers are not running".into());
    }
    if !app.health.outbox_started.load(Ordering::Relaxed)
        || stale(app.health.outbox_tick.load(Ordering::Relaxed))
    {
        problems.push("the outbox sender is not running".into());
    }
    if let Some(e) = app.health.outbox_error() {
        problems.push(format!("outbox: {e}"));
    }
    if app.health.draining() {
        problems.push("shutting down".into());
    }
    let socket = app.health.slack_socket_down_ms();
    if let Some(ms) = socket
        && ms > 30_000
    {
        problems.push(format!(
            "the Slack socket (Socket Mode) has been down for {} s",
            ms / 1000
        ));
    }
    let gateway = app.health.discord_gateway_down_ms();
    if let Some(ms) = gateway
        && ms > 30_000
    {
        problems.push(format!(
            "the Discord gateway has been down for {} s",
            ms / 1000
        ));
    }
    let mut body = if problems.is_empty() {
        serde_json::json!({"status": "ready", "database": app.db.backend()})
    } else {
        serde_json::json!({"status": "not ready", "reasons": problems})
    };
    if app.health.slack_socket_configured.load(Ordering::Relaxed) {
        body["slack_socket"] = match socket {
            None => "connected".into(),
            Some(ms) => format!("reconnecting for {} s", ms / 1000).into(),
        };
    }
    if app
        .health
        .discord_gateway_configured
        .load(Ordering::Relaxed)
    {
        body["discord_gateway"] = match gateway {
            _ if !app.health.discord_gateway_holder.load(Ordering::Relaxed) => {
                "standby (another replica holds the session)".into()
            }
            None => "connected".into(),
            Some(ms) => format!("reconnecting for {} s", ms / 1000).into(),
        };
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Non-final job states, reported even at zero so a dashboard sees the series drop.
const QUEUE_STATES: &[&str] = &[
    crate::store::jobs::state::QUEUED,
    crate::store::jobs::state::AWAITING_APPROVAL,
    crate::store::jobs::state::RUNNING,
];

/// Whether a request may read `/metrics`: always without `DECKHAND_METRICS_TOKEN`, else only
/// with it as `Authorization: Bearer …` (compared in constant time), on either listener.
fn metrics_allowed(app: &App, headers: &axum::http::HeaderMap) -> bool {
    use secrecy::ExposeSecret;
    let Some(token) = &app.settings.secrets.metrics_token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::support::secret::constant_eq(given.as_bytes(), token.expose_secret().as_bytes())
}

async fn metrics(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    if !metrics_allowed(&app, &headers) {
        tracing::warn!("refused /metrics without the right bearer token");
        let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut gauges = Vec::new();
    match app.db.job_counts().await {
        Ok(counts) => {
            let zero = QUEUE_STATES.iter().map(|s| (*s).to_owned());
            let counts = counts
                .into_iter()
                .filter(|(s, _)| !crate::store::jobs::state::is_final(s));
            for (s, n) in depth(zero, counts) {
                gauges.push((
                    "deckhand_queue_depth",
                    "Jobs not yet finished, by state.",
                    vec![("state", s)],
                    n as f64,
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count jobs"),
    }
    match app.db.outbox_depth().await {
        Ok(found) => {
            let zero = [Platform::Terminal, Platform::Slack, Platform::Discord]
                .into_iter()
                .filter(|p| app.settings.platform_enabled(p.as_str()))
                .map(|p| p.as_str().to_owned());
            for (p, n) in depth(zero, found) {
                gauges.push((
                    "deckhand_outbox_depth",
                    "Notices waiting for delivery, by platform.",
                    vec![("platform", p)],
                    n as f64,
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count pending notices"),
    }
    gauges.extend(conn::open_gauges(
        app.settings.config.server.metrics_listen.is_some(),
    ));
    gauges.push((
        "deckhand_draining",
        "1 while the process shuts down and refuses new commands.",
        vec![],
        if app.health.draining() { 1.0 } else { 0.0 },
    ));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::support::metrics::render(&gauges),
    )
        .into_response()
}

/// Counts by key: every key of `zero` (at 0 unless counted, in that order), then the
/// other keys counted.
fn depth(
    zero: impl Iterator<Item = String>,
    counts: impl IntoIterator<Item = (String, i64)>,
) -> Vec<(String, i64)> {
    let mut depth: Vec<(String, i64)> = zero.map(|k| (k, 0)).collect();
    for (k, n) in counts {
        match depth.iter_mut().find(|d| d.0 == k) {
            Some(d) => d.1 = n,
            None => depth.push((k, n)),
        }
    }
    depth
}

/// The deliverers this process runs: the terminal (its own stdout), plus every platform
/// with credentials.
pub fn deliverers(app: &App, print_terminal: bool) -> Vec<Deliverer> {
    let mut d = vec![crate::outbox::Terminal::boxed(print_terminal)];
    d.extend(crate::platform::deliverers(app));
    d.extend(crate::outbox::github::GitHubDeployments::boxed_if_configured(app));
    d
}

/// Keep this process visible as a live `serve` to `deckhand run`.
async fn presence(app: Arc<App>, stop: CancelToken) {
    loop {
        if let Err(e) = app.db.worker_heartbeat(&app.worker_id, "serve").await {
            tracing::warn!(error = %e, "cannot record the server's heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => break,
        }
    }
    let _ = app.db.worker_gone(&app.worker_id).await;
}

/// Run the server on `listener` until `shutdown` resolves, then drain. Returns when done.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let running = start(&app, listener).await?;
    shutdown.await;
    drain(&app, running).await;
    app.db.close().await;
    tracing::info!("deckhand stopped");
    Ok(())
}

/// What `serve` started, and the tokens that stop it, in the order [`drain`] uses them.
struct Running {
    stop_claiming: CancelToken,
    kill_steps: CancelToken,
    stop_sender: CancelToken,
    stop_http: CancelToken,
    workers: JoinHandle<()>,
    /// The outbox sender, the presence heartbeat, probes and digests: all stop on
    /// `stop_sender`, and the drain waits for the lot.
    loops: TaskTracker,
    http: JoinHandle<()>,
    /// The separate metrics listener, when `[server] metrics_listen` asks for one.
    metrics: Option<JoinHandle<()>>,
}

/// Start the workers, the outbox sender, the background loops and the listeners.
async fn start(app: &Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<Running> {
    for w in crate::config::binding_warnings(
        &app.settings.config,
        app.settings.secrets.slack_signing_secret.is_some()
            || app.settings.secrets.slack_app_token.is_some(),
        app.settings.discord_public_key.is_some()
            || app.settings.secrets.discord_bot_token.is_some(),
    ) {
        tracing::warn!("{w}");
    }
    let stop_claiming = CancelToken::new();
    let kill_steps = CancelToken::new();
    let stop_sender = CancelToken::new();
    let stop_http = CancelToken::new();

    let workers = tokio::spawn(crate::jobs::run_workers(
        app.clone(),
        stop_claiming.clone(),
        kill_steps.clone(),
    ));
    app.health.outbox_started.store(true, Ordering::Relaxed);
    let loops = TaskTracker::new();
    loops.spawn(run_sender(
        app.clone(),
        deliverers(app, true),
        stop_sender.clone(),
    ));
    loops.spawn(presence(app.clone(), stop_sender.clone()));
    loops.spawn(crate::platform::slack::run_socket(
        app.clone(),
        stop_sender.clone(),
    ));
    loops.spawn(crate::platform::discord::run_gateway(
        app.clone(),
        stop_sender.clone(),
    ));
    background(&loops, app.clone(), stop_sender.clone());
    loops.close();

    let server = &app.settings.config.server;
    let listeners = 1 + u64::from(server.metrics_listen.is_some());
    conn::ensure_fd_limit(listeners * server.max_connections as u64 + 256);
    let metrics = match app.settings.config.server.metrics_listen.clone() {
        Some(addr) => Some(serve_metrics(app, &addr, stop_http.clone()).await?),
        None => None,
    };
    let http = serve_http(app, listener, stop_http.clone())?;
    Ok(Running {
        stop_claiming,
        kill_steps,
        stop_sender,
        stop_http,
        workers,
        loops,
        http,
        metrics,
    })
}

/// Serve the public routes on `listener` until `stop`.
fn serve_http(
    app: &Arc<App>,
    listener: tokio::net::TcpListener,
    stop: CancelToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    ui::access::check_token(&app.settings)?;
    let router = router(
        app.clone(),
        app.settings.config.server.metrics_listen.is_none(),
        addr,
    );
    tracing::info!(%addr, database = app.db.backend(), "deckhand is listening");
    let pages = ui::access::Access::new(&app.settings, addr);
    if matches!(pages, ui::access::Access::Refused) {
        tracing::warn!("status pages: {}", pages.describe());
    } else {
        tracing::info!(access = pages.describe(), "status pages at http://{addr}/");
    }
    let bounds = conn::Bounds::new(&app.settings.config.server);
    Ok(tokio::spawn(conn::serve(
        listener,
        router,
        bounds,
        conn::Listener::Public,
        stop,
    )))
}

/// Serve `/metrics` on `addr` until `stop`.
async fn serve_metrics(
    app: &Arc<App>,
    addr: &str,
    stop: CancelToken,
) -> anyhow::Result<JoinHandle<()>> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let r = metrics_router(app.clone());
    let bounds = conn::Bounds::new(&app.settings.config.server);
    Ok(tokio::spawn(conn::serve(
        l,
        r,
        bounds,
        conn::Listener::Metrics,
        stop,
    )))
}

/// Stop in order: refuse new commands and stop claiming; give running jobs the grace
/// period, then stop their steps; flush the outbox; stop the loops and the listeners.
async fn drain(app: &App, r: Running) {
    let grace = Duration::from_secs(app.settings.config.server.shutdown_grace_seconds);
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: refusing new commands, finishing running jobs"
    );
    app.health.draining.store(true, Ordering::Relaxed);
    r.stop_claiming.cancel();
    let deadline = tokio::time::Instant::now() + grace;
    let mut workers = r.workers;
    if tokio::time::timeout_at(deadline, &mut workers)
        .await
        .is_err()
    {
        tracing::warn!(
            "grace period over: stopping running steps; the next start reports their jobs as interrupted"
        );
        r.kill_steps.cancel();
        let _ = workers.await;
    }
    flush_outbox(app).await;
    r.stop_sender.cancel();
    r.loops.wait().await;
    r.stop_http.cancel();
    let _ = r.http.await;
    if let Some(e) = r.metrics {
        let _ = e.await;
    }
}

/// Give the outbox a few seconds to deliver what the jobs reported.
async fn flush_outbox(app: &App) {
    let flush_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < flush_until {
        let pending: i64 = app
            .db
            .outbox_depth()
            .await
            .map(|d| d.iter().map(|x| x.1).sum())
            .unwrap_or(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Routes of every platform; each answers 404 until its credentials are configured.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .merge(crate::platform::slack::routes())
        .merge(crate::platform::discord::routes())
        .merge(alerts::routes())
        .merge(github::routes())
}

/// Background loops: uptime probes and incident reminders; digests and budget checks;
/// polling the auto-deployed branches.
pub fn background(loops: &TaskTracker, app: Arc<App>, stop: CancelToken) {
    loops.spawn(crate::watch::probes::run(app.clone(), stop.clone()));
    loops.spawn(crate::intake::auto_deploy::poll::run(
        app.clone(),
        stop.clone(),
    ));
    loops.spawn(crate::reports::digest::run(app, stop));
}
