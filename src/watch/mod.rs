//! Watching the environments: alerts in, incidents, uptime probes.

pub mod alerts;
pub(crate) mod deploys;
pub(crate) mod incidents;
pub mod probes;
