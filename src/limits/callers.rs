//! The control plane's gate: what one request may cost before anything is
//! read for it. Every request is judged here by the intake, on the caller's
//! key from the server-stamped header, the endpoint's [`Cost`] and the
//! message's size, in well under a microsecond and without I/O:
//!
//! - **Budget per caller.** Each member's device has a token bucket of
//!   cost units (`rate` per second up to `burst`); a read costs
//!   [`Cost::Read`], a write [`Cost::Write`], a write that then sweeps the
//!   cluster for connections to close [`Cost::Sweep`]. A guest key has a
//!   smaller one (`guest_rate`, `guest_burst`, one unit a request), and
//!   its registration is further judged by the guest limits once it is
//!   decoded ([`super::guests`]).
//! - **In flight.** At most `per_caller_in_flight` requests of one caller
//!   are handled at once, at most `max_in_flight` of all members (guests:
//!   `guest_in_flight`), and of the members' slots a caller that already
//!   has a request in flight may take only three quarters ([`super::slots`]).
//!   A request within its budget that finds no free slot waits for one,
//!   in order, for a bounded time, with a bounded number of others, and
//!   beyond that is refused at once. So a client's burst is smoothed
//!   rather than refused, and memory and the store's load stay bounded
//!   whatever the rate.
//! - **Refusals.** A refusal is answered (`limit_reached`) only while the
//!   caller's refusal bucket has a token; beyond that it is dropped
//!   without a reply.
//! - **Size.** A body over [`super::MAX_REQUEST_BYTES`] is refused
//!   (`bad_request`) before it is parsed; a message to store
//!   ([`Cost::Mail`]) may be as large as a NATS message.
//! - **Far past the limit.** nats-server has no ingress limit of its own:
//!   every byte a client sends on a control subject is forwarded to
//!   unibusd's one control connection, which the server cuts as a slow
//!   consumer once 64 MiB wait for it, and which drops requests (anyone's)
//!   once its subscription buffers are full. So a caller that sends more
//!   than `bytes_burst` bytes beyond `bytes_per_sec`, or more than
//!   `abuse_burst` dropped requests beyond `abuse_per_sec`, is
//!   [`Decision::Penalize`]d: its connection is closed and its key refused
//!   at connect for a while ([`super::Penalties`]). That is the only way
//!   to stop a flood at its source.
//!
//! A refused request spends no budget. The caller table is bounded:
//! entries that carry no information (full buckets, nothing in flight) are
//! dropped when it is full, and while it stays full a new caller is
//! refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unibus_proto::error::Error;

use super::slots::{CallerSlots, Slots, Taken};
use super::{Bucket, MAX_REQUEST_BYTES, Ticket, Waiter};

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
    /// Stores a message (one KV create) and publishes it: a write whose
    /// body may be as large as the server lets a message be
    /// ([`super::MAX_MAIL_REQUEST_BYTES`]).
    Mail,
}

impl Cost {
    /// Cost units spent from the caller's bucket.
    pub fn units(self) -> f64 {
        match self {
            Cost::Read => 1.0,
            Cost::Write | Cost::Mail => 2.0,
            Cost::Sweep => 5.0,
        }
    }

    /// The largest body a request of this cost may have.
    pub fn max_body(self) -> usize {
        match self {
            Cost::Mail => super::MAX_MAIL_REQUEST_BYTES,
            _ => MAX_REQUEST_BYTES,
        }
    }
}

/// Who is asking, as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A guest (account GUEST), registering: slots of its own.
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
    /// Requests a guest key may send per second (each costs one unit),
    /// malformed ones included: a guest has one registration to make.
    pub guest_rate: u32,
    /// ... beyond this many at once.
    pub guest_burst: u32,
    /// Requests of one caller handled at once.
    pub per_caller_in_flight: u32,
    /// Requests of all members handled at once by this instance.
    pub max_in_flight: usize,
    /// Guests' registrations handled at once by this instance.
    pub guest_in_flight: usize,
    /// Requests of one caller waiting for a slot, at most.
    pub per_caller_waiting: u32,
    /// Requests waiting for a slot, at most, all callers.
    pub max_waiting: usize,
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
            burst: 5000,
            guest_rate: 20,
            guest_burst: 100,
            per_caller_in_flight: 16,
            max_in_flight: 128,
            guest_in_flight: 512,
            per_caller_waiting: 256,
            max_waiting: 2048,
            refusal_rate: 20,
            refusal_burst: 100,
            abuse_per_sec: 1000,
            abuse_burst: 1000,
            bytes_per_sec: 4 << 20,
            bytes_burst: 4 << 20,
            max_callers: 65_536,
        }
    }
}

/// The gate's verdict on one request.
#[derive(Debug)]
pub enum Decision {
    /// Handle it; hold the ticket until it is answered.
    Run(Ticket),
    /// Within budget but no slot is free: wait for one ([`Waiter::ticket`]).
    Wait(Waiter),
    /// Answer with this error and do nothing else.
    Refuse(Error),
    /// Drop it without a reply: the caller is past its limit.
    Silent,
    /// Drop it, close the caller's connection and refuse its key at
    /// connect for a while: the caller is far past its limits (the reason).
    Penalize(&'static str),
}

/// One caller's state.
#[derive(Debug, Clone)]
struct Entry {
    tokens: Bucket,
    /// A guest key's own (smaller) budget, kept apart so that a key that
    /// registers starts its life as a member with a member's budget.
    guest_tokens: Bucket,
    refusals: Bucket,
    abuse: Bucket,
    bytes: Bucket,
    /// Its in-flight slots and waiting requests.
    slots: CallerSlots,
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
    slots: Arc<Slots>,
}

/// The control-plane gate of one unibusd process.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
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
    guest_tokens: (f64, f64),
    refusals: (f64, f64),
    abuse: (f64, f64),
    bytes: (f64, f64),
}

