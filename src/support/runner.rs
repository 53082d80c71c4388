//! Runs one step as a child process.
//!
//! The step starts from an argv array (never a shell string) in its own process group, with
//! a cleared environment plus what the job gives it. stdout and stderr are read at the same
//! time, line by line, redacted, and handed to a sink. On timeout or cancel the whole group
//! gets SIGTERM, then SIGKILL after a grace period; when the leader exits, anything it left
//! behind in its group is killed too, so no orphan survives a step.

use crate::domain::state::JobState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
/// Cancellation of steps, loops and servers: tokio-util's token (`child_token` ties a
/// step to its job's and the server's).
pub use tokio_util::sync::CancellationToken as CancelToken;
use zeroize::Zeroizing;

/// Longest line kept; the rest is cut with a marker so one huge line cannot eat memory.
pub const MAX_LINE: usize = 4096;

/// Replaces every known secret value with `[redacted]`: as it is, and in the forms a step
/// may print it in: base64 (standard and URL-safe, padded or not, and the part of a larger
/// base64 text such as `user:secret` that only the secret decides), percent-encoded and hex.
///
/// Values shorter than [`Redactor::MIN_VALUE`] are left alone (they would match everywhere),
/// and so is any derived form shorter than [`Redactor::MIN_FORM`].
#[derive(Clone, Default)]
pub struct Redactor {
    /// The values as given, for [`Redactor::with`].
    values: Vec<Zeroizing<String>>,
    /// Every string to replace, longest first.
    patterns: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// The shortest value redacted.
    pub const MIN_VALUE: usize = 4;
    /// The shortest encoded form redacted: shorter ones are too likely to occur by chance.
    pub const MIN_FORM: usize = 8;

    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let values: Vec<Zeroizing<String>> = values
            .into_iter()
            .filter(|v| v.len() >= Self::MIN_VALUE)
            .map(Zeroizing::new)
            .collect();
        let mut patterns: Vec<Zeroizing<String>> = Vec::new();
        for v in &values {
            patterns.push(v.clone());
            patterns.extend(
                encoded_forms(v.as_bytes())
                    .into_iter()
                    .filter(|f| f.len() >= Self::MIN_FORM),
            );
        }
        // Longest first, so a secret that contains another is replaced whole.
        patterns.sort_by_key(|s| std::cmp::Reverse(s.len()));
        patterns.dedup();
        Self { values, patterns }
    }

    pub fn with(&self, value: &str) -> Self {
        let mut v: Vec<String> = self.values.iter().map(|s| s.to_string()).collect();
        v.push(value.to_owned());
        Self::new(v)
    }

    pub fn redact(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for s in &self.patterns {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// The encodings of a secret a step might print (the value itself excluded).
fn encoded_forms(v: &[u8]) -> Vec<Zeroizing<String>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out: Vec<Zeroizing<String>> = Vec::new();
    for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        out.push(Zeroizing::new(engine.encode(v)));
    }
    // Inside a larger base64 text the secret starts at any byte offset mod 3: the characters
    // made only of its bits are the same whatever surrounds it.
    for shift in 0..3usize {
        let mut bytes = Zeroizing::new(vec![0u8; shift]);
        bytes.extend_from_slice(v);
        let first = (8 * shift).div_ceil(6);
        let last = 8 * bytes.len() / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let all = Zeroizing::new(engine.encode(bytes.as_slice()));
            if let Some(core) = all.get(first..last) {
                out.push(Zeroizing::new(core.to_owned()));
            }
        }
    }
    // Percent-encoded: every byte but letters and digits, and with `-._~` kept (as URL
    // libraries do); `+` for a space as forms do.
    let percent = |keep: &[u8], space_plus: bool| {
        let mut s = String::with_capacity(v.len() * 3);
        for &b in v {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                s.push(b as char);
            } else if space_plus && b == b' ' {
                s.push('+');
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        Zeroizing::new(s)
    };
    out.push(percent(b"", false));
    out.push(percent(b"-._~", false));
    out.push(percent(b"-._~", true));
    out.push(percent(b"-._*", true));
    let lower = Zeroizing::new(hex::encode(v));
    out.push(Zeroizing::new(lower.to_ascii_uppercase()));
    out.push(lower);
    out.retain(|f| f.as_bytes() != v);
    out
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Written to the child's stdin, then stdin is closed. Zeroized when dropped.
    pub stdin: Option<Zeroizing<String>>,
    /// Told the step's process group id and its leader's identity once it starts (see
    /// [`super::pgroup`]), so a crash can be cleaned up.
    pub started: Option<mpsc::UnboundedSender<(u32, Option<String>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Exited with this code (0 is success).
    Exited(i32),
    /// Killed by a signal it did not expect.
    Signalled(i32),
    TimedOut,
    Cancelled,
    /// Could not start: the program is missing or not executable.
    StartFailed(String),
}

impl StepOutcome {
    pub fn success(&self) -> bool {
        *self == StepOutcome::Exited(0)
    }
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            StepOutcome::Exited(0) => JobState::Succeeded.as_str().into(),
            StepOutcome::Exited(c) => format!("exited with code {c}"),
            StepOutcome::Signalled(s) => format!("killed by signal {s}"),
            StepOutcome::TimedOut => format!("timed out after {} s", timeout.as_secs()),
            StepOutcome::Cancelled => JobState::Cancelled.as_str().into(),
            StepOutcome::StartFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// Environment variables every step gets from the bot's own environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"];

/// Run one step; each output line (redacted, cut at [`MAX_LINE`]) goes to `lines`.
pub async fn run_step(
    spec: StepSpec,
    redactor: &Redactor,
    lines: mpsc::Sender<(Stream, String)>,
    cancel: CancelToken,
) -> StepOutcome {
    let Some(program) = spec.argv.first() else {
        return StepOutcome::StartFailed("empty argv".into());
    };
    let program = resolve_program(program);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&spec.env)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return StepOutcome::StartFailed(format!("{}: {e}", program.display())),
    };
    let pgid = child.id().map(|p| p as i32);
    if let (Some(tx), Some(g)) = (&spec.started, pgid) {
        // Read now, while the leader is our unreaped child and its /proc entry is its own.
        let _ = tx.send((g as u32, super::pgroup::leader_identity(g)));
    }
    if let (Some(input), Some(mut stdin)) = (spec.stdin.as_ref(), child.stdin.take()) {
        // A step that never reads stdin must not block us: ignore a broken pipe.
        let _ = stdin.write_all(input.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let out = tokio::spawn(pump(
        child.stdout.take(),
        Stream::Stdout,
        lines.clone(),
        redactor.clone(),
    ));
    let err = tokio::spawn(pump(
        child.stderr.take(),
        Stream::Stderr,
        lines,
        redactor.clone(),
    ));

    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_outcome(s),
            Err(e) => StepOutcome::StartFailed(e.to_string()),
        },
        _ = tokio::time::sleep(spec.timeout) => {
            terminate_group(&mut child, pgid, spec.kill_grace).await;
            StepOutcome::TimedOut
        }
        _ = cancel.cancelled() => {
            terminate_group(&mut child, pgid, spec.kill_grace).await;
            StepOutcome::Cancelled
        }
    };
    // The leader is gone; whatever it left in its group (a forked child holding our pipes)
    // is an orphan: kill it so the pipes close and nothing outlives the step.
    if let Some(g) = pgid {
        kill_group(g, libc::SIGKILL);
    }
    let _ = out.await;
    let _ = err.await;
    outcome
}

