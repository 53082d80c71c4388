//! The crate's layers (see `src/lib.rs`): every top-level module of `src/` imports only from
//! its own layer or the ones below, `domain` imports nothing of the crate, and no two
//! top-level modules import each other, directly or through others. A failure names the
//! file and line of each import that breaks the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first; the same table as `src/lib.rs`.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("support", 0),
    ("config", 1),
    ("store", 2),
    ("app", 3),
    ("outbox", 4),
    ("jobs", 4),
    ("watch", 4),
    ("reports", 4),
    ("intake", 4),
    ("platform", 5),
    ("server", 6),
    ("cli", 7),
];

/// Macros exported at the crate root, and the module that defines them.
const ROOT_MACROS: &[(&str, &str)] = &[("on_db", "store")];

#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
    text: String,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs` and `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// Every `crate::X` a line names, with `use crate::{X, Y}` groups opened.
fn named_modules(line: &str, known: &BTreeSet<&str>) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for part in inner.split(',') {
                let name = part.trim().split("::").next().unwrap_or("").trim();
                out.push(name.to_owned());
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
        rest = after;
    }
    out.into_iter()
        .map(|n| {
            ROOT_MACROS
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, owner)| owner.to_string())
                .unwrap_or(n)
        })
        .filter(|n| known.contains(n.as_str()))
        .collect()
}

fn edges(src: &Path) -> Vec<Edge> {
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut files = Vec::new();
    rs_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Some(from) = top_module(src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for to in named_modules(line, &known) {
                if to != from {
                    out.push(Edge {
                        from: from.clone(),
                        to,
                        file: f.clone(),
                        line: i + 1,
                        text: line.trim().to_owned(),
                    });
                }
            }
        }
    }
    out
}

fn layer(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .map(|(_, l)| *l)
        .unwrap()
}

/// Problems with the import graph, each naming a file and line.
fn problems(src: &Path) -> Vec<String> {
    let all = edges(src);
    let mut out = Vec::new();
    for e in &all {
        let (lf, lt) = (layer(&e.from), layer(&e.to));
        if e.from == "domain" || lt > lf {
            out.push(format!(
                "{}:{}: `{}` (layer {lf}) imports `{}` (layer {lt}): {}",
                e.file.display(),
                e.line,
                e.from,
                e.to,
                e.text
            ));
        }
    }
    // Cycles: a module that reaches itself through others.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &all {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    for e in &all {
        if reaches(&graph, &e.to, &e.from) {
            out.push(format!(
                "{}:{}: `{}` imports `{}`, which leads back to `{}` (a cycle): {}",
                e.file.display(),
                e.line,
                e.from,
                e.to,
                e.from,
                e.text
            ));
        }
    }
    out
}

fn reaches(graph: &BTreeMap<&str, BTreeSet<&str>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(m) = todo.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m) {
            todo.extend(graph.get(m).into_iter().flatten().copied());
        }
    }
    false
}

#[test]
fn every_module_imports_only_from_its_layer_or_below_and_nothing_imports_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let tops: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let unknown: Vec<&String> = tops
        .iter()
        .filter(|t| !LAYERS.iter().any(|(m, _)| m == t))
        .collect();
    assert!(
        unknown.is_empty(),
        "top-level modules without a layer (add them to LAYERS here and in src/lib.rs): {unknown:?}"
    );
    let p = problems(&src);
    assert!(p.is_empty(), "layer violations:\n{}", p.join("\n"));
}

#[test]
fn the_checker_sees_a_back_edge_and_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    for (file, text) in [
        ("config/mod.rs", "use crate::app::App;\n"),
        ("app.rs", "use crate::config::Settings;\n"),
        ("jobs/mod.rs", "fn f() { crate::intake::x(); }\n"),
        ("intake/mod.rs", "use crate::{jobs, store::Db};\n"),
        (
            "domain/mod.rs",
            "// crate::store is mentioned in a comment only\n",
        ),
    ] {
        let p = src.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let p = problems(src);
    let has = |s: &str| p.iter().any(|l| l.contains(s));
    assert!(
        has("config/mod.rs:1: `config` (layer 1) imports `app` (layer 3)"),
        "{p:#?}"
    );
    assert!(
        has("jobs/mod.rs:1: `jobs` imports `intake`, which leads back to `jobs`"),
        "{p:#?}"
    );
    assert!(!p.iter().any(|l| l.contains("domain")), "{p:#?}");
}

/// Job states, deployment statuses and platform names are spelled once, in `domain/`
/// (`JobState`, `DeployStatus`, `Platform`); `store/` may spell them in SQL. Everywhere else
/// a quoted one is a copy that can drift. Unit tests (after `#[cfg(test)]`) are exempt.
#[test]
fn no_job_state_or_platform_name_as_a_literal_outside_domain_and_store() {
    const NAMES: &[&str] = &[
        "queued",
        "awaiting_approval",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "interrupted",
        "rejected",
        "expired",
        "verified",
        "unhealthy",
        "slack",
        "discord",
        "terminal",
        "alerts",
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files {
        let top = top_module(&src, &f);
        if matches!(top.as_deref(), Some("domain" | "store")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for n in NAMES {
                if line.contains(&format!("\"{n}\"")) {
                    found.push(format!(
                        "{}:{}: \"{n}\": {}",
                        f.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "spell these with JobState / DeployStatus / Platform:\n{}",
        found.join("\n")
    );
}
