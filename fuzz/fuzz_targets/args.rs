//! Command arguments: `split_args`, `Catalog::parse_args` for every command (the bundled
//! ones plus one with `choice` and `text` arguments), the domain parsers, and the
//! command-file parser `catalog::parse_command` on the input as TOML text.
//!
//! Invariants (beyond "no panic"):
//! - `split_args`: output never holds a quote character (`"`, `“`, `”` only toggle quoting);
//!   it fails exactly when the quote count is odd or there are more than 32 words; without
//!   quotes it equals `split_whitespace`; a word holds whitespace only if the input quoted.
//! - `Version`/`EnvName`/`SecretName`/`JobId::parse` accept exactly their documented
//!   alphabets and lengths, and round-trip through `Display`.
//! - `parse_args` accepts only what each argument kind allows: a configured environment,
//!   a valid version/secret name, one of the choices, a ≤256-byte text matching the pattern;
//!   never more positionals than arguments; every required argument present; an emergency
//!   reason only on deploys, trimmed and non-empty.
//! - `parse_command`: an accepted file has a valid, non-builtin name, ≥1 step, each argv
//!   naming a program without `{{`/`${` (or a workflow step: a `.yml` file, a `ref`, at most
//!   25 inputs, no argv, env or stdin), no `DECKHAND_` env, no zero timeout, no required
//!   argument after an optional one; a refused file has ≥1 problem, each on a real line.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use deckhand::config::catalog::{
    ArgKind, BUILTINS, Catalog, Command, JobKind, MAX_INPUTS, parse_command,
};
use deckhand::config::{Config, EMBEDDED_CONFIG, parse_config};
use deckhand::domain::{EnvName, JobId, SecretName, Version};
use deckhand::domain::text::split_args;
use libfuzzer_sys::fuzz_target;

const CUSTOM: &str = r#"
name = "fuzzcmd"
description = "choice and text arguments"
kind = "custom"
role = "everyone"
[[args]]
name = "mode"
kind = "choice"
choices = ["fast", "safe"]
[[args]]
name = "ticket"
kind = "text"
pattern = "[A-Z]+-[0-9]+"
required = false
[[steps]]
name = "s"
argv = ["true"]
"#;

struct Fixture {
    config: Config,
    catalog: Catalog,
    commands: Vec<Command>,
}

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let config = parse_config("x", EMBEDDED_CONFIG, &BTreeMap::<String, String>::new())
        .expect("bundled config parses");
    let catalog = Catalog::load(None, &config).expect("bundled commands load");
    let mut commands: Vec<Command> = catalog.commands.values().cloned().collect();
    commands.push(parse_command("fuzzcmd.toml", CUSTOM, &config).expect("custom command"));
    Fixture {
        config,
        catalog,
        commands,
    }
});

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '”')
}

fn check_split(text: &str) -> Option<Vec<String>> {
    let quotes = text.chars().filter(|c| is_quote(*c)).count();
    match split_args(text) {
        Ok(words) => {
            assert!(quotes % 2 == 0, "odd quotes accepted: {text:?}");
            assert!(words.len() <= 32, "{} words", words.len());
            for w in &words {
                assert!(!w.chars().any(is_quote), "quote kept in {w:?}");
                if quotes == 0 {
                    assert!(!w.is_empty(), "empty word without quotes");
                    assert!(!w.chars().any(char::is_whitespace), "whitespace in {w:?}");
                }
            }
            if quotes == 0 {
                let plain: Vec<&str> = text.split_whitespace().collect();
                assert_eq!(words, plain);
            }
            let kept: usize = words.iter().map(|w| w.chars().count()).sum();
            assert!(kept <= text.chars().count());
            Some(words)
        }
        Err(e) => {
            if quotes % 2 == 0 {
                assert!(e.contains("too many words"), "{e}");
            } else {
                assert!(e.contains("unbalanced quote"), "{e}");
            }
            None
        }
    }
}

fn check_domain(s: &str) {
    let b = s.as_bytes();
    let version_ok = !s.is_empty()
        && s.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    match Version::parse(s) {
        Ok(v) => {
            assert!(version_ok, "version accepted: {s:?}");
            assert!(!v.as_str().starts_with('-'));
            assert_eq!(Version::parse(&v.to_string()).unwrap(), v);
        }
        Err(e) => {
            assert!(!version_ok, "version refused: {s:?}");
            assert!(e.0.contains("not a valid version"));
        }
    }
    let slug = !s.is_empty()
        && s.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'));
    match EnvName::parse(s) {
        Ok(e) => {
            assert!(slug, "env accepted: {s:?}");
            assert_eq!(EnvName::parse(&e.to_string()).unwrap(), e);
        }
        Err(_) => assert!(!slug, "env refused: {s:?}"),
    }
    let secret = !s.is_empty()
        && s.len() <= 64
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
    match SecretName::parse(s) {
        Ok(n) => {
            assert!(secret, "secret accepted: {s:?}");
            assert_eq!(SecretName::parse(&n.to_string()).unwrap(), n);
        }
        Err(_) => assert!(!secret, "secret refused: {s:?}"),
    }
    match JobId::parse(s) {
        Ok(j) => {
            assert!(j.0 > 0);
            assert_eq!(s.trim_start_matches('#').parse::<i64>().ok(), Some(j.0));
            assert_eq!(JobId::parse(&j.to_string()).unwrap(), j);
        }
        Err(_) => assert!(
            s.trim_start_matches('#')
                .parse::<i64>()
                .map_or(true, |n| n <= 0)
        ),
    }
}

