//! Deckhand: a chat-ops deploy bot.
//!
//! The modules follow the flow of one command (see `DESIGN.md`), lowest layer first. Each
//! layer imports only from the layers below it, and no two top-level modules import each
//! other; `tests/it/layers.rs` enforces both.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 0 | [`domain`] | newtypes, job states, platforms, routes, the notice model, text and time helpers |
//! | 0 | [`support`] | child processes, metrics, schedules, charts, network error reasons |
//! | 1 | [`config`] | `deckhand.toml` + environment → typed settings (every section), the command catalog |
//! | 2 | [`store`] | the database: pools, migrations and all SQL, as methods of [`store::Db`] |
//! | 3 | [`app`] | the shared [`app::App`]: settings, catalog, database, wake-ups, HTTP client |
//! | 4 | [`outbox`] | notice routing and the delivery loop over the [`outbox::Deliver`] trait |
//! | 4 | [`jobs`] | workers, steps, health verification, rollback |
//! | 4 | [`watch`] | alerts, incidents, probes |
//! | 4 | [`reports`] | digests and cost |
//! | 4 | [`intake`] | an invocation → accepted job or refusal; policy; built-in commands |
//! | 5 | [`platform`] | Slack, Discord: verify, client, render, manifest and registration |
//! | 6 | [`server`] | the HTTP router, limits, alert routes, the status pages, background loops, shutdown |
//! | 7 | [`cli`] | the command line and the demo environments; `main.rs` stays thin |
pub mod domain;
pub mod support;

pub mod config;

pub mod store;

pub mod app;

pub mod outbox;

pub mod jobs;

pub mod watch;

pub mod reports;

pub mod intake;

pub mod platform;

pub mod server;

pub mod cli;
