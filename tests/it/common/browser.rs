//! Headless Chromium driven over the DevTools protocol (a WebSocket, with the
//! tokio-tungstenite the crate already uses): navigate, read the DOM, evaluate, take
//! screenshots, and collect console errors, exceptions, CSP violations and dialogs.
//!
//! Without Chromium the browser tests skip with a printed reason; under `CI=true` they fail
//! (`.ci/run` installs it with `scripts/install-test-deps`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Where Debian's package puts it (`apt-get install -y chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium, or `None` (with the reason printed) when it is not installed.
    pub fn launch() -> Option<Browser> {
        let exe = std::env::var("DECKHAND_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        if !Path::new(&exe).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but Chromium is not installed at {exe}: run scripts/install-test-deps"
                );
            }
            eprintln!(
                "skipped: Chromium is not installed at {exe} (apt-get install -y chromium, or scripts/install-test-deps), so this browser test does not run"
            );
            return None;
        }
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(&exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it chose here once it listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Browser {
            child,
            port,
            _profile: profile,
        })
    }

    /// The first page target, connected, with Page, Runtime and Log events on.
    pub async fn tab(&self) -> Tab {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ws_url = loop {
            let list = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(list) = list
                && let Ok(Value::Array(targets)) = list.await
                && let Some(u) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break u.to_owned();
            }
            assert!(Instant::now() < deadline, "no Chromium page target");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("connect to the DevTools page");
        let mut t = Tab {
            ws,
            next: 0,
            problems: Vec::new(),
            dialogs: Vec::new(),
        };
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            t.call(m, json!({})).await;
        }
        t.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        t
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Tab {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    /// Console errors, uncaught exceptions and error log entries (CSP violations are these).
    pub problems: Vec<String>,
    /// Messages of JavaScript dialogs (`alert(…)`) that opened.
    pub dialogs: Vec<String>,
}

impl Tab {
    /// Call a DevTools method and return its result (panics on a protocol error).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("DevTools socket open")
                .unwrap();
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v).await;
        }
    }

    /// Note what matters of an event.
    async fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
                self.problems
                    .push(format!("console.{}: {}", p["type"], p["args"]));
            }
            "Runtime.exceptionThrown" => {
                self.problems
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                // Chromium asks every page for /favicon.ico; the pages have none (404).
                if !e["url"].as_str().unwrap_or("").ends_with("/favicon.ico") {
                    self.problems
                        .push(format!("log: {} {}", e["text"], e["url"]));
                }
            }
            "Page.javascriptDialogOpening" => {
                self.dialogs
                    .push(p["message"].as_str().unwrap_or("").to_owned());
                // Dismiss it, or the page hangs.
                self.next += 1;
                let msg = json!({"id": self.next, "method": "Page.handleJavaScriptDialog", "params": {"accept": true}});
                let _ = self.ws.send(Message::Text(msg.to_string().into())).await;
            }
            _ => {}
        }
    }

    /// Evaluate `expr` in the page and return its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Open `url` and wait until the document has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'", 20)
            .await;
    }

    /// Wait until `expr` is true in the page (polled), at most `secs` seconds.
    pub async fn wait_for(&mut self, expr: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(&format!("!!({expr})")).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.text().await;
                panic!("timed out after {secs} s waiting for {expr}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's visible text.
    pub async fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Let pending events in (console errors after load), for up to `ms`.
    pub async fn settle(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout_at(deadline, self.ws.next()).await
        {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                self.event(&v).await;
            }
        }
    }

    /// A PNG of the page, written under `target/ui-screenshots/NAME.png`; returns the path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shoot(
            name,
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await
    }

    /// A PNG of the page's top-left `width` × `height` pixels at `scale` (a smaller picture,
    /// e.g. for the README), written like [`Tab::screenshot`].
    pub async fn screenshot_clip(
        &mut self,
        name: &str,
        width: u32,
        height: u32,
        scale: f64,
    ) -> PathBuf {
        let clip = json!({"x": 0, "y": 0, "width": width, "height": height, "scale": scale});
        self.shoot(name, json!({"format": "png", "clip": clip}))
            .await
    }

    async fn shoot(&mut self, name: &str, params: Value) -> PathBuf {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", params).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}
