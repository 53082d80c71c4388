//! Opening the database: the pools (one shared, intake's own), migrations and readiness;
//! and how a database URL or error is shown in messages.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::on_db;
use crate::store::{Db, READY_TIMEOUT, Result, StoreError};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connect; a missing SQLite file is created, in WAL mode.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &crate::config::StorageConfig::default()).await
    }

    /// Connect with storage tuning; see [`crate::config::StorageConfig`]. The pool holds
    /// `max_connections` (SQLite: 8; PostgreSQL: 10 unless set).
    pub async fn connect_with(url: &str, cfg: &crate::config::StorageConfig) -> Result<Self> {
        Self::connect_pool(url, cfg, cfg.max_connections).await
    }

    /// A pool of `size` connections (default as for [`Db::connect_with`]); intake's writer
    /// has one of its own.
    pub async fn connect_pool(
        url: &str,
        cfg: &crate::config::StorageConfig,
        size: Option<u32>,
    ) -> Result<Self> {
        Self::connect_pool_waiting(url, cfg, size, Duration::from_secs(5)).await
    }

    /// [`Db::connect_pool`] whose callers wait at most `acquire` for a connection (intake
    /// answers within its acknowledgement budget, also while the database is down).
    pub async fn connect_pool_waiting(
        url: &str,
        cfg: &crate::config::StorageConfig,
        size: Option<u32>,
        acquire: Duration,
    ) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let sync = if cfg.sqlite_synchronous == "normal" {
                sqlx::sqlite::SqliteSynchronous::Normal
            } else {
                sqlx::sqlite::SqliteSynchronous::Full
            };
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(size.unwrap_or(8))
                .min_connections(1)
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(size.unwrap_or(10))
                .acquire_timeout(acquire)
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(StoreError::BadUrl(redact_url(url)))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Db::Postgres(p) => PG_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// The database answers within [`READY_TIMEOUT`] and every bundled migration is applied.
    /// The bound matters: while the database is down, the pool keeps trying to connect for
    /// its whole acquire timeout, and a readiness check must say "down" before that.
    pub async fn ready(&self) -> Result<(), String> {
        let expected = match self {
            Db::Sqlite(_) => SQLITE_MIGRATIONS.iter().count() as i64,
            Db::Postgres(_) => PG_MIGRATIONS.iter().count() as i64,
        };
        let applied = tokio::time::timeout(READY_TIMEOUT, async {
            on_db!(self, p => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(p)
                    .await
            })
        })
        .await;
        match applied {
            Ok(Ok(n)) if n >= expected => Ok(()),
            Ok(Ok(n)) => Err(format!("migrations applied: {n} of {expected}")),
            Ok(Err(e)) => Err(format!("database unreachable: {}", short_err(&e))),
            Err(_) => Err(format!(
                "database unreachable: no answer within {} s",
                READY_TIMEOUT.as_secs()
            )),
        }
    }

    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }
}

/// A database URL with any password removed, for messages. Parsed as a URL, so an `@` in
/// the path or query is not taken for the end of the credentials; what does not parse is
/// shown as its scheme only.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => match raw.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "(not a URL)".into(),
        },
    }
}

/// A database error in one line, without query text or parameters.
pub fn short_err(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".into(),
        sqlx::Error::Io(io) => format!("I/O: {io}"),
        other => other.to_string().lines().next().unwrap_or("").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            super::redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            super::redact_url("sqlite://deckhand.db"),
            "sqlite://deckhand.db"
        );
        // An `@` after the host is not the end of the credentials.
        let r = super::redact_url("postgres://app:s3cret@db:5432/x?application_name=a@b");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.starts_with("postgres://app:***@db:5432/x"), "{r}");
        let r = super::redact_url("postgres://app:p@ss@db/x");
        assert!(!r.contains("p@ss") && !r.contains("ss@db"), "{r}");
    }
}
