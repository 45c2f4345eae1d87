//! Room changes that move a user's reservations in `UNIBUS_memberships`
//! with the room records of `UNIBUS_rooms` (docs/protocol.md section 5):
//! a room is reserved before any room record lists the user and released
//! only after none does, so the rooms-per-user cap holds exactly.

use rand::RngCore as _;

use crate::store::Store;
use crate::store::rooms::{RoomChange, join};
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, RoomId};
use unibus_proto::records::{Room, User};
use unibus_proto::wire::MAX_ROOMS_PER_USER;

impl Store {
    /// Creates a room owned by `owner`, who is its first member.
    ///
    /// # Errors
    /// `limit_reached` when `owner` is in [`MAX_ROOMS_PER_USER`] rooms
    /// already (nothing written); `unavailable`.
    pub async fn create_room(&self, name: &str, owner: Key) -> Result<Room, Error> {
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = RoomId::parse(&hex::encode(raw))?;
        self.reserve_room(owner, &id, MAX_ROOMS_PER_USER).await?;
        let created = self.create_room_record(id.clone(), name, owner).await;
        if created.is_err() {
            // Best effort: a leftover reservation is pruned later.
            let _ = self.release_room(owner, &id).await;
        }
        created
    }

    /// Adds `member` to the room `current` (a record and revision just
    /// read) if `rule` (the caller's permission) holds on the record
    /// written over, under both caps. Returns the room and whether it
    /// changed; adding a present member changes nothing. A refusal is
    /// judged on `current` before anything is written. When `member` was
    /// deleted meanwhile (and perhaps registered anew), the add is taken
    /// back.
    ///
    /// # Errors
    /// `not_found` (the room, or `member` no longer registered), the
    /// rule's error, `limit_reached` at either cap (nothing kept),
    /// `unavailable`.
    pub async fn add_room_member(
        &self,
        current: (Room, u64),
        member: &User,
        rule: impl Fn(&Room) -> Result<(), Error>,
    ) -> Result<(Room, bool), Error> {
        let key = member.sign_pub;
        let add = |room: &Room| {
            rule(room)?;
            join(room, key)
        };
        if let RoomChange::Keep = add(&current.0)? {
            return Ok((current.0, false));
        }
        let id = current.0.id.clone();
        let reserved = self.reserve_room(key, &id, MAX_ROOMS_PER_USER).await?;
        let (room, changed) = match self.change_room_from(&id, Some(current), add).await {
            Ok(done) => done,
            Err(e) => {
                if reserved {
                    let _ = self.release_room(key, &id).await;
                }
                return Err(e);
            }
        };
        if !changed {
            return Ok((room, false));
        }
        if let Err(e) = self.confirm_reservation(key, &id, MAX_ROOMS_PER_USER).await {
            self.take_back(&id, key).await?;
            return Err(e);
        }
        if !self.still_registered(key, &member.invite_id).await? {
            self.take_back(&id, key).await?;
            return Err(Error::NotFound("no such active user".into()));
        }
        Ok((room, true))
    }

    /// Removes `member` from room `id` again (an add that must not stand)
    /// and releases its reservation.
    ///
    /// # Errors
    /// `unavailable`.
    async fn take_back(&self, id: &RoomId, member: Key) -> Result<(), Error> {
        let undo = |room: &Room| {
            let mut next = room.clone();
            next.members.retain(|m| *m != member);
            Ok(RoomChange::Write(next))
        };
        match self.change_room(id, undo).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.release_room(member, id).await
    }

    /// Removes `member` from room `id` when `rule` (who may) allows it on
    /// the record written over, then releases its reservation. Returns
    /// the room and whether it changed; removing an absent member changes
    /// nothing.
    ///
    /// # Errors
    /// `not_found`, the rule's error, `unavailable`.
    pub async fn remove_room_member(
        &self,
        id: &RoomId,
        member: Key,
        rule: impl Fn(&Room) -> Result<(), Error>,
    ) -> Result<(Room, bool), Error> {
        let remove = |room: &Room| {
            rule(room)?;
            if !room.has_member(member) {
                return Ok(RoomChange::Keep);
            }
            let mut next = room.clone();
            next.members.retain(|m| *m != member);
            Ok(RoomChange::Write(next))
        };
        let (room, changed) = self.change_room(id, remove).await?;
        if changed {
            // Best effort: a leftover reservation is pruned at the cap.
            let _ = self.release_room(member, id).await;
        }
        Ok((room, changed))
    }

    /// Removes `sign_pub` from every room it is a member of, and clears it
    /// as owner (such rooms are then managed by admins only); then drops
    /// its room reservations.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn remove_from_all_rooms(&self, sign_pub: Key) -> Result<usize, Error> {
        self.rooms_ix.sync(self.sync_limit()).await?;
        let ids = self.rooms_ix.read(|ix| ix.rooms_of(sign_pub));
        let mut changed = 0;
        for id in ids {
            let strip = |room: &Room| {
                if !room.has_member(sign_pub) && room.owner != Some(sign_pub) {
                    return Ok(RoomChange::Keep);
                }
                let mut next = room.clone();
                next.members.retain(|m| *m != sign_pub);
                if next.owner == Some(sign_pub) {
                    next.owner = None;
                }
                Ok(RoomChange::Write(next))
            };
            match self.change_room(&id, strip).await {
                Ok((_, true)) => changed += 1,
                Ok((_, false)) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.delete_memberships(sign_pub).await?;
        Ok(changed)
    }
}
