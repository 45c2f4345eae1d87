//! The control plane's gate: what one request may cost before anything is
//! read for it. Every request is judged here by the dispatcher, on the
//! caller's key from the server-stamped header and the endpoint's
//! [`Cost`], in a few hundred nanoseconds and without I/O:
//!
//! - **Budget per caller.** Each known key (a member's device) has a token
//!   bucket of cost units (`rate` per second up to `burst`); a read costs
//!   [`Cost::Read`], a write [`Cost::Write`], a write that then sweeps the
//!   cluster for connections to close [`Cost::Sweep`]. Keys no account
//!   lists are guests: their one subject, `unibus.register`, has its own
//!   limits ([`super::guests`]); a guest's other requests (it has no right
//!   to send any) are judged here like a member's.
//! - **In flight.** At most `per_caller_in_flight` requests of one caller
//!   and `max_in_flight` of all callers are being handled at once; the
//!   excess is refused at once, never queued, so memory and the store's
//!   load stay bounded whatever the rate.
//! - **Refusals.** A refusal is answered (`limit_reached`) only while the
//!   caller's refusal bucket has a token; beyond that it is dropped
//!   without a reply.
//!
//! A refused request spends nothing. The caller table is bounded: entries
//! that carry no information (full buckets, nothing in flight) are dropped
//! when it is full, and while it stays full a new caller is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use unibus_proto::error::Error;

use super::Bucket;

/// What an endpoint costs a caller's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Reads a record or two.
    Read,
    /// Writes (a compare-and-swap, perhaps on several records).
    Write,
    /// Writes, then lists every server's connections and closes some, and
    /// lists again once in-flight admissions have settled.
    Sweep,
}

impl Cost {
    /// Cost units spent from the caller's bucket.
    pub fn units(self) -> f64 {
        match self {
            Cost::Read => 1.0,
            Cost::Write => 4.0,
            Cost::Sweep => 20.0,
        }
    }
}

/// The settings of the gate (defaults and their reasons: the settings
/// table in docs/production.md).
#[derive(Debug, Clone, PartialEq)]
pub struct CallerLimits {
    /// Cost units one caller may spend per second.
    pub rate: u32,
    /// Cost units one caller may spend at once.
    pub burst: u32,
    /// Requests of one caller handled at once.
    pub per_caller_in_flight: u32,
    /// Requests of all callers (guests' registrations aside) handled at
    /// once by this instance.
    pub max_in_flight: usize,
    /// Refusals answered per caller and second (then silence).
    pub refusal_rate: u32,
    /// Refusals answered at once.
    pub refusal_burst: u32,
    /// Entries of the caller table.
    pub max_callers: usize,
}

impl Default for CallerLimits {
    fn default() -> Self {
        CallerLimits {
            rate: 100,
            burst: 200,
            per_caller_in_flight: 8,
            max_in_flight: 128,
            refusal_rate: 2,
            refusal_burst: 10,
            max_callers: 65_536,
        }
    }
}

/// The gate's verdict on one request.
#[derive(Debug)]
pub enum Decision {
    /// Handle it; hold the ticket until it is answered.
    Run(Ticket),
    /// Answer with this error (`limit_reached`) and do nothing else.
    Refuse(Error),
    /// Drop it without a reply: the caller is far past its limit.
    Silent,
}

/// One caller's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tokens: Bucket,
    refusals: Bucket,
    in_flight: u32,
}

struct Table {
    callers: HashMap<[u8; 32], Entry>,
    /// While the table is full of live entries, the next sweep waits
    /// until then, so a flood of fresh keys cannot make every request a
    /// full scan.
    next_sweep: Instant,
    /// Refusals answered to callers the full table could not take.
    overflow: Bucket,
}

/// Pause between sweeps of a table that a sweep could not shrink.
const SWEEP_PAUSE: Duration = Duration::from_millis(100);

struct Inner {
    cfg: CallerLimits,
    table: Mutex<Table>,
    in_flight: Arc<Semaphore>,
}

/// The per-caller gate of one unibusd process.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

