//! A `workflow = "deploy.yml"` step: dispatch the GitHub Actions workflow on its `ref` with
//! its `inputs` (filled from the job's validated arguments), find the run it started,
//! follow it to its end, and write the run's jobs and their results, with links, into the
//! job log.
//!
//! The step's `timeout_seconds` bounds it all: GitHub errors worth trying again (a rate
//! limit, a 5xx, no answer) are tried again within it, and at its end the run is
//! cancelled. Cancelling the job cancels the run. Shutting Deckhand down stops following
//! but leaves the run alone, as an argv step is abandoned rather than failed; the log names
//! the run so that a person can find it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::catalog::WorkflowStep;
use crate::domain::state::JobState;
use crate::jobs::env_of;
use crate::jobs::steps::{StepDone, StepRun};
use crate::support::github::{GitHub, PostError};
use crate::support::github_actions::{Dispatched, Run, RunJob};

/// How long a dispatched run may take to show in the workflow's list of runs.
const FIND_FOR: Duration = Duration::from_secs(60);
/// Runs created this long before the dispatch still count as its own (clock skew).
const SKEW_MS: i64 = 5_000;
/// How long cancelling a run may take, once the step is over.
const CANCEL_FOR: Duration = Duration::from_secs(15);

/// How the step ended.
enum End {
    Succeeded,
    Failed(String),
    Cancelled,
    /// What became of the run (cancelled, or why not).
    TimedOut(String),
    Abandoned,
}

/// Why following stopped before the run's end.
enum Stop {
    Cancel,
    Shutdown,
    Deadline,
}

/// One workflow step being run: its GitHub client, deadline and place in the job log.
struct Follow<'a> {
    s: StepRun<'a>,
    gh: GitHub<'a>,
    repo: String,
    file: &'a str,
    interval: Duration,
    timeout: Duration,
    deadline: Instant,
    /// The run, once known.
    run: Option<(u64, String)>,
}

/// Run `wf` as step `s.step` to its end.
pub(crate) async fn run(s: StepRun<'_>, wf: &WorkflowStep) -> StepDone {
    let cfg = &s.app.settings.config;
    let timeout = Duration::from_secs(
        s.step
            .timeout_seconds
            .unwrap_or(cfg.runner.default_timeout_seconds),
    );
    let shown = format!("{}: workflow {}", s.step.name, wf.file);
    let done = |end: Result<(), String>, lines| StepDone {
        failure: end.err().map(|e| format!("step \"{}\": {e}", s.step.name)),
        command: format!("{shown} (not dispatched)"),
        lines,
        facts: BTreeMap::new(),
    };
    let env = env_of(s.job).to_owned();
    let Some((gh, repo)) = s.app.github(&env) else {
        return done(
            Err(format!(
                "GitHub is not configured for {env}; a workflow step needs [github] repository and its credentials"
            )),
            s.logged,
        );
    };
    let values = values(&s).await;
    let fill = |t: &crate::config::catalog::Template| {
        t.fill(|n| values.get(n).cloned())
            .map_err(|n| format!("this job has no value for {{{n}}}"))
    };
    let git_ref = match fill(&wf.git_ref) {
        Ok(r) => r,
        Err(e) => return done(Err(format!("ref: {e}")), s.logged),
    };
    let mut inputs = BTreeMap::new();
    for (k, t) in &wf.inputs {
        match fill(t) {
            Ok(v) => inputs.insert(k.clone(), v),
            Err(e) => return done(Err(format!("inputs.{k}: {e}")), s.logged),
        };
    }
    let mut f = Follow {
        interval: Duration::from_millis(wf.poll_ms.unwrap_or(cfg.github.workflow_poll_ms)),
        timeout,
        deadline: Instant::now() + timeout,
        run: None,
        gh,
        repo,
        file: &wf.file,
        s,
    };
    let end = match f.follow(&git_ref, &inputs).await {
        Ok(end) => end,
        Err(stop) => f.stopped(stop).await,
    };
    let name = &f.s.step.name;
    let file = crate::domain::text::shorten(f.file);
    let (failure, outcome) = match end {
        End::Succeeded => (None, JobState::Succeeded.as_str().to_owned()),
        End::Failed(why) => (
            Some(format!("step \"{name}\": {why}")),
            JobState::Failed.as_str().into(),
        ),
        End::Cancelled => {
            let cancelled = JobState::Cancelled.as_str();
            (
                Some(format!("step \"{name}\" {cancelled}")),
                cancelled.into(),
            )
        }
        End::TimedOut(run) => {
            let after = format!("timed out after {} s", f.timeout.as_secs());
            (
                Some(format!("step \"{name}\": workflow {file} {after}; {run}")),
                after,
            )
        }
        End::Abandoned => (
            Some("stopped by shutdown".into()),
            "stopped by shutdown".into(),
        ),
    };
    let run = f
        .run
        .as_ref()
        .map(|(id, _)| format!(", run {id}"))
        .unwrap_or_default();
    StepDone {
        failure: failure.map(|why| f.s.redactor.redact(&why)),
        command: format!(
            "{shown} on {}{run} ({outcome})",
            crate::domain::text::shorten(&git_ref)
        ),
        lines: f.s.logged,
        facts: BTreeMap::new(),
    }
}

