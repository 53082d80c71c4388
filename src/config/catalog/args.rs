//! What a person typed after a command's name, checked against the command's typed
//! arguments: the values a job may receive, or a refusal that shows the usage and what
//! would be accepted.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::config::catalog::{Arg, ArgKind, Catalog, Command, JobKind};
use crate::domain::{EnvName, SecretName, Version};

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

impl Catalog {
    /// Validate typed arguments for a command.
    pub fn parse_args(
        &self,
        cmd: &Command,
        raw: &[String],
        config: &Config,
    ) -> Result<ParsedArgs, String> {
        let usage = || format!("usage: {}", cmd.usage);
        let mut out = ParsedArgs::default();
        let (positional, emergency) = split_flags(cmd, raw)?;
        out.emergency = emergency;
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
            check_value(cmd, arg, v, config, &mut out)?;
            out.values.insert(arg.name.clone(), v.to_owned());
        }
        Ok(out)
    }
}

/// The positional arguments, and the reason of `--emergency REASON` (or
/// `--emergency=REASON`), which only deploys and migrations take.
fn split_flags<'a>(
    cmd: &Command,
    raw: &'a [String],
) -> Result<(Vec<&'a str>, Option<String>), String> {
    let usage = || format!("usage: {}", cmd.usage);
    let mut emergency = None;
    let mut positional: Vec<&str> = Vec::new();
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        if a == "--emergency" {
            let reason = it
                .next()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty() && !s.starts_with("--"));
            match reason {
                Some(r) if matches!(cmd.kind, JobKind::Deploy | JobKind::Migrate) => {
                    emergency = Some(r.to_owned())
                }
                Some(_) => {
                    return Err(format!(
                        "--emergency applies only to deploys and migrations; {}",
                        usage()
                    ));
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
            if !matches!(cmd.kind, JobKind::Deploy | JobKind::Migrate) {
                return Err(format!(
                    "--emergency applies only to deploys and migrations; {}",
                    usage()
                ));
            }
            emergency = Some(reason.trim().to_owned());
        } else {
            positional.push(a);
        }
    }
    if let Some(r) = &emergency {
        crate::domain::text::check_clean("the --emergency reason", r)?;
    }
    Ok((positional, emergency))
}

/// Check one value against its argument's kind; the typed kinds also land in `out`.
fn check_value(
    cmd: &Command,
    arg: &Arg,
    v: &str,
    config: &Config,
    out: &mut ParsedArgs,
) -> Result<(), String> {
    let usage = || format!("usage: {}", cmd.usage);
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
            out.secret = Some(SecretName::parse(v).map_err(|e| format!("{e}; {}", usage()))?);
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
            crate::domain::text::check_clean(&arg.name.to_uppercase(), v)?;
            if v.len() > 256 || !re.is_match(v) {
                return Err(format!(
                    "{v:?} is not a valid {}; it must match {}",
                    arg.name,
                    re.as_str()
                ));
            }
        }
    }
    Ok(())
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
    use crate::config::catalog::tests::{config, s};
    use crate::config::catalog::{Catalog, parse_command};

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
