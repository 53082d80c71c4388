//! `[probes]`: uptime probes of the environments and extra endpoints.

use serde::Deserialize;

/// `[probes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    pub enabled: bool,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    /// Consecutive failures before an *infrastructure issue* is raised.
    pub failures_before_incident: u32,
    /// Consecutive successes before it is resolved (so a flapping endpoint is one incident).
    pub successes_before_resolve: u32,
    /// Endpoints to probe besides the environments' health URLs.
    pub extra: Vec<ProbeTarget>,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 30,
            timeout_seconds: 5,
            failures_before_incident: 3,
            successes_before_resolve: 2,
            extra: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    pub name: String,
    pub url: String,
    pub environment: Option<String>,
    #[serde(default = "ok_status")]
    pub expect_status: u16,
}

fn ok_status() -> u16 {
    200
}
