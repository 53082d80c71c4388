//! Cost sources: commands or HTTP endpoints that report spend as JSON lines.

use serde::Deserialize;

/// One configured cost source (`[[costs]]` in deckhand.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSource {
    pub name: String,
}
