//! The last-admin rule, in one place (docs/protocol.md sections 5 and 8):
//! some active admin with an active device must remain, so that someone can
//! still administer the bus. It stops an admin's revoke, its delete, and the
//! revoke of its last active device. (An admin without an active device
//! cannot connect, so it does not count: docs/protocol.md section 9.)
//!
//! Admins are separate records, so no single compare-and-swap can hold the
//! rule. It is checked before the write ([`Store::admin_remains`], so a
//! plain refusal writes nothing) and again after it
//! ([`Store::keep_an_admin`]): two writes racing on two admins each see the
//! other only afterwards, and the later one, which finds no admin left, is
//! taken back with the undo of its [`AdminLoss`].

use super::Store;
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::records::{Role, User};

/// A write that may have taken the last admin away, with what undoes it.
pub(crate) enum AdminLoss {
    /// The admin's record was revoked at revision `revision`; `before` is
    /// the record it replaced.
    Revoked {
        /// The record before the revoke.
        before: User,
        /// The revision the revoke wrote.
        revision: u64,
    },
    /// The admin's record was deleted; this is the record deleted.
    Deleted(User),
    /// A device of the admin's account was revoked; this is the device as
    /// revoked.
    DeviceRevoked(super::Revoked),
}

/// What a write that would leave no admin is refused with.
const LAST_ADMIN: &str = "the last active admin (with an active device) cannot be revoked or deleted";

/// The refusal of a write that would leave no admin, before it is made.
pub(crate) fn last_admin() -> Error {
    Error::Forbidden(LAST_ADMIN.into())
}

/// The refusal of a write taken back after it was made: a concurrent
/// change had taken the other admins meanwhile.
fn last_admin_race() -> Error {
    Error::Forbidden(format!("{LAST_ADMIN} (a concurrent change took the other)"))
}

/// An admin who can act: active, admin, with an active device.
fn can_act(user: &User) -> bool {
    user.is_active_admin() && user.active_devices().next().is_some()
}

impl Store {
    /// Whether an active admin other than `except` has an active device
    /// (leader reads of every admin the synced users index knows).
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn admin_remains(&self, except: Key) -> Result<bool, Error> {
        self.users_ix.sync(self.sync_limit()).await?;
        let admins: Vec<Key> = self.users_ix.read(|ix| {
            ix.entries
                .iter()
                .filter(|(k, e)| e.role == Role::Admin && **k != except)
                .map(|(k, _)| *k)
                .collect()
        });
        let fresh = self.users.get_many(admins).await?;
        Ok(fresh.iter().any(|(u, _)| can_act(u)))
    }

    /// After `loss`, a write to `account`: when `account` was an active
    /// admin and can no longer act, and no other admin can, takes the write
    /// back and refuses. Any other write passes.
    ///
    /// # Errors
    /// `forbidden` when the write was taken back; `unavailable`.
    pub(crate) async fn keep_an_admin(&self, account: Key, loss: AdminLoss) -> Result<(), Error> {
        let now = self.get_user(account).await?.map(|(u, _)| u);
        let was_admin = match &loss {
            AdminLoss::Revoked { before, .. } => before.is_active_admin(),
            AdminLoss::Deleted(user) => user.is_active_admin(),
            AdminLoss::DeviceRevoked(_) => now.as_ref().is_some_and(User::is_active_admin),
        };
        if !was_admin || now.as_ref().is_some_and(can_act) || self.admin_remains(account).await? {
            return Ok(());
        }
        match loss {
            AdminLoss::Revoked { before, revision } => {
                self.users.update(&account, &before, revision).await.map_err(Error::from)?;
            }
            AdminLoss::Deleted(user) => {
                self.add_user(&user).await?;
            }
            AdminLoss::DeviceRevoked(revoked) => self.undo_revoke(&revoked).await?,
        }
        Err(last_admin_race())
    }
}
