//! GitHub Actions on the [`GitHub`] client: dispatch a workflow, find the run a dispatch
//! started, read a run and its jobs, cancel a run.
//!
//! Every call is one try: what is worth trying again (no answer, a rate limit, a 5xx) is
//! [`PostError::Again`] with the wait a rate limit asks for, and the caller decides within
//! its own deadline; what will not change (bad credentials, no permission, no such
//! workflow) is [`PostError::Refused`] in words, without URL or token.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::github::{GhError, GitHub, PostError, encode, send_once};

/// A workflow run, as much as following it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: u64,
    /// `queued`, `in_progress`, `waiting`, … then `completed`.
    pub status: String,
    /// Once completed: `success`, `failure`, `cancelled`, `timed_out`, …
    pub conclusion: Option<String>,
    /// The run's page on GitHub.
    pub html_url: String,
}

impl Run {
    pub fn completed(&self) -> bool {
        self.status == "completed"
    }
}

/// One job of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunJob {
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub html_url: Option<String>,
}

impl RunJob {
    /// Completed without success (skipped and neutral jobs did not fail).
    pub fn failed(&self) -> bool {
        self.conclusion
            .as_deref()
            .is_some_and(|c| !matches!(c, "success" | "skipped" | "neutral"))
    }
}

/// What a dispatch answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// 200 with the run's details (`return_run_details`).
    Run { id: u64, html_url: String },
    /// 204: accepted; the run is to be found among the workflow's runs.
    Accepted,
}

/// An answer the caller reads: its status and JSON body (`Null` when empty or unreadable).
type Reply = (u16, Value);

impl GitHub<'_> {
    /// One call: `Again` for no answer, a rate limit, 408 or a 5xx; `Refused` for 401 and
    /// 403; any other answer as it came.
    async fn actions_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, PostError> {
        let mut req = self.request(method, path).await.map_err(|e| match e {
            GhError::RateLimited(w) => PostError::Again {
                after: Some(w),
                reason: e.to_string(),
            },
            GhError::NotFound => PostError::Refused(e.to_string()),
            GhError::Failed(m) => PostError::Again {
                after: None,
                reason: m,
            },
        })?;
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = send_once(req).await?;
        let status = res.status().as_u16();
        match status {
            // An App's token may have been revoked: the next call mints a new one.
            401 if matches!(self.auth, crate::support::github_app::GhAuth::App(_)) => {
                Err(PostError::Again {
                    after: None,
                    reason: self.refused(path).await,
                })
            }
            401 => Err(PostError::Refused(self.refused(path).await)),
            403 => Err(PostError::Refused(
                "GitHub denied access (403): the credentials lack Actions: write; `deckhand github check` says which".into(),
            )),
            408 | 500.. => Err(PostError::Again {
                after: None,
                reason: format!("GitHub answered {status}"),
            }),
            _ => Ok((status, res.json().await.unwrap_or(Value::Null))),
        }
    }

    /// Dispatch `file` of `repo` on `git_ref` with `inputs`, asking for the run's details.
    /// A GitHub that does not know `return_run_details` (an older GitHub Enterprise
    /// Server) is asked again without it.
    pub async fn dispatch_workflow(
        &self,
        repo: &str,
        file: &str,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<Dispatched, PostError> {
        let path = format!(
            "/repos/{repo}/actions/workflows/{}/dispatches",
            encode(file)
        );
        let mut body = json!({"ref": git_ref, "inputs": inputs, "return_run_details": true});
        let (mut status, mut v) = self.actions_call(Method::POST, &path, Some(&body)).await?;
        if status == 422 && message(&v).contains("return_run_details") {
            body.as_object_mut().map(|b| b.remove("return_run_details"));
            (status, v) = self.actions_call(Method::POST, &path, Some(&body)).await?;
        }
        match status {
            200 => Ok(dispatched(&v)),
            204 => Ok(Dispatched::Accepted),
            404 => Err(PostError::Refused(format!(
                "GitHub has no workflow {} in {repo} (404), or the token cannot see it",
                crate::domain::text::shorten(file)
            ))),
            s => Err(refused("the dispatch", s, &v)),
        }
    }

    /// The newest `workflow_dispatch` run of `file` on `git_ref` created at or after
    /// `since_ms`, if GitHub lists one yet.
    pub async fn dispatched_run(
        &self,
        repo: &str,
        file: &str,
        git_ref: &str,
        since_ms: i64,
    ) -> Result<Option<Run>, PostError> {
        let since = chrono::DateTime::from_timestamp_millis(since_ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let path = format!(
            "/repos/{repo}/actions/workflows/{}/runs?event=workflow_dispatch&branch={}&created=%3E%3D{}&per_page=20",
            encode(file),
            // Runs list a branch or tag by its short name.
            encode(
                git_ref
                    .strip_prefix("refs/heads/")
                    .or_else(|| git_ref.strip_prefix("refs/tags/"))
                    .unwrap_or(git_ref)
            ),
            encode(&since)
        );
        match self.actions_call(Method::GET, &path, None).await? {
            (200, v) => Ok(newest_run(&v, since_ms)),
            (s, v) => Err(refused("the list of runs", s, &v)),
        }
    }

    /// Run `id` of `repo` as it stands.
    pub async fn workflow_run(&self, repo: &str, id: u64) -> Result<Run, PostError> {
        match self
            .actions_call(
                Method::GET,
                &format!("/repos/{repo}/actions/runs/{id}"),
                None,
            )
            .await?
        {
            (200, v) => parse_run(&v).ok_or_else(|| PostError::Again {
                after: None,
                reason: "GitHub answered a run without its status".into(),
            }),
            (s, v) => Err(refused(&format!("run {id}"), s, &v)),
        }
    }

    /// The jobs of run `id` (its latest attempt).
    pub async fn run_jobs(&self, repo: &str, id: u64) -> Result<Vec<RunJob>, PostError> {
        let path = format!("/repos/{repo}/actions/runs/{id}/jobs?per_page=100");
        match self.actions_call(Method::GET, &path, None).await? {
            (200, v) => Ok(parse_jobs(&v)),
            (s, v) => Err(refused(&format!("the jobs of run {id}"), s, &v)),
        }
    }

    /// Ask GitHub to cancel run `id`: `true` when it took the request (202), `false` when
    /// the run had already completed (409).
    pub async fn cancel_run(&self, repo: &str, id: u64) -> Result<bool, PostError> {
        let path = format!("/repos/{repo}/actions/runs/{id}/cancel");
        match self.actions_call(Method::POST, &path, None).await? {
            (200..=299, _) => Ok(true),
            (409, _) => Ok(false),
            (s, v) => Err(refused(&format!("cancelling run {id}"), s, &v)),
        }
    }
}

/// GitHub's `message`, cut short, or nothing.
fn message(v: &Value) -> String {
    v["message"]
        .as_str()
        .map(crate::domain::text::shorten)
        .unwrap_or_default()
}

fn refused(what: &str, status: u16, v: &Value) -> PostError {
    let m = message(v);
    PostError::Refused(if status == 404 {
        format!("GitHub does not know {what} (404), or the token cannot see it")
    } else if m.is_empty() {
        format!("GitHub refused {what} ({status})")
    } else {
        format!("GitHub refused {what} ({status}): {m}")
    })
}

/// A 200 to a dispatch: the run's id and page, or (without them) a dispatch to find.
fn dispatched(v: &Value) -> Dispatched {
    match (v["workflow_run_id"].as_u64(), v["html_url"].as_str()) {
        (Some(id), Some(url)) => Dispatched::Run {
            id,
            html_url: url.to_owned(),
        },
        _ => Dispatched::Accepted,
    }
}

pub fn parse_run(v: &Value) -> Option<Run> {
    Some(Run {
        id: v["id"].as_u64()?,
        status: v["status"].as_str()?.to_owned(),
        conclusion: v["conclusion"].as_str().map(str::to_owned),
        html_url: v["html_url"].as_str().unwrap_or_default().to_owned(),
    })
}

pub fn parse_jobs(v: &Value) -> Vec<RunJob> {
    v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| RunJob {
            name: j["name"].as_str().unwrap_or("(unnamed)").to_owned(),
            status: j["status"].as_str().unwrap_or_default().to_owned(),
            conclusion: j["conclusion"].as_str().map(str::to_owned),
            html_url: j["html_url"].as_str().map(str::to_owned),
        })
        .collect()
}

