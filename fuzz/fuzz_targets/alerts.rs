//! Alert payloads: `alerts::parse` for "alertmanager", "grafana" and "generic" on the whole
//! input, and for an arbitrary source (the input's first line) on the rest.
//!
//! Invariants (beyond "no panic"):
//! - every source other than the three is refused as an unknown alert source;
//! - Alertmanager/Grafana: one event per alert of the payload, each with `source` set, a
//!   dedup key `SOURCE:FINGERPRINT` (the alert's own, else 16 hex digits from its labels), a
//!   severity P0–P3, a title of at most 200 and a description of at most 2,000 characters,
//!   no empty link, a positive time, and the alert's labels unchanged;
//! - generic: exactly one event, with a non-blank title of at most 200 characters, a dedup
//!   key `generic:` + at most 200 characters, `resolved` exactly when status is "resolved",
//!   and labels only from environment/severity/service.
#![no_main]

use deckhand::watch::alerts::parse;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The accepted payload as JSON, to compare with what the parser kept. serde_json skips
/// unknown fields without checking all of them (UTF-8, `\u` escapes, number range), so a
/// body the parser accepts is not always valid JSON: read it lossily, and compare only when
/// it reads.
fn json_lossy(data: &[u8]) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(data)).ok()
}

fn severity_ok(s: &str) -> bool {
    matches!(s, "P0" | "P1" | "P2" | "P3")
}

/// The payload's alerts as JSON, whichever shape serde accepted (object, or a sequence of
/// the struct's fields in order).
fn alerts_of(v: &Value) -> Vec<Value> {
    let a = match v {
        Value::Object(m) => m.get("alerts"),
        Value::Array(a) => a.first(),
        _ => None,
    };
    a.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// A field of an alert given as an object or as a sequence in `WebhookAlert` field order.
fn field<'a>(a: &'a Value, name: &str) -> Option<&'a Value> {
    const ORDER: [&str; 7] = [
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    ];
    match a {
        Value::Array(v) => v.get(ORDER.iter().position(|n| *n == name)?),
        _ => a.get(name),
    }
}

fn check_webhook(source: &str, data: &[u8]) {
    let Ok(parsed) = parse(source, data) else {
        return;
    };
    for p in &parsed {
        let e = &p.event;
        assert_eq!(e.source, source);
        let fp = e
            .dedup_key
            .strip_prefix(&format!("{source}:"))
            .expect("dedup key prefix");
        assert!(!fp.is_empty());
        assert!(severity_ok(&e.severity), "{}", e.severity);
        assert!(e.title.chars().count() <= 200);
        assert!(
            e.description
                .as_ref()
                .is_none_or(|d| d.chars().count() <= 2000)
        );
        assert_ne!(e.link.as_deref(), Some(""));
        assert!(e.at > 0);
    }
    let Some(v) = json_lossy(data) else { return };
    let alerts = alerts_of(&v);
    assert_eq!(parsed.len(), alerts.len(), "one event per alert");
    for (p, a) in parsed.iter().zip(&alerts) {
        let fp = &p.event.dedup_key[source.len() + 1..];
        match field(a, "fingerprint").and_then(Value::as_str) {
            Some(f) if !f.is_empty() => assert_eq!(fp, f),
            _ => assert!(fp.len() == 16 && fp.bytes().all(|b| b.is_ascii_hexdigit())),
        }
        let resolved = field(a, "status").and_then(Value::as_str) == Some("resolved");
        assert_eq!(p.event.resolved, resolved);
        let labels: std::collections::BTreeMap<String, String> = field(a, "labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        assert_eq!(p.labels, labels);
    }
}

fn check_generic(data: &[u8]) {
    match parse("generic", data) {
        Ok(parsed) => {
            assert_eq!(parsed.len(), 1);
            let p = &parsed[0];
            let e = &p.event;
            assert_eq!(e.source, "generic");
            assert!(!e.title.trim().is_empty());
            assert!(e.title.chars().count() <= 200);
            let key = e.dedup_key.strip_prefix("generic:").expect("prefix");
            assert!(key.chars().count() <= 200);
            assert!(severity_ok(&e.severity));
            assert!(
                e.description
                    .as_ref()
                    .is_none_or(|d| d.chars().count() <= 2000)
            );
            assert!(
                p.labels
                    .keys()
                    .all(|k| matches!(k.as_str(), "environment" | "severity" | "service"))
            );
            let Some(v) = json_lossy(data) else { return };
            let status = match &v {
                Value::Object(m) => m.get("status").and_then(Value::as_str),
                Value::Array(a) => a.get(6).and_then(Value::as_str),
                _ => None,
            };
            assert_eq!(e.resolved, status == Some("resolved"));
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    check_webhook("alertmanager", data);
    check_webhook("grafana", data);
    check_generic(data);

    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let source = String::from_utf8_lossy(first);
    let r = parse(&source, rest);
    if !matches!(source.as_ref(), "alertmanager" | "grafana" | "generic") {
        let e = r.expect_err("unknown source accepted");
        assert!(e.starts_with("unknown alert source"), "{e}");
    }
});