fn check_parse_args(cmd: &Command, raw: &[String]) {
    let fx = &*FIX;
    let Ok(p) = fx.catalog.parse_args(cmd, raw, &fx.config) else {
        return;
    };
    // Positionals: everything that is not the emergency flag or its reason.
    let mut positional = Vec::new();
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        if a == "--emergency" {
            it.next();
        } else if !a.starts_with("--emergency=") {
            positional.push(a.as_str());
        }
    }
    assert!(positional.len() <= cmd.args.len(), "too many accepted");
    for (i, arg) in cmd.args.iter().enumerate() {
        let v = p.values.get(&arg.name);
        match positional.get(i) {
            Some(given) => assert_eq!(v.map(String::as_str), Some(*given)),
            None => {
                assert!(!arg.required, "missing {} accepted", arg.name);
                assert!(v.is_none());
                continue;
            }
        }
        let v = v.unwrap();
        match &arg.kind {
            ArgKind::Environment => {
                assert!(fx.config.environments.contains_key(v.as_str()));
                assert_eq!(p.environment.as_ref().map(|e| e.as_str()), Some(v.as_str()));
            }
            ArgKind::Version => {
                let ver = p.version.as_ref().expect("version set");
                assert_eq!(ver.as_str(), v);
                let b = v.as_bytes();
                assert!(!v.is_empty() && v.len() <= 128 && b[0].is_ascii_alphanumeric());
                assert!(
                    b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
                );
            }
            ArgKind::SecretName => {
                assert_eq!(p.secret.as_ref().map(|s| s.as_str()), Some(v.as_str()));
            }
            ArgKind::Choice(choices) => assert!(choices.contains(v)),
            ArgKind::Text(re) => assert!(v.len() <= 256 && re.is_match(v)),
        }
    }
    assert!(p.values.len() <= cmd.args.len());
    if let Some(r) = &p.emergency {
        assert_eq!(cmd.kind, JobKind::Deploy, "emergency on a non-deploy");
        assert!(!r.is_empty() && r.trim() == r, "emergency reason {r:?}");
    }
}

fn check_command_file(text: &str) {
    let fx = &*FIX;
    match parse_command("fuzz.toml", text, &fx.config) {
        Ok(cmd) => {
            assert!(deckhand::domain::valid_name(&cmd.name), "{:?}", cmd.name);
            assert!(!BUILTINS.iter().any(|b| b.0 == cmd.name));
            assert!(!cmd.steps.is_empty());
            for s in &cmd.steps {
                match &s.workflow {
                    None => {
                        assert!(!s.argv.is_empty() && !s.argv[0].is_empty());
                        assert!(!s.argv.iter().any(|a| a.contains("{{") || a.contains("${")));
                    }
                    Some(w) => {
                        assert!(s.argv.is_empty() && s.env.is_empty() && !s.secret_stdin);
                        assert!(w.file.ends_with(".yml") || w.file.ends_with(".yaml"));
                        assert!(!w.git_ref.0.is_empty() && w.inputs.len() <= MAX_INPUTS);
                    }
                }
                assert!(
                    !s.env
                        .keys()
                        .chain(s.pass_env.iter())
                        .any(|k| k.starts_with("DECKHAND_"))
                );
                assert_ne!(s.timeout_seconds, Some(0));
            }
            if let Some(i) = cmd.args.iter().position(|a| !a.required) {
                assert!(cmd.args[i..].iter().all(|a| !a.required));
            }
            for a in &cmd.args {
                assert!(!a.name.is_empty());
                assert!(a.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
                if let ArgKind::Choice(c) = &a.kind {
                    assert!(!c.is_empty());
                }
            }
            // A command that loads must also take arguments without panicking.
            let words: Vec<String> = text.split_whitespace().take(8).map(String::from).collect();
            let _ = fx.catalog.parse_args(&cmd, &words, &fx.config);
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            let lines = text.matches('\n').count() + 1;
            for p in &problems {
                assert!(p.line >= 1 && p.line <= lines, "{p} (of {lines} lines)");
                assert!(!p.message.is_empty());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let fx = &*FIX;

    check_domain(text);
    let words = check_split(text);
    if let Some(words) = &words {
        for w in words {
            check_domain(w);
        }
    }
    // Argument lists as split_args makes them, and as raw lines (any bytes in a word,
    // empty words, leading/trailing spaces): Discord options arrive unsplit.
    let lines: Vec<String> = text.split('\n').take(40).map(String::from).collect();
    for cmd in &fx.commands {
        if let Some(words) = &words {
            check_parse_args(cmd, words);
        }
        check_parse_args(cmd, &lines);
    }
    check_command_file(text);
});