/// What the placeholders stand for: the job's validated arguments by name (an optional
/// one not given is empty), its environment and version, and the commit the version
/// resolved to (for a rollback, the one it stood for when it was deployed here).
async fn values(s: &StepRun<'_>) -> BTreeMap<String, String> {
    let mut v = s.job.args_map();
    if let Some(cmd) = s.app.catalog.get(&s.job.command) {
        for a in &cmd.args {
            v.entry(a.name.clone()).or_default();
        }
    }
    if let Some(e) = &s.job.environment {
        v.insert("environment".into(), e.clone());
    }
    if let Some(ver) = s.version {
        v.insert("version".into(), ver.to_owned());
        if !v.contains_key("commit_sha")
            && let Ok(Some(sha)) = s.app.db.github_sha(env_of(s.job), ver).await
        {
            v.insert("commit_sha".into(), sha);
        }
    }
    v
}

impl Follow<'_> {
    /// Dispatch, find the run, follow it to its end.
    async fn follow(
        &mut self,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<End, Stop> {
        let file = crate::domain::text::shorten(self.file);
        let at = crate::domain::time::now_ms();
        let (id, url) = match self.dispatch(git_ref, inputs).await? {
            Ok(Some(run)) => run,
            Ok(None) => match self.find(git_ref, at).await? {
                Ok(run) => run,
                Err(why) => return Ok(End::Failed(format!("workflow {file}: {why}"))),
            },
            Err(why) => return Ok(End::Failed(format!("workflow {file}: {why}"))),
        };
        self.run = Some((id, url.clone()));
        self.note(format!(
            "workflow {file} dispatched on {git_ref}: run {id} {url}"
        ))
        .await;
        let mut last = String::new();
        let run = loop {
            self.guarded(tokio::time::sleep(self.interval)).await?;
            let (gh, repo) = (&self.gh, self.repo.as_str());
            match self
                .retrying("the run", || gh.workflow_run(repo, id))
                .await?
            {
                Ok(run) if run.completed() => break run,
                Ok(run) => {
                    if run.status != last {
                        self.note(format!("run {id}: {}", run.status.replace('_', " ")))
                            .await;
                        last = run.status;
                    }
                }
                Err(why) => return Ok(End::Failed(format!("workflow {file}: {why}"))),
            }
        };
        let (gh, repo) = (&self.gh, self.repo.as_str());
        let jobs = match self
            .retrying("the run's jobs", || gh.run_jobs(repo, id))
            .await
        {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(why)) => {
                self.note(format!("the jobs of run {id} are not known: {why}"))
                    .await;
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for j in &jobs {
            let line = format!(
                "job \"{}\": {}{}",
                crate::domain::text::shorten(&j.name),
                j.conclusion
                    .as_deref()
                    .unwrap_or(&j.status)
                    .replace('_', " "),
                j.html_url
                    .as_deref()
                    .map(|u| format!(" {}", link(u)))
                    .unwrap_or_default()
            );
            self.line("stdout", line).await;
        }
        let conclusion = run.conclusion.clone().unwrap_or_else(|| "unknown".into());
        self.note(format!("run {id} completed: {conclusion} {url}"))
            .await;
        Ok(judge(&file, &run, &jobs))
    }

    /// Dispatch the workflow: the run when GitHub names it, `None` when it is to be found
    /// (a 204, or no clear answer: the dispatch may have taken, and dispatching again
    /// could start the workflow twice), or why not.
    async fn dispatch(
        &mut self,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<Result<Option<(u64, String)>, String>, Stop> {
        loop {
            let (gh, repo) = (&self.gh, self.repo.as_str());
            match self
                .guarded(gh.dispatch_workflow(repo, self.file, git_ref, inputs))
                .await?
            {
                Ok(Dispatched::Run { id, html_url }) => return Ok(Ok(Some((id, link(&html_url))))),
                Ok(Dispatched::Accepted) => return Ok(Ok(None)),
                Err(PostError::Refused(why)) => return Ok(Err(why)),
                // A rate limit turned the dispatch away: nothing started yet.
                Err(PostError::Again {
                    after: Some(wait),
                    reason,
                }) => {
                    self.note(format!("{reason}; dispatching then")).await;
                    self.guarded(tokio::time::sleep(wait)).await?;
                }
                Err(PostError::Again {
                    after: None,
                    reason,
                }) => {
                    self.note(format!(
                        "the dispatch got no clear answer ({reason}); looking for its run instead of dispatching again"
                    ))
                    .await;
                    return Ok(Ok(None));
                }
            }
        }
    }

    /// The run dispatched at `at`, from the workflow's list of runs (GitHub lists it a few
    /// seconds after the dispatch).
    async fn find(
        &mut self,
        git_ref: &str,
        at: i64,
    ) -> Result<Result<(u64, String), String>, Stop> {
        let until = Instant::now() + FIND_FOR;
        loop {
            self.guarded(tokio::time::sleep(self.interval)).await?;
            let (gh, repo, file) = (&self.gh, self.repo.as_str(), self.file);
            match self
                .retrying("the list of runs", || {
                    gh.dispatched_run(repo, file, git_ref, at - SKEW_MS)
                })
                .await?
            {
                Ok(Some(run)) => return Ok(Ok((run.id, link(&run.html_url)))),
                Ok(None) if Instant::now() < until => {}
                Ok(None) => {
                    return Ok(Err(format!(
                        "no run of it appeared within {} s of the dispatch (not dispatched again, so as not to start it twice)",
                        FIND_FOR.as_secs()
                    )));
                }
                Err(why) => return Ok(Err(why)),
            }
        }
    }

    /// The end after a stop: a cancel or the deadline cancels the run; a shutdown leaves
    /// it running and says where it is.
    async fn stopped(&mut self, stop: Stop) -> End {
        match stop {
            Stop::Shutdown => {
                let line = match &self.run {
                    Some((id, url)) => format!(
                        "Deckhand is shutting down: stopped following run {id} ({url}); it goes on on GitHub"
                    ),
                    None => format!(
                        "Deckhand is shutting down: stopped before the run of {} was known; look for it on GitHub",
                        crate::domain::text::shorten(self.file)
                    ),
                };
                self.note(line).await;
                End::Abandoned
            }
            Stop::Cancel => {
                self.cancel().await;
                End::Cancelled
            }
            Stop::Deadline => End::TimedOut(self.cancel().await),
        }
    }

    /// Ask GitHub to cancel the run, trying again for a little while: what became of it.
    async fn cancel(&mut self) -> String {
        let Some((id, url)) = self.run.clone() else {
            let line = "stopped before its run was known; if it started, cancel it on GitHub";
            self.note(line.into()).await;
            return line.into();
        };
        let until = Instant::now() + CANCEL_FOR;
        let line = loop {
            match tokio::time::timeout_at(until, self.gh.cancel_run(&self.repo, id)).await {
                Ok(Ok(true)) => break format!("cancel of run {id} requested ({url})"),
                Ok(Ok(false)) => break format!("run {id} had already completed ({url})"),
                Ok(Err(PostError::Refused(why))) => {
                    break format!("cannot cancel run {id} ({url}): {why}");
                }
                Ok(Err(PostError::Again { after, .. })) if Instant::now() < until => {
                    let wait = after.unwrap_or(self.interval).min(CANCEL_FOR);
                    tokio::time::sleep_until(until.min(Instant::now() + wait)).await;
                }
                _ => {
                    break format!(
                        "GitHub did not take the cancel of run {id} ({url}); cancel it there"
                    );
                }
            }
        };
        self.note(line.clone()).await;
        line
    }

    /// `f`, unless the job is cancelled, Deckhand shuts down or the step's time is up first.
    async fn guarded<T>(&self, f: impl Future<Output = T>) -> Result<T, Stop> {
        let stops = self.s.stops;
        tokio::select! {
            biased;
            _ = stops.shutdown.cancelled() => Err(Stop::Shutdown),
            _ = stops.cancel.cancelled() => Err(Stop::Cancel),
            _ = tokio::time::sleep_until(self.deadline) => Err(Stop::Deadline),
            v = f => Ok(v),
        }
    }

    /// `call` until it answers or is refused (why, in words): what is worth trying again is
    /// tried again after the poll interval, or the wait a rate limit asks for.
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<Result<T, String>, Stop>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, PostError>>,
    {
        loop {
            match self.guarded(call()).await? {
                Ok(v) => return Ok(Ok(v)),
                Err(PostError::Refused(why)) => return Ok(Err(why)),
                Err(PostError::Again { after, reason }) => {
                    tracing::warn!(job_id = self.s.job.id, %reason, "GitHub did not answer {what}; trying again");
                    let wait = after.unwrap_or(self.interval).max(self.interval);
                    self.guarded(tokio::time::sleep(wait)).await?;
                }
            }
        }
    }

    async fn note(&mut self, line: String) {
        self.line("note", line).await
    }

    /// One line into the job log, redacted, while the log has room.
    async fn line(&mut self, stream: &'static str, line: String) {
        let s = &self.s;
        if self.s.logged >= s.app.settings.config.runner.max_log_lines {
            return;
        }
        let line = s.redactor.redact(&crate::domain::text::cut(&line, 1000));
        let row = [(s.step.name.clone(), stream, line)];
        match s.app.db.append_log(s.job.id, &row).await {
            Ok(()) => self.s.logged += 1,
            Err(e) => tracing::warn!(job_id = s.job.id, error = %e, "cannot store job log lines"),
        }
    }
}

/// A link GitHub gave, as it may be shown: no control characters, not too long.
fn link(url: &str) -> String {
    let clean: String = url
        .chars()
        .filter(|c| !c.is_control() && *c != ' ')
        .collect();
    crate::domain::text::cut(&clean, 300)
}

/// A completed run: success, or the first failed job (else the run's own conclusion).
fn judge(file: &str, run: &Run, jobs: &[RunJob]) -> End {
    let conclusion = run.conclusion.as_deref().unwrap_or("unknown");
    if conclusion == "success" {
        return End::Succeeded;
    }
    End::Failed(match jobs.iter().find(|j| j.failed()) {
        Some(j) => format!(
            "workflow {file} failed: job \"{}\" {} ({})",
            crate::domain::text::shorten(&j.name),
            j.conclusion
                .as_deref()
                .unwrap_or_default()
                .replace('_', " "),
            link(j.html_url.as_deref().unwrap_or(&run.html_url))
        ),
        None => format!(
            "workflow {file} failed: run {} {} ({})",
            run.id,
            conclusion.replace('_', " "),
            link(&run.html_url)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, conclusion: &str) -> RunJob {
        RunJob {
            name: name.into(),
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            html_url: Some(format!("https://gh.example/job/{name}")),
        }
    }

    #[test]
    fn a_run_is_judged_by_its_conclusion_and_names_its_failed_job() {
        let run = |c: &str| Run {
            id: 7,
            status: "completed".into(),
            conclusion: Some(c.into()),
            html_url: "https://gh.example/run/7".into(),
        };
        assert!(matches!(
            judge("d.yml", &run("success"), &[]),
            End::Succeeded
        ));
        let jobs = [
            job("lint", "success"),
            job("build", "failure"),
            job("e2e", "cancelled"),
        ];
        match judge("d.yml", &run("failure"), &jobs) {
            End::Failed(m) => assert_eq!(
                m,
                "workflow d.yml failed: job \"build\" failure (https://gh.example/job/build)"
            ),
            _ => panic!("not a failure"),
        }
        match judge("d.yml", &run("startup_failure"), &[]) {
            End::Failed(m) => assert_eq!(
                m,
                "workflow d.yml failed: run 7 startup failure (https://gh.example/run/7)"
            ),
            _ => panic!("not a failure"),
        }
        assert_eq!(link("https://x/\n1 2"), "https://x/12");
    }
}
