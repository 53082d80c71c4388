//! Scratch databases: created beside the environment's database for a restore test or a
//! fresh-database test, always dropped — at the end of their phase, and, after a crash, by
//! the next start ([`sweep`]), which drops every scratch database whose job no longer runs.

use std::collections::BTreeSet;
use std::future::Future;

use crate::app::App;
use crate::domain::time::now_ms;
use crate::store::envdb;
use crate::store::jobs::state;

/// Create `name` beside `server_url`'s database, run `f` with its URL, drop it whatever
/// happened. A crash between create and drop leaves it to [`sweep`].
pub(crate) async fn with_scratch<T, F, Fut>(
    server: &crate::config::database::PgTarget,
    name: &str,
    f: F,
) -> anyhow::Result<T>
where
    F: FnOnce(crate::config::database::PgTarget) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let admin = server.url();
    envdb::create_scratch(&admin, name)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the scratch database {name}: {e}"))?;
    let out = f(server.with_db(name)).await;
    if let Err(e) = envdb::drop_scratch(&admin, name).await {
        tracing::warn!(database = name, error = %e, "cannot drop a scratch database; the next start retries");
    }
    out
}

/// The job id a scratch database of installation `inst` (`"1a2b3c_"`) carries.
fn job_of(name: &str, inst: &str) -> Option<i64> {
    name.strip_prefix(envdb::SCRATCH_PREFIX)?
        .strip_prefix(inst)?
        .split('_')
        .next()?
        .parse()
        .ok()
}

/// Drop the scratch databases left behind on every configured environment's server by jobs
/// that no longer run (finished, interrupted, or whose lease ran out). Returns their names.
pub async fn sweep(app: &App) -> Vec<String> {
    let inst = super::installation(app);
    let mut seen = BTreeSet::new();
    let mut dropped = Vec::new();
    for env in app.settings.config.environments.keys() {
        let Ok(t) = super::target_of(app, env) else {
            continue;
        };
        if !seen.insert((t.host.clone(), t.port)) {
            continue;
        }
        let url = t.url();
        let names = match envdb::list_scratch(&url).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(environment = %env, error = %e, "cannot list scratch databases");
                continue;
            }
        };
        let ours = names
            .into_iter()
            .filter(|n| n.starts_with(&format!("{}{inst}", envdb::SCRATCH_PREFIX)));
        for name in ours {
            let alive = match job_of(&name, &inst) {
                Some(id) => match app.db.job(id).await {
                    Ok(Some(j)) => {
                        j.state == state::RUNNING && j.lease_until.is_some_and(|l| l > now_ms())
                    }
                    Ok(None) => false,
                    // Cannot tell: leave it for the next sweep.
                    Err(_) => true,
                },
                None => false,
            };
            if alive {
                continue;
            }
            match envdb::drop_scratch(&url, &name).await {
                Ok(()) => {
                    tracing::info!(environment = %env, database = %name, "dropped a scratch database left behind");
                    dropped.push(name);
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "cannot drop a scratch database")
                }
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_names_carry_their_job() {
        let inst = "1a2b3c_";
        assert_eq!(
            super::job_of("deckhand_scratch_1a2b3c_42_fresh_ab12cd34", inst),
            Some(42)
        );
        assert_eq!(
            super::job_of("deckhand_scratch_ffffff_42_fresh_ab", inst),
            None
        );
        assert_eq!(super::job_of("deckhand_scratch_x", inst), None);
    }
}
