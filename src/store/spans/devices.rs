//! Device add and revoke (docs/protocol.md section 8), across the account
//! record in `UNIBUS_users` and the device records in `UNIBUS_devices`.
//!
//! The account record is the authority: it holds the device set and the
//! `seq` counter and changes only by CAS, so the cap of 8, the last-device
//! rule and concurrent adds and revokes are judged on the record actually
//! written over. An add first claims the key's device record (see
//! [`Store::claim_device_key`]), then lists the device in the account, then
//! writes the final device record; an add refused by the account frees the
//! claim it made. A revoke marks the device in the account, then copies it
//! to the device record; [`Store::undo_revoke`] takes exactly that revoke
//! back when a check after the write fails.

use crate::store::Store;
use crate::store::cas::Change;
use crate::store::devicelists::{ListChange, Listing};
use crate::store::devices::unlisted_claim;
use unibus_proto::devicelist::DeviceList;
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, Key, Timestamp};
use unibus_proto::records::{Device, DeviceStatus, MAX_DEVICES_EVER, MAX_DEVICES_PER_ACCOUNT, User};

impl Store {
    /// Adds `new` to its account (docs/protocol.md section 8, "Adding"):
    /// claims the key, then lists it in the account with a CAS that applies
    /// `rule` (who may add; recovery only while none is active), the cap
    /// and `seq`, then writes the final device record. Adding a key the
    /// account already lists (a retry of a completed add included) is
    /// `user_exists`, after making its record whole.
    ///
    /// # Errors
    /// `user_exists` (the key is an account, this one included, or a device
    /// elsewhere, or a device this account has or had), `not_found` (no
    /// account), `limit_reached` (8 active), `rule`'s error, `unavailable`.
    pub async fn add_device<F>(&self, new: Device, rule: F, list: &ListChange) -> Result<Device, Error>
    where
        F: Fn(&User) -> Result<(), Error>,
    {
        // The three reads at once; judged in this order.
        let (as_account, as_device, current) = tokio::try_join!(
            self.get_user(new.device),
            self.get_device(new.device),
            self.get_user(new.account)
        )?;
        // The account's own key too: it was the first device, so it is
        // listed, or revoked (perhaps scrolled off the account record).
        if as_account.is_some() {
            return Err(Error::UserExists);
        }
        // A device this account has had (revoked, perhaps no longer listed
        // by the account record) is taken for good, whatever the account
        // looks like now: `user_exists` before the cap is judged.
        if let Some((held, _)) = as_device {
            let ours_once = held.account == new.account && !unlisted_claim(&held);
            if held.status == DeviceStatus::Revoked || ours_once {
                return Err(Error::UserExists);
            }
        }
        // Judged once before anything is written, so that a refused add
        // (the cap, a rule) changes nothing in KV; judged again in the CAS.
        let current = current.map(|(u, _)| u);
        let replaced = current.as_ref().and_then(|u| u.device_list.clone());
        if let Err(e) = list_device(current, &new, &rule, list) {
            // A record an earlier, cut-off add of this key left behind is
            // freed (reads only when there is none).
            self.release_unlisted(&new).await?;
            return Err(e);
        }
        // The version about to be replaced is in the history before it is.
        let keep = async {
            match &replaced {
                Some(old) => self.keep_list(old).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(keep, self.claim_device_key(&new))?;
        let add = |current: Option<User>| list_device(current, &new, &rule, list);
        let (listed, _) = match self.users.modify(&new.account, add).await {
            Ok(done) => done,
            Err(e) => {
                // Refused: free the key again, unless the account lists it
                // (then it stays theirs, and its record is made whole: a
                // crash may have cut the add before the last write).
                self.release_unlisted(&new).await?;
                return Err(e);
            }
        };
        if !self.write_device_record(&listed).await? {
            // A refused add of the same key freed its record meanwhile and
            // another account claimed it: the key is theirs, take ours back.
            self.unlist_device(&listed).await?;
            return Err(Error::UserExists);
        }
        self.keep_written_list(&list.list).await;
        Ok(listed)
    }

    /// Removes `listed` from its account's device set (CAS), when the
    /// account still lists that very device.
    async fn unlist_device(&self, listed: &Device) -> Result<(), Error> {
        let unlist = |current: Option<User>| {
            let change = match current {
                Some(mut user) if user.device(listed.device).is_some_and(|d| d.seq == listed.seq) => {
                    user.devices.retain(|d| d.device != listed.device);
                    user.refresh_account_keys();
                    Change::Write(user, ())
                }
                _ => Change::Keep(()),
            };
            Ok(change)
        };
        self.users.modify(&listed.account, unlist).await.map(|_| ())
    }

    /// Removes the device record of `new` when it is a claim of its
    /// account that the account does not list (an add that was refused);
    /// when the account lists it, makes the record equal to the account's
    /// copy. A record listed once (revoked, scrolled off the account) stays.
    async fn release_unlisted(&self, new: &Device) -> Result<(), Error> {
        let user = self.get_user(new.account).await?.map(|(u, _)| u);
        if let Some(listed) = user.as_ref().and_then(|u| u.device(new.device)) {
            return self.write_device_record(listed).await.map(|_| ());
        }
        self.drop_device_record(new.device, |d| d.account == new.account && unlisted_claim(d)).await
    }

    /// Revokes device `key` of `account` with a CAS on the account that
    /// applies `rule` (the caller's standing, seniority, last device, last
    /// admin) and then `list`'s rules (docs/protocol.md section 11) to the
    /// record written over, and replaces the account's list with `list`'s
    /// version in the same write; revoking a revoked device changes
    /// nothing. Then writes the device record and keeps the new version in
    /// the history.
    ///
    /// # Errors
    /// `not_found` (no such account or device in it), `rule`'s error, the
    /// list's (`bad_request`, `stale_devices`), `unavailable`.
    pub async fn revoke_device<F>(
        &self,
        account: Key,
        key: Key,
        by: Actor,
        rule: F,
        list: &Listing,
    ) -> Result<Revoked, Error>
    where
        F: Fn(&User, &Device) -> Result<(), Error>,
    {
        // The version about to be replaced is in the history before it is.
        if let Some((User { device_list: Some(old), .. }, _)) = self.get_user(account).await? {
            self.keep_list(&old).await?;
        }
        let revoke = |current: Option<User>| revoke_in(current, key, by, &rule, list);
        let ((device, swap), revision) = self.users.modify(&account, revoke).await?;
        let Wrote::Lists(swap) = swap else {
            // Revoked already: nothing written.
            self.write_device_record(&device).await?;
            return Ok(Revoked { device, revision: None, lists: None });
        };
        if let Some(lists) = &swap {
            self.keep_written_list(&lists.written).await;
        }
        // The account's copy is the authority; a record that names another
        // account is left alone.
        self.write_device_record(&device).await?;
        Ok(Revoked { device, revision, lists: swap })
    }

    /// Takes back the revoke `revoked`, when a check after the write found
    /// it wrong (the caller had lost its standing, or no active admin is
    /// left with an active device): the device is active again and the
    /// list it replaced is the account's list again (the version it wrote
    /// is dropped from the history; a contact that saw it sees the next
    /// version differ and is asked to verify again). Only that very
    /// revocation is taken back; a device revoked otherwise, no longer
    /// listed, or a list changed since, stays as it is.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn undo_revoke(&self, revoked: &Revoked) -> Result<(), Error> {
        let key = revoked.device.device;
        let written = revoked.lists.as_ref().map(|l| &l.written);
        let undo = |current: Option<User>| {
            Ok(match current {
                Some(mut user)
                    if user.device(key) == Some(&revoked.device) && user.device_list.as_ref() == written =>
                {
                    for d in user.devices.iter_mut().filter(|d| d.device == key) {
                        d.status = DeviceStatus::Active;
                        (d.revoked_at, d.revoked_by) = (None, None);
                    }
                    if let Some(lists) = &revoked.lists {
                        user.device_list = Some(lists.replaced.clone());
                    }
                    user.refresh_account_keys();
                    let device = user.device(key).cloned();
                    Change::Write(user, device)
                }
                _ => Change::Keep(None),
            })
        };
        if let (Some(device), _) = self.users.modify(&revoked.device.account, undo).await? {
            self.write_device_record(&device).await?;
            if let Some(lists) = &revoked.lists {
                self.drop_list(&lists.written).await?;
            }
        }
        Ok(())
    }
}

/// A revoke as written: the device as revoked, the revision of
/// `UNIBUS_users` that revoked it (`None` when it was revoked already:
/// nothing written), and the lists it swapped.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The device as the account lists it now.
    pub device: Device,
    /// The revision that revoked it; `None` when nothing was written.
    pub revision: Option<u64>,
    /// The version written and the one it replaced (none for an admin's
    /// revoke in an account without a list).
    pub(crate) lists: Option<Box<ListSwap>>,
}

