//! The one place that decides where notices go: a job's, an environment's, an incident's.

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::domain::notice::Notice;
use crate::domain::platform::Platform;
use crate::store::jobs::{JobRow, job_notice};
use crate::store::{NewNotice, Write};

/// Where notices about an environment go, for something asked on `platform` in `channel`:
/// that platform, in the environment's channel there if it names one (else the asking
/// channel), plus the environment's channels on the other enabled platforms. Job notices,
/// lock notices and lock reminders all route through here.
pub fn env_routes(
    settings: &Settings,
    env: Option<&str>,
    platform: &str,
    channel: Option<&str>,
) -> Vec<(String, Option<String>)> {
    let env_channels = env
        .and_then(|e| settings.config.environments.get(e))
        .map(|e| e.channels.clone())
        .unwrap_or_default();
    let mut out = vec![(
        platform.to_owned(),
        env_channels
            .get(platform)
            .cloned()
            .or_else(|| channel.map(str::to_owned)),
    )];
    for (p, ch) in env_channels {
        if p != platform && settings.platform_enabled(&p) {
            out.push((p, Some(ch)));
        }
    }
    out
}

/// Outbox rows for a notice about `env`'s lock (taken, released, reminded), in the lock's
/// one thread, on the routes of [`env_routes`].
pub fn lock_notices(
    settings: &Settings,
    env: &str,
    platform: &str,
    channel: Option<&str>,
    n: &Notice,
) -> Vec<Write> {
    let n = &linked(settings, n, &format!("/environments/{}", path_part(env)));
    env_routes(settings, Some(env), platform, channel)
        .into_iter()
        .map(|(p, c)| Write::Notice(NewNotice::new(None, p, c, format!("lock:{env}"), n)))
        .collect()
}

/// Where a job's notices go: see [`env_routes`].
pub fn routes(settings: &Settings, job: &JobRow) -> Vec<(String, Option<String>)> {
    env_routes(
        settings,
        job.environment.as_deref(),
        &job.platform,
        job.channel.as_deref(),
    )
}

/// Outbox rows for one notice on every route of a job.
pub fn notices(settings: &Settings, job: &JobRow, n: &Notice) -> Vec<Write> {
    let n = &linked(settings, n, &format!("/jobs/{}", job.id));
    routes(settings, job)
        .into_iter()
        .map(|(p, c)| job_notice(job.id, &p, c.as_deref(), n))
        .collect()
}

/// [`notices`] for a message of the job's own besides its one job message (`thread`), sent
/// before other due notices when `urgent`.
pub fn notices_in(
    settings: &Settings,
    job: &JobRow,
    n: &Notice,
    thread: &str,
    urgent: bool,
) -> Vec<Write> {
    let n = &linked(settings, n, &format!("/jobs/{}", job.id));
    routes(settings, job)
        .into_iter()
        .map(|(p, c)| Write::Notice(NewNotice::new(Some(job.id), p, c, thread, n).urgent(urgent)))
        .collect()
}

/// `n` with a link to the status page at `path` when `[ui] public_url` is set.
fn linked(settings: &Settings, n: &Notice, path: &str) -> Notice {
    n.clone().page_link(settings.config.ui.base_url(), path)
}

/// A path segment, percent-encoded.
fn path_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The (platform, channel) pairs an incident's message goes to: its routed channels on
/// enabled platforms, and always the server's terminal.
pub fn destinations(
    settings: &Settings,
    channels: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let terminal = Platform::Terminal.as_str();
    let mut out = vec![(terminal.to_owned(), None)];
    for (p, c) in channels {
        if p != terminal && settings.platform_enabled(p) {
            out.push((p.clone(), Some(c.clone())));
        }
    }
    out
}
