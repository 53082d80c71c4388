//! SQL on an environment's *own* PostgreSQL database (not Deckhand's): its schema for the
//! drift comparison, its tables' row counts for the restore test, and the scratch databases
//! the migration procedure creates beside it. Every connection is short-lived and opened
//! from a URL held in memory only; errors never carry the URL.

use std::collections::BTreeMap;

use sqlx::{Connection, PgConnection, Row};

use crate::store::Result;

/// Scratch databases are named with this prefix, then the job id: one left behind by a
/// crash is found by its name at the next start.
pub const SCRATCH_PREFIX: &str = "deckhand_scratch_";

/// A database's shape, as the drift comparison sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// `schema.table` → column → `type [not null] [default …]`.
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
    /// `schema.index` → its definition (table and columns).
    pub indexes: BTreeMap<String, String>,
    /// `schema.table.constraint` → its definition.
    pub constraints: BTreeMap<String, String>,
}

pub async fn connect(url: &str) -> Result<PgConnection> {
    Ok(PgConnection::connect(url).await?)
}

/// Schemas that belong to PostgreSQL itself.
const SYSTEM: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

pub async fn schema(url: &str) -> Result<Schema> {
    let mut c = connect(url).await?;
    let mut s = Schema::default();
    let cols = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT c.table_schema || '.' || c.table_name AS t, c.column_name::text AS col, \
         c.data_type::text || CASE WHEN c.is_nullable = 'NO' THEN ' not null' ELSE '' END \
         || COALESCE(' default ' || c.column_default, '') AS ty \
         FROM information_schema.columns c JOIN information_schema.tables t \
         ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN {SYSTEM} \
         AND c.table_schema NOT LIKE 'pg_temp%'"
    )))
    .fetch_all(&mut c)
    .await?;
    for r in cols {
        s.tables
            .entry(r.try_get("t")?)
            .or_default()
            .insert(r.try_get("col")?, r.try_get("ty")?);
    }
    // Tables without columns still count as tables.
    let tables = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {SYSTEM}"
    )))
    .fetch_all(&mut c)
    .await?;
    for r in tables {
        s.tables.entry(r.try_get("t")?).or_default();
    }
    let idx = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT schemaname || '.' || indexname AS n, indexdef AS d FROM pg_indexes \
         WHERE schemaname NOT IN {SYSTEM}"
    )))
    .fetch_all(&mut c)
    .await?;
    for r in idx {
        s.indexes.insert(r.try_get("n")?, r.try_get("d")?);
    }
    let cons = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname || '.' || t.relname || '.' || k.conname AS n, pg_get_constraintdef(k.oid) AS d \
         FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname NOT IN {SYSTEM}"
    )))
    .fetch_all(&mut c)
    .await?;
    for r in cons {
        s.constraints.insert(r.try_get("n")?, r.try_get("d")?);
    }
    let _ = c.close().await;
    Ok(s)
}

/// Rows per table (`schema.table`), for comparing a restored copy with its source.
pub async fn row_counts(url: &str, tables: &[String]) -> Result<BTreeMap<String, i64>> {
    let mut c = connect(url).await?;
    let mut out = BTreeMap::new();
    for t in tables {
        let (schema, table) = t.split_once('.').unwrap_or(("public", t));
        let q = format!("SELECT count(*) FROM {}.{}", ident(schema), ident(table));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut c)
            .await?;
        out.insert(t.clone(), n);
    }
    let _ = c.close().await;
    Ok(out)
}

/// A quoted identifier: any name a table may have, safe inside SQL.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Is `name` one of ours (prefix, then lowercase letters, digits and `_` only)? Only such
/// names are ever created or dropped, so no other database can be touched.
pub fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix(SCRATCH_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Create the scratch database `name` on the server of `url` (as its user).
pub async fn create_scratch(url: &str, name: &str) -> Result<()> {
    if !is_scratch_name(name) {
        return Err(crate::store::StoreError::Conflict(format!(
            "{name:?} is not a scratch database name"
        )));
    }
    let mut c = connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let _ = c.close().await;
    Ok(())
}

/// Drop the scratch database `name` (connections to it are ended first).
pub async fn drop_scratch(url: &str, name: &str) -> Result<()> {
    if !is_scratch_name(name) {
        return Err(crate::store::StoreError::Conflict(format!(
            "{name:?} is not a scratch database name"
        )));
    }
    let mut c = connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await?;
    let _ = c.close().await;
    Ok(())
}

/// Scratch databases on the server of `url`.
pub async fn list_scratch(url: &str) -> Result<Vec<String>> {
    let mut c = connect(url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(SCRATCH_PREFIX)
            .fetch_all(&mut c)
            .await?;
    let _ = c.close().await;
    Ok(names.into_iter().filter(|n| is_scratch_name(n)).collect())
}

/// The demo's migration tool (`deckhand demo sql-migrate`): migrations already applied.
pub async fn tool_applied(c: &mut PgConnection) -> Result<Vec<String>> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *c)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *c)
            .await?,
    )
}

/// Apply one migration file and record it, in one transaction.
pub async fn tool_apply(c: &mut PgConnection, version: &str, sql: &str) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
        .bind(version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Empty the database for a restore: every schema of its own dropped, `public` recreated,
/// in one transaction.
pub async fn reset_schemas(url: &str) -> Result<()> {
    let mut c = connect(url).await?;
    let mut tx = c.begin().await?;
    let schemas: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT IN {SYSTEM} \
         AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast%'"
    )))
    .fetch_all(&mut *tx)
    .await?;
    for s in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            ident(&s)
        )))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::raw_sql("CREATE SCHEMA public")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Create the database `name` on the server of `url` unless it exists (the demo's
/// environment databases).
pub async fn ensure_database(url: &str, name: &str) -> Result<()> {
    let mut c = connect(url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut c)
            .await?;
    if !exists {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            ident(name)
        )))
        .execute(&mut c)
        .await?;
    }
    let _ = c.close().await;
    Ok(())
}
