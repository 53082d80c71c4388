//! A fake Discord gateway (v10, JSON) on 127.0.0.1: HELLO, IDENTIFY → READY (with a
//! `resume_gateway_url` on this fake), heartbeats and their ACKs, dispatches with sequence
//! numbers, op 7 RECONNECT, RESUME → the missed dispatches and RESUMED, op 9 INVALID
//! SESSION. Dispatches go to the newest session; while it has no connection they wait in
//! its log and are replayed on RESUME, as Discord does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// What the test tells the session's connection to do.
enum Order {
    Send(String),
    Drop,
    /// Stop answering heartbeats (the connection stays open).
    Freeze,
}

#[derive(Default)]
struct SessionLog {
    /// Every dispatch of the session: (seq, frame).
    frames: Vec<(u64, String)>,
    /// The session's connection, while it has one.
    live: Option<mpsc::UnboundedSender<Order>>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionLog>,
    /// The session dispatches go to: the newest identified.
    current: Option<String>,
    /// `d` of each IDENTIFY and RESUME received.
    identifies: Vec<Value>,
    resumes: Vec<Value>,
    /// The path of each connection (`/` from `/gateway/bot`, `/resume` after READY).
    paths: Vec<String>,
    /// interaction id → when it was first dispatched.
    sent: HashMap<String, Instant>,
    heartbeats: usize,
    /// When each session came up (READY or RESUMED sent).
    ups: Vec<Instant>,
}

#[derive(Clone)]
pub struct FakeGateway {
    inner: Arc<Mutex<Inner>>,
    pub port: u16,
}

impl FakeGateway {
    /// Start on a free port in its own thread and runtime; HELLO says beat every `interval_ms`.
    pub fn start(interval_ms: u64) -> FakeGateway {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = inner.clone();
        let (tx, rx) = std::sync::mpsc::channel::<u16>();
        let port = super::serve_on_loopback(move |l| async move {
            let port = rx.recv().unwrap();
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, state.clone(), port, interval_ms));
            }
        });
        tx.send(port).unwrap();
        FakeGateway { inner, port }
    }

    /// What `/gateway/bot` answers (Discord's has no path or query).
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// IDENTIFY payloads received, oldest first.
    pub fn identifies(&self) -> Vec<Value> {
        self.inner.lock().unwrap().identifies.clone()
    }

    /// RESUME payloads received, oldest first.
    pub fn resumes(&self) -> Vec<Value> {
        self.inner.lock().unwrap().resumes.clone()
    }

    /// The path of each connection opened, oldest first.
    pub fn paths(&self) -> Vec<String> {
        self.inner.lock().unwrap().paths.clone()
    }

    pub fn heartbeats(&self) -> usize {
        self.inner.lock().unwrap().heartbeats
    }

    /// Sessions that came up (READY or RESUMED), oldest first.
    pub fn ups(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().ups.clone()
    }

    /// Does the newest session have a connection now?
    pub fn live(&self) -> bool {
        let g = self.inner.lock().unwrap();
        g.current
            .as_ref()
            .and_then(|c| g.sessions.get(c))
            .is_some_and(|s| s.live.is_some())
    }

    /// Sessions with a connection now.
    pub fn live_sessions(&self) -> usize {
        let g = self.inner.lock().unwrap();
        g.sessions.values().filter(|s| s.live.is_some()).count()
    }

    /// Dispatch `INTERACTION_CREATE` with `d` to the newest session.
    pub fn interaction(&self, d: Value) {
        let id = d["id"].as_str().unwrap_or("").to_owned();
        let mut g = self.inner.lock().unwrap();
        g.sent.entry(id).or_insert_with(Instant::now);
        let cur = g.current.clone().expect("no session yet");
        let log = g.sessions.get_mut(&cur).unwrap();
        let seq = log.frames.last().map_or(1, |f| f.0) + 1;
        let frame = json!({"op": 0, "t": "INTERACTION_CREATE", "s": seq, "d": d}).to_string();
        log.frames.push((seq, frame.clone()));
        if let Some(c) = &log.live {
            let _ = c.send(Order::Send(frame));
        }
    }

    /// When the interaction with this id was first dispatched.
    pub fn sent_at(&self, id: &str) -> Option<Instant> {
        self.inner.lock().unwrap().sent.get(id).copied()
    }

    fn order(&self, o: Order) {
        let g = self.inner.lock().unwrap();
        let cur = g.current.as_ref().expect("no session yet");
        if let Some(c) = &g.sessions[cur].live {
            let _ = c.send(o);
        }
    }

    /// op 7 RECONNECT on the newest session's connection.
    pub fn reconnect(&self) {
        self.order(Order::Send(json!({"op": 7, "d": null}).to_string()));
    }

    /// op 9 INVALID SESSION with `d: resumable`.
    pub fn invalid_session(&self, resumable: bool) {
        if !resumable {
            let mut g = self.inner.lock().unwrap();
            let cur = g.current.clone().unwrap();
            // The session is gone: a RESUME of it is refused.
            let live = g.sessions.remove(&cur).and_then(|s| s.live);
            if let Some(c) = live {
                let _ = c.send(Order::Send(json!({"op": 9, "d": false}).to_string()));
            }
            return;
        }
        self.order(Order::Send(json!({"op": 9, "d": true}).to_string()));
    }

    /// Drop the newest session's connection without a word.
    pub fn drop_connection(&self) {
        self.order(Order::Drop);
    }

    /// Stop answering the newest session's heartbeats.
    pub fn freeze(&self) {
        self.order(Order::Freeze);
    }
}

