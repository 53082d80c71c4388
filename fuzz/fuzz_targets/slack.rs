//! Slack: the slash-command form, the interaction form + payload JSON, and the signature
//! check with arbitrary headers.
//!
//! Input layout for `verify`: `TIMESTAMP \n SIGNATURE \n BODY` (missing parts are missing
//! headers); the form parsers get the whole input.
//!
//! Invariants (beyond "no panic"):
//! - `parse_command` accepts only a form with exactly one `command`, `user_id` and
//!   `trigger_id`, and returns their decoded values; its text then splits or is refused.
//! - `parse_interaction` accepts only a form whose `payload` is a JSON object with a string
//!   `type` and `user.id`, and returns those values.
//! - `verify` with arbitrary headers: `Ok` only if both headers are there, the timestamp is
//!   an integer within 300 s of now, and the signature is the HMAC of the body (which a
//!   fuzzer cannot forge: `Ok` means it computed it). With a correct signature over an
//!   arbitrary timestamp: `Ok` exactly when that timestamp is an integer within 300 s,
//!   `Stale` when it is an integer further away, `Malformed` otherwise.
#![no_main]

use deckhand::platform::slack::{
    MAX_SKEW_SECS, SigError, parse_command, parse_interaction, signature, verify,
};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const NOW: i64 = 1_800_000_000;

fn only(form: &[(String, String)], key: &str) -> Option<String> {
    let mut it = form.iter().filter(|(k, _)| k == key);
    let v = it.next()?.1.clone();
    it.next().is_none().then_some(v)
}

fn within(ts: &str) -> Option<bool> {
    let t: i64 = ts.parse().ok()?;
    Some((i128::from(NOW) - i128::from(t)).abs() <= i128::from(MAX_SKEW_SECS))
}

fn headers(ts: Option<&[u8]>, sig: Option<&[u8]>) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    if let Some(ts) = ts {
        h.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_bytes(ts).ok()?,
        );
    }
    if let Some(sig) = sig {
        h.insert("x-slack-signature", HeaderValue::from_bytes(sig).ok()?);
    }
    Some(h)
}

fn check_forms(data: &[u8]) {
    let form: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Ok(cmd) = parse_command(data) {
        assert_eq!(only(&form, "command").as_ref(), Some(&cmd.command));
        assert_eq!(only(&form, "user_id").as_ref(), Some(&cmd.user_id));
        assert_eq!(only(&form, "trigger_id").as_ref(), Some(&cmd.trigger_id));
        match deckhand::domain::text::split_args(&cmd.text) {
            Ok(words) => assert!(words.len() <= 32),
            Err(e) => assert!(!e.is_empty()),
        }
    }
    if let Ok(p) = parse_interaction(data) {
        let payload = only(&form, "payload").expect("one payload field");
        // serde_json skips unknown fields without checking all of them (`\u` escapes,
        // number range): compare only when the payload reads as a JSON object (serde also
        // takes a struct as a sequence of its fields).
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&payload) {
            assert_eq!(v["type"].as_str(), Some(p.kind.as_str()));
            assert_eq!(v["user"]["id"].as_str(), Some(p.user.id.as_str()));
            assert_eq!(
                v["actions"].as_array().map_or(0, Vec::len),
                p.actions.len(),
                "actions"
            );
        }
    }
}

fn check_verify(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ts = parts.next();
    let sig = parts.next();
    let body = parts.next().unwrap_or_default();

    // Arbitrary headers: never accepted unless the signature is the real one.
    if let Some(h) = headers(ts, sig) {
        let r = verify(SECRET, &h, body, NOW);
        match (ts, sig) {
            (Some(ts), Some(sig)) => {
                if r.is_ok() {
                    let ts = std::str::from_utf8(ts).unwrap();
                    assert_eq!(within(ts), Some(true));
                    assert_eq!(sig, signature(SECRET, ts, body).as_bytes());
                }
            }
            _ => assert_eq!(r, Err(SigError::Missing)),
        }
    }

    // A correct signature over an arbitrary timestamp: only the clock decides.
    if let Some(ts) = ts
        && let Ok(ts_str) = std::str::from_utf8(ts)
    {
        let good = signature(SECRET, ts_str, body);
        if let Some(h) = headers(Some(ts), Some(good.as_bytes())) {
            let r = verify(SECRET, &h, body, NOW);
            match within(ts_str) {
                Some(true) => assert_eq!(r, Ok(()), "{ts_str:?}"),
                Some(false) => assert_eq!(r, Err(SigError::Stale), "{ts_str:?}"),
                None => assert_eq!(r, Err(SigError::Malformed), "{ts_str:?}"),
            }
            // One flipped byte of the body must not pass.
            if r.is_ok() && !body.is_empty() {
                let mut forged = body.to_vec();
                forged[0] ^= 1;
                assert_eq!(verify(SECRET, &h, &forged, NOW), Err(SigError::Mismatch));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_forms(data);
    check_verify(data);
});
