//! `[slack]` and `[discord]`: which workspaces, apps and guilds this Deckhand serves.
//!
//! A request correctly signed by Slack or Discord can still come from elsewhere: another
//! workspace that installed the same app, a Slack Connect user from a connected
//! organisation, another Discord server. These lists say where commands are taken from;
//! unset, everything signed is taken (and `serve` warns once at start-up).

use serde::Deserialize;

use crate::config::{Config, line_of_str};

/// `[slack]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Team ids (`T…`) of the workspaces, or Enterprise Grid organisation ids (`E…`),
    /// whose people may send commands and click buttons. Empty: any.
    pub allowed_teams: Vec<String>,
    /// The Slack app's id (`A…`): a request carrying another `api_app_id` is refused.
    pub app_id: Option<String>,
}

/// `[discord]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// Guild (server) ids whose interactions are taken. Empty: any guild and direct
    /// messages; set, a direct message (no guild) is from elsewhere.
    pub allowed_guilds: Vec<String>,
}

/// One of `prefixes` followed by upper-case letters or digits, as Slack's ids are.
fn slack_id(s: &str, prefixes: &[char]) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|p| prefixes.contains(&p))
        && s.len() >= 2
        && c.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A Slack user in `[roles.*] slack_users`: `U…` (or `W…`, an Enterprise Grid user) in any
/// allowed team, or `T…:U…` / `E…:U…` for that user of that team only.
pub fn valid_slack_user(s: &str) -> bool {
    match s.split_once(':') {
        Some((team, user)) => slack_id(team, &['T', 'E']) && slack_id(user, &['U', 'W']),
        None => slack_id(s, &['U', 'W']),
    }
}

/// A Discord snowflake: a decimal 64-bit number.
fn snowflake(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok()
}

/// Problems in `[slack]`, `[discord]` and the Slack users of `[roles.*]`, as (line, message).
pub(super) fn bound_problems(text: &str, c: &Config) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for t in &c.slack.allowed_teams {
        if !slack_id(t, &['T', 'E']) {
            out.push((
                line_of_str(text, "allowed_teams"),
                format!(
                    "slack.allowed_teams: {t:?} is not a Slack team id (T…, or E… for an Enterprise Grid organisation)"
                ),
            ));
        }
    }
    if let Some(a) = &c.slack.app_id
        && !slack_id(a, &['A'])
    {
        out.push((
            line_of_str(text, "app_id"),
            format!("slack.app_id: {a:?} is not a Slack app id (A…, under Basic Information)"),
        ));
    }
    for g in &c.discord.allowed_guilds {
        if !snowflake(g) {
            out.push((
                line_of_str(text, "allowed_guilds"),
                format!(
                    "discord.allowed_guilds: {g:?} is not a Discord guild id (a number such as \"112233445566778899\")"
                ),
            ));
        }
    }
    for (role, g) in &c.roles {
        for u in &g.slack_users {
            if !valid_slack_user(u) {
                out.push((
                    line_of_str(text, &format!("[roles.{role}")),
                    format!(
                        "roles.{role}.slack_users: {u:?} is not a Slack user id (\"U…\", or \"T…:U…\" for the user of one team)"
                    ),
                ));
            }
        }
    }
    out
}

/// What `serve` warns about once at start-up: platforms taking requests from anywhere.
pub fn binding_warnings(c: &Config, slack_on: bool, discord_on: bool) -> Vec<String> {
    let mut out = Vec::new();
    if slack_on && c.slack.allowed_teams.is_empty() {
        out.push("[slack] allowed_teams is not set: correctly signed requests from any Slack workspace are taken; set allowed_teams = [\"T…\"] to your workspace's team id".into());
    }
    if slack_on && c.slack.app_id.is_none() {
        out.push("[slack] app_id is not set: requests for any Slack app signed with this secret are taken; set app_id = \"A…\" (Basic Information → App ID)".into());
    }
    if discord_on && c.discord.allowed_guilds.is_empty() {
        out.push("[discord] allowed_guilds is not set: interactions from any Discord server and from direct messages are taken; set allowed_guilds = [\"…\"] to your server's id".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn problems(extra: &str) -> Vec<String> {
        let c = parse_config(
            "x",
            extra,
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        bound_problems(extra, &c).into_iter().map(|p| p.1).collect()
    }

    #[test]
    fn ids_are_checked_by_shape() {
        assert!(problems("[slack]\nallowed_teams = [\"T0TEAM\", \"E0ORG\"]\napp_id = \"A0APP\"\n[discord]\nallowed_guilds = [\"112233445566778899\"]\n[roles.x]\nslack_users = [\"U1A\", \"T0TEAM:U1A\", \"W0GRID\"]\n").is_empty());
        let p = problems("[slack]\nallowed_teams = [\"t0team\", \"U123\"]\napp_id = \"B0\"\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("\"t0team\" is not a Slack team id"), "{p:?}");
        assert!(p[2].contains("not a Slack app id"), "{p:?}");
        let p =
            problems("[discord]\nallowed_guilds = [\"my-server\", \"99999999999999999999999\"]\n");
        assert_eq!(p.len(), 2, "{p:?}");
        let p = problems("[roles.x]\nslack_users = [\"alice\", \"T1:alice\", \"U1:T1\"]\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("roles.x.slack_users"), "{p:?}");
    }

    #[test]
    fn unset_lists_are_warned_about_for_enabled_platforms_only() {
        let c = parse_config(
            "x",
            "",
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        assert!(binding_warnings(&c, false, false).is_empty());
        let w = binding_warnings(&c, true, true);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("allowed_teams = [\"T…\"]"), "{w:?}");
        let c = parse_config(
            "x",
            "[slack]\nallowed_teams = [\"T1\"]\napp_id = \"A1\"\n",
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        assert!(binding_warnings(&c, true, false).is_empty());
    }
}
