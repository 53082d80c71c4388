//! `workflow` steps in a command file: the GitHub Actions workflow to dispatch, the `ref`
//! it runs from and its `inputs`, with `{name}` placeholders filled only from the job's
//! validated arguments; and the checks that let `deckhand check` say what is wrong before
//! a deploy needs it.

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::Config;
use crate::config::catalog::parse::Problems;
use crate::config::catalog::{Arg, ArgKind, JobKind, WorkflowStep};

/// GitHub's limit on the inputs of one dispatch: "The maximum number of properties is 25"
/// (REST API, "Create a workflow dispatch event"; it was 10 until 2025).
pub const MAX_INPUTS: usize = 25;

/// The shortest poll interval accepted, per step or in `[github] workflow_poll_ms`.
pub const MIN_POLL_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    /// `{name}`: the value of the job's argument `name`.
    Arg(String),
}

/// A text with `{name}` placeholders; `{{` and `}}` stand for `{` and `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<TemplatePart>);

impl Template {
    /// `Err`: what is wrong, in words.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '{' | '}' if it.peek() == Some(&c) => {
                    it.next();
                    text.push(c);
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match it.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => {
                                return Err(format!(
                                    "{{{} is not closed; write {{name}} for an argument, {{{{ for a literal {{",
                                    crate::domain::text::shorten(&name)
                                ));
                            }
                        }
                    }
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        return Err(format!(
                            "{{{}}} is not a placeholder; accepted: {{name}} with an argument's name (lowercase letters and '_'), or {{{{ for a literal {{",
                            crate::domain::text::shorten(&name)
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(TemplatePart::Arg(name));
                }
                '}' => return Err("a lone } ; write }} for a literal }".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        Ok(Template(parts))
    }

    /// The placeholders' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            TemplatePart::Arg(n) => Some(n.as_str()),
            TemplatePart::Text(_) => None,
        })
    }

    /// The text with each placeholder replaced by `value(name)`; `Err(name)` for the first
    /// placeholder without a value.
    pub fn fill(&self, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Arg(n) => out.push_str(&value(n).ok_or_else(|| n.clone())?),
            }
        }
        Ok(out)
    }
}

/// What a command's workflow steps may use: the placeholders its jobs have values for,
/// and the environments it runs on that have no GitHub repository.
pub(super) struct Offer {
    names: Vec<String>,
    without_github: Vec<String>,
}

impl Offer {
    /// Placeholders: each argument by its name, `{environment}` with an environment
    /// argument, `{version}` with a version (a rollback's is the version rolled back to),
    /// and `{commit_sha}`, the full SHA the version resolved to, for deploys and rollbacks.
    pub(super) fn new(
        args: &[Arg],
        kind: JobKind,
        runs_on: impl Fn(&str) -> bool,
        config: &Config,
    ) -> Self {
        let mut names: Vec<String> = args.iter().map(|a| a.name.clone()).collect();
        let has = |k: ArgKind| args.iter().any(|a| a.kind == k);
        let versioned = has(ArgKind::Version) || kind == JobKind::Rollback;
        for (name, offered) in [
            ("environment", has(ArgKind::Environment)),
            ("version", versioned),
            (
                "commit_sha",
                versioned && matches!(kind, JobKind::Deploy | JobKind::Rollback),
            ),
        ] {
            if offered && !names.iter().any(|n| n == name) {
                names.push(name.into());
            }
        }
        let without_github = if has(ArgKind::Environment) {
            config
                .environments
                .keys()
                .filter(|e| runs_on(e) && config.repository_of(e).is_none())
                .cloned()
                .collect()
        } else if config.github.repository.is_none() {
            vec!["(no environment)".into()]
        } else {
            Vec::new()
        };
        Offer {
            names,
            without_github,
        }
    }
}

/// A `workflow` step's keys as the file has them.
pub(super) struct RawWorkflow {
    pub file: Spanned<String>,
    pub git_ref: Option<Spanned<String>>,
    pub inputs: Option<Spanned<BTreeMap<String, toml::Value>>>,
    pub poll_ms: Option<u64>,
}

