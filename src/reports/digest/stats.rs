//! The arithmetic of a digest, kept pure so every figure it prints has a unit test.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Probe results of a period, weighted by time: each result stands for the time until the
/// target's next probe, at most [`Uptime::cap_ms`] (twice the probe interval), so a gap in
/// which nothing was probed (Deckhand down, a new install) is unmonitored rather than up
/// or down, and a result that opens a long silence does not stand for all of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uptime {
    /// Monitored time the environment was up, in ms.
    pub up_ms: i64,
    /// Time covered by probe results, in ms.
    pub monitored_ms: i64,
}

impl Uptime {
    /// How long one probe result counts at most, for a probe interval.
    pub fn cap_ms(interval_seconds: u64) -> i64 {
        (interval_seconds.max(1) as i64).saturating_mul(2000)
    }

    /// One environment from its targets' `(up_ms, monitored_ms)`: the share of target
    /// time up, over the wall-clock time the best-covered target was monitored (two
    /// targets probed for the same minute are one monitored minute).
    pub fn of_targets(targets: &[(i64, i64)]) -> Uptime {
        let (up, all) = targets
            .iter()
            .fold((0i64, 0i64), |(u, m), t| (u + t.0, m + t.1));
        let wall = targets.iter().map(|t| t.1).max().unwrap_or(0);
        if all <= 0 {
            return Uptime::default();
        }
        Uptime {
            up_ms: (up as f64 * wall as f64 / all as f64).round() as i64,
            monitored_ms: wall,
        }
    }

    /// Uptime over the monitored time; `None` without any.
    pub fn percent(&self) -> Option<f64> {
        (self.monitored_ms > 0).then(|| self.up_ms as f64 * 100.0 / self.monitored_ms as f64)
    }

    pub fn down_ms(&self) -> i64 {
        self.monitored_ms - self.up_ms
    }

    /// The error budget of a period: the downtime the SLO allows over all of it, in ms.
    /// `None` for an SLO of 100 % (no budget to speak of).
    pub fn budget_ms(slo_percent: f64, period_ms: i64) -> Option<i64> {
        let allowed = (100.0 - slo_percent) / 100.0;
        (allowed > 0.0).then(|| (allowed * period_ms as f64).round() as i64)
    }

    /// Share of the period's error budget spent by the downtime seen, in percent (above
    /// 100 once overspent). Measured against the whole period, so a few monitored minutes
    /// with one failure spend a few minutes of it, not a multiple of it.
    pub fn budget_spent(&self, slo_percent: f64, period_ms: i64) -> Option<f64> {
        let budget = Self::budget_ms(slo_percent, period_ms)?;
        (budget > 0).then(|| self.down_ms() as f64 * 100.0 / budget as f64)
    }

    pub fn add(&mut self, other: Uptime) {
        self.up_ms += other.up_ms;
        self.monitored_ms += other.monitored_ms;
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
        let week = 7 * 86_400_000;
        // 10 h monitored, 9 min down.
        let u = Uptime {
            up_ms: 591 * 60_000,
            monitored_ms: 600 * 60_000,
        };
        assert!((u.percent().unwrap() - 98.5).abs() < 1e-9);
        // 0.5 % of a week is 50 min 24 s; 9 min of it spent.
        assert_eq!(Uptime::budget_ms(99.5, week), Some(3_024_000));
        assert!((u.budget_spent(99.5, week).unwrap() - 540.0 / 30.24).abs() < 1e-9);
        assert_eq!(Uptime::default().percent(), None);
        assert_eq!(u.budget_spent(100.0, week), None);
        assert_eq!(Uptime::cap_ms(30), 60_000);
    }

    #[test]
    fn targets_share_one_clock() {
        // Two targets probed over the same 10 minutes, one down for 2 of them.
        let u = Uptime::of_targets(&[(600_000, 600_000), (480_000, 600_000)]);
        assert_eq!(u.monitored_ms, 600_000);
        assert_eq!(u.percent(), Some(90.0));
        assert_eq!(Uptime::of_targets(&[]), Uptime::default());
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