/// What a revoke's CAS wrote.
enum Wrote {
    /// Nothing: the device was revoked already.
    Nothing,
    /// The revoke, and the lists it swapped (none for an admin's revoke
    /// in an account without a list).
    Lists(Option<Box<ListSwap>>),
}

/// The account's list before and after a change.
#[derive(Debug, Clone)]
pub(crate) struct ListSwap {
    /// The version the change wrote.
    pub(crate) written: DeviceList,
    /// The version it replaced.
    pub(crate) replaced: DeviceList,
}

/// The account after listing `new` in it, or why not.
fn list_device<F>(
    current: Option<User>,
    new: &Device,
    rule: &F,
    list: &ListChange,
) -> Result<Change<User, Device>, Error>
where
    F: Fn(&User) -> Result<(), Error>,
{
    let mut user = current.ok_or_else(|| Error::NotFound("no such account".into()))?;
    if user.device(new.device).is_some() {
        // Already a device of this account (a retry of a completed add
        // included): the key is taken.
        return Err(Error::UserExists);
    }
    rule(&user)?;
    list.judge(&user)?;
    if user.active_devices().count() >= MAX_DEVICES_PER_ACCOUNT {
        return Err(Error::LimitReached(format!(
            "an account has at most {MAX_DEVICES_PER_ACCOUNT} active devices"
        )));
    }
    if user.device_seq >= MAX_DEVICES_EVER {
        return Err(Error::LimitReached(format!(
            "an account adds at most {MAX_DEVICES_EVER} devices in all"
        )));
    }
    let mut device = new.clone();
    user.device_seq += 1;
    device.seq = user.device_seq;
    device.added_at = Timestamp::now();
    user.devices.push(device.clone());
    user.device_list = Some(list.list.clone());
    user.refresh_account_keys();
    user.trim_revoked();
    user.updated_at = device.added_at;
    Ok(Change::Write(user, device))
}

