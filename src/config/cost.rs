//! `[[costs]]`: where spend figures come from, budgets and their channels.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::platform::Platform;
use serde::Deserialize;

/// One configured cost source (`[[costs]]` in deckhand.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct CostSource {
    pub name: String,
    pub origin: Origin,
    /// Alert when the month-end forecast passes this (in the source's currency).
    pub budget_monthly: Option<f64>,
    /// The currency every record must be in; unset: the first record's, else USD.
    pub currency: Option<String>,
    /// Where budget alerts go, per platform; unset: the channels of the digests that
    /// include cost.
    pub channels: BTreeMap<String, String>,
    /// Longest a command or a request may take.
    pub timeout: Duration,
}

/// Where a source's figures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A command from `commands/` whose steps print records on stdout.
    Command(String),
    /// GET this URL; with `token_env`, the bearer token is read from that variable.
    Url {
        url: String,
        token_env: Option<String>,
    },
    /// The sum of other sources: a budget over several of them ("in total").
    Sum(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    command: Option<String>,
    url: Option<String>,
    token_env: Option<String>,
    sources: Option<Vec<String>>,
    budget_monthly: Option<f64>,
    currency: Option<String>,
    #[serde(default)]
    channels: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    120
}

impl TryFrom<RawSource> for CostSource {
    type Error = String;
    fn try_from(r: RawSource) -> Result<Self, String> {
        let n = &r.name;
        if !crate::domain::valid_name(n) {
            return Err(format!(
                "cost source name {n:?} is invalid; expected lowercase letters, digits, '-' or '_'"
            ));
        }
        let origin = match (r.command, r.url, r.sources) {
            (Some(c), None, None) => Origin::Command(c),
            (None, Some(url), None)
                if url.starts_with("http://") || url.starts_with("https://") =>
            {
                Origin::Url {
                    url,
                    token_env: r.token_env,
                }
            }
            (None, Some(_), None) => {
                return Err(format!(
                    "costs {n}: url must start with http:// or https://"
                ));
            }
            (None, None, Some(s)) if !s.is_empty() && !s.contains(n) => Origin::Sum(s),
            (None, None, Some(_)) => {
                return Err(format!(
                    "costs {n}: sources must name other cost sources, e.g. [\"aws\", \"gcp\"]"
                ));
            }
            _ => {
                return Err(format!(
                    "costs {n}: set exactly one of command = \"NAME\" (a command in commands/), \
                     url = \"https://…\" or sources = [\"a\", \"b\"] (a budget over their sum)"
                ));
            }
        };
        if let Some(b) = r.budget_monthly
            && !(b.is_finite() && b > 0.0)
        {
            return Err(format!(
                "costs {n}: budget_monthly must be a positive amount"
            ));
        }
        if let Some(p) = r
            .channels
            .keys()
            .find(|p| Platform::parse_chat(p).is_none())
        {
            return Err(format!(
                "costs {n}: unknown platform {p:?} in channels; accepted: slack, discord, terminal"
            ));
        }
        Ok(CostSource {
            name: r.name,
            origin,
            budget_monthly: r.budget_monthly,
            currency: r.currency.map(|c| c.to_ascii_uppercase()),
            channels: r.channels,
            timeout: Duration::from_secs(r.timeout_seconds.clamp(1, 3600)),
        })
    }
}
