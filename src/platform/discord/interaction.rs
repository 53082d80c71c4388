//! The interactions Discord sends (slash commands and button clicks), and a command's
//! options as the typed arguments intake expects.

use serde::Deserialize;
use serde_json::Value;

use crate::config::catalog::Catalog;

#[derive(Debug, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    /// The server the interaction came from; absent in a direct message.
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub data: Option<Data>,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    pub user: User,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct Data {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub options: Vec<CommandOption>,
    #[serde(default)]
    pub custom_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CommandOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
}

pub fn parse(body: &[u8]) -> Result<Interaction, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed interaction: {e}"))
}

/// Refuse options the command does not take, or that come twice, naming those it takes.
/// Unknown commands pass: intake refuses them with the commands there are.
pub fn check_options(catalog: &Catalog, name: &str, opts: &[CommandOption]) -> Result<(), String> {
    let accepted: Vec<&str> = match catalog.get(name) {
        Some(cmd) => {
            let mut a: Vec<&str> = cmd.args.iter().map(|a| a.name.as_str()).collect();
            if cmd.kind == crate::config::catalog::JobKind::Deploy {
                a.push("emergency");
            }
            a
        }
        None if crate::config::catalog::BUILTINS.iter().any(|b| b.0 == name) => {
            builtin_options(name).iter().map(|o| o.0).collect()
        }
        None => return Ok(()),
    };
    let list = || {
        if accepted.is_empty() {
            "none".to_owned()
        } else {
            accepted.join(", ")
        }
    };
    for (i, o) in opts.iter().enumerate() {
        let shown = crate::domain::text::shorten(&o.name);
        if !accepted.contains(&o.name.as_str()) {
            return Err(format!(
                "/{name} has no option {shown:?}; accepted options: {}",
                list()
            ));
        }
        if opts[..i].iter().any(|p| p.name == o.name) {
            return Err(format!(
                "/{name}: option {shown:?} is given twice; give each once (accepted options: {})",
                list()
            ));
        }
    }
    Ok(())
}

/// Options in the order the command file declares its arguments; `emergency` becomes the
/// `--emergency REASON` flag. Builtins take theirs in a fixed order.
pub fn options_to_args(catalog: &Catalog, name: &str, opts: &[CommandOption]) -> Vec<String> {
    let get = |n: &str| {
        opts.iter()
            .find(|o| o.name == n)
            .and_then(|o| o.value.as_ref())
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    };
    let mut out = Vec::new();
    if let Some(cmd) = catalog.get(name) {
        for a in &cmd.args {
            match get(&a.name) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        if let Some(r) = get("emergency") {
            out.push("--emergency".into());
            out.push(r);
        }
    } else {
        for n in builtin_options(name).iter().map(|o| o.0) {
            if let Some(v) = get(n) {
                out.extend(crate::domain::text::split_args(&v).unwrap_or_else(|_| vec![v]));
            }
        }
    }
    out
}

/// (name, Discord option type, required) of each builtin's options.
pub(super) fn builtin_options(name: &str) -> &'static [(&'static str, u8, bool)] {
    match name {
        "status" => &[("environment", 3, false)],
        "history" | "unlock" => &[("environment", 3, true)],
        "lock" => &[("environment", 3, true), ("reason", 3, true)],
        "approve" | "reject" | "cancel" => &[("job", 4, true)],
        "ack" => &[("incident", 4, true)],
        _ => &[],
    }
}
