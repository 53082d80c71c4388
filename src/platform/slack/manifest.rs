//! The Slack app manifest: every command of the catalog and the built-ins as slash
//! commands, the interactivity URL and the bot's scopes; for Socket Mode, no URLs at all.

use serde_json::{Value, json};

use crate::config::catalog::{BUILTINS, Catalog};

/// `deckhand slack manifest --url URL`: a Slack app manifest for every command; with
/// `app_url` `None` (`--socket-mode`), one for Socket Mode, which has no request URLs.
pub fn manifest(app_url: Option<&str>, catalog: &Catalog) -> Value {
    let base = app_url.map(|u| u.trim_end_matches('/'));
    let command = |name: &str, description: &str, usage: &str| {
        let mut c = json!({
            "command": format!("/{name}"),
            "description": crate::domain::text::cut(description, 100),
            "usage_hint": crate::domain::text::cut(usage.split_once(' ').map(|x| x.1).unwrap_or(""), 100),
            "should_escape": false,
        });
        if let Some(b) = base {
            c["url"] = json!(format!("{b}/slack/commands"));
        }
        c
    };
    let mut commands: Vec<Value> = catalog
        .commands
        .values()
        .map(|c| command(&c.name, &c.description, &c.usage))
        .collect();
    for (name, desc, usage) in BUILTINS {
        commands.push(command(name, desc, usage));
    }
    let mut interactivity = json!({"is_enabled": true});
    if let Some(b) = base {
        interactivity["request_url"] = json!(format!("{b}/slack/interactions"));
    }
    json!({
        "display_information": {
            "name": "Deckhand",
            "description": "Deploys, rollbacks, migrations and secret rotation from chat",
        },
        "features": {
            "bot_user": {"display_name": "Deckhand", "always_online": true},
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": ["commands", "chat:write", "chat:write.public", "channels:history", "groups:history", "files:write"]}},
        "settings": {
            "interactivity": interactivity,
            "org_deploy_enabled": false,
            "socket_mode_enabled": base.is_none(),
            "token_rotation_enabled": false,
        },
    })
}
