//! A fake GitHub REST API on 127.0.0.1: commits by ref (a unique SHA prefix of 7 or more
//! digits too), branches with their head (`GET …/branches/{name}`, with an ETag, and 304
//! to an `If-None-Match` that matches it), check runs and combined statuses by SHA,
//! comparisons of two commits, and deployments with their statuses (recorded; a `success`
//! status with `auto_inactive` marks the environment's earlier deployments `inactive`, as
//! GitHub does). Records every call (method, path, Authorization, `If-None-Match`, body,
//! the status answered) and can answer 401, a 403 rate limit with `Retry-After`
//! or `x-ratelimit-reset`, 422 for an unknown ref, or 502 to the next deployment creates.
//! GitHub Actions (workflow dispatches, runs, their jobs, cancels): `github_actions.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct GhCall {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub if_none_match: Option<String>,
    pub body: Option<Value>,
    /// The status the fake answered.
    pub status: u16,
}

/// A deployment created on the fake, with its statuses in the order posted.
#[derive(Debug, Clone)]
pub struct GhDeployment {
    pub id: i64,
    pub body: Value,
    /// (state, the whole status body); `inactive` entries are the fake's own, as GitHub
    /// records them when a later deployment of the environment succeeds.
    pub statuses: Vec<(String, Value)>,
}

impl GhDeployment {
    pub fn states(&self) -> Vec<String> {
        self.statuses.iter().map(|s| s.0.clone()).collect()
    }
}

/// A scripted answer: status, headers, JSON body.
type Scripted = (u16, Vec<(String, String)>, Value);

