//! Signed device lists (DESIGN section 11, docs/protocol.md section 11):
//! the rules a new version must meet against the account record it would
//! be written over ([`ListChange::judge`]), and the history bucket
//! `UNIBUS_devicelists` that keeps every version while the account exists.
//!
//! The current list lives in the account record and changes with the
//! device set in the same compare-and-swap; the history is written after
//! it. Before a change replaces a version, that version is made sure to be
//! in the history ([`Store::keep_list`]), and a lookup keeps the current
//! one, so a crash between the two writes loses no version: every version
//! below the account record's is in the bucket.

use unibus_proto::devicelist::{By, Change, DeviceList};
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::records::{MAX_DEVICES_PER_ACCOUNT, User};
use unibus_proto::subjects::device_list_key;
use unibus_proto::wire::LOOKUP_LISTS_MAX;

use super::table::TableKey;
use super::{KvError, Store};

/// One version of one account's list in the history bucket.
pub(crate) struct ListKey {
    account: Key,
    version: u64,
}

impl TableKey for ListKey {
    fn kv_key(&self) -> String {
        device_list_key(&self.account.to_hex(), self.version)
    }
}

/// What a device change must do to the account's list: the version the
/// caller signed, who signs for whom, and the one device it adds or
/// removes.
#[derive(Debug, Clone)]
pub struct ListChange {
    /// The signed next version, as the request carried it.
    pub list: DeviceList,
    /// The calling device: the only key that may sign it.
    pub caller: Key,
    /// `by: "device"` for a device of the account, `by: "admin"` for an
    /// admin acting on another account.
    pub by: By,
    /// The device added (its bundle as the request named it) or removed.
    pub change: Change,
}

/// The refusal for a device of an account that has no list yet.
pub fn no_list_yet() -> Error {
    Error::bad(
        "device_list: this account has no signed device list yet; its oldest active device signs one first \
         (unibus.device.sign)",
    )
}

/// The list a revoke carries: a change, or none, which only an admin may
/// send and only for an account that has no list yet.
#[derive(Debug, Clone)]
pub enum Listing {
    /// The next version.
    Change(Box<ListChange>),
    /// No list carried; `admin`: the caller acts as an admin on another
    /// account.
    Missing {
        /// The caller is an admin acting on another account.
        admin: bool,
    },
}

impl Listing {
    /// Judges the list (or its absence) against `user`, the record it
    /// would be written over.
    ///
    /// # Errors
    /// As [`ListChange::judge`]; `bad_request` for a missing list where
    /// one is required.
    pub fn judge(&self, user: &User) -> Result<(), Error> {
        match self {
            Listing::Change(change) => change.judge(user),
            Listing::Missing { .. } if user.device_list.is_some() => {
                Err(Error::bad("device_list: required: the next version of the account's list"))
            }
            Listing::Missing { admin: true } => Ok(()),
            Listing::Missing { admin: false } => Err(no_list_yet()),
        }
    }
}

