//! A fake chat API on 127.0.0.1: records every request and answers like Slack's Web API
//! or Discord's REST API — or with scripted failures (429 with Retry-After, 500).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
}

/// A scripted answer: status, extra headers, JSON body.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Scripted {
    pub fn slack_429(retry_after_secs: u64) -> Self {
        Scripted {
            status: 429,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            body: json!({"ok": false, "error": "ratelimited"}),
        }
    }
    pub fn discord_429(retry_after: f64) -> Self {
        Scripted {
            status: 429,
            headers: vec![("retry-after".into(), retry_after.ceil().to_string())],
            body: json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}),
        }
    }
    pub fn status(code: u16) -> Self {
        Scripted {
            status: code,
            headers: vec![],
            body: json!({"ok": false, "error": "internal_error"}),
        }
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    script: VecDeque<Scripted>,
    counter: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    pub port: u16,
}

impl FakeApi {
    /// Start on a free port in its own thread and runtime.
    pub fn start() -> FakeApi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap().port()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(l, app).await.unwrap();
            });
        });
        let port = rx.recv().unwrap();
        FakeApi { inner, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next calls with these, in order, then succeed again.
    pub fn fail_next(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Successful calls whose path ends with `suffix`.
    pub fn ok_calls(&self, suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.status < 300 && c.path.ends_with(suffix))
            .collect()
    }

    pub fn pending_script(&self) -> usize {
        self.inner.lock().unwrap().script.len()
    }
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let mut g = state.lock().unwrap();
    g.counter += 1;
    let n = g.counter;
    let scripted = g.script.pop_front();
    let (status, extra, answer) = match scripted {
        Some(s) => (s.status, s.headers, s.body),
        None => (200, vec![], success(&method, &path, &parsed, n)),
    };
    g.calls.push(Call {
        method: method.to_string(),
        path,
        auth,
        body: parsed,
        status,
    });
    drop(g);
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

fn success(method: &Method, path: &str, body: &Value, n: u64) -> Value {
    let channel = body.get("channel").cloned().unwrap_or(json!("C0"));
    if path.ends_with("/chat.postMessage") || path.ends_with("/chat.update") {
        let ts = body
            .get("ts")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("1700000000.{n:06}"));
        return json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts}});
    }
    if path.contains("/channels/") && path.ends_with("/messages") && method == Method::POST {
        return json!({"id": format!("9{n:017}"), "channel_id": path.split('/').nth(4).unwrap_or("0")});
    }
    if path.contains("/commands") {
        return body.clone();
    }
    json!({"ok": true, "id": format!("9{n:017}")})
}
