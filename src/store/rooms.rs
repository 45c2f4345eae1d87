//! Room operations on `UNIBUS_rooms`. Membership lives in the room record
//! only; every change is a read-check-CAS ([`super::cas`]) in which the
//! caller's rule (who may do what) is re-judged on the record actually
//! written over.
//! Both caps of docs/protocol.md section 5 hold exactly: members per room inside that
//! CAS, rooms per user through a reservation taken before the room record
//! lists the user (see [`super::memberships`]).

use rand::RngCore as _;

use super::cas::Change;
use super::{KvError, Store, take_page};
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, RoomId, Timestamp};
use unibus_proto::records::{Room, SCHEMA_VERSION};
use unibus_proto::wire::{MAX_MEMBERS_PER_ROOM, MAX_ROOMS_PER_USER};

/// What a rule decides for one room record.
pub enum RoomChange {
    /// Write this record.
    Write(Room),
    /// Nothing to change (idempotent success).
    Keep,
}

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

    async fn create_room_record(&self, id: RoomId, name: &str, owner: Key) -> Result<Room, Error> {
        let t = Timestamp::now();
        let room = Room {
            v: SCHEMA_VERSION,
            id,
            name: name.to_string(),
            owner: Some(owner),
            members: vec![owner],
            created_at: t,
            updated_at: t,
        };
        match self.rooms.create(&room.id, &room).await {
            Ok(rev) => {
                let _ = self.rooms_ix.wait_for(rev, self.sync_limit()).await;
                Ok(room)
            }
            Err(KvError::Conflict) => Err(Error::Internal("room id collision".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a room (leader read).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn get_room(&self, id: &RoomId) -> Result<Option<(Room, u64)>, Error> {
        Ok(self.rooms.get(id).await?)
    }

    /// Room ids whose members include `sign_pub`, from the index made
    /// current with the leader first (the callout grants from this).
    ///
    /// # Errors
    /// `unavailable` when the index cannot be made current.
    pub async fn rooms_of_member(&self, account: Key) -> Result<Vec<RoomId>, Error> {
        Ok(self.rooms_ix.sync_read(self.sync_limit(), |ix| ix.member_of(account)).await?)
    }

    /// One page of the rooms `member` is in, in id order after `after`.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_rooms_page(
        &self,
        member: Key,
        after: Option<&RoomId>,
        limit: usize,
    ) -> Result<(Vec<Room>, Option<RoomId>), Error> {
        let ids = self.rooms_of_member(member).await?.into_iter().filter(|id| after.is_none_or(|a| id > a));
        let (ids, next) = take_page(ids, limit);
        let rooms = self
            .rooms
            .get_many(ids)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.has_member(member))
            .collect();
        Ok((rooms, next))
    }

    /// Applies `rule` to room `id` with a CAS, re-judging on conflict.
    /// Returns the room as it is afterwards and whether it changed.
    ///
    /// # Errors
    /// `not_found` for an unknown room, the rule's error, `unavailable`.
    pub async fn change_room(
        &self,
        id: &RoomId,
        rule: impl Fn(&Room) -> Result<RoomChange, Error>,
    ) -> Result<(Room, bool), Error> {
        let judge = |room: Option<Room>| {
            let room = room.ok_or_else(|| Error::NotFound("no such room".into()))?;
            let mut next = match rule(&room)? {
                RoomChange::Keep => return Ok(Change::Keep((room, false))),
                RoomChange::Write(next) => next,
            };
            next.members.sort();
            next.members.dedup();
            next.updated_at = Timestamp::now();
            Ok(Change::Write(next.clone(), (next, true)))
        };
        let (done, rev) = self.rooms.modify(id, judge).await?;
        if let (true, Some(rev)) = (done.1, rev) {
            let _ = self.rooms_ix.wait_for(rev, self.sync_limit()).await;
        }
        Ok(done)
    }

    /// Adds `member` to room `id` if `rule` (the caller's permission) holds
    /// on the record written over, under both caps. Returns the room and
    /// whether it changed; adding a present member changes nothing.
    ///
    /// # Errors
    /// `not_found`, the rule's error, `limit_reached` at either cap
    /// (nothing kept), `unavailable`.
    pub async fn add_room_member(
        &self,
        id: &RoomId,
        member: Key,
        rule: impl Fn(&Room) -> Result<(), Error>,
    ) -> Result<(Room, bool), Error> {
        let reserved = self.reserve_room(member, id, MAX_ROOMS_PER_USER).await?;
        let add = |room: &Room| {
            rule(room)?;
            if room.has_member(member) {
                return Ok(RoomChange::Keep);
            }
            if room.members.len() >= MAX_MEMBERS_PER_ROOM {
                return Err(members_cap());
            }
            let mut next = room.clone();
            next.members.push(member);
            Ok(RoomChange::Write(next))
        };
        let (room, changed) = match self.change_room(id, add).await {
            Ok(done) => done,
            Err(e) => {
                if reserved {
                    let _ = self.release_room(member, id).await;
                }
                return Err(e);
            }
        };
        if changed {
            if let Err(e) = self.confirm_reservation(member, id, MAX_ROOMS_PER_USER).await {
                self.take_back(id, member).await?;
                return Err(e);
            }
        }
        Ok((room, changed))
    }

    /// Removes `member` from room `id` again (an add that must not stand)
    /// and releases its reservation.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn take_back(&self, id: &RoomId, member: Key) -> Result<(), Error> {
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

/// The members-per-room refusal.
pub(crate) fn members_cap() -> Error {
    Error::LimitReached(format!("a room has at most {MAX_MEMBERS_PER_ROOM} members"))
}
