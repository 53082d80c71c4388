//! GitHub Actions on the fake GitHub, as the REST API documents it: a dispatch of a known
//! workflow (`POST …/actions/workflows/{file}/dispatches`) answers 204, or 200 with
//! `workflow_run_id`, `run_url` and `html_url` when the body asks `return_run_details`
//! (unless the fake plays a GitHub without that); 404 for an unknown workflow, 422 for
//! inputs that are not strings or more than 25. Each dispatch starts a run that goes
//! `queued` → `in_progress` → `completed` over successive `GET …/actions/runs/{id}` (or
//! stays in progress, when held; the next GETs can be made to fail); its jobs (`…/runs/{id}/jobs`) carry `name`, `status`,
//! `conclusion` and `html_url`. `POST …/runs/{id}/cancel` answers 202 and the run ends
//! `cancelled` (409 once completed). The workflow's runs list
//! (`…/workflows/{file}/runs`) filters by `event`, `branch` and `created=>=…`.

use std::collections::{BTreeMap, VecDeque};

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::github::{FakeGitHub, json_reply, percent_decode};

/// How a workflow's runs end: their conclusion and their jobs' (name, conclusion).
#[derive(Debug, Clone, Default)]
struct Outcome {
    conclusion: String,
    jobs: Vec<(String, String)>,
    /// Never completes on its own (until cancelled).
    held: bool,
}

#[derive(Debug, Clone)]
pub struct FakeRun {
    pub id: u64,
    pub file: String,
    pub git_ref: String,
    /// The dispatch's whole body.
    pub body: Value,
    /// Times the run was asked for (`GET …/runs/{id}`).
    pub gets: u32,
    pub cancelled: bool,
    created_at: String,
    outcome: Outcome,
}

impl FakeRun {
    pub fn status(&self) -> &'static str {
        match (self.cancelled, self.gets, self.outcome.held) {
            (true, _, _) => "completed",
            (false, 0 | 1, _) => "queued",
            (false, _, true) | (false, 2, false) => "in_progress",
            _ => "completed",
        }
    }

    fn conclusion(&self) -> Option<String> {
        if self.cancelled {
            return Some("cancelled".into());
        }
        (self.status() == "completed").then(|| self.outcome.conclusion.clone())
    }

    fn html_url(&self) -> String {
        format!("https://github.example/acme/shop/actions/runs/{}", self.id)
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.file, "path": format!(".github/workflows/{}", self.file),
            "event": "workflow_dispatch", "head_branch": self.git_ref,
            "status": self.status(), "conclusion": self.conclusion(),
            "created_at": self.created_at, "html_url": self.html_url(),
        })
    }

    fn jobs(&self) -> Value {
        let jobs: Vec<Value> = self
            .outcome
            .jobs
            .iter()
            .enumerate()
            .map(|(k, (name, conclusion))| {
                let (status, conclusion) = match (self.status(), self.cancelled) {
                    ("completed", true) => ("completed", Some("cancelled".to_owned())),
                    ("completed", false) => ("completed", Some(conclusion.clone())),
                    (s, _) => (s, None),
                };
                json!({
                    "id": self.id * 100 + k as u64, "run_id": self.id, "name": name,
                    "status": status, "conclusion": conclusion,
                    "html_url": format!("{}/job/{}", self.html_url(), self.id * 100 + k as u64),
                })
            })
            .collect();
        json!({"total_count": jobs.len(), "jobs": jobs})
    }
}

#[derive(Default)]
pub struct Actions {
    /// Workflow file → how its runs end.
    workflows: BTreeMap<String, Outcome>,
    runs: Vec<FakeRun>,
    /// Run ids asked to cancel, in order.
    cancels: Vec<u64>,
    /// Play a GitHub without `return_run_details`: every dispatch answers 204.
    no_run_details: bool,
    /// Statuses to answer the next GETs of a run with, in turn (502: a GitHub blip).
    failing_gets: VecDeque<u16>,
}

impl FakeGitHub {
    /// Workflow `file` exists; its runs end with `conclusion` and these jobs' conclusions.
    pub fn workflow_outcome(&self, file: &str, conclusion: &str, jobs: &[(&str, &str)]) {
        let outcome = Outcome {
            conclusion: conclusion.into(),
            jobs: jobs
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            held: false,
        };
        self.actions(|a| a.workflows.insert(file.into(), outcome));
    }

    /// Workflow `file` exists; its runs stay in progress until cancelled.
    pub fn workflow_held(&self, file: &str, jobs: &[&str]) {
        let outcome = Outcome {
            conclusion: "success".into(),
            jobs: jobs
                .iter()
                .map(|n| (n.to_string(), "success".into()))
                .collect(),
            held: true,
        };
        self.actions(|a| a.workflows.insert(file.into(), outcome));
    }

    /// Answer dispatches 204 even when they ask for the run's details (`false`: 200 again).
    pub fn without_run_details(&self, without: bool) {
        self.actions(|a| a.no_run_details = without);
    }

    /// The next GETs of a run answer these statuses, in turn.
    pub fn fail_run_gets(&self, statuses: &[u16]) {
        self.actions(|a| a.failing_gets.extend(statuses));
    }

