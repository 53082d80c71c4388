//! Cost sources: budget alerts once per source and month, and the AWS example.

use crate::common::*;
use crate::digest_support::*;
use chrono::{Duration, NaiveDate};
use serde_json::Value;

/// A cost API on 127.0.0.1 answering a JSON array: 100 a day from October to 14 November.
fn cost_api() -> u16 {
    let mut records = Vec::new();
    let mut d = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    while d <= NaiveDate::from_ymd_opt(2026, 11, 14).unwrap() {
        records.push(
            serde_json::json!({"date": d.to_string(), "service": "compute", "amount": "100.00"}),
        );
        d += Duration::days(1);
    }
    let body = Value::Array(records).to_string();
    serve_on_loopback(move |l| async move {
        let app = axum::Router::new().route(
            "/costs",
            axum::routing::get(move || {
                let b = body.clone();
                async move { b }
            }),
        );
        axum::serve(l, app).await.unwrap();
    })
}

both!(budget_overrun_alerts_once_per_month, budget);
async fn budget(b: Backend) {
    let port = cost_api();
    let cfg = format!(
        "[[costs]]\nname = \"api\"\nurl = \"http://127.0.0.1:{port}/costs\"\nbudget_monthly = 2000.0\n\
         [[costs]]\nname = \"all\"\nsources = [\"api\"]\nbudget_monthly = 5000.0\n"
    );
    let Some(ws) = Workspace::new(b, &cfg, &[]) else {
        return;
    };
    let (a, b2) = (ws.app(&[]).await, ws.app(&[]).await);
    // November: 14 days at 100 so far, 100 a day to come: 3000 forecast > 2000.
    let nov = t("2026-11-15T12:00:00Z");
    let (x, y) = tokio::join!(
        deckhand::reports::cost::check_budgets(&a, nov),
        deckhand::reports::cost::check_budgets(&b2, nov)
    );
    let mut alerted: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(alerted, vec!["api".to_owned()]);
    assert!(
        deckhand::reports::cost::check_budgets(&a, nov + Duration::hours(5))
            .await
            .unwrap()
            .is_empty()
    );
    let rows = digest_rows(&a, "budget:%").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let n = deckhand::domain::notice::Notice::from_json(&rows[0].2).unwrap();
    assert!(n.title.contains("Cost source api is forecast to pass its November 2026 budget: 3,000.00 USD forecast, budget 2,000.00 USD"), "{}", n.title);
    // December: the recent rate alone (100 a day × 31) passes it again: one more alert.
    alerted = deckhand::reports::cost::check_budgets(&a, t("2026-12-10T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(alerted, vec!["api".to_owned()]);
    assert!(
        deckhand::reports::cost::check_budgets(&b2, t("2026-12-11T12:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(digest_rows(&a, "budget:%").await.len(), 2);
}

/// The shipped AWS example: its command file is valid, and its converter turns Cost
/// Explorer's answer into records Deckhand reads.
#[test]
fn aws_cost_explorer_example_converts_to_records() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let env = std::collections::BTreeMap::<String, String>::new();
    let config =
        deckhand::config::parse_config("embedded", deckhand::config::EMBEDDED_CONFIG, &env)
            .unwrap();
    let text = std::fs::read_to_string(repo.join("aws-cost.toml.example")).unwrap();
    let cmd = deckhand::config::catalog::parse_command("aws-cost.toml", &text, &config).unwrap();
    assert_eq!(cmd.steps[0].argv[0], "python3");

    let sample = std::fs::File::open(repo.join("aws-ce-sample.json")).unwrap();
    let out = match std::process::Command::new("python3")
        .arg(repo.join("aws-cost-explorer.py"))
        .stdin(sample)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: python3 is not available ({e}), so the converter does not run");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records =
        deckhand::reports::cost::parse_records(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let got: Vec<(String, &str, f64)> = records
        .iter()
        .map(|r| (r.date.to_string(), r.service.as_str(), r.amount))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "2026-11-23".into(),
                "Amazon Elastic Compute Cloud - Compute",
                41.2719
            ),
            ("2026-11-23".into(), "Amazon Simple Storage Service", 6.5012),
            (
                "2026-11-24".into(),
                "Amazon Elastic Compute Cloud - Compute",
                39.9
            ),
            (
                "2026-11-24".into(),
                "Amazon Relational Database Service",
                21.07
            ),
        ]
    );
    assert!(records.iter().all(|r| r.currency.as_deref() == Some("USD")));
}
