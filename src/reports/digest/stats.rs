//! The arithmetic of a digest, kept pure so every figure it prints has a unit test.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Probe samples in a period: uptime is the share that passed. Probes run on a fixed
/// interval, so a share of samples is a share of time without weighting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uptime {
    pub ok: i64,
    pub total: i64,
}

impl Uptime {
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| self.ok as f64 * 100.0 / self.total as f64)
    }

    /// How much of the error budget the SLO allows is left, in percent of it: 100 with no
    /// failure, 0 exactly at the SLO, negative once overspent. `None` without samples, or
    /// for an SLO of 100 % (no budget to speak of).
    pub fn budget_left(&self, slo_percent: f64) -> Option<f64> {
        let allowed = (100.0 - slo_percent) / 100.0;
        if self.total == 0 || allowed <= 0.0 {
            return None;
        }
        let failed = (self.total - self.ok) as f64 / self.total as f64;
        Some((1.0 - failed / allowed) * 100.0)
    }

    pub fn add(&mut self, other: Uptime) {
        self.ok += other.ok;
        self.total += other.total;
    }
}

/// Milliseconds of `[from, to)` covered by at least one interval; an open interval (not
/// resolved) runs to `to`. Overlapping incidents are one outage, not two.
pub fn covered_ms(intervals: &[(i64, Option<i64>)], from: i64, to: i64) -> i64 {
    let mut spans: Vec<(i64, i64)> = intervals
        .iter()
        .map(|(s, e)| ((*s).max(from), e.unwrap_or(to).min(to)))
        .filter(|(s, e)| e > s)
        .collect();
    spans.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(i64, i64)> = None;
    for (s, e) in spans {
        cur = match cur {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + cur.map(|(s, e)| e - s).unwrap_or(0)
}

/// What the deployments of a period add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployStats {
    /// Deploy jobs started in the period (rollbacks counted apart).
    pub deploys: i64,
    /// Of those, finished (not still running).
    pub finished: i64,
    /// Of those, verified healthy.
    pub verified: i64,
    /// Rollbacks asked for, and automatic ones after a failed health check.
    pub rollbacks: i64,
    pub auto_rollbacks: i64,
    /// Median duration of the finished deploys.
    pub median_ms: Option<i64>,
}

impl DeployStats {
    /// From `(kind, status, duration_ms)` rows.
    pub fn from_rows(rows: &[(String, String, Option<i64>)]) -> Self {
        let mut s = DeployStats::default();
        let mut durations = Vec::new();
        for (kind, status, duration) in rows {
            match kind.as_str() {
                "deploy" => {
                    s.deploys += 1;
                    if status != crate::store::history::status::RUNNING {
                        s.finished += 1;
                        durations.extend(*duration);
                    }
                    if status == crate::store::history::status::VERIFIED {
                        s.verified += 1;
                    }
                }
                "rollback" => s.rollbacks += 1,
                "auto_rollback" => {
                    s.rollbacks += 1;
                    s.auto_rollbacks += 1;
                }
                _ => {}
            }
        }
        s.median_ms = median(&mut durations);
        s
    }

    pub fn success_percent(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.verified as f64 * 100.0 / self.finished as f64)
    }
}

/// The middle value; the mean of the two middle ones for an even count.
pub fn median(v: &mut [i64]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2
    })
}

/// The local days a period touches, each with the part of the period inside it, as
/// `(date, from_ms, to_ms)`. Days follow the digest's time zone, so "Tuesday" in the chart
/// is the reader's Tuesday, 23 or 25 hours long on a DST change.
pub fn local_days(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(NaiveDate, i64, i64)> {
    let mut out = Vec::new();
    let mut day = from.with_timezone(&tz).date_naive();
    let end_ms = to.timestamp_millis();
    let mut start_ms = from.timestamp_millis();
    while start_ms < end_ms {
        let next = day.succ_opt().unwrap_or(day);
        let next_ms = midnight(tz, next).min(end_ms);
        if next_ms > start_ms {
            out.push((day, start_ms, next_ms));
        }
        start_ms = next_ms.max(start_ms);
        if next == day {
            break;
        }
        day = next;
    }
    out
}

/// The first instant of a local date (midnight, or the end of a DST gap that swallowed it).
fn midnight(tz: Tz, d: NaiveDate) -> i64 {
    let wall = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    for h in 0..4 {
        if let Some(t) = tz
            .from_local_datetime(&(wall + chrono::Duration::hours(h)))
            .earliest()
        {
            return t.timestamp_millis();
        }
    }
    Utc.from_utc_datetime(&wall).timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_and_error_budget() {
        let u = Uptime {
            ok: 394,
            total: 400,
        };
        assert_eq!(u.percent(), Some(98.5));
        // 1.5 % failed against 0.5 % allowed: 200 % overspent.
        assert!((u.budget_left(99.5).unwrap() + 200.0).abs() < 1e-9);
        let u = Uptime {
            ok: 399,
            total: 400,
        };
        assert!((u.budget_left(99.5).unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(Uptime::default().percent(), None);
        assert_eq!(u.budget_left(100.0), None);
    }

    #[test]
    fn overlapping_incidents_count_once() {
        let iv = [(10, Some(30)), (20, Some(40)), (50, None), (-5, Some(2))];
        assert_eq!(covered_ms(&iv, 0, 60), 30 + 10 + 2);
        assert_eq!(covered_ms(&[], 0, 60), 0);
    }

    #[test]
    fn deploy_stats_and_median() {
        let r = |k: &str, s: &str, d: Option<i64>| (k.to_owned(), s.to_owned(), d);
        let s = DeployStats::from_rows(&[
            r("deploy", "verified", Some(30_000)),
            r("deploy", "verified", Some(50_000)),
            r("deploy", "failed", Some(10_000)),
            r("deploy", "unhealthy", Some(90_000)),
            r("deploy", "running", None),
            r("rollback", "verified", Some(5_000)),
            r("auto_rollback", "verified", Some(5_000)),
            r("migrate", "verified", Some(1)),
        ]);
        assert_eq!((s.deploys, s.finished, s.verified), (5, 4, 2));
        assert_eq!((s.rollbacks, s.auto_rollbacks), (2, 1));
        assert_eq!(s.median_ms, Some(40_000));
        assert_eq!(s.success_percent(), Some(50.0));
        assert_eq!(median(&mut [3, 1, 2]), Some(2));
    }

    #[test]
    fn local_days_follow_dst() {
        let tz: Tz = "Europe/Amsterdam".parse().unwrap();
        let from = "2026-03-28T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let to = "2026-03-30T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let days = local_days(tz, from, to);
        assert_eq!(days.len(), 3);
        // 29 March has 23 hours in Amsterdam.
        assert_eq!(days[1].2 - days[1].1, 23 * 3_600_000);
        assert_eq!(days[0].1, from.timestamp_millis());
        assert_eq!(days[2].2, to.timestamp_millis());
    }
}
