//! Read-ahead for catching up: the entries of a channel that one read of
//! `UNIBUS_mail` returned beyond the page it was for, kept briefly for the
//! same device's next page of the same channel. A device walking a long
//! backlog so costs one direct get per [`READ_AHEAD`] entries instead of
//! one per page: each direct get with a wildcard filter costs nats-server
//! time in proportion to the channel's entries in the block it starts in
//! (one subject per message), whatever the batch.
//!
//! Only a cache: it holds copies of stored entries, filtered for one
//! device, never anything that is not in the bucket. Whoever asks is
//! checked as on every page before anything is read or taken from here;
//! a next page that goes to another instance, comes late or asks from
//! another position simply reads the bucket. Bounded: [`BUDGET`] bytes in
//! all, each batch at most the bytes of one read, kept [`KEEP`] at most.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use unibus_proto::ids::Key;
use unibus_proto::mail::MailChannel;

/// Entries one read of a channel asks for.
pub const READ_AHEAD: usize = 1024;
/// Bytes of read-ahead held at most, for every device together.
const BUDGET: usize = 64 << 20;
/// How long read-ahead waits for its next page.
const KEEP: Duration = Duration::from_secs(10);

/// What was read past one page: the entries sealed for the device after
/// `after`, in `seq` order, from a read that covered the channel up to
/// `scanned_to`.
#[derive(Debug)]
pub(crate) struct Ahead {
    /// The `after` of the page these continue (the previous page's last).
    pub after: u64,
    /// The last `seq` the read covered, sealed for the device or not.
    pub scanned_to: u64,
    /// `(seq, envelope)` sealed for the device, `seq > after`.
    pub entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
    at: Instant,
}

impl Ahead {
    /// Read-ahead continuing after `after`, covering up to `scanned_to`.
    pub(crate) fn new(after: u64, scanned_to: u64, entries: VecDeque<(u64, Bytes)>) -> Ahead {
        let bytes = entries.iter().map(|(_, b)| b.len()).sum();
        Ahead { after, scanned_to, entries, bytes, at: Instant::now() }
    }
}

/// The read-ahead of every (device, channel), bounded.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by: HashMap<(Key, MailChannel), Ahead>,
    bytes: usize,
}

impl ReadAhead {
    /// Takes what `device` has ahead in `channel` when it continues right
    /// after `after` and is not older than [`KEEP`]; anything else held for
    /// them is dropped.
    pub(crate) fn take(&self, device: Key, channel: &MailChannel, after: u64) -> Option<Ahead> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let ahead = held.by.remove(&(device, channel.clone()))?;
        held.bytes -= ahead.bytes;
        (ahead.after == after && ahead.at.elapsed() <= KEEP).then_some(ahead)
    }

    /// Keeps `ahead` for `device`'s next page of `channel`, making room
    /// within [`BUDGET`] by dropping what expired, then the oldest. Nothing
    /// is kept when `ahead` is empty or alone larger than the budget.
    pub(crate) fn keep(&self, device: Key, channel: &MailChannel, ahead: Ahead) {
        if ahead.entries.is_empty() || ahead.bytes > BUDGET {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = held.by.remove(&(device, channel.clone())) {
            held.bytes -= old.bytes;
        }
        if held.bytes + ahead.bytes > BUDGET {
            held.by.retain(|_, a| a.at.elapsed() <= KEEP);
            held.bytes = held.by.values().map(|a| a.bytes).sum();
        }
        while held.bytes + ahead.bytes > BUDGET {
            let Some(oldest) = held.by.iter().min_by_key(|(_, a)| a.at).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(old) = held.by.remove(&oldest) {
                held.bytes -= old.bytes;
            }
        }
        held.bytes += ahead.bytes;
        held.by.insert((device, channel.clone()), ahead);
    }

    /// Bytes held (for tests and metrics).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, n: u64, size: usize) -> VecDeque<(u64, Bytes)> {
        (from..from + n).map(|s| (s, Bytes::from(vec![b'x'; size]))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn taken_once_only_where_it_continues_and_only_while_young() {
        let (dev, other) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        let ch = MailChannel::dm(&Key::from_bytes([3; 32]));
        let ra = ReadAhead::default();
        ra.keep(dev, &ch, Ahead::new(10, 40, entries(11, 20, 10)));
        assert!(ra.take(other, &ch, 10).is_none(), "another device");
        assert!(ra.take(dev, &ch, 9).is_none(), "another position drops it");
        assert!(ra.take(dev, &ch, 10).is_none(), "dropped by the miss before");
        ra.keep(dev, &ch, Ahead::new(10, 40, entries(11, 20, 10)));
        let a = ra.take(dev, &ch, 10).expect("continues");
        assert_eq!((a.entries.len(), a.scanned_to), (20, 40));
        assert!(ra.take(dev, &ch, 10).is_none(), "taken once");
        ra.keep(dev, &ch, Ahead::new(10, 40, entries(11, 20, 10)));
        tokio::time::advance(KEEP + Duration::from_millis(1)).await;
        assert!(ra.take(dev, &ch, 10).is_none(), "too old");
        assert_eq!(ra.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_by_dropping_the_oldest() {
        let ch = MailChannel::dm(&Key::from_bytes([3; 32]));
        let ra = ReadAhead::default();
        let size = 1 << 20;
        for d in 0..80u8 {
            ra.keep(Key::from_bytes([d; 32]), &ch, Ahead::new(0, 4, entries(1, 1, size)));
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(ra.bytes() <= BUDGET);
        }
        assert_eq!(ra.bytes(), BUDGET);
        assert!(ra.take(Key::from_bytes([0; 32]), &ch, 0).is_none(), "oldest dropped");
        assert!(ra.take(Key::from_bytes([79; 32]), &ch, 0).is_some(), "newest kept");
        ra.keep(Key::from_bytes([1; 32]), &ch, Ahead::new(0, 4, entries(1, 1, BUDGET + 1)));
        assert!(ra.take(Key::from_bytes([1; 32]), &ch, 0).is_none(), "larger than the budget");
    }
}
