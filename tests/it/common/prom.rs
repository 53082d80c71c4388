//! A fake Prometheus query API on 127.0.0.1 (`GET /api/v1/query?query=…`, answered as
//! Prometheus does): each query answers its scripted value, an empty vector, a query error
//! or a hang; every call is recorded with its query and `Authorization` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub enum Answer {
    Value(f64),
    Empty,
    Error,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
pub struct PromCall {
    pub query: String,
    pub auth: Option<String>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<String, Answer>,
    calls: Vec<PromCall>,
}

pub struct FakeProm {
    inner: Arc<Mutex<Inner>>,
    pub port: u16,
}

impl FakeProm {
    pub fn start() -> FakeProm {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = inner.clone();
        let port = super::serve_on_loopback(move |l| async move {
            let app = axum::Router::new()
                .route("/api/v1/query", axum::routing::get(query))
                .with_state(state);
            axum::serve(l, app).await.unwrap();
        });
        FakeProm { inner, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `query` answers from now on (unscripted queries answer an empty result).
    pub fn set(&self, query: &str, a: Answer) {
        self.inner
            .lock()
            .unwrap()
            .answers
            .insert(query.to_owned(), a);
    }

    pub fn calls(&self) -> Vec<PromCall> {
        self.inner.lock().unwrap().calls.clone()
    }
}

async fn query(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query = q.get("query").cloned().unwrap_or_default();
    let answer = {
        let mut i = inner.lock().unwrap();
        i.calls.push(PromCall {
            query: query.clone(),
            auth: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        i.answers.get(&query).cloned().unwrap_or(Answer::Empty)
    };
    let now = super::chat::now() as f64;
    match answer {
        Answer::Value(v) => {
            axum::Json(json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [now, v.to_string()]}]}}))
            .into_response()
        }
        Answer::Empty => {
            axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
                .into_response()
        }
        Answer::Error => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "error", "errorType": "bad_data",
                "error": "1:1: parse error: unexpected end of input"})),
        )
            .into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
