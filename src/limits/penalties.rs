//! Keys refused at connect for a while after the gate found them far past
//! their limits ([`super::Decision::Penalize`]): the intake closes the
//! offending connection, and the callout refuses the key's reconnects
//! until the penalty ends, so a flooder cannot simply come back (async-nats
//! reconnects at once, a raw client in a loop). Held per unibusd process:
//! with several instances, each penalizes what it sees.
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

/// The penalized keys of one unibusd process.
#[derive(Default)]
pub struct Penalties {
    until: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Penalties {
    /// Penalizes `key` from now for [`PENALTY`]; `true` when it was not
    /// penalized already (the caller then closes its connection).
    pub fn add(&self, key: &[u8; 32]) -> bool {
        self.add_at(key, Instant::now())
    }

    /// True while `key` is penalized.
    pub fn holds(&self, key: &[u8; 32]) -> bool {
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.get(key).is_some_and(|t| Instant::now() < *t)
    }

    fn add_at(&self, key: &[u8; 32], now: Instant) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.get(key).is_some_and(|t| now < *t) {
            return false;
        }
        if until.len() >= MAX_PENALTIES {
            until.retain(|_, t| now < *t);
        }
        if until.len() < MAX_PENALTIES {
            until.insert(*key, now + PENALTY);
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
        assert!(p.holds(&[1; 32]));
        assert!(!p.holds(&[2; 32]));
        assert!(p.add_at(&[1; 32], t0 + PENALTY), "a new period");
    }
}
