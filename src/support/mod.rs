//! Parts with no knowledge of deploys: child processes, metrics, schedules, charts.

pub(crate) mod backoff;
pub(crate) mod chart;
pub mod github;
pub mod github_actions;
pub mod github_app;
pub mod github_compare;
pub mod github_webhook;
pub mod metrics;
pub(crate) mod net;
pub mod pgroup;
pub mod prometheus;
pub mod ratelimit;
pub mod runner;
pub(crate) mod schedule;
pub(crate) mod secret;
pub(crate) mod stdout;
