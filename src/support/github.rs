//! A small GitHub REST client on the shared reqwest client: commits and their checks.
//!
//! Every call has a timeout; a rate limit (`403`/`429` with `Retry-After`, or
//! `x-ratelimit-remaining: 0` with `x-ratelimit-reset`) is waited out when the wait is
//! short, else it is an error saying when to retry. The token travels in the
//! `Authorization` header only, and no error text carries it or a URL.

use std::time::Duration;

use serde_json::Value;

/// Where and how to ask.
pub struct GitHub<'a> {
    pub http: &'a reqwest::Client,
    /// `https://api.github.com`, without a trailing `/`.
    pub api_url: &'a str,
    pub auth: &'a crate::support::github_app::GhAuth,
    pub timeout: Duration,
    /// A rate limit asking for a longer wait than this fails the call instead.
    pub max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GhError {
    /// 404 or 422: the repository has no such ref (or the token cannot see it).
    NotFound,
    /// A rate limit asks for a longer wait than this client's `max_wait`: calls are
    /// allowed again after this long.
    RateLimited(Duration),
    /// Anything else, in words (no URL, no token).
    Failed(String),
}

impl std::fmt::Display for GhError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GhError::NotFound => f.write_str("not found"),
            GhError::RateLimited(w) => write!(
                f,
                "GitHub rate limit reached; it allows calls again in {} s",
                w.as_secs()
            ),
            GhError::Failed(m) => f.write_str(m),
        }
    }
}

/// The answer to a conditional request (`If-None-Match` with the ETag of the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh<T> {
    /// 304: unchanged since that ETag (and free against the rate limit).
    NotModified,
    Changed {
        value: T,
        etag: Option<String>,
    },
}

/// Why a `POST` did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// Worth trying again (a timeout, a 5xx, a rate limit), not before `after` if given.
    Again {
        after: Option<Duration>,
        reason: String,
    },
    /// GitHub refused it (bad credentials, no permission, bad request): in words.
    Refused(String),
}

/// A commit, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub title: String,
    pub author: String,
    pub url: String,
}

/// A branch's head commit, and its author's login when GitHub knows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub sha: String,
    pub author: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Passed,
    Failed,
    /// Queued or running; the words say which.
    Pending,
}

/// One check run or commit status, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub state: CheckState,
    /// "in progress", "queued", "failure", "success", …
    pub detail: String,
    pub url: Option<String>,
}

