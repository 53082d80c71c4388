//! Network error reasons in words, without URLs (webhook URLs carry tokens).

/// A network error in words, without its URL (webhook URLs carry tokens).
pub fn net_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}
