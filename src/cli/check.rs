//! `deckhand check`: the config and every command file, validated before a deploy needs
//! them.

use std::path::PathBuf;

use super::exit;
use crate::config::catalog::Catalog;
use crate::config::{ProcessEnv, Settings};

/// `deckhand check`: every problem in the config and in `commands/`, with file and line.
pub(super) fn check(config: Option<PathBuf>) -> i32 {
    let settings = match Settings::load(config.as_deref(), None, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::REFUSED;
        }
    };
    let file = settings
        .config_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<embedded deckhand.toml>".into());
    match Catalog::load(settings.commands_dir().as_deref(), &settings.config) {
        Ok(c) => {
            outln!(
                "{file}: ok ({} environments); commands: {}",
                settings.config.environments.len(),
                c.commands.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            exit::OK
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            exit::REFUSED
        }
    }
}
