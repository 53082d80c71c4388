//! Tuning of the running process: `[queue]`, `[runner]`, `[locks]` and `[storage]`.

use serde::Deserialize;

use crate::config::{Config, line_of_str};

/// `[storage]`: how hard SQLite works to keep each commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"full"` (default): every commit, so every acknowledged command, is fsynced before
    /// the answer — it survives a power cut, at the cost of one fsync per command.
    /// `"normal"`: commits survive a crash of Deckhand (kill -9) but the last ones may be
    /// lost if the machine itself loses power; several times faster on slow disks.
    pub sqlite_synchronous: String,
    /// Connections of the shared pool that workers, the sender and the loops use (unset:
    /// `queue.workers + 4`). New commands have a small pool of their own besides, so an
    /// acknowledgement never waits for a connection behind background work.
    pub max_connections: Option<u32>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sqlite_synchronous: "full".into(),
            max_connections: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksConfig {
    /// A lock older than this gets a reminder in its channel, and again this often.
    pub remind_after_seconds: u64,
    /// Who may release someone else's lock: the holder always may; besides them, people
    /// with this role (admins always), or `"everyone"` who may change the environment.
    pub unlock_others: String,
}

impl Default for LocksConfig {
    fn default() -> Self {
        Self {
            remind_after_seconds: 4 * 3600,
            unlock_others: "admin".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a claim holds a job without a heartbeat. A process that dies is noticed
    /// after this long, and its running jobs are reported as interrupted.
    pub lease_seconds: u64,
    /// Jobs run at once by one process (different environments run in parallel).
    pub workers: usize,
    /// Fallback poll interval when no wake-up arrives.
    pub poll_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_seconds: 30,
            workers: 4,
            poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Time between SIGTERM and SIGKILL when a step times out or is cancelled.
    pub kill_grace_seconds: u64,
    /// Timeout of a step that does not set one.
    pub default_timeout_seconds: u64,
    /// Names of environment variables whose values are secrets: a step may receive them
    /// (through `pass_env`), and their values are redacted from every log and message.
    pub secret_env: Vec<String>,
    /// Lines stored per job before the log is truncated with a note.
    pub max_log_lines: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            kill_grace_seconds: 10,
            default_timeout_seconds: 900,
            secret_env: Vec::new(),
            max_log_lines: 10_000,
        }
    }
}

/// Problems in `[queue]` and `[storage]`, as (line, message).
pub(super) fn runtime_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if c.queue.lease_seconds < 2 {
        out.push((
            line_of_str(text, "lease_seconds"),
            "queue.lease_seconds must be at least 2".into(),
        ));
    }
    if !["full", "normal"].contains(&c.storage.sqlite_synchronous.as_str()) {
        out.push((
            line_of_str(text, "sqlite_synchronous"),
            format!(
                "storage.sqlite_synchronous = {:?}; accepted: \"full\" or \"normal\"",
                c.storage.sqlite_synchronous
            ),
        ));
    }
    if c.queue.workers == 0 {
        out.push((
            line_of_str(text, "workers"),
            "queue.workers must be at least 1".into(),
        ));
    }
    out
}
