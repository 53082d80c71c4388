//! Parts with no knowledge of deploys: child processes, metrics, schedules, charts.

pub mod chart;
pub mod metrics;
pub mod net;
pub mod runner;
pub mod schedule;
pub mod secret;
