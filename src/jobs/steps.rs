//! Running a job's steps: the environment they get, their output into the job log, and
//! the secret a rotate-secret step receives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::app::App;
use crate::config::catalog::{Command, Step};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::state::JobState;
use crate::jobs::{StepsResult, Stops, env_of};
use crate::outbox::routes::notices;
use crate::store::jobs::JobRow;
use crate::support::runner::{self, Redactor, StepOutcome, StepSpec, Stream};

/// Facts a step reports by printing `deckhand-report: KEY=VALUE`.
const REPORT_PREFIX: &str = "deckhand-report:";

/// Run every step of `cmd` in order, storing redacted output in the job log.
pub(crate) async fn run_steps(
    app: &Arc<App>,
    job: &JobRow,
    cmd: &Command,
    version: Option<&str>,
    redactor: &Redactor,
    secret: Option<&Zeroizing<String>>,
    stops: &Stops,
) -> anyhow::Result<StepsResult> {
    let how = StepsHow {
        redactor,
        secret,
        stops,
        extra_env: &BTreeMap::new(),
        label: "",
    };
    run_steps_with(app, job, cmd, version, how).await
}

/// How [`run_steps_with`] runs a command's steps.
pub(crate) struct StepsHow<'a> {
    pub redactor: &'a Redactor,
    pub secret: Option<&'a Zeroizing<String>>,
    pub stops: &'a Stops,
    /// Added to each step's environment (e.g. `DATABASE_URL` for a migration's target).
    pub extra_env: &'a BTreeMap<String, String>,
    /// Put before each step's name in the job log and progress ("fresh database: ").
    pub label: &'a str,
}

/// [`run_steps`] with extra environment variables and a label for the log.
pub(crate) async fn run_steps_with(
    app: &Arc<App>,
    job: &JobRow,
    cmd: &Command,
    version: Option<&str>,
    how: StepsHow<'_>,
) -> anyhow::Result<StepsResult> {
    let StepsHow {
        redactor,
        secret,
        stops,
        extra_env,
        label,
    } = how;
    let mut facts = BTreeMap::new();
    let mut commands = Vec::new();
    let mut env = step_env(app, job, version);
    env.extend(extra_env.clone());
    let total = cmd.steps.len();
    let mut logged = app
        .db
        .job_log(job.id, 0)
        .await
        .map(|l| l.len())
        .unwrap_or(0);
    for (i, step) in cmd.steps.iter().enumerate() {
        let step = &Step {
            name: format!("{label}{}", step.name),
            ..step.clone()
        };
        announce(app, job, version, (i + 1, total), step).await;
        let s = StepRun {
            app,
            job,
            step,
            version,
            redactor,
            stops,
            logged,
        };
        let done = match &step.workflow {
            Some(wf) => crate::jobs::workflow::run(s, wf).await,
            None => argv_step(s, &env, secret).await,
        };
        logged = done.lines;
        facts.extend(done.facts);
        commands.push(done.command);
        if stops.shutdown.is_cancelled() {
            return Ok(StepsResult {
                failure: Some("stopped by shutdown".into()),
                abandoned: true,
                facts,
                commands,
            });
        }
        if done.failure.is_some() {
            return Ok(StepsResult {
                failure: done.failure,
                abandoned: false,
                facts,
                commands,
            });
        }
    }
    Ok(StepsResult {
        failure: None,
        abandoned: false,
        facts,
        commands,
    })
}

/// One step of a job, and what it runs with.
pub(crate) struct StepRun<'a> {
    pub app: &'a Arc<App>,
    pub job: &'a JobRow,
    pub step: &'a Step,
    pub version: Option<&'a str>,
    pub redactor: &'a Redactor,
    pub stops: &'a Stops,
    /// Lines in the job's log before this step.
    pub logged: usize,
}

