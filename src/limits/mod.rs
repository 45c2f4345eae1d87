//! The bounds that keep one client from shutting others out
//! (docs/protocol.md section 2, "Load is hostile too"): every control-plane
//! request passes one [`Gate`] before it may cost anything beyond its
//! header, and is refused at once (never queued) when its caller is over
//! budget or the instance is full.
//!
//! - [`callers`]: per-caller budgets for known keys (members' devices):
//!   a token bucket of cost units per device, weighted by what an endpoint
//!   costs, a cap on one device's requests in flight, and the instance's
//!   cap on all members' requests in flight;
//! - [`guests`]: the limits on `unibus.register` (guests: unlimited fresh
//!   keys, one legitimate request each), judged once a registration is
//!   decoded;
//! - refusals are answered with `limit_reached` only while the caller (or,
//!   for guests, all guests together) has refusal budget left; beyond it a
//!   refused request gets no reply at all, so a flood cannot make unibusd
//!   publish at the flood's rate;
//! - [`penalties`]: a caller far past its limits (bytes, dropped requests,
//!   an oversized body) has its connection closed and its key refused at
//!   connect for a while: nats-server forwards whatever a client sends, so
//!   only closing the connection stops a flood at its source.

pub mod callers;
pub mod guests;
pub mod mail;
pub mod penalties;
pub mod slots;

use std::time::Instant;

pub use callers::{CallerLimits, Class, Cost, Decision, Gate};
pub use penalties::Penalties;
pub use slots::{Ticket, Waiter};

/// The largest control-plane request body accepted: every request of the
/// contract fits in a few hundred bytes (an invite link with its server
/// list is the longest). A larger body is refused before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The largest `unibus.mail.send` body accepted before it is parsed. The
/// server's `max_payload` (1 MB in nats.conf) bounds it first; once
/// decoded, the envelope is held to that `max_payload` less room for a
/// fetch reply's framing (docs/protocol.md section 10).
pub const MAX_MAIL_REQUEST_BYTES: usize = 8 << 20;
pub use guests::{GuestLimits, Limiter};

/// A token bucket: `tokens` at `at`, refilled at `rate` per second up to
/// `cap` (the caller keeps `cap` and `rate`, so an entry is two words).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(cap: f64, now: Instant) -> Bucket {
        Bucket { tokens: cap, at: now }
    }

    /// Tokens available at `now`.
    pub(crate) fn level(&self, cap: f64, rate: f64, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + secs * rate).min(cap)
    }

    /// Takes `n` tokens at `now` if there are that many.
    pub(crate) fn take(&mut self, n: f64, cap: f64, rate: f64, now: Instant) -> bool {
        let level = self.level(cap, rate, now);
        if level < n {
            return false;
        }
        *self = Bucket { tokens: level - n, at: now };
        true
    }
}