/// Held while an admitted request is handled; frees its slots on drop.
#[derive(Debug)]
pub struct Ticket {
    gate: Option<Arc<Inner>>,
    key: [u8; 32],
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Ticket {
    /// A ticket that holds only `permit` (a request admitted by another
    /// limit, such as a guest's registration).
    pub fn holding(permit: OwnedSemaphorePermit) -> Ticket {
        Ticket { gate: None, key: [0; 32], _permit: Some(permit) }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(inner) = self.gate.take() else { return };
        let mut table = inner.lock();
        if let Some(e) = table.callers.get_mut(&self.key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves consistent numbers.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Gate {
    /// A gate with full buckets.
    pub fn new(cfg: CallerLimits) -> Gate {
        let now = Instant::now();
        let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let overflow = Bucket::full(f64::from(cfg.refusal_burst.max(1)), now);
        let table = Table { callers: HashMap::new(), next_sweep: now, overflow };
        Gate { inner: Arc::new(Inner { cfg, table: Mutex::new(table), in_flight }) }
    }

    /// The settings.
    pub fn limits(&self) -> &CallerLimits {
        &self.inner.cfg
    }

    /// Judges one request of `caller` costing `cost`.
    pub fn admit(&self, caller: &[u8; 32], cost: Cost) -> Decision {
        self.admit_at(caller, cost, Instant::now())
    }

    /// Entries in the caller table.
    #[cfg(any(test, feature = "internals"))]
    pub fn tracked_callers(&self) -> usize {
        self.inner.lock().callers.len()
    }

    fn admit_at(&self, caller: &[u8; 32], cost: Cost, now: Instant) -> Decision {
        let cfg = &self.inner.cfg;
        let (cap, rate) = (f64::from(cfg.burst.max(1)), f64::from(cfg.rate));
        let (r_cap, r_rate) = (f64::from(cfg.refusal_burst.max(1)), f64::from(cfg.refusal_rate));
        let mut table = self.inner.lock();
        if !table.callers.contains_key(caller) && !self.make_room(&mut table, now) {
            let answered = table.overflow.take(1.0, r_cap, r_rate, now);
            return refusal(answered, "too many callers at once; retry later");
        }
        let fresh = Entry { tokens: Bucket::full(cap, now), refusals: Bucket::full(r_cap, now), in_flight: 0 };
        let entry = table.callers.entry(*caller).or_insert(fresh);
        let why = if entry.tokens.level(cap, rate, now) < cost.units().min(cap) {
            "too many requests from this device; retry later"
        } else if entry.in_flight >= cfg.per_caller_in_flight.max(1) {
            "too many requests in flight from this device; retry later"
        } else {
            match self.inner.in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    entry.tokens.take(cost.units().min(cap), cap, rate, now);
                    entry.in_flight += 1;
                    let gate = Some(self.inner.clone());
                    return Decision::Run(Ticket { gate, key: *caller, _permit: Some(permit) });
                }
                Err(_) => "the service is busy; retry later",
            }
        };
        let answered = entry.refusals.take(1.0, r_cap, r_rate, now);
        refusal(answered, why)
    }

    /// Makes room for one more caller; false when the table stays full.
    fn make_room(&self, table: &mut Table, now: Instant) -> bool {
        let cfg = &self.inner.cfg;
        if table.callers.len() < cfg.max_callers {
            return true;
        }
        if now >= table.next_sweep {
            let (cap, rate) = (f64::from(cfg.burst.max(1)), f64::from(cfg.rate));
            let (r_cap, r_rate) = (f64::from(cfg.refusal_burst.max(1)), f64::from(cfg.refusal_rate));
            table.callers.retain(|_, e| {
                e.in_flight > 0 || e.tokens.level(cap, rate, now) < cap || e.refusals.level(r_cap, r_rate, now) < r_cap
            });
            table.next_sweep = now + SWEEP_PAUSE;
        }
        table.callers.len() < cfg.max_callers
    }
}

fn refusal(answered: bool, why: &str) -> Decision {
    match answered {
        true => Decision::Refuse(Error::LimitReached(why.into())),
        false => Decision::Silent,
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

    fn verdict(d: &Decision) -> &'static str {
        match d {
            Decision::Run(_) => "run",
            Decision::Refuse(_) => "refuse",
            Decision::Silent => "silent",
        }
    }

    /// A caller spends its burst by cost, is refused with an answer while
    /// its refusal budget lasts, then silently; it refills at its rate;
    /// other callers are untouched.
    #[test]
    fn budget_by_cost_then_answered_refusals_then_silence() {
        let cfg = CallerLimits { rate: 10, burst: 20, refusal_rate: 1, refusal_burst: 3, ..Default::default() };
        let gate = Gate::new(cfg);
        let t0 = Instant::now();
        // 20 units: one sweep (20) fits once.
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Sweep, t0)), "run");
        let seen: Vec<_> = (0..6).map(|_| verdict(&gate.admit_at(&key(1), Cost::Read, t0))).collect();
        assert_eq!(seen, ["refuse", "refuse", "refuse", "silent", "silent", "silent"]);
        assert_eq!(verdict(&gate.admit_at(&key(2), Cost::Write, t0)), "run", "another caller");
        // 0.5 s later: 5 units back, a write (4) runs, a second does not.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Write, t1)), "run");
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Write, t1)), "silent", "refusals not yet refilled");
        let t2 = t0 + Duration::from_millis(1100);
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Sweep, t2)), "refuse", "one refusal token back");
    }

    /// At most `per_caller_in_flight` of one caller and `max_in_flight` of
    /// all run at once; slots come back when tickets drop.
    #[test]
    fn in_flight_caps() {
        let cfg = CallerLimits { per_caller_in_flight: 2, max_in_flight: 3, ..Default::default() };
        let gate = Gate::new(cfg);
        let t0 = Instant::now();
        let a1 = gate.admit_at(&key(1), Cost::Read, t0);
        let _a2 = gate.admit_at(&key(1), Cost::Read, t0);
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Read, t0)), "refuse", "per caller");
        let _b1 = gate.admit_at(&key(2), Cost::Read, t0);
        assert_eq!(verdict(&gate.admit_at(&key(3), Cost::Read, t0)), "refuse", "instance full");
        drop(a1);
        let c1 = gate.admit_at(&key(3), Cost::Read, t0);
        assert_eq!(verdict(&c1), "run", "a slot came back");
        assert_eq!(verdict(&gate.admit_at(&key(1), Cost::Read, t0)), "refuse", "instance full again");
    }

    /// Fresh callers never grow the table past its cap; idle refilled
    /// entries make room again.
    #[test]
    fn table_stays_bounded() {
        let cfg = CallerLimits { max_callers: 50, ..Default::default() };
        let gate = Gate::new(cfg);
        let t0 = Instant::now();
        let mut refused = 0;
        for i in 0..1_000u64 {
            if !matches!(gate.admit_at(&key(i), Cost::Read, t0), Decision::Run(_)) {
                refused += 1;
            }
            assert!(gate.tracked_callers() <= 50);
        }
        assert_eq!(refused, 950);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(verdict(&gate.admit_at(&key(5_000), Cost::Read, later)), "run");
        assert!(gate.tracked_callers() <= 50);
    }
}