/// The account after revoking `key` in it, or why not; with the device
/// as revoked and the lists swapped (`None` when it was revoked already:
/// nothing to write).
fn revoke_in<F>(
    current: Option<User>,
    key: Key,
    by: Actor,
    rule: &F,
    list: &Listing,
) -> Result<Change<User, (Device, Wrote)>, Error>
where
    F: Fn(&User, &Device) -> Result<(), Error>,
{
    let mut user = current.ok_or_else(|| Error::NotFound("no such account".into()))?;
    let target = user.device(key).cloned().ok_or_else(|| Error::NotFound("no such device".into()))?;
    if target.status == DeviceStatus::Revoked {
        return Ok(Change::Keep((target, Wrote::Nothing)));
    }
    rule(&user, &target)?;
    list.judge(&user)?;
    let t = Timestamp::now();
    let mut revoked = target;
    revoked.status = DeviceStatus::Revoked;
    revoked.revoked_at = Some(t);
    revoked.revoked_by = Some(by);
    for d in user.devices.iter_mut().filter(|d| d.device == key) {
        *d = revoked.clone();
    }
    let swap = match (list, user.device_list.take()) {
        (Listing::Change(change), Some(replaced)) => {
            Some(Box::new(ListSwap { written: change.list.clone(), replaced }))
        }
        // Judged above: no list carried, none held (an admin's revoke).
        _ => None,
    };
    user.device_list = swap.as_ref().map(|s| s.written.clone());
    user.refresh_account_keys();
    user.trim_revoked();
    user.updated_at = t;
    Ok(Change::Write(user, (revoked, Wrote::Lists(swap))))
}
