//! Deckhand: a chat-ops deploy bot.
//!
//! The flow of one command (see `DESIGN.md`): a platform handler ([`platform`]: Slack,
//! Discord) or the terminal ([`cli`]) builds an [`intake::Invocation`]; [`intake`] checks it
//! against the [`catalog`] and the rules in [`policy`] and writes a job with [`queue`]; a
//! [`worker`] claims it and [`jobs`] runs it: [`steps`] through the [`runner`], [`health`]
//! verification, [`history`]. Every state change writes [`notice`]s into the outbox in the
//! same transaction, and [`outbox`] delivers them per platform. [`alerts`], [`probes`] and
//! [`digest`] are the other producers of notices; [`server`] ties it together.
pub mod alerts;
pub mod app;
pub mod builtins;
pub mod catalog;
pub mod chart;
pub mod cli;
pub mod config;
pub mod cost;
pub mod demo;
pub mod digest;
pub mod domain;
pub mod health;
pub mod history;
pub mod incidents;
pub mod intake;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod notice;
pub mod outbox;
pub mod platform;
pub mod policy;
pub mod probes;
pub mod queue;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod steps;
pub mod store;
pub mod worker;