impl ListChange {
    /// Judges the new version against `user`, the account record it would
    /// be written over (docs/protocol.md section 11, "Who signs what"):
    /// signed by the calling device with the right `by`, a signer on the
    /// current list (for `by: "device"`), the next version of the current
    /// list, exactly the one device changed, and a signature that
    /// verifies. For a recovery of an account that has no list, version 1
    /// signed by the admin's device holding the new device alone.
    ///
    /// # Errors
    /// `bad_request` (section 11's list rules, or an account without a
    /// list), `stale_devices` (built on a version since replaced).
    pub fn judge(&self, user: &User) -> Result<(), Error> {
        let list = &self.list;
        if list.account != user.sign_pub.to_hex() {
            return Err(Error::bad("device_list: account is not the account changed"));
        }
        if list.signer != self.caller.to_hex() {
            return Err(Error::bad("device_list: not signed by the calling device"));
        }
        if list.by != self.by {
            let want = match self.by {
                By::Device => "device",
                By::Admin => "admin",
            };
            return Err(Error::bad(format!("device_list: by must be \"{want}\" for this change")));
        }
        let Some(current) = &user.device_list else {
            return self.judge_first(user);
        };
        if self.by == By::Device && !(current.lists(&list.signer) && user.has_active_device(self.caller)) {
            return Err(Error::bad(
                "device_list: the signer is not an active device on the account's current list",
            ));
        }
        if list.version <= current.version {
            return Err(Error::StaleDevices(format!(
                "device_list: version {} was built on a replaced list; the current version is {}: fetch it and \
                 sign again",
                list.version, current.version
            )));
        }
        if list.version > current.version.saturating_add(1) {
            return Err(Error::bad(format!(
                "device_list: version {} skips versions; the next is {}",
                list.version,
                current.version + 1
            )));
        }
        if list.devices.len() > MAX_DEVICES_PER_ACCOUNT {
            // One more than the cap: the cap's refusal, not the list's.
            return Err(Error::LimitReached(format!(
                "an account has at most {MAX_DEVICES_PER_ACCOUNT} active devices"
            )));
        }
        list.check()?;
        let step = list.step_from(current)?;
        if step.change != self.change {
            return Err(Error::bad(
                "device_list: the list does not change exactly the device this request changes",
            ));
        }
        Ok(())
    }

    /// A recovery (`by: "admin"`, one device added) of an account that has
    /// no list: version 1 holding the new device alone. Anything else needs
    /// the list first.
    fn judge_first(&self, user: &User) -> Result<(), Error> {
        let Change::Added(added) = &self.change else {
            if self.by == By::Admin {
                return Err(Error::bad(
                    "device_list: this account has no list yet: an admin's revoke carries none",
                ));
            }
            return Err(no_list_yet());
        };
        if self.by != By::Admin || user.active_devices().next().is_some() {
            return Err(no_list_yet());
        }
        let list = &self.list;
        if list.version != 1 || list.devices.len() != 1 || &list.devices[0] != added {
            return Err(Error::bad(
                "device_list: this account has no list yet: a recovery carries version 1 with the new device alone",
            ));
        }
        list.check()?;
        Ok(())
    }
}

/// Judges the version 1 that `unibus.device.sign` carries for `user`, an
/// account without a list: its active devices in `seq` order, signed
/// `by: "device"` by the calling device, which must be its oldest active
/// device.
///
/// # Errors
/// `bad_request`.
pub fn judge_signed_first(user: &User, caller: Key, list: &DeviceList) -> Result<(), Error> {
    let oldest = user.active_devices().min_by_key(|d| d.seq).map(|d| d.device);
    if oldest != Some(caller) {
        return Err(Error::bad("device_list: only the account's oldest active device signs its first list"));
    }
    if list.account != user.sign_pub.to_hex() || list.signer != caller.to_hex() || list.by != By::Device {
        return Err(Error::bad(
            "device_list: version 1 of this account, signed by the calling device, by \"device\"",
        ));
    }
    if list.version != 1 {
        return Err(Error::bad("device_list: the first list is version 1"));
    }
    if list.devices != user.listed_devices() {
        return Err(Error::bad("device_list: devices must be the account's active devices, in seq order"));
    }
    list.check()?;
    Ok(())
}

