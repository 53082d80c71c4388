//! A fake Slack Socket Mode server on 127.0.0.1: each connection gets `hello`; the test
//! sends envelopes to the newest connection, asks it to `disconnect`, or drops it, and
//! reads back the acknowledgements with the time they took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the test tells a connection to do.
enum Order {
    Send(String),
    Drop,
    /// Keep the connection open but stop reading it: pings go unanswered.
    Freeze,
}

#[derive(Default)]
struct Inner {
    /// One sender per connection that got `hello`, oldest first.
    conns: Vec<mpsc::UnboundedSender<Order>>,
    /// envelope_id → when it was sent.
    sent: HashMap<String, Instant>,
    /// envelope_id → (the acknowledgement, how long after sending it came).
    acks: HashMap<String, (Value, Duration)>,
    /// envelope_id → the connection (index in `conns`) that acknowledged it first.
    acked_on: HashMap<String, usize>,
    /// Connections the client closed (a Close frame or end of stream).
    closed_by_client: usize,
}

#[derive(Clone)]
pub struct FakeSocket {
    inner: Arc<Mutex<Inner>>,
    pub port: u16,
}

impl FakeSocket {
    /// Start on a free port in its own thread and runtime.
    pub fn start() -> FakeSocket {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = inner.clone();
        let port = super::serve_on_loopback(move |l| async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, state.clone()));
            }
        });
        FakeSocket { inner, port }
    }

    /// The URL `apps.connections.open` hands out (with a ticket, as Slack's has).
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/link/?ticket=t-1234", self.port)
    }

    /// Connections that got `hello` so far.
    pub fn connections(&self) -> usize {
        self.inner.lock().unwrap().conns.len()
    }

    /// Connections the bot closed itself.
    pub fn closed_by_client(&self) -> usize {
        self.inner.lock().unwrap().closed_by_client
    }

    /// Send an envelope to the newest connection (the id is its `envelope_id`).
    pub fn send(&self, envelope: Value) {
        let n = self
            .connections()
            .checked_sub(1)
            .expect("no connection yet");
        assert!(self.send_to(n, envelope), "the newest connection is gone");
    }

    /// Send an envelope to connection `n` (0 is the first that got `hello`), as Slack
    /// spreads envelopes over an app's connections; `false` when that one is gone.
    pub fn send_to(&self, n: usize, envelope: Value) -> bool {
        let id = envelope["envelope_id"].as_str().unwrap_or("").to_owned();
        let mut g = self.inner.lock().unwrap();
        g.sent.entry(id).or_insert_with(Instant::now);
        g.conns[n].send(Order::Send(envelope.to_string())).is_ok()
    }

    /// The connections still open, oldest first (indices as for [`send_to`](Self::send_to)).
    pub fn live(&self) -> Vec<usize> {
        let g = self.inner.lock().unwrap();
        (0..g.conns.len())
            .filter(|&i| !g.conns[i].is_closed())
            .collect()
    }

    /// Drop connection `n` without a word.
    pub fn drop_nth(&self, n: usize) {
        let _ = self.inner.lock().unwrap().conns[n].send(Order::Drop);
    }

    /// The connection that acknowledged `envelope_id` first, if one did.
    pub fn acked_on(&self, envelope_id: &str) -> Option<usize> {
        self.inner
            .lock()
            .unwrap()
            .acked_on
            .get(envelope_id)
            .copied()
    }

    /// Ask the newest connection to go, as Slack does before it rotates a socket.
    pub fn disconnect(&self, reason: &str) {
        let g = self.inner.lock().unwrap();
        let e = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}});
        let _ = g.conns.last().unwrap().send(Order::Send(e.to_string()));
    }

    /// Drop the newest connection without a word.
    pub fn drop_connection(&self) {
        let g = self.inner.lock().unwrap();
        let _ = g.conns.last().unwrap().send(Order::Drop);
    }

    /// Make the newest connection go silent (open, but never answering a ping).
    pub fn freeze(&self) {
        let g = self.inner.lock().unwrap();
        let _ = g.conns.last().unwrap().send(Order::Freeze);
    }

    /// The acknowledgement of `envelope_id`, if it came.
    pub fn ack(&self, envelope_id: &str) -> Option<(Value, Duration)> {
        self.inner.lock().unwrap().acks.get(envelope_id).cloned()
    }
}

/// A slash command envelope as Socket Mode delivers it.
pub fn slash_envelope(id: &str, retry: u32, user: &str, text: &str, trigger: &str) -> Value {
    let (cmd, rest) = text.split_once(' ').unwrap_or((text, ""));
    json!({
        "envelope_id": id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "retry_attempt": retry,
        "retry_reason": if retry > 0 { "timeout" } else { "" },
        "payload": {
            "token": "legacy", "team_id": "T1", "team_domain": "t", "api_app_id": "A0APP",
            "channel_id": "CDEPLOYS", "channel_name": "deploys", "user_id": user,
            "command": format!("/{cmd}"), "text": rest, "trigger_id": trigger,
            "response_url": "https://hooks.slack.invalid/commands/1",
            "is_enterprise_install": "false",
        },
    })
}

/// A block_actions envelope for a click carrying `payload` (see `chat::click`).
pub fn interactive_envelope(id: &str, payload: Value) -> Value {
    json!({
        "envelope_id": id,
        "type": "interactive",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": payload,
    })
}

async fn serve(s: tokio::net::TcpStream, state: Arc<Mutex<Inner>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
        return;
    };
    let (mut write, mut read) = ws.split();
    let (tx, mut orders) = mpsc::unbounded_channel();
    let hello =
        json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"}});
    if write.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let me = {
        let mut g = state.lock().unwrap();
        g.conns.push(tx);
        g.conns.len() - 1
    };
    loop {
        tokio::select! {
            o = orders.recv() => match o {
                Some(Order::Send(t)) => {
                    if write.send(Message::text(t)).await.is_err() {
                        return;
                    }
                }
                Some(Order::Drop) | None => return,
                Some(Order::Freeze) => {
                    // Holding both halves keeps the TCP connection open.
                    std::future::pending::<()>().await;
                }
            },
            m = read.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(id) = v["envelope_id"].as_str() {
                        let mut g = state.lock().unwrap();
                        let took = g.sent.get(id).map(|t| t.elapsed()).unwrap_or_default();
                        g.acks.entry(id.to_owned()).or_insert((v.clone(), took));
                        g.acked_on.entry(id.to_owned()).or_insert(me);
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    state.lock().unwrap().closed_by_client += 1;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return,
            },
        }
    }
}