/// How one step ended.
pub(crate) struct StepDone {
    /// `None`: it succeeded. Otherwise the job's failure: which step and how.
    pub failure: Option<String>,
    /// What ran, for the report: "deploy: deckhand demo deploy (succeeded)".
    pub command: String,
    /// Lines in the job's log so far, this step's included.
    pub lines: usize,
    pub facts: BTreeMap<String, String>,
}

/// An argv step: its program run to its end, output into the job log.
async fn argv_step(
    s: StepRun<'_>,
    env: &BTreeMap<String, String>,
    secret: Option<&Zeroizing<String>>,
) -> StepDone {
    let StepRun {
        app,
        job,
        step,
        redactor,
        stops,
        logged,
        ..
    } = s;
    let spec = step_spec(app, step, env, secret);
    let timeout = spec.timeout;
    let ran = run_one(app, job.id, step, spec, redactor, stops, logged).await;
    let failure = (!ran.outcome.success()).then(|| {
        let what = if ran.outcome == StepOutcome::Cancelled && !stops.cancel.is_cancelled() {
            JobState::Cancelled.as_str().to_owned()
        } else {
            ran.outcome.describe(timeout)
        };
        format!("step \"{}\" {what}", step.name)
    });
    StepDone {
        failure,
        command: format!(
            "{}: {} ({})",
            step.name,
            redactor.redact(&shown_argv(&step.argv)),
            ran.outcome.describe(timeout)
        ),
        lines: ran.lines,
        facts: ran.facts,
    }
}

/// A step's argv as a person would type it: arguments with spaces or shell specials in
/// single quotes. For reading only: steps never go through a shell.
pub(crate) fn shown_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// "step 2/3 running", with a Cancel button. Progress is best effort: a database blip
/// must not fail the deploy itself.
async fn announce(
    app: &App,
    job: &JobRow,
    version: Option<&str>,
    (n, total): (usize, usize),
    step: &Step,
) {
    let notice = Notice::new(
        NoticeKind::StepStarted,
        Tone::Progress,
        format!(
            "{}: step {n}/{total} \"{}\" running (job {})",
            env_of(job),
            step.name,
            job.id
        ),
    )
    .env(job.environment.as_deref())
    .version(version)
    .job(job.id)
    .action("cancel", "Cancel", job.id, true);
    if let Err(e) = app.db.apply(&notices(&app.settings, job, &notice)).await {
        tracing::warn!(job_id = job.id, error = %e, "cannot record step progress");
    }
    app.outbox_wake.notify_one();
}

/// How to start one step: its environment, timeout, working folder and stdin.
fn step_spec(
    app: &App,
    step: &Step,
    env: &BTreeMap<String, String>,
    secret: Option<&Zeroizing<String>>,
) -> StepSpec {
    let cfg = &app.settings.config;
    let mut vars = env.clone();
    vars.extend(step.env.clone());
    for k in &step.pass_env {
        if let Some(v) = std::env::var(k).ok().filter(|v| !v.is_empty()) {
            vars.insert(k.clone(), v);
        }
    }
    let mut argv = step.argv.clone();
    if argv.first().is_some_and(|a| a == "deckhand") {
        argv[0] = app.settings.deckhand_exe.display().to_string();
    }
    StepSpec {
        argv,
        env: vars,
        cwd: step.cwd.as_ref().map(|c| app.settings.resolve(c)),
        timeout: Duration::from_secs(
            step.timeout_seconds
                .unwrap_or(cfg.runner.default_timeout_seconds),
        ),
        kill_grace: Duration::from_secs(cfg.runner.kill_grace_seconds),
        stdin: if step.secret_stdin {
            secret.map(|s| Zeroizing::new(format!("{}\n", s.as_str())))
        } else {
            None
        },
        started: None,
    }
}

/// What one step did.
struct Ran {
    outcome: StepOutcome,
    /// Lines stored in the job's log so far, this step's included.
    lines: usize,
    facts: BTreeMap<String, String>,
}