    /// The runs dispatched so far, in order.
    pub fn workflow_runs(&self) -> Vec<FakeRun> {
        self.actions(|a| a.runs.clone())
    }

    /// The run ids asked to cancel, in order.
    pub fn cancels(&self) -> Vec<u64> {
        self.actions(|a| a.cancels.clone())
    }

    fn actions<T>(&self, f: impl FnOnce(&mut Actions) -> T) -> T {
        f(&mut self.inner.lock().unwrap().actions)
    }
}

/// The answer to an Actions call (`parts`: the path's decoded segments), or `None` for
/// another route.
pub(super) fn respond(
    a: &mut Actions,
    method: &Method,
    parts: &[String],
    query: Option<&str>,
    body: Option<&Value>,
) -> Option<Response> {
    // ["", "repos", owner, name, "actions", …]
    if parts.len() < 6 || parts[1] != "repos" || parts[4] != "actions" {
        return None;
    }
    if parts.len() == 6 && parts[5] == "workflows" && method == Method::GET {
        return Some(json_reply(
            200,
            json!({"total_count": 1, "workflows": [{"id": 1, "name": "Deploy", "path": ".github/workflows/deploy.yml", "state": "active"}]}),
        ));
    }
    let rest: Vec<&str> = parts[5..].iter().map(String::as_str).collect();
    Some(match (method.as_str(), rest.as_slice()) {
        ("POST", ["workflows", file, "dispatches"]) => dispatch(a, file, body),
        ("GET", ["workflows", file, "runs"]) => list(a, file, query.unwrap_or_default()),
        ("GET", ["runs", _]) if !a.failing_gets.is_empty() => {
            let status = a.failing_gets.pop_front().unwrap_or(502);
            json_reply(status, json!({"message": "Server Error"}))
        }
        ("GET", ["runs", id]) => match run_mut(a, id) {
            Some(r) => {
                r.gets += 1;
                json_reply(200, r.json())
            }
            None => not_found(),
        },
        ("GET", ["runs", id, "jobs"]) => match run_mut(a, id) {
            Some(r) => json_reply(200, r.jobs()),
            None => not_found(),
        },
        ("POST", ["runs", id, "cancel"]) => match run_mut(a, id) {
            Some(r) if r.status() == "completed" => json_reply(
                409,
                json!({"message": "Cannot cancel a workflow run that is completed."}),
            ),
            Some(r) => {
                r.cancelled = true;
                let id = r.id;
                a.cancels.push(id);
                json_reply(202, json!({}))
            }
            None => not_found(),
        },
        _ => not_found(),
    })
}

fn not_found() -> Response {
    json_reply(404, json!({"message": "Not Found"}))
}

fn run_mut<'a>(a: &'a mut Actions, id: &str) -> Option<&'a mut FakeRun> {
    let id: u64 = id.parse().ok()?;
    a.runs.iter_mut().find(|r| r.id == id)
}

fn dispatch(a: &mut Actions, file: &str, body: Option<&Value>) -> Response {
    let Some(outcome) = a.workflows.get(file).cloned() else {
        return not_found();
    };
    let body = body.cloned().unwrap_or(Value::Null);
    let Some(git_ref) = body["ref"].as_str().map(str::to_owned) else {
        return json_reply(
            422,
            json!({"message": "Invalid request: \"ref\" wasn't supplied."}),
        );
    };
    let inputs = body["inputs"].as_object().cloned().unwrap_or_default();
    if inputs.len() > 25 || inputs.values().any(|v| !v.is_string()) {
        return json_reply(
            422,
            json!({"message": "Invalid request: inputs must be at most 25 strings."}),
        );
    }
    let id = 7000 + a.runs.len() as u64;
    let run = FakeRun {
        id,
        file: file.into(),
        git_ref,
        body: body.clone(),
        gets: 0,
        cancelled: false,
        created_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        outcome,
    };
    let details = json!({
        "workflow_run_id": id,
        "run_url": format!("https://api.github.example/repos/acme/shop/actions/runs/{id}"),
        "html_url": run.html_url(),
    });
    a.runs.push(run);
    if body["return_run_details"] == true && !a.no_run_details {
        json_reply(200, details)
    } else {
        axum::http::StatusCode::NO_CONTENT.into_response()
    }
}

/// `?event=…&branch=…&created=>=…`: the workflow's runs that match, newest first.
fn list(a: &Actions, file: &str, query: &str) -> Response {
    let q: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let since = q
        .get("created")
        .and_then(|c| c.strip_prefix(">="))
        .unwrap_or("");
    let mut runs: Vec<Value> = a
        .runs
        .iter()
        .filter(|r| r.file == file)
        .filter(|r| q.get("branch").is_none_or(|b| *b == r.git_ref))
        .filter(|_| q.get("event").is_none_or(|e| e == "workflow_dispatch"))
        .filter(|r| r.created_at.as_str() >= since)
        .map(FakeRun::json)
        .collect();
    runs.reverse();
    json_reply(
        200,
        json!({"total_count": runs.len(), "workflow_runs": runs}),
    )
}
