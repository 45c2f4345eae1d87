//! An account's whole life across buckets: registration (docs/protocol.md
//! section 4: the invite in `UNIBUS_invites`, the first device's record,
//! the account in `UNIBUS_users`) and its delete (the account, its rooms,
//! reservations, block list, device records and invite).

use crate::store::Store;
use crate::store::admins::{AdminLoss, last_admin};
use crate::store::cas::{Change, Retry};
use crate::store::invites::NewUser;
use crate::store::users::no_such_user;
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{Device, Invite, User, default_name};

impl Store {
    /// Writes a whole account as registration leaves it: each listed
    /// device's record claimed, then the account record created (for
    /// seeding stores in tests and benchmarks; registration itself goes
    /// through the invite).
    ///
    /// # Errors
    /// `user_exists`, `unavailable`.
    pub async fn add_account(&self, user: &User) -> Result<(), Error> {
        for device in &user.devices {
            self.claim_device_key(device).await?;
        }
        self.add_user(user).await.map(|_| ())
    }

    /// Redeems an invite for `new` (docs/protocol.md section 4, all steps).
    ///
    /// # Errors
    /// `invite_not_found`, `invite_used`, `invite_cancelled`,
    /// `invite_expired`, `user_exists`, `unavailable`.
    pub async fn redeem_invite(&self, token: &InviteToken, new: &NewUser) -> Result<User, Error> {
        let (invite, revision) = self.claim(token, new.sign_pub).await?;
        self.finish_redemption(&invite, revision, new).await
    }

    /// Steps 4-5: creates the user, then marks the invite completed. If the
    /// key is already registered by this very invite (a retry after a crash
    /// between 4 and 5) the redemption completes; otherwise `user_exists`
    /// and the invite stays spent.
    async fn finish_redemption(&self, invite: &Invite, revision: u64, new: &NewUser) -> Result<User, Error> {
        let name = new.name.clone().unwrap_or_else(|| default_name(&new.sign_pub));
        let first = Device::first(new.sign_pub, new.kex_pub, Some(new.kex_sig.clone()));
        // A key that is a device of another account is refused here (the
        // invite stays spent, as for a registered key).
        if let Err(e) = self.claim_device_key(&first).await {
            if e == Error::UserExists {
                self.complete_invite(invite, revision).await?;
            }
            return Err(e);
        }
        let user = User::new_active(first, &name, invite.role, invite.created_by, invite.id.clone())
            .with_list(new.device_list.clone());
        let outcome = match self.add_user(&user).await {
            Ok(_) => {
                // The history and the invite's completion at once: neither
                // waits for the other.
                let (_, completed) = tokio::join!(
                    self.keep_written_list(&new.device_list),
                    self.complete_invite(invite, revision)
                );
                completed?;
                return Ok(user);
            }
            Err(Error::UserExists) => match self.get_user(new.sign_pub).await? {
                Some((existing, _)) if existing.invite_id == invite.id => Ok(existing),
                _ => Err(Error::UserExists),
            },
            Err(e) => return Err(e),
        };
        self.complete_invite(invite, revision).await?;
        outcome
    }

    /// Deletes a user record (hard delete, CAS) and removes the key from
    /// every room, before and after the delete, then its block list, its
    /// device records and the messages of its DM channel, so that a key
    /// registered again later inherits nothing. The invite it
    /// registered with is marked completed first, so that the key cannot
    /// replay it.
    ///
    /// # Errors
    /// `not_found`; `forbidden` for the last active admin
    /// (`store::admins`); `unavailable`.
    pub async fn delete_user(&self, sign_pub: Key) -> Result<User, Error> {
        let (user, revision) = self.get_user(sign_pub).await?.ok_or_else(no_such_user)?;
        if user.is_active_admin() && !self.admin_remains(sign_pub).await? {
            return Err(last_admin());
        }
        self.remove_from_all_rooms(sign_pub).await?;
        // Before the delete, so that no crash leaves a deleted key able to
        // replay its invite.
        self.retire_invite_of(&user).await?;
        // The delete itself: a CAS from the record just read, judged again
        // (without side effects) on whatever record it writes over.
        let delete = |current: Option<User>| Ok(Change::Delete(current.ok_or_else(no_such_user)?));
        let retry = Retry { known: Some((user, revision)), ..Default::default() };
        let (user, _) = self.users.modify_with(&sign_pub, retry, delete).await?;
        self.keep_an_admin(sign_pub, AdminLoss::Deleted(user.clone())).await?;
        // A member.add that raced with the delete is caught here (or by
        // its own check after writing).
        self.remove_from_all_rooms(sign_pub).await?;
        self.delete_block_list(sign_pub).await?;
        self.delete_device_records(&user).await?;
        self.delete_device_lists(sign_pub).await?;
        // Its DM channel: nobody can read it any more (docs/protocol.md
        // section 10), and a key registered again later inherits nothing.
        self.mail.purge(&unibus_proto::mail::MailChannel::dm(&sign_pub)).await?;
        Ok(user)
    }
}