/// A program Deckhand runs itself, as a step of the job.
pub(crate) struct Program {
    pub name: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Run a program of Deckhand's own (`pg_dump`, `pg_restore`) as a step named `name`: argv
/// only, `env` as its whole environment beyond the inherited basics, output into the job
/// log. Returns how it ended and its stored lines.
pub(crate) async fn run_program(
    app: &Arc<App>,
    job_id: i64,
    p: Program,
    redactor: &Redactor,
    stops: &Stops,
) -> StepOutcome {
    let Program {
        name,
        argv,
        env,
        timeout,
    } = p;
    let step = Step {
        name,
        argv: argv.clone(),
        workflow: None,
        env: BTreeMap::new(),
        pass_env: Vec::new(),
        cwd: None,
        timeout_seconds: Some(timeout.as_secs()),
        secret_stdin: false,
    };
    let spec = StepSpec {
        argv,
        env,
        cwd: None,
        timeout,
        kill_grace: Duration::from_secs(app.settings.config.runner.kill_grace_seconds),
        stdin: None,
        started: None,
    };
    let logged = app
        .db
        .job_log(job_id, 0)
        .await
        .map(|l| l.len())
        .unwrap_or(0);
    run_one(app, job_id, &step, spec, redactor, stops, logged)
        .await
        .outcome
}

/// Run one step to its end: its output into the job log, its process group on record
/// (so a crash can be cleaned up), stopped by a cancel or the shutdown deadline.
async fn run_one(
    app: &Arc<App>,
    job_id: i64,
    step: &Step,
    spec: StepSpec,
    redactor: &Redactor,
    stops: &Stops,
    logged: usize,
) -> Ran {
    let (tx, rx) = mpsc::channel(1024);
    let collector = tokio::spawn(
        collect_log(app.clone(), job_id, step.name.clone(), rx, logged).in_current_span(),
    );
    // Stopped by the server's shutdown (a child of its token) or by a cancel of the job.
    let either = stops.shutdown.child_token();
    let watcher = {
        let (cancel, e) = (stops.cancel.clone(), either.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            e.cancel();
        })
    };
    let (pg_tx, mut pg_rx) = mpsc::unbounded_channel();
    let spec = StepSpec {
        started: Some(pg_tx),
        ..spec
    };
    // On record before it is spawned, so a crash at any point leaves a deadline to wait for.
    let deadline =
        crate::domain::time::now_ms() + (spec.timeout + spec.kill_grace).as_millis() as i64;
    if let Err(e) = app
        .db
        .step_starting(job_id, &crate::app::hostname(), deadline)
        .await
    {
        tracing::warn!(job_id, error = %e, "cannot record the step's start");
    }
    let record = {
        let app = app.clone();
        tokio::spawn(async move {
            if let Some((g, leader)) = pg_rx.recv().await {
                let _ = app.db.step_group(job_id, g as i64, leader.as_deref()).await;
            }
        })
    };
    let outcome = runner::run_step(spec, redactor, tx, either).await;
    let _ = record.await;
    // The group is gone (run_step kills what the leader left). A pgid kept on record past
    // this point names a free pid that a later process may hold as its own group (a demo
    // app is a group leader): recovery after a crash in verify or watch would SIGKILL it.
    let _ = app.db.step_ended(job_id).await;
    watcher.abort();
    let (lines, facts) = collector.await.unwrap_or_default();
    Ran {
        outcome,
        lines,
        facts,
    }
}

