//! A digest in words and in a picture: the notice every platform renders (its fields are
//! the text fallback), a terminal rendering, and the PNG chart.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::stats::Uptime as Stats;
use super::{Digest, EnvReport, Late, Section};
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::fmt_duration;
use crate::reports::cost::{CostSummary, fmt_money};
use crate::support::chart::{DailySeries, UptimePanel};

pub(crate) fn local(tz: Tz, t: DateTime<Utc>, fmt: &str) -> String {
    t.with_timezone(&tz).format(fmt).to_string()
}

/// The digest as a notice: one field per environment and per cost source, each a few
/// lines, so every platform shows the whole digest even when the chart does not arrive.
pub fn notice(d: &Digest, late: Option<Late>) -> Notice {
    let end = local(d.tz, d.to, "%a %-d %b %Y %H:%M %Z");
    let days = (d.to - d.from).num_days();
    let title = match late {
        Some(_) => format!("Late digest {}: {days} days to {end}", d.name),
        None => format!("Digest {}: {days} days to {end}", d.name),
    };
    let mut n = Notice::new(NoticeKind::Digest, Tone::Info, title).field(
        "Period",
        format!(
            "{} – {} ({})",
            local(d.tz, d.from, "%Y-%m-%d %H:%M"),
            local(d.tz, d.to, "%Y-%m-%d %H:%M"),
            d.tz.name()
        ),
    );
    if let Some(l) = late {
        let mut s = format!("due {end}, posted {} late", fmt_late(l.now - d.to));
        if l.missed > 0 {
            s.push_str(&format!(
                "; {} earlier firing{} {} missed while Deckhand was down and {} not posted separately",
                l.missed,
                if l.missed == 1 { "" } else { "s" },
                if l.missed == 1 { "was" } else { "were" },
                if l.missed == 1 { "is" } else { "are" },
            ));
        }
        n = n.field("Late", s);
    }
    for e in &d.environments {
        n = n.field(&e.name, env_lines(d, e).join("\n"));
    }
    if d.include.contains(&Section::Cost) {
        if d.costs.is_empty() {
            n = n.field(
                "Cost",
                "no cost sources configured ([[costs]] in deckhand.toml)",
            );
        }
        for c in &d.costs {
            n = match c {
                Ok(s) => n.field(&format!("Cost: {}", s.source), cost_lines(s).join("\n")),
                Err((source, e)) => {
                    n.field(&format!("Cost: {source}"), format!("unavailable: {e}"))
                }
            };
        }
    }
    n
}

/// How late, in the largest units that read well: "6 min 0 s", "6 h 0 min", "3 d 2 h".
fn fmt_late(d: Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    match h {
        0 => fmt_duration(ms),
        1..=47 => format!("{h} h {m} min"),
        _ => format!("{} d {} h", h / 24, h % 24),
    }
}

fn env_lines(d: &Digest, e: &EnvReport) -> Vec<String> {
    let mut out = Vec::new();
    if d.include.contains(&Section::Uptime) {
        out.push(uptime_line(d, e));
        let total: i64 = e.incidents.values().sum();
        out.push(if total == 0 {
            "Incidents 0, downtime 0 s".to_owned()
        } else {
            let by: Vec<String> = e
                .incidents
                .iter()
                .map(|(s, c)| format!("{s} {c}"))
                .collect();
            format!(
                "Incidents {total} ({}), downtime {}",
                by.join(", "),
                fmt_duration(e.downtime_ms)
            )
        });
    }
    if d.include.contains(&Section::Deployments) {
        let s = &e.deploys;
        let mut line = format!("Deployments {}", s.deploys);
        if let Some(p) = s.success_percent() {
            line.push_str(&format!(
                ": {} of {} verified ({p:.0}%)",
                s.verified, s.finished
            ));
        }
        line.push_str(&format!(
            ", {} rollback{}",
            s.rollbacks,
            if s.rollbacks == 1 { "" } else { "s" }
        ));
        if s.auto_rollbacks > 0 {
            line.push_str(&format!(" ({} automatic)", s.auto_rollbacks));
        }
        if let Some(m) = s.median_ms {
            line.push_str(&format!(", median {}", fmt_duration(m)));
        }
        out.push(line);
    }
    match e.last_backup {
        Some(Some(at)) => out.push(format!(
            "Last verified backup {}, {} ago",
            crate::domain::time::fmt_time(at),
            fmt_duration((d.to.timestamp_millis() - at).max(0))
        )),
        Some(None) => out.push("Last verified backup: none yet".to_owned()),
        None => {}
    }
    out
}

