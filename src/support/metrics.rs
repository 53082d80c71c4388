//! Process metrics in Prometheus text format.
//!
//! A small registry of labelled counters and histograms behind one mutex: the hot paths
//! touch it a few times per request, and a dependency-free registry keeps the build lean.
//! Gauges that live in the database (queue and outbox depth) are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

pub type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    help: BTreeMap<&'static str, (&'static str, &'static str)>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Seconds; fits both HTTP latency (ms) and job durations (minutes).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

pub fn inc(name: &'static str, help: &'static str, l: &[(&'static str, &str)]) {
    add(name, help, l, 1);
}

/// Add `n` to a counter; `n = 0` makes the series appear at zero.
pub fn add(name: &'static str, help: &'static str, l: &[(&'static str, &str)], n: u64) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert((help, "counter"));
    *r.counters.entry((name, labels(l))).or_default() += n;
}

pub fn observe(name: &'static str, help: &'static str, l: &[(&'static str, &str)], secs: f64) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert((help, "histogram"));
    let h = r.histograms.entry((name, labels(l))).or_default();
    if h.buckets.is_empty() {
        h.buckets = vec![0; BUCKETS.len()];
    }
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.buckets[i] += 1;
        }
    }
    h.sum += secs;
    h.count += 1;
}

pub fn command(platform: &str, outcome: &str) {
    inc(
        "deckhand_commands_total",
        "Commands received, by platform and outcome (accepted, refused, bad_signature).",
        &[("platform", platform), ("outcome", outcome)],
    );
}

pub fn job_finished(kind: &str, state: &str, secs: f64) {
    inc(
        "deckhand_jobs_total",
        "Jobs finished, by kind and final state.",
        &[("kind", kind), ("state", state)],
    );
    observe(
        "deckhand_job_duration_seconds",
        "Job run time from start to final state.",
        &[("kind", kind)],
        secs,
    );
}

/// One intake commit answering `jobs` requests (group commit: requests / commits is the mean batch).
pub fn intake_batch(jobs: usize) {
    inc(
        "deckhand_intake_commits_total",
        "Intake transactions committed (each holds one or more new jobs)",
        &[],
    );
    add(
        "deckhand_intake_requests_total",
        "Requests for new jobs answered by intake commits (duplicates included)",
        &[],
        jobs as u64,
    );
}

pub fn delivered(platform: &str) {
    inc(
        "deckhand_notices_delivered_total",
        "Notices delivered, by platform.",
        &[("platform", platform)],
    );
}

pub fn superseded(platform: &str, n: usize) {
    add(
        "deckhand_notices_superseded_total",
        "Notices not sent because a newer state of the same message was waiting, by platform.",
        &[("platform", platform)],
        n as u64,
    );
}

pub fn delivery_failure(platform: &str) {
    inc(
        "deckhand_delivery_failures_total",
        "Failed delivery attempts (429, 5xx, network), by platform.",
        &[("platform", platform)],
    );
}

pub fn probe(environment: &str, ok: bool) {
    inc(
        "deckhand_probe_results_total",
        "Health probe results, by environment and result.",
        &[
            ("environment", environment),
            ("result", if ok { "up" } else { "down" }),
        ],
    );
}

pub fn http(route: &str, status: u16, secs: f64) {
    observe(
        "deckhand_http_request_duration_seconds",
        "HTTP request latency, by route.",
        &[("route", route), ("status", &status.to_string())],
        secs,
    );
}

pub fn rejected(reason: &str) {
    inc(
        "deckhand_http_rejected_total",
        "Requests refused by the inbound limits, by reason (rate_limited, body_too_large, timeout).",
        &[("reason", reason)],
    );
}

/// Connections the server closed itself, by listener and reason (header_timeout,
/// idle_timeout, shed, over_capacity); `n = 0` registers the series.
pub fn connections_closed(listener: &str, reason: &str, n: u64) {
    add(
        "deckhand_http_connections_closed_total",
        "Connections closed by the server, by reason (header_timeout, idle_timeout, shed, over_capacity).",
        &[("listener", listener), ("reason", reason)],
        n,
    );
}

/// A chat socket came up: Slack's `hello`, the Discord gateway's READY or RESUMED.
pub fn socket_connected(platform: &str) {
    inc(
        "deckhand_socket_connects_total",
        "Chat sockets that came up (Slack Socket Mode hello, Discord gateway READY or RESUMED).",
        &[("platform", platform)],
    );
}

/// A chat socket went down or an attempt to open one failed, by reason (a `disconnect`
/// envelope's reason, `open_failed`, `connect_failed`, `error`, `closed`, `silent`).
pub fn socket_disconnected(platform: &str, reason: &str) {
    inc(
        "deckhand_socket_disconnects_total",
        "Chat sockets that went down or failed to open, by reason.",
        &[("platform", platform), ("reason", reason)],
    );
}

/// A Discord gateway dispatch (op 0) arrived, by event type.
pub fn gateway_dispatch(event: &str) {
    inc(
        "deckhand_gateway_dispatches_total",
        "Discord gateway dispatches received, by event type.",
        &[("event", event)],
    );
}

/// A Discord gateway session was resumed (RESUMED after a RESUME).
pub fn gateway_resumed() {
    inc(
        "deckhand_gateway_resumes_total",
        "Discord gateway sessions resumed.",
        &[],
    );
}

fn write_labels(out: &mut String, l: &Labels, extra: Option<(&str, String)>) {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if !parts.is_empty() {
        let _ = write!(out, "{{{}}}", parts.join(","));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge read at scrape time: (name, help, labels, value).
pub type Gauge<'a> = (&'a str, &'a str, Labels, f64);

/// Render every metric, plus `gauges` read by the caller; a gauge's series must be adjacent.
pub fn render(gauges: &[Gauge]) -> String {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let mut last = "";
    for ((name, l), v) in &r.counters {
        if *name != last {
            let (help, ty) = r.help[name];
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            last = name;
        }
        out.push_str(name);
        write_labels(&mut out, l, None);
        let _ = writeln!(out, " {v}");
    }
    for ((name, l), h) in &r.histograms {
        if *name != last {
            let (help, ty) = r.help[name];
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            last = name;
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = write!(out, "{name}_bucket");
            write_labels(&mut out, l, Some(("le", b.to_string())));
            let _ = writeln!(out, " {}", h.buckets[i]);
        }
        let _ = write!(out, "{name}_bucket");
        write_labels(&mut out, l, Some(("le", "+Inf".into())));
        let _ = writeln!(out, " {}", h.count);
        let _ = write!(out, "{name}_sum");
        write_labels(&mut out, l, None);
        let _ = writeln!(out, " {}", h.sum);
        let _ = write!(out, "{name}_count");
        write_labels(&mut out, l, None);
        let _ = writeln!(out, " {}", h.count);
    }
    let mut last = "";
    for (name, help, l, v) in gauges {
        if *name != last {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            last = name;
        }
        out.push_str(name);
        write_labels(&mut out, l, None);
        let _ = writeln!(out, " {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_and_histograms() {
        super::command("test-platform", "accepted");
        super::observe("deckhand_test_seconds", "t", &[("route", "/x")], 0.003);
        let t = super::render(&[(
            "deckhand_queue_depth",
            "q",
            vec![(
                "state",
                crate::domain::state::JobState::Queued.as_str().into(),
            )],
            2.0,
        )]);
        assert!(
            t.contains("deckhand_commands_total{platform=\"test-platform\",outcome=\"accepted\"}")
        );
        assert!(t.contains("deckhand_test_seconds_bucket{route=\"/x\",le=\"0.005\"} 1"));
        assert!(t.contains("deckhand_test_seconds_bucket{route=\"/x\",le=\"0.001\"} 0"));
        assert!(t.contains("deckhand_queue_depth{state=\"queued\"} 2"));
    }
}
