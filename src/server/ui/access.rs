//! Who may read the status pages.
//!
//! - A loopback listener with no `[ui] auth`: open (whoever can reach it is on the host).
//! - `auth = "token"`: `DECKHAND_UI_TOKEN`, sent once as `?token=` (the sign-in form sends
//!   it so), then kept as an HttpOnly, SameSite=Strict cookie. The cookie holds a MAC of a
//!   fixed text keyed by the token, never the token; both are compared in constant time. The
//!   answer to `?token=` is a redirect to the same address without it, so the token does
//!   not stay in the address bar or the history.
//! - `auth = "proxy"`: `X-Forwarded-User` or `X-Auth-Request-Email`, believed only from a
//!   TCP peer listed in `trusted_proxies`; from anyone else the headers are ignored.
//! - Any other listener with no `[ui] auth`: refused (403), saying why.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::config::Settings;
use crate::config::ui::{UiAuth, UiConfig};
use crate::server::ui::html::Viewer;
use crate::server::ui::{Page, problem};
use crate::support::secret::constant_eq;

/// The cookie that keeps a token sign-in.
pub const COOKIE: &str = "deckhand_ui";

/// How this listener's pages are guarded.
pub enum Access {
    Open,
    Token {
        token: SecretString,
        /// What the cookie must hold: hex MAC of a fixed text keyed by the token.
        session: String,
        secure: bool,
    },
    Proxy(UiConfig),
    /// Not loopback, and no `[ui] auth`.
    Refused,
}

impl Access {
    /// The guard for a listener on `addr`.
    pub fn new(settings: &Settings, addr: SocketAddr) -> Access {
        let ui = &settings.config.ui;
        match ui.auth {
            None if addr.ip().is_loopback() => Access::Open,
            None => Access::Refused,
            Some(UiAuth::Proxy) => Access::Proxy(ui.clone()),
            Some(UiAuth::Token) => match &settings.secrets.ui_token {
                // Settings refuse to load without it; be safe anyway.
                None => Access::Refused,
                Some(t) => Access::Token {
                    session: session_of(t),
                    token: t.clone(),
                    secure: ui.base_url().is_some_and(|u| u.starts_with("https:")),
                },
            },
        }
    }

    /// What `serve` says about the pages at start.
    pub fn describe(&self) -> &'static str {
        match self {
            Access::Open => "open (loopback listener)",
            Access::Token { .. } => "DECKHAND_UI_TOKEN, then a cookie",
            Access::Proxy(_) => "identity headers from trusted_proxies",
            Access::Refused => {
                "refused: the listener is not loopback and [ui] auth is not set (\"token\" or \"proxy\")"
            }
        }
    }
}

/// `serve` does not start with `auth = "token"` and no usable `DECKHAND_UI_TOKEN`.
pub fn check_token(settings: &Settings) -> anyhow::Result<()> {
    if settings.config.ui.auth == Some(UiAuth::Token)
        && settings
            .secrets
            .ui_token
            .as_ref()
            .is_none_or(|t| t.expose_secret().len() < MIN_TOKEN)
    {
        anyhow::bail!(
            "[ui] auth = \"token\" needs DECKHAND_UI_TOKEN, at least {MIN_TOKEN} characters (e.g. `openssl rand -hex 24`)"
        );
    }
    Ok(())
}

/// The shortest `DECKHAND_UI_TOKEN` taken.
pub const MIN_TOKEN: usize = 16;

fn session_of(token: &SecretString) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    m.update(b"deckhand status pages session v1");
    hex::encode(m.finalize().into_bytes())
}

/// The middleware in front of every page.
pub async fn guard(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    let anon = Viewer(None);
    match &*access {
        Access::Open => {
            req.extensions_mut().insert(anon);
            next.run(req).await
        }
        Access::Refused => problem(
            StatusCode::FORBIDDEN,
            "The status pages are off on this listener: it is not a loopback address and [ui] auth is not set. \
             Set [ui] auth = \"token\" (with DECKHAND_UI_TOKEN) or auth = \"proxy\" (with trusted_proxies).",
            &anon,
        ),
        Access::Proxy(ui) => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let who = peer
                .filter(|ip| ui.trusts(*ip))
                .and_then(|_| proxy_user(req.headers()));
            match who {
                Some(u) => {
                    req.extensions_mut().insert(Viewer(Some(u)));
                    next.run(req).await
                }
                None => problem(
                    StatusCode::UNAUTHORIZED,
                    "Sign in through the proxy in front of Deckhand: this request did not come from a trusted proxy with a signed-in user.",
                    &anon,
                ),
            }
        }
        Access::Token {
            token,
            session,
            secure,
        } => {
            if let Some(given) = query_token(req.uri().query()) {
                if constant_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
                    return signed_in(&req, session, *secure);
                }
                return sign_in(true);
            }
            if cookie(req.headers(), COOKIE)
                .is_some_and(|c| constant_eq(c.as_bytes(), session.as_bytes()))
            {
                req.extensions_mut().insert(anon);
                return next.run(req).await;
            }
            sign_in(false)
        }
    }
}

/// The signed-in user a trusted proxy names.
fn proxy_user(h: &HeaderMap) -> Option<String> {
    ["x-forwarded-user", "x-auth-request-email"]
        .iter()
        .filter_map(|k| h.get(*k).and_then(|v| v.to_str().ok()))
        .map(|v| v.trim().chars().take(200).collect::<String>())
        .find(|v| !v.is_empty() && !v.chars().any(char::is_control))
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The value of cookie `name`.
fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The right token: set the cookie and go to the same address without it.
fn signed_in(req: &Request, session: &str, secure: bool) -> Response {
    let rest: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut to = req.uri().path().to_owned();
    if !rest.is_empty() {
        to.push('?');
        to.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest)
                .finish(),
        );
    }
    let cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{}",
        if secure { "; Secure" } else { "" }
    );
    let mut r = (StatusCode::SEE_OTHER, "signed in").into_response();
    let h = r.headers_mut();
    if let (Ok(c), Ok(l)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(&to)) {
        h.insert(header::SET_COOKIE, c);
        h.insert(header::LOCATION, l);
    }
    r
}

/// 401 with the sign-in form, and no data.
fn sign_in(wrong: bool) -> Response {
    let note = if wrong {
        "<p class=\"problem\">That token is not right.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Sign in</h1>{note}<p>These pages need the token in <code>DECKHAND_UI_TOKEN</code>. \
         It is sent once; a cookie keeps you signed in.</p>\
         <form method=\"get\" action=\"\"><label>Token <input type=\"password\" name=\"token\" \
         autocomplete=\"current-password\" required></label> <button>Sign in</button></form>"
    );
    let mut r = Page::new("Sign in", body).respond(StatusCode::UNAUTHORIZED, &Viewer(None));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Cookie realm=\"deckhand\""),
    );
    r
}