#[derive(Default)]
pub(super) struct Inner {
    calls: Vec<GhCall>,
    /// GitHub Actions: workflows, their runs, dispatches and cancels.
    pub(super) actions: super::github_actions::Actions,
    /// ref (branch, tag, short or full SHA) → full SHA.
    refs: BTreeMap<String, String>,
    /// SHA → check runs: (name, status, conclusion).
    runs: BTreeMap<String, Vec<(String, String, Option<String>)>>,
    /// SHA → statuses: (context, state).
    statuses: BTreeMap<String, Vec<(String, String)>>,
    /// Answers given before any other, in turn: (status, headers, body).
    script: VecDeque<Scripted>,
    deployments: Vec<GhDeployment>,
    /// Deployment creates still to answer `create_failure` (502 unless set).
    failing_creates: usize,
    create_failure: u16,
    /// (base, head) → (ahead_by, behind_by, commit messages oldest first).
    compares: BTreeMap<(String, String), (u64, u64, Vec<String>)>,
    /// SHA → its author's login (else `ada`).
    authors: BTreeMap<String, String>,
    /// Set: calls need this GitHub App's tokens (`github_app.rs`).
    pub(super) app: Option<super::github_app::FakeApp>,
    /// Without an App: the permissions the token lacks.
    pub(super) denied: std::collections::BTreeSet<String>,
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub(super) inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakeGitHub {
    pub fn start() -> FakeGitHub {
        let inner: Arc<Mutex<Inner>> = Default::default();
        let state = inner.clone();
        let port = super::serve_on_loopback(move |l| async move {
            let app = axum::Router::new().fallback(answer).with_state(state);
            axum::serve(l, app).await.unwrap();
        });
        FakeGitHub {
            inner,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `f` with the fake's state, locked.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// A commit reachable by its full SHA, its first 7 digits and the given names.
    pub fn commit(&self, sha: &str, names: &[&str]) {
        let mut i = self.inner.lock().unwrap();
        i.refs.insert(sha.into(), sha.into());
        i.refs.insert(sha[..7].into(), sha.into());
        for n in names {
            i.refs.insert((*n).into(), sha.into());
        }
    }

    /// `sha`'s author is `login` (branch heads name it).
    pub fn author(&self, sha: &str, login: &str) {
        self.inner
            .lock()
            .unwrap()
            .authors
            .insert(sha.into(), login.into());
    }

    /// Set check run `name` of `sha`: status `queued`/`in_progress`/`completed`, and
    /// conclusion when completed.
    pub fn check_run(&self, sha: &str, name: &str, status: &str, conclusion: Option<&str>) {
        let mut i = self.inner.lock().unwrap();
        let runs = i.runs.entry(sha.into()).or_default();
        runs.retain(|r| r.0 != name);
        runs.push((name.into(), status.into(), conclusion.map(Into::into)));
    }

    pub fn status(&self, sha: &str, context: &str, state: &str) {
        let mut i = self.inner.lock().unwrap();
        let s = i.statuses.entry(sha.into()).or_default();
        s.retain(|r| r.0 != context);
        s.push((context.into(), state.into()));
    }

    /// The next answer, whatever is asked.
    pub fn script(&self, status: u16, headers: &[(&str, &str)], body: Value) {
        self.inner.lock().unwrap().script.push_back((
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
        ));
    }

    /// `GET /compare/{base}...{head}` answers these commits (messages, oldest first).
    pub fn compare(&self, base: &str, head: &str, behind: u64, messages: &[&str]) {
        self.inner.lock().unwrap().compares.insert(
            (base.into(), head.into()),
            (
                messages.len() as u64,
                behind,
                messages.iter().map(|m| m.to_string()).collect(),
            ),
        );
    }

    /// The next `n` deployment creates answer 502.
    pub fn fail_creates(&self, n: usize) {
        self.fail_creates_with(n, 502);
    }

    /// The next `n` deployment creates answer `status`.
    pub fn fail_creates_with(&self, n: usize, status: u16) {
        let mut i = self.inner.lock().unwrap();
        i.failing_creates = n;
        i.create_failure = status;
    }

    pub fn deployments(&self) -> Vec<GhDeployment> {
        self.inner.lock().unwrap().deployments.clone()
    }

    /// Wait (up to `secs`) until there are exactly `n` deployments and the last has gone
    /// `in_progress` then `success`; that one.
    pub async fn nth_deployment_succeeded(&self, n: usize, secs: u64) -> GhDeployment {
        super::eventually(secs, &format!("deployment {n} to succeed"), || async {
            let d = self.deployments();
            (d.len() == n && d[n - 1].states() == ["in_progress", "success"])
                .then(|| d[n - 1].clone())
        })
        .await
    }

    pub fn calls(&self) -> Vec<GhCall> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The calls for `branch`'s head, in order.
    pub fn branch_calls(&self, branch: &str) -> Vec<GhCall> {
        let end = format!("/branches/{branch}");
        self.calls()
            .into_iter()
            .filter(|c| c.path.ends_with(&end))
            .collect()
    }

    pub fn calls_to(&self, part: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.path.contains(part))
            .count()
    }
}

fn link(sha: &str, name: &str) -> String {
    format!("https://github.example/acme/shop/runs/{}-{name}", &sha[..7])
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut i = inner.lock().unwrap();
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    i.calls.push(GhCall {
        method: method.to_string(),
        path: uri.path().to_owned(),
        auth: header("authorization"),
        if_none_match: header("if-none-match"),
        body: body.clone(),
        status: 0,
    });
    let r = match &mut i.app {
        Some(app) => {
            let parts: Vec<String> = uri.path().split('/').map(percent_decode).collect();
            super::github_app::respond(
                app,
                method.as_str(),
                &parts,
                header("authorization").as_deref(),
            )
        }
        None => {
            let parts: Vec<String> = uri.path().split('/').map(percent_decode).collect();
            super::github_app::needed(method.as_str(), &parts)
                .filter(|(perm, _)| i.denied.contains(*perm))
                .map(|(perm, level)| super::github_app::forbidden(perm, level))
        }
    };
    let r = r.unwrap_or_else(|| respond(&mut i, &method, &uri, header("if-none-match"), body));
    if let Some(c) = i.calls.last_mut() {
        c.status = r.status().as_u16();
    }
    r
}

fn respond(
    i: &mut Inner,
    method: &Method,
    uri: &Uri,
    if_none_match: Option<String>,
    body: Option<Value>,
) -> Response {
    let reply = |status: u16, body: Value| {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            axum::Json(body),
        )
            .into_response()
    };
    if let Some((status, hs, body)) = i.script.pop_front() {
        let mut r = reply(status, body);
        for (k, v) in hs {
            r.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return r;
    }
    let parts: Vec<String> = uri.path().split('/').map(percent_decode).collect();
    if let Some(r) =
        super::github_actions::respond(&mut i.actions, method, &parts, uri.query(), body.as_ref())
    {
        return r;
    }
    if parts.len() >= 5 && parts[1] == "repos" && parts[4] == "deployments" {
        return deployments(i, method, &parts, body.unwrap_or(Value::Null));
    }
    if parts.len() == 6 && parts[1] == "repos" && parts[4] == "branches" {
        let Some(sha) = i.refs.get(&parts[5]).cloned() else {
            return reply(404, json!({"message": "Branch not found"}));
        };
        let etag = format!("W/\"branch-{}-{sha}\"", parts[5]);
        if if_none_match.as_deref() == Some(etag.as_str()) {
            let mut r = axum::http::StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().insert("etag", etag.parse().unwrap());
            return r;
        }
        let login = i.authors.get(&sha).cloned().unwrap_or_else(|| "ada".into());
        let mut r = reply(
            200,
            json!({
                "name": parts[5],
                "commit": {"sha": sha, "commit": {"message": "Fix the thing"}, "author": {"login": login}},
                "protected": false
            }),
        );
        r.headers_mut().insert("etag", etag.parse().unwrap());
        return r;
    }
    if parts.len() == 6 && parts[1] == "repos" && parts[4] == "compare" {
        let (base, head) = parts[5].split_once("...").unwrap_or(("", ""));
        let Some((ahead, behind, messages)) =
            i.compares.get(&(base.to_owned(), head.to_owned())).cloned()
        else {
            return reply(404, json!({"message": "Not Found"}));
        };
        let commits: Vec<Value> = messages
            .iter()
            .map(|m| json!({"sha": "0".repeat(40), "commit": {"message": m}}))
            .collect();
        return reply(
            200,
            json!({
                "status": if ahead > 0 { "ahead" } else if behind > 0 { "behind" } else { "identical" },
                "ahead_by": ahead, "behind_by": behind, "total_commits": ahead,
                "html_url": format!("https://github.example/{}/{}/compare/{base}...{head}", parts[2], parts[3]),
                "commits": commits
            }),
        );
    }
    if parts.len() == 4 && parts[1] == "repos" && method == Method::GET {
        return reply(
            200,
            json!({"full_name": format!("{}/{}", parts[2], parts[3]), "default_branch": "main", "private": true}),
        );
    }
    if parts.len() == 5 && parts[1] == "repos" && parts[4] == "commits" {
        let shas: std::collections::BTreeSet<&String> = i.refs.values().collect();
        let list: Vec<Value> = shas.into_iter().map(|s| json!({"sha": s})).collect();
        return reply(200, json!(list));
    }
    // ["", "repos", owner, name, "commits", ref, ...]
    if parts.len() < 6 || parts[1] != "repos" || parts[4] != "commits" {
        return reply(404, json!({"message": "Not Found"}));
    }
    // A unique prefix of 7 or more hex digits names its commit, as on GitHub.
    let by_prefix = || {
        let p = &parts[5];
        let hex = p.len() >= 7 && p.bytes().all(|b| b.is_ascii_hexdigit());
        let found: std::collections::BTreeSet<&String> = i
            .refs
            .values()
            .filter(|sha| hex && sha.starts_with(p.as_str()))
            .collect();
        (found.len() == 1).then(|| found.into_iter().next().unwrap().clone())
    };
    let Some(sha) = i.refs.get(&parts[5]).cloned().or_else(by_prefix) else {
        return reply(
            422,
            json!({"message": format!("No commit found for SHA: {}", parts[5])}),
        );
    };
    match parts.get(6).map(String::as_str) {
        None => reply(
            200,
            json!({
                "sha": sha,
                "html_url": format!("https://github.example/acme/shop/commit/{sha}"),
                "commit": {"message": "Fix the thing\n\nmore", "author": {"name": "Ada"}},
                "author": {"login": "ada"}
            }),
        ),
        Some("check-runs") => {
            let runs: Vec<Value> = i
                .runs
                .get(&sha)
                .into_iter()
                .flatten()
                .map(|(n, s, c)| {
                    json!({"name": n, "status": s, "conclusion": c, "html_url": link(&sha, n)})
                })
                .collect();
            reply(200, json!({"total_count": runs.len(), "check_runs": runs}))
        }
        Some("status") => {
            let st: Vec<Value> = i
                .statuses
                .get(&sha)
                .into_iter()
                .flatten()
                .map(|(c, s)| json!({"context": c, "state": s, "target_url": link(&sha, c)}))
                .collect();
            reply(200, json!({"state": "pending", "statuses": st}))
        }
        _ => reply(404, json!({"message": "Not Found"})),
    }
}

pub(super) fn json_reply(status: u16, body: Value) -> Response {
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(body),
    )
        .into_response()
}

/// `POST …/deployments` and `POST …/deployments/{id}/statuses`.
fn deployments(i: &mut Inner, method: &Method, parts: &[String], body: Value) -> Response {
    if method == Method::GET && parts.len() == 5 {
        let list: Vec<Value> = i
            .deployments
            .iter()
            .map(
                |d| json!({"id": d.id, "ref": d.body["ref"], "environment": d.body["environment"]}),
            )
            .collect();
        return json_reply(200, json!(list));
    }
    if method != Method::POST {
        return json_reply(404, json!({"message": "Not Found"}));
    }
    match parts.len() {
        5 => {
            if i.failing_creates > 0 {
                i.failing_creates -= 1;
                return json_reply(i.create_failure, json!({"message": "Server Error"}));
            }
            if body["ref"].as_str().is_none_or(|r| r.len() != 40) {
                return json_reply(422, json!({"message": "ref must be a full SHA here"}));
            }
            let id = 9000 + i.deployments.len() as i64;
            i.deployments.push(GhDeployment {
                id,
                body: body.clone(),
                statuses: Vec::new(),
            });
            json_reply(
                201,
                json!({"id": id, "ref": body["ref"], "environment": body["environment"]}),
            )
        }
        7 if parts[6] == "statuses" => {
            let Some(at) = parts[5]
                .parse::<i64>()
                .ok()
                .and_then(|id| i.deployments.iter().position(|d| d.id == id))
            else {
                return json_reply(404, json!({"message": "Not Found"}));
            };
            let state = body["state"].as_str().unwrap_or_default().to_owned();
            i.deployments[at]
                .statuses
                .push((state.clone(), body.clone()));
            // GitHub: `auto_inactive` (default true) on a success retires the earlier
            // deployments of the environment.
            if state == "success" && body["auto_inactive"].as_bool() != Some(false) {
                let env = i.deployments[at].body["environment"].clone();
                let id = i.deployments[at].id;
                for d in i.deployments.iter_mut() {
                    let retired = d.statuses.last().is_some_and(|s| s.0 == "inactive");
                    if d.id != id && d.body["environment"] == env && !retired {
                        d.statuses
                            .push(("inactive".into(), json!({"state": "inactive"})));
                    }
                }
            }
            json_reply(201, json!({"state": state}))
        }
        _ => json_reply(404, json!({"message": "Not Found"})),
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    while k < b.len() {
        if b[k] == b'%'
            && k + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[k + 1..k + 3], 16)
        {
            out.push(v);
            k += 3;
            continue;
        }
        out.push(b[k]);
        k += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