impl GitHub<'_> {
    /// A request to `{api}{path}` with the credentials, GitHub's media type and API
    /// version, and this client's timeout. Every call to GitHub goes through here.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, GhError> {
        let bearer = self.auth.bearer(self, path).await?;
        Ok(self
            .unauthenticated(method, path)
            .bearer_auth(bearer.as_str()))
    }

    /// [`GitHub::request`] without credentials (the App's own calls add its JWT).
    pub(crate) fn unauthenticated(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api_url))
            .timeout(self.timeout)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "deckhand")
    }

    /// GitHub refused the credentials of a call to `path` (401): an App's token is
    /// minted again for the next call, and the error names what to check.
    pub(crate) async fn refused(&self, path: &str) -> String {
        self.auth.forget(path).await;
        format!(
            "GitHub refused the credentials (401): check {}",
            self.auth.names()
        )
    }

    /// `GET {api}{path}` as JSON, honouring rate limits.
    pub async fn get(&self, path: &str) -> Result<Value, GhError> {
        match self.get_if_changed(path, None).await? {
            Fresh::Changed { value, .. } => Ok(value),
            Fresh::NotModified => Err(GhError::Failed(
                "GitHub answered 304 to a request without an ETag".into(),
            )),
        }
    }

    /// `GET {api}{path}` as JSON, with `If-None-Match: etag` when given; rate limits
    /// waited out up to `max_wait`, else [`GhError::RateLimited`] with the wait.
    pub async fn get_if_changed(
        &self,
        path: &str,
        etag: Option<&str>,
    ) -> Result<Fresh<Value>, GhError> {
        let mut waited = Duration::ZERO;
        let mut refused = false;
        loop {
            let mut req = self.request(reqwest::Method::GET, path).await?;
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            let res = req.send().await.map_err(|e| {
                GhError::Failed(format!("GitHub: {}", crate::support::net::net_reason(&e)))
            })?;
            let status = res.status().as_u16();
            if let Some(wait) = rate_limit_wait(status, res.headers()) {
                if waited + wait > self.max_wait {
                    return Err(GhError::RateLimited(wait));
                }
                tracing::warn!(wait_s = wait.as_secs(), "GitHub rate limit: waiting");
                tokio::time::sleep(wait).await;
                waited += wait;
                continue;
            }
            return match status {
                304 => Ok(Fresh::NotModified),
                200..=299 => {
                    let etag = res
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| v.len() <= 200)
                        .map(str::to_owned);
                    res.json()
                        .await
                        .map(|value| Fresh::Changed { value, etag })
                        .map_err(|_| GhError::Failed("GitHub answered with unreadable JSON".into()))
                }
                404 | 422 => Err(GhError::NotFound),
                401 => {
                    let why = self.refused(path).await;
                    // An App's token may have been revoked: one more try with a new one.
                    if !refused && matches!(self.auth, crate::support::github_app::GhAuth::App(_)) {
                        refused = true;
                        continue;
                    }
                    Err(GhError::Failed(why))
                }
                403 => Err(GhError::Failed(
                    "GitHub denied access (403): the credentials lack a permission (contents, checks and statuses: read); `deckhand github check` says which".into(),
                )),
                s => Err(GhError::Failed(format!("GitHub answered {s}"))),
            };
        }
    }

    /// `POST {api}{path}` with a JSON body, once: the answer, or whether to try again.
    /// A rate limit is not waited out here but handed back as the wait (the outbox
    /// retries then); so are timeouts and 5xx answers.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, PostError> {
        let req = self
            .request(reqwest::Method::POST, path)
            .await
            .map_err(|e| match e {
                GhError::RateLimited(w) => PostError::Again {
                    after: Some(w),
                    reason: e.to_string(),
                },
                e => PostError::Again {
                    after: None,
                    reason: e.to_string(),
                },
            })?
            .json(body);
        let res = send_once(req).await?;
        let status = res.status().as_u16();
        match status {
            200..=299 => res.json().await.map_err(|_| PostError::Again {
                after: None,
                reason: "GitHub answered with unreadable JSON".into(),
            }),
            401 => Err(PostError::Refused(self.refused(path).await)),
            403 => Err(PostError::Refused(
                "GitHub denied access (403): the credentials lack Deployments: write; `deckhand github check` says which".into(),
            )),
            s @ (404 | 422) => Err(PostError::Refused(format!(
                "GitHub refused it ({s}): {}",
                res.json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["message"].as_str().map(crate::domain::text::shorten))
                    .unwrap_or_default()
            ))),
            s if s >= 500 || s == 408 => Err(PostError::Again {
                after: None,
                reason: format!("GitHub answered {s}"),
            }),
            s => Err(PostError::Refused(format!("GitHub answered {s}"))),
        }
    }

    /// A short SHA, branch or tag of `repo` → the commit.
    pub async fn commit(&self, repo: &str, git_ref: &str) -> Result<Commit, GhError> {
        let v = self
            .get(&format!("/repos/{repo}/commits/{}", encode(git_ref)))
            .await?;
        let sha = v["sha"].as_str().unwrap_or_default().to_owned();
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(GhError::Failed(
                "GitHub answered a commit without a SHA".into(),
            ));
        }
        let message = v["commit"]["message"].as_str().unwrap_or_default();
        Ok(Commit {
            sha,
            title: message.lines().next().unwrap_or_default().to_owned(),
            author: v["author"]["login"]
                .as_str()
                .or(v["commit"]["author"]["name"].as_str())
                .unwrap_or_default()
                .to_owned(),
            url: v["html_url"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The head commit of `branch` in `repo` (`GET …/branches/{branch}`), unless it is
    /// unchanged since `etag`.
    pub async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
        etag: Option<&str>,
    ) -> Result<Fresh<Head>, GhError> {
        let path = format!("/repos/{repo}/branches/{}", encode(branch));
        let (v, etag) = match self.get_if_changed(&path, etag).await? {
            Fresh::NotModified => return Ok(Fresh::NotModified),
            Fresh::Changed { value, etag } => (value, etag),
        };
        let sha = v["commit"]["sha"].as_str().unwrap_or_default();
        if !crate::support::github_webhook::valid_sha(sha) {
            return Err(GhError::Failed(
                "GitHub answered a branch without a head SHA".into(),
            ));
        }
        let author = v["commit"]["author"]["login"]
            .as_str()
            .filter(|l| crate::support::github_webhook::valid_login(l))
            .map(str::to_owned);
        Ok(Fresh::Changed {
            value: Head {
                sha: sha.to_owned(),
                author,
            },
            etag,
        })
    }

    /// The check runs and the commit statuses of `sha`, by name.
    pub async fn checks(&self, repo: &str, sha: &str) -> Result<Vec<Check>, GhError> {
        let runs = self
            .get(&format!(
                "/repos/{repo}/commits/{sha}/check-runs?per_page=100"
            ))
            .await?;
        let statuses = self
            .get(&format!("/repos/{repo}/commits/{sha}/status?per_page=100"))
            .await?;
        Ok(parse_checks(&runs, &statuses))
    }
}

/// Send `req` once: GitHub's answer, unless there was none or it is a rate limit (then
/// `Again`, with the wait the rate limit asks for).
pub async fn send_once(req: reqwest::RequestBuilder) -> Result<reqwest::Response, PostError> {
    let res = req.send().await.map_err(|e| PostError::Again {
        after: None,
        reason: format!("GitHub: {}", crate::support::net::net_reason(&e)),
    })?;
    if let Some(wait) = rate_limit_wait(res.status().as_u16(), res.headers()) {
        return Err(PostError::Again {
            after: Some(wait),
            reason: format!("GitHub rate limit; allowed again in {} s", wait.as_secs()),
        });
    }
    Ok(res)
}

/// How long a rate-limited answer asks us to wait, if it is one.
pub fn rate_limit_wait(status: u16, h: &reqwest::header::HeaderMap) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    let num = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(s) = num("retry-after") {
        return Some(Duration::from_secs(s.max(1)));
    }
    if num("x-ratelimit-remaining") == Some(0) {
        let now = crate::domain::time::now_ms() as u64 / 1000;
        let reset = num("x-ratelimit-reset").unwrap_or(now + 60);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    // A secondary rate limit without headers: GitHub says wait at least a minute.
    (status == 429).then(|| Duration::from_secs(60))
}

/// Percent-encode a ref for a path segment (branch names may hold `/`).
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Check runs (`/check-runs`) and statuses (`/status`) as one list; a name reported by
/// several runs counts by its latest (the first listed).
pub fn parse_checks(runs: &Value, statuses: &Value) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    let mut push = |c: Check| {
        if !out.iter().any(|o| o.name == c.name) {
            out.push(c);
        }
    };
    for r in runs["check_runs"].as_array().into_iter().flatten() {
        let status = r["status"].as_str().unwrap_or_default();
        let conclusion = r["conclusion"].as_str().unwrap_or("");
        let (state, detail) = if status.is_empty() {
            (CheckState::Pending, "not started".to_owned())
        } else if status != "completed" {
            (CheckState::Pending, status.replace('_', " "))
        } else if matches!(conclusion, "success" | "neutral" | "skipped") {
            (CheckState::Passed, conclusion.to_owned())
        } else {
            (CheckState::Failed, conclusion.replace('_', " "))
        };
        push(Check {
            name: r["name"].as_str().unwrap_or_default().to_owned(),
            state,
            detail,
            url: r["html_url"].as_str().map(str::to_owned),
        });
    }
    for s in statuses["statuses"].as_array().into_iter().flatten() {
        let st = s["state"].as_str().unwrap_or("pending");
        let state = match st {
            "success" => CheckState::Passed,
            "pending" => CheckState::Pending,
            _ => CheckState::Failed,
        };
        push(Check {
            name: s["context"].as_str().unwrap_or_default().to_owned(),
            state,
            detail: st.to_owned(),
            url: s["target_url"].as_str().map(str::to_owned),
        });
    }
    out
}

