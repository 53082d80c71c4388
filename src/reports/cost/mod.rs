//! Cost sources: commands or HTTP endpoints that report spend as JSON.
//!
//! Every source speaks one small format, so any billing API can be plugged in with a script
//! and Deckhand never learns a vendor's SDK: one record per day and service,
//! `{"date": "2026-11-24", "service": "Amazon EC2", "amount": 12.34, "currency": "USD"}`,
//! as JSON lines or one JSON array (`amount` may be a number or a numeric string, as AWS
//! prints them; `currency` may be left out). `examples/aws-cost-explorer.py` turns AWS Cost
//! Explorer output into it; `commands/cost-demo.toml` is an offline demo.
//!
//! A command source runs the steps of a command from `commands/` with the runner (argv, no
//! shell) and reads their stdout. Months are calendar months in UTC, as billing APIs count
//! them. The month-end forecast is the month to date plus the average of the last seven
//! days with data times the days left, so a quiet first of the month does not read as a
//! cheap month. When the forecast passes `budget_monthly`, one alert notice per source and
//! month goes out (see [`check_budgets`]).

mod summary;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;

pub use summary::{
    CostSummary, MOVERS, Mover, budget_notice, check_budgets, fmt_money, summaries, summarize,
};

use crate::app::App;
use crate::config::cost::{CostSource, Origin};

/// One day of one service's spend.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRecord {
    pub date: NaiveDate,
    pub service: String,
    pub amount: f64,
    pub currency: Option<String>,
}

/// Records from a command's stdout or an HTTP body: a JSON array, or one JSON object per
/// line. Other lines (a step's progress chatter) are skipped; a malformed object is an error
/// naming its line, so a broken script is noticed rather than read as a cheap day.
pub fn parse_records(text: &str) -> Result<Vec<CostRecord>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: Vec<Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array: {e}"))?;
        return v
            .iter()
            .enumerate()
            .map(|(i, v)| record(v).map_err(|e| format!("item {}: {e}", i + 1)))
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        out.push(record(&v).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

fn record(v: &Value) -> Result<CostRecord, String> {
    const SHAPE: &str =
        r#"expected {"date": "YYYY-MM-DD", "service": "…", "amount": 1.23, "currency": "USD"}"#;
    let date = v
        .get("date")
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d").ok())
        .ok_or_else(|| format!("missing or bad \"date\"; {SHAPE}"))?;
    let service = v
        .get("service")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("missing \"service\"; {SHAPE}"))?;
    let amount = match v.get("amount") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|a| a.is_finite())
    .ok_or_else(|| format!("missing or bad \"amount\"; {SHAPE}"))?;
    Ok(CostRecord {
        date,
        service: crate::domain::text::cut(service.trim(), 80),
        amount,
        currency: v
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase),
    })
}

/// The currency of a source: the configured one, which every record must match, or the
/// records' own single currency.
pub fn currency_of(source: &CostSource, records: &[CostRecord]) -> Result<String, String> {
    let mut seen = source.currency.clone();
    for r in records {
        match (&seen, &r.currency) {
            (_, None) => {}
            (None, Some(c)) => seen = Some(c.clone()),
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "records in {b} and {a}: a source reports one currency (convert in the command, or set currency)"
                ));
            }
            _ => {}
        }
    }
    Ok(seen.unwrap_or_else(|| "USD".into()))
}

