//! The account records of `UNIBUS_users`: add, get, list, revoke, restore,
//! standing and has-admin. Each change is one CAS on the revision just
//! read; revoking an admin follows the last-admin rule ([`super::admins`]).
//! The account's delete, which spans buckets, is in [`super::spans`].

use super::admins::{AdminLoss, last_admin};
use super::cas::Change;
use super::folds::{self, UserEntry};
use super::index::Fresh;
use super::{KvError, Store, all_pages, take_page};
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, InviteId, Key, RoomId, Timestamp};
use unibus_proto::records::{DeviceStatus, Role, User, UserStatus};

/// An account as the users index shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    /// Its status is active.
    pub active: bool,
    /// Its active devices, sorted.
    pub devices: Vec<Key>,
}

impl AccountView {
    fn of(account: Key, entry: &UserEntry) -> AccountView {
        let mut devices: Vec<Key> = active_keys(account, entry).collect();
        devices.sort_unstable();
        AccountView { active: entry.status == UserStatus::Active, devices }
    }

    /// Active, with `device` among its active devices.
    pub fn admits(&self, device: Key) -> bool {
        self.active && self.devices.contains(&device)
    }
}

/// The active device keys of `account`'s index entry that its signed list
/// names (all of them while it has no list): the devices a message to it
/// is sealed for, and the ones that may send.
fn active_keys(account: Key, entry: &UserEntry) -> impl Iterator<Item = Key> + '_ {
    let listed = entry
        .devices
        .as_deref()
        .map(|d| d.iter().filter(|(_, s)| *s == DeviceStatus::Active).map(|(k, _)| Key::from_bytes(*k)));
    let own = entry.devices.is_none().then_some(account);
    let on_list = move |k: &Key| entry.unlisted_differs.as_deref().is_none_or(|l| l.contains(k.as_bytes()));
    listed.into_iter().flatten().chain(own).filter(on_list)
}

/// What the store says about a connecting key, for the callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No account lists it: may connect as guest (register only).
    Unknown,
    /// An active device of an active account.
    Active {
        /// The account's role.
        role: Role,
        /// The account id.
        account: Key,
    },
    /// A revoked device or account, or a device whose add never completed:
    /// denied (never a guest).
    Revoked,
}

impl Store {
    /// Reads a user and its revision (leader read).
    ///
    /// # Errors
    /// `unavailable` when the store cannot answer.
    pub async fn get_user(&self, sign_pub: Key) -> Result<Option<(User, u64)>, Error> {
        Ok(self.users.get(&sign_pub).await?)
    }

    /// Whether `sign_pub` is still the registration made with `invite_id`:
    /// a concurrent delete (and perhaps a new registration of the same key)
    /// makes it not, so a write made meanwhile for the old one is undone.
    ///
    /// # Errors
    /// `unavailable` when the store cannot answer.
    pub async fn still_registered(&self, sign_pub: Key, invite_id: &InviteId) -> Result<bool, Error> {
        Ok(self.get_user(sign_pub).await?.is_some_and(|(u, _)| u.invite_id == *invite_id))
    }

    /// Is this key authorized, and as what (docs/protocol.md section 8,
    /// "Connecting")? The key is looked up as a device first (its account),
    /// else as an account's own key; the account must be active and list
    /// the key as an active device. Answered from the devices and users
    /// indexes right after [`Index::sync`](super::index::Index::sync)
    /// proved both current with their stream leaders (and quorums), so it
    /// is as fresh as leader reads; concurrent callouts share the probes.
    /// Fails closed: an error here must deny.
    ///
    /// # Errors
    /// `unavailable` when the store cannot answer; `internal` when a
    /// record involved does not decode.
    pub async fn standing(&self, key: Key) -> Result<Standing, Error> {
        Ok(self.admission(key).await?.0)
    }

    /// [`Store::standing`] and, for an active device, its account's rooms
    /// (from the rooms index, synced likewise). The leader probes go out at
    /// once; a device whose mapping the devices index already holds needs
    /// no devices probe, so a device of a many-device account costs what a
    /// one-device account does.
    ///
    /// # Errors
    /// As [`Store::standing`].
    pub async fn admission(&self, key: Key) -> Result<(Standing, Vec<RoomId>), Error> {
        let limit = self.sync_limit();
        let deadline = tokio::time::Instant::now() + limit;
        // A device record never names another account while it exists, and
        // a key is a device of one account at most: when the synced account
        // lists the key as active, a mapping this index already holds is
        // the current one (docs/protocol.md section 9). So a known device
        // needs the users and rooms probes only; anything else (an unknown
        // key, a new device, a denial) is judged on all three.
        if let Some(account) = self.devices_ix.read(|ix| ix.account_of(key)) {
            let (users_at, rooms_at) =
                tokio::try_join!(self.users_ix.leader_point(limit), self.rooms_ix.leader_point(limit))?;
            let judged = self.judge_at(account, key, users_at, rooms_at, deadline).await?;
            if matches!(judged.0, Standing::Active { .. }) {
                return Ok(judged);
            }
        }
        let (devices_at, users_at, rooms_at) = tokio::try_join!(
            self.devices_ix.leader_point(limit),
            self.users_ix.leader_point(limit),
            self.rooms_ix.leader_point(limit)
        )?;
        let mapped = self
            .devices_ix
            .read_from(devices_at, deadline, |ix| {
                if ix.unreadable.contains(&key.to_hex()) {
                    let bucket = unibus_proto::subjects::BUCKET_DEVICES;
                    return Err(Error::Internal(format!("corrupt record {key} in {bucket}")));
                }
                Ok(ix.account_of(key))
            })
            .await??;
        let account = mapped.unwrap_or(key);
        self.judge_at(account, key, users_at, rooms_at, deadline).await
    }

