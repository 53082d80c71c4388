//! `[ui]`: the status pages `deckhand serve` shows on its listener, and who may read them.

use std::net::IpAddr;

use serde::Deserialize;

/// How the pages check who reads them on a listener that is not loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UiAuth {
    /// `DECKHAND_UI_TOKEN`, sent once (`?token=` or the sign-in form), then kept as an
    /// HttpOnly, SameSite=Strict cookie.
    Token,
    /// A reverse proxy (oauth2-proxy and the like) at one of `trusted_proxies` names the
    /// person in `X-Forwarded-User` or `X-Auth-Request-Email`.
    Proxy,
}

/// `[ui]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Unset: open on a loopback listener, refused (403) on any other.
    pub auth: Option<UiAuth>,
    /// Where people reach the pages (`https://deckhand.example.com`): chat reports link to
    /// them when set.
    pub public_url: Option<String>,
    /// With `auth = "proxy"`: addresses (`10.0.0.5`) or networks (`10.0.0.0/8`) whose
    /// identity headers are believed. From anywhere else they are ignored.
    pub trusted_proxies: Vec<String>,
}

impl UiConfig {
    /// `public_url` without a trailing slash.
    pub fn base_url(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
    }

    /// Is `ip` one of `trusted_proxies`?
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p))
            .any(|(net, bits)| in_net(ip, net, bits))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `10.0.0.5` or `10.0.0.0/8` → (address, prefix bits).
fn parse_net(s: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().ok()?)),
        None => (s.trim(), None),
    };
    let ip = canonical(addr.parse::<IpAddr>().ok()?);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Problems in `[ui]`, as (key, message).
pub(super) fn ui_problems(u: &UiConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(p) = &u.public_url {
        let ok = url::Url::parse(p).is_ok_and(|x| {
            matches!(x.scheme(), "http" | "https")
                && x.host().is_some()
                && x.query().is_none()
                && x.password().is_none()
                && x.username().is_empty()
        });
        if !ok {
            out.push((
                "public_url",
                format!(
                    "ui.public_url = {p:?} is not an http(s) address such as \"https://deckhand.example.com\" (no credentials or query)"
                ),
            ));
        }
    }
    for p in &u.trusted_proxies {
        if parse_net(p).is_none() {
            out.push((
                "trusted_proxies",
                format!(
                    "ui.trusted_proxies: {p:?} is not an address (10.0.0.5) or network (10.0.0.0/8)"
                ),
            ));
        }
    }
    if u.auth == Some(UiAuth::Proxy) && u.trusted_proxies.is_empty() {
        out.push((
            "trusted_proxies",
            "ui.auth = \"proxy\" needs ui.trusted_proxies: the addresses of the proxy whose identity headers are believed".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_match_addresses_and_networks() {
        let u = UiConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "192.168.1.7".into(), "::1".into()],
            ..Default::default()
        };
        assert!(u.trusts("10.2.3.4".parse().unwrap()));
        assert!(u.trusts("::ffff:10.2.3.4".parse().unwrap()));
        assert!(u.trusts("192.168.1.7".parse().unwrap()));
        assert!(!u.trusts("192.168.1.8".parse().unwrap()));
        assert!(!u.trusts("11.0.0.1".parse().unwrap()));
        assert!(u.trusts("::1".parse().unwrap()));
        assert!(!u.trusts("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_named() {
        let u = UiConfig {
            auth: Some(UiAuth::Proxy),
            public_url: Some("javascript:alert(1)".into()),
            trusted_proxies: vec!["10.0.0.0/33".into()],
        };
        let keys: Vec<&str> = ui_problems(&u).iter().map(|p| p.0).collect();
        assert_eq!(keys, ["public_url", "trusted_proxies"]);
        let u = UiConfig {
            auth: Some(UiAuth::Proxy),
            ..Default::default()
        };
        assert_eq!(ui_problems(&u)[0].0, "trusted_proxies");
        let ok = UiConfig {
            auth: Some(UiAuth::Token),
            public_url: Some("https://deckhand.example.com/".into()),
            trusted_proxies: vec![],
        };
        assert!(ui_problems(&ok).is_empty());
        assert_eq!(ok.base_url(), Some("https://deckhand.example.com"));
    }
}
