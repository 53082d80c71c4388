//! A real Prometheus (Debian's `/usr/bin/prometheus`, installed by
//! `scripts/install-test-deps`), started with its own config and data folder on a loopback
//! port and scraping the given targets every second. Without the binary a test skips with
//! a printed reason; under `CI=true` it fails instead.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const EXE: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Whether a Prometheus can be started here; `false` prints why (and panics under
    /// `CI=true`, where scripts/install-test-deps must have installed it).
    pub fn available() -> bool {
        if !std::path::Path::new(EXE).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but Prometheus is not installed at {EXE}: run scripts/install-test-deps"
                );
            }
            eprintln!(
                "skipped: Prometheus is not installed at {EXE} (apt-get install -y prometheus, or scripts/install-test-deps), so this test does not run"
            );
            return false;
        }
        true
    }

    /// Start one on 127.0.0.1:`port`, scraping each `(job, port)` at `/metrics` every
    /// second, and wait until it is ready. `None`: no Prometheus here (see [`Self::available`]).
    pub async fn start(port: u16, targets: &[(&str, u16)]) -> Option<Prometheus> {
        if !Self::available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, port) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(EXE)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        let p = Prometheus { child, port, dir };
        let ready = format!("{}/-/ready", p.url());
        super::eventually(60, "Prometheus to be ready", || {
            let ready = ready.clone();
            async move {
                reqwest::get(&ready)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        Some(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query's first value, if it has one.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let j: serde_json::Value = r.json().await.ok()?;
        j["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()
            .filter(|v| !v.is_nan())
    }

    /// What it logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
