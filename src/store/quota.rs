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

/// A UTC day, `yyyy-mm-dd` in keys and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(time::Date);

impl Day {
    /// Today, UTC.
    pub fn today() -> Day {
        Day(time::OffsetDateTime::now_utc().date())
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        write!(f, "{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }
}

impl std::str::FromStr for Day {
    type Err = String;
    fn from_str(s: &str) -> Result<Day, String> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s, format).map(Day).map_err(|e| format!("day {s:?}: {e}"))
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An account's counter for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DayKey {
    /// The sending account.
    pub account: Key,
    /// `yyyy-mm-dd` (UTC).
    pub day: Day,
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
    pub day: Day,
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
                day: key.day,
                bytes: used + taken,
                updated_at: Timestamp::now(),
            };
            Ok(Change::Write(record, taken))
        };
        Ok(self.mail_quota.modify(key, take).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_reads_and_writes_as_an_iso_date() {
        let day: Day = "2026-12-07".parse().unwrap();
        assert_eq!(day.to_string(), "2026-12-07");
        assert_eq!(serde_json::to_string(&day).unwrap(), "\"2026-12-07\"");
        assert!("2026-13-01".parse::<Day>().is_err() && "26-1-1".parse::<Day>().is_err());
        assert_eq!(Day::today().to_string().len(), 10);
    }
}
