//! Token buckets: a rate per key, in one mutex-guarded map, and the budget of verified
//! requests the platform handlers spend once they know who is asking.
//!
//! A request costs one token; tokens come back at `per_minute / 60` per second up to
//! `burst`. A bucket that has refilled completely carries no information, so idle keys are
//! pruned from the map once a minute. (tower_governor does the same, but its default
//! features pull in tonic.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often idle buckets are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Past this many tracked keys, prune at once rather than wait for the minute.
const PRUNE_ABOVE: usize = 50_000;

/// A token bucket per key.
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    state: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    by_key: HashMap<K, Bucket>,
    last_prune: Instant,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// `None` when the limit is off (`per_minute == 0`).
    pub fn new(per_minute: u32, burst: u32) -> Option<RateLimiter<K>> {
        (per_minute > 0).then(|| RateLimiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            state: Mutex::new(Buckets {
                by_key: HashMap::new(),
                last_prune: Instant::now(),
            }),
        })
    }

    /// Take a token for `key` at `now`, or say how long until one is available.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, |tokens| {
            if *tokens >= 1.0 {
                *tokens -= 1.0;
            }
        })
    }

    /// Whether `key` has a token at `now`, taking none.
    /// A key not tracked has a full bucket: looking is then no write.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.by_key.get(key) {
            Some(b) if self.refilled(b, now) < 1.0 => Err(Duration::from_secs_f64(
                (1.0 - self.refilled(b, now)) / self.per_sec,
            )),
            _ => Ok(()),
        }
    }

    /// Take a token for `key` after the fact (a request already answered), if it has one.
    pub fn charge(&self, key: &K, now: Instant) {
        let _ = self.check(key, now);
    }

    /// Refill `key`'s bucket to `now`, let `spend` take from it, and answer as `check` does
    /// for the tokens there were before.
    fn with(&self, key: &K, now: Instant, spend: impl FnOnce(&mut f64)) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(s.last_prune) >= PRUNE_EVERY
            || s.by_key.len() > PRUNE_ABOVE
        {
            self.prune(&mut s, now);
        }
        let b = s.by_key.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = self.refilled(b, now);
        b.at = now;
        let before = b.tokens;
        spend(&mut b.tokens);
        if before >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - before) / self.per_sec))
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let idle = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + idle * self.per_sec).min(self.burst)
    }

    fn prune(&self, s: &mut Buckets<K>, now: Instant) {
        s.by_key.retain(|_, b| self.refilled(b, now) < self.burst);
        s.last_prune = now;
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }
}

/// The budget of verified requests on one route group (`/slack`, `/discord`, `/alerts`,
/// `/github`),
/// spent by the handler once the signature holds and it knows who asks: a bucket per
/// person (a Slack team's user, a Discord user, an alert sender), and one per workspace
/// (a Slack team, a Discord guild) for all its people together. Forged requests never get
/// here, so they cannot spend it.
pub struct SignedBudget {
    per_person: Option<RateLimiter<String>>,
    per_workspace: Option<RateLimiter<String>>,
}

impl SignedBudget {
    pub fn new(person: (u32, u32), workspace: (u32, u32)) -> SignedBudget {
        SignedBudget {
            per_person: RateLimiter::new(person.0, person.1),
            per_workspace: RateLimiter::new(workspace.0, workspace.1),
        }
    }

    /// Spend one request of `person` in `workspace`, or say how long to wait. The person's
    /// bucket goes first, so one person over their limit does not drain their workspace's.
    pub fn take(&self, workspace: Option<&str>, person: &str) -> Result<(), Duration> {
        let now = Instant::now();
        if let Some(p) = &self.per_person {
            p.check(&person.to_owned(), now)?;
        }
        if let (Some(w), Some(ws)) = (&self.per_workspace, workspace) {
            w.check(&ws.to_owned(), now)?;
        }
        Ok(())
    }
}

/// The signed budgets of the route groups, shared by the HTTP middleware and the
/// outbound sockets (Slack Socket Mode, the Discord gateway), whose envelopes spend the same
/// buckets as signed requests do.
pub struct SignedBudgets {
    pub slack: std::sync::Arc<SignedBudget>,
    pub discord: std::sync::Arc<SignedBudget>,
    pub alerts: std::sync::Arc<SignedBudget>,
    /// GitHub webhooks: per repository and event, and per repository.
    pub github: std::sync::Arc<SignedBudget>,
}

impl SignedBudgets {
    /// Per person `(per_minute, burst)` and per workspace; with the per-person limit off
    /// every limit is off.
    pub fn new(person: (u32, u32), workspace: (u32, u32)) -> SignedBudgets {
        let workspace = if person.0 == 0 { (0, 0) } else { workspace };
        let one = || std::sync::Arc::new(SignedBudget::new(person, workspace));
        SignedBudgets {
            slack: one(),
            discord: one(),
            alerts: one(),
            github: one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        // 60 a minute: one token a second, three at once.
        let r = RateLimiter::new(60, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check(&1, t0).is_ok());
        }
        let wait = r.check(&1, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert!(r.check(&2, t0).is_ok());
        // Half a second later: still empty, half as long to wait.
        let wait = r.check(&1, t0 + Duration::from_millis(500)).unwrap_err();
        assert!(wait <= Duration::from_millis(501), "{wait:?}");
        assert!(r.check(&1, t0 + Duration::from_millis(1001)).is_ok());
        // Refills cap at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(r.check(&1, later).is_ok());
        }
        assert!(r.check(&1, later).is_err());
    }

    #[test]
    fn peek_takes_nothing_and_charge_takes_one() {
        let r = RateLimiter::new(60, 2).unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(r.peek(&"ip", t0).is_ok());
        }
        r.charge(&"ip", t0);
        r.charge(&"ip", t0);
        assert!(r.peek(&"ip", t0).is_err());
        // Charging an empty bucket keeps it empty, not below.
        r.charge(&"ip", t0);
        assert!(r.peek(&"ip", t0 + Duration::from_millis(1001)).is_ok());
    }

    #[test]
    fn zero_per_minute_turns_the_limit_off() {
        assert!(RateLimiter::<u8>::new(0, 30).is_none());
        let b = SignedBudget::new((0, 1), (0, 1));
        for _ in 0..100 {
            assert!(b.take(Some("T1"), "T1:U1").is_ok());
        }
    }

    #[test]
    fn idle_keys_are_pruned() {
        let r = RateLimiter::new(60, 2).unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            let _ = r.check(&i, t0);
        }
        assert_eq!(r.tracked(), 100);
        // One key stays busy; after a minute the others have refilled and go.
        let t1 = t0 + PRUNE_EVERY;
        let _ = r.check(&1000, t1);
        let _ = r.check(&1000, t1);
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn people_have_their_own_budget_and_share_their_workspaces() {
        // Two a person, five a workspace.
        let b = SignedBudget::new((60, 2), (60, 5));
        assert!(b.take(Some("T1"), "T1:U1").is_ok());
        assert!(b.take(Some("T1"), "T1:U1").is_ok());
        assert!(b.take(Some("T1"), "T1:U1").is_err(), "the person's limit");
        // U1 over their limit spent nothing of T1's: three more people fit.
        assert!(b.take(Some("T1"), "T1:U2").is_ok());
        assert!(b.take(Some("T1"), "T1:U3").is_ok());
        assert!(b.take(Some("T1"), "T1:U4").is_ok());
        assert!(
            b.take(Some("T1"), "T1:U5").is_err(),
            "the workspace's limit"
        );
        assert!(b.take(Some("T2"), "T2:U1").is_ok(), "another workspace");
    }
}
