//! Deckhand: a chat-ops deploy bot.
pub mod catalog;
pub mod config;
pub mod domain;
pub mod notice;
pub mod runner;
pub mod store;
