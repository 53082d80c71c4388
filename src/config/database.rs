//! `[environments.NAME.database]`: where an environment's own database is (the variable that
//! holds its URL, a secret) and how often it is backed up.

use serde::Deserialize;

use crate::support::schedule::Schedule;

/// An environment's database. The URL itself never appears in the file: only the name of
/// the variable that holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDatabase")]
pub struct DatabaseConfig {
    /// The environment variable holding the URL (`postgres://…`).
    pub url_env: String,
    /// Scheduled backups (each with its restore test), in `timezone`.
    pub backup_schedule: Option<Schedule>,
    /// Backups kept per environment; older ones are deleted after a new one verified.
    pub keep: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url_env: String,
    backup_cron: Option<String>,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default = "default_keep")]
    keep: usize,
}

fn utc() -> String {
    "UTC".into()
}
fn default_keep() -> usize {
    7
}

impl TryFrom<RawDatabase> for DatabaseConfig {
    type Error = String;
    fn try_from(r: RawDatabase) -> Result<Self, String> {
        let valid = !r.url_env.is_empty()
            && r.url_env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !r.url_env.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            // Not echoed: a URL pasted here by mistake is a secret.
            return Err(
                "database.url_env is not an environment variable name; expected e.g. \"STAGING_DATABASE_URL\" (capitals, digits, '_'), the variable that holds the URL".into(),
            );
        }
        if r.keep == 0 {
            return Err("database.keep must be at least 1".into());
        }
        let backup_schedule = match &r.backup_cron {
            Some(c) => Some(
                Schedule::parse(c, &r.timezone)
                    .map_err(|e| format!("database.backup_cron: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            url_env: r.url_env,
            backup_schedule,
            keep: r.keep,
        })
    }
}

/// The variable that gives every environment without a database of its own a real
/// PostgreSQL database for trying the procedure locally: `deckhand_demo_NAME` on that server.
pub const DEMO_URL_ENV: &str = "DECKHAND_DEMO_POSTGRES_URL";

/// With [`DEMO_URL_ENV`] set: a database for each environment that has none configured, and
/// its URL (a secret, like any database URL), by environment.
pub fn demo_databases(
    config: &mut crate::config::Config,
    env: &dyn crate::config::Env,
) -> Result<Vec<(String, secrecy::SecretString)>, crate::config::ConfigError> {
    let Some(url) = env.get(DEMO_URL_ENV) else {
        return Ok(Vec::new());
    };
    let server = PgTarget::parse(&url)
        .map_err(|e| crate::config::ConfigError::Env(format!("{DEMO_URL_ENV}: {e}")))?;
    let mut out = Vec::new();
    for (name, e) in config
        .environments
        .iter_mut()
        .filter(|(_, e)| e.database.is_none())
    {
        e.database = Some(DatabaseConfig {
            url_env: DEMO_URL_ENV.into(),
            backup_schedule: None,
            keep: default_keep(),
        });
        let url = server.with_db(&demo_db_name(name)).url();
        out.push((name.clone(), secrecy::SecretString::from(url)));
    }
    Ok(out)
}

/// The demo database of environment `env`.
pub fn demo_db_name(env: &str) -> String {
    format!("deckhand_demo_{env}")
}

/// The parts of a PostgreSQL URL libpq takes from `PG*` variables, so the URL (and its
/// password) never has to be in a child's argv.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: String,
    /// `sslmode` and the other query parameters, as given.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PgTarget({}:{}/{}, password {})",
            self.host,
            self.port,
            self.dbname,
            if self.password.is_some() {
                "[set]"
            } else {
                "[unset]"
            }
        )
    }
}

impl PgTarget {
    /// Parse `postgres://user:password@host:port/db?sslmode=…`. The error never echoes
    /// the URL.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        let u = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "scheme {:?} is not supported; accepted: postgres://",
                u.scheme()
            ));
        }
        let pct = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_owned());
        let dbname = pct(u.path().trim_start_matches('/'));
        if dbname.is_empty() {
            return Err("the URL names no database".into());
        }
        Ok(PgTarget {
            host: u
                .host_str()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_owned(),
            port: u.port().unwrap_or(5432),
            user: (!u.username().is_empty()).then(|| pct(u.username())),
            password: u.password().map(pct),
            dbname,
            params: u
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    /// The same server, another database.
    pub fn with_db(&self, name: &str) -> PgTarget {
        PgTarget {
            dbname: name.to_owned(),
            ..self.clone()
        }
    }

    /// The URL again, for sqlx and for `DATABASE_URL` in a step's environment (never argv).
    pub fn url(&self) -> String {
        let mut u = url::Url::parse("postgres://localhost/").expect("a fixed URL parses");
        let _ = u.set_host(Some(&self.host));
        let _ = u.set_port(Some(self.port));
        if let Some(user) = &self.user {
            let _ = u.set_username(user);
        }
        if let Some(p) = &self.password {
            let _ = u.set_password(Some(p));
        }
        u.set_path(&self.dbname);
        if !self.params.is_empty() {
            u.query_pairs_mut().extend_pairs(&self.params);
        }
        u.to_string()
    }

    /// libpq's variables for this target: for `pg_dump`, `pg_restore` and `psql`.
    pub fn libpq_env(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("PGHOST".to_owned(), self.host.clone()),
            ("PGPORT".to_owned(), self.port.to_string()),
            ("PGDATABASE".to_owned(), self.dbname.clone()),
        ];
        if let Some(u) = &self.user {
            out.push(("PGUSER".into(), u.clone()));
        }
        if let Some(p) = &self.password {
            out.push(("PGPASSWORD".into(), p.clone()));
        }
        for (k, v) in &self.params {
            let var = match k.as_str() {
                "sslmode" => "PGSSLMODE",
                "sslrootcert" => "PGSSLROOTCERT",
                "connect_timeout" => "PGCONNECT_TIMEOUT",
                "application_name" => "PGAPPNAME",
                _ => continue,
            };
            out.push((var.into(), v.clone()));
        }
        out
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_database_sections_are_refused_with_the_key() {
        let parse = |t: &str| toml::from_str::<DatabaseConfig>(t).map_err(|e| e.to_string());
        let ok = parse("url_env = \"STAGING_DATABASE_URL\"\nbackup_cron = \"0 3 * * *\"\ntimezone = \"Europe/Amsterdam\"\nkeep = 3").unwrap();
        assert_eq!((ok.keep, ok.backup_schedule.is_some()), (3, true));
        assert!(
            parse("url_env = \"postgres://u:p@h/db\"")
                .unwrap_err()
                .contains("is not an environment variable name")
        );
        assert!(
            parse("url_env = \"X\"\nkeep = 0")
                .unwrap_err()
                .contains("keep must be at least 1")
        );
        assert!(
            parse("url_env = \"X\"\nbackup_cron = \"often\"")
                .unwrap_err()
                .contains("database.backup_cron")
        );
    }

    #[test]
    fn a_url_becomes_libpq_variables_and_back() {
        let t =
            PgTarget::parse("postgres://app:p%40ss@db.example:6543/shop?sslmode=require").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.dbname, "shop");
        let env = t.libpq_env();
        assert!(env.contains(&("PGPORT".into(), "6543".into())));
        assert!(env.contains(&("PGSSLMODE".into(), "require".into())));
        assert_eq!(PgTarget::parse(&t.url()).unwrap(), t);
        assert!(!format!("{t:?}").contains("p@ss"));
        let e = PgTarget::parse("mysql://u:hunter22@h/db").unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
    }
}
