//! Time as the database stores it (milliseconds since the Unix epoch) and as people read it.

/// Milliseconds since the Unix epoch: the one time format in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch with a fraction, for latency measurements.
pub fn now_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A timestamp in milliseconds as people read it, in UTC.
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// "2026-12-03 07:40:12 → 07:40:26 UTC": a span within a day or two, end shown by its time.
pub fn fmt_span(start_ms: i64, end_ms: i64) -> String {
    let t = |ms| chrono::DateTime::from_timestamp_millis(ms);
    match (t(start_ms), t(end_ms)) {
        (Some(a), Some(b)) if a.date_naive() == b.date_naive() => format!(
            "{} → {} UTC",
            a.format("%Y-%m-%d %H:%M:%S"),
            b.format("%H:%M:%S")
        ),
        _ => format!("{} → {}", fmt_time(start_ms), fmt_time(end_ms)),
    }
}

/// "40 s ago", "12 min ago", "2 h ago", "3 d ago".
pub fn fmt_ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s} s ago")
    } else if s < 3600 {
        format!("{} min ago", s / 60)
    } else if s < 48 * 3600 {
        format!("{} h ago", s / 3600)
    } else {
        format!("{} d ago", s / 86_400)
    }
}

pub fn fmt_duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
