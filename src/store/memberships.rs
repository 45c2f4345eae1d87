//! The rooms-per-user cap (docs/protocol.md section 5) on `UNIBUS_memberships`: one
//! record per user, keyed by its `sign_pub`, listing the rooms it is in or
//! is being added to. Membership itself lives in the room records; this
//! record only makes the cap exact across them.
//!
//! The rule that makes it exact: a room is *reserved* here (CAS on this one
//! record, refused at the cap) before any room record lists the user, and
//! *released* only after the room record stopped listing it. So the rooms
//! that list a user are always a subset of its reservations, and those are
//! never more than the cap. A crash between the two steps can only leave a
//! reservation without membership (stricter, never looser); such leftovers
//! are pruned when the user is at the cap: a reservation older than
//! [`PRUNE_AFTER`] whose room (leader read) does not list the user is
//! dropped. An add re-checks its reservation after writing the room (see
//! [`Store::confirm_reservation`]), which covers a request that stalled
//! longer than that.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Store;
use super::cas::Change;
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, RoomId, Timestamp};
use unibus_proto::records::SCHEMA_VERSION;

/// A reservation this old whose room does not list the user is a leftover.
pub const PRUNE_AFTER: time::Duration = time::Duration::minutes(5);

/// A record in `UNIBUS_memberships`, keyed by `sign_pub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    /// Schema version.
    pub v: u32,
    /// The account.
    pub sign_pub: Key,
    /// Room id -> when it was reserved.
    pub rooms: BTreeMap<RoomId, Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
}

fn limit(cap: usize) -> Error {
    Error::LimitReached(format!("a user is in at most {cap} rooms"))
}

impl Store {
    /// Reserves room `room` for `user` before it is added there; at most
    /// `cap` rooms. Returns true when this call made the reservation (the
    /// caller releases it if the add then does not happen).
    ///
    /// # Errors
    /// `limit_reached` at the cap (nothing written); `unavailable`.
    pub async fn reserve_room(&self, user: Key, room: &RoomId, cap: usize) -> Result<bool, Error> {
        // Reads only (the seed and the pruning read rooms); judged again
        // on the record written over after a lost race.
        let reserve = |current: Option<Memberships>| async move {
            let mut record = match current {
                Some(r) => r,
                None => self.seed_memberships(user).await?,
            };
            if record.rooms.contains_key(room) {
                return Ok(Change::Keep(false));
            }
            if record.rooms.len() >= cap {
                self.prune_reservations(&mut record).await?;
                if record.rooms.len() >= cap {
                    return Err(limit(cap));
                }
            }
            let t = Timestamp::now();
            record.rooms.insert(room.clone(), t);
            record.updated_at = t;
            Ok(Change::Write(record, true))
        };
        Ok(self.memberships.modify_reading(&user, reserve).await?.0)
    }

    /// After an add wrote room `room`: makes sure `user`'s reservation of it
    /// is still there (it is, unless the add stalled for [`PRUNE_AFTER`]
    /// and it was pruned), taking it again if not.
    ///
    /// # Errors
    /// `limit_reached` when it is gone and the user is at the cap (the
    /// caller then takes the membership back); `unavailable`.
    pub async fn confirm_reservation(&self, user: Key, room: &RoomId, cap: usize) -> Result<(), Error> {
        self.reserve_room(user, room, cap).await.map(|_| ())
    }

    /// Drops `user`'s reservation of `room` (after it left the room, or an
    /// add that reserved it did not happen).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn release_room(&self, user: Key, room: &RoomId) -> Result<(), Error> {
        let release = |current: Option<Memberships>| {
            let Some(mut record) = current else { return Ok(Change::Keep(())) };
            if record.rooms.remove(room).is_none() {
                return Ok(Change::Keep(()));
            }
            record.updated_at = Timestamp::now();
            Ok(Change::Write(record, ()))
        };
        self.memberships.modify(&user, release).await?;
        Ok(())
    }

    /// Deletes `user`'s reservations (after it left every room).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn delete_memberships(&self, user: Key) -> Result<(), Error> {
        self.memberships.delete_current(&user).await
    }

    /// A first record for `user`: the rooms that already list it (rooms
    /// made before this record existed), from the rooms index made current.
    async fn seed_memberships(&self, user: Key) -> Result<Memberships, Error> {
        let epoch = Timestamp::from(time::OffsetDateTime::UNIX_EPOCH);
        let rooms = self.rooms_of_member(user).await?.into_iter().map(|id| (id, epoch)).collect();
        Ok(Memberships { v: SCHEMA_VERSION, sign_pub: user, rooms, updated_at: Timestamp::now() })
    }

    /// Drops leftovers: reservations older than [`PRUNE_AFTER`] whose room
    /// (leader read) is gone or does not list the user.
    async fn prune_reservations(&self, record: &mut Memberships) -> Result<(), Error> {
        let cutoff = Timestamp::now().plus(-PRUNE_AFTER);
        let old: Vec<RoomId> =
            record.rooms.iter().filter(|(_, at)| **at < cutoff).map(|(id, _)| id.clone()).collect();
        let present = self.rooms.get_many(old.clone()).await?;
        for id in old {
            let listed = present.iter().any(|(r, _)| r.id == id && r.has_member(record.sign_pub));
            if !listed {
                record.rooms.remove(&id);
            }
        }
        Ok(())
    }
}
