//! Whether a request comes from Slack: HMAC-SHA256 over `v0:{ts}:{body}` with the
//! signing secret, compared in constant time, at most 5 minutes of clock difference.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Requests older or newer than this are replays or broken clocks.
pub const MAX_SKEW_SECS: i64 = 300;

/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a request was not accepted as coming from Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl SigError {
    pub fn as_str(self) -> &'static str {
        match self {
            SigError::Missing => "missing signature headers",
            SigError::Malformed => "malformed signature headers",
            SigError::Stale => "timestamp more than 5 minutes away",
            SigError::Mismatch => "signature does not match",
        }
    }
}

/// Check a request's signature headers against its raw body.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SigError> {
    let ts = headers
        .get("x-slack-request-timestamp")
        .ok_or(SigError::Missing)?;
    let sig = headers.get("x-slack-signature").ok_or(SigError::Missing)?;
    let ts = ts.to_str().map_err(|_| SigError::Malformed)?;
    let sig = sig.to_str().map_err(|_| SigError::Malformed)?;
    let t: i64 = ts.parse().map_err(|_| SigError::Malformed)?;
    if !sig.starts_with("v0=") || sig.len() != 67 {
        return Err(SigError::Malformed);
    }
    if now.abs_diff(t) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SigError::Stale);
    }
    let given = hex::decode(&sig[3..]).map_err(|_| SigError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| SigError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_slacks_documented_example() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(
                b"8f742231b10e8888abcd99yyyzzz85a5",
                "1531420618",
                body.as_bytes()
            ),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    fn headers(ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-slack-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn verify_refuses_forged_stale_and_missing() {
        let now = 1_800_000_000;
        let good = signature(b"s3cret", &now.to_string(), b"a=1");
        assert_eq!(verify(b"s3cret", &headers(now, &good), b"a=1", now), Ok(()));
        assert_eq!(
            verify(b"s3cret", &headers(now, &good), b"a=2", now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &headers(now, &good), b"a=1", now),
            Err(SigError::Mismatch)
        );
        let old = signature(b"s3cret", &(now - 301).to_string(), b"a=1");
        assert_eq!(
            verify(b"s3cret", &headers(now - 301, &old), b"a=1", now),
            Err(SigError::Stale)
        );
        assert_eq!(
            verify(b"s3cret", &HeaderMap::new(), b"a=1", now),
            Err(SigError::Missing)
        );
        assert_eq!(
            verify(b"s3cret", &headers(now, "v1=abc"), b"a=1", now),
            Err(SigError::Malformed)
        );
    }
}
