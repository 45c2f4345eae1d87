//! The control plane's gate: what one request may cost before anything is
//! read for it. Every request is judged here by the intake, on the caller's
//! key from the server-stamped header, the endpoint's [`Cost`] and the
//! message's size, in well under a microsecond and without I/O:
//!
//! - **Budget per caller.** Each member's device has a token bucket of
//!   cost units (`rate` per second up to `burst`); a read costs
//!   [`Cost::Read`], a write [`Cost::Write`], a write that then sweeps the
//!   cluster for connections to close [`Cost::Sweep`]. A guest's
//!   registration is judged by the guest limits instead
//!   ([`super::guests`]).
//! - **In flight.** At most `per_caller_in_flight` requests of one caller
//!   and `max_in_flight` of all members are handled at once, and the last
//!   quarter of those slots only for callers with nothing in flight; the
//!   excess is refused at once, never queued, so memory and the store's
//!   load stay bounded whatever the rate.
//! - **Refusals.** A refusal is answered (`limit_reached`) only while the
//!   caller's refusal bucket has a token; beyond that it is dropped
//!   without a reply.
//! - **Far past the limit.** nats-server has no ingress limit of its own:
//!   every byte a client sends on a control subject is forwarded to
//!   unibusd's one control connection, which the server cuts as a slow
//!   consumer once 64 MiB wait for it, and which drops requests (anyone's)
//!   once its subscription buffers are full. So a caller that sends a body
//!   over [`super::MAX_REQUEST_BYTES`], more than `bytes_burst` bytes
//!   beyond `bytes_per_sec`, or more than `abuse_burst` dropped requests
//!   beyond `abuse_per_sec`, is [`Decision::Penalize`]d: its connection is
//!   closed and its key refused at connect for a while
//!   ([`super::Penalties`]). That is the only way to stop a flood at its
//!   source.
//!
//! A refused request spends no budget. The caller table is bounded:
//! entries that carry no information (full buckets, nothing in flight) are
//! dropped when it is full, and while it stays full a new caller is
//! refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use unibus_proto::error::Error;

use super::{Bucket, Limiter, MAX_REQUEST_BYTES};

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

/// Who is asking, as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A key no account lists, registering: the guest limits decide.
    Guest,
    /// Anyone else, on an endpoint of this cost.
    Member(Cost),
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
    /// Requests of all members handled at once by this instance.
    pub max_in_flight: usize,
    /// Refusals answered per caller and second (then silence).
    pub refusal_rate: u32,
    /// Refusals answered at once.
    pub refusal_burst: u32,
    /// Dropped (unanswered) requests per second a caller may send before
    /// it is penalized.
    pub abuse_per_sec: u32,
    /// ... beyond this many at once.
    pub abuse_burst: u32,
    /// Bytes (header block and body) per second a caller may send.
    pub bytes_per_sec: u32,
    /// ... beyond this many at once.
    pub bytes_burst: u32,
    /// Entries of the caller table.
    pub max_callers: usize,
}

