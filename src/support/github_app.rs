//! GitHub credentials: a token (`GITHUB_TOKEN`), or a GitHub App (`GITHUB_APP_ID` and
//! `GITHUB_APP_PRIVATE_KEY`, its PEM key) whose installation tokens Deckhand mints and
//! refreshes itself.
//!
//! An App call signs a JWT (RS256, ten minutes at most, as GitHub requires) with the
//! App's key, asks which installation covers the repository
//! (`GET /repos/{owner}/{repo}/installation`) and mints that installation's token
//! (`POST /app/installations/{id}/access_tokens`), which lasts an hour. Tokens are kept
//! in memory only and minted again five minutes before they expire, or at once when
//! GitHub refuses one (revoked, or the App's permissions changed). The key and the
//! tokens never leave the `Authorization` header: not in logs, errors or the database.
//!
//! The signing is ring's (already built for TLS): no JWT crate, no new dependency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::support::github::{GhError, GitHub};

/// A minted token is used until this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// GitHub accepts JWTs that expire at most ten minutes after they were issued; the
/// issue time is set a minute back against clock drift, as GitHub advises.
const JWT_LIFETIME_S: u64 = 9 * 60;

/// How Deckhand authenticates to GitHub.
pub enum GhAuth {
    Token(SecretString),
    App(Box<GitHubApp>),
}

impl std::fmt::Debug for GhAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GhAuth::Token(_) => f.write_str("GhAuth::Token([redacted])"),
            GhAuth::App(a) => write!(f, "GhAuth::App(id {})", a.id),
        }
    }
}

/// A GitHub App: its id, its key, and what it has learnt (installations, tokens).
pub struct GitHubApp {
    pub id: String,
    key: RsaKeyPair,
    rng: ring::rand::SystemRandom,
    /// Repository (`owner/name`) → installation id.
    installations: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Installation id → its token and when to mint a new one.
    tokens: tokio::sync::Mutex<HashMap<u64, Minted>>,
}

struct Minted {
    token: SecretString,
    renew_at: Instant,
}

/// Why the App's credentials cannot be used, in words that name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthProblem(pub String);

impl GhAuth {
    /// The credentials the environment gives: `GITHUB_TOKEN`, or the App's id and key;
    /// `None` when neither is set. Both at once, or half an App, is an error: which one
    /// Deckhand would use must never be a guess.
    pub fn from_env(
        token: Option<&SecretString>,
        app_id: Option<&str>,
        app_key: Option<&SecretString>,
    ) -> Result<Option<GhAuth>, AuthProblem> {
        match (token, app_id, app_key) {
            (None, None, None) => Ok(None),
            (Some(t), None, None) => Ok(Some(GhAuth::Token(t.clone()))),
            (Some(_), _, _) => Err(AuthProblem(
                "both GITHUB_TOKEN and a GitHub App (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY) are set; set only one".into(),
            )),
            (None, Some(_), None) => Err(AuthProblem(
                "GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY is not; set it to the App's private key (PEM)".into(),
            )),
            (None, None, Some(_)) => Err(AuthProblem(
                "GITHUB_APP_PRIVATE_KEY is set but GITHUB_APP_ID is not; set it to the App's id (or client id)".into(),
            )),
            (None, Some(id), Some(key)) => Ok(Some(GhAuth::App(Box::new(GitHubApp::new(id, key)?)))),
        }
    }

