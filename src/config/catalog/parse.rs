//! One command file: its TOML shape, and the checks that turn it into a [`Command`] or
//! every problem found, each with its line and what would be accepted.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::config::catalog::workflow::{Offer, RawWorkflow, workflow_step};
use crate::config::catalog::{Arg, ArgKind, BUILTINS, Command, JobKind, Problem, Step};
use crate::config::{Config, line_of};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: Spanned<String>,
    description: String,
    usage: Option<String>,
    kind: Spanned<String>,
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    args: Vec<RawArg>,
    #[serde(default)]
    role: Option<Spanned<String>>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    choices: Vec<String>,
    pattern: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// A step runs a program (`argv`) or a GitHub Actions workflow (`workflow`, `ref`,
/// `inputs`, `poll_ms`); `env`, `pass_env`, `cwd` and `secret_stdin` are for programs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    argv: Option<Spanned<Vec<String>>>,
    workflow: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    git_ref: Option<Spanned<String>>,
    inputs: Option<Spanned<BTreeMap<String, toml::Value>>>,
    poll_ms: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    pass_env: Vec<String>,
    cwd: Option<PathBuf>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    secret_stdin: bool,
}

const ARG_KINDS: &str = "environment, version, secret_name, choice, text";
const JOB_KINDS: &str = "deploy, rollback, migrate, restore, backup, rotate_secret, custom";

/// The problems found in one file so far.
pub(super) struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }
    /// A problem at the line where `span` starts.
    pub(super) fn at(&mut self, span: Range<usize>, message: String) {
        let line = self.line(span);
        self.on(line, message);
    }
    pub(super) fn on(&mut self, line: usize, message: String) {
        self.found.push(Problem {
            file: self.file.to_owned(),
            line,
            message,
        });
    }
}

/// Parse and validate one command file against the config.
pub fn parse_command(file: &str, text: &str, config: &Config) -> Result<Command, Vec<Problem>> {
    let raw: RawCommand = toml::from_str(text).map_err(|e| {
        vec![Problem {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().trim().to_owned(),
        }]
    })?;
    let mut ps = Problems {
        file,
        text,
        found: Vec::new(),
    };
    let name = raw.name.get_ref().clone();
    check_name(&name, raw.name.span(), &mut ps);
    let kind = JobKind::parse(raw.kind.get_ref()).unwrap_or_else(|| {
        ps.at(
            raw.kind.span(),
            format!(
                "unknown kind {:?}; accepted: {JOB_KINDS}",
                raw.kind.get_ref()
            ),
        );
        JobKind::Custom
    });
    let args = args(raw.args, &mut ps);
    let (roles, default_role) = roles(raw.roles, raw.role, config, &mut ps);
    let runs_on = |env: &str| roles.contains_key(env) || default_role.is_some();
    let offer = Offer::new(&args, kind, runs_on, config);
    let steps = steps(raw.steps, &offer, &mut ps);
    // Backups and restores are Deckhand's own pg_dump and pg_restore; other kinds run steps.
    if steps.is_empty() && !matches!(kind, JobKind::Restore | JobKind::Backup) {
        ps.on(1, "a command needs at least one [[steps]] entry".into());
    }
    if !ps.found.is_empty() {
        return Err(ps.found);
    }
    Ok(Command {
        usage: raw.usage.unwrap_or_else(|| default_usage(&name, &args)),
        name,
        description: raw.description,
        kind,
        idempotent: raw.idempotent,
        args,
        roles,
        default_role,
        channels: raw.channels,
        steps,
        file: file.to_owned(),
    })
}

fn check_name(name: &str, span: Range<usize>, ps: &mut Problems) {
    if !crate::domain::valid_name(name) {
        ps.at(
            span.clone(),
            format!(
                "command name {name:?} is invalid; expected lowercase letters, digits, '-' or '_'"
            ),
        );
    }
    if BUILTINS.iter().any(|b| b.0 == name) {
        ps.at(
            span,
            format!("command name {name:?} is built into deckhand; choose another"),
        );
    }
}

