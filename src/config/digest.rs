//! `[[digests]]`: one named schedule each, checked when the file is read.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::platform::Platform;
use crate::support::schedule::Schedule;

/// What a digest may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// Uptime against the SLO, incidents and downtime.
    Uptime,
    Deployments,
    Cost,
}

/// One named schedule (`[[digests]]` in deckhand.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDigest")]
pub struct DigestConfig {
    pub name: String,
    /// The cron expression in its time zone, parsed when the config is read so a typo
    /// fails `deckhand check` instead of silently never firing.
    pub schedule: Schedule,
    /// Channel per platform (`slack`, `discord`); the terminal of `serve` always gets it.
    pub channels: BTreeMap<String, String>,
    pub include: Vec<Section>,
    pub period_days: u32,
    pub slo_percent: f64,
    /// Environments to report; empty: every configured one.
    pub environments: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    name: String,
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    channels: BTreeMap<String, String>,
    #[serde(default = "all_sections")]
    include: Vec<Section>,
    #[serde(default = "seven")]
    period_days: u32,
    #[serde(default = "default_slo")]
    slo_percent: f64,
    #[serde(default)]
    environments: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}
fn all_sections() -> Vec<Section> {
    vec![Section::Uptime, Section::Deployments, Section::Cost]
}
fn seven() -> u32 {
    7
}
fn default_slo() -> f64 {
    99.5
}

impl TryFrom<RawDigest> for DigestConfig {
    type Error = String;
    fn try_from(r: RawDigest) -> std::result::Result<Self, String> {
        let n = &r.name;
        if !crate::domain::valid_name(n) {
            return Err(format!(
                "digest name {n:?} is invalid; expected lowercase letters, digits, '-' or '_'"
            ));
        }
        let schedule =
            Schedule::parse(&r.cron, &r.timezone).map_err(|e| format!("digest {n}: {e}"))?;
        if !(1..=92).contains(&r.period_days) {
            return Err(format!("digest {n}: period_days must be between 1 and 92"));
        }
        if !(r.slo_percent > 0.0 && r.slo_percent <= 100.0) {
            return Err(format!(
                "digest {n}: slo_percent must be above 0 and at most 100, e.g. 99.5"
            ));
        }
        if r.include.is_empty() {
            return Err(format!(
                "digest {n}: include must name at least one of \"uptime\", \"deployments\", \"cost\""
            ));
        }
        if let Some(p) = r
            .channels
            .keys()
            .find(|p| Platform::parse_chat(p).is_none())
        {
            return Err(format!(
                "digest {n}: unknown platform {p:?} in channels; accepted: slack, discord, terminal"
            ));
        }
        Ok(DigestConfig {
            name: r.name,
            schedule,
            channels: r.channels,
            include: r.include,
            period_days: r.period_days,
            slo_percent: r.slo_percent,
            environments: r.environments,
        })
    }
}

impl DigestConfig {
    pub fn includes(&self, s: Section) -> bool {
        self.include.contains(&s)
    }
}

/// Problems between `[[digests]]`, `[[costs]]` and the environments, as (text to find the
/// line by, message), for `deckhand check`: each entry alone was checked when it was read.
pub fn config_problems(c: &crate::config::Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in &c.digests {
        let at = format!("name = \"{}\"", d.name);
        if !seen.insert(format!("d:{}", d.name)) {
            out.push((at.clone(), format!("digest {:?} is defined twice", d.name)));
        }
        for e in d
            .environments
            .iter()
            .filter(|e| !c.environments.contains_key(*e))
        {
            out.push((
                at.clone(),
                format!("digest {}: environment {e:?} is not configured", d.name),
            ));
        }
    }
    for s in &c.costs {
        let at = format!("name = \"{}\"", s.name);
        if !seen.insert(format!("c:{}", s.name)) {
            out.push((
                at.clone(),
                format!("cost source {:?} is defined twice", s.name),
            ));
        }
        if let crate::config::cost::Origin::Sum(parts) = &s.origin {
            for p in parts {
                let ok = c.costs.iter().any(|o| {
                    &o.name == p && !matches!(o.origin, crate::config::cost::Origin::Sum(_))
                });
                if !ok {
                    out.push((
                        at.clone(),
                        format!(
                            "costs {}: {p:?} in sources is not a cost source with a command or url",
                            s.name
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Where budget alerts go when a source names no channels: those of the digests that
/// report cost (the first digest's channel wins per platform).
pub fn cost_channels(digests: &[DigestConfig]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in digests.iter().filter(|d| d.includes(Section::Cost)) {
        for (p, c) in &d.channels {
            out.entry(p.clone()).or_insert_with(|| c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn parse(text: &str) -> std::result::Result<crate::config::Config, String> {
        let env = std::collections::BTreeMap::<String, String>::new();
        crate::config::parse_config("d.toml", text, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn config_defaults_and_errors_with_lines() {
        let c = parse("[[digests]]\nname = \"weekly\"\ncron = \"0 9 * * MON\"\n").unwrap();
        let d = &c.digests[0];
        assert_eq!((d.period_days, d.slo_percent), (7, 99.5));
        assert_eq!(d.include, all_sections());
        assert_eq!(d.schedule.time_zone(), Tz::UTC);
        let e = parse("[queue]\nworkers = 1\n\n[[digests]]\nname = \"w\"\ncron = \"0 9 * *\"\n")
            .unwrap_err();
        assert!(e.starts_with("d.toml:4:") && e.contains("5-field"), "{e}");
        let e = parse(
            "[[digests]]\nname = \"w\"\ncron = \"0 9 * * *\"\ntimezone = \"Europe/Amsterdm\"\n",
        )
        .unwrap_err();
        assert!(e.contains("Europe/Amsterdam"), "{e}");
        let e = parse("[[digests]]\nname = \"w\"\ncron = \"0 9 * * *\"\ninclude = [\"uptim\"]\n")
            .unwrap_err();
        assert!(e.contains("uptime"), "{e}");
    }

    #[test]
    fn cross_references_are_checked() {
        let c = parse(
            "[environments.staging]\n[[digests]]\nname = \"w\"\ncron = \"0 9 * * *\"\nenvironments = [\"prod\"]\n\
             [[costs]]\nname = \"all\"\nsources = [\"aws\"]\n",
        )
        .unwrap();
        let p = config_problems(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("\"prod\" is not configured"));
        assert!(p[1].1.contains("\"aws\" in sources"));
        assert!(config_problems(&parse(crate::config::EMBEDDED_CONFIG).unwrap()).is_empty());
    }
}
