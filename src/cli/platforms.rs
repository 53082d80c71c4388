//! Setting up the chat platforms: `deckhand slack manifest` prints the Slack app's
//! manifest, `deckhand discord register` registers the Discord commands.

use std::path::PathBuf;

use super::exit;
use crate::config::catalog::Catalog;
use crate::config::{ProcessEnv, Settings};

/// `deckhand slack manifest --url URL`, or with `--socket-mode` (`url` `None`).
pub(super) fn slack_manifest(config: Option<PathBuf>, url: Option<&str>) -> i32 {
    if let Some(url) = url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        eprintln!("--url must be the public base URL, e.g. https://deckhand.example.com");
        return exit::REFUSED;
    }
    let loaded = Settings::load(config.as_deref(), None, &ProcessEnv)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            Catalog::load(s.commands_dir().as_deref(), &s.config).map_err(|ps| {
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        });
    match loaded {
        Ok(catalog) => {
            let m = crate::platform::slack::manifest(url, &catalog);
            outln!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::REFUSED
        }
    }
}

/// `deckhand discord register [--guild ID]`.
pub(super) async fn discord_register(
    settings: Settings,
    guild: Option<String>,
) -> anyhow::Result<i32> {
    use secrecy::ExposeSecret;
    let (Some(app_id), Some(token)) = (
        &settings.discord_application_id,
        &settings.secrets.discord_bot_token,
    ) else {
        eprintln!(
            "deckhand: set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN to register commands"
        );
        return Ok(exit::REFUSED);
    };
    let catalog =
        Catalog::load(settings.commands_dir().as_deref(), &settings.config).map_err(|ps| {
            anyhow::anyhow!(
                "{}",
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    let body = crate::platform::discord::registration(&catalog, &settings.config);
    let base = settings.discord_api_url.trim_end_matches('/').to_owned();
    match crate::platform::discord::register(
        &reqwest::Client::new(),
        &base,
        app_id,
        token.expose_secret(),
        guild.as_deref(),
        &body,
    )
    .await
    {
        Ok(n) => {
            outln!(
                "registered {n} commands{}",
                guild
                    .map(|g| format!(" in guild {g}"))
                    .unwrap_or_else(|| " globally".into())
            );
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("deckhand: {e}");
            Ok(exit::ERROR)
        }
    }
}
