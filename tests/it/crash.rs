//! `kill -9` of a running `deckhand serve` in the middle of a job, with real processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use deckhand::app::App;

use crate::common::*;
use deckhand::store::jobs::state;

/// A deploy that takes its time.
fn slow() -> String {
    format!(
        "{}timeout_seconds = 120\n",
        deploy_command(
            "slow",
            "everyone",
            r#"["sh", "-c", "echo pid=$$; sleep 60"]"#
        )
    )
}

async fn kill_during_deploy(b: Backend) {
    let Some(w) = Workspace::new(b, "[environments.qa]\n", &[("slow.toml", &slow())]) else {
        return;
    };
    let mut server = Server::start(&w, &[]);
    let app = w.app(&[]).await;
    // The operator submits through the running server and follows in a terminal.
    let mut follower = w
        .cmd(&["run", "slow", "qa", "v1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = eventually(20, "the job to run", || async {
        app.db
            .recent_jobs(1)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.state == state::RUNNING)
    })
    .await;
    let step_pid: i32 = eventually(20, "the step to start", || async {
        let log = app.db.job_log(job.id, 0).await.unwrap();
        log.iter()
            .find_map(|l| l.line.strip_prefix("pid=").and_then(|p| p.parse().ok()))
    })
    .await;
    // Kill between notices, not in the middle of one: a notice claimed by the killed process
    // stays claimed for 20 s (so no other replica posts it twice), which is not what this
    // test is about (the fault suite covers it).
    eventually(20, "the notices so far delivered", || async {
        let rows = app.db.job_notices(job.id, "terminal", 0).await.unwrap();
        (!rows.is_empty() && rows.iter().all(|r| r.delivered_at.is_some())).then_some(())
    })
    .await;

    server.kill9();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        !process_dead(step_pid),
        "the step should outlive a kill -9 of the server"
    );

    let restarted = Server::start(&w, &[]);
    let j = eventually(30, "the job to be reported interrupted", || async {
        app.db
            .job(job.id)
            .await
            .unwrap()
            .filter(|j| j.state != state::RUNNING)
    })
    .await;
    assert_eq!(j.state, state::INTERRUPTED);
    assert_eq!(j.attempts, 1, "not idempotent: never re-run");
    let rows = eventually(20, "the interrupted notice to be delivered", || async {
        let rows = app.db.job_notices(job.id, "terminal", 0).await.unwrap();
        let last = rows.last()?.clone();
        (last.delivered_at.is_some() && last.body.contains("job_interrupted")).then_some(rows)
    })
    .await;
    assert!(rows.last().unwrap().body.contains("was interrupted"));
    // The restarted server printed it on its terminal, and stopped the orphaned step.
    eventually(10, "the notice on the server's stdout", || async {
        restarted
            .output()
            .contains(&format!("slow on qa (job {}) was interrupted", job.id))
            .then_some(())
    })
    .await;
    eventually(10, "the orphaned step to be stopped", || async {
        process_dead(step_pid).then_some(())
    })
    .await;
    // Nothing ran twice.
    let log = app.db.job_log(job.id, 0).await.unwrap();
    assert_eq!(log.iter().filter(|l| l.line.starts_with("pid=")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_deploy_sqlite() {
    kill_during_deploy(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_deploy_postgres() {
    kill_during_deploy(Backend::Postgres).await
}

/// A deploy whose step appends `VERSION start NANOS PGID` to `life` when it begins; v1 then
/// ignores SIGTERM (its `sleep` inherits that) and runs long, like a step that does not
/// stop when asked; other versions end at once.
fn lifetimes_command(life: &std::path::Path, timeout_seconds: u64) -> String {
    let script = format!(
        "echo \"$DECKHAND_VERSION start $(date +%s%N) $$\" >> {life}; echo pid=$$; \
         if [ \"$DECKHAND_VERSION\" = v1 ]; then trap '' TERM; sleep 120; fi",
        life = life.display()
    );
    format!(
        "{}timeout_seconds = {timeout_seconds}\n",
        deploy_command(
            "life",
            "everyone",
            &format!(
                r#"["sh", "-c", {}]"#,
                serde_json::to_string(&script).unwrap()
            )
        )
    )
}

/// When each version's step started (ns since the epoch) and its process group.
fn starts(life: &std::path::Path) -> std::collections::BTreeMap<String, (u128, i32)> {
    std::fs::read_to_string(life)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f[0].to_owned(), (f[2].parse().ok()?, f[3].parse().ok()?)))
        })
        .collect()
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Is process group `pgid` still there? Gone means `kill(-pgid, 0)` fails with ESRCH: every
/// member has exited and been reaped (a zombie still counts, as it does for the kernel).
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Watch a process group from another thread until it is gone: (last time it was seen
/// alive, first time it was seen gone), in ns since the epoch.
fn watch_group(pgid: i32) -> std::thread::JoinHandle<(u128, u128)> {
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(90);
        let mut last_alive = now_ns();
        while Instant::now() < until {
            let t = now_ns();
            if !group_alive(pgid) {
                return (last_alive, t);
            }
            last_alive = t;
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("process group {pgid} still alive after 90 s");
    })
}

/// Submit `life qa VERSION` through the server and wait until its job is `want`.
async fn submit(w: &Workspace, app: &App, version: &str, want: &str) -> (std::process::Child, i64) {
    let follower = w
        .cmd(&["run", "life", "qa", version])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = eventually(20, "the job to be recorded", || async {
        app.db
            .recent_jobs(10)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.version.as_deref() == Some(version) && j.state == want)
            .map(|j| j.id)
    })
    .await;
    (follower, id)
}

/// `kill -9` of the server while v1's step runs and v2 is queued on the same environment:
/// after the restart, v2's step begins only once v1's whole process group is gone.
async fn second_deploy_waits_for_the_orphan(b: Backend) {
    let Some(w) = Workspace::new(b, "[environments.qa]\n", &[]) else {
        return;
    };
    let life = w.dir.path().join("life");
    std::fs::write(
        w.dir.path().join("commands/life.toml"),
        lifetimes_command(&life, 120),
    )
    .unwrap();
    let mut server = Server::start(&w, &[]);
    let app = w.app(&[]).await;
    let (mut f1, first) = submit(&w, &app, "v1", state::RUNNING).await;
    let pgid = eventually(20, "v1's step to start", || async {
        starts(&life).get("v1").map(|s| s.1)
    })
    .await;
    let (mut f2, second) = submit(&w, &app, "v2", state::QUEUED).await;

    server.kill9();
    for f in [&mut f1, &mut f2] {
        let _ = f.kill();
        let _ = f.wait();
    }
    assert!(
        group_alive(pgid),
        "v1's step outlives a kill -9 of the server"
    );
    let watcher = watch_group(pgid);
    let _restarted = Server::start(&w, &[]);
    let (last_alive, gone) = watcher.join().unwrap();
    wait_state(&app, first, state::INTERRUPTED).await;
    wait_state(&app, second, state::SUCCEEDED).await;
    let v2 = starts(&life)["v2"].0;
    eprintln!(
        "v1's group last seen alive {} ms before v2's step began; seen gone {} ms before",
        (v2 as i128 - last_alive as i128) / 1_000_000,
        (v2 as i128 - gone as i128) / 1_000_000
    );
    assert!(
        v2 > last_alive,
        "v2's step began {} ms before v1's process group {pgid} was last seen alive",
        (last_alive - v2) / 1_000_000
    );
}

both!(
    kill_9_with_a_second_deploy_queued,
    second_deploy_waits_for_the_orphan
);
