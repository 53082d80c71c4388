//! The command catalog: one TOML file per chat command in `commands/`.
//!
//! A file declares the command's name, description, usage, typed arguments, the role it needs
//! per environment, the job kind, whether re-running it is safe, and its steps (argv arrays,
//! never shell strings). [`Catalog::parse_args`] turns what a person typed into
//! validated arguments, or a refusal that shows the usage and what would be accepted.
//!
//! This file owns the command model and loading the folder; a file's format and checks
//! are in `parse`, typed arguments in `args`.

mod args;
mod parse;
mod workflow;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;

pub use args::{ParsedArgs, accepted};
pub use parse::parse_command;
pub use workflow::{MAX_INPUTS, MIN_POLL_MS, Template, TemplatePart};

/// The bundled command files, used with the embedded config.
pub const EMBEDDED_COMMANDS: &[(&str, &str)] = &[
    ("deploy.toml", include_str!("../../../commands/deploy.toml")),
    (
        "rollback.toml",
        include_str!("../../../commands/rollback.toml"),
    ),
    (
        "migrate.toml",
        include_str!("../../../commands/migrate.toml"),
    ),
    ("backup.toml", include_str!("../../../commands/backup.toml")),
    (
        "restore.toml",
        include_str!("../../../commands/restore.toml"),
    ),
    (
        "rotate-secret.toml",
        include_str!("../../../commands/rotate-secret.toml"),
    ),
    (
        "cost-demo.toml",
        include_str!("../../../commands/cost-demo.toml"),
    ),
];

/// Commands built into Deckhand rather than defined by files.
pub const BUILTINS: &[(&str, &str, &str)] = &[
    ("help", "List the commands you may run", "help"),
    (
        "status",
        "Show each environment's version, lock and jobs",
        "status [ENVIRONMENT]",
    ),
    (
        "history",
        "Show the last deployments of an environment",
        "history ENVIRONMENT",
    ),
    (
        "approve",
        "Approve a job that waits for approval",
        "approve JOB",
    ),
    (
        "reject",
        "Reject a job that waits for approval",
        "reject JOB",
    ),
    ("cancel", "Cancel a queued or running job", "cancel JOB"),
    (
        "lock",
        "Lock an environment against deploys",
        "lock ENVIRONMENT REASON",
    ),
    ("unlock", "Unlock an environment", "unlock ENVIRONMENT"),
    (
        "ack",
        "Acknowledge an incident: you take it",
        "ack INCIDENT",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Deploy,
    Rollback,
    Migrate,
    /// Replace an environment's database with one of its tested backups.
    Restore,
    /// A tested backup of an environment's database.
    Backup,
    RotateSecret,
    Custom,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Deploy => "deploy",
            JobKind::Rollback => "rollback",
            JobKind::Migrate => "migrate",
            JobKind::Restore => "restore",
            JobKind::Backup => "backup",
            JobKind::RotateSecret => "rotate_secret",
            JobKind::Custom => "custom",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deploy" => JobKind::Deploy,
            "rollback" => JobKind::Rollback,
            "migrate" => JobKind::Migrate,
            "restore" => JobKind::Restore,
            "backup" => JobKind::Backup,
            "rotate_secret" => JobKind::RotateSecret,
            "custom" => JobKind::Custom,
            _ => return None,
        })
    }
    /// Jobs that change an environment: at most one runs per environment.
    pub fn mutating(self) -> bool {
        !matches!(self, JobKind::Custom)
    }
}

#[derive(Debug, Clone)]
pub enum ArgKind {
    Environment,
    Version,
    SecretName,
    Choice(Vec<String>),
    Text(regex::Regex),
}

