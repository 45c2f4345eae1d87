//! Room operations on `UNIBUS_rooms`. Membership lives in the room record
//! only; every change is a read-check-CAS loop in which the caller's rule
//! (who may do what) is re-judged on the record actually written over.

use rand::RngCore as _;

use super::{KvError, MAX_CAS_ATTEMPTS, Store, contention, get_many, take_page};
use crate::error::Error;
use crate::model::{Room, SCHEMA_VERSION, fmt_time, now};

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
    /// `unavailable`.
    pub async fn create_room(&self, name: &str, owner: &str) -> Result<Room, Error> {
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let t = fmt_time(now());
        let room = Room {
            v: SCHEMA_VERSION,
            id: hex::encode(raw),
            name: name.to_string(),
            owner: Some(owner.to_string()),
            members: vec![owner.to_string()],
            created_at: t.clone(),
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
    pub async fn get_room(&self, id: &str) -> Result<Option<(Room, u64)>, Error> {
        Ok(self.rooms.get(id).await?)
    }

    /// Room ids whose members include `sign_pub`, from the index made
    /// current with the leader first (the callout grants from this).
    ///
    /// # Errors
    /// `unavailable` when the index cannot be made current.
    pub async fn rooms_of_member(&self, sign_pub: &str) -> Result<Vec<String>, Error> {
        Ok(self.rooms_ix.sync_read(self.sync_limit(), |ix| ix.member_of(sign_pub)).await?)
    }

    /// One page of the rooms `member` is in, in id order after `after`.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_rooms_page(
        &self,
        member: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Room>, Option<String>), Error> {
        let ids = self
            .rooms_of_member(member)
            .await?
            .into_iter()
            .filter(|id| after.is_none_or(|a| id.as_str() > a));
        let (ids, next) = take_page(ids, limit);
        let rooms = get_many::<Room>(&self.rooms, ids)
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
        id: &str,
        rule: impl Fn(&Room) -> Result<RoomChange, Error>,
    ) -> Result<(Room, bool), Error> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (room, rev) =
                self.get_room(id).await?.ok_or_else(|| Error::NotFound("no such room".into()))?;
            let mut next = match rule(&room)? {
                RoomChange::Keep => return Ok((room, false)),
                RoomChange::Write(next) => next,
            };
            next.members.sort();
            next.members.dedup();
            next.updated_at = fmt_time(now());
            match self.rooms.update(id, &next, rev).await {
                Ok(new_rev) => {
                    let _ = self.rooms_ix.wait_for(new_rev, self.sync_limit()).await;
                    return Ok((next, true));
                }
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contention())
    }

    /// Removes `sign_pub` from every room it is a member of, and clears it
    /// as owner (such rooms are then managed by admins only).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn remove_from_all_rooms(&self, sign_pub: &str) -> Result<usize, Error> {
        self.rooms_ix.sync(self.sync_limit()).await?;
        let ids = self.rooms_ix.read(|ix| ix.rooms_of(sign_pub));
        let mut changed = 0;
        for id in ids {
            let strip = |room: &Room| {
                if !room.has_member(sign_pub) && room.owner.as_deref() != Some(sign_pub) {
                    return Ok(RoomChange::Keep);
                }
                let mut next = room.clone();
                next.members.retain(|m| m != sign_pub);
                if next.owner.as_deref() == Some(sign_pub) {
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
        Ok(changed)
    }
}
