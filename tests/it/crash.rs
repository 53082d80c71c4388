//! `kill -9` of a running `deckhand serve` in the middle of a job, with real processes.

use std::process::Stdio;

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
