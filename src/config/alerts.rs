//! `[alerts]`: incident channels, routes and reminders.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[alerts]`: where incidents go and how loud they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Incident channel per platform when no route matches.
    pub channels: BTreeMap<String, String>,
    /// First match wins.
    pub routes: Vec<AlertRoute>,
    /// While a P0/P1 fires unacknowledged, remind this often (seconds, by severity).
    pub reminder_seconds: BTreeMap<String, u64>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            channels: BTreeMap::new(),
            routes: Vec::new(),
            reminder_seconds: BTreeMap::from([("P0".into(), 900), ("P1".into(), 1800)]),
        }
    }
}

/// A routing rule: every label given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Severity to use instead of the one mapped from the alert's labels (P0–P3).
    pub severity: Option<String>,
    /// Incident channel per platform.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
}
