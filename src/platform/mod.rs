//! Chat platforms: HTTP intake, rendering of notices, and delivery.

use std::sync::Arc;

use axum::Router;

use crate::app::App;
use crate::outbox::Deliverer;
use crate::runner::CancelToken;

/// Routes of every platform; each answers 404 until its credentials are configured.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
}

/// A deliverer for every platform that has credentials.
pub fn deliverers(_app: &App) -> Vec<Deliverer> {
    Vec::new()
}

/// Background loops of the platforms (none yet).
pub fn background(_app: Arc<App>, _stop: CancelToken) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
