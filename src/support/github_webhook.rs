//! GitHub's webhooks, without any knowledge of deploys: the `X-Hub-Signature-256` check
//! (HMAC-SHA256 of the raw body with the webhook secret, compared in constant time), the
//! `X-GitHub-Delivery` id's shape, and the few events that can move a branch's head or its
//! checks, read into plain values. Nothing from a payload is trusted beyond its shape:
//! branch names, SHAs and logins are validated here, and the caller still asks GitHub's
//! API for the branch's head before it acts (so a replayed or stale event can only make it
//! look again).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// `sha256=` + hex HMAC-SHA256 of `body` keyed with `secret`: what GitHub sends.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a request was not taken as GitHub's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    Mismatch,
}

impl SigError {
    pub fn as_str(self) -> &'static str {
        match self {
            SigError::Missing => "missing X-Hub-Signature-256 header",
            SigError::Malformed => {
                "malformed X-Hub-Signature-256 header; expected sha256=<64 hex digits>"
            }
            SigError::Mismatch => "signature does not match",
        }
    }
}

/// Check the `X-Hub-Signature-256` header value against the raw body.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), SigError> {
    let sig = header.ok_or(SigError::Missing)?;
    let hex_part = sig.strip_prefix("sha256=").ok_or(SigError::Malformed)?;
    if hex_part.len() != 64 {
        return Err(SigError::Malformed);
    }
    let given = hex::decode(hex_part).map_err(|_| SigError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| SigError::Mismatch)
}

/// A delivery id as GitHub sends them (a GUID): letters, digits and `-`, 1 to 100 long.
pub fn valid_delivery_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A branch name Deckhand will compare and ask about: git's rules for a ref name, kept to
/// printable ASCII without spaces, `~^:?*[\`, `..`, `@{`, a leading `-` or `/`, a trailing
/// `/`, `.` or `.lock`; at most 255 bytes.
pub fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b))
        && !s.contains("..")
        && !s.contains("@{")
        && !s.contains("//")
        && !s.starts_with(['-', '/', '.'])
        && !s.ends_with(['/', '.'])
        && !s.ends_with(".lock")
        && s != "@"
}

/// A full commit SHA: 40 hex digits.
pub fn valid_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A GitHub login: letters, digits and single `-` (at most 39), or an app's `name[bot]`.
pub fn valid_login(s: &str) -> bool {
    let name = s.strip_suffix("[bot]").unwrap_or(s);
    !name.is_empty()
        && name.len() <= 39
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
}

/// What an event tells, as far as branches and their checks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Sent when a webhook is created.
    Ping,
    /// `branch` of `repository` now points at `sha`, pushed by `pusher`.
    Push {
        repository: String,
        branch: String,
        sha: String,
        pusher: Option<String>,
    },
    /// A check suite, a check run or a commit status of `sha` finished: the branches it
    /// names may have become deployable (or failed).
    Checks {
        repository: String,
        branches: Vec<String>,
        sha: String,
        sender: Option<String>,
    },
    /// Nothing here moves a branch or finishes a check; the words say why.
    Ignored(String),
}

