//! Regression tests from fuzzing (`scripts/fuzz`, targets in `fuzz/fuzz_targets/`).
//!
//! The first tests are the crashes the fuzzers found, kept byte for byte; the rest are
//! hand-picked hostile inputs for every parser of untrusted input (huge numbers, invalid
//! UTF-8, deep nesting, empty payloads, unbalanced quotes). Each asserts the parser refuses
//! (or accepts) cleanly: a panic fails the test.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue};
use deckhand::config::catalog::{Catalog, parse_command};
use deckhand::config::{Config, EMBEDDED_CONFIG, parse_config};
use deckhand::domain::text::split_args;
use deckhand::domain::{EnvName, JobId, SecretName, Version};
use deckhand::platform::discord::{self, CommandOption};
use deckhand::platform::slack::{self, SigError};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};

/// The clock the fuzz targets use.
const NOW: i64 = 1_800_000_000;
const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn config() -> Config {
    parse_config("x", EMBEDDED_CONFIG, &BTreeMap::<String, String>::new()).unwrap()
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn slack_headers(ts: &[u8], sig: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_bytes(ts).unwrap(),
    );
    h.insert("x-slack-signature", HeaderValue::from_bytes(sig).unwrap());
    h
}

/// A correctly signed Slack request with timestamp `ts`, checked at `NOW`.
fn slack_signed(ts: &str, body: &[u8]) -> Result<(), SigError> {
    let sig = slack::signature(SLACK_SECRET, ts, body);
    slack::verify(
        SLACK_SECRET,
        &slack_headers(ts.as_bytes(), sig.as_bytes()),
        body,
        NOW,
    )
}

fn discord_key() -> (SigningKey, VerifyingKey) {
    let signer = SigningKey::from_bytes(&[42u8; 32]);
    let key = discord::public_key(&hex::encode(signer.verifying_key().as_bytes())).unwrap();
    (signer, key)
}

/// A correctly signed Discord request with timestamp `ts`, checked at `NOW`.
fn discord_signed(ts: &str, body: &[u8]) -> Result<(), discord::SigError> {
    let (signer, key) = discord_key();
    let mut msg = ts.as_bytes().to_vec();
    msg.extend_from_slice(body);
    let mut h = HeaderMap::new();
    h.insert("x-signature-timestamp", HeaderValue::from_str(ts).unwrap());
    h.insert(
        "x-signature-ed25519",
        HeaderValue::from_str(&hex::encode(signer.sign(&msg).to_bytes())).unwrap(),
    );
    discord::verify(&key, &h, body, NOW)
}

// ---- crashes found by the fuzzers ------------------------------------------------------

/// fuzz target `slack`, crash-cc827839b3b3963b598cba29e9c1c56bc51f8b61:
/// `-9223372036854775807\n\n5` (timestamp, signature, body). A signed request whose
/// timestamp is near `i64::MIN` made `(now - t).abs()` overflow: a panic with overflow
/// checks, and in release builds `t = now - 2^63` wrapped to `i64::MIN`, whose `abs()` is
/// negative, so the 5-minute window passed. Fixed with `now.abs_diff(t)`.
#[test]
fn fuzz_slack_timestamp_near_i64_min_is_stale() {
    let input = b"-9223372036854775807\n\n5";
    let mut parts = input.splitn(3, |b| *b == b'\n');
    let ts = std::str::from_utf8(parts.next().unwrap()).unwrap();
    let _sig = parts.next().unwrap();
    let body = parts.next().unwrap();
    assert_eq!(slack_signed(ts, body), Err(SigError::Stale));

    // The value that slipped through in release builds, and the extremes.
    let wrap = (i128::from(NOW) - (1i128 << 63)).to_string();
    for ts in [
        wrap.as_str(),
        "-9223372036854775808",
        "9223372036854775807",
        "-1",
        "0",
    ] {
        assert_eq!(slack_signed(ts, b"a=1"), Err(SigError::Stale), "{ts}");
    }
    assert_eq!(slack_signed(&(NOW - 300).to_string(), b"a=1"), Ok(()));
    assert_eq!(slack_signed(&(NOW + 300).to_string(), b"a=1"), Ok(()));
    assert_eq!(
        slack_signed(&(NOW + 301).to_string(), b"a=1"),
        Err(SigError::Stale)
    );
}

