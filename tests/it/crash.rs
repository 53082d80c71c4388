//! `kill -9` of a running `deckhand serve` in the middle of a job, with real processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use deckhand::app::App;
use deckhand::store::Db;

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

/// A deploy whose step appends `VERSION start NANOS PGID` to `life` when it begins. The
/// first step to start then ignores SIGTERM (its `sleep` inherits that) and runs long, like
/// a step that does not stop when asked; later ones end at once.
fn lifetimes_command(life: &std::path::Path, timeout_seconds: u64, idempotent: bool) -> String {
    let script = format!(
        "echo \"$DECKHAND_VERSION start $(date +%s%N) $$\" >> {life}; echo pid=$$; \
         if [ ! -e {life}.first ]; then touch {life}.first; trap '' TERM; sleep 120; fi",
        life = life.display()
    );
    format!(
        "idempotent = {idempotent}\n{}timeout_seconds = {timeout_seconds}\n",
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

/// Each step's start, in order: (version, ns since the epoch, process group).
fn starts(life: &std::path::Path) -> Vec<(String, u128, i32)> {
    std::fs::read_to_string(life)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f[0].to_owned(), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect()
}

/// When `version`'s step started (ns) and its process group.
fn start_of(life: &std::path::Path, version: &str) -> Option<(u128, i32)> {
    starts(life)
        .into_iter()
        .find(|s| s.0 == version)
        .map(|s| (s.1, s.2))
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

/// v1's step running, v2 queued behind it on `qa`, and the server killed with `kill -9`.
struct Crashed {
    w: Workspace,
    app: std::sync::Arc<App>,
    life: std::path::PathBuf,
    first: i64,
    second: i64,
    /// v1's step's process group, still alive.
    pgid: i32,
}

async fn crash_with_a_second_deploy_queued(b: Backend, timeout_seconds: u64) -> Option<Crashed> {
    let w = Workspace::new(b, "[environments.qa]\n", &[])?;
    let life = w.dir.path().join("life");
    let command = lifetimes_command(&life, timeout_seconds, false);
    std::fs::write(w.dir.path().join("commands/life.toml"), command).unwrap();
    let mut server = Server::start(&w, &[]);
    let app = w.app(&[]).await;
    let (mut f1, first) = submit(&w, &app, "v1", state::RUNNING).await;
    let pgid = eventually(20, "v1's step to start", || async {
        start_of(&life, "v1").map(|s| s.1)
    })
    .await;
    let (mut f2, second) = submit(&w, &app, "v2", state::QUEUED).await;
    // Its group on record (the step is spawned before the write lands).
    eventually(20, "v1's process group on record", || async {
        let j = app.db.job(first).await.unwrap()?;
        (j.step.pgid == Some(pgid as i64)).then_some(())
    })
    .await;
    server.kill9();
    for f in [&mut f1, &mut f2] {
        let _ = f.kill();
        let _ = f.wait();
    }
    assert!(
        group_alive(pgid),
        "v1's step outlives a kill -9 of the server"
    );
    Some(Crashed {
        w,
        app,
        life,
        first,
        second,
        pgid,
    })
}

/// The titles of the notices posted (edits and all) in job `id`'s terminal thread.
async fn titles(app: &App, id: i64) -> Vec<String> {
    app.db
        .job_notices(id, "terminal", 0)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["title"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// `kill -9` of the server while v1's step runs and v2 is queued on the same environment:
/// after the restart, v2's step begins only once v1's whole process group is gone.
async fn second_deploy_waits_for_the_orphan(b: Backend) {
    let Some(c) = crash_with_a_second_deploy_queued(b, 120).await else {
        return;
    };
    let (app, pgid) = (&c.app, c.pgid);
    let watcher = watch_group(pgid);
    let _restarted = Server::start(&c.w, &[]);
    let (last_alive, gone) = watcher.join().unwrap();
    wait_state(app, c.first, state::INTERRUPTED).await;
    wait_state(app, c.second, state::SUCCEEDED).await;
    let (v1, v2) = (
        start_of(&c.life, "v1").unwrap().0,
        start_of(&c.life, "v2").unwrap().0,
    );
    eprintln!(
        "v1's group lived {} ms; v2's step began {} ms after it was last seen alive ({} ms after seen gone)",
        (gone - v1) / 1_000_000,
        (v2 as i128 - last_alive as i128) / 1_000_000,
        (v2 as i128 - gone as i128) / 1_000_000
    );
    assert!(
        v2 > last_alive,
        "v2's step began {} ms before v1's process group {pgid} was last seen alive",
        (last_alive - v2) / 1_000_000
    );
    // v1 ignored SIGTERM: only the SIGKILL after the grace (1 s) ended it.
    let j = app.db.job(c.first).await.unwrap().unwrap();
    assert!(j.step.held_since.is_none(), "released: {:?}", j.step);
    let held = j.finished_at.unwrap();
    assert!(
        gone / 1_000_000 >= (held + 1000) as u128,
        "killed only after the grace"
    );
    // v2's message said what it waited for, once, in place (its own thread).
    let host = deckhand::app::hostname();
    let want = format!(
        "waiting for job {}'s interrupted step (process group {pgid} on {host}) to end",
        c.first
    );
    let t = titles(app, c.second).await;
    assert_eq!(t.iter().filter(|t| t.contains(&want)).count(), 1, "{t:#?}");
    let audit = app.db.audit(Some("qa"), 100).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "environment_released"
            && a.job_id == Some(c.first)
            && a.detail.ends_with("has ended")),
        "{audit:#?}"
    );
}

both!(
    kill_9_with_a_second_deploy_queued,
    second_deploy_waits_for_the_orphan
);

/// Pretend v1's step ran on another host: the restarted server cannot see or signal it.
async fn move_to_another_host(app: &App, id: i64) {
    let sql = "UPDATE jobs SET step_host = 'host-b', lease_owner = 'host-b:4242:00' WHERE id = $1";
    match &app.db {
        Db::Sqlite(p) => {
            sqlx::query(sql).bind(id).execute(p).await.unwrap();
        }
        Db::Postgres(p) => {
            sqlx::query(sql).bind(id).execute(p).await.unwrap();
        }
    }
}

/// From another host, the environment is held until the step's timeout (and kill grace)
/// has passed since it started, and the queued job's message says until when.
async fn another_hosts_step_holds_until_its_timeout(b: Backend) {
    let Some(c) = crash_with_a_second_deploy_queued(b, 8).await else {
        return;
    };
    let app = &c.app;
    move_to_another_host(app, c.first).await;
    let _restarted = Server::start(&c.w, &[]);
    let j = wait_state(app, c.first, state::INTERRUPTED).await;
    let deadline = j.step.deadline.unwrap();
    let v1 = start_of(&c.life, "v1").unwrap().0;
    assert!(
        (deadline - (v1 / 1_000_000) as i64 - 9_000).abs() < 1_500,
        "deadline = start + 8 s timeout + 1 s grace"
    );
    wait_state(app, c.second, state::SUCCEEDED).await;
    let v2 = start_of(&c.life, "v2").unwrap().0;
    assert!(
        v2 / 1_000_000 >= deadline as u128,
        "v2 began before v1's step timeout was over"
    );
    assert!(
        group_alive(c.pgid),
        "nothing signals a group on another host"
    );
    let t = titles(app, c.second).await;
    let want = format!(
        "waiting for job {}'s interrupted step (process group {} on host-b) to end, until its timeout at {} at the latest, or for an admin to release it with `deckhand jobs release {} --reason",
        c.first,
        c.pgid,
        deckhand::domain::time::fmt_time(deadline),
        c.first
    );
    assert_eq!(t.iter().filter(|t| t.contains(&want)).count(), 1, "{t:#?}");
    let audit = app.db.audit(Some("qa"), 100).await.unwrap();
    assert!(
        audit.iter().any(
            |a| a.action == "environment_released" && a.detail.ends_with("is past its timeout")
        )
    );
    // SAFETY: the test's own orphan, by its group.
    unsafe { libc::kill(-c.pgid, libc::SIGKILL) };
}

both!(
    kill_9_on_another_host_holds_until_the_step_timeout,
    another_hosts_step_holds_until_its_timeout
);

/// An admin ends the wait with a reason; bad input changes nothing.
async fn an_admin_releases_a_held_environment(b: Backend) {
    let Some(c) = crash_with_a_second_deploy_queued(b, 120).await else {
        return;
    };
    let app = &c.app;
    move_to_another_host(app, c.first).await;
    let first = c.first.to_string();
    let release = |args: &[&str]| {
        let mut a = vec!["jobs", "release"];
        a.extend_from_slice(args);
        let out = c.w.cmd(&a).env("USER", "ops").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let _restarted = Server::start(&c.w, &[]);
    let j = wait_state(app, c.first, state::INTERRUPTED).await;
    assert!(j.step.held_since.is_some());
    for (args, why) in [
        (vec![first.as_str(), "--reason", "  "], "give a reason"),
        (
            vec![first.as_str(), "--reason", "ok\u{202E}evil"],
            "bidirectional override",
        ),
        (vec!["999", "--reason", "checked"], "there is no job 999"),
        (
            vec![&c.second.to_string(), "--reason", "checked"],
            "holds no environment",
        ),
    ] {
        let (code, _, err) = release(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let (code, _, err) = release(&[first.as_str()]);
    assert_ne!(code, 0, "--reason is required: {err}");
    assert_eq!(
        app.db.job(c.second).await.unwrap().unwrap().state,
        state::QUEUED,
        "still waiting"
    );
    assert!(
        app.db
            .job(c.first)
            .await
            .unwrap()
            .unwrap()
            .step
            .held_since
            .is_some(),
        "still held"
    );

    let (code, out, err) = release(&[first.as_str(), "--reason", "host-b is down for good"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("qa released by terminal:ops"), "{out}");
    wait_state(app, c.second, state::SUCCEEDED).await;
    let audit = app.db.audit(Some("qa"), 100).await.unwrap();
    let a = audit
        .iter()
        .find(|a| a.action == "environment_released")
        .unwrap();
    assert_eq!(
        (a.actor.as_str(), a.job_id),
        ("terminal:ops", Some(c.first))
    );
    assert!(
        a.detail.contains("Reason: host-b is down for good"),
        "{}",
        a.detail
    );
    let (code, _, err) = release(&[first.as_str(), "--reason", "again"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no environment"), "{err}");
    // SAFETY: the test's own orphan, by its group.
    unsafe { libc::kill(-c.pgid, libc::SIGKILL) };
}

both!(
    kill_9_on_another_host_an_admin_releases_it,
    an_admin_releases_a_held_environment
);

/// An idempotent job is re-queued after the crash, and runs again only once its own first
/// step's group is gone.
async fn a_requeued_job_waits_for_its_own_orphan(b: Backend) {
    let Some(w) = Workspace::new(b, "[environments.qa]\n", &[]) else {
        return;
    };
    let life = w.dir.path().join("life");
    let command = lifetimes_command(&life, 120, true);
    std::fs::write(w.dir.path().join("commands/life.toml"), command).unwrap();
    let mut server = Server::start(&w, &[]);
    let app = w.app(&[]).await;
    let (mut f1, first) = submit(&w, &app, "v1", state::RUNNING).await;
    let pgid = eventually(20, "the step to start", || async {
        let j = app.db.job(first).await.unwrap()?;
        j.step.pgid.map(|g| g as i32)
    })
    .await;
    server.kill9();
    let _ = f1.kill();
    let _ = f1.wait();
    let watcher = watch_group(pgid);
    let _restarted = Server::start(&w, &[]);
    let (last_alive, _) = watcher.join().unwrap();
    let j = wait_state(&app, first, state::SUCCEEDED).await;
    assert_eq!(j.attempts, 2, "idempotent: run again");
    let s = starts(&life);
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(
        s[1].1 > last_alive,
        "the second attempt began while the first's group lived"
    );
    let t = titles(&app, first).await;
    assert!(
        t.iter()
            .any(|t| t.contains("so it runs again, after waiting for job")),
        "{t:#?}"
    );
}

both!(
    kill_9_of_an_idempotent_job,
    a_requeued_job_waits_for_its_own_orphan
);
