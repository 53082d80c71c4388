//! The drain benchmark, as graphile-worker's own perf test runs it: N no-op jobs enqueued
//! first, then drained by W workers; jobs per second from the first claim to the last
//! finish. Deckhand's workers claim up to [`CLAIM`] jobs per statement and end each
//! claim's jobs in one transaction. graphile-worker runs in the same run on the same
//! PostgreSQL server when `node` and `npm` are there (installed into a temporary folder from
//! the npm registry), through `benches/support/graphile-drain.mjs`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deckhand::app::App;

use super::{Db, app, job, workspace};
use deckhand::store::Write;
use deckhand::store::jobs::{NewJob, state, transition};
use std::fmt::Write as _;

/// Jobs one worker claims per statement.
pub const CLAIM: usize = 16;

/// Enqueue `n` no-op jobs (500 per transaction; not timed), then drain them with
/// `workers` workers: jobs/s.
pub async fn deckhand(app: &Arc<App>, n: usize, workers: usize, job: fn(usize) -> NewJob) -> f64 {
    let none: &deckhand::store::jobs::Extra = &|_, _| Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let jobs: Vec<NewJob> = chunk.iter().map(|&i| job(i)).collect();
        let batch: Vec<(&NewJob, &deckhand::store::jobs::Extra)> =
            jobs.iter().map(|j| (j, none)).collect();
        app.db.enqueue_batch(&batch).await.unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let mut ws = Vec::new();
    for w in 0..workers {
        let (app, done) = (app.clone(), done.clone());
        ws.push(tokio::spawn(async move {
            let owner = format!("drain-{w}");
            while done.load(Ordering::Relaxed) < n {
                let jobs = app.db.claim_batch(&owner, 30_000, CLAIM).await.unwrap();
                if jobs.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                // Each claim's ends in one transaction. (Ending them in one statement
                // through the group commit, `transitions` via `app.intake`, measured slower
                // here: 5,913 jobs/s on SQLite and 988 on PostgreSQL at W=1, against 8,922
                // and 2,820 this way; to be profiled before the bench switches.)
                let finish: Vec<Write> = jobs
                    .iter()
                    .map(|j| {
                        transition(
                            j.id,
                            &[state::RUNNING],
                            state::SUCCEEDED,
                            None,
                            Some(&owner),
                        )
                    })
                    .collect();
                app.db.apply(&finish).await.unwrap();
                done.fetch_add(jobs.len(), Ordering::Relaxed);
            }
        }));
    }
    for w in ws {
        w.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// graphile-worker installed into a temporary folder, or why not.
pub struct Graphile {
    dir: tempfile::TempDir,
    pub version: String,
}

impl Graphile {
    pub fn install() -> Result<Graphile, String> {
        let have = |c: &str| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("node") || !have("npm") {
            return Err("node or npm is not installed".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .arg("graphile-worker@0.16")
            .current_dir(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "npm install graphile-worker failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let manifest = dir.path().join("node_modules/graphile-worker/package.json");
        let version = std::fs::read_to_string(manifest)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/graphile-drain.mjs");
        std::fs::copy(script, dir.path().join("drain.mjs")).map_err(|e| e.to_string())?;
        Ok(Graphile { dir, version })
    }

    /// One drain of `n` jobs with `concurrency` on the (empty) database at `url`: jobs/s.
    pub fn drain(&self, url: &str, n: usize, concurrency: usize) -> Result<f64, String> {
        let out = Command::new("node")
            .arg("drain.mjs")
            .arg(n.to_string())
            .arg(concurrency.to_string())
            .env("PERF_DATABASE_URL", url)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|_| {
            format!(
                "graphile-worker: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        v["jobs_per_sec"]
            .as_f64()
            .ok_or_else(|| format!("graphile-worker printed {text}"))
    }
}

/// N jobs per drain, as graphile-worker's perf test.
const DRAIN_JOBS: usize = 20_000;

/// The drain figures, one line per backend and worker count, with graphile-worker's beside
/// PostgreSQL's when node and npm are available; the Markdown table.
pub async fn section() -> String {
    let mut rows = String::new();
    let graphile = Graphile::install();
    if let Err(why) = &graphile {
        println!("drain graphile-worker: skipped ({why})");
    }
    for w in [1usize, 4, 24] {
        let db = Db::sqlite();
        let dir = workspace("");
        let a = app(dir.path(), &db.url, "full").await;
        let jps = deckhand(&a, DRAIN_JOBS, w, job).await;
        a.db.close().await;
        let name = "SQLite (synchronous=full)";
        println!("drain {name:<28} workers {w:>2} jobs {DRAIN_JOBS} → {jps:.0} jobs/s");
        let _ = writeln!(rows, "| {name} | {w} | {jps:.0} | | |");
    }
    for w in [1usize, 4, 24] {
        let Some(db) = Db::postgres() else {
            println!("drain PostgreSQL: skipped (DECKHAND_TEST_POSTGRES_URL is not set)");
            break;
        };
        let dir = workspace("");
        let a = app(dir.path(), &db.url, "full").await;
        let jps = deckhand(&a, DRAIN_JOBS, w, job).await;
        a.db.close().await;
        drop(db);
        let name = "PostgreSQL";
        println!("drain {name:<28} workers {w:>2} jobs {DRAIN_JOBS} → {jps:.0} jobs/s");
        let theirs = match &graphile {
            Ok(g) => {
                let db = Db::postgres().unwrap();
                match g.drain(&db.url, DRAIN_JOBS, w) {
                    Ok(t) => {
                        println!(
                            "drain {:<28} workers {w:>2} jobs {DRAIN_JOBS} → {t:.0} jobs/s (Deckhand/graphile-worker {:.2}×)",
                            format!("graphile-worker {} (PostgreSQL)", g.version),
                            jps / t
                        );
                        Some(t)
                    }
                    Err(e) => {
                        println!("drain graphile-worker workers {w}: failed ({e})");
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let (t, ratio) = theirs.map_or(("–".into(), "–".into()), |t| {
            (format!("{t:.0}"), format!("{:.2}×", jps / t))
        });
        let _ = writeln!(rows, "| {name} | {w} | {jps:.0} | {t} | {ratio} |");
    }
    let version = graphile
        .as_ref()
        .map_or("not run".to_owned(), |g| g.version.clone());
    format!(
        "## Drain: {DRAIN_JOBS} no-op jobs enqueued first, then drained by W workers (graphile-worker {version} in the same run, same server)\n\n\
         | backend | W | Deckhand jobs/s | graphile-worker jobs/s | ratio |\n|---|---|---|---|---|\n{rows}"
    )
}