/// `[[args]]`: each argument's kind and name; required ones first.
fn args(raw: Vec<RawArg>, ps: &mut Problems) -> Vec<Arg> {
    let mut args = Vec::new();
    for a in raw {
        let Some(kind) = arg_kind(&a, ps) else {
            continue;
        };
        let arg_name = a.name.get_ref().clone();
        if !arg_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
            || arg_name.is_empty()
        {
            ps.at(
                a.name.span(),
                format!(
                    "argument name {arg_name:?} is invalid; expected lowercase letters and '_'"
                ),
            );
        }
        args.push(Arg {
            name: arg_name,
            kind,
            required: a.required,
            description: a.description,
        });
    }
    if let Some(i) = args.iter().position(|a| !a.required)
        && args[i..].iter().any(|a| a.required)
    {
        ps.on(
            1,
            "a required argument cannot follow an optional one".into(),
        );
    }
    args
}

/// `None`: the argument cannot be used (its problem is recorded).
fn arg_kind(a: &RawArg, ps: &mut Problems) -> Option<ArgKind> {
    Some(match a.kind.get_ref().as_str() {
        "environment" => ArgKind::Environment,
        "version" => ArgKind::Version,
        "secret_name" => ArgKind::SecretName,
        "choice" => {
            if a.choices.is_empty() {
                ps.at(
                    a.kind.span(),
                    format!(
                        "argument {:?} of kind choice needs a non-empty `choices` list",
                        a.name.get_ref()
                    ),
                );
            }
            ArgKind::Choice(a.choices.clone())
        }
        "text" => match &a.pattern {
            Some(pat) => match regex::Regex::new(&format!("^(?:{})$", pat.get_ref())) {
                Ok(re) => ArgKind::Text(re),
                Err(e) => {
                    ps.at(
                        pat.span(),
                        format!("pattern is not a valid regular expression: {e}"),
                    );
                    return None;
                }
            },
            None => {
                ps.at(
                    a.kind.span(),
                    format!("argument {:?} of kind text needs a `pattern` (a regular expression the whole value must match)", a.name.get_ref()),
                );
                return None;
            }
        },
        other => {
            ps.at(
                a.kind.span(),
                format!("unknown argument kind {other:?}; accepted: {ARG_KINDS}"),
            );
            return None;
        }
    })
}

