//! The `deckhand` binary from a terminal: deploy, roll back, refuse bad input, check files.

use crate::common::*;

fn ws() -> Workspace {
    Workspace::new(Backend::Sqlite, "", &[]).unwrap()
}

#[test]
fn deploy_then_rollback_on_the_demo() {
    let w = ws();
    let (code, out, err) = w.run(&["deploy", "staging", "abc1234"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let health = format!("http://127.0.0.1:{}/health", w.staging_port);
    for want in [
        "Deployed abc1234 to staging, health check passing",
        "Environment:     staging",
        "Version:         abc1234",
        "Rollback ready:  no — no earlier verified version",
        &format!("{health} returning 200"),
        "verified working",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (s, body) = http_get(&health).unwrap();
    assert_eq!((s, body.contains("\"abc1234\"")), (200, true), "{body}");

    let (code, out, _) = w.run(&["deploy", "staging", "def5678"]);
    assert_eq!(code, 0, "{out}");
    assert!(http_get(&health).unwrap().1.contains("def5678"));

    let (code, out, err) = w.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("Rolled staging back to abc1234, health check passing"),
        "{out}"
    );
    assert!(http_get(&health).unwrap().1.contains("\"abc1234\""));

    let (_, status, _) = w.run(&["status", "staging"]);
    assert!(status.contains("staging: abc1234 (verified"), "{status}");
    let (_, hist, _) = w.run(&["history", "staging"]);
    assert_eq!(hist.matches("verified").count(), 3, "{hist}");
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let w = ws();
    let cases: &[(&[&str], &str)] = &[
        (&["deploy", "staging", "abc;id"], "not a valid version"),
        (&["deploy", "staging", "$(id)"], "not a valid version"),
        (&["deploy", "staging", "-rf"], "not a valid version"),
        (
            &["deploy", "qa", "abc1234"],
            "unknown environment \"qa\"; accepted: production, staging",
        ),
        (
            &["depoy", "staging", "abc1234"],
            "unknown command \"depoy\"; accepted:",
        ),
        (&["deploy", "staging"], "missing VERSION"),
    ];
    for (args, want) in cases {
        let (code, out, err) = w.run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        if want.contains("version") {
            assert!(err.contains("usage: deploy ENVIRONMENT VERSION"), "{err}");
        }
    }
    // Nothing started: no job, no demo app, no pid file.
    let out = w.cmd(&["jobs"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listing.lines().count(),
        1,
        "only the header expected:\n{listing}"
    );
    assert!(!w.data_dir().join("demo").join("staging.pid").exists());
}

#[test]
fn production_needs_the_version_verified_on_staging() {
    let w = ws();
    let (code, _, err) = w.run(&["deploy", "production", "abc1234"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "abc1234 has not been verified on staging; nothing has been deployed to staging"
        ),
        "{err}"
    );
    assert_eq!(w.run(&["deploy", "staging", "abc1234"]).0, 0);
    let (code, out, err) = w.run(&["deploy", "production", "abc1234"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Deployed abc1234 to production"), "{out}");
}

/// A pid file outlives its app, and pids are reused (a busy host wraps at 32,768; a fresh
/// container hands out the same low pids on every boot). Deploying production used to
/// SIGTERM whatever held the pid in its stale `production.pid`: here, as after a reuse,
/// that is the staging app, which must keep serving.
#[test]
fn a_stale_pid_file_never_stops_another_environments_app() {
    let w = ws();
    assert_eq!(w.run(&["deploy", "staging", "abc1234"]).0, 0);
    let demo = w.data_dir().join("demo");
    let staging_pid = std::fs::read_to_string(demo.join("staging.pid")).unwrap();
    std::fs::write(demo.join("production.pid"), &staging_pid).unwrap();
    let (code, out, err) = w.run(&["deploy", "production", "abc1234"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid: i32 = staging_pid.trim().parse().unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the staging app was killed"
    );
    let staging = format!("http://127.0.0.1:{}/health", w.staging_port);
    assert!(http_get(&staging).unwrap().1.contains("\"abc1234\""));
    let production = format!("http://127.0.0.1:{}/health", w.production_port);
    assert!(http_get(&production).unwrap().1.contains("\"abc1234\""));
    // A redeploy of staging still replaces its own app.
    assert_eq!(w.run(&["deploy", "staging", "def5678"]).0, 0);
    assert!(http_get(&staging).unwrap().1.contains("def5678"));
}

#[test]
fn check_reports_file_line_and_reason() {
    let w = Workspace::new(
        Backend::Sqlite,
        "",
        &[(
            "broken.toml",
            "name = \"broken\"\ndescription = \"x\"\nkind = \"deploy\"\n\n[[args]]\nname = \"env\"\nkind = \"enviroment\"\n\n[[steps]]\nname = \"s\"\nargv = [\"true\"]\n",
        )],
    )
    .unwrap();
    let out = w.cmd(&["check"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("commands/broken.toml:7: unknown argument kind \"enviroment\"; accepted: environment, version"), "{err}");

    let good = ws();
    let out = good.cmd(&["check"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_on_embedded_defaults_creates_the_database() {
    // No config file, no DATABASE_URL: the bundled config and ./deckhand.db.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _k = Kill(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = http_get(&format!("http://127.0.0.1:{port}/ready")) {
            assert!(body.contains("sqlite"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/health"))
            .unwrap()
            .0,
        200
    );
    assert!(dir.path().join("deckhand.db").exists());
}

#[test]
fn a_closed_stdout_ends_listings_quietly() {
    let w = ws();
    let (code, out, err) = w.run(&["deploy", "staging", "abc1234"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // As `deckhand jobs | head -1` once `head` has gone: every write meets a closed pipe.
    let cases: &[&[&str]] = &[
        &["jobs"],
        &["audit"],
        &["logs", "1"],
        &["run", "status", "staging"],
        &["run", "deploy", "staging", "def5678"],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = w
            .cmd(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    // The deploy that could not print still ran to its end.
    let (_, status, _) = w.run(&["status", "staging"]);
    assert!(status.contains("staging: def5678 (verified"), "{status}");
}

/// A step's process group is on record only while it exists. It used to stay on the job
/// row through verify and watch: a crash then had recovery SIGKILL a pgid whose pid any
/// later process may hold (a demo app leads its own group, so its pgid is its pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_steps_group_is_off_the_record_while_health_is_checked() {
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = health.local_addr().unwrap().port();
    let config = format!(
        "[environments.qa]\nhealth_url = \"http://127.0.0.1:{port}/health\"\nhealth_timeout_seconds = 30\n"
    );
    let ship = deploy_command("ship", "everyone", r#"["true"]"#);
    let w = Workspace::new(Backend::Sqlite, &config, &[("ship.toml", &ship)]).unwrap();
    let app = w.app(&[]).await;
    let mut run = w
        .cmd(&["run", "ship", "qa", "v1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The health check's request arrives once the step has ended; hold the answer while
    // the job row is read.
    let (mut conn, _) = tokio::task::spawn_blocking(move || health.accept().unwrap())
        .await
        .unwrap();
    let job = app.db.recent_jobs(1).await.unwrap().remove(0);
    assert_eq!(job.state, deckhand::store::jobs::state::RUNNING);
    assert_eq!(
        job.step.pgid, None,
        "the ended step's group is still on record"
    );
    use std::io::{Read, Write};
    let mut buf = [0u8; 1024];
    let _ = conn.read(&mut buf);
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .unwrap();
    drop(conn);
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
