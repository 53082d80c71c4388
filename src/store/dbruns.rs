//! `db_runs`: what Deckhand did to each environment's own database (migrations, backups,
//! restores), for staging-first, `/restore`'s list and the digest.

use sqlx::FromRow;

use crate::on_db;
use crate::store::{Db, Result};

pub mod kind {
    pub const MIGRATE: &str = "migrate";
    pub const BACKUP: &str = "backup";
    pub const RESTORE: &str = "restore";
}

/// One run on an environment's database.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct DbRun {
    pub id: i64,
    pub environment: String,
    pub kind: String,
    pub job_id: Option<i64>,
    /// When it finished (ms).
    pub at: i64,
    pub ok: i64,
    /// SHA-256 of the schema the migration set builds on a fresh database.
    pub schema_fp: Option<String>,
    /// `""`: no drift; otherwise the differences by name.
    pub drift: Option<String>,
    pub backup_path: Option<String>,
    pub backup_bytes: Option<i64>,
    /// Restored into a scratch database and compared.
    pub backup_verified: i64,
    pub detail: String,
}

const COLS: &str = "id, environment, kind, job_id, at, ok, schema_fp, drift, backup_path, backup_bytes, backup_verified, detail";

impl Db {
    pub async fn record_db_run(&self, r: &DbRun) -> Result<i64> {
        let id = on_db!(self, p => {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO db_runs (environment, kind, job_id, at, ok, schema_fp, drift, backup_path, backup_bytes, backup_verified, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(&r.environment)
            .bind(&r.kind)
            .bind(r.job_id)
            .bind(r.at)
            .bind(r.ok)
            .bind(&r.schema_fp)
            .bind(&r.drift)
            .bind(&r.backup_path)
            .bind(r.backup_bytes)
            .bind(r.backup_verified)
            .bind(&r.detail)
            .fetch_one(p)
            .await?
        });
        Ok(id)
    }

    /// The latest run of `kind` on `env`.
    pub async fn last_db_run(&self, env: &str, kind: &str) -> Result<Option<DbRun>> {
        let sql = format!(
            "SELECT {COLS} FROM db_runs WHERE environment = $1 AND kind = $2 ORDER BY at DESC, id DESC LIMIT 1"
        );
        Ok(on_db!(self, p => {
            sqlx::query_as::<_, DbRun>(sqlx::AssertSqlSafe(sql))
                .bind(env)
                .bind(kind)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Verified backups of `env` that are still on disk as far as Deckhand knows, newest
    /// first (any kind of run may have taken one: a migration, a restore, `/backup`).
    pub async fn verified_backups(&self, env: &str, limit: i64) -> Result<Vec<DbRun>> {
        let sql = format!(
            "SELECT {COLS} FROM db_runs WHERE environment = $1 AND backup_path IS NOT NULL AND backup_verified = 1 \
             ORDER BY at DESC, id DESC LIMIT $2"
        );
        Ok(on_db!(self, p => {
            sqlx::query_as::<_, DbRun>(sqlx::AssertSqlSafe(sql))
                .bind(env)
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }

    /// A backup file was deleted (kept only `keep` of them).
    pub async fn forget_backup(&self, path: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("UPDATE db_runs SET backup_path = NULL WHERE backup_path = $1")
                .bind(path)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}

impl Db {
    /// Every backup file of `env` on record, newest first, each once.
    pub async fn backups_on_record(&self, env: &str) -> Result<Vec<String>> {
        let rows: Vec<(String, i64)> = on_db!(self, p => {
            sqlx::query_as(
                "SELECT backup_path, MAX(at) AS at FROM db_runs WHERE environment = $1 AND backup_path IS NOT NULL \
                 GROUP BY backup_path ORDER BY at DESC",
            )
            .bind(env)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
