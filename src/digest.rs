//! Scheduled digests of uptime, deployments and cost.

use serde::Deserialize;

/// One named schedule (`[[digests]]` in deckhand.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    pub name: String,
}
