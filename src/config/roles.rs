//! `[roles.NAME]`: who holds each role, per platform.

use serde::Deserialize;

use crate::config::{Config, line_of_str};

/// Who holds a role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleGrant {
    /// The local operator (`deckhand run` in a terminal).
    pub operator: bool,
    pub slack_users: Vec<String>,
    pub discord_users: Vec<String>,
    pub discord_roles: Vec<String>,
}

/// Problems in `[roles.*]`, as (line, message).
pub(super) fn role_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for role in c.roles.keys() {
        if !crate::domain::valid_name(role) || role == "everyone" {
            out.push((
                line_of_str(text, &format!("[roles.{role}")),
                format!("role name {role:?} is invalid or reserved; \"everyone\" is built in"),
            ));
        }
    }
    out
}