    /// What to check when GitHub refuses the credentials.
    pub fn names(&self) -> &'static str {
        match self {
            GhAuth::Token(_) => "GITHUB_TOKEN",
            GhAuth::App(_) => "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY",
        }
    }

    /// The bearer token for a call to `path`: the token itself, or for an App the
    /// installation token of the repository the path names (a JWT for `/app` paths).
    pub(crate) async fn bearer(
        &self,
        gh: &GitHub<'_>,
        path: &str,
    ) -> Result<Zeroizing<String>, GhError> {
        match self {
            GhAuth::Token(t) => Ok(Zeroizing::new(t.expose_secret().to_owned())),
            GhAuth::App(app) => match repo_of(path) {
                Some(repo) => app.installation_token(gh, &repo).await,
                None => app.jwt().map_err(|e| GhError::Failed(e.0)),
            },
        }
    }

    /// GitHub refused the bearer `path` was sent with: mint a new one next time.
    pub(crate) async fn forget(&self, path: &str) {
        if let (GhAuth::App(app), Some(repo)) = (self, repo_of(path)) {
            let id = app.installations.lock().await.remove(&repo);
            if let Some(id) = id {
                app.tokens.lock().await.remove(&id);
            }
        }
    }
}

/// `owner/name` of a `/repos/{owner}/{name}/…` path.
fn repo_of(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix("/repos/")?.split(['/', '?']);
    let (o, n) = (parts.next()?, parts.next()?);
    (!o.is_empty() && !n.is_empty()).then(|| format!("{o}/{n}"))
}

/// The DER inside a PEM block, and whether it is PKCS#8 (`PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`, what GitHub hands out). Accepts the `\n` escapes a PEM gets when
/// pasted into a one-line secret store.
fn pem_der(pem: &str) -> Result<(Zeroizing<Vec<u8>>, bool), AuthProblem> {
    let pem = Zeroizing::new(pem.trim().replace("\\n", "\n"));
    let bad = |why: &str| {
        AuthProblem(format!(
            "GITHUB_APP_PRIVATE_KEY is not a PEM RSA private key ({why}); set it to the contents of the .pem file GitHub gave for the App"
        ))
    };
    let (pkcs8, begin, end) = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        (
            false,
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----END RSA PRIVATE KEY-----",
        )
    } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
        (
            true,
            "-----BEGIN PRIVATE KEY-----",
            "-----END PRIVATE KEY-----",
        )
    } else {
        return Err(bad("no BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY line"));
    };
    let body = pem
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(b, _)| b)
        .ok_or_else(|| bad("no END line"))?;
    let b64: Zeroizing<String> =
        Zeroizing::new(body.chars().filter(|c| !c.is_whitespace()).collect());
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| bad("its body is not base64"))?;
    Ok((Zeroizing::new(der), pkcs8))
}