/// Check a `workflow` step (at `line`); its problems go to `ps`.
pub(super) fn workflow_step(
    raw: RawWorkflow,
    line: usize,
    offer: &Offer,
    ps: &mut Problems,
) -> WorkflowStep {
    let file = raw.file.get_ref().clone();
    if !valid_workflow_file(&file) {
        ps.at(
            raw.file.span(),
            format!(
                "workflow = {:?} is not a workflow file name; accepted: the name of a file in .github/workflows/, e.g. \"deploy.yml\"",
                crate::domain::text::shorten(&file)
            ),
        );
    }
    if !offer.without_github.is_empty() {
        ps.on(
            line,
            format!(
                "a workflow step needs GitHub (a repository and its credentials) wherever the command runs; not configured for: {}; set [github] repository or environments.NAME.repository",
                offer.without_github.join(", ")
            ),
        );
    }
    let git_ref = match &raw.git_ref {
        Some(r) if !r.get_ref().trim().is_empty() => {
            template("ref", r.get_ref(), r.span(), offer, ps)
        }
        Some(r) => {
            ps.at(r.span(), "ref is empty; name the branch or tag GitHub runs the workflow from, e.g. ref = \"main\"".into());
            Template(Vec::new())
        }
        None => {
            ps.on(
                line,
                format!(
                    "a workflow step needs ref: the branch or tag GitHub runs {} from, e.g. ref = \"main\" or ref = \"{{version}}\"",
                    crate::domain::text::shorten(&file)
                ),
            );
            Template(Vec::new())
        }
    };
    let mut inputs = BTreeMap::new();
    if let Some(raw_inputs) = raw.inputs {
        let span = raw_inputs.span();
        let given = raw_inputs.into_inner();
        if given.len() > MAX_INPUTS {
            ps.at(
                span.clone(),
                format!(
                    "inputs: {} given; GitHub accepts at most {MAX_INPUTS}",
                    given.len()
                ),
            );
        }
        for (name, value) in given {
            if !valid_input_name(&name) {
                ps.at(
                    span.clone(),
                    format!(
                        "inputs: {:?} is not a workflow input name; accepted: letters, digits, '-' and '_', starting with a letter or '_'",
                        crate::domain::text::shorten(&name)
                    ),
                );
            }
            let Some(text) = value.as_str() else {
                ps.at(
                    span.clone(),
                    format!(
                        "inputs.{name} = {value} is not a string; GitHub passes inputs as strings: write \"{value}\""
                    ),
                );
                continue;
            };
            let t = template(&format!("inputs.{name}"), text, span.clone(), offer, ps);
            inputs.insert(name, t);
        }
    }
    if raw.poll_ms.is_some_and(|p| p < MIN_POLL_MS) {
        ps.on(line, format!("poll_ms must be at least {MIN_POLL_MS}"));
    }
    WorkflowStep {
        file,
        git_ref,
        inputs,
        poll_ms: raw.poll_ms,
    }
}

/// `text` as a template whose placeholders are all offered; problems (under `what`) to `ps`.
fn template(
    what: &str,
    text: &str,
    at: std::ops::Range<usize>,
    offer: &Offer,
    ps: &mut Problems,
) -> Template {
    let t = Template::parse(text).unwrap_or_else(|e| {
        ps.at(at.clone(), format!("{what}: {e}"));
        Template(Vec::new())
    });
    for n in t.names() {
        if !offer.names.iter().any(|o| o == n) {
            ps.at(
                at.clone(),
                format!(
                    "{what}: {{{n}}} is not an argument of this command; accepted: {}",
                    accepted(&offer.names)
                ),
            );
        }
    }
    t
}

