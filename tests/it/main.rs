//! Deckhand's integration tests, in one test binary (`cargo test --test it`) so the crate
//! is linked once rather than once per file. Each file is a module: a test's name starts
//! with its file's, e.g. `slack::deploy_gives_one_message_updated_into_a_report` or
//! `queue::same_request_twice_makes_one_job::postgres`.
//!
//! The fault-injection tests (`faults::…`) are `#[ignore]`d here and run one at a time by
//! `scripts/test-faults`.

// First, so that `both!` (defined in `common`) is in scope for every module below.
#[macro_use]
mod common;
mod digest_support;

mod alert_races;
mod alerts;
mod batches;
mod binding;
mod clean_text;
mod cli;
mod connections;
mod cost;
mod crash;
mod dbops;
mod digest;
mod discord;
mod escape;
mod faults;
mod fly_config;
mod fuzz_regressions;
mod gateway;
mod github;
mod interactions;
mod layers;
mod ops;
mod queue;
mod ratelimits;
mod safety;
mod slack;
mod socket_chaos;
mod socket_mode;
mod storms;
mod ui;
mod ui_browser;
mod watch;
mod watch_alerts;
mod watch_prometheus;
