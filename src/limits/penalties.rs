//! Keys refused at connect for a while after the gate found them far past
//! their limits ([`super::Decision::Penalize`]): the intake closes the
//! offending connection, and the callout refuses the key's reconnects
//! until the penalty ends, so a flooder cannot simply come back (async-nats
//! reconnects at once, a raw client in a loop). At most one such connect a
//! second per key gets a signed denial (the reason reaches the server log
//! and the auth-error advisory); the others get no answer at all, so they
//! cost unibusd no signing and wait out the server's authorization timeout
//! (2 s): a client reconnecting in a tight loop slows down to one attempt
//! per connection every 2 s. Held per unibusd process: with several
//! instances, each penalizes what it sees.
//!
//! Bounded: at most [`MAX_PENALTIES`] keys; ended penalties are dropped
//! when a new one would not fit, and while none has ended a new one is not
//! recorded (its connection is still closed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a penalized key is refused at connect.
pub const PENALTY: Duration = Duration::from_secs(30);

/// Keys penalized at once, at most.
pub const MAX_PENALTIES: usize = 65_536;

/// A penalized key's connects get a signed denial at most this often.
pub const ANSWER_EVERY: Duration = Duration::from_secs(1);

/// One penalty: when it ends, and when a connect of the key was last
/// answered.
#[derive(Clone, Copy)]
struct Penalty {
    until: Instant,
    answered: Option<Instant>,
}

/// The penalized keys of one unibusd process.
#[derive(Default)]
pub struct Penalties {
    until: Mutex<HashMap<[u8; 32], Penalty>>,
}

/// What the callout does with a connect of a penalized key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Answer with a signed denial.
    Deny,
    /// Leave it unanswered.
    Ignore,
}

impl Penalties {
    /// Penalizes `key` from now for [`PENALTY`]; `true` when it was not
    /// penalized already (the caller then closes its connection).
    pub fn add(&self, key: &[u8; 32]) -> bool {
        self.add_at(key, Instant::now())
    }

    /// How the callout refuses a connect of `key` now; `None` when `key`
    /// is not penalized.
    pub fn refusal(&self, key: &[u8; 32]) -> Option<Refusal> {
        self.refusal_at(key, Instant::now())
    }

    fn refusal_at(&self, key: &[u8; 32], now: Instant) -> Option<Refusal> {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let p = until.get_mut(key).filter(|p| now < p.until)?;
        if p.answered.is_some_and(|t| now.saturating_duration_since(t) < ANSWER_EVERY) {
            return Some(Refusal::Ignore);
        }
        p.answered = Some(now);
        Some(Refusal::Deny)
    }

    fn add_at(&self, key: &[u8; 32], now: Instant) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.get(key).is_some_and(|p| now < p.until) {
            return false;
        }
        if until.len() >= MAX_PENALTIES {
            until.retain(|_, p| now < p.until);
        }
        if until.len() < MAX_PENALTIES {
            until.insert(*key, Penalty { until: now + PENALTY, answered: None });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is penalized once per period; it ends by itself.
    #[test]
    fn once_per_period_then_ends() {
        let p = Penalties::default();
        let t0 = Instant::now();
        assert!(p.add_at(&[1; 32], t0));
        assert!(!p.add_at(&[1; 32], t0 + Duration::from_secs(1)), "already penalized");
        assert!(p.refusal_at(&[1; 32], t0).is_some());
        assert!(p.refusal_at(&[2; 32], t0).is_none());
        assert!(p.add_at(&[1; 32], t0 + PENALTY), "a new period");
    }

    /// A penalized key's connects get a signed denial at most once a
    /// second; the rest go unanswered.
    #[test]
    fn one_answer_a_second() {
        let p = Penalties::default();
        let t0 = Instant::now();
        assert!(p.add_at(&[1; 32], t0));
        assert_eq!(p.refusal_at(&[1; 32], t0), Some(Refusal::Deny));
        assert_eq!(p.refusal_at(&[1; 32], t0 + Duration::from_millis(500)), Some(Refusal::Ignore));
        assert_eq!(p.refusal_at(&[1; 32], t0 + ANSWER_EVERY), Some(Refusal::Deny));
        assert_eq!(p.refusal_at(&[2; 32], t0), None);
        assert_eq!(p.refusal_at(&[1; 32], t0 + PENALTY), None, "ended");
    }
}
