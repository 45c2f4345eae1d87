//! The limits on storing messages (docs/protocol.md section 10, "Limits"),
//! per sending account: a rate (messages per second with a burst, per
//! unibusd instance, like every rate of [`super`]) and a daily byte cap
//! held in KV, so that it survives restarts and holds across instances.
//!
//! The daily cap is taken from the store in leases: an instance takes up
//! to [`LEASE_BYTES`] of an account's day at once (one CAS on its
//! counter, [`crate::store::Store::take_mail_bytes`]) and spends it on
//! the sends it handles, so most sends write no counter. One refill per
//! account at a time: concurrent sends that find the lease empty wait for
//! the refill under way and spend from it, so that a burst does not take
//! a lease per send (which would take the whole day into one instance
//! and refuse sends while it holds unspent bytes). Bytes a lease did not
//! spend are lost when the day ends or the instance stops: stricter,
//! never looser. A send refused or stored before (a retry)
//! gives its bytes back to the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Bucket;
use crate::store::{Day, DayKey, Store};
use unibus_proto::error::Error;
use unibus_proto::ids::Key;

/// Bytes one lease takes from an account's day at most.
pub const LEASE_BYTES: u64 = 1 << 20;

/// Accounts tracked at most by each table before idle entries are dropped.
const MAX_TRACKED: usize = 65_536;

/// The settings (defaults: docs/protocol.md section 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLimits {
    /// Messages per second one account may store.
    pub rate: u32,
    /// ... beyond this many at once.
    pub burst: u32,
    /// Envelope bytes one account may store per UTC day.
    pub daily_bytes: u64,
}

impl Default for MailLimits {
    fn default() -> Self {
        MailLimits { rate: 20, burst: 200, daily_bytes: 16 << 20 }
    }
}

/// An instance's leases on accounts' days.
#[derive(Debug, Clone)]
struct Lease {
    day: Day,
    left: u64,
}

/// The mail limits of one unibusd process.
pub struct MailGate {
    cfg: MailLimits,
    rates: Mutex<HashMap<Key, Bucket>>,
    leases: Mutex<HashMap<Key, Lease>>,
    /// Per account, held while its lease is refilled from the store.
    refills: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Bytes a send took from its account's day, given back with
/// [`MailGate::give_back`] when it stores nothing new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    account: Key,
    day: Day,
    bytes: u64,
}

impl MailGate {
    /// A gate with these settings.
    pub fn new(cfg: MailLimits) -> MailGate {
        MailGate { cfg, rates: Mutex::default(), leases: Mutex::default(), refills: Mutex::default() }
    }

    /// Takes one message of `account`'s rate.
    ///
    /// # Errors
    /// `limit_reached` past the rate.
    pub fn admit(&self, account: Key) -> Result<(), Error> {
        let (cap, rate) = (f64::from(self.cfg.burst), f64::from(self.cfg.rate));
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if rates.len() >= MAX_TRACKED && !rates.contains_key(&account) {
            rates.retain(|_, b| b.level(cap, rate, now) < cap);
        }
        let bucket = rates.entry(account).or_insert_with(|| Bucket::full(cap, now));
        match bucket.take(1.0, cap, rate, now) {
            true => Ok(()),
            false => Err(Error::LimitReached(format!(
                "an account stores at most {} messages per second (burst {})",
                self.cfg.rate, self.cfg.burst
            ))),
        }
    }

    /// Spends `bytes` of `account`'s day (today, UTC), from this
    /// instance's lease or a new one.
    ///
    /// # Errors
    /// `limit_reached` past the daily cap; `unavailable` (fail closed).
    pub async fn spend(&self, store: &Store, account: Key, bytes: u64) -> Result<Spent, Error> {
        let day = Day::today();
        if let Some(spent) = self.spend_leased(account, day, bytes) {
            return Ok(spent);
        }
        let refill = {
            let mut refills = self.refills.lock().unwrap_or_else(|e| e.into_inner());
            if refills.len() >= MAX_TRACKED && !refills.contains_key(&account) {
                refills.retain(|_, r| Arc::strong_count(r) > 1);
            }
            refills.entry(account).or_default().clone()
        };
        let _refilling = refill.lock().await;
        // A refill that landed while this send waited may cover it.
        if let Some(spent) = self.spend_leased(account, day, bytes) {
            return Ok(spent);
        }
        let key = DayKey { account, day };
        let taken = store.take_mail_bytes(&key, bytes, LEASE_BYTES, self.cfg.daily_bytes).await?;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.len() >= MAX_TRACKED && !leases.contains_key(&account) {
            leases.retain(|_, l| l.day == day && l.left > 0);
        }
        let lease = leases.entry(account).or_insert(Lease { day, left: 0 });
        if lease.day != day {
            *lease = Lease { day, left: 0 };
        }
        lease.left += taken - bytes;
        Ok(Spent { account, day, bytes })
    }

    /// Gives bytes a send spent back to the lease (it stored nothing new).
    pub fn give_back(&self, spent: Spent) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lease) = leases.get_mut(&spent.account)
            && lease.day == spent.day
        {
            lease.left += spent.bytes;
        }
    }

    fn spend_leased(&self, account: Key, day: Day, bytes: u64) -> Option<Spent> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let lease = leases.get_mut(&account).filter(|l| l.day == day && l.left >= bytes)?;
        lease.left -= bytes;
        Some(Spent { account, day, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_the_burst_then_refuses() {
        let gate = MailGate::new(MailLimits { rate: 1, burst: 3, daily_bytes: 1 });
        let (a, b) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        for _ in 0..3 {
            gate.admit(a).unwrap();
        }
        assert_eq!(gate.admit(a).unwrap_err().code(), "limit_reached");
        gate.admit(b).expect("another account has its own rate");
    }
}