/// An INTERACTION_CREATE's `d` for `/name` with string options from a guild member.
pub fn command(
    id: &str,
    user: &str,
    roles: &[&str],
    name: &str,
    options: &[(&str, &str)],
) -> Value {
    let opts: Vec<Value> = options
        .iter()
        .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
        .collect();
    json!({
        "type": 2, "id": id, "application_id": "424242", "token": format!("itok-{id}-secret"),
        "channel_id": "777", "guild_id": "112233445566778899",
        "member": {"user": {"id": user}, "roles": roles},
        "data": {"name": name, "options": opts},
    })
}

/// An INTERACTION_CREATE's `d` for a click on the button `custom_id`.
pub fn click(id: &str, user: &str, roles: &[&str], custom_id: &str) -> Value {
    json!({
        "type": 3, "id": id, "application_id": "424242", "token": format!("itok-{id}-secret"),
        "channel_id": "777", "guild_id": "112233445566778899",
        "member": {"user": {"id": user}, "roles": roles},
        "data": {"custom_id": custom_id, "component_type": 2},
    })
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(s: tokio::net::TcpStream, state: Arc<Mutex<Inner>>, port: u16, interval: u64) {
    let path = Arc::new(Mutex::new(String::new()));
    let p = path.clone();
    let cb = move |req: &Request, resp: Response| {
        *p.lock().unwrap() = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
        return;
    };
    let path = path.lock().unwrap().clone();
    state.lock().unwrap().paths.push(path);
    let (mut write, mut read) = ws.split();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": interval}});
    if write.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let (tx, mut orders) = mpsc::unbounded_channel();
    let mut session: Option<String> = None;
    let mut frozen = false;
    // The session loses its connection, unless a newer one resumed it meanwhile.
    let end =
        |state: &Arc<Mutex<Inner>>, session: &Option<String>, tx: &mpsc::UnboundedSender<Order>| {
            if let Some(id) = session
                && let Some(s) = state.lock().unwrap().sessions.get_mut(id)
                && s.live.as_ref().is_some_and(|l| l.same_channel(tx))
            {
                s.live = None;
            }
        };
    loop {
        tokio::select! {
            o = orders.recv() => match o {
                Some(Order::Send(t)) => {
                    if write.send(Message::text(t)).await.is_err() {
                        break;
                    }
                }
                Some(Order::Drop) | None => break,
                Some(Order::Freeze) => frozen = true,
            },
            m = read.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let out: Vec<String> = match v["op"].as_u64() {
                    Some(1) => {
                        state.lock().unwrap().heartbeats += 1;
                        if frozen { vec![] } else { vec![json!({"op": 11}).to_string()] }
                    }
                    Some(2) => {
                        let mut g = state.lock().unwrap();
                        g.identifies.push(v["d"].clone());
                        let id = format!("sess-{}", g.identifies.len());
                        let ready = json!({"op": 0, "t": "READY", "s": 1, "d": {
                            "v": 10, "session_id": id,
                            "resume_gateway_url": format!("ws://127.0.0.1:{port}/resume"),
                            "user": {"id": "424242", "username": "deckhand", "bot": true},
                            "application": {"id": "424242", "flags": 0}, "guilds": [],
                        }}).to_string();
                        g.sessions.insert(id.clone(), SessionLog {
                            frames: vec![(1, ready.clone())],
                            live: Some(tx.clone()),
                        });
                        g.current = Some(id.clone());
                        g.ups.push(Instant::now());
                        session = Some(id);
                        vec![ready]
                    }
                    Some(6) => {
                        let mut g = state.lock().unwrap();
                        g.resumes.push(v["d"].clone());
                        let id = v["d"]["session_id"].as_str().unwrap_or("").to_owned();
                        let seq = v["d"]["seq"].as_u64().unwrap_or(0);
                        match g.sessions.get_mut(&id) {
                            Some(s) => {
                                s.live = Some(tx.clone());
                                let mut out: Vec<String> = s.frames.iter()
                                    .filter(|f| f.0 > seq)
                                    .map(|f| f.1.clone())
                                    .collect();
                                let next = s.frames.last().map_or(1, |f| f.0) + 1;
                                let resumed = json!({"op": 0, "t": "RESUMED", "s": next, "d": null}).to_string();
                                s.frames.push((next, resumed.clone()));
                                out.push(resumed);
                                g.ups.push(Instant::now());
                                session = Some(id);
                                out
                            }
                            None => vec![json!({"op": 9, "d": false}).to_string()],
                        }
                    }
                    _ => vec![],
                };
                for t in out {
                    if write.send(Message::text(t)).await.is_err() {
                        end(&state, &session, &tx);
                        return;
                    }
                }
            }
        }
    }
    end(&state, &session, &tx);
}
