//! `deckhand digest NAME [--now] [--chart PATH]`.

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};

use super::exit;
use crate::app::App;
use crate::reports::digest::render::local;
use crate::reports::digest::{build, chart, notice, render_terminal, scheduler};

/// `deckhand digest NAME [--now] [--chart PATH]`: with `--now`, print the digest for this
/// instant and write its chart; without, show when it fires.
pub async fn run(
    app: &App,
    name: &str,
    now: bool,
    chart_path: Option<&Path>,
) -> anyhow::Result<i32> {
    let digests = &app.settings.config.digests;
    let Some(cfg) = digests.iter().find(|d| d.name == name) else {
        let known: Vec<&str> = digests.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "deckhand: there is no digest {name:?}; configured: {}",
            if known.is_empty() {
                "none ([[digests]] in deckhand.toml)".to_owned()
            } else {
                known.join(", ")
            }
        );
        return Ok(exit::REFUSED);
    };
    if !now {
        let t = Utc::now();
        outln!(
            "{}: \"{}\" in {}",
            cfg.name,
            cfg.schedule.expression(),
            cfg.schedule.time_zone().name()
        );
        for f in cfg.schedule.firings_between(t, t + Duration::days(400), 3) {
            outln!(
                "  next: {}",
                local(cfg.schedule.time_zone(), f, "%a %Y-%m-%d %H:%M %Z")
            );
        }
        if let Some(last) = app
            .db
            .schedule_last(&scheduler::state_key(&cfg.name))
            .await?
        {
            outln!("  last handled: {}", crate::domain::time::fmt_time(last));
        }
        outln!("(`deckhand digest {} --now` prints one now)", cfg.name);
        return Ok(exit::OK);
    }
    let d = build(app, cfg, Utc::now()).await?;
    outln!("{}", render_terminal(&notice(&d, None)));
    let path: PathBuf = chart_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| format!("digest-{}.png", cfg.name).into());
    match chart(&d, &app.settings.config.costs) {
        Ok(png) => {
            std::fs::write(&path, &png)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            outln!("chart: {} ({} bytes)", path.display(), png.len());
        }
        Err(e) => eprintln!("deckhand: no chart: {e}"),
    }
    Ok(exit::OK)
}