/// The lines of a PEM key's body, for redaction: a step or a tool that prints the key
/// prints it line by line.
pub fn pem_lines(pem: &str) -> Vec<String> {
    pem.replace("\\n", "\n")
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

impl GitHubApp {
    pub fn new(id: &str, key_pem: &SecretString) -> Result<GitHubApp, AuthProblem> {
        let id = id.trim();
        if id.is_empty()
            || id.len() > 40
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Err(AuthProblem(
                "GITHUB_APP_ID must be the App's numeric id or its client id (Iv1.…)".into(),
            ));
        }
        let (der, pkcs8) = pem_der(key_pem.expose_secret())?;
        let key = if pkcs8 {
            RsaKeyPair::from_pkcs8(&der)
        } else {
            RsaKeyPair::from_der(&der)
        }
        .map_err(|e| {
            AuthProblem(format!(
                "GITHUB_APP_PRIVATE_KEY is not a usable RSA key ({e}); GitHub Apps use 2048-bit RSA keys"
            ))
        })?;
        Ok(GitHubApp {
            id: id.to_owned(),
            key,
            rng: ring::rand::SystemRandom::new(),
            installations: Default::default(),
            tokens: Default::default(),
        })
    }

    /// A JWT that authenticates as the App itself, valid for nine minutes.
    pub fn jwt(&self) -> Result<Zeroizing<String>, AuthProblem> {
        let now = crate::domain::time::now_ms() as u64 / 1000;
        self.jwt_at(now)
    }

    fn jwt_at(&self, now: u64) -> Result<Zeroizing<String>, AuthProblem> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"iat": now.saturating_sub(60), "exp": now + JWT_LIFETIME_S, "iss": self.id})
                .to_string(),
        );
        let signed = format!("{header}.{claims}");
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, signed.as_bytes(), &mut sig)
            .map_err(|_| AuthProblem("cannot sign with GITHUB_APP_PRIVATE_KEY".into()))?;
        Ok(Zeroizing::new(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }

    /// The installation id covering `repo`, asked once and then remembered.
    pub async fn installation(&self, gh: &GitHub<'_>, repo: &str) -> Result<u64, GhError> {
        if let Some(id) = self.installations.lock().await.get(repo) {
            return Ok(*id);
        }
        Ok(self.look_up_installation(gh, repo).await?.0)
    }

    /// Ask GitHub which installation covers `repo` (and remember its id): the id, and the
    /// installation as GitHub describes it (its `permissions`, …).
    pub async fn look_up_installation(
        &self,
        gh: &GitHub<'_>,
        repo: &str,
    ) -> Result<(u64, Value), GhError> {
        let v = self
            .as_app(gh, reqwest::Method::GET, &format!("/repos/{repo}/installation"))
            .await
            .map_err(|e| match e {
                GhError::NotFound => GhError::Failed(format!(
                    "the GitHub App {} is not installed on {repo}: install it on the repository (Settings → GitHub Apps)",
                    self.id
                )),
                e => e,
            })?;
        let id = v["id"].as_u64().ok_or_else(|| {
            GhError::Failed("GitHub answered an installation without an id".into())
        })?;
        self.installations.lock().await.insert(repo.to_owned(), id);
        Ok((id, v))
    }

    /// The installation token for `repo`: the one minted before while it has more than
    /// five minutes left, else a new one. One mint at a time per App.
    async fn installation_token(
        &self,
        gh: &GitHub<'_>,
        repo: &str,
    ) -> Result<Zeroizing<String>, GhError> {
        let id = self.installation(gh, repo).await?;
        let mut tokens = self.tokens.lock().await;
        if let Some(m) = tokens.get(&id)
            && Instant::now() < m.renew_at
        {
            return Ok(Zeroizing::new(m.token.expose_secret().to_owned()));
        }
        let v = self
            .as_app(
                gh,
                reqwest::Method::POST,
                &format!("/app/installations/{id}/access_tokens"),
            )
            .await?;
        let token = v["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GhError::Failed("GitHub minted an installation token without a token".into())
            })?;
        let lifetime = v["expires_at"]
            .as_str()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .map(|e| e.timestamp_millis() - crate::domain::time::now_ms())
            .map_or(Duration::from_secs(3600), |ms| {
                Duration::from_millis(ms.max(0) as u64)
            });
        tracing::info!(
            installation = id,
            expires_in_s = lifetime.as_secs(),
            "minted a GitHub App installation token"
        );
        tokens.insert(
            id,
            Minted {
                token: SecretString::from(token.to_owned()),
                renew_at: Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE),
            },
        );
        Ok(Zeroizing::new(token.to_owned()))
    }

    /// A call authenticated as the App (its JWT): installations and token mints.
    pub(crate) async fn as_app(
        &self,
        gh: &GitHub<'_>,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Value, GhError> {
        let jwt = self.jwt().map_err(|e| GhError::Failed(e.0))?;
        let res = gh
            .unauthenticated(method, path)
            .bearer_auth(jwt.as_str())
            .send()
            .await
            .map_err(|e| {
                GhError::Failed(format!("GitHub: {}", crate::support::net::net_reason(&e)))
            })?;
        let status = res.status().as_u16();
        if let Some(wait) = crate::support::github::rate_limit_wait(status, res.headers()) {
            return Err(GhError::RateLimited(wait));
        }
        match status {
            200..=299 => res
                .json()
                .await
                .map_err(|_| GhError::Failed("GitHub answered with unreadable JSON".into())),
            401 => Err(GhError::Failed(format!(
                "GitHub refused the App's JWT (401): check GITHUB_APP_ID ({}) and GITHUB_APP_PRIVATE_KEY, and that this machine's clock is right",
                self.id
            ))),
            403 => Err(GhError::Failed(
                "GitHub denied the App an installation token (403): the installation may be suspended".into(),
            )),
            404 => Err(GhError::NotFound),
            s => Err(GhError::Failed(format!(
                "GitHub answered {s} to the App's token request"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../../tests/it/fixtures/github-app-test-key.pem");

    fn app() -> GitHubApp {
        GitHubApp::new("12345", &SecretString::from(KEY.to_owned())).unwrap()
    }

    #[test]
    fn the_jwt_is_rs256_signed_by_the_key_and_lasts_under_ten_minutes() {
        let a = app();
        let jwt = a.jwt_at(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "12345");
        assert_eq!(claims["iat"], 1_700_000_000 - 60);
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp - claims["iat"].as_u64().unwrap() <= 600);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            a.key.public().as_ref().to_vec(),
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        // Tampered claims do not verify.
        assert!(
            public
                .verify(format!("{}.{}x", parts[0], parts[1]).as_bytes(), &sig)
                .is_err()
        );
    }

    #[test]
    fn keys_are_read_as_github_hands_them_out_or_refused_without_their_text() {
        // As pasted into a one-line secret store.
        let escaped = KEY.trim().replace('\n', "\\n");
        assert!(GitHubApp::new("12345", &SecretString::from(escaped)).is_ok());
        let garbled = KEY.replace("MII", "M!I");
        let e = GitHubApp::new("12345", &SecretString::from(garbled))
            .err()
            .unwrap();
        assert!(e.0.contains("not base64"), "{e}");
        let line = &pem_lines(KEY)[1];
        let half = KEY.replace(line.as_str(), "");
        let e = GitHubApp::new("12345", &SecretString::from(half))
            .err()
            .unwrap();
        assert!(e.0.contains("RSA key"), "{e}");
        assert!(!e.0.contains(&line[..16]), "{e}");
        let e = GitHubApp::new("12345", &SecretString::from("hunter2".to_owned()))
            .err()
            .unwrap();
        assert!(e.0.contains("PEM"), "{e}");
        assert!(GitHubApp::new("12 345", &SecretString::from(KEY.to_owned())).is_err());
        assert!(pem_lines(KEY).len() > 20);
    }

    #[test]
    fn credentials_are_one_kind_or_a_clear_error() {
        let s = |v: &str| SecretString::from(v.to_owned());
        assert!(GhAuth::from_env(None, None, None).unwrap().is_none());
        assert!(matches!(
            GhAuth::from_env(Some(&s("t")), None, None),
            Ok(Some(GhAuth::Token(_)))
        ));
        assert!(matches!(
            GhAuth::from_env(None, Some("1"), Some(&s(KEY))),
            Ok(Some(GhAuth::App(_)))
        ));
        let e = GhAuth::from_env(Some(&s("t")), Some("1"), Some(&s(KEY))).unwrap_err();
        assert!(e.0.contains("only one"), "{e}");
        let e = GhAuth::from_env(None, Some("1"), None).unwrap_err();
        assert!(e.0.contains("GITHUB_APP_PRIVATE_KEY is not"), "{e}");
        let e = GhAuth::from_env(None, None, Some(&s(KEY))).unwrap_err();
        assert!(e.0.contains("GITHUB_APP_ID is not"), "{e}");
    }

    #[test]
    fn repos_are_read_off_paths() {
        assert_eq!(
            repo_of("/repos/acme/shop/commits/x").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(
            repo_of("/repos/acme/shop?x=1").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(repo_of("/app/installations/1"), None);
        assert_eq!(repo_of("/repos/acme"), None);
    }
}