    /// `key`'s standing in `account`, and the account's rooms when it is
    /// active, from the users and rooms indexes at the leader points given.
    async fn judge_at(
        &self,
        account: Key,
        key: Key,
        users_at: u64,
        rooms_at: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(Standing, Vec<RoomId>), Error> {
        let standing =
            self.users_ix.read_from(users_at, deadline, |ix| standing_in(ix, account, key)).await??;
        let rooms = match &standing {
            Standing::Active { .. } => {
                self.rooms_ix.read_from(rooms_at, deadline, |ix| ix.member_of(account)).await?
            }
            _ => Vec::new(),
        };
        Ok((standing, rooms))
    }

    /// Succeeds only while the users stream's leader sees a quorum of its
    /// replicas (and this instance's users index is current): a leader cut
    /// off from its quorum may still answer reads for a while.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn ensure_quorum(&self) -> Result<(), Error> {
        Ok(self.users_ix.sync(self.sync_limit()).await?)
    }

    /// True when the local indexes already know this key as revoked (its
    /// account revoked, or the device revoked in it, which is for good):
    /// such a key can be denied without a store round trip. `false` says
    /// nothing. A device its account does not list yet is not judged here:
    /// the two indexes may be at different points.
    pub fn known_revoked(&self, key: Key) -> bool {
        let account = self.devices_ix.read(|ix| ix.account_of(key)).unwrap_or(key);
        self.users_ix.read(|ix| {
            ix.entries.get(&account).is_some_and(|e| {
                e.status == UserStatus::Revoked
                    || e.device_status(account, key) == Some(DeviceStatus::Revoked)
            })
        })
    }

