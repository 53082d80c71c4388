//! Discord: the interaction JSON, its options turned into arguments with the bundled
//! catalog, the Ed25519 signature check, and the public-key parser.
//!
//! Invariants (beyond "no panic"):
//! - `parse` accepts only a JSON object whose `type` is an integer 0–255, and returns it.
//! - `options_to_args` for a catalog command: the declared arguments' values in order (up
//!   to the first one missing), then at most `--emergency REASON`; for a builtin: only the
//!   words of its own options; for an unknown name: nothing.
//! - `verify` with arbitrary headers is never `Ok` (a fuzzer cannot forge Ed25519); with a
//!   correct signature over an arbitrary timestamp + body: `Ok` exactly when the timestamp
//!   is an integer within 300 s of now, `Stale` when it is an integer further away,
//!   `Malformed` otherwise; a flipped body byte is a `Mismatch`.
//! - `public_key` accepts only 64 hex digits (after trimming) that decode to a valid key.
//!
//! Input layout for `verify`: `TIMESTAMP \n SIGNATURE-HEX \n BODY`; `parse` and
//! `options_to_args` get the whole input, `public_key` its first line.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use deckhand::config::catalog::Catalog;
use deckhand::config::{EMBEDDED_CONFIG, parse_config};
use deckhand::platform::discord::{SigError, options_to_args, parse, public_key, verify};
use deckhand::platform::slack::MAX_SKEW_SECS;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NOW: i64 = 1_800_000_000;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let config = parse_config("x", EMBEDDED_CONFIG, &BTreeMap::<String, String>::new())
        .expect("bundled config parses");
    Catalog::load(None, &config).expect("bundled commands load")
});
static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[42u8; 32]));
static KEY: LazyLock<VerifyingKey> = LazyLock::new(|| {
    let hex_key = hex(SIGNER.verifying_key().as_bytes());
    public_key(&format!("  {hex_key}\n")).expect("own key parses")
});

const BUILTIN_OPTIONS: &[(&str, &[&str])] = &[
    ("status", &["environment"]),
    ("history", &["environment"]),
    ("unlock", &["environment"]),
    ("lock", &["environment", "reason"]),
    ("approve", &["job"]),
    ("reject", &["job"]),
    ("cancel", &["job"]),
    ("ack", &["incident"]),
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn option_value(opts: &[deckhand::platform::discord::CommandOption], n: &str) -> Option<String> {
    opts.iter()
        .find(|o| o.name == n)
        .and_then(|o| o.value.as_ref())
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

fn check_options(name: &str, opts: &[deckhand::platform::discord::CommandOption]) {
    let out = options_to_args(&CATALOG, name, opts);
    if let Some(cmd) = CATALOG.get(name) {
        let mut want = Vec::new();
        for a in &cmd.args {
            match option_value(opts, &a.name) {
                Some(v) => want.push(v),
                None => break,
            }
        }
        if let Some(r) = option_value(opts, "emergency") {
            want.push("--emergency".into());
            want.push(r);
        }
        assert_eq!(out, want, "{name}");
        assert!(out.len() <= cmd.args.len() + 2);
    } else if let Some((_, names)) = BUILTIN_OPTIONS.iter().find(|b| b.0 == name) {
        let given: Vec<String> = names.iter().filter_map(|n| option_value(opts, n)).collect();
        // Each option is split into words (or kept whole when it cannot be split).
        let max: usize = given
            .iter()
            .map(|v| v.split_whitespace().count().clamp(1, 32))
            .sum();
        assert!(out.len() <= max.max(given.len()), "{name}: {out:?}");
        if given.is_empty() {
            assert!(out.is_empty());
        }
    } else {
        assert!(out.is_empty(), "unknown command {name:?} gave {out:?}");
    }
}

fn check_parse(data: &[u8]) {
    let Ok(i) = parse(data) else { return };
    // serde_json skips unknown fields without checking all of them (UTF-8, `\u` escapes,
    // number range): compare with a full JSON reading only when the body reads as one (an
    // object: serde also takes a struct as a sequence of its fields).
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&String::from_utf8_lossy(data))
    {
        assert_eq!(v["type"].as_u64(), Some(u64::from(i.kind)));
    }
    if let Some(d) = &i.data {
        let name = d.name.clone().unwrap_or_default();
        check_options(&name, &d.options);
        for n in CATALOG.names() {
            check_options(&n, &d.options);
        }
    }
}

fn headers(ts: Option<&[u8]>, sig: Option<&[u8]>) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    if let Some(ts) = ts {
        h.insert("x-signature-timestamp", HeaderValue::from_bytes(ts).ok()?);
    }
    if let Some(sig) = sig {
        h.insert("x-signature-ed25519", HeaderValue::from_bytes(sig).ok()?);
    }
    Some(h)
}

fn within(ts: &str) -> Option<bool> {
    let t: i64 = ts.parse().ok()?;
    Some((i128::from(NOW) - i128::from(t)).abs() <= i128::from(MAX_SKEW_SECS))
}

fn check_verify(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ts = parts.next();
    let sig = parts.next();
    let body = parts.next().unwrap_or_default();

    if let Some(h) = headers(ts, sig) {
        let r = verify(&KEY, &h, body, NOW);
        assert!(r.is_err(), "forged signature accepted");
        if ts.is_none() || sig.is_none() {
            assert_eq!(r, Err(SigError::Missing));
        }
    }

    if let Some(ts) = ts
        && let Ok(ts_str) = std::str::from_utf8(ts)
    {
        let mut msg = ts.to_vec();
        msg.extend_from_slice(body);
        let good = hex(&SIGNER.sign(&msg).to_bytes());
        if let Some(h) = headers(Some(ts), Some(good.as_bytes())) {
            let r = verify(&KEY, &h, body, NOW);
            match within(ts_str) {
                Some(true) => assert_eq!(r, Ok(()), "{ts_str:?}"),
                Some(false) => assert_eq!(r, Err(SigError::Stale), "{ts_str:?}"),
                None => assert_eq!(r, Err(SigError::Malformed), "{ts_str:?}"),
            }
            if r.is_ok() {
                let mut forged = body.to_vec();
                forged.push(b' ');
                assert_eq!(verify(&KEY, &h, &forged, NOW), Err(SigError::Mismatch));
            }
        }
    }
}

fn check_public_key(data: &[u8]) {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(s) = std::str::from_utf8(first) else {
        return;
    };
    if let Ok(k) = public_key(s) {
        let t = s.trim();
        assert_eq!(t.len(), 64, "{s:?}");
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(hex(k.as_bytes()), t.to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    check_verify(data);
    check_public_key(data);
});
