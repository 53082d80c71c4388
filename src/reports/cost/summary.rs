//! What cost figures mean: month to date, forecast, movers, and budget alerts.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::{CostRecord, currency_of, fetch};
use crate::app::App;
use crate::config::cost::{CostSource, Origin};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::store::{NewNotice, Write};

/// What a digest or a budget check says about one source.
#[derive(Debug, Clone, PartialEq)]
pub struct CostSummary {
    pub source: String,
    pub currency: String,
    /// The last day with data (never after today); `None` when the source reported nothing.
    pub data_end: Option<NaiveDate>,
    pub month: NaiveDate,
    pub month_to_date: f64,
    pub forecast: f64,
    pub budget: Option<f64>,
    /// The `period_days` days ending at `data_end`, and the same length before them.
    pub period_total: f64,
    pub previous_total: f64,
    /// Services whose spend changed most between the two periods, largest change first.
    pub movers: Vec<Mover>,
    /// Total per day over the period, for the chart.
    pub daily: Vec<(NaiveDate, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mover {
    pub service: String,
    pub previous: f64,
    pub current: f64,
}

impl CostSummary {
    pub fn over_budget(&self) -> bool {
        self.budget.is_some_and(|b| self.forecast > b)
    }
}

/// How many movers a digest lists.
pub const MOVERS: usize = 3;
/// Days averaged for the forecast's daily rate.
const RATE_DAYS: i64 = 7;

/// Month to date, forecast and movers as of `today` (UTC), from records of any dates.
pub fn summarize(
    source: &str,
    currency: &str,
    records: &[CostRecord],
    today: NaiveDate,
    period_days: u32,
    budget: Option<f64>,
) -> CostSummary {
    let month = today.with_day(1).unwrap_or(today);
    let days_in_month = month
        .checked_add_months(chrono::Months::new(1))
        .map(|n| (n - month).num_days())
        .unwrap_or(30);
    let end = records.iter().map(|r| r.date).filter(|d| *d <= today).max();
    let sum = |from: NaiveDate, to: NaiveDate| -> f64 {
        records
            .iter()
            .filter(|r| r.date >= from && r.date <= to)
            .map(|r| r.amount)
            .sum()
    };
    let mut s = CostSummary {
        source: source.to_owned(),
        currency: currency.to_owned(),
        data_end: end,
        month,
        month_to_date: 0.0,
        forecast: 0.0,
        budget,
        period_total: 0.0,
        previous_total: 0.0,
        movers: Vec::new(),
        daily: Vec::new(),
    };
    let Some(end) = end else { return s };
    let days = |n: i64| chrono::Duration::days(n);
    let covered = if end >= month {
        (end - month).num_days() + 1
    } else {
        0
    };
    s.month_to_date = sum(month, end);
    let rate = sum(end - days(RATE_DAYS - 1), end) / RATE_DAYS as f64;
    s.forecast = s.month_to_date + rate * (days_in_month - covered) as f64;

    let p = i64::from(period_days.max(1));
    let (cur_from, prev_from) = (end - days(p - 1), end - days(2 * p - 1));
    s.period_total = sum(cur_from, end);
    s.previous_total = sum(prev_from, cur_from - days(1));
    let mut by_service: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.date >= prev_from && r.date <= end)
    {
        let e = by_service.entry(&r.service).or_default();
        if r.date >= cur_from {
            e.1 += r.amount;
        } else {
            e.0 += r.amount;
        }
    }
    let mut movers: Vec<Mover> = by_service
        .into_iter()
        .filter(|(_, (a, b))| (b - a).abs() >= 0.005)
        .map(|(k, (a, b))| Mover {
            service: k.to_owned(),
            previous: a,
            current: b,
        })
        .collect();
    movers.sort_by(|a, b| {
        let d = |m: &Mover| (m.current - m.previous).abs();
        d(b).total_cmp(&d(a))
            .then_with(|| a.service.cmp(&b.service))
    });
    movers.truncate(MOVERS);
    s.movers = movers;
    s.daily = (0..p)
        .map(|i| {
            let d = cur_from + days(i);
            (d, sum(d, d))
        })
        .collect();
    s
}

/// `1,234.56 USD`.
pub fn fmt_money(amount: f64, currency: &str) -> String {
    let cents = (amount.abs() * 100.0).round() as u64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if amount < 0.0 && cents > 0 { "-" } else { "" };
    format!("{sign}{grouped}.{:02} {currency}", cents % 100)
}

/// Summaries of every source (sum sources after the ones they add up), or why a source
/// could not be read. A failing source never hides the others.
pub async fn summaries(
    app: &App,
    sources: &[CostSource],
    today: NaiveDate,
    period_days: u32,
) -> Vec<Result<CostSummary, (String, String)>> {
    let mut fetched: BTreeMap<String, Result<(String, Vec<CostRecord>), String>> = BTreeMap::new();
    let mut out = Vec::new();
    for s in sources
        .iter()
        .filter(|s| !matches!(s.origin, Origin::Sum(_)))
    {
        let r = fetch(app, s)
            .await
            .and_then(|recs| Ok((currency_of(s, &recs)?, recs)));
        if let Err(e) = &r {
            tracing::warn!(source = %s.name, error = %e, "cost source unavailable");
        }
        out.push(match &r {
            Ok((cur, recs)) => Ok(summarize(
                &s.name,
                cur,
                recs,
                today,
                period_days,
                s.budget_monthly,
            )),
            Err(e) => Err((s.name.clone(), e.clone())),
        });
        fetched.insert(s.name.clone(), r);
    }
    for s in sources {
        let Origin::Sum(parts) = &s.origin else {
            continue;
        };
        let mut all = Vec::new();
        let mut currency: Option<String> = s.currency.clone();
        let mut problem = None;
        for p in parts {
            match fetched.get(p) {
                Some(Ok((cur, recs))) => {
                    if currency.as_ref().is_some_and(|c| c != cur) {
                        problem = Some(format!(
                            "{p} reports {cur}, not {}",
                            currency.as_deref().unwrap_or("?")
                        ));
                    }
                    currency.get_or_insert_with(|| cur.clone());
                    all.extend(recs.iter().cloned());
                }
                Some(Err(e)) => problem = Some(format!("{p}: {e}")),
                None => problem = Some(format!("{p} is not a cost source with a command or url")),
            }
        }
        out.push(match problem {
            Some(e) => Err((s.name.clone(), e)),
            None => Ok(summarize(
                &s.name,
                currency.as_deref().unwrap_or("USD"),
                &all,
                today,
                period_days,
                s.budget_monthly,
            )),
        });
    }
    out
}

/// Post one alert per source and month whose forecast passes its budget; returns the
/// sources alerted now. The claim row and the notices are one transaction, so replicas
/// racing through the same check post once, and a crash never claims without posting.
pub async fn check_budgets(app: &App, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
    let all = &app.settings.config.costs;
    // Only what a budget needs is fetched: budgeted sources and the parts of budgeted sums.
    let mut needed: Vec<&str> = Vec::new();
    for s in all.iter().filter(|s| s.budget_monthly.is_some()) {
        needed.push(&s.name);
        if let Origin::Sum(parts) = &s.origin {
            needed.extend(parts.iter().map(String::as_str));
        }
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<CostSource> = all
        .iter()
        .filter(|s| needed.contains(&s.name.as_str()))
        .cloned()
        .collect();
    let today = now.date_naive();
    let mut alerted = Vec::new();
    for s in summaries(app, &sources, today, 7)
        .await
        .into_iter()
        .flatten()
    {
        if !s.over_budget() {
            continue;
        }
        let month = s.month.format("%Y-%m").to_string();
        let key = format!("{}:{month}", s.source);
        if app.db.claimed("budget", &key).await? {
            continue;
        }
        let source = all.iter().find(|c| c.name == s.source);
        let channels = source
            .map(|c| c.channels.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| crate::reports::digest::cost_channels(&app.settings.config.digests));
        let notice = budget_notice(&s);
        let mut writes = vec![crate::reports::digest::claim_write(
            "budget",
            &key,
            &app.worker_id,
        )];
        for (platform, channel) in crate::outbox::routes::destinations(&app.settings, &channels) {
            writes.push(Write::Notice(NewNotice::new(
                None,
                platform,
                channel,
                format!("budget:{key}"),
                &notice,
            )));
        }
        if app.db.apply_if_first(&writes).await? {
            app.outbox_wake.notify_one();
            alerted.push(s.source.clone());
        }
    }
    Ok(alerted)
}

/// The alert: which source, which month, forecast against budget.
pub fn budget_notice(s: &CostSummary) -> Notice {
    let budget = s.budget.unwrap_or(0.0);
    let month = s.month.format("%B %Y");
    Notice::new(
        NoticeKind::InfrastructureIssue,
        Tone::Warning,
        format!(
            "Cost source {} is forecast to pass its {month} budget: {} forecast, budget {}",
            s.source,
            fmt_money(s.forecast, &s.currency),
            fmt_money(budget, &s.currency)
        ),
    )
    .field("Source", &s.source)
    .field("Month", month.to_string())
    .field("Month to date", fmt_money(s.month_to_date, &s.currency))
    .field("Forecast", fmt_money(s.forecast, &s.currency))
    .field("Budget", fmt_money(budget, &s.currency))
    .field(
        "Over by",
        format!(
            "{} ({:.0}%)",
            fmt_money(s.forecast - budget, &s.currency),
            (s.forecast / budget - 1.0) * 100.0
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn rec(date: &str, service: &str, amount: f64) -> CostRecord {
        CostRecord {
            date: d(date),
            service: service.into(),
            amount,
            currency: None,
        }
    }

    #[test]
    fn forecast_adds_the_recent_rate_for_the_days_left() {
        // 10 a day through the 10th of a 30-day month: 100 so far, 300 at month end.
        let mut r: Vec<CostRecord> = (1..=10)
            .map(|i| rec(&format!("2026-11-{i:02}"), "EC2", 10.0))
            .collect();
        r.push(rec("2026-10-31", "EC2", 99.0));
        let s = summarize("aws", "USD", &r, d("2026-11-11"), 7, Some(250.0));
        assert_eq!(s.data_end, Some(d("2026-11-10")));
        assert!((s.month_to_date - 100.0).abs() < 1e-9);
        assert!((s.forecast - 300.0).abs() < 1e-9, "{}", s.forecast);
        assert!(s.over_budget());
        assert_eq!(s.daily.len(), 7);
    }

    #[test]
    fn movers_are_the_largest_changes_first() {
        let mut r = Vec::new();
        for i in 1..=14 {
            let date = format!("2026-11-{i:02}");
            let late = i > 7;
            r.push(rec(&date, "EC2", if late { 20.0 } else { 10.0 }));
            r.push(rec(&date, "S3", if late { 4.0 } else { 5.0 }));
            r.push(rec(&date, "Flat", 1.0));
        }
        let s = summarize("aws", "USD", &r, d("2026-11-14"), 7, None);
        assert_eq!(s.movers.len(), 2);
        assert_eq!(s.movers[0].service, "EC2");
        assert!((s.movers[0].current - 140.0).abs() < 1e-9);
        assert!((s.movers[1].previous - 35.0).abs() < 1e-9);
        assert!((s.period_total - 175.0).abs() < 1e-9);
    }

    #[test]
    fn money_is_grouped() {
        assert_eq!(fmt_money(1234567.891, "USD"), "1,234,567.89 USD");
        assert_eq!(fmt_money(-12.0, "EUR"), "-12.00 EUR");
        assert_eq!(fmt_money(0.001, "USD"), "0.00 USD");
    }
}
