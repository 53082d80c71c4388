//! `deckhand serve`, and `deckhand healthcheck`, which asks a running server's `/health`
//! (for container health checks).

use std::time::Duration;

use anyhow::Context;

use super::exit;
use crate::app::App;
use crate::config::Settings;

/// `deckhand serve`: listen, run the workers and the outbox until SIGTERM or SIGINT.
pub(super) async fn serve(settings: Settings) -> anyhow::Result<i32> {
    let listen = settings.listen.clone();
    let app = App::build(settings).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    crate::server::serve(app, listener, crate::server::signal()).await?;
    Ok(exit::OK)
}

/// `deckhand healthcheck [--url URL]`: exit 0 when the server answers.
pub(super) async fn healthcheck(url: Option<String>) -> anyhow::Result<i32> {
    let url = url.unwrap_or_else(|| {
        let listen = std::env::var("DECKHAND_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let port = listen.rsplit(':').next().unwrap_or("3000").to_owned();
        format!("http://127.0.0.1:{port}/health")
    });
    let ok = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    Ok(if ok { exit::OK } else { exit::JOB_FAILED })
}
