//! The daily mail limit's counters in `UNIBUS_mail_quota` (docs/protocol.md
//! section 10, "Limits"): per account and UTC day, the envelope bytes
//! unibusd instances have taken for it. A counter only grows, by a CAS
//! that refuses to pass the cap, so the limit holds across instances and
//! restarts. Instances take bytes in leases ([`crate::limits::mail`]),
//! not per message, so most sends write no counter; bytes leased and not
//! spent (an instance that stops) are lost for the day: stricter, never
//! looser.

use serde::{Deserialize, Serialize};

use super::Store;
use super::cas::Change;
use super::table::TableKey;
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, Timestamp};
use unibus_proto::records::SCHEMA_VERSION;

/// How long a day's counter is kept (the bucket's `max_age`): the day and
/// the next, whatever the clocks.
pub const KEEP_DAYS: u64 = 2;

/// An account's counter for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DayKey {
    /// The sending account.
    pub account: Key,
    /// `yyyy-mm-dd` (UTC).
    pub day: String,
}

impl TableKey for DayKey {
    fn kv_key(&self) -> String {
        format!("{}.{}", self.account, self.day)
    }
}

/// A record in `UNIBUS_mail_quota`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBytes {
    /// Schema version.
    pub v: u32,
    /// The sending account.
    pub account: Key,
    /// `yyyy-mm-dd` (UTC).
    pub day: String,
    /// Envelope bytes taken for this day so far.
    pub bytes: u64,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Store {
    /// Takes at least `need` and at most `want` bytes of `key`'s day for
    /// its account, never passing `cap`; returns how many were taken.
    ///
    /// # Errors
    /// `limit_reached` when fewer than `need` are left (nothing written);
    /// `unavailable`.
    pub async fn take_mail_bytes(&self, key: &DayKey, need: u64, want: u64, cap: u64) -> Result<u64, Error> {
        let take = |current: Option<DayBytes>| {
            let used = current.as_ref().map_or(0, |c| c.bytes);
            let left = cap.saturating_sub(used);
            if left < need {
                return Err(Error::LimitReached(format!(
                    "an account stores at most {cap} bytes of messages per day"
                )));
            }
            let taken = want.max(need).min(left);
            let record = DayBytes {
                v: SCHEMA_VERSION,
                account: key.account,
                day: key.day.clone(),
                bytes: used + taken,
                updated_at: Timestamp::now(),
            };
            Ok(Change::Write(record, taken))
        };
        Ok(self.mail_quota.modify(key, take).await?.0)
    }
}
