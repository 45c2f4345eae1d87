//! The invite records of `UNIBUS_invites`: mint, read, list, cancel, and
//! the two invite steps of redemption (docs/protocol.md section 4): mark
//! the invite used by a CAS (exactly one winner), later mark it completed.
//! Registration, which runs them around the account's own writes, is in
//! [`super::spans`].

use super::cas::{Change, Retry};
use super::{KvError, Store, all_pages, take_page};
use unibus_proto::devicelist::DeviceList;
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, InviteId, Key, Timestamp};
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{Invite, InviteStatus, Role, User};

/// The already-validated fields a redeemer supplies.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Caller's Ed25519 key, from the server-stamped identity.
    pub sign_pub: Key,
    /// Checked X25519 key.
    pub kex_pub: Key,
    /// Its verified binding to the new account.
    pub kex_sig: String,
    /// Checked display name, if given.
    pub name: Option<String>,
    /// Version 1 of its device list, checked (the first device alone,
    /// signed by it).
    pub device_list: DeviceList,
}

impl Store {
    /// Mints an invite. The token is returned once and never stored.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn create_invite(
        &self,
        role: Role,
        note: String,
        created_by: Actor,
        ttl_secs: u64,
    ) -> Result<(Invite, InviteToken), Error> {
        let token = InviteToken::generate();
        let invite = Invite::new_pending(InviteId::of(&token), role, note, created_by, ttl_secs);
        match self.invites.create(&invite.id, &invite).await {
            Ok(_) => Ok((invite, token)),
            Err(KvError::Conflict) => Err(Error::Internal("invite id collision".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an invite and its revision by id.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn get_invite(&self, id: &InviteId) -> Result<Option<(Invite, u64)>, Error> {
        Ok(self.invites.get(id).await?)
    }

    /// One page of invites in id order after `after`, optionally of one
    /// (effective) status, as shown on the wire (`expired` computed); the
    /// second value is the last id when more may follow.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_invites_page(
        &self,
        status: Option<InviteStatus>,
        after: Option<&InviteId>,
        limit: usize,
    ) -> Result<(Vec<Invite>, Option<InviteId>), Error> {
        self.invites_ix.sync(self.sync_limit()).await?;
        let t = Timestamp::now();
        let (keys, next) = self.invites_ix.read(|ix| {
            let keys =
                super::after(&ix.entries, after).filter(|(_, e)| status.is_none_or(|s| e.effective(t) == s));
            take_page(keys.map(|(k, _)| k.clone()), limit)
        });
        let invites = self
            .invites
            .get_many(keys)
            .await?
            .into_iter()
            .map(|(i, _)| i.view(t))
            .filter(|i| status.is_none_or(|s| i.status == s))
            .collect();
        Ok((invites, next))
    }

    /// Every invite (all pages), as shown on the wire.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_invites(&self) -> Result<Vec<Invite>, Error> {
        all_pages(|cursor| async move { self.list_invites_page(None, cursor.as_ref(), 1000).await }).await
    }

    /// Cancels a pending invite. Cancelling a cancelled or expired invite
    /// changes nothing; a used one is `invite_used`. The result is shown as
    /// on the wire (`expired` computed).
    ///
    /// # Errors
    /// `not_found`, `invite_used`, `unavailable`.
    pub async fn cancel_invite(&self, id: &InviteId, by: Actor) -> Result<Invite, Error> {
        let cancel = |current: Option<Invite>| {
            let mut inv = current.ok_or_else(|| Error::NotFound("no such invite".into()))?;
            let t = Timestamp::now();
            match inv.status {
                InviteStatus::Used => return Err(Error::InviteUsed),
                InviteStatus::Cancelled => return Ok(Change::Keep(inv.view(t))),
                _ if inv.is_expired(t) => return Ok(Change::Keep(inv.view(t))),
                _ => {}
            }
            inv.status = InviteStatus::Cancelled;
            inv.cancelled_by = Some(by);
            inv.cancelled_at = Some(t);
            Ok(Change::Write(inv.clone(), inv))
        };
        Ok(self.invites.modify(id, cancel).await?.0)
    }

    /// Mints the first-admin invite: refused (`forbidden`) once any admin
    /// record exists. Earlier unredeemed bootstrap invites are cancelled, so
    /// only the newest one works.
    ///
    /// # Errors
    /// `forbidden` when an admin exists, `unavailable`.
    pub async fn bootstrap_admin_invite(&self, ttl_secs: u64) -> Result<(Invite, InviteToken), Error> {
        if self.has_admin().await? {
            return Err(Error::Forbidden("an admin already exists".into()));
        }
        for old in self.list_invites().await? {
            if old.created_by == Actor::Bootstrap && old.status == InviteStatus::Pending {
                self.cancel_invite(&old.id, Actor::Bootstrap).await?;
            }
        }
        self.create_invite(Role::Admin, "first admin".into(), Actor::Bootstrap, ttl_secs).await
    }

    /// Steps 1-3: finds the invite and marks it used by `sign_pub` with a
    /// CAS, or accepts an earlier unfinished claim by the same key. After
    /// this returns, the invite is spent for every other key.
    ///
    /// # Errors
    /// `invite_not_found`, `invite_used`, `invite_cancelled`,
    /// `invite_expired`, `unavailable`.
    pub async fn claim_invite(&self, token: &InviteToken, sign_pub: Key) -> Result<Invite, Error> {
        Ok(self.claim(token, sign_pub).await?.0)
    }

    /// [`Store::claim_invite`], with the invite's revision after the claim.
    pub(super) async fn claim(&self, token: &InviteToken, sign_pub: Key) -> Result<(Invite, u64), Error> {
        let claim = |current: Option<Invite>| {
            let mut inv = current.ok_or(Error::InviteNotFound)?;
            let t = Timestamp::now();
            match inv.status {
                InviteStatus::Used if inv.used_by == Some(sign_pub) && !inv.completed => {
                    return Ok(Change::Keep(inv));
                }
                InviteStatus::Used => return Err(Error::InviteUsed),
                InviteStatus::Cancelled => return Err(Error::InviteCancelled),
                _ if inv.is_expired(t) => return Err(Error::InviteExpired),
                InviteStatus::Expired => return Err(Error::InviteExpired),
                InviteStatus::Pending => {}
            }
            inv.status = InviteStatus::Used;
            inv.used_by = Some(sign_pub);
            inv.used_at = Some(t);
            Ok(Change::Write(inv.clone(), inv))
        };
        // A lost race reads again and judges anew (usually the invite is
        // now `used` by the winner); one that keeps losing is spent.
        let retry = Retry { exhausted: || Error::InviteUsed, ..Retry::default() };
        let (inv, rev) = self.invites.modify_with(&InviteId::of(token), retry, claim).await?;
        let rev = rev.ok_or_else(|| Error::Internal("claimed invite without a revision".into()))?;
        Ok((inv, rev))
    }

    /// Before `user` is deleted: finishes the invite it registered with
    /// (marks it `completed` by CAS when it is still used by this key but
    /// not completed, as after a crash between steps 4 and 5), so that the
    /// deleted key cannot replay it (docs/protocol.md section 4 step 6). An invite
    /// that is gone or in any other state is left as it is.
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn retire_invite_of(&self, user: &User) -> Result<(), Error> {
        let Some((inv, rev)) = self.get_invite(&user.invite_id).await? else { return Ok(()) };
        if inv.status != InviteStatus::Used || inv.used_by != Some(user.sign_pub) {
            return Ok(());
        }
        match self.complete_invite(&inv, rev).await {
            Err(Error::InviteNotFound) => Ok(()),
            other => other,
        }
    }

    /// Step 5: sets `completed` by a CAS on the revision the claim left,
    /// without reading again; if the invite changed since, reads it and
    /// retries (a no-op when already set).
    pub(super) async fn complete_invite(&self, claimed: &Invite, revision: u64) -> Result<(), Error> {
        let complete = |current: Option<Invite>| {
            let mut inv = current.ok_or(Error::InviteNotFound)?;
            if inv.completed {
                return Ok(Change::Keep(()));
            }
            inv.completed = true;
            Ok(Change::Write(inv, ()))
        };
        // The first attempt uses the claim's record; each retry reads.
        let retry = Retry { known: Some((claimed.clone(), revision)), ..Retry::default() };
        self.invites.modify_with(&claimed.id, retry, complete).await?;
        Ok(())
    }
}
