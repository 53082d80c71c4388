//! Uptime probes: every environment's health URL, plus extra endpoints, on an interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::domain::time::now_ms;
pub use crate::store::probes::ProbeRow;
use crate::support::runner::CancelToken;
use crate::watch::incidents::Event;

/// One thing to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub environment: Option<String>,
    pub expect_status: u16,
}

/// Every environment's health URL, then the extra endpoints.
pub fn targets(app: &App) -> Vec<Target> {
    let cfg = &app.settings.config;
    let mut out: Vec<Target> = cfg
        .environments
        .iter()
        .filter_map(|(name, e)| {
            e.health_url.as_ref().map(|u| Target {
                name: name.clone(),
                url: u.clone(),
                environment: Some(name.clone()),
                expect_status: e.expect_status,
            })
        })
        .collect();
    out.extend(cfg.probes.extra.iter().map(|x| Target {
        name: x.name.clone(),
        url: x.url.clone(),
        environment: x.environment.clone(),
        expect_status: x.expect_status,
    }));
    out
}

/// Probe one target once: (ok, status, latency, error in words).
pub async fn probe(
    http: &reqwest::Client,
    t: &Target,
    timeout: Duration,
) -> (bool, Option<i64>, i64, Option<String>) {
    let start = Instant::now();
    let r = http.get(&t.url).timeout(timeout).send().await;
    let took = start.elapsed().as_millis() as i64;
    match r {
        Ok(resp) => {
            let s = resp.status().as_u16();
            let ok = s == t.expect_status;
            (
                ok,
                Some(s as i64),
                took,
                (!ok).then(|| format!("returned {s}, expected {}", t.expect_status)),
            )
        }
        Err(e) => (
            false,
            None,
            took,
            Some(format!(
                "unreachable: {}",
                crate::support::net::net_reason(&e)
            )),
        ),
    }
}

/// What the newest results say should happen to the target's incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Nothing,
    /// Raise it: the streak of failures began at this time, with this error.
    Down {
        since: i64,
        error: String,
    },
    /// Resolve it: the target has answered since this time.
    Up {
        since: i64,
    },
}

/// Decide from results (newest first) and whether an incident is open. Opening needs
/// `fail_k` failures in a row, resolving `ok_m` successes in a row: a flapping endpoint
/// stays one incident instead of a storm.
pub fn verdict(results: &[ProbeRow], open: bool, fail_k: usize, ok_m: usize) -> Verdict {
    let failing = results.iter().take_while(|r| !r.ok).count();
    let passing = results.iter().take_while(|r| r.ok).count();
    if !open && failing >= fail_k.max(1) {
        let first = &results[failing - 1];
        return Verdict::Down {
            since: first.at,
            error: results[0].error.clone().unwrap_or_else(|| "failing".into()),
        };
    }
    if open && passing >= ok_m.max(1) {
        return Verdict::Up {
            since: results[passing - 1].at,
        };
    }
    Verdict::Nothing
}