/// `roles` per environment (`"*"` for any) and `role`: the role per environment, and the
/// default role.
fn roles(
    raw: BTreeMap<String, Spanned<String>>,
    role: Option<Spanned<String>>,
    config: &Config,
    ps: &mut Problems,
) -> (BTreeMap<String, String>, Option<String>) {
    let known_role = |r: &str| r == "everyone" || config.roles.contains_key(r);
    let roles_accepted = || {
        let mut v = vec!["everyone".to_owned()];
        v.extend(config.roles.keys().cloned());
        v.join(", ")
    };
    let mut roles = BTreeMap::new();
    for (env, role) in raw {
        if env != "*" && !config.environments.contains_key(&env) {
            ps.at(
                role.span(),
                format!(
                    "roles: {env:?} is not a configured environment; accepted: {}",
                    config
                        .environments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if !known_role(role.get_ref()) {
            ps.at(
                role.span(),
                format!(
                    "unknown role {:?}; accepted: {}",
                    role.get_ref(),
                    roles_accepted()
                ),
            );
        }
        roles.insert(env, role.into_inner());
    }
    let mut default_role = roles.remove("*");
    if let Some(r) = role {
        if !known_role(r.get_ref()) {
            ps.at(
                r.span(),
                format!(
                    "unknown role {:?}; accepted: {}",
                    r.get_ref(),
                    roles_accepted()
                ),
            );
        }
        default_role = Some(r.into_inner());
    }
    (roles, default_role)
}

/// `[[steps]]`: argv arrays that name a program and interpolate nothing, or workflows.
fn steps(raw: Vec<Spanned<RawStep>>, offer: &Offer, ps: &mut Problems) -> Vec<Step> {
    let mut steps = Vec::new();
    for s in raw {
        let line = ps.line(s.span());
        let s = s.into_inner();
        let (argv, workflow) = match (s.argv, s.workflow) {
            (Some(argv), None) => {
                check_argv(&argv, &s.env, &s.pass_env, line, ps);
                if s.git_ref.is_some() || s.inputs.is_some() || s.poll_ms.is_some() {
                    ps.on(
                        line,
                        "ref, inputs and poll_ms belong to workflow steps; an argv step gets its arguments as DECKHAND_* environment variables".into(),
                    );
                }
                (argv.into_inner(), None)
            }
            (None, Some(file)) => {
                if !s.env.is_empty() || !s.pass_env.is_empty() || s.cwd.is_some() || s.secret_stdin
                {
                    ps.on(
                        line,
                        "env, pass_env, cwd and secret_stdin belong to argv steps; a workflow step runs on GitHub and gets only its inputs".into(),
                    );
                }
                let raw = RawWorkflow {
                    file,
                    git_ref: s.git_ref,
                    inputs: s.inputs,
                    poll_ms: s.poll_ms,
                };
                (Vec::new(), Some(workflow_step(raw, line, offer, ps)))
            }
            (argv, _) => {
                let what = if argv.is_some() {
                    "has both argv and workflow; keep one"
                } else {
                    "needs argv (a program to run, e.g. argv = [\"./deploy.sh\"]) or workflow (a GitHub Actions workflow to dispatch, e.g. workflow = \"deploy.yml\")"
                };
                ps.on(line, format!("step {:?} {what}", s.name));
                continue;
            }
        };
        if s.timeout_seconds == Some(0) {
            ps.on(line, "timeout_seconds must be at least 1".into());
        }
        steps.push(Step {
            name: s.name,
            argv,
            workflow,
            env: s.env,
            pass_env: s.pass_env,
            cwd: s.cwd,
            timeout_seconds: s.timeout_seconds,
            secret_stdin: s.secret_stdin,
        });
    }
    steps
}

/// An argv names a program, interpolates nothing, and leaves `DECKHAND_*` to arguments.
fn check_argv(
    argv: &Spanned<Vec<String>>,
    env: &BTreeMap<String, String>,
    pass_env: &[String],
    line: usize,
    ps: &mut Problems,
) {
    let a = argv.get_ref();
    if a.is_empty() || a[0].is_empty() {
        ps.at(
            argv.span(),
            "argv must name a program: e.g. [\"./deploy.sh\", \"--verbose\"]".into(),
        );
    }
    if a.iter().any(|a| a.contains("{{") || a.contains("${")) {
        ps.at(
            argv.span(),
            "argv cannot interpolate arguments; steps receive them as DECKHAND_* environment variables".into(),
        );
    }
    for k in env.keys().chain(pass_env.iter()) {
        if k.starts_with("DECKHAND_") {
            ps.on(
                line,
                format!("env {k:?}: the DECKHAND_ prefix is reserved for arguments"),
            );
        }
    }
}

/// `NAME ARG [OPTIONAL]`, for a file that does not spell out its usage.
fn default_usage(name: &str, args: &[Arg]) -> String {
    let mut u = name.to_owned();
    for a in args {
        let n = a.name.to_uppercase();
        u.push(' ');
        u.push_str(&if a.required { n } else { format!("[{n}]") });
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::catalog::tests::config;

    #[test]
    fn broken_files_report_line_and_reason() {
        let c = config();
        let text = "name = \"x\"\ndescription = \"d\"\nkind = \"deploy\"\n\n[[args]]\nname = \"v\"\nkind = \"sha\"\n\n[[steps]]\nname = \"s\"\nargv = [\"true\"]\n";
        let e = parse_command("commands/x.toml", text, &c).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 7);
        assert!(
            e[0].message.contains("unknown argument kind \"sha\""),
            "{}",
            e[0]
        );
        assert!(e[0].message.contains("environment, version"), "{}", e[0]);

        let e = parse_command("x.toml", "name = \"x\"\ndescription = \"d\"\nkind = \"deploy\"\nrole = \"wizard\"\n[[steps]]\nname=\"s\"\nargv=[\"true\"]\n", &c).unwrap_err();
        assert_eq!(e[0].line, 4);
        assert!(e[0].message.contains("unknown role \"wizard\""));

        let e = parse_command(
            "x.toml",
            "name = \"x\"\ndescription = \"d\"\nkind = \"deploy\"\nstepz = 1\n",
            &c,
        )
        .unwrap_err();
        assert_eq!(e[0].line, 4);
        assert!(e[0].message.contains("stepz"), "{}", e[0]);
    }
}
