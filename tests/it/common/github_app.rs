//! The GitHub App side of the fake GitHub: it holds the App's public key and checks every
//! JWT as GitHub does (RS256 signature, `iss`, `iat`/`exp` at most ten minutes apart and
//! not expired), answers `GET /repos/{o}/{r}/installation` and `GET /app` to the App's
//! JWT, mints installation tokens (`POST /app/installations/{id}/access_tokens`, with
//! `expires_at`), and once an App is set refuses (401) every other call that does not
//! carry a live installation token. Tokens can be made to expire soon.
//!
//! Permissions: each route needs one (`contents`, `checks`, `statuses`, `deployments`,
//! `actions`; `read` for a `GET`, `write` otherwise), checked against the App
//! installation's permissions, or for a token against the permissions it was denied;
//! a call without it gets GitHub's 403 with `x-accepted-github-permissions`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::github::{FakeGitHub, json_reply};

/// The throwaway key the App tests sign with (made for these tests only).
pub const APP_KEY: &str = include_str!("../fixtures/github-app-test-key.pem");
pub const APP_ID: &str = "424242";
pub const INSTALLATION: u64 = 77;

pub struct FakeApp {
    id: String,
    /// The App's public key (PKCS#1 DER), derived from its private key.
    public: Vec<u8>,
    /// Repositories the App is installed on.
    repos: Vec<String>,
    /// The permissions the installation was granted.
    pub permissions: Value,
    /// Minted tokens: (token, valid until).
    tokens: Vec<(String, SystemTime)>,
    /// How long a minted token lasts.
    ttl: Duration,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The public key of a PEM RSA private key (PKCS#1), as PKCS#1 DER.
fn public_key(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
    use ring::signature::KeyPair;
    pair.public_key().as_ref().to_vec()
}

impl FakeGitHub {
    /// From now on, calls need the GitHub App [`APP_ID`] (signing with `key_pem`),
    /// installed as [`INSTALLATION`] on `repos` with `permissions`.
    pub fn app(&self, key_pem: &str, repos: &[&str], permissions: Value) {
        self.with(|i| {
            i.app = Some(FakeApp {
                id: APP_ID.into(),
                public: public_key(key_pem),
                repos: repos.iter().map(|r| r.to_string()).collect(),
                permissions,
                tokens: Vec::new(),
                ttl: Duration::from_secs(3600),
            })
        });
    }

    /// Tokens minted from now on last `ttl`.
    pub fn app_token_ttl(&self, ttl: Duration) {
        self.with(|i| i.app.as_mut().unwrap().ttl = ttl);
    }

    /// The token lacks `perm` (`checks`, `deployments`, …): calls needing it get 403.
    pub fn deny_token(&self, perm: &str) {
        self.with(|i| i.denied.insert(perm.to_owned()));
    }

    /// The installation tokens minted, in order.
    pub fn minted(&self) -> Vec<String> {
        self.with(|i| {
            i.app
                .as_ref()
                .map(|a| a.tokens.iter().map(|t| t.0.clone()).collect())
                .unwrap_or_default()
        })
    }
}

/// Why a JWT is refused, if it is.
fn bad_jwt(app: &FakeApp, jwt: &str) -> Option<&'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Some("not a JWT");
    }
    let decode = |p: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
    };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Some("unreadable JWT");
    };
    if header["alg"] != "RS256" {
        return Some("'alg' must be RS256");
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(parts[2]) else {
        return Some("unreadable signature");
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public,
    );
    if key
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .is_err()
    {
        return Some("A JSON web token could not be decoded");
    }
    if claims["iss"].as_str() != Some(app.id.as_str()) {
        return Some("'Issuer' claim ('iss') must be the App's id");
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Some("'iat' and 'exp' are required");
    };
    let now = now_s();
    if exp <= now || iat > now + 60 || exp - iat > 600 {
        return Some("'Expiration time' claim ('exp') is too far in the future or past");
    }
    None
}

/// The App's part of an answer: `Some` for the App's own routes and for calls refused
/// for want of a live installation token; `None` to answer as without an App.
pub(super) fn respond(
    app: &mut FakeApp,
    method: &str,
    parts: &[String],
    auth: Option<&str>,
) -> Option<Response> {
    let bearer = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let app_route = (parts.len() == 5 && parts[1] == "repos" && parts[4] == "installation")
        || parts.get(1).map(String::as_str) == Some("app");
    if app_route {
        if let Some(why) = bad_jwt(app, bearer) {
            return Some(json_reply(401, json!({"message": why})));
        }
        return Some(app_route_answer(app, method, parts));
    }
    let live = app
        .tokens
        .iter()
        .any(|(t, until)| t == bearer && SystemTime::now() < *until);
    if !live {
        return Some(json_reply(401, json!({"message": "Bad credentials"})));
    }
    let (perm, level) = needed(method, parts)?;
    let has = app.permissions[perm].as_str().unwrap_or("none");
    let enough = has == "write" || (has == "read" && level == "read");
    (!enough).then(|| forbidden(perm, level))
}

/// The permission a route needs, as GitHub documents it: `(name, read|write)`.
pub(super) fn needed(method: &str, parts: &[String]) -> Option<(&'static str, &'static str)> {
    if parts.get(1).map(String::as_str) != Some("repos") || parts.len() < 5 {
        return None;
    }
    let level = if method == "GET" { "read" } else { "write" };
    let perm = match (parts[4].as_str(), parts.get(6).map(String::as_str)) {
        ("commits", Some("check-runs")) => "checks",
        ("commits", Some("status")) => "statuses",
        ("commits" | "branches" | "compare", _) => "contents",
        ("deployments", _) => "deployments",
        ("actions", _) => "actions",
        _ => return None,
    };
    Some((perm, level))
}

/// GitHub's answer to a call the credentials lack a permission for.
pub(super) fn forbidden(perm: &str, level: &str) -> Response {
    let mut r = json_reply(
        403,
        json!({"message": "Resource not accessible by integration", "status": "403"}),
    );
    r.headers_mut().insert(
        "x-accepted-github-permissions",
        format!("{perm}={level}").parse().unwrap(),
    );
    r
}

fn app_route_answer(app: &mut FakeApp, method: &str, parts: &[String]) -> Response {
    let installation = json!({
        "id": INSTALLATION,
        "app_id": app.id.parse::<u64>().unwrap(),
        "account": {"login": "acme"},
        "repository_selection": "selected",
        "permissions": app.permissions,
        "events": ["check_suite", "status"],
    });
    match (method, &parts[1..]) {
        ("GET", [_, o, n, _]) => {
            if app.repos.contains(&format!("{o}/{n}")) {
                json_reply(200, installation)
            } else {
                json_reply(404, json!({"message": "Not Found"}))
            }
        }
        ("GET", [_]) => json_reply(
            200,
            json!({"id": app.id.parse::<u64>().unwrap(), "slug": "deckhand-acme", "name": "Deckhand (acme)"}),
        ),
        ("POST", [_, i, id, t]) if i == "installations" && t == "access_tokens" => {
            if id != &INSTALLATION.to_string() {
                return json_reply(404, json!({"message": "Not Found"}));
            }
            let token = format!("ghs_fakeINSTALLATIONtoken{:04}xyz", app.tokens.len() + 1);
            let until = SystemTime::now() + app.ttl;
            let expires = chrono::DateTime::<chrono::Utc>::from(until)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            app.tokens.push((token.clone(), until));
            json_reply(
                201,
                json!({"token": token, "expires_at": expires, "permissions": app.permissions, "repository_selection": "selected"}),
            )
        }
        _ => json_reply(404, json!({"message": "Not Found"})),
    }
}
