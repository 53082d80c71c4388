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
    /// The request body as sent, and its content type (uploads are binary).
    pub raw: Vec<u8>,
    pub content_type: Option<String>,
    /// Files of a multipart body: (file name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// When the fake received it.
    pub at: std::time::Instant,
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
    /// Until this instant every call gets these answers in turn (an outage).
    outage: Option<(std::time::Instant, Vec<Scripted>)>,
    /// Hold the next answer this long (a request in flight when the bot is killed).
    delay_next: Option<std::time::Duration>,
    /// Paths of calls as they arrive, before any delay.
    started: Vec<String>,
    /// Slack messages posted (for conversations.history) and Discord nonces seen.
    posted: Vec<Value>,
    nonces: std::collections::HashMap<String, Value>,
    /// What `apps.connections.open` answers: a fake Socket Mode server's URL.
    socket_url: Option<String>,
    /// What `GET /gateway/bot` answers: a fake gateway's URL.
    gateway_url: Option<String>,
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
        let state = inner.clone();
        let port = super::serve_on_loopback(move |l| async move {
            let app = axum::Router::new().fallback(handle).with_state(state);
            axum::serve(l, app).await.unwrap();
        });
        FakeApi { inner, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next calls with these, in order, then succeed again.
    pub fn fail_next(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// What Deckhand answered privately on the `response_url` of the request with this
    /// trigger (the fake's `/response/TRIGGER`), waiting up to 10 s for it.
    pub async fn told(&self, trigger: &str) -> String {
        let path = format!("/response/{trigger}");
        super::eventually(10, "the ephemeral answer", || async {
            self.calls()
                .into_iter()
                .find(|c| c.path == path)
                .map(|c| c.body["text"].as_str().unwrap_or("").to_owned())
        })
        .await
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

    /// Answer every call for `d` with `answers` in turn, then recover.
    pub fn fail_for(&self, d: std::time::Duration, answers: Vec<Scripted>) {
        self.inner.lock().unwrap().outage = Some((std::time::Instant::now() + d, answers));
    }

    /// Hold the next answer for `d`.
    pub fn delay_next(&self, d: std::time::Duration) {
        self.inner.lock().unwrap().delay_next = Some(d);
    }

    /// Answer `apps.connections.open` with this WebSocket URL.
    pub fn set_socket_url(&self, url: &str) {
        self.inner.lock().unwrap().socket_url = Some(url.to_owned());
    }

    /// Answer `GET /gateway/bot` with this gateway URL.
    pub fn set_gateway_url(&self, url: &str) {
        self.inner.lock().unwrap().gateway_url = Some(url.to_owned());
    }

    /// The interaction callbacks Discord accepted for the interaction `id`.
    pub fn callbacks(&self, id: &str) -> Vec<Call> {
        let prefix = format!("/interactions/{id}/");
        self.calls()
            .into_iter()
            .filter(|c| c.status < 300 && c.path.contains(&prefix) && c.path.ends_with("/callback"))
            .collect()
    }

    /// Paths of calls that arrived, answered or not.
    pub fn calls_started(&self) -> Vec<String> {
        self.inner.lock().unwrap().started.clone()
    }
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parsed, files) = parse_body(content_type.as_deref(), &body);
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let delay = {
        let mut g = state.lock().unwrap();
        g.started.push(path.clone());
        g.delay_next.take()
    };
    let (status, extra, answer) = {
        let mut g = state.lock().unwrap();
        g.counter += 1;
        let n = g.counter;
        let mut scripted = g.script.pop_front();
        if scripted.is_none()
            && let Some((until, answers)) = &g.outage
            && std::time::Instant::now() < *until
            && !answers.is_empty()
        {
            scripted = Some(answers[n as usize % answers.len()].clone());
        }
        let nonce = parsed
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (status, extra, answer) = match scripted {
            Some(s) => (s.status, s.headers, s.body),
            None if path.ends_with("/conversations.history") => {
                let ch = parsed.get("channel").cloned().unwrap_or(Value::Null);
                let msgs: Vec<Value> = g
                    .posted
                    .iter()
                    .filter(|m| m["channel"] == ch)
                    .rev()
                    .cloned()
                    .collect();
                (200, vec![], json!({"ok": true, "messages": msgs}))
            }
            None if path.ends_with("/apps.connections.open") => match &g.socket_url {
                Some(u) => (200, vec![], json!({"ok": true, "url": u})),
                None => (
                    200,
                    vec![],
                    json!({"ok": false, "error": "not_allowed_token_type"}),
                ),
            },
            None if path.ends_with("/gateway/bot") => match &g.gateway_url {
                Some(u) => (
                    200,
                    vec![],
                    json!({"url": u, "shards": 1, "session_start_limit": {
                        "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1,
                    }}),
                ),
                None => (
                    401,
                    vec![],
                    json!({"message": "401: Unauthorized", "code": 0}),
                ),
            },
            // An interaction is answered once; Discord refuses a second callback.
            None if path.ends_with("/callback")
                && g.calls.iter().any(|c| c.path == path && c.status < 300) =>
            {
                (
                    400,
                    vec![],
                    json!({"message": "Interaction has already been acknowledged.", "code": 40060}),
                )
            }
            None if nonce.as_ref().is_some_and(|k| g.nonces.contains_key(k)) => (
                200,
                vec![],
                g.nonces[nonce.as_deref().unwrap_or("")].clone(),
            ),
            None => {
                let a = success(&method, &path, &parsed, n, &host);
                if path.ends_with("/chat.postMessage") {
                    let mut m = json!({"channel": parsed["channel"], "ts": a["ts"]});
                    if let Some(md) = parsed.get("metadata") {
                        m["metadata"] = md.clone();
                    }
                    g.posted.push(m);
                }
                if let Some(k) = &nonce {
                    g.nonces.insert(k.clone(), a.clone());
                }
                (200, vec![], a)
            }
        };
        g.calls.push(Call {
            method: method.to_string(),
            path,
            auth,
            body: parsed,
            status,
            raw: body.to_vec(),
            content_type,
            files,
            at: std::time::Instant::now(),
        });
        (status, extra, answer)
    };
    // Slack has acted on the call already; only its answer is slow (a bot killed now
    // never learns that its message was posted).
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

fn success(method: &Method, path: &str, body: &Value, n: u64, host: &str) -> Value {
    let channel = body.get("channel").cloned().unwrap_or(json!("C0"));
    // Slack's external upload: a URL on this fake to POST the bytes to, then completion.
    if path.ends_with("/files.getUploadURLExternal") {
        return json!({"ok": true, "upload_url": format!("http://{host}/upload/F{n}"), "file_id": format!("F{n}")});
    }
    if path.starts_with("/upload/") {
        return json!({"ok": true});
    }
    if path.ends_with("/files.completeUploadExternal") {
        let files: Value = body
            .get("files")
            .and_then(Value::as_str)
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or(json!([]));
        return json!({"ok": true, "files": files});
    }
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

/// A body as JSON for assertions: form fields as an object, multipart parts by name (files
/// as their name, type and size, with the bytes returned apart), else JSON or text.
fn parse_body(content_type: Option<&str>, body: &[u8]) -> (Value, Vec<(String, Vec<u8>)>) {
    let ct = content_type.unwrap_or("");
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        let map: serde_json::Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k, json!(v))).collect();
        return (Value::Object(map), Vec::new());
    }
    if let Some(boundary) = ct
        .strip_prefix("multipart/form-data")
        .and_then(|r| r.split("boundary=").nth(1))
    {
        let boundary = boundary.trim_matches('"');
        let mut map = serde_json::Map::new();
        let mut files = Vec::new();
        for p in multipart_parts(body, boundary) {
            let value = match &p.filename {
                Some(f) => {
                    files.push((f.clone(), p.data.clone()));
                    json!({"filename": f, "content_type": p.content_type, "size": p.data.len()})
                }
                None => serde_json::from_slice(&p.data)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(&p.data))),
            };
            map.insert(p.name, value);
        }
        return (Value::Object(map), files);
    }
    let parsed =
        serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
    (parsed, Vec::new())
}

/// One part of a multipart body.
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from.min(hay.len())..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut out = Vec::new();
    let mut pos = match find(body, &delim, 0) {
        Some(p) => p + delim.len(),
        None => return out,
    };
    while body[pos..].starts_with(b"\r\n") {
        let start = pos + 2;
        let Some(head_end) = find(body, b"\r\n\r\n", start) else {
            break;
        };
        let head = String::from_utf8_lossy(&body[start..head_end]).into_owned();
        let Some(next) = find(body, &delim, head_end + 4) else {
            break;
        };
        // The part's bytes end before the CRLF that precedes the next delimiter.
        let data = body[head_end + 4..next.saturating_sub(2)].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or("")
            .to_owned();
        let attr = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|a| a.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let part_type = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim())
            })
            .map(str::to_owned);
        out.push(Part {
            name: attr("name").unwrap_or_default(),
            filename: attr("filename"),
            content_type: part_type,
            data,
        });
        pos = next + delim.len();
    }
    out
}
