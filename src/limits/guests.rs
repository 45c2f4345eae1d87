//! Guest abuse limits on `unibus.register`, the one subject a guest (any
//! key with a valid nonce signature) may publish. A guest has exactly one
//! legitimate request (plus a same-key retry after a crash), so a flood
//! must cost the flooder, not the store or other clients. Three checks, all
//! before any store access, all answering `limit_reached`:
//!
//! - a token bucket per key (`sign_pub`): a burst, then one request per
//!   interval. The table is bounded: an attacker has unlimited fresh keys,
//!   so refilled entries (which carry no information) are dropped when the
//!   table is full, and a new key is refused while it stays full;
//! - a global token bucket over all keys (requests per second, burst).
//!
//! They are judged once a registration is decoded, so that a malformed
//! one is answered `bad_request` like any other and costs nothing here;
//! before that, every request has passed the gate ([`super::Gate`]), which
//! bounds guests' requests in flight and floods of any shape.
//!
//! A key's tokens and the global tokens are taken together, only when both
//! are available, so a refused request spends nothing and only admitted
//! requests add table entries: the table holds at most about
//! `global_burst + global_per_sec * per_key_burst * per_key_interval`
//! live entries, whatever the number of keys tried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Bucket;

use unibus_proto::error::Error;

/// The settings of the register limits (defaults and their reasons: the settings table in
/// docs/production.md).
#[derive(Debug, Clone, PartialEq)]
pub struct GuestLimits {
    /// Requests a key may send at once before it is rate limited.
    pub per_key_burst: u32,
    /// Then one request per this interval.
    pub per_key_interval: Duration,
    /// Register requests per second over all keys.
    pub global_per_sec: u32,
    /// Burst of the global bucket.
    pub global_burst: u32,
    /// Entries of the per-key table.
    pub max_keys: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            per_key_burst: 5,
            per_key_interval: Duration::from_secs(2),
            global_per_sec: 2_000,
            global_burst: 4_000,
            max_keys: 65_536,
        }
    }
}

struct State {
    keys: HashMap<[u8; 32], Bucket>,
    global: Bucket,
    /// While the table is full of live entries, the next sweep waits until
    /// then, so a flood of fresh keys cannot make every request a full scan.
    next_sweep: Instant,
}

/// Pause between sweeps of a table that a sweep could not shrink.
const SWEEP_PAUSE: Duration = Duration::from_millis(100);

/// The register limiter of one unibusd process.
pub struct Limiter {
    cfg: GuestLimits,
    state: Mutex<State>,
}

impl Limiter {
    /// A limiter with full buckets.
    pub fn new(cfg: GuestLimits) -> Limiter {
        let global = Bucket::full(f64::from(cfg.global_burst), Instant::now());
        let state = State { keys: HashMap::new(), global, next_sweep: Instant::now() };
        Limiter { cfg, state: Mutex::new(state) }
    }

    /// Admits one registration of `key`.
    ///
    /// # Errors
    /// `limit_reached` when the key or all keys together are over their
    /// limit; nothing is spent then.
    pub fn admit(&self, key: &[u8; 32]) -> Result<(), Error> {
        self.take(key, Instant::now())
    }

    /// Entries in the per-key table.
    #[cfg(any(test, feature = "internals"))]
    pub fn tracked_keys(&self) -> usize {
        self.lock().keys.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent numbers.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn per_key_rate(&self) -> f64 {
        1.0 / self.cfg.per_key_interval.as_secs_f64().max(1e-3)
    }

    /// Takes one token of `key` and one global token at `now`, or none.
    fn take(&self, key: &[u8; 32], now: Instant) -> Result<(), Error> {
        let (key_cap, key_rate) = (f64::from(self.cfg.per_key_burst.max(1)), self.per_key_rate());
        let (g_cap, g_rate) = (f64::from(self.cfg.global_burst.max(1)), f64::from(self.cfg.global_per_sec));
        let mut st = self.lock();
        let key_level = match st.keys.get(key) {
            Some(b) => b.level(key_cap, key_rate, now),
            None => {
                if st.keys.len() >= self.cfg.max_keys && now >= st.next_sweep {
                    st.keys.retain(|_, b| b.level(key_cap, key_rate, now) < key_cap);
                    st.next_sweep = now + SWEEP_PAUSE;
                }
                if st.keys.len() >= self.cfg.max_keys {
                    return Err(Error::LimitReached("too many registering keys; retry later".into()));
                }
                key_cap
            }
        };
        if key_level < 1.0 {
            return Err(Error::LimitReached("too many registrations from this key; retry later".into()));
        }
        let g_level = st.global.level(g_cap, g_rate, now);
        if g_level < 1.0 {
            return Err(Error::LimitReached("too many registrations; retry later".into()));
        }
        st.global = Bucket { tokens: g_level - 1.0, at: now };
        st.keys.insert(*key, Bucket { tokens: key_level - 1.0, at: now });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_be_bytes());
        k
    }

    fn code(r: Result<(), Error>) -> &'static str {
        r.map_or_else(|e| e.code(), |()| "ok")
    }

    /// A key gets its burst, then one request per interval; other keys are
    /// unaffected.
    #[test]
    fn per_key_burst_then_interval() {
        let l = Limiter::new(GuestLimits::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(code(l.take(&key(1), t0)), "ok");
        }
        assert_eq!(code(l.take(&key(1), t0)), "limit_reached");
        assert_eq!(code(l.take(&key(2), t0)), "ok");
        assert_eq!(code(l.take(&key(1), t0 + Duration::from_millis(1900))), "limit_reached");
        assert_eq!(code(l.take(&key(1), t0 + Duration::from_millis(2100))), "ok");
        assert_eq!(code(l.take(&key(1), t0 + Duration::from_millis(2200))), "limit_reached");
    }

    /// The global bucket refuses beyond its burst and refills at its rate;
    /// a refused request spends no key token.
    #[test]
    fn global_bucket() {
        let cfg = GuestLimits { global_per_sec: 10, global_burst: 20, ..GuestLimits::default() };
        let l = Limiter::new(cfg);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(code(l.take(&key(i), t0)), "ok");
        }
        assert_eq!(code(l.take(&key(100), t0)), "limit_reached");
        assert_eq!(l.tracked_keys(), 20, "a refused key is not recorded");
        assert_eq!(code(l.take(&key(100), t0 + Duration::from_millis(110))), "ok");
        assert_eq!(code(l.take(&key(101), t0 + Duration::from_millis(110))), "limit_reached");
    }

    /// Many fresh keys never grow the table past its cap: refilled entries
    /// are dropped, and while none can be, new keys are refused.
    #[test]
    fn table_stays_bounded_under_fresh_keys() {
        let cfg = GuestLimits {
            global_per_sec: 1_000_000,
            global_burst: 1_000_000,
            max_keys: 100,
            ..GuestLimits::default()
        };
        let l = Limiter::new(cfg);
        let t0 = Instant::now();
        let mut refused = 0;
        for i in 0..10_000u64 {
            // 100 fresh keys per simulated second.
            let now = t0 + Duration::from_millis(i * 10);
            if l.take(&key(i), now).is_err() {
                refused += 1;
            }
            assert!(l.tracked_keys() <= 100, "table grew to {}", l.tracked_keys());
        }
        // Entries refill after 2 s, so 100 keys per second fit half the time.
        assert!(refused > 0 && refused < 10_000, "refused {refused}");
        // Once everything has refilled, the table makes room again.
        assert_eq!(code(l.take(&key(u64::MAX), t0 + Duration::from_secs(1_000))), "ok");
        assert!(l.tracked_keys() <= 100);
    }
}