impl Default for CallerLimits {
    fn default() -> Self {
        CallerLimits {
            rate: 200,
            burst: 1000,
            per_caller_in_flight: 16,
            max_in_flight: 128,
            refusal_rate: 20,
            refusal_burst: 100,
            abuse_per_sec: 500,
            abuse_burst: 500,
            bytes_per_sec: 4 << 20,
            bytes_burst: 16 << 20,
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
    /// Drop it without a reply: the caller is past its limit.
    Silent,
    /// Drop it, close the caller's connection and refuse its key at
    /// connect for a while: the caller is far past its limits (the reason).
    Penalize(&'static str),
}

/// One caller's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tokens: Bucket,
    refusals: Bucket,
    abuse: Bucket,
    bytes: Bucket,
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
    guests: Limiter,
    table: Mutex<Table>,
    in_flight: Arc<Semaphore>,
}

/// The control-plane gate of one unibusd process.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

/// Held while an admitted request is handled; frees its slots on drop.
pub struct Ticket {
    gate: Option<Arc<Inner>>,
    key: [u8; 32],
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("key", &hex::encode(&self.key[..4])).finish_non_exhaustive()
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

/// Capacity and rate of each of an entry's buckets.
struct Shapes {
    tokens: (f64, f64),
    refusals: (f64, f64),
    abuse: (f64, f64),
    bytes: (f64, f64),
}

impl Shapes {
    fn of(cfg: &CallerLimits) -> Shapes {
        let pair = |cap: u32, rate: u32| (f64::from(cap.max(1)), f64::from(rate));
        Shapes {
            tokens: pair(cfg.burst, cfg.rate),
            refusals: pair(cfg.refusal_burst, cfg.refusal_rate),
            abuse: pair(cfg.abuse_burst, cfg.abuse_per_sec),
            bytes: pair(cfg.bytes_burst, cfg.bytes_per_sec),
        }
    }

    fn fresh(&self, now: Instant) -> Entry {
        Entry {
            tokens: Bucket::full(self.tokens.0, now),
            refusals: Bucket::full(self.refusals.0, now),
            abuse: Bucket::full(self.abuse.0, now),
            bytes: Bucket::full(self.bytes.0, now),
            in_flight: 0,
        }
    }

    /// True when `e` carries no information: every bucket full again and
    /// nothing in flight.
    fn idle(&self, e: &Entry, now: Instant) -> bool {
        let full = |b: &Bucket, (cap, rate): (f64, f64)| b.level(cap, rate, now) >= cap;
        e.in_flight == 0
            && full(&e.tokens, self.tokens)
            && full(&e.refusals, self.refusals)
            && full(&e.abuse, self.abuse)
            && full(&e.bytes, self.bytes)
    }
}

impl Gate {
    /// A gate with full buckets; guests' registrations are judged by
    /// `guests`.
    pub fn new(cfg: CallerLimits, guests: Limiter) -> Gate {
        let now = Instant::now();
        let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let overflow = Bucket::full(f64::from(cfg.refusal_burst.max(1)), now);
        let table = Table { callers: HashMap::new(), next_sweep: now, overflow };
        Gate { inner: Arc::new(Inner { cfg, guests, table: Mutex::new(table), in_flight }) }
    }

    /// The settings.
    pub fn limits(&self) -> &CallerLimits {
        &self.inner.cfg
    }

    /// Judges one request of `caller`, of `class` and `size` bytes.
    pub fn admit(&self, caller: &[u8; 32], class: Class, size: usize) -> Decision {
        self.admit_at(caller, class, size, Instant::now())
    }

    /// Entries in the caller table.
    #[cfg(any(test, feature = "internals"))]
    pub fn tracked_callers(&self) -> usize {
        self.inner.lock().callers.len()
    }

    fn admit_at(&self, caller: &[u8; 32], class: Class, size: usize, now: Instant) -> Decision {
        let shapes = Shapes::of(&self.inner.cfg);
        let decision = {
            let mut table = self.inner.lock();
            if !table.callers.contains_key(caller) && !self.make_room(&mut table, &shapes, now) {
                let (cap, rate) = shapes.refusals;
                let answered = table.overflow.take(1.0, cap, rate, now);
                return refusal(answered, "too many callers at once; retry later");
            }
            let entry = table.callers.entry(*caller).or_insert_with(|| shapes.fresh(now));
            if size > MAX_REQUEST_BYTES {
                return Decision::Penalize("a control request body over the size limit");
            }
            let (cap, rate) = shapes.bytes;
            // A message larger than the whole bucket can never fit: it is
            // far past the limit by itself.
            if !entry.bytes.take((size as f64).min(cap + 1.0), cap, rate, now) {
                return Decision::Penalize("control-plane bytes far past the limit");
            }
            match class {
                Class::Guest => None,
                Class::Member(cost) => Some(self.member(caller, entry, &shapes, cost, now)),
            }
        };
        // The guest limits have their own lock, taken without the table's.
        let decision = decision.unwrap_or_else(|| self.inner.guests.decide(caller));
        if !matches!(decision, Decision::Silent) {
            return decision;
        }
        let mut table = self.inner.lock();
        let Some(entry) = table.callers.get_mut(caller) else { return decision };
        let (cap, rate) = shapes.abuse;
        match entry.abuse.take(1.0, cap, rate, now) {
            true => decision,
            false => Decision::Penalize("requests far past the limit"),
        }
    }

    /// A member's request: budget, in-flight caps, refusal budget.
    fn member(&self, caller: &[u8; 32], entry: &mut Entry, shapes: &Shapes, cost: Cost, now: Instant) -> Decision {
        let cfg = &self.inner.cfg;
        let (cap, rate) = shapes.tokens;
        let units = cost.units().min(cap);
        let why = if entry.tokens.level(cap, rate, now) < units {
            "too many requests from this device; retry later"
        } else if entry.in_flight >= cfg.per_caller_in_flight.max(1) {
            "too many requests in flight from this device; retry later"
        } else if entry.in_flight > 0 && self.inner.in_flight.available_permits() <= cfg.max_in_flight / 4 {
            // The last quarter of the slots is kept for callers with
            // nothing in flight, so a few busy callers cannot take them
            // all from the rest.
            "the service is busy; retry later"
        } else {
            match self.inner.in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    entry.tokens.take(units, cap, rate, now);
                    entry.in_flight += 1;
                    let gate = Some(self.inner.clone());
                    return Decision::Run(Ticket { gate, key: *caller, _permit: Some(permit) });
                }
                Err(_) => "the service is busy; retry later",
            }
        };
        let (cap, rate) = shapes.refusals;
        refusal(entry.refusals.take(1.0, cap, rate, now), why)
    }

    /// Makes room for one more caller; false when the table stays full.
    fn make_room(&self, table: &mut Table, shapes: &Shapes, now: Instant) -> bool {
        let cfg = &self.inner.cfg;
        if table.callers.len() < cfg.max_callers {
            return true;
        }
        if now >= table.next_sweep {
            table.callers.retain(|_, e| !shapes.idle(e, now));
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
mod tests;
