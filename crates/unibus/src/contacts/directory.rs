//! The client's directory of device sets: [`Client::device_set`] looks an
//! account up and checks and records its devices in the [`Contacts`];
//! recent answers are kept for [`DEVICES_MAX_AGE`] so that the inbox does
//! not look a sender up for every message, and looked up again when a
//! device it does not know signs (such forced lookups at most once per
//! second per account, so that a flood of forged devices costs one lookup
//! a second). The inbox forgets its own account's set on every device
//! notice, so a sibling device added a moment ago is never refused, and a
//! contact's set on every revoked notice naming it, so a device revoked a
//! moment ago is never trusted from the cache. A lookup reply about
//! another account than asked is refused before anything is recorded
//! ([`ClientError::WrongAccount`]), and a sender it cannot check is
//! rejected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use unibus_proto::e2e::Reject;
use unibus_proto::error::Error;

use super::{Contacts, DeviceChange, DeviceSet, Hold, ListNotice, judge};
use crate::{Client, ClientError};
use unibus_proto::devicelist::DeviceList;

/// Default time a looked-up device set is trusted when judging a received
/// message; see [`Client::set_devices_max_age`].
pub const DEVICES_MAX_AGE: Duration = Duration::from_secs(5);

/// An account is looked up again for an unknown device at most this often
/// (a flood of forged devices costs one lookup a second).
const REFRESH_MIN: Duration = Duration::from_secs(1);

/// What a client (and its clones) knows about device sets.
pub(crate) struct Directory {
    contacts: Contacts,
    recent: HashMap<String, (Instant, DeviceSet)>,
    /// When an unknown device last forced a lookup, per account.
    forced: HashMap<String, Instant>,
    max_age: Duration,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            contacts: Contacts::default(),
            recent: HashMap::new(),
            forced: HashMap::new(),
            max_age: DEVICES_MAX_AGE,
        }
    }
}

