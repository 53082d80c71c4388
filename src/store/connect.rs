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

/// How long a SQLite connection waits for another's write lock before it fails with
/// "database is locked" (what `busy_timeout` was).
const SQLITE_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Replace SQLite's busy handler: its own (the one `busy_timeout` installs) sleeps 1, 2, 5,
/// 10 … up to 100 ms between tries, so a writer that met the lock once slept long after the
/// lock was free. Measured in the alert storm: 110 sleeps of 100 ms in 8 s while the CPU
/// was 79 % idle, and a p99 of 700 ms. This one tries again every 100 µs for the first
/// 10 ms, then every 1 ms, up to [`SQLITE_BUSY_WAIT`].
fn quick_busy_handler(db: std::ptr::NonNull<libsqlite3_sys::sqlite3>) {
    extern "C" fn busy(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
        const FAST: u64 = 100;
        let tries = tries.max(0) as u64;
        let waited_us = tries.min(FAST) * 100 + tries.saturating_sub(FAST) * 1000;
        if waited_us >= SQLITE_BUSY_WAIT.as_micros() as u64 {
            return 0;
        }
        std::thread::sleep(Duration::from_micros(if tries < FAST { 100 } else { 1000 }));
        1
    }
    // SAFETY: `db` is a live connection handle held locked by the caller; the handler is a
    // plain function that touches no SQLite state and needs no user data.
    unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db.as_ptr(), Some(busy), std::ptr::null_mut());
    }
}

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
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let mut h = conn.lock_handle().await?;
                        quick_busy_handler(h.as_raw_handle());
                        Ok(())
                    })
                })
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
