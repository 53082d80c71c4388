//! The bundled demo: environments that need no cloud account.
//!
//! `deckhand demo-app --version V --port P` is a tiny service (`cli::demo_app`) whose
//! `/health` reports its version and whose `/metrics` a Prometheus can scrape; versions
//! named `down-…`, `bad-…` and `slow-…` fail in the ways a health check or a watch catches.
//! The steps in the bundled `commands/` call `deckhand demo ACTION`,
//! which reads its arguments from `DECKHAND_*` variables like any real step would:
//! `deploy` replaces the running app with the requested version, `backup`, `migrate` and
//! `drift-check` work on a real SQLite database per environment, and `store-secret` keeps
//! the value it reads on stdin in a file only the owner can read.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

fn var(k: &str) -> Result<String> {
    std::env::var(k)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{k} is not set: run this as a step of a deckhand job"))
}

fn demo_dir() -> Result<PathBuf> {
    let d = PathBuf::from(var("DECKHAND_DATA_DIR")?).join("demo");
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

/// The environment name, already validated by deckhand, checked again before it becomes
/// part of a file name.
fn env_name() -> Result<String> {
    let e = var("DECKHAND_ENVIRONMENT")?;
    crate::domain::EnvName::parse(&e).map_err(|e| anyhow::anyhow!(e.0))?;
    Ok(e)
}

fn port_of(url: &str) -> Result<u16> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or("");
    hostport
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("cannot find a port in the health URL {url}"))
}

