//! Leases: one row per thing only one replica may do at a time, with its holder and expiry.
//!
//! A row rather than a PostgreSQL advisory lock: the same two statements work on SQLite and
//! PostgreSQL, a standby can read who holds it and until when, and the holder knows from
//! the expiry it wrote when it must stop (a lock's loss is only seen when its connection
//! breaks). Expiry is compared with each replica's clock: keep the clocks in sync (NTP)
//! to within a fraction of the lease's length.

use crate::on_db;
use crate::store::{Db, Result};

impl Db {
    /// Take or renew the lease `name` for `holder` until `until` (ms): `true` when `holder`
    /// now holds it (it was free, expired at `now`, or already `holder`'s).
    pub async fn take_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool> {
        let n = on_db!(self, p => sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Give the lease up (a clean stop), so a standby need not wait for it to expire.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Who holds the lease `name` and until when (ms), if anyone ever took it.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        Ok(on_db!(self, p => sqlx::query_as::<_, (String, i64)>(
            "SELECT holder, expires_at FROM leases WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(p)
        .await?))
    }
}
