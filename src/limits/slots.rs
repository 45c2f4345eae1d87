//! Slots for requests in flight, and the bounded wait for one. Each caller
//! has `per_caller_in_flight` slots of its own; each class of callers (a
//! lane: members, guests) has its slots in all, of which a caller that
//! already has a request in flight may take only a share (members: three
//! quarters), so a few busy callers cannot take them all from the rest.
//! A request that finds no free slot may wait for one, in order, for at
//! most [`WAIT_LIMIT`]; at most `per_caller_waiting` of one caller and
//! `max_waiting` in all wait at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use unibus_proto::error::Error;

use super::{CallerLimits, Class};

/// Longest a request within its budget waits for a free slot before it is
/// refused (`limit_reached`): well inside a client's request timeout.
pub const WAIT_LIMIT: Duration = Duration::from_secs(1);

/// The slots of one class of callers.
struct Lane {
    /// Every slot of the class.
    total: Arc<Semaphore>,
    /// The share a caller that already has a request in flight may take.
    busy: Arc<Semaphore>,
}

impl Lane {
    fn new(total: usize, busy: usize) -> Lane {
        Lane { total: Arc::new(Semaphore::new(total.max(1))), busy: Arc::new(Semaphore::new(busy.max(1))) }
    }
}

/// One caller's slots and its requests waiting for one.
#[derive(Debug, Clone)]
pub(super) struct CallerSlots {
    own: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
}

impl CallerSlots {
    /// Nothing in flight and nothing waiting.
    pub(super) fn idle(&self, per_caller: u32) -> bool {
        self.own.available_permits() == per_caller.max(1) as usize
            && self.waiting.load(Ordering::Acquire) == 0
    }
}

/// The slots of one unibusd process.
pub(super) struct Slots {
    members: Lane,
    guests: Lane,
    per_caller: u32,
    per_caller_waiting: u32,
    max_waiting: usize,
    waiting: AtomicUsize,
}

/// Held while an admitted request is handled; its slots go back on drop.
#[derive(Debug)]
pub struct Ticket {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// A request within its budget, waiting for a slot.
pub struct Waiter {
    slots: Arc<Slots>,
    class: Class,
    caller: CallerSlots,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("class", &self.class).finish_non_exhaustive()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::AcqRel);
        self.caller.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Waiter {
    /// Waits (at most [`WAIT_LIMIT`]) for the caller's slot and a slot of
    /// its lane, in order.
    ///
    /// # Errors
    /// `limit_reached` when none came in time.
    pub async fn ticket(self) -> Result<Ticket, Error> {
        let acquire = async {
            let mut permits = vec![self.caller.own.clone().acquire_owned().await.ok()?];
            let lane = self.slots.lane(self.class);
            if self.slots.others_in_flight(&self.caller) {
                permits.push(lane.busy.clone().acquire_owned().await.ok()?);
            }
            permits.push(lane.total.clone().acquire_owned().await.ok()?);
            Some(Ticket { _permits: permits })
        };
        match tokio::time::timeout(WAIT_LIMIT, acquire).await {
            Ok(Some(ticket)) => Ok(ticket),
            _ => Err(Error::LimitReached("the service is busy; retry later".into())),
        }
    }
}

/// What a request gets from [`Slots::take`].
pub(super) enum Taken {
    /// Its slots, now.
    Now(Ticket),
    /// A place in the wait.
    Wait(Waiter),
    /// Neither: the wait is full.
    Full,
}

impl Slots {
    /// The slots `cfg` says.
    pub(super) fn new(cfg: &CallerLimits) -> Slots {
        Slots {
            members: Lane::new(cfg.max_in_flight, cfg.max_in_flight * 3 / 4),
            guests: Lane::new(cfg.guest_in_flight, cfg.guest_in_flight),
            per_caller: cfg.per_caller_in_flight.max(1),
            per_caller_waiting: cfg.per_caller_waiting,
            max_waiting: cfg.max_waiting,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A new caller's own slots.
    pub(super) fn caller(&self) -> CallerSlots {
        CallerSlots { own: Arc::new(Semaphore::new(self.per_caller as usize)), waiting: Arc::default() }
    }

    /// Slots for one request of `caller`: now if all are free, else a place
    /// in the wait if one is left.
    pub(super) fn take(self: &Arc<Self>, class: Class, caller: &CallerSlots) -> Taken {
        if let Some(ticket) = self.try_now(class, caller) {
            return Taken::Now(ticket);
        }
        let mine = caller.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (w < self.per_caller_waiting).then_some(w + 1)
        });
        if mine.is_err() {
            return Taken::Full;
        }
        let all = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| (w < self.max_waiting).then_some(w + 1));
        if all.is_err() {
            caller.waiting.fetch_sub(1, Ordering::AcqRel);
            return Taken::Full;
        }
        Taken::Wait(Waiter { slots: self.clone(), class, caller: caller.clone() })
    }

    fn lane(&self, class: Class) -> &Lane {
        match class {
            Class::Guest => &self.guests,
            Class::Member(_) => &self.members,
        }
    }

    /// The caller's slot, then (when it has another request in flight)
    /// the lane's busy share, then the lane's, if all are free now.
    fn try_now(&self, class: Class, caller: &CallerSlots) -> Option<Ticket> {
        let mut permits = vec![caller.own.clone().try_acquire_owned().ok()?];
        let lane = self.lane(class);
        if self.others_in_flight(caller) {
            permits.push(lane.busy.clone().try_acquire_owned().ok()?);
        }
        permits.push(lane.total.clone().try_acquire_owned().ok()?);
        Some(Ticket { _permits: permits })
    }

    /// Whether a caller holding one of its slots has another request in
    /// flight.
    fn others_in_flight(&self, caller: &CallerSlots) -> bool {
        (caller.own.available_permits() as u32) + 1 < self.per_caller
    }
}
