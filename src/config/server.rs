//! `[server]`: the HTTP listener's limits, timeouts and shutdown grace.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM, how long running jobs may go on before their steps are stopped.
    pub shutdown_grace_seconds: u64,
    /// Serve `/metrics` on this address instead of the public listener.
    pub metrics_listen: Option<String>,
    /// Largest request body accepted on any route (413 above it). The Slack routes keep
    /// their own, smaller limit.
    pub max_body_bytes: usize,
    /// Requests per minute one client may send to each of `/slack/*`, `/discord/*` and
    /// `/alerts/*` on average (429 with `Retry-After` above it); 0 turns the limits off.
    /// A client is, for signed requests, the person (a Slack team's user, a Discord user)
    /// or the alert sender's address; for requests failing their signature or token check,
    /// the address, in a bucket of its own that only such requests spend.
    pub rate_limit_per_minute: u32,
    /// Requests a client may send at once before the per-minute rate applies.
    pub rate_limit_burst: u32,
    /// Signed requests per minute from one Slack workspace or Discord guild, all its
    /// people together; 0 turns this limit off.
    pub rate_limit_workspace_per_minute: u32,
    /// Requests a workspace may send at once before its per-minute rate applies.
    pub rate_limit_workspace_burst: u32,
    /// Take the client's address from this header (its first address) instead of the TCP
    /// peer. Only behind a proxy that sets it, e.g. `Fly-Client-IP` on Fly.io: anyone can
    /// send the header, so trusting it elsewhere lets clients pick their own bucket.
    pub client_ip_header: Option<String>,
    /// A request not answered within this long gets 503. At least 3, so a slow database
    /// still leaves the platform handlers time to send their "answer follows" reply.
    pub request_timeout_seconds: u64,
    /// A connection must send a whole request head within this long: from its accept for
    /// the first request, from the first byte of each later one. Then it is closed.
    pub header_read_timeout_seconds: u64,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout_seconds: u64,
    /// Open connections per listener. At the cap a new client is still served: the
    /// connection without a request in flight that has waited longest (idle keep-alive or
    /// unfinished head) is closed to make room; only when every one has a request in flight
    /// is the new connection closed at once.
    pub max_connections: usize,
}

impl ServerConfig {
    /// The signed budgets of `/slack`, `/discord` and `/alerts` (and their sockets).
    pub fn signed_budgets(&self) -> crate::support::ratelimit::SignedBudgets {
        crate::support::ratelimit::SignedBudgets::new(
            (self.rate_limit_per_minute, self.rate_limit_burst),
            (
                self.rate_limit_workspace_per_minute,
                self.rate_limit_workspace_burst,
            ),
        )
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_seconds: 30,
            metrics_listen: None,
            max_body_bytes: 1024 * 1024,
            rate_limit_per_minute: 120,
            rate_limit_burst: 30,
            rate_limit_workspace_per_minute: 6000,
            rate_limit_workspace_burst: 600,
            client_ip_header: None,
            request_timeout_seconds: 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 1024,
        }
    }
}

/// Problems in `[server]`, as (key, message).
pub(super) fn server_problems(s: &ServerConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if s.max_body_bytes < 1024 {
        out.push((
            "max_body_bytes",
            "server.max_body_bytes must be at least 1024".into(),
        ));
    }
    if s.rate_limit_per_minute > 0 && s.rate_limit_burst == 0 {
        out.push((
            "rate_limit_burst",
            "server.rate_limit_burst must be at least 1 (or set rate_limit_per_minute = 0 to turn the limit off)".into(),
        ));
    }
    if s.rate_limit_workspace_per_minute > 0 && s.rate_limit_workspace_burst == 0 {
        out.push((
            "rate_limit_workspace_burst",
            "server.rate_limit_workspace_burst must be at least 1 (or set rate_limit_workspace_per_minute = 0 to turn the limit off)".into(),
        ));
    }
    if let Some(h) = &s.client_ip_header
        && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        out.push((
            "client_ip_header",
            format!("server.client_ip_header = {h:?} is not a valid HTTP header name"),
        ));
    }
    if s.request_timeout_seconds < 3 {
        out.push((
            "request_timeout_seconds",
            "server.request_timeout_seconds must be at least 3 (Slack and Discord allow 3 s for an answer)".into(),
        ));
    }
    for (key, v) in [
        ("header_read_timeout_seconds", s.header_read_timeout_seconds),
        ("idle_timeout_seconds", s.idle_timeout_seconds),
    ] {
        if !(1..=3600).contains(&v) {
            out.push((key, format!("server.{key} must be between 1 and 3600")));
        }
    }
    if !(16..=1_000_000).contains(&s.max_connections) {
        out.push((
            "max_connections",
            "server.max_connections must be between 16 and 1000000".into(),
        ));
    }
    if let Some(a) = &s.metrics_listen
        && !a
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        out.push((
            "metrics_listen",
            format!("server.metrics_listen = {a:?} is not an address such as \"127.0.0.1:9090\""),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_bounds_are_checked() {
        assert!(server_problems(&ServerConfig::default()).is_empty());
        let bad = ServerConfig {
            header_read_timeout_seconds: 0,
            idle_timeout_seconds: 86_400,
            max_connections: 4,
            ..ServerConfig::default()
        };
        let keys: Vec<&str> = server_problems(&bad).iter().map(|p| p.0).collect();
        assert_eq!(
            keys,
            [
                "header_read_timeout_seconds",
                "idle_timeout_seconds",
                "max_connections"
            ]
        );
    }
}
