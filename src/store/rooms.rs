//! The room records of `UNIBUS_rooms`. Membership lives in the room record
//! only; every change is a read-check-CAS ([`super::cas`]) in which the
//! caller's rule (who may do what) is re-judged on the record actually
//! written over. Both caps of docs/protocol.md section 5 hold exactly:
//! members per room inside that CAS ([`join`]), rooms per user through a
//! reservation taken before the room record lists the user (see
//! [`super::memberships`]); the operations that take and release those
//! reservations with the room are in [`super::spans`].

use super::cas::{Change, Retry};
use super::index::Fresh;
use super::{KvError, Store, take_page};
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, RoomId, Timestamp};
use unibus_proto::records::{Room, SCHEMA_VERSION};
use unibus_proto::wire::MAX_MEMBERS_PER_ROOM;

/// What a rule decides for one room record.
pub enum RoomChange {
    /// Write this record.
    Write(Room),
    /// Nothing to change (idempotent success).
    Keep,
}

impl Store {
    /// Creates the record of a new room owned by `owner`, its only member.
    pub(super) async fn create_room_record(&self, id: RoomId, name: &str, owner: Key) -> Result<Room, Error> {
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

    /// The members of room `id` as the rooms index shows it at freshness
    /// `fresh`; `None` for no such room.
    ///
    /// # Errors
    /// `unavailable` when the index cannot be proven current.
    pub async fn room_members(&self, id: &RoomId, fresh: Fresh) -> Result<Option<Vec<Key>>, Error> {
        let read = |ix: &super::folds::Rooms| ix.rooms.get(id).map(|(_, members)| members.clone());
        Ok(self.rooms_ix.read_fresh(fresh, self.sync_limit(), read).await?)
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
        self.change_room_from(id, None, rule).await
    }

    /// [`Store::change_room`], judged first on `known` (a record and
    /// revision just read) without reading again.
    pub(super) async fn change_room_from(
        &self,
        id: &RoomId,
        known: Option<(Room, u64)>,
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
        let retry = Retry { known, ..Retry::default() };
        let (done, rev) = self.rooms.modify_with(id, retry, judge).await?;
        if let (true, Some(rev)) = (done.1, rev) {
            let _ = self.rooms_ix.wait_for(rev, self.sync_limit()).await;
        }
        Ok(done)
    }
}

/// The members-per-room cap (docs/protocol.md section 5), the one place it
/// is judged: `room` with `member` added, `Keep` when it is a member
/// already, `limit_reached` when the room is full.
///
/// # Errors
/// `limit_reached`.
pub(super) fn join(room: &Room, member: Key) -> Result<RoomChange, Error> {
    if room.has_member(member) {
        return Ok(RoomChange::Keep);
    }
    if room.members.len() >= MAX_MEMBERS_PER_ROOM {
        return Err(Error::LimitReached(format!("a room has at most {MAX_MEMBERS_PER_ROOM} members")));
    }
    let mut next = room.clone();
    next.members.push(member);
    Ok(RoomChange::Write(next))
}