fn accepted(names: &[String]) -> String {
    if names.is_empty() {
        return "none (the command has no arguments)".into();
    }
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `deploy.yml`: a file name (no folder) ending in `.yml` or `.yaml`.
fn valid_workflow_file(f: &str) -> bool {
    let stem = f
        .strip_suffix(".yml")
        .or_else(|| f.strip_suffix(".yaml"))
        .unwrap_or_default();
    !stem.is_empty()
        && f.len() <= 200
        && !f.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// GitHub's rule for input ids: a letter or `_` first, then letters, digits, `-`, `_`.
fn valid_input_name(n: &str) -> bool {
    n.len() <= 100
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::catalog::parse_command;
    use crate::config::{EMBEDDED_CONFIG, parse_config};

    const HEAD: &str = "name = \"ship\"\ndescription = \"d\"\nkind = \"deploy\"\nrole = \"everyone\"\n[[args]]\nname = \"environment\"\nkind = \"environment\"\n[[args]]\nname = \"version\"\nkind = \"version\"\n[[steps]]\nname = \"actions\"\n";

    /// The problems of a `ship` command whose step is `step`, with or without GitHub.
    fn problems(step: &str, github: bool) -> Vec<String> {
        let extra = if github {
            "\n[github]\nrepository = \"acme/shop\"\n"
        } else {
            ""
        };
        let c = parse_config(
            "x",
            &format!("{EMBEDDED_CONFIG}{extra}"),
            &BTreeMap::<String, String>::new(),
        )
        .unwrap();
        match parse_command("c.toml", &format!("{HEAD}{step}"), &c) {
            Ok(_) => Vec::new(),
            Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn workflow_steps_are_checked_with_their_line() {
        let ok = "workflow = \"deploy.yml\"\nref = \"main\"\ninputs = { sha = \"{commit_sha}\", environment = \"{environment}\", tag = \"v{version}\" }\n";
        assert_eq!(problems(ok, true), Vec::<String>::new());
        let says = |step: &str, github: bool, line: usize, needle: &str| {
            let p = problems(step, github);
            assert!(
                p.iter()
                    .any(|p| p.starts_with(&format!("c.toml:{line}: ")) && p.contains(needle)),
                "{needle} at line {line}: {p:?}"
            );
        };
        says(ok, false, 11, "a workflow step needs GitHub");
        says(
            "argv = [\"true\"]\nworkflow = \"deploy.yml\"\nref = \"main\"\n",
            true,
            11,
            "has both argv and workflow",
        );
        says(
            "timeout_seconds = 5\n",
            true,
            11,
            "needs argv (a program to run",
        );
        says("workflow = \"deploy.yml\"\n", true, 11, "needs ref");
        says(
            "workflow = \"deploy.yml\"\nref = \"{versoin}\"\n",
            true,
            14,
            "{versoin} is not an argument of this command; accepted: {environment}, {version}, {commit_sha}",
        );
        says(
            "workflow = \"deploy.yml\"\nref = \"main\"\ninputs = { n = 3 }\n",
            true,
            15,
            "inputs.n = 3 is not a string",
        );
        says(
            "workflow = \"deploy\"\nref = \"main\"\n",
            true,
            13,
            "is not a workflow file name",
        );
        says(
            "workflow = \"deploy.yml\"\nref = \"main\"\ncwd = \"/tmp\"\n",
            true,
            11,
            "belong to argv steps",
        );
        says(
            "argv = [\"true\"]\nref = \"main\"\n",
            true,
            11,
            "belong to workflow steps",
        );
        let many: Vec<String> = (0..=MAX_INPUTS).map(|i| format!("i{i} = \"x\"")).collect();
        let step = format!(
            "workflow = \"deploy.yml\"\nref = \"main\"\ninputs = {{ {} }}\n",
            many.join(", ")
        );
        says(
            &step,
            true,
            15,
            "inputs: 26 given; GitHub accepts at most 25",
        );
    }

    #[test]
    fn templates_fill_placeholders_and_keep_escaped_braces() {
        let t = Template::parse("v{version}-{{x}}@{environment}").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["version", "environment"]);
        let filled = t.fill(|n| Some(n.to_uppercase())).unwrap();
        assert_eq!(filled, "vVERSION-{x}@ENVIRONMENT");
        assert_eq!(
            t.fill(|n| (n == "version").then(String::new)),
            Err("environment".into())
        );
        assert_eq!(
            Template::parse("main").unwrap().fill(|_| None).unwrap(),
            "main"
        );
        for bad in ["{version", "{Version}", "{}", "a}b", "{a-b}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workflow_files_and_input_names_follow_githubs_rules() {
        for ok in ["deploy.yml", "release-prod.yaml", "a.b_c.yml"] {
            assert!(valid_workflow_file(ok), "{ok}");
        }
        for bad in [
            "deploy",
            ".yml",
            "x/deploy.yml",
            "../deploy.yml",
            "de ploy.yml",
            ".hidden.yml",
        ] {
            assert!(!valid_workflow_file(bad), "{bad}");
        }
        for ok in ["sha", "_x", "env-name", "A1"] {
            assert!(valid_input_name(ok), "{ok}");
        }
        for bad in ["", "1x", "-x", "a b", "a.b"] {
            assert!(!valid_input_name(bad), "{bad}");
        }
    }
}
