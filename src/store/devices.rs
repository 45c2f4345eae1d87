//! The device records of `UNIBUS_devices` (docs/protocol.md section 8):
//! one per key, mapping it to its account and keeping the key used for
//! good. An add first *creates* it (a key is a device or an account at most
//! once); the add and revoke that change the account record with it are in
//! [`super::spans`]. A crash between the steps of an add leaves a record
//! its account does not list: the callout denies such a key (never a
//! guest), and the same add retried completes it.
//!
//! Revocation is for good: a revoked record, or one its account listed
//! once (`seq` > 0), is never claimed again, freed or taken over, even
//! after the account record has stopped listing it (it keeps only the 32
//! most recent revoked devices). Only the account's delete removes it.

use super::cas::Change;
use super::{KvError, Store};
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::records::{Device, DeviceStatus, User};

impl Store {
    /// A device record (leader read).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn get_device(&self, key: Key) -> Result<Option<(Device, u64)>, Error> {
        Ok(self.devices.get(&key).await?)
    }

    /// The account a connecting key acts for: its device record's account,
    /// else the key itself (an account's own key, or a guest).
    ///
    /// A key the devices index maps already is answered from the index,
    /// without a round trip; any other with a leader read. As for the
    /// callout's admission (docs/protocol.md section 9): a device record
    /// never names another account while it exists and a key is a device
    /// of one account at most, so a mapping the index holds is the current
    /// one whenever that account lists the key as active, which every
    /// handler checks on a leader read of the account's record
    /// (`active_user`) before acting. An index that lags can so only refuse
    /// (a device key taken over after its first account was deleted, for
    /// the moment the index takes to apply it), never grant.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn account_of(&self, key: Key) -> Result<Key, Error> {
        if let Some(account) = self.devices_ix.read(|ix| ix.account_of(key)) {
            return Ok(account);
        }
        Ok(self.get_device(key).await?.map_or(key, |(d, _)| d.account))
    }

    /// Claims `device.device` for `device.account` by creating its device
    /// record. Succeeds again for the same account while the record is a
    /// claim nobody listed yet (a retry of an add or a registration that
    /// was cut off); takes over the record of an active device whose
    /// account was deleted (a crash between the account's delete and its
    /// devices'). A revoked record, or one listed once, is never claimed
    /// again: revocation is for good.
    ///
    /// # Errors
    /// `user_exists` when the key is a device of another account, or a
    /// device its account listed once; `unavailable`.
    pub async fn claim_device_key(&self, device: &Device) -> Result<(), Error> {
        for _ in 0..super::cas::MAX_CAS_ATTEMPTS {
            match self.devices.create(&device.device, device).await {
                Ok(_) => return Ok(()),
                Err(KvError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            let Some((held, rev)) = self.get_device(device.device).await? else { continue };
            if held.status == DeviceStatus::Revoked {
                return Err(Error::UserExists);
            }
            if held.account == device.account {
                return if unlisted_claim(&held) || first_device_claim(&held) {
                    Ok(())
                } else {
                    // Listed once and listed no more: revoked, and the
                    // account's copy has scrolled off.
                    Err(Error::UserExists)
                };
            }
            let orphan = held.account != held.device && self.get_user(held.account).await?.is_none();
            if !orphan {
                return Err(Error::UserExists);
            }
            match self.devices.delete(&device.device, rev).await {
                Ok(()) | Err(KvError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(super::cas::contention())
    }

    /// Deletes the device record of `key` (CAS at the revision read) while
    /// `doomed` says so of it; any other record is left alone.
    pub(super) async fn drop_device_record(
        &self,
        key: Key,
        doomed: impl Fn(&Device) -> bool,
    ) -> Result<(), Error> {
        let drop = |current: Option<Device>| {
            Ok(match current {
                Some(d) if doomed(&d) => Change::Delete(()),
                _ => Change::Keep(()),
            })
        };
        self.devices.modify(&key, drop).await.map(|_| ())
    }

    /// Makes the `UNIBUS_devices` record of `device` equal to the account's
    /// copy (CAS; nothing when it already is). `false` when the record
    /// names another account (then nothing is written).
    pub(crate) async fn write_device_record(&self, device: &Device) -> Result<bool, Error> {
        let write = |current: Option<Device>| {
            Ok(match current {
                Some(held) if held.account != device.account => Change::Keep(false),
                Some(held) if held == *device => Change::Keep(true),
                _ => Change::Write(device.clone(), true),
            })
        };
        Ok(self.devices.modify(&device.device, write).await?.0)
    }

    /// Deletes every device record of a deleted account, each at the
    /// revision read while it still names that account: the devices it
    /// lists, its own key, and the revoked devices that have scrolled off
    /// the record (found in the synced devices index), so that no record
    /// of it outlives it to be read as a device of a later account with
    /// the same id.
    pub(crate) async fn delete_device_records(&self, user: &User) -> Result<(), Error> {
        let account = user.sign_pub;
        let mut keys = self.devices_ix.sync_read(self.sync_limit(), |ix| ix.keys_of(account)).await?;
        keys.extend(user.devices.iter().map(|d| d.device));
        keys.push(account);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            self.drop_device_record(key, |d| d.account == account).await?;
        }
        Ok(())
    }
}

/// A claim of a device add that no account has listed yet (`seq` 0: the
/// account's CAS gives the number): an add cut before its listing, or one
/// in flight. Only such a record may be freed by a refused add or claimed
/// again by its account.
pub(super) fn unlisted_claim(held: &Device) -> bool {
    held.status == DeviceStatus::Active && held.seq == 0
}

/// A registration's claim of the account's own key (its first device):
/// the account record decides (`create`), so the same key may claim it
/// again (a registration retried after a crash between the two writes).
fn first_device_claim(held: &Device) -> bool {
    held.status == DeviceStatus::Active && held.device == held.account && held.seq == 1
}