/// Of a list of runs, the newest created at or after `since_ms` (the latest id on a tie).
pub fn newest_run(v: &Value, since_ms: i64) -> Option<Run> {
    v["workflow_runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let created = chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str()?)
                .ok()?
                .timestamp_millis();
            Some((created, parse_run(r)?))
        })
        .filter(|(created, _)| *created >= since_ms)
        .max_by_key(|(created, run)| (*created, run.id))
        .map(|(_, run)| run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_run_since_the_dispatch_is_chosen() {
        let v = json!({"total_count": 3, "workflow_runs": [
            {"id": 7, "status": "completed", "conclusion": "success", "html_url": "https://x/7", "created_at": "2026-12-04T01:00:00Z"},
            {"id": 9, "status": "queued", "conclusion": null, "html_url": "https://x/9", "created_at": "2026-12-04T01:05:02Z"},
            {"id": 8, "status": "queued", "conclusion": null, "html_url": "https://x/8", "created_at": "2026-12-04T01:05:01Z"},
            {"id": 10, "status": "queued", "created_at": "not a time"}
        ]});
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-04T01:05:00Z")
            .unwrap()
            .timestamp_millis();
        let r = newest_run(&v, since).unwrap();
        assert_eq!((r.id, r.completed()), (9, false));
        assert_eq!(newest_run(&v, since + 10_000), None);
        assert_eq!(newest_run(&json!({}), 0), None);
    }

    #[test]
    fn dispatch_answers_and_jobs_are_read() {
        assert_eq!(
            dispatched(
                &json!({"workflow_run_id": 5, "run_url": "https://api/5", "html_url": "https://x/5"})
            ),
            Dispatched::Run {
                id: 5,
                html_url: "https://x/5".into()
            }
        );
        assert_eq!(dispatched(&Value::Null), Dispatched::Accepted);
        let jobs = parse_jobs(&json!({"total_count": 3, "jobs": [
            {"name": "build", "status": "completed", "conclusion": "failure", "html_url": "https://x/j/1"},
            {"name": "lint", "status": "completed", "conclusion": "skipped"},
            {"name": "deploy", "status": "queued", "conclusion": null}
        ]}));
        let failed: Vec<&str> = jobs
            .iter()
            .filter(|j| j.failed())
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(failed, ["build"]);
        assert_eq!(parse_run(&json!({"id": 1})), None);
        assert_eq!(
            message(&json!({"message": "Workflow does not have 'workflow_dispatch' trigger"})),
            "Workflow does not have 'workflow_dispatch' trigger"
        );
    }
}
