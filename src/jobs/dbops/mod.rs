//! Operations on an environment's own database (`[environments.X.database]`): the fixed
//! migration procedure around the team's migration tool ([`migrate`]), tested backups
//! ([`backup`]) and restores, and the scratch databases they use ([`scratch`]).
//!
//! The database URL is a secret: it reaches `pg_dump` and `pg_restore` only as libpq's
//! `PG*` variables and the team's tool only as `DATABASE_URL`, both in the child's
//! environment, never in argv; the redactor holds it and its password for every line stored.

pub(crate) mod backup;
pub(crate) mod backup_job;
pub(crate) mod migrate;
mod report;
pub mod restore;
pub mod schedule;
pub(crate) mod schema;
pub mod scratch;

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::app::App;
use crate::config::database::PgTarget;
use crate::jobs::Stops;
use crate::store::jobs::JobRow;
use crate::support::runner::Redactor;

/// Everything an operation on one environment's database needs.
pub(crate) struct DbJob<'a> {
    pub app: &'a Arc<App>,
    pub job: &'a JobRow,
    pub stops: &'a Stops,
    pub redactor: &'a Redactor,
    pub env: String,
    pub target: PgTarget,
}

impl<'a> DbJob<'a> {
    /// The job's environment database, or why it cannot be reached (never the URL).
    pub fn new(
        app: &'a Arc<App>,
        job: &'a JobRow,
        stops: &'a Stops,
        redactor: &'a Redactor,
    ) -> Result<Self, String> {
        let env = job.environment.clone().unwrap_or_default();
        let target = target_of(app, &env)?;
        Ok(Self {
            app,
            job,
            stops,
            redactor,
            env,
            target,
        })
    }

    /// A scratch database's name: recognisable, with this installation's tag and the
    /// job's id, so a crash leaves something the next start can attribute and drop.
    pub fn scratch_name(&self, tag: &str) -> String {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        format!(
            "{}{}{}_{tag}_{}",
            crate::store::envdb::SCRATCH_PREFIX,
            installation(self.app),
            self.job.id,
            hex::encode(b)
        )
    }
}

/// This installation's part of scratch names (`1a2b3c_`): a hash of Deckhand's own
/// database (its URL without the password), so two Deckhands sharing a PostgreSQL server
/// never drop each other's scratch databases.
pub fn installation(app: &App) -> String {
    use sha2::Digest;
    let id = crate::store::redact_url(&app.settings.database_url);
    format!(
        "{}_",
        hex::encode(&sha2::Sha256::digest(id.as_bytes())[..3])
    )
}

/// The environment's database target, from the variable its config names.
pub(crate) fn target_of(app: &App, env: &str) -> Result<PgTarget, String> {
    let Some(db) = app
        .settings
        .config
        .environments
        .get(env)
        .and_then(|e| e.database.as_ref())
    else {
        return Err(format!(
            "{env} has no [environments.{env}.database] configured"
        ));
    };
    let Some(url) = app.settings.secrets.database_urls.get(env) else {
        return Err(format!(
            "{} is not set: {env}'s database URL comes from it (environments.{env}.database.url_env)",
            db.url_env
        ));
    };
    PgTarget::parse(url.expose_secret())
        .map_err(|e| format!("{} does not hold a usable database URL: {e}", db.url_env))
}

/// Human size.
pub(crate) fn fmt_bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / 1024.0 / 1024.0),
    }
}

/// Staging first for migrations, from the source's last migration run: it must have
/// applied cleanly with no drift, and (when `fingerprint` is known) built the same schema
/// on its fresh database, i.e. run the same migration set.
pub fn migration_promotion(
    src: &str,
    last: Option<&crate::store::dbruns::DbRun>,
    fingerprint: Option<&str>,
) -> Result<(), String> {
    let hint = format!(
        "run /migrate {src} first, or, in an emergency, an admin can add --emergency \"reason\""
    );
    let Some(last) = last else {
        return Err(format!(
            "refused by staging-first rule: no migration has run on {src} yet; {hint}"
        ));
    };
    if let Some(d) = last.drift.as_deref().filter(|d| !d.is_empty()) {
        return Err(format!(
            "refused by staging-first rule: {src}'s last migration found schema drift: {d}; fix {src} and {hint}"
        ));
    }
    if last.ok == 0 {
        return Err(format!(
            "refused by staging-first rule: {src}'s last migration did not finish cleanly ({}); {hint}",
            last.detail
        ));
    }
    if let Some(fp) = fingerprint
        && last.schema_fp.as_deref() != Some(fp)
    {
        return Err(format!(
            "refused by staging-first rule: {src} has not run this migration set (its last clean migration built a different schema); {hint}"
        ));
    }
    Ok(())
}