/// A span of time in the units that read well, whole days without "0 h".
fn fmt_span(ms: i64) -> String {
    let s = fmt_late(Duration::milliseconds(ms));
    s.strip_suffix(" 0 h").map(str::to_owned).unwrap_or(s)
}

/// "Uptime: monitored 2 min 0 s of 7 d (0.02%): 100.00%; SLO 99.5% met, …". Uptime is
/// over the monitored time only; the error budget is the SLO's allowance over the whole
/// period, so a new install's few minutes neither look like an outage nor blow the budget.
fn uptime_line(d: &Digest, e: &EnvReport) -> String {
    let u = &e.uptime;
    let Some(p) = u.percent() else {
        return "Uptime: not enough data (no probe results in this period)".to_owned();
    };
    let period = (d.to - d.from).num_milliseconds().max(1);
    let share = u.monitored_ms as f64 * 100.0 / period as f64;
    let share = if share < 1.0 {
        format!("{share:.2}%")
    } else {
        format!("{share:.1}%")
    };
    let met = if p >= d.slo_percent { "met" } else { "missed" };
    let budget = match Stats::budget_ms(d.slo_percent, period) {
        None if u.down_ms() == 0 => "no failures".to_owned(),
        None => "no error budget at 100%".to_owned(),
        Some(b) => {
            let spent = u.budget_spent(d.slo_percent, period).unwrap_or(0.0);
            if u.down_ms() == 0 {
                format!("error budget {} for the period, none spent", fmt_span(b))
            } else if u.down_ms() <= b {
                format!(
                    "error budget {} for the period, {} spent ({spent:.0}%)",
                    fmt_span(b),
                    fmt_span(u.down_ms())
                )
            } else {
                format!(
                    "error budget {} for the period exhausted: {} down, overspent by {:.0}%",
                    fmt_span(b),
                    fmt_span(u.down_ms()),
                    spent - 100.0
                )
            }
        }
    };
    format!(
        "Uptime: monitored {} of {} ({share}): {p:.2}%; SLO {}% {met}, {budget}",
        fmt_span(u.monitored_ms),
        fmt_span(period),
        d.slo_percent
    )
}

fn cost_lines(s: &CostSummary) -> Vec<String> {
    let m = |a: f64| fmt_money(a, &s.currency);
    let Some(end) = s.data_end else {
        return vec!["no cost records reported".into()];
    };
    let mut out = vec![format!(
        "Month to date {} (through {})",
        m(s.month_to_date),
        end.format("%-d %b")
    )];
    let mut forecast = format!("Forecast {} for {}", m(s.forecast), s.month.format("%B"));
    if let Some(b) = s.budget {
        let verdict = if s.over_budget() {
            "over budget"
        } else {
            "within budget"
        };
        forecast.push_str(&format!(
            "; budget {} ({:.0}%, {verdict})",
            m(b),
            s.forecast * 100.0 / b
        ));
    }
    out.push(forecast);
    let change = if s.previous_total > 0.0 {
        format!(
            " ({:+.0}% on the period before)",
            (s.period_total / s.previous_total - 1.0) * 100.0
        )
    } else {
        String::new()
    };
    out.push(format!(
        "Last {} days {}{change}",
        s.daily.len(),
        m(s.period_total)
    ));
    if !s.movers.is_empty() {
        let movers: Vec<String> = s
            .movers
            .iter()
            .map(|v| {
                let delta = v.current - v.previous;
                let sign = if delta >= 0.0 { "+" } else { "" };
                let pct = if v.previous > 0.0 {
                    format!(" ({:+.0}%)", (delta / v.previous) * 100.0)
                } else {
                    " (new)".to_owned()
                };
                format!("{} {sign}{}{pct}", v.service, m(delta))
            })
            .collect();
        out.push(format!("Movers: {}", movers.join(", ")));
    }
    out
}