impl PartialEq for ArgKind {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (ArgKind::Choice(a), ArgKind::Choice(b)) => a == b,
            (ArgKind::Text(a), ArgKind::Text(b)) => a.as_str() == b.as_str(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Arg {
    pub name: String,
    pub kind: ArgKind,
    pub required: bool,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// The program and its arguments; empty for a `workflow` step.
    pub argv: Vec<String>,
    /// A GitHub Actions workflow to dispatch and follow instead of a program.
    pub workflow: Option<WorkflowStep>,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub timeout_seconds: Option<u64>,
    /// Give the step the generated secret on stdin (rotate-secret).
    pub secret_stdin: bool,
}

/// `workflow = "deploy.yml"`, `ref` and `inputs`: a workflow run on GitHub as a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowStep {
    /// The workflow's file name in `.github/workflows/`.
    pub file: String,
    /// The branch or tag GitHub runs the workflow file from.
    pub git_ref: Template,
    /// Input name → value, each filled from the job's validated arguments.
    pub inputs: BTreeMap<String, Template>,
    /// How often the run is asked about; `[github] workflow_poll_ms` when unset.
    pub poll_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub description: String,
    pub usage: String,
    pub kind: JobKind,
    pub idempotent: bool,
    pub args: Vec<Arg>,
    /// Role needed per environment; `default_role` for environments not listed.
    pub roles: BTreeMap<String, String>,
    pub default_role: Option<String>,
    /// Channels (platform channel ids) the command may be used in; empty means any.
    pub channels: Vec<String>,
    pub steps: Vec<Step>,
    pub file: String,
}

impl Command {
    /// The role needed to run this command on `env` (or anywhere, for commands without an
    /// environment). `None`: nobody may (production defaults to deny).
    pub fn role_for(&self, env: Option<&str>) -> Option<&str> {
        env.and_then(|e| self.roles.get(e))
            .or(self.default_role.as_ref())
            .map(String::as_str)
    }
    pub fn env_arg(&self) -> Option<&Arg> {
        self.args.iter().find(|a| a.kind == ArgKind::Environment)
    }
}

/// One problem in one file, with the line and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The `*.toml` files of a folder, by name, as (path, text).
fn read_folder(d: &Path) -> Result<Vec<(String, String)>, Vec<Problem>> {
    let rd = std::fs::read_dir(d).map_err(|e| {
        vec![Problem {
            file: d.display().to_string(),
            line: 0,
            message: format!("cannot read the commands folder: {e}"),
        }]
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(t) => files.push((path.display().to_string(), t)),
            Err(e) => {
                return Err(vec![Problem {
                    file: path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }]);
            }
        }
    }
    Ok(files)
}

/// An `auto_deploy` runs a deploy command of the catalog.
fn auto_deploy_problems(commands: &BTreeMap<String, Command>, config: &Config) -> Vec<Problem> {
    config
        .auto_deploys()
        .filter(|(_, a)| {
            commands
                .get(&a.command)
                .is_none_or(|c| c.kind != JobKind::Deploy)
        })
        .map(|(env, a)| Problem {
            file: "deckhand.toml".into(),
            line: 0,
            message: format!(
                "environments.{env}.auto_deploy.command = {:?} is not a deploy command of the catalog; accepted: {}",
                a.command,
                commands
                    .values()
                    .filter(|c| c.kind == JobKind::Deploy)
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect()
}

/// All commands.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub commands: BTreeMap<String, Command>,
}

impl Catalog {
    /// Load from a folder, or the embedded set when `dir` is `None`. Returns every problem.
    pub fn load(dir: Option<&Path>, config: &Config) -> Result<Self, Vec<Problem>> {
        let files = match dir {
            None => EMBEDDED_COMMANDS
                .iter()
                .map(|(n, t)| (format!("<embedded commands/{n}>"), (*t).to_owned()))
                .collect(),
            Some(d) => read_folder(d)?,
        };
        let mut problems = Vec::new();
        let mut commands = BTreeMap::new();
        for (file, text) in files {
            match parse_command(&file, &text, config) {
                Ok(c) => {
                    if let Some(prev) = commands.get(&c.name) {
                        let prev: &Command = prev;
                        problems.push(Problem {
                            file: file.clone(),
                            line: 1,
                            message: format!(
                                "command {:?} is also defined in {}",
                                c.name, prev.file
                            ),
                        });
                    } else {
                        commands.insert(c.name.clone(), c);
                    }
                }
                Err(mut ps) => problems.append(&mut ps),
            }
        }
        problems.extend(auto_deploy_problems(&commands, config));
        if problems.is_empty() {
            Ok(Self { commands })
        } else {
            Err(problems)
        }
    }

    /// Every command name people can type, built-ins included.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.commands.keys().cloned().collect();
        v.extend(BUILTINS.iter().map(|b| b.0.to_owned()));
        v.sort();
        v
    }

    pub fn get(&self, name: &str) -> Option<&Command> {
        self.commands.get(name.trim_start_matches('/'))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{EMBEDDED_CONFIG, parse_config};

    pub(crate) fn config() -> Config {
        parse_config("x", EMBEDDED_CONFIG, &BTreeMap::<String, String>::new()).unwrap()
    }

    pub(crate) fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn embedded_commands_load() {
        let c = config();
        let cat = Catalog::load(None, &c).unwrap();
        for n in ["deploy", "rollback", "migrate", "rotate-secret"] {
            assert!(cat.get(n).is_some(), "{n}");
        }
        assert_eq!(
            cat.get("deploy").unwrap().role_for(Some("production")),
            Some("deployer")
        );
        assert_eq!(
            cat.get("deploy").unwrap().role_for(Some("staging")),
            Some("everyone")
        );
    }
}