/// fuzz target `discord`, crash-799287ff4423fdc0397767e4e85e2c855128404a:
/// `-9223372036854775807` (timestamp, empty body). The same overflow after a valid
/// Ed25519 signature. Fixed with `now.abs_diff(t)`.
#[test]
fn fuzz_discord_timestamp_near_i64_min_is_stale() {
    let input = b"-9223372036854775807";
    let ts = std::str::from_utf8(input).unwrap();
    assert_eq!(discord_signed(ts, b""), Err(discord::SigError::Stale));

    let wrap = (i128::from(NOW) - (1i128 << 63)).to_string();
    for ts in [wrap.as_str(), "-9223372036854775808", "9223372036854775807"] {
        assert_eq!(
            discord_signed(ts, b"{}"),
            Err(discord::SigError::Stale),
            "{ts}"
        );
    }
    assert_eq!(discord_signed(&(NOW - 300).to_string(), b"{}"), Ok(()));
    assert_eq!(
        discord_signed(&(NOW - 301).to_string(), b"{}"),
        Err(discord::SigError::Stale)
    );
}

/// Found while fuzzing `discord`, `alerts` and `slack` (failed harness invariants, not
/// library bugs):
/// serde_json skips unknown fields without checking them fully, so a payload with a lone
/// surrogate escape, invalid UTF-8 or an out-of-range number in a field Deckhand does not
/// read is accepted, and what Deckhand keeps is still checked text.
#[test]
fn fuzz_malformed_unknown_fields_are_skipped_known_ones_checked() {
    // discord crash-1e19a905…: a lone surrogate in an unknown key ("oPtions").
    let body = br#"{"type": 2, "id": "2", "user": {"id": "5"}, "data": {"name": "histloco", "oPtions": [{"name": "en\ud800000", "value": "p\"db migration\" tonight"}]}}"#;
    let i = discord::parse(body).unwrap();
    assert_eq!(i.kind, 2);
    assert!(i.data.unwrap().options.is_empty());
    // The same escape where Deckhand reads it is refused.
    let bad = br#"{"type": 2, "id": "2", "user": {"id": "5"}, "data": {"name": "en\ud800"}}"#;
    assert!(discord::parse(bad).is_err());

    // slack crash-bc65bdc5…: the same escape in an unknown key of the interaction payload.
    let body = b"payload=%7B%22type%22%3A+%22block_actions%22%2C+%22user%22%3A+%7B%22id%22%3A+%22U2%22%7D%2C+%22chann22actions%22%3A+%5B%7B%22actio_ts%22%3A+%22\\ud8001%22\n\n+++++++++++++%7D%5D%7D";
    let p = slack::parse_interaction(body).unwrap();
    assert_eq!(p.user.id, "U2");
    assert!(p.actions.is_empty());

    // alerts crash-fce774a1…: an out-of-range number in an unknown key.
    let body = br#"{"titlt,,,,,,,,,,,,,,,,,,,,,,t,,,,,,,,,,,,,,,,,,,,,,":5555555551e3095555555}"#;
    assert!(
        deckhand::watch::alerts::parse("alertmanager", body)
            .unwrap()
            .is_empty()
    );
    assert!(deckhand::watch::alerts::parse("generic", body).is_err());

    // Invalid UTF-8 in an unknown field is skipped; in the summary it is refused.
    let mut skipped = br#"{"alerts": [{"status": "firing", "x": ""#.to_vec();
    skipped.extend_from_slice(b"\x8c\xff\"}]}");
    let p = deckhand::watch::alerts::parse("grafana", &skipped).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].event.title, "alert");
    let mut read = br#"{"alerts": [{"status": "firing", "annotations": {"summary": ""#.to_vec();
    read.extend_from_slice(b"\x8c\xff\"}}]}");
    assert!(deckhand::watch::alerts::parse("grafana", &read).is_err());
}

