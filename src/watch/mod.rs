//! Watching the environments: alerts in, incidents, uptime probes.

pub mod alerts;
pub mod incidents;
pub mod probes;
