//! Reconnect waits for the chat sockets: short after a requested reconnect, doubling after
//! failures, each scaled by a random jitter so replicas and restarts do not reconnect in step.

use std::time::Duration;

/// Longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before attempt number `failures + 1`: up to 250 ms after a requested
/// reconnect, else 1 s doubling to [`MAX_BACKOFF`], each scaled by a jitter in [0.5, 1).
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = if failures == 0 {
        Duration::from_millis(250)
    } else {
        (Duration::from_secs(1) * 2u32.saturating_pow(failures - 1).min(64)).min(MAX_BACKOFF)
    };
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random number in [0, 1).
pub fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / 65536.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        assert!(backoff(0, 0.0) >= Duration::from_millis(125));
        assert!(backoff(0, 1.0) <= Duration::from_millis(250));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(u32::MAX, 0.0), MAX_BACKOFF / 2);
        assert!((0.0..1.0).contains(&jitter()));
    }
}
