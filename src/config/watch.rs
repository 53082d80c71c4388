//! `[prometheus]` and `[environments.NAME.watch]`: where metrics are queried, and the
//! window after a deploy in which checks, probes and alerts can still break it.

use serde::Deserialize;

/// `[prometheus]`: the query API checks run against. The bearer token, if any, comes from
/// `PROMETHEUS_TOKEN` (see [`crate::config::Secrets`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL: `http://127.0.0.1:9090` (queries go to `{url}/api/v1/query`). Unset: no
    /// Prometheus, and watches with checks are off.
    pub url: Option<String>,
    /// Each query's own timeout: a hanging Prometheus answers "no data" after this long.
    #[serde(default = "default_query_timeout")]
    pub timeout_seconds: u64,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout_seconds: default_query_timeout(),
        }
    }
}

fn default_query_timeout() -> u64 {
    5
}

/// What a check without data means for the watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNoData {
    /// No data breaks the watch (the default: silence is not health).
    #[default]
    Fail,
    /// No data is noted in the report and the watch goes on.
    Pass,
}

/// `[environments.NAME.watch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// How long the job watches after its health check passed.
    pub seconds: u64,
    /// How often the checks are evaluated during the watch.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    #[serde(default)]
    pub on_no_data: OnNoData,
    /// With `on_no_data = "fail"`, a check breaks the watch once it has had no data this
    /// long in a row (a restarted or new service has no samples for a scrape or two), or
    /// when the watch ends without data for it.
    #[serde(default = "default_no_data_grace")]
    pub no_data_grace_seconds: u64,
    #[serde(default)]
    pub checks: Vec<WatchCheck>,
    /// After a clean watch, alerts for the environment opened within this long of the
    /// deploy's end name it, with a Roll back button. 0: off.
    #[serde(default = "default_link_alerts")]
    pub link_alerts_seconds: u64,
}

fn default_interval() -> u64 {
    5
}

fn default_no_data_grace() -> u64 {
    30
}

fn default_link_alerts() -> u64 {
    1800
}

/// `[[environments.NAME.watch.checks]]`: one PromQL instant query and its bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchCheck {
    pub name: String,
    pub query: String,
    /// The value must stay at or below this.
    pub max: Option<f64>,
    /// The value must stay at or above this.
    pub min: Option<f64>,
    /// The query's unit, by Prometheus' convention of base units, for showing its values
    /// (bounds stay in the query's unit): `ratio` is shown as a percentage, `seconds` in
    /// ms or s. Unset: a plain number.
    #[serde(default)]
    pub unit: Option<Unit>,
}

/// What a check's query measures, for showing its values to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 0.0012 is shown as "0.12 %".
    Ratio,
    /// 0.212 is shown as "212 ms", 1.5 as "1.5 s".
    Seconds,
}

/// `v` in `unit`, for people.
pub fn show(v: f64, unit: Option<Unit>) -> String {
    match unit {
        None => fmt_value(v),
        Some(Unit::Ratio) => format!("{} %", fmt_value((v * 100.0 * 100.0).round() / 100.0)),
        Some(Unit::Seconds) if v.abs() < 1.0 => {
            format!("{} ms", fmt_value((v * 1000.0 * 10.0).round() / 10.0))
        }
        Some(Unit::Seconds) => format!("{} s", fmt_value((v * 100.0).round() / 100.0)),
    }
}

impl WatchCheck {
    /// `v` in this check's unit.
    pub fn show(&self, v: f64) -> String {
        show(v, self.unit)
    }

    /// `None` when `v` is within bounds; else the bound it broke, "above max 0.01".
    pub fn broken_by(&self, v: f64) -> Option<String> {
        match (self.max, self.min) {
            (Some(m), _) if v > m => Some(format!("above max {}", self.show(m))),
            (_, Some(m)) if v < m => Some(format!("below min {}", self.show(m))),
            _ => None,
        }
    }
}