// ---- command arguments -----------------------------------------------------------------

#[test]
fn split_args_refuses_unbalanced_quotes_and_floods() {
    for bad in [
        "\"",
        "deploy \"staging",
        "“a",
        "a ” b",
        "a \"b\" \"",
        "\"\"\"",
    ] {
        let e = split_args(bad).unwrap_err();
        assert!(e.contains("unbalanced quote"), "{bad:?}: {e}");
    }
    let e = split_args(&"w ".repeat(33)).unwrap_err();
    assert!(e.contains("too many words"), "{e}");
    assert!(split_args(&"w ".repeat(100_000)).is_err());
    assert_eq!(split_args(&"w ".repeat(32)).unwrap().len(), 32);
    // Quotes never reach the words; a huge quoted phrase stays one word.
    let phrase = format!("\"{}\"", "x y ".repeat(50_000));
    let w = split_args(&phrase).unwrap();
    assert_eq!(w.len(), 1);
    assert!(!w[0].contains('"'));
    assert_eq!(split_args("\"\"\"\"").unwrap(), vec![""]);
    assert_eq!(
        split_args("a\u{0}b \t\u{3000}c").unwrap(),
        vec!["a\u{0}b", "c"]
    );
}

#[test]
fn domain_parsers_refuse_hostile_values() {
    for bad in [
        "",
        "-rf",
        ".git",
        "_x",
        "v1\u{0}",
        "аbc", // Cyrillic а
        "v1.2\n",
        "v1;id",
        "x\u{FFFD}",
    ] {
        assert!(Version::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Version::parse(&"a".repeat(128)).is_ok());
    assert!(Version::parse(&"a".repeat(129)).is_err());
    assert!(Version::parse(&"9".repeat(1_000_000)).is_err());

    for bad in [
        "",
        "Staging",
        "-x",
        "stag ing",
        "staging\u{0}",
        &"a".repeat(65),
    ] {
        assert!(EnvName::parse(bad).is_err(), "{bad:?}");
    }
    for bad in ["", "stripe", "_KEY", "KEY-1", "KEY\n", &"A".repeat(65)] {
        assert!(SecretName::parse(bad).is_err(), "{bad:?}");
    }
    for bad in [
        "",
        "#",
        "0",
        "-1",
        "#-1",
        "9223372036854775808",
        "99999999999999999999999999",
        "1e3",
        "4 2",
        "٤٢", // Arabic-Indic digits
    ] {
        assert!(JobId::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        JobId::parse("#9223372036854775807").unwrap(),
        JobId(i64::MAX)
    );
}

#[test]
fn parse_args_refuses_hostile_arguments() {
    let c = config();
    let cat = Catalog::load(None, &c).unwrap();
    let deploy = cat.get("deploy").unwrap();
    let rollback = cat.get("rollback").unwrap();
    let refused = |cmd, raw: &[&str]| cat.parse_args(cmd, &words(raw), &c).unwrap_err();

    assert!(refused(deploy, &[]).contains("missing"));
    assert!(refused(deploy, &["staging", "abc", "extra"]).contains("too many"));
    assert!(refused(deploy, &["staging\0", "abc"]).contains("unknown environment"));
    assert!(refused(deploy, &["", "abc"]).contains("unknown environment"));
    assert!(refused(deploy, &["staging", &"a".repeat(10_000)]).contains("not a valid version"));
    assert!(refused(deploy, &["staging", "--version"]).contains("not a valid version"));
    assert!(refused(deploy, &["staging", "abc", "--emergency"]).contains("needs a reason"));
    assert!(refused(deploy, &["staging", "abc", "--emergency", "  "]).contains("needs a reason"));
    assert!(
        refused(deploy, &["staging", "abc", "--emergency", "--emergency"])
            .contains("needs a reason")
    );
    assert!(refused(deploy, &["staging", "abc", "--emergency=\t"]).contains("needs a reason"));
    assert!(refused(rollback, &["staging", "--emergency", "why"]).contains("only to deploys"));
    // Thousands of flags still refuse cleanly.
    let many: Vec<String> = std::iter::repeat_n("--emergency=x".to_string(), 10_000)
        .chain(words(&["staging", "abc", "more"]))
        .collect();
    assert!(cat.parse_args(deploy, &many, &c).is_err());

    let ok = cat
        .parse_args(
            deploy,
            &words(&["staging", "abc1234", "--emergency=  INC-1  "]),
            &c,
        )
        .unwrap();
    assert_eq!(ok.emergency.as_deref(), Some("INC-1"));
}

#[test]
fn command_files_refuse_garbage_without_panicking() {
    let c = config();
    let nested = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let tables = format!("x = {}1{}", "{a = ".repeat(50_000), "}".repeat(50_000));
    let long_key = format!("{} = 1", "k.".repeat(50_000) + "k");
    for text in [
        "",
        "\u{0}\u{0}\u{0}",
        "name = ",
        "name = \"x\"\nname = \"x\"",
        "'''",
        "\"\"\"",
        "[[steps]]\n[[steps]]\n",
        "name = \"status\"\ndescription = \"d\"\nkind = \"deploy\"\n[[steps]]\nname = \"s\"\nargv = [\"true\"]\n",
        "name = \"x\"\ndescription = \"d\"\nkind = \"custom\"\nrole = \"everyone\"\n[[args]]\nname = \"t\"\nkind = \"text\"\npattern = \"(\"\n[[steps]]\nname = \"s\"\nargv = [\"true\"]\n",
        "name = \"x\"\ndescription = \"d\"\nkind = \"custom\"\nrole = \"everyone\"\n[[steps]]\nname = \"s\"\nargv = [\"true\"]\ntimeout_seconds = 18446744073709551616\n",
        "name = \"x\"\ndescription = \"d\"\nkind = \"custom\"\nrole = \"everyone\"\n[[steps]]\nname = \"s\"\nargv = [\"sh\", \"${X}\"]\n",
        &nested,
        &tables,
        &long_key,
    ] {
        let problems = parse_command("x.toml", text, &c).unwrap_err();
        let lines = text.matches('\n').count() + 1;
        assert!(!problems.is_empty());
        for p in problems {
            assert!(p.line >= 1 && p.line <= lines, "{p}");
        }
    }
}

// ---- Slack -----------------------------------------------------------------------------

#[test]
fn slack_forms_refuse_or_replace_bad_input() {
    for bad in [
        &b""[..],
        b"&&&==&",
        b"command=/deploy",
        b"command=/deploy&user_id=U1",
        b"command=/a&command=/b&user_id=U1&trigger_id=t",
        b"\xff\xfe\xfd",
    ] {
        assert!(slack::parse_command(bad).is_err(), "{bad:?}");
    }
    // Invalid UTF-8, raw or percent-encoded, becomes U+FFFD: never a panic, never bytes
    // that are not text.
    let cmd =
        slack::parse_command(b"command=/deploy&user_id=U\xff1&trigger_id=t&text=%FF%C3").unwrap();
    assert_eq!(cmd.user_id, "U\u{FFFD}1");
    assert!(cmd.text.chars().all(|c| c == '\u{FFFD}'));
    // Unbalanced quotes in the text are refused by the splitter, not the form.
    let cmd = slack::parse_command(b"command=/deploy&user_id=U1&trigger_id=t&text=staging+%22abc")
        .unwrap();
    assert!(split_args(&cmd.text).is_err());

    let form = |payload: &str| form_encode(&[("payload", payload)]);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nest = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let deep_user = format!(
        r#"{{"type":"block_actions","user":{{"id":{}}}}}"#,
        nest(100_000)
    );
    for bad in [
        String::new(),
        form(""),
        form("null"),
        form("{}"),
        form(r#"{"type":"block_actions"}"#),
        form(r#"{"type":1,"user":{"id":"U"}}"#),
        form(
            r#"{"type":"block_actions","user":{"id":"U"},"actions":[{"action_id":"approve","value":7}]}"#,
        ),
        form(r#"{"type":"block_actions","user":{"id":"U\ud800"}}"#),
        form(&deep),
        form(&deep_user),
        "payload=%7B&payload=%7D".to_string(),
    ] {
        assert!(
            slack::parse_interaction(bad.as_bytes()).is_err(),
            "{}",
            &bad[..bad.len().min(80)]
        );
    }
    // Deep nesting in a field Deckhand skips is skipped without recursion (no stack
    // overflow); in a field it reads, it is refused above.
    let skipped = form(&format!(
        r#"{{"type":"block_actions","user":{{"id":"U"}},"x":{}}}"#,
        nest(100_000)
    ));
    assert_eq!(
        slack::parse_interaction(skipped.as_bytes())
            .unwrap()
            .user
            .id,
        "U"
    );
    let ok = form(
        r#"{"type":"block_actions","user":{"id":"U1"},"actions":[{"action_id":"approve","value":"7"}]}"#,
    );
    let p = slack::parse_interaction(ok.as_bytes()).unwrap();
    assert_eq!(p.actions[0].value.as_deref(), Some("7"));
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

#[test]
fn slack_verify_refuses_bad_headers() {
    let body = b"a=1";
    let good = slack::signature(SLACK_SECRET, &NOW.to_string(), body);
    let ts = NOW.to_string();
    let accented = "v0=é".repeat(20);
    let zeros = format!("v0={}", "0".repeat(64));
    let cases: Vec<(&[u8], &[u8], SigError)> = vec![
        (b"1e9", good.as_bytes(), SigError::Malformed),
        (b"", good.as_bytes(), SigError::Malformed),
        (b" 1800000000", good.as_bytes(), SigError::Malformed),
        (
            b"99999999999999999999",
            good.as_bytes(),
            SigError::Malformed,
        ),
        (b"\xff\xfe", good.as_bytes(), SigError::Malformed),
        (ts.as_bytes(), b"v0=", SigError::Malformed),
        (ts.as_bytes(), b"v1=", SigError::Malformed),
        (ts.as_bytes(), accented.as_bytes(), SigError::Malformed),
        (ts.as_bytes(), b"\xffv0=", SigError::Malformed),
        (ts.as_bytes(), zeros.as_bytes(), SigError::Mismatch),
        (b"-9223372036854775808", zeros.as_bytes(), SigError::Stale),
    ];
    for (ts, sig, want) in cases {
        assert_eq!(
            slack::verify(SLACK_SECRET, &slack_headers(ts, sig), body, NOW),
            Err(want),
            "{ts:?} {sig:?}"
        );
    }
    assert_eq!(
        slack::verify(SLACK_SECRET, &HeaderMap::new(), body, NOW),
        Err(SigError::Missing)
    );
    assert_eq!(
        slack::verify(
            SLACK_SECRET,
            &slack_headers(ts.as_bytes(), good.as_bytes()),
            body,
            NOW
        ),
        Ok(())
    );
}

// ---- Discord ---------------------------------------------------------------------------

#[test]
fn discord_interactions_refuse_bad_json() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_data = format!(
        r#"{{"type":2,"data":{{"name":"deploy","options":[{{"name":"version","value":{}1{}}}]}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for bad in [
        "",
        "null",
        "{}",
        "[]",
        r#"{"type":256}"#,
        r#"{"type":-1}"#,
        r#"{"type":2.5}"#,
        r#"{"type":"2"}"#,
        r#"{"type":2,"data":{"options":[{"value":1}]}}"#,
        r#"{"type":2,"data":{"options":[{"name":"v","value":1e400}]}}"#,
        r#"{"type":2,"member":{"roles":[]}}"#,
        "{\"type\":2,\"id\":\"\u{0}",
        &deep,
        &deep_data,
    ] {
        assert!(
            discord::parse(bad.as_bytes()).is_err(),
            "{}",
            &bad[..bad.len().min(80)]
        );
    }
    assert!(discord::parse(b"{\"type\":2,\"id\":\"\xff\"}").is_err());
    assert_eq!(discord::parse(br#"{"type":1}"#).unwrap().kind, 1);
}

#[test]
fn discord_options_become_bounded_args() {
    let c = config();
    let cat = Catalog::load(None, &c).unwrap();
    let opt = |name: &str, value: Value| CommandOption {
        name: name.into(),
        value: Some(value),
    };
    // Values of any JSON type become text; a missing argument stops the list.
    let args = discord::options_to_args(
        &cat,
        "deploy",
        &[
            opt("version", json!({"nested": [1, 2]})),
            opt("environment", json!(1e300)),
            opt("emergency", json!(null)),
        ],
    );
    assert_eq!(
        args,
        vec!["1e+300", "{\"nested\":[1,2]}", "--emergency", "null"]
    );
    let args = discord::options_to_args(&cat, "deploy", &[opt("version", json!("abc"))]);
    assert!(args.is_empty());
    // Parsing then refuses what the command does not accept.
    let args = discord::options_to_args(
        &cat,
        "deploy",
        &[
            opt("environment", json!("staging")),
            opt("version", json!(true)),
        ],
    );
    assert!(
        cat.parse_args(cat.get("deploy").unwrap(), &args, &c)
            .is_ok()
    );
    let args = discord::options_to_args(
        &cat,
        "deploy",
        &[
            opt("environment", json!("staging")),
            opt("version", json!("-rf")),
        ],
    );
    assert!(
        cat.parse_args(cat.get("deploy").unwrap(), &args, &c)
            .is_err()
    );

    // Builtins: an unbalanced quote keeps the value whole; a flood of words too.
    let args = discord::options_to_args(
        &cat,
        "lock",
        &[
            opt("environment", json!("production")),
            opt("reason", json!("\"db migration")),
        ],
    );
    assert_eq!(args, vec!["production", "\"db migration"]);
    let flood = "w ".repeat(10_000);
    let args = discord::options_to_args(&cat, "lock", &[opt("reason", json!(flood))]);
    assert_eq!(args.len(), 1);
    // Unknown commands take nothing.
    for name in ["", "nope", "/", "../deploy", "DEPLOY"] {
        assert!(
            discord::options_to_args(&cat, name, &[opt("environment", json!("staging"))])
                .is_empty(),
            "{name:?}"
        );
    }
}

#[test]
fn discord_keys_and_signatures_refuse_garbage() {
    for bad in [
        "",
        "00",
        &"0".repeat(63),
        &"0".repeat(65),
        &"0".repeat(66),
        &"g".repeat(64),
        &"é".repeat(32),
    ] {
        assert!(discord::public_key(bad).is_err(), "{bad:?}");
    }
    let (_, key) = discord_key();
    let ts = NOW.to_string();
    let h = |ts: &[u8], sig: &[u8]| {
        let mut h = HeaderMap::new();
        h.insert(
            "x-signature-timestamp",
            HeaderValue::from_bytes(ts).unwrap(),
        );
        h.insert("x-signature-ed25519", HeaderValue::from_bytes(sig).unwrap());
        h
    };
    let zeros = "0".repeat(128);
    let cases: Vec<(&[u8], &[u8], discord::SigError)> = vec![
        (ts.as_bytes(), b"", discord::SigError::Malformed),
        (ts.as_bytes(), b"zz", discord::SigError::Malformed),
        (
            ts.as_bytes(),
            &zeros.as_bytes()[..126],
            discord::SigError::Malformed,
        ),
        (ts.as_bytes(), b"\xff\xff", discord::SigError::Malformed),
        (b"\xff", zeros.as_bytes(), discord::SigError::Malformed),
        (b"1e9", zeros.as_bytes(), discord::SigError::Malformed),
        (
            b"-9223372036854775808",
            zeros.as_bytes(),
            discord::SigError::Mismatch,
        ),
        (ts.as_bytes(), zeros.as_bytes(), discord::SigError::Mismatch),
    ];
    for (ts, sig, want) in cases {
        assert_eq!(
            discord::verify(&key, &h(ts, sig), b"{}", NOW),
            Err(want),
            "{ts:?} {sig:?}"
        );
    }
    assert_eq!(
        discord::verify(&key, &HeaderMap::new(), b"{}", NOW),
        Err(discord::SigError::Missing)
    );
}

// ---- alerts ----------------------------------------------------------------------------

#[test]
fn alert_payloads_refuse_garbage_and_bound_text() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_labels = format!(
        r#"{{"alerts":[{{"status":"firing","annotations":{}1{}}}]}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    for source in ["alertmanager", "grafana", "generic"] {
        for bad in [
            "",
            "null",
            "\"alerts\"",
            r#"{"alerts":null}"#,
            r#"{"alerts":[{}]}"#,
            r#"{"alerts":[{"status":"firing","labels":{"a":1}}]}"#,
            r#"{"alerts":[{"status":"firing","labels":{"a":"\ud800"}}]}"#,
            &deep,
            &deep_labels,
        ] {
            assert!(
                deckhand::watch::alerts::parse(source, bad.as_bytes()).is_err(),
                "{source}: {}",
                &bad[..bad.len().min(80)]
            );
        }
    }
    for bad in [
        r#"{}"#,
        r#"{"title":"   "}"#,
        r#"{"title":"x","status":"FIRING"}"#,
        r#"{"title":"x","status":null,"extra":1}"#,
        r#"{"title":"x","severity":1}"#,
    ] {
        assert!(
            deckhand::watch::alerts::parse("generic", bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
    for source in ["", "Alertmanager", "../generic", "generic\0", "prometheus"] {
        let e = deckhand::watch::alerts::parse(source, br#"{"title":"x"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("unknown alert source"),
            "{source:?}: {e}"
        );
    }

    // Huge text is cut; absurd times fall back to now; no severity is P3.
    let huge = "x".repeat(1_000_000);
    let body = json!({"alerts": [{
        "status": "firing",
        "labels": {"alertname": huge, "severity": huge},
        "annotations": {"description": huge},
        "startsAt": "+262143-12-31T23:59:59.999999999Z",
        "generatorURL": "",
    }, {
        "status": "resolved",
        "endsAt": "-262143-01-01T00:00:00Z",
    }, {
        "status": "firing",
        "startsAt": "2026-13-45T99:99:99Z",
    }]});
    let p = deckhand::watch::alerts::parse("alertmanager", body.to_string().as_bytes()).unwrap();
    assert_eq!(p.len(), 3);
    let e = &p[0].event;
    assert!(e.title.chars().count() <= 200);
    assert!(e.description.as_ref().unwrap().chars().count() <= 2000);
    assert_eq!(e.severity, "P3");
    assert_eq!(e.link, None);
    assert!(e.at > 0);
    assert!(p[1].event.resolved && p[1].event.at > 0);
    assert!(p[2].event.at > 0);

    let g = json!({"title": huge, "dedup_key": huge, "description": huge});
    let p = deckhand::watch::alerts::parse("generic", g.to_string().as_bytes()).unwrap();
    assert!(p[0].event.title.chars().count() <= 200);
    assert!(p[0].event.dedup_key.chars().count() <= "generic:".len() + 200);
}
