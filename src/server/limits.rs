//! Inbound limits: a per-client rate limit on the command and alert endpoints, a body size
//! cap on every route, and a deadline on every request.
//!
//! The rate limit is a token bucket per client address in one mutex-guarded map. A request
//! costs one token; tokens come back at `rate_limit_per_minute / 60` per second up to
//! `rate_limit_burst`. A bucket that has refilled completely carries no information, so
//! idle clients are pruned from the map once a minute. (tower_governor does the same, but
//! its default features pull in tonic.)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ServerConfig;

/// Paths whose requests count against a client's rate.
pub const LIMITED_PREFIXES: &[&str] = &["/slack/", "/discord/", "/alerts/"];

/// How often idle buckets are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Past this many tracked clients, prune at once rather than wait for the minute.
const PRUNE_ABOVE: usize = 50_000;

/// A token bucket per client.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    state: Mutex<Buckets>,
}

struct Buckets {
    by_client: HashMap<IpAddr, Bucket>,
    last_prune: Instant,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `None` when the limit is off (`per_minute == 0`).
    pub fn new(per_minute: u32, burst: u32) -> Option<RateLimiter> {
        (per_minute > 0).then(|| RateLimiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            state: Mutex::new(Buckets {
                by_client: HashMap::new(),
                last_prune: Instant::now(),
            }),
        })
    }

    /// Take a token for `client` at `now`, or say how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(s.last_prune) >= PRUNE_EVERY
            || s.by_client.len() > PRUNE_ABOVE
        {
            self.prune(&mut s, now);
        }
        let b = s.by_client.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = self.refilled(b, now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let idle = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + idle * self.per_sec).min(self.burst)
    }

    fn prune(&self, s: &mut Buckets, now: Instant) {
        s.by_client
            .retain(|_, b| self.refilled(b, now) < self.burst);
        s.last_prune = now;
    }

    /// Clients currently tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_client
            .len()
    }
}

/// The bucket key of an address: IPv4 as is (also when mapped into IPv6), IPv6 by its /64,
/// since one host commonly holds a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The first address in a header value such as `203.0.113.7` or `203.0.113.7, 10.0.0.1`.
pub fn first_address(v: &str) -> Option<IpAddr> {
    let first = v.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Everything the middleware needs, built once from `[server]`.
pub struct Limits {
    pub rate: Option<RateLimiter>,
    pub client_ip_header: Option<HeaderName>,
    pub max_body: usize,
    pub timeout: Duration,
}

impl Limits {
    pub fn new(cfg: &ServerConfig) -> Limits {
        Limits {
            rate: RateLimiter::new(cfg.rate_limit_per_minute, cfg.rate_limit_burst),
            client_ip_header: cfg
                .client_ip_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            max_body: cfg.max_body_bytes,
            timeout: Duration::from_secs(cfg.request_timeout_seconds),
        }
    }

    /// The configured header's first address, else the TCP peer. Without either (a router
    /// served without connect info) every request shares one bucket.
    fn client(&self, req: &Request) -> IpAddr {
        let from_header = self.client_ip_header.as_ref().and_then(|h| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(first_address)
        });
        let ip = from_header
            .or_else(|| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip())
            })
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        client_key(ip)
    }
}

fn refuse(status: StatusCode, reason: &'static str) -> Response {
    (status, reason).into_response()
}

/// The middleware: rate limit, then body size by `Content-Length`, then the deadline.
/// Bodies sent without a length are capped as they are read (`DefaultBodyLimit`).
pub async fn enforce(
    State(limits): State<std::sync::Arc<Limits>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if let Some(rate) = &limits.rate
        && LIMITED_PREFIXES.iter().any(|p| path.starts_with(p))
        && let Err(wait) = rate.check(limits.client(&req), Instant::now())
    {
        crate::support::metrics::rejected("rate_limited");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this client; slow down",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        crate::support::metrics::rejected("body_too_large");
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => {
            if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                crate::support::metrics::rejected("body_too_large");
            }
            resp
        }
        Err(_) => {
            crate::support::metrics::rejected("timeout");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "request timed out; try again",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        // 60 a minute: one token a second, three at once.
        let r = RateLimiter::new(60, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check(ip("10.0.0.1"), t0).is_ok());
        }
        let wait = r.check(ip("10.0.0.1"), t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client has its own bucket.
        assert!(r.check(ip("10.0.0.2"), t0).is_ok());
        // Half a second later: still empty, half as long to wait.
        let wait = r
            .check(ip("10.0.0.1"), t0 + Duration::from_millis(500))
            .unwrap_err();
        assert!(wait <= Duration::from_millis(501), "{wait:?}");
        assert!(
            r.check(ip("10.0.0.1"), t0 + Duration::from_millis(1001))
                .is_ok()
        );
        // Refills cap at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(r.check(ip("10.0.0.1"), later).is_ok());
        }
        assert!(r.check(ip("10.0.0.1"), later).is_err());
    }

    #[test]
    fn zero_per_minute_turns_the_limit_off() {
        assert!(RateLimiter::new(0, 30).is_none());
    }

    #[test]
    fn idle_clients_are_pruned() {
        let r = RateLimiter::new(60, 2).unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            let _ = r.check(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)), t0);
        }
        assert_eq!(r.tracked(), 100);
        // One client stays busy; after a minute the others have refilled and go.
        let busy = ip("192.0.2.1");
        let t1 = t0 + PRUNE_EVERY;
        let _ = r.check(busy, t1);
        let _ = r.check(busy, t1);
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_first_address_of_a_header() {
        assert_eq!(first_address("203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(
            first_address(" 203.0.113.7 , 10.0.0.1"),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(first_address("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(first_address("unknown"), None);
        assert_eq!(first_address(""), None);
    }
}