/// A figure for people: up to 4 significant decimals, no trailing zeros.
pub fn fmt_value(v: f64) -> String {
    if v.is_finite() && v != 0.0 && v.abs() < 0.001 {
        return format!("{v:.3e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// Problems in `[prometheus]` and every environment's `watch`, as (needle, message).
pub(super) fn watch_problems(c: &crate::config::Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(u) = &c.prometheus.url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        out.push((
            "[prometheus]".into(),
            format!("prometheus.url = {u:?} must start with http:// or https://"),
        ));
    }
    if c.prometheus.timeout_seconds == 0 {
        out.push((
            "[prometheus]".into(),
            "prometheus.timeout_seconds must be at least 1".into(),
        ));
    }
    for (env, e) in &c.environments {
        let Some(w) = &e.watch else { continue };
        let needle = format!("[environments.{env}.watch");
        let at = |m: String| (needle.clone(), format!("environments.{env}.watch: {m}"));
        if w.seconds == 0 {
            out.push(at("seconds must be at least 1".into()));
        }
        if w.interval_seconds == 0 || w.interval_seconds > w.seconds.max(1) {
            out.push(at(format!(
                "interval_seconds = {} must be between 1 and seconds ({})",
                w.interval_seconds, w.seconds
            )));
        }
        for (i, ch) in w.checks.iter().enumerate() {
            let label = if ch.name.trim().is_empty() {
                format!("check {}", i + 1)
            } else {
                format!("check {:?}", ch.name)
            };
            if ch.name.trim().is_empty() {
                out.push(at(format!("{label} needs a name")));
            }
            if ch.query.trim().is_empty() {
                out.push(at(format!("{label} needs a query (PromQL)")));
            }
            if ch.max.is_none() && ch.min.is_none() {
                out.push(at(format!(
                    "{label} needs a bound; accepted: max = NUMBER or min = NUMBER"
                )));
            }
            if ch.max.is_some_and(|m| !m.is_finite()) || ch.min.is_some_and(|m| !m.is_finite()) {
                out.push(at(format!("{label}: bounds must be finite numbers")));
            }
        }
        let mut names: Vec<&str> = w.checks.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|p| p[0] == p[1]) {
            out.push(at("two checks have the same name".into()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_figures() {
        let c = WatchCheck {
            name: "error rate".into(),
            query: "x".into(),
            max: Some(0.01),
            min: None,
            unit: None,
        };
        assert_eq!(c.broken_by(0.02).as_deref(), Some("above max 0.01"));
        assert_eq!(c.broken_by(0.01), None);
        let m = WatchCheck {
            min: Some(1.0),
            max: None,
            ..c
        };
        assert_eq!(m.broken_by(0.5).as_deref(), Some("below min 1"));
        assert_eq!(fmt_value(0.1234567), "0.1235");
        assert_eq!(fmt_value(212.0), "212");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(show(0.0012, Some(Unit::Ratio)), "0.12 %");
        assert_eq!(show(0.5, Some(Unit::Ratio)), "50 %");
        assert_eq!(show(0.0, Some(Unit::Ratio)), "0 %");
        assert_eq!(show(0.2124, Some(Unit::Seconds)), "212.4 ms");
        assert_eq!(show(0.0095, Some(Unit::Seconds)), "9.5 ms");
        assert_eq!(show(1.5, Some(Unit::Seconds)), "1.5 s");
        let r = WatchCheck {
            unit: Some(Unit::Ratio),
            max: Some(0.05),
            ..m.clone()
        };
        assert_eq!(r.broken_by(0.5).as_deref(), Some("above max 5 %"));
    }

    #[test]
    fn check_reports_bad_watches() {
        let text = "[prometheus]\nurl = \"localhost:9090\"\n\n[environments.production]\n\n[environments.production.watch]\nseconds = 10\n\n[[environments.production.watch.checks]]\nname = \"error rate\"\nquery = \"up\"\n";
        let c = crate::config::parse_config("d.toml", text, &std::collections::BTreeMap::new())
            .unwrap();
        let p = crate::config::config_problems(text, &c);
        assert!(
            p.iter().any(|(l, m)| *l == 1 && m.contains("http://")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(l, m)| *l == 6 && m.contains("accepted: max = NUMBER or min = NUMBER")),
            "{p:?}"
        );
        let bad = text.replace("seconds = 10", "seconds = 10\non_no_data = \"maybe\"");
        let e = crate::config::parse_config("d.toml", &bad, &std::collections::BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fail") && e.contains("pass"), "{e}");
    }
}
