//! The demo environments' own application databases (SQLite files standing in for a
//! team's app database): their migrations, backups and checks. Not Deckhand's database.

use std::path::Path;

use anyhow::{Context, Result};

pub const DEMO_MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_create_users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
    ),
    (
        "0002_create_orders",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), total_cents INTEGER NOT NULL)",
    ),
];

pub async fn open(path: &Path) -> Result<sqlx::SqlitePool> {
    use std::str::FromStr;
    let opts =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?)
}

/// Copy the whole database into `target` (SQLite's `VACUUM INTO`).
pub async fn backup(db: &Path, target: &Path) -> Result<()> {
    let pool = open(db).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        target.display().to_string().replace('\'', "''")
    )))
    .execute(&pool)
    .await
    .context("backup failed")?;
    pool.close().await;
    Ok(())
}

/// The names of the migrations applied to `db`.
pub async fn applied(pool: &sqlx::SqlitePool) -> Result<Vec<String>> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar("SELECT name FROM schema_migrations")
        .fetch_all(pool)
        .await?)
}

/// Apply one migration and record it, in one transaction.
pub async fn apply(pool: &sqlx::SqlitePool, name: &'static str, sql: &'static str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, datetime('now'))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