/// What the required checks say about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Passed,
    Failed(Vec<Check>),
    /// Required checks still running or not reported yet.
    Pending(Vec<Check>),
}

/// Judge `checks` against the required names (or every check reported, with `all`).
/// A failure anywhere required wins over pending; a required name not reported yet is
/// pending; `all` with nothing reported is pending (no untested deployments).
pub fn gate(all: bool, names: &[String], checks: &[Check]) -> Gate {
    let required: Vec<Check> = if all {
        if checks.is_empty() {
            return Gate::Pending(vec![Check {
                name: "any check".into(),
                state: CheckState::Pending,
                detail: "not reported yet".into(),
                url: None,
            }]);
        }
        checks.to_vec()
    } else {
        names
            .iter()
            .map(|n| {
                checks
                    .iter()
                    .find(|c| &c.name == n)
                    .cloned()
                    .unwrap_or(Check {
                        name: n.clone(),
                        state: CheckState::Pending,
                        detail: "not reported yet".into(),
                        url: None,
                    })
            })
            .collect()
    };
    let of = |s: CheckState| -> Vec<Check> {
        required.iter().filter(|c| c.state == s).cloned().collect()
    };
    let failed = of(CheckState::Failed);
    if !failed.is_empty() {
        return Gate::Failed(failed);
    }
    let pending = of(CheckState::Pending);
    if !pending.is_empty() {
        return Gate::Pending(pending);
    }
    Gate::Passed
}

