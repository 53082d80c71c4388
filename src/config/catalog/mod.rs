//! The command catalog: one TOML file per chat command in `commands/`.
//!
//! A file declares the command's name, description, usage, typed arguments, the role it needs
//! per environment, the job kind, whether re-running it is safe, and its steps (argv arrays,
//! never shell strings). [`Catalog::parse_invocation`] turns what a person typed into
//! validated arguments, or a refusal that shows the usage and what would be accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Config, line_of};
use crate::domain::{EnvName, SecretName, Version};

/// The bundled command files, used with the embedded config.
pub const EMBEDDED_COMMANDS: &[(&str, &str)] = &[
    ("deploy.toml", include_str!("../../commands/deploy.toml")),
    (
        "rollback.toml",
        include_str!("../../commands/rollback.toml"),
    ),
    ("migrate.toml", include_str!("../../commands/migrate.toml")),
    (
        "rotate-secret.toml",
        include_str!("../../commands/rotate-secret.toml"),
    ),
    (
        "cost-demo.toml",
        include_str!("../../commands/cost-demo.toml"),
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
    RotateSecret,
    Custom,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Deploy => "deploy",
            JobKind::Rollback => "rollback",
            JobKind::Migrate => "migrate",
            JobKind::RotateSecret => "rotate_secret",
            JobKind::Custom => "custom",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deploy" => JobKind::Deploy,
            "rollback" => JobKind::Rollback,
            "migrate" => JobKind::Migrate,
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
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub timeout_seconds: Option<u64>,
    /// Give the step the generated secret on stdin (rotate-secret).
    pub secret_stdin: bool,
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

// ---- file format ----------------------------------------------------------------------

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    argv: Spanned<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    pass_env: Vec<String>,
    cwd: Option<PathBuf>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    secret_stdin: bool,
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

const ARG_KINDS: &str = "environment, version, secret_name, choice, text";
const JOB_KINDS: &str = "deploy, rollback, migrate, rotate_secret, custom";

/// Parse and validate one command file against the config.
pub fn parse_command(file: &str, text: &str, config: &Config) -> Result<Command, Vec<Problem>> {
    let p = |line: usize, message: String| Problem {
        file: file.to_owned(),
        line,
        message,
    };
    let raw: RawCommand = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        vec![p(line, e.message().trim().to_owned())]
    })?;
    let at = |s: std::ops::Range<usize>| line_of(text, s.start);
    let mut problems = Vec::new();

    let name = raw.name.get_ref().clone();
    if !crate::domain::valid_name(&name) {
        problems.push(p(
            at(raw.name.span()),
            format!(
                "command name {name:?} is invalid; expected lowercase letters, digits, '-' or '_'"
            ),
        ));
    }
    if BUILTINS.iter().any(|b| b.0 == name) {
        problems.push(p(
            at(raw.name.span()),
            format!("command name {name:?} is built into deckhand; choose another"),
        ));
    }
    let kind = JobKind::parse(raw.kind.get_ref()).unwrap_or_else(|| {
        problems.push(p(
            at(raw.kind.span()),
            format!(
                "unknown kind {:?}; accepted: {JOB_KINDS}",
                raw.kind.get_ref()
            ),
        ));
        JobKind::Custom
    });

    let mut args = Vec::new();
    for a in raw.args {
        let arg_kind = match a.kind.get_ref().as_str() {
            "environment" => ArgKind::Environment,
            "version" => ArgKind::Version,
            "secret_name" => ArgKind::SecretName,
            "choice" => {
                if a.choices.is_empty() {
                    problems.push(p(
                        at(a.kind.span()),
                        format!(
                            "argument {:?} of kind choice needs a non-empty `choices` list",
                            a.name.get_ref()
                        ),
                    ));
                }
                ArgKind::Choice(a.choices.clone())
            }
            "text" => match &a.pattern {
                Some(pat) => match regex::Regex::new(&format!("^(?:{})$", pat.get_ref())) {
                    Ok(re) => ArgKind::Text(re),
                    Err(e) => {
                        problems.push(p(
                            at(pat.span()),
                            format!("pattern is not a valid regular expression: {e}"),
                        ));
                        continue;
                    }
                },
                None => {
                    problems.push(p(
                        at(a.kind.span()),
                        format!("argument {:?} of kind text needs a `pattern` (a regular expression the whole value must match)", a.name.get_ref()),
                    ));
                    continue;
                }
            },
            other => {
                problems.push(p(
                    at(a.kind.span()),
                    format!("unknown argument kind {other:?}; accepted: {ARG_KINDS}"),
                ));
                continue;
            }
        };
        let arg_name = a.name.get_ref().clone();
        if !arg_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
            || arg_name.is_empty()
        {
            problems.push(p(
                at(a.name.span()),
                format!(
                    "argument name {arg_name:?} is invalid; expected lowercase letters and '_'"
                ),
            ));
        }
        args.push(Arg {
            name: arg_name,
            kind: arg_kind,
            required: a.required,
            description: a.description,
        });
    }
    if let Some(i) = args.iter().position(|a| !a.required)
        && args[i..].iter().any(|a| a.required)
    {
        problems.push(p(
            1,
            "a required argument cannot follow an optional one".into(),
        ));
    }

    let known_role = |r: &str| r == "everyone" || config.roles.contains_key(r);
    let roles_accepted = || {
        let mut v = vec!["everyone".to_owned()];
        v.extend(config.roles.keys().cloned());
        v.join(", ")
    };
    let mut roles = BTreeMap::new();
    for (env, role) in raw.roles {
        if env != "*" && !config.environments.contains_key(&env) {
            problems.push(p(
                at(role.span()),
                format!(
                    "roles: {env:?} is not a configured environment; accepted: {}",
                    config
                        .environments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !known_role(role.get_ref()) {
            problems.push(p(
                at(role.span()),
                format!(
                    "unknown role {:?}; accepted: {}",
                    role.get_ref(),
                    roles_accepted()
                ),
            ));
        }
        roles.insert(env, role.into_inner());
    }
    let mut default_role = roles.remove("*");
    if let Some(r) = raw.role {
        if !known_role(r.get_ref()) {
            problems.push(p(
                at(r.span()),
                format!(
                    "unknown role {:?}; accepted: {}",
                    r.get_ref(),
                    roles_accepted()
                ),
            ));
        }
        default_role = Some(r.into_inner());
    }

    let mut steps = Vec::new();
    for s in raw.steps {
        let line = at(s.span());
        let s = s.into_inner();
        let argv = s.argv.get_ref();
        if argv.is_empty() || argv[0].is_empty() {
            problems.push(p(
                at(s.argv.span()),
                "argv must name a program: e.g. [\"./deploy.sh\", \"--verbose\"]".into(),
            ));
        }
        if argv.iter().any(|a| a.contains("{{") || a.contains("${")) {
            problems.push(p(
                at(s.argv.span()),
                "argv cannot interpolate arguments; steps receive them as DECKHAND_* environment variables".into(),
            ));
        }
        for k in s.env.keys().chain(s.pass_env.iter()) {
            if k.starts_with("DECKHAND_") {
                problems.push(p(
                    line,
                    format!("env {k:?}: the DECKHAND_ prefix is reserved for arguments"),
                ));
            }
        }
        if s.timeout_seconds == Some(0) {
            problems.push(p(line, "timeout_seconds must be at least 1".into()));
        }
        steps.push(Step {
            name: s.name,
            argv: s.argv.into_inner(),
            env: s.env,
            pass_env: s.pass_env,
            cwd: s.cwd,
            timeout_seconds: s.timeout_seconds,
            secret_stdin: s.secret_stdin,
        });
    }
    if steps.is_empty() {
        problems.push(p(1, "a command needs at least one [[steps]] entry".into()));
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let usage = raw.usage.unwrap_or_else(|| {
        let mut u = name.clone();
        for a in &args {
            let n = a.name.to_uppercase();
            u.push(' ');
            u.push_str(&if a.required { n } else { format!("[{n}]") });
        }
        u
    });
    Ok(Command {
        name,
        description: raw.description,
        usage,
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

/// Arguments after validation, ready for a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedArgs {
    /// By argument name; values passed every check of their kind.
    pub values: BTreeMap<String, String>,
    pub environment: Option<EnvName>,
    pub version: Option<Version>,
    pub secret: Option<SecretName>,
    /// `--emergency REASON`: skip promotion checks (admin only, announced loudly).
    pub emergency: Option<String>,
}

/// All commands.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub commands: BTreeMap<String, Command>,
}

impl Catalog {
    /// Load from a folder, or the embedded set when `dir` is `None`. Returns every problem.
    pub fn load(dir: Option<&Path>, config: &Config) -> Result<Self, Vec<Problem>> {
        let mut files: Vec<(String, String)> = Vec::new();
        match dir {
            None => {
                for (n, t) in EMBEDDED_COMMANDS {
                    files.push((format!("<embedded commands/{n}>"), (*t).to_owned()));
                }
            }
            Some(d) => {
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
            }
        }
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

    /// Validate typed arguments for a command.
    pub fn parse_args(
        &self,
        cmd: &Command,
        raw: &[String],
        config: &Config,
    ) -> Result<ParsedArgs, String> {
        let usage = || format!("usage: {}", cmd.usage);
        let mut out = ParsedArgs::default();
        let mut positional: Vec<&str> = Vec::new();
        let mut it = raw.iter();
        while let Some(a) = it.next() {
            if a == "--emergency" {
                let reason = it
                    .next()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty() && !s.starts_with("--"));
                match reason {
                    Some(r) if cmd.kind == JobKind::Deploy => out.emergency = Some(r.to_owned()),
                    Some(_) => {
                        return Err(format!("--emergency applies only to deploys; {}", usage()));
                    }
                    None => {
                        return Err(format!(
                            "--emergency needs a reason, e.g. --emergency \"hotfix for INC-123\"; {}",
                            usage()
                        ));
                    }
                }
            } else if let Some(reason) = a.strip_prefix("--emergency=") {
                if reason.trim().is_empty() {
                    return Err(format!("--emergency needs a reason; {}", usage()));
                }
                if cmd.kind != JobKind::Deploy {
                    return Err(format!("--emergency applies only to deploys; {}", usage()));
                }
                out.emergency = Some(reason.trim().to_owned());
            } else {
                positional.push(a);
            }
        }
        if positional.len() > cmd.args.len() {
            return Err(format!(
                "too many arguments: {} takes {}; {}",
                cmd.name,
                cmd.args.len(),
                usage()
            ));
        }
        for (i, arg) in cmd.args.iter().enumerate() {
            let Some(v) = positional.get(i).copied() else {
                if arg.required {
                    return Err(format!(
                        "missing {} ({}); {}",
                        arg.name.to_uppercase(),
                        accepted(arg, config),
                        usage()
                    ));
                }
                continue;
            };
            match &arg.kind {
                ArgKind::Environment => {
                    if !config.environments.contains_key(v) {
                        return Err(format!(
                            "unknown environment {v:?}; accepted: {}",
                            accepted(arg, config)
                        ));
                    }
                    out.environment = Some(EnvName::parse(v).map_err(|e| e.0)?);
                }
                ArgKind::Version => {
                    out.version = Some(Version::parse(v).map_err(|e| format!("{e}; {}", usage()))?);
                }
                ArgKind::SecretName => {
                    out.secret =
                        Some(SecretName::parse(v).map_err(|e| format!("{e}; {}", usage()))?);
                }
                ArgKind::Choice(choices) => {
                    if !choices.iter().any(|c| c == v) {
                        return Err(format!(
                            "{v:?} is not a valid {}; accepted: {}",
                            arg.name,
                            choices.join(", ")
                        ));
                    }
                }
                ArgKind::Text(re) => {
                    if v.len() > 256 || !re.is_match(v) {
                        return Err(format!(
                            "{v:?} is not a valid {}; it must match {}",
                            arg.name,
                            re.as_str()
                        ));
                    }
                }
            }
            out.values.insert(arg.name.clone(), v.to_owned());
        }
        Ok(out)
    }
}

/// Human text of what an argument accepts.
pub fn accepted(arg: &Arg, config: &Config) -> String {
    match &arg.kind {
        ArgKind::Environment => config
            .environments
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        ArgKind::Version => Version::ACCEPTED.to_owned(),
        ArgKind::SecretName => "a secret name such as STRIPE_KEY".to_owned(),
        ArgKind::Choice(c) => c.join(", "),
        ArgKind::Text(re) => format!("text matching {}", re.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EMBEDDED_CONFIG, parse_config};

    fn config() -> Config {
        parse_config("x", EMBEDDED_CONFIG, &BTreeMap::<String, String>::new()).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
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

    #[test]
    fn deploy_args_are_validated() {
        let c = config();
        let cat = Catalog::load(None, &c).unwrap();
        let d = cat.get("deploy").unwrap();
        let ok = cat.parse_args(d, &s(&["staging", "abc1234"]), &c).unwrap();
        assert_eq!(ok.environment.unwrap().as_str(), "staging");
        assert_eq!(ok.version.unwrap().as_str(), "abc1234");
        for bad in ["abc;id", "$(id)", "-rf"] {
            let e = cat.parse_args(d, &s(&["staging", bad]), &c).unwrap_err();
            assert!(e.contains("not a valid version"), "{e}");
        }
        let e = cat.parse_args(d, &s(&["qa", "abc1234"]), &c).unwrap_err();
        assert!(
            e.contains("unknown environment \"qa\"") && e.contains("staging"),
            "{e}"
        );
        let e = cat.parse_args(d, &s(&["staging"]), &c).unwrap_err();
        assert!(e.contains("missing VERSION") && e.contains("usage"), "{e}");
        let e = cat
            .parse_args(d, &s(&["staging", "a", "b"]), &c)
            .unwrap_err();
        assert!(e.contains("too many"), "{e}");
        let e = cat
            .parse_args(d, &s(&["production", "abc1234", "--emergency"]), &c)
            .unwrap_err();
        assert!(e.contains("needs a reason"), "{e}");
        let ok = cat
            .parse_args(
                d,
                &s(&["production", "abc1234", "--emergency", "INC-1 hotfix"]),
                &c,
            )
            .unwrap();
        assert_eq!(ok.emergency.as_deref(), Some("INC-1 hotfix"));
    }

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

    #[test]
    fn text_and_choice_args() {
        let c = config();
        let text = "name = \"x\"\ndescription = \"d\"\nkind = \"custom\"\nrole = \"everyone\"\n[[args]]\nname = \"mode\"\nkind = \"choice\"\nchoices = [\"fast\", \"safe\"]\n[[args]]\nname = \"ticket\"\nkind = \"text\"\npattern = \"[A-Z]+-[0-9]+\"\nrequired = false\n[[steps]]\nname=\"s\"\nargv=[\"true\"]\n";
        let cmd = parse_command("x.toml", text, &c).unwrap();
        let cat = Catalog::default();
        assert!(cat.parse_args(&cmd, &s(&["fast", "INC-12"]), &c).is_ok());
        assert!(cat.parse_args(&cmd, &s(&["fast"]), &c).is_ok());
        assert!(
            cat.parse_args(&cmd, &s(&["slow"]), &c)
                .unwrap_err()
                .contains("fast, safe")
        );
        assert!(
            cat.parse_args(&cmd, &s(&["fast", "INC-12; id"]), &c)
                .is_err()
        );
    }
}