impl Client {
    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `account` up (`unibus.user.lookup` with the versions of its
    /// signed list after the one accepted), follows its list as far as the
    /// contract lets a client by itself (DESIGN section 11), checks every
    /// device's binding and key continuity, and records the set in this
    /// client's [`Contacts`] (queueing [`DeviceChange`]s). Only devices on
    /// the accepted list are in the set; a list it does not follow holds
    /// the set ([`DeviceSet::hold`]).
    ///
    /// # Errors
    /// [`ClientError::Service`] from the lookup (`not_found`,
    /// `bad_request`, `forbidden`), [`ClientError::Request`].
    pub async fn device_set(&self, account: &str) -> Result<DeviceSet, ClientError> {
        let since = self.directory().contacts.accepted(account).map_or(0, |l| l.version);
        let (user, history) = self.lookup_history(account, since).await?;
        let mut dir = self.directory();
        let set = dir.contacts.observe(&user, &history);
        dir.recent.insert(set.account.clone(), (Instant::now(), set.clone()));
        Ok(set)
    }

    /// Whether `device` may send as account `from` (docs/envelope.md,
    /// opening step 8), from a recent lookup or a new one.
    ///
    /// # Errors
    /// [`Reject::SenderDevice`] (not an active device of the active
    /// account, or no such account), [`Reject::SenderBinding`],
    /// [`Reject::SenderUnchecked`] when the lookup fails otherwise.
    pub(crate) async fn check_sender(&self, from: &str, device: &str) -> Result<(), Reject> {
        let recent = {
            let dir = self.directory();
            let max_age = dir.max_age;
            dir.recent.get(from).filter(|(at, _)| at.elapsed() < max_age).map(|(_, s)| s.clone())
        };
        if let Some(set) = recent {
            let Err(reason) = set.sender(device) else { return Ok(()) };
            // An unknown device forces a lookup, at most once a second per
            // account; a lookup made for another reason does not count.
            let mut dir = self.directory();
            if dir.forced.get(from).is_some_and(|at| at.elapsed() < REFRESH_MIN) {
                return Err(reason);
            }
            dir.forced.insert(from.to_string(), Instant::now());
        }
        match self.device_set(from).await {
            Ok(set) => set.sender(device),
            Err(ClientError::Service(Error::NotFound(_))) => Err(Reject::SenderDevice),
            Err(_) => Err(Reject::SenderUnchecked),
        }
    }

    /// Drops the recent device set of `account`, so that the next message
    /// from it is judged on a fresh lookup (the inbox calls it for its own
    /// account on every device notice, and for the account a revoked
    /// notice names).
    pub(crate) fn forget_device_set(&self, account: &str) {
        self.directory().recent.remove(&account.to_ascii_lowercase());
    }

    /// A copy of the device sets this client has seen, per account (to
    /// show, or to [`Contacts::save`]).
    pub fn contacts(&self) -> Contacts {
        self.directory().contacts.clone()
    }

    /// Replaces the device sets this client knows (for example with
    /// [`Contacts::load`] of the file next to the identity), so that
    /// changes since the last run are reported and a changed `kex_pub` is
    /// refused.
    pub fn set_contacts(&self, contacts: Contacts) {
        let mut dir = self.directory();
        dir.contacts = contacts;
        dir.recent.clear();
    }

    /// The device changes seen since the last call (a contact gained or
    /// lost a device, a recovery device, an unbound device).
    pub fn take_device_changes(&self) -> Vec<DeviceChange> {
        self.directory().contacts.take_changes()
    }

    /// Sets how long a looked-up device set is trusted when judging a
    /// received message (default [`DEVICES_MAX_AGE`]; zero looks the
    /// sender up for every message). Applies to every clone.
    pub fn set_devices_max_age(&self, age: Duration) {
        self.directory().max_age = age;
    }

    /// What this client knows of `account`'s signed device list: the
    /// version accepted before, the versions since (from version 1 when
    /// none was), who signed each, and whether it would follow them by
    /// itself. Changes nothing.
    ///
    /// # Errors
    /// As [`Client::device_set`].
    pub async fn device_list_report(&self, account: &str) -> Result<ListReport, ClientError> {
        let accepted = self.directory().contacts.accepted(account).cloned();
        let since = accepted.as_ref().map_or(0, |l| l.version);
        let (user, steps) = self.lookup_history(account, since).await?;
        let verdict =
            user.device_list.as_ref().map(|current| judge(account, accepted.as_ref(), &steps, current));
        let (notices, hold) = verdict.map_or((Vec::new(), None), |v| (v.notices, v.hold));
        Ok(ListReport {
            account: user.sign_pub.to_hex(),
            accepted,
            current: user.device_list,
            steps,
            notices,
            hold,
        })
    }

    /// Accepts `account`'s current signed list (the user verified it, for
    /// example after a recovery): from now on its devices are sealed to.
    /// The list must verify and be that account's.
    ///
    /// # Errors
    /// As [`Client::device_set`]; [`ClientError::NoDeviceList`] when the
    /// account has none; [`ClientError::BadDeviceList`] when it does not
    /// verify.
    pub async fn accept_device_list(&self, account: &str) -> Result<ListReport, ClientError> {
        let report = self.device_list_report(account).await?;
        let current = report.current.clone().ok_or_else(|| ClientError::NoDeviceList(account.into()))?;
        current
            .check()
            .map_err(|e| ClientError::BadDeviceList { account: account.into(), why: e.to_string() })?;
        if !current.account.eq_ignore_ascii_case(account) {
            return Err(ClientError::WrongAccount { asked: account.into(), got: current.account });
        }
        let mut dir = self.directory();
        dir.contacts.accept(current);
        dir.recent.remove(&account.to_ascii_lowercase());
        Ok(report)
    }
}

/// A contact's signed device list as [`Client::device_list_report`] shows
/// it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListReport {
    /// The account.
    pub account: String,
    /// The version this client accepted before.
    pub accepted: Option<DeviceList>,
    /// The version the service shows.
    pub current: Option<DeviceList>,
    /// The versions after the accepted one (from version 1 when none
    /// was), oldest first.
    pub steps: Vec<DeviceList>,
    /// What the client would tell on following them.
    pub notices: Vec<ListNotice>,
    /// Why it would not follow them by itself.
    pub hold: Option<Hold>,
}