/// `test (in progress), build (queued)`.
pub fn describe_checks(checks: &[Check], with_links: bool) -> String {
    checks
        .iter()
        .map(|c| {
            let name = crate::domain::text::shorten(&c.name);
            match (&c.url, with_links) {
                (Some(u), true) => format!("{name} ({}: {u})", c.detail),
                _ => format!("{name} ({})", c.detail),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checks_and_statuses_make_one_gate() {
        let runs = json!({"check_runs": [
            {"name": "test", "status": "completed", "conclusion": "failure", "html_url": "https://x/1"},
            {"name": "build", "status": "in_progress", "conclusion": null},
            {"name": "lint", "status": "completed", "conclusion": "success"}
        ]});
        let statuses =
            json!({"statuses": [{"context": "ci/deploy", "state": "success", "target_url": null}]});
        let c = parse_checks(&runs, &statuses);
        assert_eq!(c.len(), 4);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match gate(false, &names(&["test", "build"]), &c) {
            Gate::Failed(f) => {
                assert_eq!(f.len(), 1);
                assert_eq!(describe_checks(&f, true), "test (failure: https://x/1)");
            }
            g => panic!("{g:?}"),
        }
        match gate(false, &names(&["build", "e2e"]), &c) {
            Gate::Pending(p) => assert_eq!(
                describe_checks(&p, false),
                "build (in progress), e2e (not reported yet)"
            ),
            g => panic!("{g:?}"),
        }
        assert_eq!(
            gate(false, &names(&["lint", "ci/deploy"]), &c),
            Gate::Passed
        );
        assert!(matches!(gate(true, &[], &c), Gate::Failed(_)));
        assert!(matches!(gate(true, &[], &[]), Gate::Pending(_)));
    }

    #[test]
    fn rate_limits_are_read_from_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(rate_limit_wait(403, &h), None);
        assert_eq!(rate_limit_wait(429, &h), Some(Duration::from_secs(60)));
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(rate_limit_wait(403, &h), Some(Duration::from_secs(3)));
        assert_eq!(rate_limit_wait(200, &h), None);
        let mut h = reqwest::header::HeaderMap::new();
        let now = crate::domain::time::now_ms() as u64 / 1000;
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", (now + 5).to_string().parse().unwrap());
        let w = rate_limit_wait(403, &h).unwrap().as_secs();
        assert!((4..=6).contains(&w), "{w}");
        assert_eq!(encode("feature/a b"), "feature%2Fa%20b");
    }
}