impl Shapes {
    fn of(cfg: &CallerLimits) -> Shapes {
        let pair = |cap: u32, rate: u32| (f64::from(cap.max(1)), f64::from(rate));
        Shapes {
            tokens: pair(cfg.burst, cfg.rate),
            guest_tokens: pair(cfg.guest_burst, cfg.guest_rate),
            refusals: pair(cfg.refusal_burst, cfg.refusal_rate),
            abuse: pair(cfg.abuse_burst, cfg.abuse_per_sec),
            bytes: pair(cfg.bytes_burst, cfg.bytes_per_sec),
        }
    }

    fn fresh(&self, slots: &Slots, now: Instant) -> Entry {
        Entry {
            tokens: Bucket::full(self.tokens.0, now),
            guest_tokens: Bucket::full(self.guest_tokens.0, now),
            refusals: Bucket::full(self.refusals.0, now),
            abuse: Bucket::full(self.abuse.0, now),
            bytes: Bucket::full(self.bytes.0, now),
            slots: slots.caller(),
        }
    }

    /// True when `e` carries no information: every bucket full again and
    /// nothing in flight or waiting.
    fn idle(&self, cfg: &CallerLimits, e: &Entry, now: Instant) -> bool {
        let full = |b: &Bucket, (cap, rate): (f64, f64)| b.level(cap, rate, now) >= cap;
        e.slots.idle(cfg.per_caller_in_flight)
            && full(&e.tokens, self.tokens)
            && full(&e.guest_tokens, self.guest_tokens)
            && full(&e.refusals, self.refusals)
            && full(&e.abuse, self.abuse)
            && full(&e.bytes, self.bytes)
    }
}

impl Gate {
    /// A gate with full buckets and free slots.
    pub fn new(cfg: CallerLimits) -> Gate {
        let now = Instant::now();
        let slots = Arc::new(Slots::new(&cfg));
        let overflow = Bucket::full(f64::from(cfg.refusal_burst.max(1)), now);
        let table = Table { callers: HashMap::new(), next_sweep: now, overflow };
        Gate { inner: Arc::new(Inner { cfg, table: Mutex::new(table), slots }) }
    }

    /// Judges one request of `caller`, of `class`, whose body is `body`
    /// bytes in a message of `size` bytes (header block included).
    pub fn admit(&self, caller: &[u8; 32], class: Class, body: usize, size: usize) -> Decision {
        self.admit_at(caller, class, body, size, Instant::now())
    }

    /// Entries in the caller table.
    #[cfg(any(test, feature = "internals"))]
    pub fn tracked_callers(&self) -> usize {
        self.inner.lock().callers.len()
    }

    fn admit_at(&self, caller: &[u8; 32], class: Class, body: usize, size: usize, now: Instant) -> Decision {
        let cfg = &self.inner.cfg;
        let shapes = Shapes::of(cfg);
        let mut table = self.inner.lock();
        if !table.callers.contains_key(caller) && !self.make_room(&mut table, &shapes, now) {
            let (cap, rate) = shapes.refusals;
            let answered = table.overflow.take(1.0, cap, rate, now);
            return refusal(answered, "too many callers at once; retry later");
        }
        let entry = table.callers.entry(*caller).or_insert_with(|| shapes.fresh(&self.inner.slots, now));
        let (cap, rate) = shapes.bytes;
        // A message larger than the whole bucket can never fit: it is far
        // past the limit by itself.
        if !entry.bytes.take((size as f64).min(cap + 1.0), cap, rate, now) {
            return Decision::Penalize("control-plane bytes far past the limit");
        }
        let max_body = match class {
            Class::Guest => MAX_REQUEST_BYTES,
            Class::Member(cost) => cost.max_body(),
        };
        let decision = if body > max_body {
            let why = format!("request body of {body} bytes; at most {max_body}");
            let (cap, rate) = shapes.refusals;
            match entry.refusals.take(1.0, cap, rate, now) {
                true => Decision::Refuse(Error::BadRequest(why)),
                false => Decision::Silent,
            }
        } else {
            let cost = match class {
                Class::Guest => Cost::Read,
                Class::Member(cost) => cost,
            };
            self.slot(entry, class, cost, &shapes, now)
        };
        if !matches!(decision, Decision::Silent) {
            return decision;
        }
        let (cap, rate) = shapes.abuse;
        match entry.abuse.take(1.0, cap, rate, now) {
            true => decision,
            false => Decision::Penalize("requests far past the limit"),
        }
    }

    /// Budget, then a slot now, a place in the wait, or a refusal.
    fn slot(&self, entry: &mut Entry, class: Class, cost: Cost, shapes: &Shapes, now: Instant) -> Decision {
        let ((cap, rate), tokens) = match class {
            Class::Guest => (shapes.guest_tokens, &mut entry.guest_tokens),
            Class::Member(_) => (shapes.tokens, &mut entry.tokens),
        };
        let why = if !tokens.take(cost.units().min(cap), cap, rate, now) {
            "too many requests from this device; retry later"
        } else {
            match self.inner.slots.take(class, &entry.slots) {
                Taken::Now(ticket) => return Decision::Run(ticket),
                Taken::Wait(waiter) => return Decision::Wait(waiter),
                Taken::Full => "the service is busy; retry later",
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
            table.callers.retain(|_, e| !shapes.idle(cfg, e, now));
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