/// The arguments a step receives, as `DECKHAND_*` environment variables only.
fn step_env(app: &App, job: &JobRow, version: Option<&str>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("DECKHAND_JOB_ID".into(), job.id.to_string());
    env.insert("DECKHAND_COMMAND".into(), job.command.clone());
    env.insert("DECKHAND_REQUESTED_BY".into(), job.requested_by.clone());
    env.insert(
        "DECKHAND_DATA_DIR".into(),
        app.settings.data_dir().display().to_string(),
    );
    if let Some(e) = &job.environment {
        env.insert("DECKHAND_ENVIRONMENT".into(), e.clone());
        if let Some(u) = app
            .settings
            .config
            .environments
            .get(e)
            .and_then(|c| c.health_url.clone())
        {
            env.insert("DECKHAND_HEALTH_URL".into(), u);
        }
    }
    if let Some(v) = version {
        env.insert("DECKHAND_VERSION".into(), v.to_owned());
    }
    for (k, v) in job.args_map() {
        // The full SHA GitHub resolved the version to, when GitHub is configured.
        if k == "commit_sha" {
            env.insert("DECKHAND_COMMIT_SHA".into(), v.clone());
        }
        env.insert(format!("DECKHAND_ARG_{}", k.to_uppercase()), v);
    }
    env
}

/// Store a step's lines in batches; stop storing past the configured limit with a note.
/// Returns the lines stored so far in the job and the facts the step reported.
async fn collect_log(
    app: Arc<App>,
    job_id: i64,
    step: String,
    mut rx: mpsc::Receiver<(Stream, String)>,
    mut stored: usize,
) -> (usize, BTreeMap<String, String>) {
    let max = app.settings.config.runner.max_log_lines;
    let mut facts = BTreeMap::new();
    let mut batch: Vec<(String, &'static str, String)> = Vec::new();
    let mut dropped = 0usize;
    let mut last_flush = Instant::now();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let done = matches!(next, Ok(None));
        if let Ok(Some((stream, line))) = next {
            if let Some(fact) = line.strip_prefix(REPORT_PREFIX)
                && let Some((k, v)) = fact.trim().split_once('=')
            {
                facts.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
            if stored + batch.len() < max {
                batch.push((step.clone(), stream.as_str(), line));
            } else {
                dropped += 1;
            }
        }
        if done || batch.len() >= 200 || last_flush.elapsed() > Duration::from_millis(200) {
            if done && dropped > 0 {
                batch.push((
                    step.clone(),
                    "note",
                    format!("[log truncated: {dropped} more lines of this step were not stored (limit {max} lines per job)]"),
                ));
            }
            if let Err(e) = app.db.append_log(job_id, &batch).await {
                tracing::warn!(job_id, error = %e, "cannot store job log lines");
            }
            stored += batch.len();
            batch.clear();
            last_flush = Instant::now();
        }
        if done {
            return (stored, facts);
        }
    }
}

/// A new secret value: `len` characters of `alphabet` from the OS random source.
pub fn generate_secret(len: usize, alphabet: &[u8]) -> anyhow::Result<Zeroizing<String>> {
    anyhow::ensure!(
        (2..=256).contains(&alphabet.len()),
        "a secret alphabet needs 2 to 256 characters"
    );
    #[allow(non_snake_case)]
    let ALPHABET = alphabet;
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        getrandom::fill(&mut buf[..])
            .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
        for b in buf.iter() {
            // Reject bytes past the largest multiple of the alphabet: no modulo bias.
            if (*b as usize) < 256 - 256 % ALPHABET.len() && out.len() < len {
                out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The first 8 hex digits of the SHA-256 of a secret: enough to compare, useless to steal.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_shown_as_typed() {
        let a: Vec<String> = ["deckhand", "demo", "deploy", "a b", "it's", ""]
            .map(String::from)
            .into();
        assert_eq!(
            super::shown_argv(&a),
            "deckhand demo deploy 'a b' 'it'\\''s' ''"
        );
    }

    #[test]
    fn secrets_are_random_and_fingerprinted() {
        let alnum = crate::config::Alphabet::Alnum.chars().as_bytes();
        let a = generate_secret(32, alnum).unwrap();
        let b = generate_secret(32, alnum).unwrap();
        let h = generate_secret(40, crate::config::Alphabet::Hex.chars().as_bytes()).unwrap();
        assert!(h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