/// `deckhand` as argv[0] means this very binary, wherever it is installed.
fn resolve_program(p: &str) -> PathBuf {
    if p == "deckhand"
        && let Ok(exe) = std::env::current_exe()
    {
        return exe;
    }
    PathBuf::from(p)
}

fn exit_outcome(s: std::process::ExitStatus) -> StepOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => StepOutcome::Exited(c),
        (None, Some(sig)) => StepOutcome::Signalled(sig),
        _ => StepOutcome::Exited(-1),
    }
}

/// Send a signal to a whole process group. A group that is already gone is fine.
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

async fn terminate_group(child: &mut tokio::process::Child, pgid: Option<i32>, grace: Duration) {
    if let Some(g) = pgid {
        kill_group(g, libc::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            kill_group(g, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

async fn pump(
    r: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
    redactor: Redactor,
) {
    let Some(r) = r else { return };
    let mut r = BufReader::with_capacity(16 * 1024, r);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let (mut cut, mut got_any, mut eof) = (false, false, false);
        // Read one line but keep at most MAX_LINE bytes of it.
        loop {
            let avail = match r.fill_buf().await {
                Ok(b) => b,
                Err(_) => return,
            };
            if avail.is_empty() {
                eof = true;
                break;
            }
            got_any = true;
            let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], Some(i + 1)),
                None => (avail, None),
            };
            let room = MAX_LINE.saturating_sub(buf.len());
            if chunk.len() > room {
                cut = true;
            }
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = found.unwrap_or(avail.len());
            r.consume(used);
            if found.is_some() {
                break;
            }
        }
        if !got_any {
            return;
        }
        let mut line = String::from_utf8_lossy(&buf).into_owned();
        if cut {
            line.push_str(" … [line cut]");
        }
        let line = redactor.redact(line.trim_end_matches('\r'));
        if tx.send((stream, line)).await.is_err() || eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout_ms: u64) -> StepSpec {
        StepSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout: Duration::from_millis(timeout_ms),
            kill_grace: Duration::from_millis(300),
            stdin: None,
            started: None,
        }
    }

    async fn run(s: StepSpec, r: &Redactor) -> (StepOutcome, Vec<(Stream, String)>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let h = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(l) = rx.recv().await {
                v.push(l);
            }
            v
        });
        let o = run_step(s, r, tx, CancelToken::new()).await;
        (o, h.await.unwrap())
    }

    #[test]
    fn redactor_replaces_longest_first() {
        let r = Redactor::new(["hunter2hunter2".into(), "hunter2".into(), "ab".into()]);
        assert_eq!(
            r.redact("pw=hunter2hunter2 and hunter2 and ab"),
            "pw=[redacted] and [redacted] and ab"
        );
    }

    // The encodings below were made apart from this code (coreutils `base64`, `xxd -p`,
    // Python's `urllib.parse.quote`).
    const SECRET: &str = "s3cr3t/v4lue+x?";
    const B64: &str = "czNjcjN0L3Y0bHVlK3g/";
    const B64_URL: &str = "czNjcjN0L3Y0bHVlK3g_";
    const HEX: &str = "7333637233742f76346c75652b783f";
    const PCT: &str = "s3cr3t%2Fv4lue%2Bx%3F";

    #[test]
    fn redactor_catches_base64_percent_and_hex_forms() {
        let r = Redactor::new([SECRET.into()]);
        for form in [SECRET, B64, B64_URL, HEX, &HEX.to_uppercase(), PCT] {
            assert_eq!(
                r.redact(&format!("value: {form} end")),
                "value: [redacted] end",
                "{form}"
            );
        }
        // Unpadded, and inside a larger base64 text: `Basic base64("deploy:" + secret)`.
        let r8 = Redactor::new(["abcdefgh".into()]);
        assert_eq!(r8.redact("x YWJjZGVmZ2g y"), "x [redacted] y");
        assert_eq!(r8.redact("x YWJjZGVmZ2g= y"), "x [redacted] y");
        let basic = "ZGVwbG95OnMzY3IzdC92NGx1ZSt4Pw==";
        let out = r.redact(&format!("Authorization: Basic {basic}"));
        assert!(!out.contains(basic), "{out}");
        assert!(out.contains("[redacted]"), "{out}");
        // Something else is left as it is.
        assert_eq!(r.redact("czNjcjN0 733363 s3cr"), "czNjcjN0 733363 s3cr");
    }

    #[test]
    fn short_values_and_their_short_forms_are_not_redacted() {
        // Too short to redact at all: two characters, and their encodings.
        let r = Redactor::new(["ab".into()]);
        assert_eq!(r.redact("ab YWI= 6162 a%62"), "ab YWI= 6162 a%62");
        // Four characters are redacted, and so is their 8-character hex, but not the 6- and
        // 4-character base64 fragments, which would turn up by chance.
        let r = Redactor::new(["abcd".into()]);
        assert_eq!(
            r.redact("abcd 61626364 YWJjZA== YWJj"),
            "[redacted] [redacted] [redacted] YWJj"
        );
    }

    #[tokio::test]
    async fn a_step_printing_an_encoded_secret_is_redacted() {
        let r = Redactor::new([SECRET.into()]);
        let script = format!("echo b64 {B64}; echo hex {HEX}; echo url {PCT} >&2");
        let (o, lines) = run(spec(&["sh", "-c", &script], 5000), &r).await;
        assert_eq!(o, StepOutcome::Exited(0));
        assert!(
            lines.contains(&(Stream::Stdout, "b64 [redacted]".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(Stream::Stdout, "hex [redacted]".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(Stream::Stderr, "url [redacted]".into())),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn captures_both_streams_and_redacts() {
        let r = Redactor::new(["s3cr3t-value".into()]);
        let (o, lines) = run(
            spec(
                &["sh", "-c", "echo out s3cr3t-value; echo err >&2; exit 3"],
                5000,
            ),
            &r,
        )
        .await;
        assert_eq!(o, StepOutcome::Exited(3));
        assert!(lines.contains(&(Stream::Stdout, "out [redacted]".into())));
        assert!(lines.contains(&(Stream::Stderr, "err".into())));
    }

    #[tokio::test]
    async fn missing_program_is_a_start_failure() {
        let (o, _) = run(spec(&["/nonexistent/prog"], 1000), &Redactor::default()).await;
        assert!(matches!(o, StepOutcome::StartFailed(_)), "{o:?}");
    }

    #[tokio::test]
    async fn long_lines_are_cut() {
        let (o, lines) = run(
            spec(&["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x"], 5000),
            &Redactor::default(),
        )
        .await;
        assert!(o.success());
        assert_eq!(lines.len(), 1);
        assert!(lines[0].1.ends_with("[line cut]"));
        assert!(lines[0].1.len() < MAX_LINE + 20);
    }

    #[tokio::test]
    async fn stdin_reaches_the_step() {
        let mut s = spec(&["sh", "-c", "read v; echo got ${#v}"], 5000);
        s.stdin = Some(Zeroizing::new("abcdef\n".into()));
        let (o, lines) = run(s, &Redactor::default()).await;
        assert!(o.success());
        assert_eq!(lines, vec![(Stream::Stdout, "got 6".into())]);
    }

    /// Is this process gone (or a zombie waiting for its reaper)?
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
        }
    }

    async fn wait_dead(pid: i32) -> bool {
        for _ in 0..100 {
            if dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // The grandchild ignores SIGTERM; only the group SIGKILL after the grace ends it.
        let s = spec(
            &[
                "sh",
                "-c",
                "sh -c 'trap \"\" TERM; sleep 60' & echo $!; sleep 60",
            ],
            300,
        );
        let (o, lines) = run(s, &Redactor::default()).await;
        assert_eq!(o, StepOutcome::TimedOut);
        let pid: i32 = lines[0].1.parse().unwrap();
        assert!(
            wait_dead(pid).await,
            "grandchild {pid} survived the timeout"
        );
    }

    #[tokio::test]
    async fn children_left_behind_are_killed() {
        let s = spec(&["sh", "-c", "sleep 60 & echo $!"], 5000);
        let (o, lines) = run(s, &Redactor::default()).await;
        assert!(o.success());
        let pid: i32 = lines[0].1.parse().unwrap();
        assert!(wait_dead(pid).await, "orphan {pid} survived its step");
    }

    #[tokio::test]
    async fn cancel_stops_the_step() {
        let (tx, mut rx) = mpsc::channel(16);
        let c = CancelToken::new();
        let c2 = c.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                c2.cancel();
            }
        });
        let o = run_step(
            spec(&["sh", "-c", "echo go; sleep 60"], 60_000),
            &Redactor::default(),
            tx,
            c,
        )
        .await;
        assert_eq!(o, StepOutcome::Cancelled);
    }
}