/// One round: probe every target, store the results, raise or resolve incidents.
pub async fn round(app: &App) -> anyhow::Result<()> {
    let cfg = &app.settings.config.probes;
    let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
    let targets = targets(app);
    // All at once: a round lasts as long as its slowest probe, not their sum.
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().cloned().enumerate() {
        let http = app.http.clone();
        set.spawn(async move { (i, probe(&http, &t, timeout).await) });
    }
    let mut results = vec![None; targets.len()];
    while let Some(Ok((i, r))) = set.join_next().await {
        results[i] = Some(r);
    }
    let at = now_ms();
    for (t, r) in targets.iter().zip(results) {
        let Some((ok, status, took, err)) = r else {
            continue;
        };
        crate::support::metrics::probe(&t.name, ok);
        app.db
            .store_probe(crate::store::probes::NewProbe {
                target: &t.name,
                environment: t.environment.as_deref(),
                at,
                ok,
                status,
                latency_ms: took,
                error: err.as_deref(),
            })
            .await?;
        let key = format!("probe:{}", t.name);
        let open = app.db.open_incident(&key).await?.is_some();
        let want = (cfg
            .failures_before_incident
            .max(cfg.successes_before_resolve)
            + 1) as i64;
        let recent = app.db.recent_probes(&t.name, want).await?;
        let v = verdict(
            &recent,
            open,
            cfg.failures_before_incident as usize,
            cfg.successes_before_resolve as usize,
        );
        let (resolved, since, error) = match v {
            Verdict::Nothing => continue,
            Verdict::Down { since, error } => (false, since, Some(error)),
            Verdict::Up { since } => (true, since, None),
        };
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("source".to_owned(), "probe".to_owned());
        labels.insert("service".to_owned(), t.name.clone());
        if let Some(e) = &t.environment {
            labels.insert("environment".to_owned(), e.clone());
        }
        let (severity, channels) =
            crate::watch::alerts::route(&app.settings.config.alerts, &labels, "P2");
        let event = Event {
            dedup_key: key,
            source: "probe".into(),
            title: match &error {
                Some(e) => format!("{} is down: {} {e}", t.name, t.url),
                None => format!("{} is down: {}", t.name, t.url),
            },
            severity,
            environment: t.environment.clone(),
            service: Some(t.name.clone()),
            description: None,
            link: Some(t.url.clone()),
            resolved,
            at: since,
        };
        crate::watch::incidents::record(
            &app.db,
            &app.intake,
            &app.outbox_wake,
            &event,
            &crate::outbox::routes::destinations(&app.settings, &channels),
        )
        .await?;
    }
    Ok(())
}

/// Probe on the interval until `stop`; each round is claimed so replicas probe once, and
/// incident reminders go out on the same tick.
pub async fn run(app: Arc<App>, stop: CancelToken) {
    let every = Duration::from_secs(app.settings.config.probes.interval_seconds.max(1));
    loop {
        let interval_ms = every.as_millis() as i64;
        let slot = now_ms() / interval_ms;
        if app.settings.config.probes.enabled {
            match app
                .db
                .claim_once("probe", &slot.to_string(), &app.worker_id)
                .await
            {
                Ok(true) => {
                    if let Err(e) = round(&app).await {
                        tracing::warn!(error = %format!("{e:#}"), "probe round failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim a probe round"),
            }
        }
        if let Err(e) = crate::watch::incidents::remind(&app).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot send incident reminders");
        }
        // Sleep to the start of the next slot, so replicas agree on the rounds.
        let next = (slot + 1) * interval_ms - now_ms();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(next.clamp(50, interval_ms) as u64)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at: i64, ok: bool) -> ProbeRow {
        ProbeRow {
            id: at,
            target: "t".into(),
            environment: None,
            at,
            ok,
            status: None,
            latency_ms: 1,
            error: (!ok).then(|| "down".into()),
        }
    }

    #[test]
    fn opens_after_k_failures_and_resolves_after_m_successes() {
        // newest first
        let two_fail = [r(5, false), r(4, false), r(3, true)];
        assert_eq!(verdict(&two_fail, false, 3, 2), Verdict::Nothing);
        let three_fail = [r(6, false), r(5, false), r(4, false), r(3, true)];
        assert_eq!(
            verdict(&three_fail, false, 3, 2),
            Verdict::Down {
                since: 4,
                error: "down".into()
            }
        );
        assert_eq!(verdict(&three_fail, true, 3, 2), Verdict::Nothing);
        let one_ok = [r(7, true), r(6, false)];
        assert_eq!(
            verdict(&one_ok, true, 3, 2),
            Verdict::Nothing,
            "one success is not a recovery"
        );
        let two_ok = [r(8, true), r(7, true), r(6, false)];
        assert_eq!(verdict(&two_ok, true, 3, 2), Verdict::Up { since: 7 });
        // Flapping: fail, ok, fail, ok never opens with k = 2.
        let flap = [r(4, false), r(3, true), r(2, false), r(1, true)];
        assert_eq!(verdict(&flap, false, 2, 2), Verdict::Nothing);
    }
}
