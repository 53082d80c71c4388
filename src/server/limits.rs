//! Inbound limits: rate budgets on the command and alert endpoints, a body size cap on
//! every route, and a deadline on every request.
//!
//! `/slack`, `/discord`, `/alerts` and `/github` each have budgets of their own, so a
//! flood on one does not refuse the others. In each, two kinds of budget:
//!
//! - *unverified*: a bucket per client address, looked at before the request is read and
//!   spent only by requests that fail their signature or token check (401, or 404 where
//!   the platform is not configured). Forgers exhaust their own address's bucket and get
//!   429 before their bodies are read; signed requests neither spend nor need it.
//! - *signed*: the [`SignedBudget`] the handler spends once the signature holds and it
//!   knows who asks — per person and per workspace (Slack team, Discord guild), per sender
//!   address for alerts, per repository (and event) for GitHub. Signed Slack traffic thus
//!   counts per team and user, not per Slack egress address, which all of a workspace's
//!   commands share.
//!
//! Buckets refill continuously (`support::ratelimit`); over budget is 429 with
//! `Retry-After`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ServerConfig;
use crate::support::ratelimit::{RateLimiter, SignedBudget, SignedBudgets};

/// The route groups with budgets of their own, by path prefix.
pub const LIMITED_PREFIXES: [&str; 4] = ["/slack/", "/discord/", "/alerts/", "/github/"];

/// A route group: an index into [`LIMITED_PREFIXES`].
fn group_of(path: &str) -> Option<usize> {
    LIMITED_PREFIXES.iter().position(|p| path.starts_with(p))
}

/// The address a request came from (see [`Limits::client`]), for handlers that limit
/// verified requests by sender.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

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
    /// Per route group and client address: spent by failed and unsigned requests only.
    pub unverified: Option<RateLimiter<(usize, IpAddr)>>,
    /// Per route group: the budget of verified requests, handed to the handler.
    pub signed: [Arc<SignedBudget>; 4],
    pub client_ip_header: Option<HeaderName>,
    pub max_body: usize,
    pub timeout: Duration,
}

impl Limits {
    /// `budgets`: the app's signed budgets, which the sockets spend too.
    pub fn new(cfg: &ServerConfig, budgets: &SignedBudgets) -> Limits {
        Limits {
            unverified: RateLimiter::new(cfg.rate_limit_per_minute, cfg.rate_limit_burst),
            signed: [
                budgets.slack.clone(),
                budgets.discord.clone(),
                budgets.alerts.clone(),
                budgets.github.clone(),
            ],
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

/// Whether an answer says the request failed its signature or token check.
fn unverified(status: StatusCode) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND)
}

/// The middleware: the unverified budget, then body size by `Content-Length`, then the
/// deadline; the handler gets its group's signed budget and the client's address.
/// Bodies sent without a length are capped as they are read (`DefaultBodyLimit`).
pub async fn enforce(
    State(limits): State<std::sync::Arc<Limits>>,
    mut req: Request,
    next: Next,
) -> Response {
    let group = group_of(req.uri().path());
    // Only the limited routes need the client (`/health` and `/metrics` do not).
    let client = group.map(|_| limits.client(&req));
    if let (Some(g), Some(rate), Some(client)) = (group, &limits.unverified, client) {
        if let Err(wait) = rate.peek(&(g, client), Instant::now()) {
            return crate::platform::too_many_requests(
                wait,
                "too many unsigned or failed requests from this client; slow down",
            );
        }
        req.extensions_mut().insert(limits.signed[g].clone());
        req.extensions_mut().insert(ClientAddr(client));
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
            if let (Some(g), Some(rate), Some(client)) = (group, &limits.unverified, client)
                && unverified(resp.status())
            {
                rate.charge(&(g, client), Instant::now());
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
    fn each_route_group_has_its_own_budgets() {
        assert_eq!(group_of("/slack/commands"), group_of("/slack/interactions"));
        assert_ne!(
            group_of("/slack/commands"),
            group_of("/discord/interactions")
        );
        assert_ne!(
            group_of("/alerts/generic"),
            group_of("/discord/interactions")
        );
        assert_eq!(group_of("/health"), None);
        assert_eq!(group_of("/slackish"), None);
        let cfg = ServerConfig {
            rate_limit_per_minute: 60,
            rate_limit_burst: 1,
            ..ServerConfig::default()
        };
        let l = Limits::new(&cfg, &cfg.signed_budgets());
        let r = l.unverified.as_ref().unwrap();
        let now = Instant::now();
        r.charge(&(0, ip("10.0.0.1")), now);
        assert!(r.peek(&(0, ip("10.0.0.1")), now).is_err());
        assert!(r.peek(&(1, ip("10.0.0.1")), now).is_ok());
        assert!(r.peek(&(2, ip("10.0.0.1")), now).is_ok());
        assert!(l.signed[0].take(Some("T1"), "T1:U1").is_ok());
        assert!(l.signed[0].take(Some("T1"), "T1:U1").is_err());
        assert!(l.signed[1].take(Some("T1"), "T1:U1").is_ok());
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