/// What the uptime panel of the chart shows: one line per environment against the SLO.
pub fn uptime_panel(d: &Digest) -> UptimePanel {
    UptimePanel {
        label: format!("Uptime per day against the {}% SLO", d.slo_percent),
        lines: d
            .uptime_daily
            .iter()
            .map(|(env, points)| DailySeries {
                label: env.clone(),
                unit: "%".into(),
                points: points.clone(),
            })
            .collect(),
        slo_percent: d.slo_percent,
    }
}

/// The PNG: uptime per day per environment against the SLO, above cost per day (summed
/// over the sources that share the first source's currency; a sum source would count its
/// parts twice).
pub fn chart(
    d: &Digest,
    costs: &[crate::config::cost::CostSource],
) -> std::result::Result<Vec<u8>, String> {
    let uptime = uptime_panel(d);
    let mut currency = None;
    let mut per_day: BTreeMap<NaiveDate, f64> = BTreeMap::new();
    for s in d.costs.iter().flatten() {
        let summed = costs
            .iter()
            .any(|c| c.name == s.source && matches!(c.origin, crate::config::cost::Origin::Sum(_)));
        if summed || currency.get_or_insert_with(|| s.currency.clone()) != &s.currency {
            continue;
        }
        for (day, v) in &s.daily {
            *per_day.entry(*day).or_default() += v;
        }
    }
    let cost = DailySeries {
        label: "Cost per day".into(),
        unit: currency.unwrap_or_default(),
        points: per_day.into_iter().collect(),
    };
    let title = format!(
        "{}: {} – {}",
        d.name,
        local(d.tz, d.from, "%-d %b"),
        local(d.tz, d.to, "%-d %b %Y")
    );
    crate::support::chart::digest_chart(&title, &uptime, &cost)
}

/// Plain text for a terminal: like [`Notice::render_text`], with a field's later lines
/// indented under its first.
pub fn render_terminal(n: &Notice) -> String {
    let width = n
        .fields
        .iter()
        .map(|f| f.label.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = format!("{} {}", n.tone.symbol(), n.title);
    for f in &n.fields {
        for (i, line) in f.value.lines().enumerate() {
            let label = if i == 0 {
                format!("{}:", f.label)
            } else {
                String::new()
            };
            out.push_str(&format!("\n    {label:<width$}  {line}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_digests_say_how_late_and_what_was_missed() {
        let to: DateTime<Utc> = "2026-11-23T08:00:00Z".parse().unwrap();
        let d = Digest {
            name: "weekly".into(),
            from: to - Duration::days(7),
            to,
            tz: "Europe/Amsterdam".parse().unwrap(),
            slo_percent: 99.5,
            include: vec![Section::Cost],
            environments: vec![],
            costs: vec![Err(("aws".into(), "GET answered HTTP 500".into()))],
            uptime_daily: vec![],
        };
        let n = notice(
            &d,
            Some(Late {
                now: to + Duration::hours(50),
                missed: 1,
            }),
        );
        assert_eq!(
            n.title,
            "Late digest weekly: 7 days to Mon 23 Nov 2026 09:00 CET"
        );
        let text = render_terminal(&n);
        assert!(
            text.contains("posted 2 d 2 h late; 1 earlier firing was missed"),
            "{text}"
        );
        assert!(
            text.contains("Cost: aws:  unavailable: GET answered HTTP 500"),
            "{text}"
        );
        assert_eq!(fmt_late(Duration::seconds(90)), "1 min 30 s");
    }
}