/// Read `body` as GitHub's `event` (the `X-GitHub-Event` header). `Err` with a reason when
/// the body is not the JSON such an event has.
pub fn parse(event: &str, body: &[u8]) -> Result<Event, String> {
    if event == "ping" {
        return Ok(Event::Ping);
    }
    if !matches!(event, "push" | "check_suite" | "check_run" | "status") {
        return Ok(Event::Ignored(format!(
            "{} events are not used",
            short(event)
        )));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let repository = v["repository"]["full_name"]
        .as_str()
        .filter(|r| r.contains('/') && r.len() <= 201)
        .ok_or("the payload names no repository")?
        .to_owned();
    let login = |p: &Value| p.as_str().filter(|l| valid_login(l)).map(str::to_owned);
    let sender = login(&v["sender"]["login"]);
    let sha_at = |p: &Value| -> Result<String, String> {
        p.as_str()
            .filter(|s| valid_sha(s))
            .map(str::to_owned)
            .ok_or_else(|| "the payload names no commit SHA".to_owned())
    };
    let completed = |what: &str| -> Option<Event> {
        (v["action"].as_str() != Some("completed")).then(|| {
            Event::Ignored(format!(
                "{what} action {:?} is not \"completed\"",
                short(v["action"].as_str().unwrap_or(""))
            ))
        })
    };
    match event {
        "push" => {
            let Some(branch) = v["ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("refs/heads/"))
            else {
                return Ok(Event::Ignored(
                    "a push to something other than a branch".into(),
                ));
            };
            if !valid_branch(branch) {
                return Ok(Event::Ignored(
                    "a push to a branch name Deckhand does not use".into(),
                ));
            }
            let sha = sha_at(&v["after"])?;
            if sha.bytes().all(|b| b == b'0') {
                return Ok(Event::Ignored("the branch was deleted".into()));
            }
            Ok(Event::Push {
                repository,
                branch: branch.to_owned(),
                sha,
                pusher: login(&v["pusher"]["name"]).or(sender),
            })
        }
        "check_suite" => {
            if let Some(i) = completed("check_suite") {
                return Ok(i);
            }
            let s = &v["check_suite"];
            Ok(Event::Checks {
                repository,
                branches: branches(&[&s["head_branch"]]),
                sha: sha_at(&s["head_sha"])?,
                sender,
            })
        }
        "check_run" => {
            if let Some(i) = completed("check_run") {
                return Ok(i);
            }
            let r = &v["check_run"];
            Ok(Event::Checks {
                repository,
                branches: branches(&[&r["check_suite"]["head_branch"]]),
                sha: sha_at(&r["head_sha"])?,
                sender,
            })
        }
        _ => {
            // `status`: a pending status finishes nothing.
            if v["state"].as_str() == Some("pending") {
                return Ok(Event::Ignored("a pending commit status".into()));
            }
            let names: Vec<&Value> = v["branches"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| &b["name"])
                .collect();
            Ok(Event::Checks {
                repository,
                branches: branches(&names),
                sha: sha_at(&v["sha"])?,
                sender,
            })
        }
    }
}

/// The valid branch names among `names`, without repeats.
fn branches(names: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().filter_map(|n| n.as_str()) {
        if valid_branch(n) && !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    out
}

fn short(s: &str) -> String {
    crate::domain::text::shorten(s)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signature_matches_githubs_documented_example() {
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            want
        );
        assert_eq!(
            verify(b"It's a Secret to Everybody", Some(want), b"Hello, World!"),
            Ok(())
        );
    }

    #[test]
    fn verify_refuses_forged_missing_and_malformed() {
        let good = signature(b"s3cret", b"{}");
        assert_eq!(verify(b"s3cret", Some(&good), b"{}"), Ok(()));
        assert_eq!(
            verify(b"s3cret", Some(&good), b"{ }"),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(&good), b"{}"),
            Err(SigError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", None, b"{}"), Err(SigError::Missing));
        let sha1 = format!("sha1={}", &good[7..47]);
        assert_eq!(
            verify(b"s3cret", Some(&sha1), b"{}"),
            Err(SigError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", Some(&good[..good.len() - 2]), b"{}"),
            Err(SigError::Malformed)
        );
        let not_hex = format!("sha256={}", "z".repeat(64));
        assert_eq!(
            verify(b"s3cret", Some(&not_hex), b"{}"),
            Err(SigError::Malformed)
        );
    }

    #[test]
    fn names_from_payloads_are_validated() {
        for ok in ["main", "release/1.2", "feature_x-y", "v1.0"] {
            assert!(valid_branch(ok), "{ok}");
        }
        // `;`, `|`, `$` and backticks are legal in git; they never reach a shell, since a
        // payload's branch is only compared with the configured one.
        for bad in [
            "", "a b", "a..b", "-x", "/x", "x/", "x.lock", "a~1", "a:b", "a\nb", "@",
        ] {
            assert!(!valid_branch(bad), "{bad:?}");
        }
        assert!(valid_login("ada") && valid_login("github-actions[bot]"));
        assert!(!valid_login("a b") && !valid_login("") && !valid_login(&"x".repeat(40)));
        assert!(valid_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_delivery_id("x y") && !valid_delivery_id(""));
    }

    #[test]
    fn events_are_read_for_their_branch_and_commit() {
        let sha = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let repo = json!({"full_name": "acme/shop"});
        let push = json!({"ref": "refs/heads/main", "after": sha, "repository": repo,
            "pusher": {"name": "bob"}, "sender": {"login": "bob"}});
        assert_eq!(
            parse("push", push.to_string().as_bytes()),
            Ok(Event::Push {
                repository: "acme/shop".into(),
                branch: "main".into(),
                sha: sha.into(),
                pusher: Some("bob".into())
            })
        );
        let tag = json!({"ref": "refs/tags/v1", "after": sha, "repository": repo});
        assert!(matches!(
            parse("push", tag.to_string().as_bytes()),
            Ok(Event::Ignored(_))
        ));
        let suite = json!({"action": "completed", "repository": repo, "sender": {"login": "ada"},
            "check_suite": {"head_branch": "main", "head_sha": sha, "conclusion": "success"}});
        assert_eq!(
            parse("check_suite", suite.to_string().as_bytes()),
            Ok(Event::Checks {
                repository: "acme/shop".into(),
                branches: vec!["main".into()],
                sha: sha.into(),
                sender: Some("ada".into())
            })
        );
        let requested = json!({"action": "requested", "repository": repo,
            "check_suite": {"head_branch": "main", "head_sha": sha}});
        assert!(matches!(
            parse("check_suite", requested.to_string().as_bytes()),
            Ok(Event::Ignored(_))
        ));
        let run = json!({"action": "completed", "repository": repo,
            "check_run": {"head_sha": sha, "check_suite": {"head_branch": "a..b"}}});
        match parse("check_run", run.to_string().as_bytes()) {
            Ok(Event::Checks { branches, .. }) => assert!(branches.is_empty()),
            e => panic!("{e:?}"),
        }
        let status = json!({"state": "success", "sha": sha, "repository": repo,
            "branches": [{"name": "main"}, {"name": "dev"}, {"name": "main"}]});
        match parse("status", status.to_string().as_bytes()) {
            Ok(Event::Checks { branches, .. }) => assert_eq!(branches, ["main", "dev"]),
            e => panic!("{e:?}"),
        }
        assert_eq!(parse("ping", b"whatever"), Ok(Event::Ping));
        assert!(matches!(parse("issues", b"{}"), Ok(Event::Ignored(_))));
        assert!(parse("push", b"not json").is_err());
        let no_sha = json!({"action": "completed", "repository": repo,
            "check_suite": {"head_branch": "main", "head_sha": "abc; rm -rf /"}});
        assert!(parse("check_suite", no_sha.to_string().as_bytes()).is_err());
    }
}
