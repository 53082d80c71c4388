//! Deployment files agree with each other: `fly.toml`, the `Dockerfile` and the bundled
//! `deckhand.toml`. A port, a volume path or a timeout changed in one place and not the
//! others makes a deploy that builds fine and then never turns healthy.
//!
//! Plain std + toml: the Dockerfile is read with a small line parser below.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    let path = root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fly() -> toml::Table {
    toml::from_str::<toml::Table>(&read("fly.toml")).unwrap_or_else(|e| panic!("fly.toml: {e}"))
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("fly.toml: [{key}] missing or not a table"))
}

fn fly_env(fly: &toml::Table, key: &str) -> String {
    table(fly, "env")
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("fly.toml: [env] {key} missing or not a string"))
        .to_owned()
}

/// Port of a `host:port` listen address (`0.0.0.0:8080`, `[::]:8080`).
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in listen address {addr:?}"))
}

/// Directory that holds the SQLite file of a `sqlite://…` URL.
fn sqlite_dir(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_else(|| panic!("not a sqlite URL: {url:?}"));
    let path = rest.split('?').next().unwrap_or(rest);
    let path = Path::new(path);
    assert!(
        path.is_absolute(),
        "sqlite path in {url:?} should be absolute in a container"
    );
    path.parent()
        .unwrap_or_else(|| panic!("sqlite path in {url:?} has no directory"))
        .to_path_buf()
}

/// One Dockerfile instruction: keyword (upper-case) and its arguments, with line
/// continuations joined and comments dropped.
#[derive(Debug)]
struct Instr {
    keyword: String,
    args: String,
}

