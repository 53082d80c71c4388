//! GitHub Actions as a step (`workflow = "deploy.yml"`), against the fake: the dispatch
//! carries the `ref` and the inputs filled from the job's validated arguments, the run is
//! followed to its end with its jobs and link in the job log, a failed job fails the step
//! by name, a cancel of the job cancels the run, an unknown workflow is a plain failure,
//! and `deckhand check` names what is wrong in a workflow step.

use super::{SHA_OK, TOKEN, check_config, run, spawn_run, ws};
use crate::common::github::FakeGitHub;
use crate::common::*;
use deckhand::store::jobs::state;

/// A deploy command `name` whose one step, "work", dispatches `file` on `main` and may
/// take `timeout` seconds.
pub(crate) fn workflow_command(name: &str, file: &str, timeout: u64) -> String {
    deploy_command(name, "everyone", "[]").replace(
        "argv = []\n",
        &format!(
            "workflow = \"{file}\"\nref = \"main\"\ninputs = {{ sha = \"{{commit_sha}}\", environment = \"{{environment}}\", version = \"v{{version}}\" }}\npoll_ms = 100\ntimeout_seconds = {timeout}\n"
        ),
    )
}

/// [`ws`] with `gha` (dispatching `deploy.yml`), `gha-missing` (`nope.yml`) and `gha-short`
/// (`deploy.yml` with 2 s to finish), and a fake
/// GitHub where `main` is [`SHA_OK`] with its `test` check passed.
fn setup(b: Backend) -> Option<(Workspace, FakeGitHub)> {
    let w = ws(b)?;
    let dir = w.dir.path().join("commands");
    for (name, file, timeout) in [
        ("gha", "deploy.yml", 30),
        ("gha-missing", "nope.yml", 30),
        ("gha-short", "deploy.yml", 2),
    ] {
        let text = workflow_command(name, file, timeout);
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    let gh = FakeGitHub::start();
    gh.commit(SHA_OK, &["main"]);
    gh.check_run(SHA_OK, "test", "completed", Some("success"));
    Some((w, gh))
}

/// A `gha` deploy followed by `deckhand run` (`child`, which runs it) while GitHub holds
/// its run (`run_id`) in progress; an App on the workspace's database, and the job.
struct Held {
    w: Workspace,
    gh: FakeGitHub,
    child: std::process::Child,
    run_id: u64,
    app: std::sync::Arc<deckhand::app::App>,
    job: deckhand::store::jobs::JobRow,
}

async fn held(b: Backend) -> Option<Held> {
    let (w, gh) = setup(b)?;
    gh.workflow_held("deploy.yml", &["deploy"]);
    let child = spawn_run(&w, &gh, &["gha", "staging", "main"]);
    let run_id = eventually(30, "the run in progress", || async {
        let runs = gh.workflow_runs();
        runs.first()
            .filter(|r| r.status() == "in_progress")
            .map(|r| r.id)
    })
    .await;
    let app = w
        .app(&[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", &gh.url)])
        .await;
    let job = app.db.recent_jobs(1).await.unwrap().remove(0);
    assert_eq!(job.state, state::RUNNING);
    Some(Held {
        w,
        gh,
        child,
        run_id,
        app,
        job,
    })
}

/// The dispatch carries `ref` and the filled inputs; the run is followed through queued
/// and in progress to success, and the job log lists its jobs with links and the run's
/// link. Twice: with the run's details in the dispatch's answer, and (a GitHub that
/// answers 204) found among the workflow's runs.
async fn a_workflow_step_dispatches_and_follows_its_run_to_success(b: Backend) {
    let Some((w, gh)) = setup(b) else { return };
    gh.workflow_outcome(
        "deploy.yml",
        "success",
        &[("build", "success"), ("deploy", "success")],
    );
    // GitHub blips while the run is followed: tried again, the deploy goes on.
    gh.fail_run_gets(&[502, 503]);
    for (k, without_details) in [false, true].into_iter().enumerate() {
        gh.without_run_details(without_details);
        let (code, out, err) = run(&w, &gh, &["gha", "staging", "main"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Deployed main to staging"), "{out}");
        let runs = gh.workflow_runs();
        assert_eq!(runs.len(), k + 1, "one dispatch per deploy: {runs:?}");
        let r = &runs[k];
        assert_eq!(r.body["ref"], "main");
        assert_eq!(
            r.body["inputs"],
            serde_json::json!({"sha": SHA_OK, "environment": "staging", "version": "vmain"})
        );
        assert_eq!(r.body["return_run_details"], true);
        assert!(
            r.gets >= 3,
            "followed through queued and in progress: {r:?}"
        );
        let link = format!("https://github.example/acme/shop/actions/runs/{}", r.id);
        for line in [
            format!(
                "[work] workflow deploy.yml dispatched on main: run {} {link}",
                r.id
            ),
            format!("[work] job \"build\": success {link}/job/"),
            format!("[work] job \"deploy\": success {link}/job/"),
            format!("[work] run {} completed: success {link}", r.id),
        ] {
            assert!(out.contains(&line), "{line}\n{out}");
        }
        assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
        let listed = gh.calls_to("/actions/workflows/deploy.yml/runs");
        assert_eq!(listed > 0, without_details, "the list is the 204 path only");
    }
    assert!(gh.cancels().is_empty());
    let blips: Vec<u16> = gh
        .calls()
        .iter()
        .filter(|c| c.path.contains("/actions/runs/") && c.status >= 500)
        .map(|c| c.status)
        .collect();
    assert_eq!(blips, [502, 503]);
}
both!(
    a_workflow_step_dispatches_and_follows_its_run_to_success,
    a_workflow_step_dispatches_and_follows_its_run_to_success
);

/// A run that fails fails the step naming the failed job and its link; a workflow GitHub
/// does not have (404), or credentials refused while following (401), fail it plainly,
/// without a URL of the API or the token.
async fn a_failed_job_or_an_unknown_workflow_fails_the_step_plainly(b: Backend) {
    let Some((w, gh)) = setup(b) else { return };
    gh.workflow_outcome(
        "deploy.yml",
        "failure",
        &[("build", "failure"), ("deploy", "skipped")],
    );
    let (code, out, err) = run(&w, &gh, &["gha", "staging", "main"]);
    assert_ne!(code, 0, "{out}{err}");
    let id = gh.workflow_runs()[0].id;
    let failed = format!(
        "step \"work\": workflow deploy.yml failed: job \"build\" failure (https://github.example/acme/shop/actions/runs/{id}/job/{})",
        id * 100
    );
    assert!(out.contains(&failed), "{failed}\n{out}");
    assert!(out.contains("[work] job \"deploy\": skipped"), "{out}");

    let (code, out, err) = run(&w, &gh, &["gha-missing", "staging", "main"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "step \"work\": workflow nope.yml: GitHub has no workflow nope.yml in acme/shop (404)"
        ),
        "{out}"
    );
    assert_eq!(gh.workflow_runs().len(), 1, "nothing started for nope.yml");
    let mut seen = out + &err;

    // Credentials refused while following: a plain failure, not tried again.
    gh.workflow_outcome("deploy.yml", "success", &[("deploy", "success")]);
    gh.fail_run_gets(&[401]);
    let (code, out, err) = run(&w, &gh, &["gha", "staging", "main"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("step \"work\": workflow deploy.yml: GitHub refused the credentials (401)"),
        "{out}"
    );
    seen += &(out + &err);
    assert!(!seen.contains(TOKEN) && !seen.contains(&gh.url), "{seen}");
}
both!(
    a_failed_job_or_an_unknown_workflow_fails_the_step_plainly,
    a_failed_job_or_an_unknown_workflow_fails_the_step_plainly
);

/// `cancel JOB` while the run is in progress: Deckhand asks GitHub to cancel the run, the
/// run ends cancelled, and the job is cancelled.
async fn cancelling_the_job_cancels_its_run(b: Backend) {
    let Some(h) = held(b).await else { return };
    let (gh, run_id, app, job) = (&h.gh, h.run_id, &h.app, &h.job);
    let (code, out, err) = run(&h.w, gh, &["cancel", &job.id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let out = h.child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(gh.cancels(), [run_id]);
    assert!(gh.workflow_runs()[0].cancelled);
    assert!(
        stdout.contains(&format!("[work] cancel of run {run_id} requested")),
        "{stdout}"
    );
    assert_eq!(wait_state(app, job.id, state::CANCELLED).await.id, job.id);
}
both!(
    cancelling_the_job_cancels_its_run,
    cancelling_the_job_cancels_its_run
);

/// A run still going at the step's `timeout_seconds` is cancelled, and the step fails
/// saying so.
async fn a_run_past_the_steps_timeout_is_cancelled(b: Backend) {
    let Some((w, gh)) = setup(b) else { return };
    gh.workflow_held("deploy.yml", &["deploy"]);
    let (code, out, err) = run(&w, &gh, &["gha-short", "staging", "main"]);
    assert_ne!(code, 0, "{out}{err}");
    let id = gh.workflow_runs()[0].id;
    let says = format!(
        "step \"work\": workflow deploy.yml timed out after 2 s; cancel of run {id} requested (https://github.example/acme/shop/actions/runs/{id})"
    );
    assert!(out.contains(&says), "{says}\n{out}");
    assert_eq!(gh.cancels(), [id]);
}
both!(
    a_run_past_the_steps_timeout_is_cancelled,
    a_run_past_the_steps_timeout_is_cancelled
);

/// Deckhand stopping (SIGTERM to `deckhand run`, which runs the job itself) stops
/// following the run but does not cancel it: the job log names the run, and the job is
/// left for the next start to report.
async fn a_shutdown_leaves_the_run_going_and_logs_it(b: Backend) {
    let Some(h) = held(b).await else { return };
    let (gh, run_id, app, job) = (&h.gh, h.run_id, &h.app, &h.job);
    unsafe { libc::kill(h.child.id() as i32, libc::SIGTERM) };
    let out = h.child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{:?}", out);
    assert!(
        gh.cancels().is_empty(),
        "a shutdown must not cancel the run"
    );
    assert!(!gh.workflow_runs()[0].cancelled);
    let job = app.db.job(job.id).await.unwrap().unwrap();
    assert_eq!(job.state, state::RUNNING, "left for the next start");
    let log: Vec<String> = app
        .db
        .job_log(job.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    let says = format!(
        "Deckhand is shutting down: stopped following run {run_id} (https://github.example/acme/shop/actions/runs/{run_id}); it goes on on GitHub"
    );
    assert!(log.contains(&says), "{says}\n{log:?}");
}
both!(
    a_shutdown_leaves_the_run_going_and_logs_it,
    a_shutdown_leaves_the_run_going_and_logs_it
);

/// `deckhand check` names each problem of a workflow step with its line: a step with both
/// argv and workflow, an unknown placeholder, and a workflow without GitHub configured.
#[test]
fn check_names_the_problems_of_workflow_steps() {
    let step = |body: &str| deploy_command("gha", "everyone", "[]").replace("argv = []\n", body);
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let github = "\n[github]\nrepository = \"acme/shop\"\n";
    let cases = [
        (
            github,
            "argv = [\"true\"]\nworkflow = \"deploy.yml\"\nref = \"main\"\n",
            "[[steps]]",
            "step \"work\" has both argv and workflow; keep one",
        ),
        (
            github,
            "workflow = \"deploy.yml\"\nref = \"{versoin}\"\n",
            "ref = ",
            "ref: {versoin} is not an argument of this command; accepted: {environment}, {version}, {commit_sha}",
        ),
        (
            "",
            "workflow = \"deploy.yml\"\nref = \"main\"\n",
            "[[steps]]",
            "a workflow step needs GitHub (a repository and its credentials) wherever the command runs; not configured for: production, staging",
        ),
    ];
    for (config, body, at, says) in cases {
        let text = step(body);
        let w = Workspace::new(Backend::Sqlite, config, &[("gha.toml", &text)]).unwrap();
        let (ok, all) = check_config(&w);
        assert!(!ok, "{all}");
        let line = line_of(&text, at);
        assert!(
            all.contains(&format!("gha.toml:{line}: {says}")),
            "line {line}: {says}\n{all}"
        );
    }
    let text = step("workflow = \"deploy.yml\"\nref = \"{version}\"\n");
    let w = Workspace::new(Backend::Sqlite, github, &[("gha.toml", &text)]).unwrap();
    let (ok, all) = check_config(&w);
    assert!(ok, "{all}");
}
