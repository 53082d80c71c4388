//! The message model: platform-neutral notices.
//!
//! A [`Notice`] is a headline, a tone, and an ordered list of labelled [`Field`]s, plus
//! optional body text and buttons. Every renderer (terminal text, Slack Block Kit, Discord
//! embeds) walks the same fields generically, so a field added here shows on every platform
//! without platform code changes.

use crate::domain::time::fmt_duration;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    EnvironmentReady,
    EnvironmentLocked,
    JobQueued,
    AwaitingApproval,
    DeploymentStarted,
    StepStarted,
    DeploymentComplete,
    DeploymentFailed,
    RolledBack,
    MigrationApplied,
    SecretRotated,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    JobInterrupted,
    JobRequeued,
    ApprovalExpired,
    EmergencyOverride,
    InfrastructureIssue,
    BlockerResolved,
    Digest,
    StepOutput,
}

impl NoticeKind {
    /// Does this notice end the job's story?
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NoticeKind::DeploymentComplete
                | NoticeKind::DeploymentFailed
                | NoticeKind::RolledBack
                | NoticeKind::MigrationApplied
                | NoticeKind::SecretRotated
                | NoticeKind::JobSucceeded
                | NoticeKind::JobFailed
                | NoticeKind::JobCancelled
                | NoticeKind::JobInterrupted
                | NoticeKind::ApprovalExpired
        )
    }
}

/// How the notice should look: colour on Discord, emoji on Slack and in the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    Info,
    Progress,
    Success,
    Warning,
    Danger,
}

impl Tone {
    pub fn symbol(self) -> &'static str {
        match self {
            Tone::Info => "ℹ",
            Tone::Progress => "…",
            Tone::Success => "✔",
            Tone::Warning => "⚠",
            Tone::Danger => "✖",
        }
    }
}

/// The label of the field that links to the status page.
pub const PAGE_FIELD: &str = "Page";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub label: String,
    pub value: String,
}

/// A button; its `action` and `job_id` come back when clicked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action: String,
    pub label: String,
    pub job_id: i64,
    #[serde(default)]
    pub danger: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub tone: Tone,
    /// One line that names what happened, where and which version.
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// Longer text, e.g. step output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Post as a reply in the thread's message instead of editing it ("blocker resolved"
    /// under an incident, a reminder).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply: bool,
    /// A file to attach (a digest chart): an id in the `attachments` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<i64>,
}

impl Notice {
    pub fn new(kind: NoticeKind, tone: Tone, title: impl Into<String>) -> Self {
        Self {
            kind,
            tone,
            title: title.into(),
            environment: None,
            version: None,
            job_id: None,
            fields: Vec::new(),
            body: None,
            actions: Vec::new(),
            reply: false,
            attachment: None,
        }
    }
    /// Make this a reply in the thread rather than an edit of its message.
    pub fn as_reply(mut self) -> Self {
        self.reply = true;
        self
    }
    /// Whether platforms should post this under the thread's message.
    pub fn is_reply(&self) -> bool {
        self.reply || self.kind == NoticeKind::StepOutput
    }
    pub fn env(mut self, e: Option<&str>) -> Self {
        self.environment = e.map(str::to_owned);
        self
    }
    pub fn version(mut self, v: Option<&str>) -> Self {
        self.version = v.map(str::to_owned);
        self
    }
    pub fn job(mut self, id: i64) -> Self {
        self.job_id = Some(id);
        self
    }
    pub fn field(mut self, label: &str, value: impl Into<String>) -> Self {
        self.fields.push(Field {
            label: label.to_owned(),
            value: value.into(),
        });
        self
    }
    /// Link to the status page about this notice's subject (`[ui] public_url` + `path`), as
    /// its last field, so every renderer shows it; replies (step output, reminders) get none.
    pub fn page_link(mut self, base: Option<&str>, path: &str) -> Self {
        if let Some(base) = base
            && !self.is_reply()
            && !self.fields.iter().any(|f| f.label == PAGE_FIELD)
        {
            self = self.field(PAGE_FIELD, format!("{base}{path}"));
        }
        self
    }
    pub fn body(mut self, b: impl Into<String>) -> Self {
        self.body = Some(b.into());
        self
    }
    pub fn action(mut self, action: &str, label: &str, job_id: i64, danger: bool) -> Self {
        self.actions.push(Action {
            action: action.to_owned(),
            label: label.to_owned(),
            job_id,
            danger,
        });
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a notice always serializes")
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// Plain text for a terminal or a log line.
    pub fn render_text(&self) -> String {
        let mut out = format!("{} {}", self.tone.symbol(), self.title);
        let width = self
            .fields
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(0);
        for f in &self.fields {
            // Later lines of a multi-line value line up under its first.
            let pad = format!("\n    {:width$}  ", "", width = width + 1);
            out.push_str(&format!(
                "\n    {:<width$}  {}",
                format!("{}:", f.label),
                f.value.replace('\n', &pad),
                width = width + 1
            ));
        }
        if let Some(b) = &self.body {
            for l in b.lines() {
                out.push_str("\n    │ ");
                out.push_str(l);
            }
        }
        out
    }
}

/// The facts of a deployment report, shared by every platform.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub environment: String,
    pub version: String,
    pub migration: String,
    pub health_url: Option<String>,
    pub health: String,
    pub status: String,
    pub duration_ms: i64,
    pub requested_by: String,
    pub extra: Vec<(String, String)>,
}

impl Report {
    /// Add the report's fields. Facts that do not apply to this kind of job (no version for
    /// a migration, no health check for a custom command) are left out, not shown as "-".
    pub fn apply(&self, mut n: Notice) -> Notice {
        let known = |v: &str| !(v.is_empty() || v == "-" || v == "not checked");
        n = n
            .env(Some(&self.environment))
            .field("Environment", &self.environment);
        if known(&self.version) {
            n = n
                .version(Some(&self.version))
                .field("Version", &self.version);
        }
        if known(&self.migration) {
            n = n.field("Migration", &self.migration);
        }
        if known(&self.health) {
            n = n.field(
                "Health",
                match &self.health_url {
                    Some(u) => format!("{u} {}", self.health),
                    None => self.health.clone(),
                },
            );
        }
        n = n
            .field("Status", &self.status)
            .field("Duration", fmt_duration(self.duration_ms))
            .field("Requested by", &self.requested_by);
        for (k, v) in &self.extra {
            n = n.field(k, v);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_environment_version_and_health() {
        let r = Report {
            environment: "staging".into(),
            version: "abc1234".into(),
            migration: "not needed".into(),
            health_url: Some("http://127.0.0.1:1/health".into()),
            health: "returning 200".into(),
            status: "verified working".into(),
            duration_ms: 1500,
            requested_by: "terminal:operator".into(),
            extra: vec![],
        };
        let n = r.apply(Notice::new(
            NoticeKind::DeploymentComplete,
            Tone::Success,
            "Deployed abc1234 to staging, health check passing",
        ));
        let t = n.render_text();
        for s in [
            "staging",
            "abc1234",
            "http://127.0.0.1:1/health returning 200",
            "verified working",
            "1.5 s",
        ] {
            assert!(t.contains(s), "{s} missing from {t}");
        }
        let back = Notice::from_json(&n.to_json()).unwrap();
        assert_eq!(back, n);
    }
}
