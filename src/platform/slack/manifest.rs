//! The Slack app manifest: every command of the catalog and the built-ins as slash
//! commands, the interactivity URL and the bot's scopes.

use serde_json::{Value, json};

use crate::config::catalog::{BUILTINS, Catalog};

/// `deckhand slack manifest --url URL`: a Slack app manifest for every command.
pub fn manifest(app_url: &str, catalog: &Catalog) -> Value {
    let base = app_url.trim_end_matches('/');
    let mut commands: Vec<Value> = catalog
        .commands
        .values()
        .map(|c| {
            json!({
                "command": format!("/{}", c.name),
                "url": format!("{base}/slack/commands"),
                "description": crate::domain::text::cut(&c.description, 100),
                "usage_hint": crate::domain::text::cut(c.usage.split_once(' ').map(|x| x.1).unwrap_or(""), 100),
                "should_escape": false,
            })
        })
        .collect();
    for (name, desc, usage) in BUILTINS {
        commands.push(json!({
            "command": format!("/{name}"),
            "url": format!("{base}/slack/commands"),
            "description": desc,
            "usage_hint": usage.split_once(' ').map(|x| x.1).unwrap_or(""),
            "should_escape": false,
        }));
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
            "interactivity": {"is_enabled": true, "request_url": format!("{base}/slack/interactions")},
            "org_deploy_enabled": false,
            "socket_mode_enabled": false,
            "token_rotation_enabled": false,
        },
    })
}