/// Fetch one source's records (a sum source has none of its own).
pub async fn fetch(app: &App, source: &CostSource) -> Result<Vec<CostRecord>, String> {
    let text = match &source.origin {
        Origin::Command(c) => run_command(app, source, c).await?,
        Origin::Url { url, token_env } => {
            let mut req = app.http.get(url).timeout(source.timeout);
            if let Some(var) = token_env {
                let token = std::env::var(var)
                    .map_err(|_| format!("{var} is not set (token_env of this source)"))?;
                req = req.bearer_auth(token);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("GET failed: {}", crate::support::net::net_reason(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("GET answered HTTP {}", resp.status().as_u16()));
            }
            resp.text()
                .await
                .map_err(|e| format!("GET body: {}", crate::support::net::net_reason(&e)))?
        }
        Origin::Sum(_) => return Ok(Vec::new()),
    };
    parse_records(&text)
}

/// Run the steps of `command` like a job's, without a job: argv only, the runner's
/// redaction and timeouts; stdout is the answer, stderr explains a failure.
async fn run_command(app: &App, source: &CostSource, command: &str) -> Result<String, String> {
    use crate::support::runner::{CancelToken, StepSpec, Stream, run_step};
    let cmd = app
        .catalog
        .get(command)
        .ok_or_else(|| format!("command {command:?} is not in the command catalog"))?;
    let mut stdout = String::new();
    for step in &cmd.steps {
        let mut env = BTreeMap::from([
            ("DECKHAND_COMMAND".to_owned(), command.to_owned()),
            ("DECKHAND_COST_SOURCE".to_owned(), source.name.clone()),
            (
                "DECKHAND_DATA_DIR".to_owned(),
                app.settings.data_dir().display().to_string(),
            ),
        ]);
        env.extend(step.env.clone());
        for k in &step.pass_env {
            if let Some(v) = std::env::var(k).ok().filter(|v| !v.is_empty()) {
                env.insert(k.clone(), v);
            }
        }
        let mut argv = step.argv.clone();
        if argv.first().is_some_and(|a| a == "deckhand") {
            argv[0] = app.settings.deckhand_exe.display().to_string();
        }
        let timeout = step
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(source.timeout);
        let spec = StepSpec {
            argv,
            env,
            cwd: step.cwd.as_ref().map(|c| app.settings.resolve(c)),
            timeout,
            kill_grace: Duration::from_secs(app.settings.config.runner.kill_grace_seconds),
            stdin: None,
            started: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Stream, String)>(1024);
        let mut last_err = String::new();
        let collect = async {
            while let Some((stream, line)) = rx.recv().await {
                match stream {
                    Stream::Stdout => {
                        stdout.push_str(&line);
                        stdout.push('\n');
                    }
                    Stream::Stderr => last_err = line,
                }
            }
        };
        let (outcome, ()) = tokio::join!(
            run_step(spec, &app.redactor, tx, CancelToken::new()),
            collect
        );
        if !outcome.success() {
            let why = if last_err.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::domain::text::cut(&last_err, 200))
            };
            return Err(format!(
                "step \"{}\" {}{why}",
                step.name,
                outcome.describe(timeout)
            ));
        }
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    #[test]
    fn parses_lines_arrays_and_string_amounts() {
        let lines = "starting\n{\"date\":\"2026-11-01\",\"service\":\"EC2\",\"amount\":\"1.5\",\"currency\":\"usd\"}\n\n{\"date\":\"2026-11-02T00:00:00Z\",\"service\":\"S3\",\"amount\":2}\n";
        let r = parse_records(lines).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].amount, 1.5);
        assert_eq!(r[0].currency.as_deref(), Some("USD"));
        assert_eq!(r[1].date, d("2026-11-02"));
        let a = parse_records(r#"[{"date":"2026-11-01","service":"EC2","amount":3}]"#).unwrap();
        assert_eq!(a[0].amount, 3.0);
        let e = parse_records("{\"date\":\"2026-11-01\",\"amount\":1}").unwrap_err();
        assert!(e.starts_with("line 1:") && e.contains("service"), "{e}");
    }

    #[test]
    fn sources_need_exactly_one_origin() {
        let parse = |t: &str| toml::from_str::<CostSource>(t).map_err(|e| e.to_string());
        assert!(parse("name = \"a\"\ncommand = \"cost-demo\"").is_ok());
        assert!(parse("name = \"a\"").unwrap_err().contains("exactly one"));
        assert!(
            parse("name = \"a\"\nurl = \"ftp://x\"")
                .unwrap_err()
                .contains("http")
        );
        assert!(parse("name = \"a\"\nsources = [\"a\"]").is_err());
        let t = parse("name = \"t\"\nsources = [\"a\", \"b\"]\nbudget_monthly = 10.0").unwrap();
        assert_eq!(t.origin, Origin::Sum(vec!["a".into(), "b".into()]));
    }
}