/// Stages of a Dockerfile, each a list of instructions starting with its FROM.
fn dockerfile_stages() -> Vec<Vec<Instr>> {
    let text = read("Dockerfile");
    let mut instrs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let full = std::mem::take(&mut current);
        let full = full.trim();
        if full.is_empty() {
            continue;
        }
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
        instrs.push(Instr {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    let mut stages: Vec<Vec<Instr>> = Vec::new();
    for i in instrs {
        if i.keyword == "FROM" {
            stages.push(Vec::new());
        }
        match stages.last_mut() {
            Some(stage) => stage.push(i),
            None => assert!(
                i.keyword == "ARG",
                "Dockerfile: {} before the first FROM",
                i.keyword
            ),
        }
    }
    assert!(
        stages.len() >= 2,
        "Dockerfile should be multi-stage (builder + runtime)"
    );
    stages
}

/// `ENV` values of a stage (both `ENV K=V K2=V2` and legacy `ENV K V`).
fn stage_env(stage: &[Instr], key: &str) -> Option<String> {
    let mut found = None;
    for i in stage.iter().filter(|i| i.keyword == "ENV") {
        let tokens: Vec<&str> = i.args.split_whitespace().collect();
        if tokens.first().is_some_and(|t| !t.contains('=')) {
            if tokens[0] == key {
                found = Some(tokens[1..].join(" "));
            }
            continue;
        }
        for t in tokens {
            if let Some((k, v)) = t.split_once('=')
                && k == key
            {
                found = Some(v.trim_matches('"').trim_matches('\'').to_owned());
            }
        }
    }
    found
}

fn runtime_stage(stages: &[Vec<Instr>]) -> &[Instr] {
    stages.last().expect("at least one stage")
}

#[test]
fn ports_agree_between_fly_toml_and_dockerfile() {
    let fly = fly();
    let internal_port = table(&fly, "http_service")
        .get("internal_port")
        .and_then(toml::Value::as_integer)
        .expect("fly.toml: http_service.internal_port");
    let fly_listen_port = port_of(&fly_env(&fly, "DECKHAND_LISTEN"));
    assert_eq!(
        i64::from(fly_listen_port),
        internal_port,
        "fly.toml: [env] DECKHAND_LISTEN must listen on http_service.internal_port"
    );

    let stages = dockerfile_stages();
    let runtime = runtime_stage(&stages);
    let exposed: Vec<u16> = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|p| {
            let p = p.split('/').next().unwrap_or(&p).to_owned();
            p.parse()
                .unwrap_or_else(|_| panic!("Dockerfile: EXPOSE {p:?} is not a port"))
        })
        .collect();
    assert!(
        exposed.iter().any(|&p| i64::from(p) == internal_port),
        "Dockerfile EXPOSEs {exposed:?}, fly.toml internal_port is {internal_port}"
    );

    let docker_listen = stage_env(runtime, "DECKHAND_LISTEN")
        .expect("Dockerfile runtime stage: ENV DECKHAND_LISTEN");
    assert_eq!(
        i64::from(port_of(&docker_listen)),
        internal_port,
        "Dockerfile ENV DECKHAND_LISTEN={docker_listen} vs fly.toml internal_port"
    );
    assert!(
        docker_listen.starts_with("0.0.0.0:") || docker_listen.starts_with("[::]:"),
        "in a container DECKHAND_LISTEN must bind all interfaces, got {docker_listen}"
    );
}

#[test]
fn http_service_checks_health_and_keeps_a_machine_running() {
    let fly = fly();
    let svc = table(&fly, "http_service");

    let checks = svc
        .get("checks")
        .and_then(toml::Value::as_array)
        .expect("fly.toml: [[http_service.checks]] missing");
    let health = checks.iter().filter_map(toml::Value::as_table).any(|c| {
        let method = c
            .get("method")
            .and_then(toml::Value::as_str)
            .unwrap_or("GET");
        let path = c.get("path").and_then(toml::Value::as_str);
        method.eq_ignore_ascii_case("GET") && path == Some("/health")
    });
    assert!(
        health,
        "fly.toml: no http_service check does GET /health: {checks:?}"
    );

    match svc.get("auto_stop_machines") {
        Some(toml::Value::String(s)) => assert_eq!(s, "off", "auto_stop_machines"),
        Some(toml::Value::Boolean(b)) => assert!(!b, "auto_stop_machines must be off/false"),
        other => panic!(
            "fly.toml: http_service.auto_stop_machines must be set to \"off\" (Fly's default \
             may stop the bot), got {other:?}"
        ),
    }

    let min = svc
        .get("min_machines_running")
        .and_then(toml::Value::as_integer)
        .expect("fly.toml: http_service.min_machines_running");
    assert!(
        min >= 1,
        "min_machines_running = {min}; the bot must always run"
    );

    assert_eq!(
        svc.get("force_https").and_then(toml::Value::as_bool),
        Some(true),
        "fly.toml: http_service.force_https"
    );
}

#[test]
fn sqlite_database_lives_on_the_mounted_volume() {
    let fly = fly();
    let url = fly_env(&fly, "DATABASE_URL");
    let dir = sqlite_dir(&url);

    let mounts: Vec<&toml::Table> = match fly.get("mounts") {
        Some(toml::Value::Table(t)) => vec![t],
        Some(toml::Value::Array(a)) => a.iter().filter_map(toml::Value::as_table).collect(),
        other => panic!("fly.toml: [mounts] missing (SQLite needs a volume), got {other:?}"),
    };
    let destinations: Vec<&str> = mounts
        .iter()
        .filter_map(|m| m.get("destination").and_then(toml::Value::as_str))
        .collect();
    assert!(
        destinations.iter().any(|d| Path::new(d) == dir),
        "fly.toml: DATABASE_URL={url} is in {}, but mounts are {destinations:?}",
        dir.display()
    );

    // The image's default must use the same place, so `docker run -v …:/data` works too.
    let stages = dockerfile_stages();
    let docker_url = stage_env(runtime_stage(&stages), "DATABASE_URL")
        .expect("Dockerfile runtime stage: ENV DATABASE_URL");
    assert_eq!(
        sqlite_dir(&docker_url),
        dir,
        "Dockerfile ENV DATABASE_URL={docker_url} vs fly.toml DATABASE_URL={url}"
    );
}

#[test]
fn fly_shutdown_outlasts_the_app_grace_period_and_needs_no_release_command() {
    let fly = fly();
    assert_eq!(
        fly.get("kill_signal").and_then(toml::Value::as_str),
        Some("SIGTERM"),
        "fly.toml: kill_signal (Fly's default is SIGINT)"
    );
    let kill_timeout = match fly.get("kill_timeout") {
        Some(toml::Value::Integer(n)) => *n,
        Some(toml::Value::String(s)) => s
            .strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("fly.toml: kill_timeout {s:?}: use seconds, e.g. 45")),
        other => panic!("fly.toml: kill_timeout missing (Fly's default is 5 s), got {other:?}"),
    };

    let bundled = toml::from_str::<toml::Table>(&read("deckhand.toml")).expect("deckhand.toml");
    let grace = bundled
        .get("server")
        .and_then(toml::Value::as_table)
        .and_then(|s| s.get("shutdown_grace_seconds"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(30);
    assert!(
        kill_timeout > grace,
        "fly.toml kill_timeout = {kill_timeout} must exceed [server] shutdown_grace_seconds = \
         {grace}, or Fly kills Deckhand mid-shutdown"
    );

    let release = fly
        .get("deploy")
        .and_then(toml::Value::as_table)
        .and_then(|d| d.get("release_command"));
    assert!(
        release.is_none(),
        "fly.toml: no release_command: migrations run at start-up, and a release machine has \
         no volume for SQLite"
    );
}

#[test]
fn dockerfile_builds_locked_release_and_runs_unprivileged_with_a_healthcheck() {
    let stages = dockerfile_stages();

    let builder = &stages[0];
    let builds: Vec<usize> = builder
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"))
        .map(|(n, _)| n)
        .collect();
    assert!(
        !builds.is_empty(),
        "Dockerfile builder stage must run `cargo build --release --locked`"
    );
    // include_str!/include_bytes!/migrate! read these when the real sources compile: they must be copied
    // in before the last build.
    let last_build = *builds.last().expect("non-empty");
    for needed in ["src", "commands", "migrations", "deckhand.toml", "assets"] {
        let copied = builder[..last_build].iter().any(|i| {
            i.keyword == "COPY"
                && i.args
                    .split_whitespace()
                    .any(|a| a.trim_end_matches('/') == needed)
        });
        assert!(
            copied,
            "Dockerfile builder: COPY {needed} before the final cargo build"
        );
    }

    let runtime = runtime_stage(&stages);
    let healthcheck = runtime
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("Dockerfile runtime stage: HEALTHCHECK");
    assert!(
        healthcheck.args.contains("CMD") && !healthcheck.args.trim().eq_ignore_ascii_case("NONE"),
        "Dockerfile: HEALTHCHECK must run a command, got {:?}",
        healthcheck.args
    );
    assert!(
        healthcheck.args.contains("healthcheck") || healthcheck.args.contains("/health"),
        "Dockerfile: HEALTHCHECK should probe /health, got {:?}",
        healthcheck.args
    );

    let user = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("Dockerfile runtime stage: USER (must not run as root)");
    let name = user.args.split(':').next().unwrap_or("").trim();
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "Dockerfile: final USER must be non-root, got {:?}",
        user.args
    );

    let entrypoint = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("Dockerfile runtime stage: ENTRYPOINT");
    assert!(
        entrypoint.args.contains("tini") && entrypoint.args.contains("deckhand"),
        "Dockerfile: ENTRYPOINT should run deckhand under tini, got {:?}",
        entrypoint.args
    );
}
