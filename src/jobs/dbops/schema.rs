//! Pure comparisons of database schemas: drift between an environment and a fresh database,
//! what a migration added or changed, the fingerprint of a migration set's result.

use std::collections::BTreeSet;

use crate::store::envdb::Schema;

/// Bookkeeping tables of the common migration tools: created by every run, never "a table
/// the migrations created".
const TOOL_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "alembic_version",
    "_prisma_migrations",
    "schema_migrations",
    "flyway_schema_history",
    "knex_migrations",
    "knex_migrations_lock",
    "goose_db_version",
    "__diesel_schema_migrations",
];

/// `public.users` reads as `users`; other schemas keep their name.
pub fn short(name: &str) -> &str {
    name.strip_prefix("public.").unwrap_or(name)
}

fn is_tool_table(name: &str) -> bool {
    TOOL_TABLES.contains(&short(name))
}

/// The application's tables (the tools' bookkeeping left out), short names, sorted.
pub fn app_tables(s: &Schema) -> Vec<String> {
    s.tables
        .keys()
        .filter(|t| !is_tool_table(t))
        .map(|t| short(t).to_owned())
        .collect()
}

/// What a migration did to a schema: tables added, and tables whose columns changed.
pub fn changes(before: &Schema, after: &Schema) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (t, cols) in &after.tables {
        if is_tool_table(t) {
            continue;
        }
        match before.tables.get(t) {
            None => added.push(short(t).to_owned()),
            Some(old) if old != cols => changed.push(short(t).to_owned()),
            _ => {}
        }
    }
    (added, changed)
}

/// Every difference between the environment's schema and the fresh database's, by name.
pub fn drift(env_name: &str, env: &Schema, fresh: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let tables: BTreeSet<&String> = env.tables.keys().chain(fresh.tables.keys()).collect();
    for t in tables {
        match (env.tables.get(t), fresh.tables.get(t)) {
            (Some(_), None) => out.push(format!("table {} only in {env_name}", short(t))),
            (None, Some(_)) => out.push(format!("table {} missing in {env_name}", short(t))),
            (Some(e), Some(f)) => {
                let cols: BTreeSet<&String> = e.keys().chain(f.keys()).collect();
                for c in cols {
                    let name = format!("{}.{c}", short(t));
                    match (e.get(c), f.get(c)) {
                        (Some(ty), None) => {
                            out.push(format!("column {name} ({ty}) only in {env_name}"))
                        }
                        (None, Some(_)) => out.push(format!("column {name} missing in {env_name}")),
                        (Some(a), Some(b)) if a != b => out.push(format!(
                            "column {name} is {a} in {env_name}, {b} on a fresh database"
                        )),
                        _ => {}
                    }
                }
            }
            (None, None) => {}
        }
    }
    named_diff("index", env_name, &env.indexes, &fresh.indexes, &mut out);
    named_diff(
        "constraint",
        env_name,
        &env.constraints,
        &fresh.constraints,
        &mut out,
    );
    out
}

fn named_diff(
    what: &str,
    env_name: &str,
    env: &std::collections::BTreeMap<String, String>,
    fresh: &std::collections::BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    let names: BTreeSet<&String> = env.keys().chain(fresh.keys()).collect();
    for n in names {
        match (env.get(n), fresh.get(n)) {
            (Some(_), None) => out.push(format!("{what} {} only in {env_name}", short(n))),
            (None, Some(_)) => out.push(format!("{what} {} missing in {env_name}", short(n))),
            (Some(a), Some(b)) if a != b => out.push(format!(
                "{what} {} differs: {a} in {env_name}, {b} on a fresh database",
                short(n)
            )),
            _ => {}
        }
    }
}

/// Which migration set built this schema, as 16 hex digits of its SHA-256: two
/// environments ran the same set when their fresh databases have the same fingerprint.
pub fn fingerprint(s: &Schema) -> String {
    use sha2::Digest;
    let text = format!("{:?}|{:?}|{:?}", s.tables, s.indexes, s.constraints);
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(tables: &[(&str, &[(&str, &str)])]) -> Schema {
        let mut s = Schema::default();
        for (t, cols) in tables {
            s.tables.insert(
                t.to_string(),
                cols.iter()
                    .map(|(c, ty)| (c.to_string(), ty.to_string()))
                    .collect(),
            );
        }
        s
    }

    #[test]
    fn drift_names_each_table_and_column() {
        let fresh = schema(&[("public.users", &[("id", "integer not null")])]);
        let env = schema(&[
            (
                "public.users",
                &[("id", "integer not null"), ("nickname", "text")],
            ),
            ("public.extra", &[]),
        ]);
        assert_eq!(
            drift("staging", &env, &fresh),
            vec![
                "table extra only in staging".to_string(),
                "column users.nickname (text) only in staging".to_string()
            ]
        );
        assert!(drift("staging", &fresh, &fresh).is_empty());
        assert_ne!(fingerprint(&env), fingerprint(&fresh));
    }

    #[test]
    fn changes_leave_the_tools_bookkeeping_out() {
        let before = schema(&[("public.users", &[("id", "integer")])]);
        let after = schema(&[
            ("public.users", &[("id", "integer"), ("email", "text")]),
            ("public.orders", &[("id", "integer")]),
            ("public.schema_migrations", &[("version", "text")]),
        ]);
        assert_eq!(
            changes(&before, &after),
            (vec!["orders".to_string()], vec!["users".to_string()])
        );
        assert_eq!(app_tables(&after), vec!["orders", "users"]);
    }
}
