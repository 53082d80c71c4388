//! Registering the commands with Discord: every command of the catalog and the built-ins,
//! with their options, in one bulk overwrite.

use serde_json::{Value, json};

use super::interaction::builtin_options;
use crate::config::Config;
use crate::config::catalog::{ArgKind, BUILTINS, Catalog, JobKind};
use crate::domain::text::cut;

/// The bulk-overwrite body for `PUT /applications/{id}/commands`.
pub fn registration(catalog: &Catalog, config: &Config) -> Value {
    let envs: Vec<Value> = config
        .environments
        .keys()
        .take(25)
        .map(|e| json!({"name": e, "value": e}))
        .collect();
    let mut cmds = Vec::new();
    for c in catalog.commands.values() {
        let mut options: Vec<Value> = c
            .args
            .iter()
            .map(|a| {
                let mut o = json!({
                    "type": 3,
                    "name": a.name,
                    "description": cut(if a.description.is_empty() { &a.name } else { &a.description }, 100),
                    "required": a.required,
                });
                match &a.kind {
                    ArgKind::Environment => o["choices"] = Value::Array(envs.clone()),
                    ArgKind::Choice(ch) => {
                        o["choices"] = ch.iter().take(25).map(|x| json!({"name": x, "value": x})).collect()
                    }
                    _ => {}
                }
                o
            })
            .collect();
        if c.kind == JobKind::Deploy {
            options.push(json!({"type": 3, "name": "emergency", "description": "Admins only: skip staging-first, with this reason", "required": false}));
        }
        cmds.push(json!({"name": c.name, "type": 1, "description": cut(&c.description, 100), "options": options}));
    }
    for (name, desc, _) in BUILTINS {
        let options: Vec<Value> = builtin_options(name)
            .iter()
            .map(|(n, t, req)| {
                let mut o = json!({"type": t, "name": n, "description": n, "required": req});
                if *n == "environment" {
                    o["choices"] = Value::Array(envs.clone());
                }
                o
            })
            .collect();
        cmds.push(json!({"name": name, "type": 1, "description": desc, "options": options}));
    }
    Value::Array(cmds)
}

/// `deckhand discord register [--guild ID]`.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    app_id: &str,
    token: &str,
    guild: Option<&str>,
    body: &Value,
) -> Result<usize, String> {
    let path = match guild {
        Some(g) => format!("{base}/applications/{app_id}/guilds/{g}/commands"),
        None => format!("{base}/applications/{app_id}/commands"),
    };
    let r = http
        .put(path)
        .header("authorization", format!("Bot {token}"))
        .json(body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach Discord: {}",
                crate::support::net::net_reason(&e)
            )
        })?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        return Err(format!("Discord answered {status}: {}", cut(&text, 500)));
    }
    Ok(body.as_array().map(Vec::len).unwrap_or(0))
}
