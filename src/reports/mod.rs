//! Scheduled reports: digests of uptime, deployments and cost.

pub mod cost;
pub mod digest;
