//! `deckhand demo sql-migrate`: a small migration tool of the kind teams use (`sqlx migrate
//! run`, `alembic upgrade head`): it reads `DATABASE_URL`, applies the `*.sql` files of
//! `MIGRATIONS_DIR` in name order that `schema_migrations` does not list yet, one
//! transaction each, and stops at the first that fails with the database's error.

use anyhow::{Context, Result, bail};

/// `DATABASE_URL` when the job gives the step a PostgreSQL database (an environment with
/// `[environments.X.database]`, or the demo with `DECKHAND_DEMO_POSTGRES_URL`).
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

pub fn sql_migrate() -> Result<()> {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .context("DATABASE_URL is not set")?;
    let dir = std::env::var("MIGRATIONS_DIR").unwrap_or_else(|_| "migrations".into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the migrations folder {dir}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut migrations = Vec::new();
    for f in &files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sql =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        migrations.push((name, sql));
    }
    apply(&url, &migrations)
}

/// Apply `migrations` (name, SQL) that `schema_migrations` does not list yet, in order.
pub fn apply(url: &str, migrations: &[(String, String)]) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The error of a failed connection never echoes the URL.
            let mut c = crate::store::envdb::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {e}"))?;
            let done = crate::store::envdb::tool_applied(&mut c).await?;
            let mut applied = Vec::new();
            for (name, sql) in migrations {
                if done.contains(name) {
                    continue;
                }
                if let Err(e) = crate::store::envdb::tool_apply(&mut c, name, sql).await {
                    bail!("migration {name} failed: {e}");
                }
                outln!("applied {name}");
                applied.push(name.clone());
            }
            if applied.is_empty() {
                outln!("deckhand-report: migration=not needed");
            } else {
                outln!("deckhand-report: migration=applied {}", applied.join(", "));
            }
            Ok(())
        })
}
