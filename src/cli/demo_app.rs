//! The demo service the bundled environments deploy (`deckhand demo-app`).
//!
//! `/health` reports its version; `/metrics` serves Prometheus text with
//! `http_requests_total{code}` and the `http_request_duration_seconds` histogram; and the
//! app sends itself traffic ([`TRAFFIC_EVERY`] to `/work`), so a watch has something to
//! measure. Versions tell a story by their name:
//! - `down-…` answers 500 on `/health` from the start: a failed health check;
//! - `bad-…` passes its health check, then, [`TROUBLE_AFTER`] after it started, fails every
//!   other request: only a watch on the error rate sees it;
//! - `slow-…` passes its health check, then takes [`SLOW_BY`] more for every request: only a
//!   watch on latency sees it;
//! - anything else is healthy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;

/// How long a `bad-` or `slow-` version behaves before its trouble starts.
pub const TROUBLE_AFTER: Duration = Duration::from_secs(2);
/// What a `slow-` version adds to every request once its trouble started.
pub const SLOW_BY: Duration = Duration::from_millis(300);
/// How often the app sends itself a request.
pub const TRAFFIC_EVERY: Duration = Duration::from_millis(100);
/// What a request takes when nothing is wrong.
const WORK: Duration = Duration::from_millis(3);

/// The histogram's upper bounds, in seconds (Prometheus' client defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthy,
    Down,
    Bad,
    Slow,
}

impl Kind {
    fn of(version: &str) -> Kind {
        if version.starts_with("down") {
            Kind::Down
        } else if version.starts_with("bad") {
            Kind::Bad
        } else if version.starts_with("slow") {
            Kind::Slow
        } else {
            Kind::Healthy
        }
    }
}

/// The app's state: what it is, and its counters.
struct Demo {
    version: String,
    kind: Kind,
    started: Instant,
    /// Requests to `/work`, to pick which of a `bad-` version's fail.
    served: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Demo {
    fn new(version: String) -> Demo {
        Demo {
            kind: Kind::of(&version),
            version,
            started: Instant::now(),
            served: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn in_trouble(&self) -> bool {
        self.started.elapsed() >= TROUBLE_AFTER
    }

    fn record(&self, code: StatusCode, took: Duration) {
        if code.is_server_error() {
            &self.errors
        } else {
            &self.ok
        }
        .fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (b, le) in self
            .buckets
            .iter()
            .zip(BUCKETS.iter().chain([&f64::INFINITY]))
        {
            if secs <= *le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4). Both codes are always present, so an
    /// error-rate query has a numerator from the first scrape on.
    fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let count = self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            s,
            "# HELP http_requests_total Requests served, by status code."
        );
        let _ = writeln!(s, "# TYPE http_requests_total counter");
        let _ = writeln!(
            s,
            "http_requests_total{{code=\"200\"}} {}",
            self.ok.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "http_requests_total{{code=\"500\"}} {}",
            self.errors.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP http_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(s, "# TYPE http_request_duration_seconds histogram");
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                s,
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "http_request_duration_seconds_sum {sum}");
        let _ = writeln!(s, "http_request_duration_seconds_count {count}");
        let _ = writeln!(s, "# HELP demo_app_info The running version.");
        let _ = writeln!(s, "# TYPE demo_app_info gauge");
        // Versions are validated refs (no quotes or backslashes); escape anyway.
        let v = self.version.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(s, "demo_app_info{{version=\"{v}\"}} 1");
        s
    }
}

async fn health(
    State(d): State<Arc<Demo>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let healthy = d.kind != Kind::Down;
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "failing" },
        "version": d.version,
    })
    .to_string();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    d.record(code, Duration::ZERO);
    (code, [("content-type", "application/json")], body)
}

async fn work(State(d): State<Arc<Demo>>) -> StatusCode {
    let t = Instant::now();
    let n = d.served.fetch_add(1, Relaxed);
    let trouble = d.in_trouble();
    let extra = if d.kind == Kind::Slow && trouble {
        SLOW_BY
    } else {
        Duration::ZERO
    };
    tokio::time::sleep(WORK + extra).await;
    let code = match d.kind {
        Kind::Down => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Bad if trouble && n.is_multiple_of(2) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    d.record(code, t.elapsed());
    code
}

async fn metrics(State(d): State<Arc<Demo>>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], d.metrics())
}

/// Requests to `/work` every [`TRAFFIC_EVERY`], each on its own task so a slow answer does
/// not slow the traffic down.
async fn traffic(port: u16) {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}/work");
    let mut tick = tokio::time::interval(TRAFFIC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let _ = http.get(url).send().await;
        });
    }
}

/// Serve until the pid file stops naming this process, or a signal.
pub async fn serve_app(version: String, port: u16, pid_file: Option<PathBuf>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let demo = Arc::new(Demo::new(version));
    let router = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/work", axum::routing::get(work))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(demo);
    let load = tokio::spawn(traffic(port));
    let me = std::process::id().to_string();
    let orphaned = async move {
        // Exit once replaced or once the data folder is gone (a test cleaned up).
        let Some(p) = pid_file else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match std::fs::read_to_string(&p) {
                Ok(s) if s.trim() == me => {}
                // Written right after spawn: give the parent a moment.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && p.parent().is_some_and(Path::exists) =>
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if !p.exists() {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = crate::server::signal() => {}
                _ = orphaned => {}
            }
        })
        .await;
    load.abort();
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_tell_their_story_by_name() {
        assert_eq!(Kind::of("abc1234"), Kind::Healthy);
        assert_eq!(Kind::of("down-1"), Kind::Down);
        assert_eq!(Kind::of("bad-2"), Kind::Bad);
        assert_eq!(Kind::of("slow-3"), Kind::Slow);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let d = Demo::new("v1".into());
        d.record(StatusCode::OK, Duration::from_millis(7));
        d.record(
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::from_millis(300),
        );
        let m = d.metrics();
        assert!(m.contains("http_requests_total{code=\"200\"} 1\n"), "{m}");
        assert!(m.contains("http_requests_total{code=\"500\"} 1\n"), "{m}");
        assert!(
            m.contains("http_request_duration_seconds_bucket{le=\"0.005\"} 0\n"),
            "{m}"
        );
        assert!(
            m.contains("http_request_duration_seconds_bucket{le=\"0.01\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("http_request_duration_seconds_bucket{le=\"0.5\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{m}"
        );
        assert!(m.contains("http_request_duration_seconds_count 2\n"), "{m}");
        assert!(
            m.contains("http_request_duration_seconds_sum 0.307\n"),
            "{m}"
        );
        assert!(m.contains("demo_app_info{version=\"v1\"} 1\n"), "{m}");
    }
}