impl Store {
    /// Makes sure `list` is in the history bucket: created when missing;
    /// a different value at its key (left by a deleted account of the same
    /// key) is replaced by a CAS, since the account record is the
    /// authority.
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn keep_list(&self, list: &DeviceList) -> Result<(), Error> {
        let Ok(account) = Key::parse(&list.account) else {
            return Err(Error::Internal("a stored device list names no account".into()));
        };
        let key = ListKey { account, version: list.version };
        for _ in 0..super::cas::MAX_CAS_ATTEMPTS {
            match self.device_lists.create(&key, list).await {
                Ok(_) => return Ok(()),
                Err(KvError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            let held = match self.device_lists.get(&key).await {
                Ok(held) => held,
                // Not a list: replaced like any other wrong value.
                Err(KvError::Corrupt { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            match held {
                Some((held, _)) if &held == list => return Ok(()),
                Some((_, revision)) => match self.device_lists.update(&key, list, revision).await {
                    Ok(_) => return Ok(()),
                    Err(KvError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                },
                // Deleted meanwhile (or undecodable): create again.
                None => {}
            }
        }
        Err(super::cas::contention())
    }

    /// Keeps a version just written to the account record; a failure is
    /// logged and repaired later (before the next change replaces it, or
    /// by the next lookup of the history), so the change still stands.
    pub(crate) async fn keep_written_list(&self, list: &DeviceList) {
        if let Err(e) = self.keep_list(list).await {
            tracing::warn!(account = %list.account, version = list.version, error = %e,
                "device list written to the account but not yet to the history; kept before the next change");
        }
    }

    /// Drops `list` from the history when it is still the value at its key
    /// (a revoke taken back).
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn drop_list(&self, list: &DeviceList) -> Result<(), Error> {
        let account = Key::parse(&list.account)
            .map_err(|_| Error::Internal("a stored device list names no account".into()))?;
        let key = ListKey { account, version: list.version };
        if let Some((held, revision)) = self.device_lists.get(&key).await? {
            match self.device_lists.delete(&key, revision).await {
                Ok(()) | Err(KvError::Conflict) => {}
                Err(e) if held == *list => return Err(e.into()),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Stores version 1 of the list of `account`, an account made before
    /// lists, signed by its oldest active device `caller`
    /// (`unibus.device.sign`); the same list sent again is answered as
    /// stored.
    ///
    /// # Errors
    /// `not_found`, `bad_request` (see [`judge_signed_first`], or the
    /// account has a list already), `unavailable`.
    pub async fn sign_first_list(
        &self,
        account: Key,
        caller: Key,
        list: &DeviceList,
    ) -> Result<DeviceList, Error> {
        let sign = |current: Option<User>| {
            let mut user = current.ok_or_else(|| Error::NotFound("no such account".into()))?;
            match &user.device_list {
                Some(held) if held == list => return Ok(super::cas::Change::Keep(held.clone())),
                Some(_) => return Err(Error::bad("device_list: this account has a signed list already")),
                None => {}
            }
            judge_signed_first(&user, caller, list)?;
            user.device_list = Some(list.clone());
            user.updated_at = unibus_proto::ids::Timestamp::now();
            Ok(super::cas::Change::Write(user, list.clone()))
        };
        let (stored, _) = self.users.modify(&account, sign).await?;
        self.keep_written_list(&stored).await;
        Ok(stored)
    }

    /// The versions of `current`'s account after `since`, oldest first, at
    /// most [`LOOKUP_LISTS_MAX`] of them (the caller asks again from the
    /// last one). `current` (the account record's) is kept first, so the
    /// answer reaches it even right after a crash.
    ///
    /// # Errors
    /// `unavailable`; `internal` for a stored version that does not decode.
    pub async fn device_lists_since(
        &self,
        current: &DeviceList,
        since: u64,
    ) -> Result<Vec<DeviceList>, Error> {
        if since >= current.version {
            return Ok(Vec::new());
        }
        self.keep_list(current).await?;
        let account = Key::parse(&current.account)
            .map_err(|_| Error::Internal("a stored device list names no account".into()))?;
        let last = current.version.min(since.saturating_add(LOOKUP_LISTS_MAX as u64));
        let keys = (since + 1..=last).map(|version| ListKey { account, version });
        let found = self.device_lists.get_many(keys).await?;
        // Only the account's own versions, in order; a missing one shows
        // as a gap, which a client's check of the steps refuses.
        Ok(found.into_iter().map(|(l, _)| l).filter(|l| l.account == current.account).collect())
    }

    /// Removes every version of `account`'s list (the account is deleted).
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn delete_device_lists(&self, account: Key) -> Result<(), Error> {
        self.device_lists.bucket().purge_prefix(&format!("{account}.")).await
    }
}

#[cfg(test)]
mod tests;
