//! Whether a request comes from Discord: the Ed25519 signature over timestamp + raw body,
//! with the application's public key, then the timestamp's age. Discord probes endpoints
//! with bad signatures and removes those that accept them.

use axum::http::HeaderMap;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Parse the application's public key (64 hex digits).
pub fn public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("DISCORD_PUBLIC_KEY must be 64 hex digits (the application's public key)")?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "DISCORD_PUBLIC_KEY is not a valid Ed25519 key".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

/// Check `X-Signature-Ed25519` over `X-Signature-Timestamp` + body, and the timestamp's age.
pub fn verify(
    key: &VerifyingKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SigError> {
    let sig = headers
        .get("x-signature-ed25519")
        .ok_or(SigError::Missing)?;
    let ts = headers
        .get("x-signature-timestamp")
        .ok_or(SigError::Missing)?;
    let ts = ts.to_str().map_err(|_| SigError::Malformed)?;
    let sig: [u8; 64] = hex::decode(sig.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigError::Malformed)?;
    let t: i64 = ts.parse().map_err(|_| SigError::Malformed)?;
    let mut msg = Vec::with_capacity(ts.len() + body.len());
    msg.extend_from_slice(ts.as_bytes());
    msg.extend_from_slice(body);
    // The signature first, so a forged request learns nothing from the clock check.
    key.verify(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| SigError::Mismatch)?;
    if now.abs_diff(t) > crate::platform::slack::MAX_SKEW_SECS.unsigned_abs() {
        return Err(SigError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn headers(sk: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
        let mut msg = ts.to_string().into_bytes();
        msg.extend_from_slice(body);
        let sig = sk.sign(&msg);
        let mut h = HeaderMap::new();
        h.insert(
            "x-signature-ed25519",
            hex::encode(sig.to_bytes()).parse().unwrap(),
        );
        h.insert("x-signature-timestamp", ts.to_string().parse().unwrap());
        h
    }

    #[test]
    fn verifies_ed25519_and_freshness() {
        let sk = key();
        let pk = public_key(&hex::encode(sk.verifying_key().to_bytes())).unwrap();
        let now = 1_800_000_000;
        let body = br#"{"type":1}"#;
        assert_eq!(verify(&pk, &headers(&sk, now, body), body, now), Ok(()));
        assert_eq!(
            verify(&pk, &headers(&sk, now, body), br#"{"type":2}"#, now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&pk, &headers(&sk, now - 400, body), body, now),
            Err(SigError::Stale)
        );
        assert_eq!(
            verify(&pk, &HeaderMap::new(), body, now),
            Err(SigError::Missing)
        );
        let other = SigningKey::from_bytes(&[9u8; 32]);
        assert_eq!(
            verify(&pk, &headers(&other, now, body), body, now),
            Err(SigError::Mismatch)
        );
        assert!(public_key("abcd").is_err());
    }
}