pub fn pid_file(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.pid"))
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 1 && unsafe { libc::kill(pid, 0) } == 0 && !zombie(pid)
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Is `pid` the demo app that `pidfile` belongs to? A pid file outlives its app (an app
/// that exited, a machine that rebooted), and pids are reused: with `pid_max` at 32,768 a
/// busy host wraps in minutes, and a fresh container hands out the same low pids on every
/// boot. Signalling whatever now holds a stale pid killed the *other* environment's demo
/// app when production was deployed after staging; so the pid must still run `demo-app`
/// with this very pid file.
fn is_app_of(pid: i32, pidfile: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let Ok(want) = pidfile.canonicalize() else {
        return false;
    };
    // The same file, however the path was spelled (relative to the app's own folder).
    let same = |arg: &[u8]| {
        let arg = Path::new(std::ffi::OsStr::from_bytes(arg));
        let full = match arg.is_relative() {
            true => Path::new(&format!("/proc/{pid}/cwd")).join(arg),
            false => arg.to_path_buf(),
        };
        full.canonicalize().is_ok_and(|p| p == want)
    };
    args.get(1) == Some(&b"demo-app".as_slice())
        && args.windows(2).any(|w| w[0] == b"--pid-file" && same(w[1]))
}

/// Stop the app a pid file names, politely, then firmly; a pid now held by any other
/// process is left alone.
pub fn stop_app(pidfile: &Path) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !alive(pid) || !is_app_of(pid, pidfile) {
        return;
    }
    // SAFETY: plain signals to a pid we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..50 {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `deckhand demo ACTION`.
pub fn action(name: &str) -> Result<()> {
    match name {
        "deploy" => deploy(),
        "backup" => backup(),
        "migrate" => migrate(false),
        "drift-check" => migrate(true),
        "store-secret" => store_secret(),
        "cost" => cost(),
        "sql-migrate" => crate::cli::demo_db::sql_migrate(),
        other => bail!(
            "unknown demo action {other:?}; accepted: deploy, backup, migrate, drift-check, store-secret, cost, sql-migrate"
        ),
    }
}

fn deploy() -> Result<()> {
    let env = env_name()?;
    let version = var("DECKHAND_VERSION")?;
    crate::domain::Version::parse(&version).map_err(|e| anyhow::anyhow!(e.0))?;
    let port = port_of(&var("DECKHAND_HEALTH_URL")?)?;
    let dir = demo_dir()?;
    let pidfile = pid_file(&dir, &env);
    stop_app(&pidfile);
    // Wait for the port to be free, so the new version can take it.
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::File::create(dir.join(format!("{env}.log")))?;
    let exe = std::env::current_exe()?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(exe)
        .args([
            "demo-app",
            "--version",
            &version,
            "--port",
            &port.to_string(),
        ])
        .arg("--pid-file")
        .arg(&pidfile)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: the app outlives this step on purpose.
        .process_group(0)
        .spawn()
        .context("cannot start the demo app")?;
    std::fs::write(&pidfile, child.id().to_string())?;
    outln!(
        "started demo app {version} for {env} on 127.0.0.1:{port} (pid {})",
        child.id()
    );
    Ok(())
}

fn app_db(env: &str) -> Result<PathBuf> {
    Ok(demo_dir()?.join(format!("{env}-app.db")))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(f)
}

fn backup() -> Result<()> {
    if crate::cli::demo_db::postgres_url().is_some() {
        outln!("skipped: Deckhand takes and tests the backup of a PostgreSQL database itself");
        return Ok(());
    }
    let env = env_name()?;
    let db = app_db(&env)?;
    let dir = demo_dir()?.join("backups");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let target = dir.join(format!("{env}-{stamp}.db"));
    block_on(crate::store::demo::backup(&db, &target))?;
    let size = std::fs::metadata(&target)?.len();
    outln!(
        "backed up {} to {} ({size} bytes)",
        db.display(),
        target.display()
    );
    outln!("deckhand-report: backup={}", target.display());
    Ok(())
}

fn migrate(check_only: bool) -> Result<()> {
    if let Some(url) = crate::cli::demo_db::postgres_url() {
        if check_only {
            outln!("skipped: Deckhand compares a PostgreSQL database's schema itself");
            return Ok(());
        }
        let m: Vec<(String, String)> = crate::store::demo::DEMO_MIGRATIONS
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        return crate::cli::demo_db::apply(&url, &m);
    }
    let env = env_name()?;
    let db = app_db(&env)?;
    block_on(async {
        let pool = crate::store::demo::open(&db).await?;
        let done = crate::store::demo::applied(&pool).await?;
        let pending: Vec<_> = crate::store::demo::DEMO_MIGRATIONS
            .iter()
            .filter(|(n, _)| !done.iter().any(|d| d == n))
            .collect();
        if check_only {
            if pending.is_empty() {
                outln!(
                    "no drift: all {} migrations applied",
                    crate::store::demo::DEMO_MIGRATIONS.len()
                );
                return Ok(());
            }
            bail!("drift: {} migration(s) not applied", pending.len());
        }
        if pending.is_empty() {
            outln!("deckhand-report: migration=not needed");
            return Ok(());
        }
        let mut names = Vec::new();
        for (name, sql) in pending {
            crate::store::demo::apply(&pool, name, sql).await?;
            outln!("applied {name}");
            names.push(*name);
        }
        outln!("deckhand-report: migration=applied {}", names.join(", "));
        pool.close().await;
        Ok(())
    })
}

fn store_secret() -> Result<()> {
    let env = env_name()?;
    let name = var("DECKHAND_ARG_NAME")?;
    crate::domain::SecretName::parse(&name).map_err(|e| anyhow::anyhow!(e.0))?;
    let mut value = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut value)
        .context("cannot read the new value on stdin")?;
    let v = value.trim_end_matches('\n');
    if v.is_empty() {
        bail!("no value arrived on stdin");
    }
    let dir = demo_dir()?.join(format!("{env}-secrets"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(&name);
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(v.as_bytes())?;
    outln!("stored {name} for {env} ({} characters)", v.len());
    Ok(())
}

// --- cost demo (the `cost-demo` command's step) ---

/// Services of the demo bill: name and typical daily spend in USD.
const DEMO_SERVICES: &[(&str, f64)] = &[
    ("Amazon EC2", 38.0),
    ("Amazon RDS", 21.0),
    ("Amazon S3", 6.5),
    ("AWS Data Transfer", 4.2),
    ("Amazon CloudWatch", 2.1),
];

/// Daily costs for the 60 days before `today` (billing data lags a day): the same figures
/// for the same dates on every run, with weekend dips, a little noise, and EC2 up a quarter
/// over the last ten days so a digest has a mover to show.
pub fn demo_costs(today: chrono::NaiveDate) -> Vec<(chrono::NaiveDate, &'static str, f64)> {
    use chrono::Datelike;
    let mut out = Vec::new();
    for back in (1..=60).rev() {
        let date = today - chrono::Duration::days(back);
        let weekend = date.weekday().number_from_monday() >= 6;
        for (i, (service, base)) in DEMO_SERVICES.iter().enumerate() {
            let mut x = (date.num_days_from_ce() as u64) << 8 | i as u64;
            // splitmix64: a fixed, well-mixed hash, so "noise" is reproducible.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            let noise = (x % 2001) as f64 / 1000.0 - 1.0;
            let mut amount = base * (1.0 + 0.08 * noise);
            if weekend && i < 2 {
                amount *= 0.85;
            }
            if i == 0 && back <= 10 {
                amount *= 1.25;
            }
            out.push((date, *service, (amount * 100.0).round() / 100.0));
        }
    }
    out
}

fn cost() -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (date, service, amount) in demo_costs(chrono::Utc::now().date_naive()) {
        let line = serde_json::json!({
            "date": date.format("%Y-%m-%d").to_string(),
            "service": service,
            "amount": amount,
            "currency": "USD",
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

// --- end cost demo ---

#[cfg(test)]
mod tests {
    #[test]
    fn ports_from_urls() {
        assert_eq!(
            super::port_of("http://127.0.0.1:18081/health").unwrap(),
            18081
        );
        assert!(super::port_of("http://localhost/health").is_err());
    }
}