    /// Whether `holds` was true of the record of `key` as it stood when
    /// revision `at` of `UNIBUS_users` was written, given the revision
    /// `since` (< `at`) at which the caller found it true. Revisions are
    /// sequences of one stream, so they order writes to different keys:
    /// the record as of `at` is the key's last write below `at`, found by
    /// walking the key's writes from `since` (leader reads; usually two).
    /// A record deleted, unreadable or no longer kept (history) as of `at`
    /// counts as not holding (fail closed).
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn user_held_at(
        &self,
        key: Key,
        since: u64,
        at: u64,
        holds: impl Fn(&User) -> bool,
    ) -> Result<bool, Error> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let kv = &self.users.bucket().kv;
        let subject = format!("{}{key}", kv.prefix);
        let (mut from, mut last) = (since, None);
        loop {
            let get = kv.stream.raw_message_builder().sequence(from).next_by_subject(subject.as_str());
            let msg = match get.send().await {
                Ok(msg) if msg.sequence < at => msg,
                Ok(_) => break,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(Error::Unavailable(format!("get {key} in {}: {e}", kv.name))),
            };
            if last.is_none() && msg.sequence != since {
                // `since` is no longer kept: what came between is unknown.
                return Ok(false);
            }
            from = msg.sequence + 1;
            last = Some(msg.payload);
        }
        // A delete marker has no body, so it does not decode either.
        Ok(last.is_some_and(|body| serde_json::from_slice::<User>(&body).is_ok_and(|u| holds(&u))))
    }

    /// Each of `keys` as the users index shows it at freshness `fresh`
    /// (one read of the index for all): `None` for no account (or one whose
    /// record does not decode).
    ///
    /// # Errors
    /// `unavailable` when the index cannot be proven current.
    pub async fn accounts<const N: usize>(
        &self,
        keys: [Key; N],
        fresh: Fresh,
    ) -> Result<[Option<AccountView>; N], Error> {
        let read = |ix: &folds::Users| keys.map(|k| ix.entries.get(&k).map(|e| AccountView::of(k, e)));
        Ok(self.users_ix.read_fresh(fresh, self.sync_limit(), read).await?)
    }

    /// Holds the users index's watch until the guard is dropped (tests:
    /// an index that trails on purpose).
    #[cfg(feature = "internals")]
    pub fn hold_users_index(&self) -> super::index::Hold {
        self.users_ix.hold()
    }

    /// The active devices of the active accounts among `accounts`, sorted,
    /// from the users index at freshness `fresh` (the recipients a room
    /// message must be sealed for, docs/protocol.md section 10).
    ///
    /// # Errors
    /// `unavailable` when the index cannot be proven current.
    pub async fn active_devices_of(&self, accounts: &[Key], fresh: Fresh) -> Result<Vec<Key>, Error> {
        let read = |ix: &folds::Users| {
            let mut out = Vec::new();
            for account in accounts {
                let Some(e) = ix.entries.get(account).filter(|e| e.status == UserStatus::Active) else {
                    continue;
                };
                out.extend(active_keys(*account, e));
            }
            out
        };
        let mut devices = self.users_ix.read_fresh(fresh, self.sync_limit(), read).await?;
        devices.sort_unstable();
        Ok(devices)
    }

    /// Adds a user record; `user_exists` when the key is taken.
    ///
    /// # Errors
    /// `user_exists`, or `unavailable`.
    pub async fn add_user(&self, user: &User) -> Result<u64, Error> {
        match self.users.create(&user.sign_pub, user).await {
            Err(KvError::Conflict) => Err(Error::UserExists),
            other => Ok(other?),
        }
    }

    /// One page of users in key order after `after`, optionally of one
    /// status; the second value is the last key when more may follow.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_users_page(
        &self,
        status: Option<UserStatus>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<Key>), Error> {
        self.users_ix.sync(self.sync_limit()).await?;
        let (keys, next) = self.users_ix.read(|ix| {
            let keys = super::after(&ix.entries, after.as_ref())
                .filter(|(_, e)| status.is_none_or(|s| e.status == s));
            take_page(keys.map(|(k, _)| *k), limit)
        });
        let users = self
            .users
            .get_many(keys)
            .await?
            .into_iter()
            .map(|(u, _)| u)
            .filter(|u| status.is_none_or(|s| u.status == s))
            .collect();
        Ok((users, next))
    }

    /// Every user record (all pages).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        all_pages(|cursor| async move { self.list_users_page(None, cursor, 1000).await }).await
    }

    /// True when any admin record exists, active or revoked.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn has_admin(&self) -> Result<bool, Error> {
        self.users_ix.sync(self.sync_limit()).await?;
        Ok(self.users_ix.read(|ix| ix.entries.values().any(|e| e.role == Role::Admin)))
    }

    /// Sets a user's status with a CAS, retrying on a lost race. Setting the
    /// status it already has changes nothing (idempotent). Returns the
    /// record and whether it changed. Revoking an admin follows the
    /// last-admin rule ([`super::admins`]).
    ///
    /// # Errors
    /// `not_found`; `forbidden` for the last active admin; `unavailable`.
    pub async fn set_user_status(
        &self,
        sign_pub: Key,
        status: UserStatus,
        by: Actor,
    ) -> Result<(User, bool), Error> {
        let set = |current: Option<User>| async move {
            let mut user = current.ok_or_else(no_such_user)?;
            if user.status == status {
                return Ok(Change::Keep((user, None)));
            }
            let demotes_admin = user.is_active_admin() && status == UserStatus::Revoked;
            if demotes_admin && !self.admin_remains(sign_pub).await? {
                return Err(last_admin());
            }
            let before = user.clone();
            let t = Timestamp::now();
            user.status = status;
            (user.revoked_at, user.revoked_by) = match status {
                UserStatus::Revoked => (Some(t), Some(by)),
                UserStatus::Active => (None, None),
            };
            user.updated_at = t;
            Ok(Change::Write(user.clone(), (user, Some(before))))
        };
        let ((user, before), rev) = self.users.modify_reading(&sign_pub, set).await?;
        // Kept: it already had that status.
        let (Some(before), Some(new_rev)) = (before, rev) else { return Ok((user, false)) };
        self.keep_an_admin(sign_pub, AdminLoss::Revoked { before, revision: new_rev }).await?;
        // Best effort: lets this instance deny the key without a store
        // read at once; the write itself is already done.
        let _ = self.users_ix.wait_for(new_rev, self.sync_limit()).await;
        Ok((user, true))
    }
}

/// A key's standing in its account, as the synced users index says.
fn standing_in(ix: &super::folds::Users, account: Key, key: Key) -> Result<Standing, Error> {
    if ix.unreadable.contains(&account.to_hex()) {
        let bucket = unibus_proto::subjects::BUCKET_USERS;
        return Err(Error::Internal(format!("corrupt record {account} in {bucket}")));
    }
    // No account: an unknown key, or a device of a deleted account (its
    // device record outlived a crash): a guest either way.
    let Some(e) = ix.entries.get(&account) else { return Ok(Standing::Unknown) };
    if e.status != UserStatus::Active {
        return Ok(Standing::Revoked);
    }
    match e.device_status(account, key) {
        Some(DeviceStatus::Active) => Ok(Standing::Active { role: e.role, account }),
        _ => Ok(Standing::Revoked),
    }
}

pub(super) fn no_such_user() -> Error {
    Error::NotFound("no such user".into())
}
