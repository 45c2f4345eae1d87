//! Control-plane calls of DESIGN section 5, one typed method each.

use crate::{Client, ClientError};
use unibus_proto::model::{Invite, Room, User};
use unibus_proto::subjects;
use unibus_proto::wire::{
    BlockListReply, DeleteReply, Empty, IdRequest, InviteCreateReply, InviteCreateRequest, InviteListReply,
    InviteListRequest, InviteReply, LookupReply, MemberRequest, PublicUser, RegisterRequest, RevokeReply,
    RoomCreateRequest, RoomListReply, RoomListRequest, RoomReply, SignPubRequest, UserListReply,
    UserListRequest, UserReply,
};

impl Client {
    /// Redeems an invite (token or link) for this identity.
    ///
    /// # Errors
    /// Wire errors such as `invite_used`.
    pub async fn register(&self, invite: &str, name: Option<&str>) -> Result<User, ClientError> {
        let req = RegisterRequest {
            invite: invite.into(),
            kex_pub: self.identity.kex_pub_hex(),
            name: name.map(Into::into),
        };
        Ok(self.call::<_, UserReply>(subjects::REGISTER, &req).await?.user)
    }

    /// The caller's own record.
    ///
    /// # Errors
    /// Wire errors.
    pub async fn whoami(&self) -> Result<User, ClientError> {
        Ok(self.call::<_, UserReply>(subjects::WHOAMI, &Empty {}).await?.user)
    }

    /// Another active user's public record.
    ///
    /// # Errors
    /// Wire errors.
    pub async fn lookup(&self, sign_pub: &str) -> Result<PublicUser, ClientError> {
        let req = SignPubRequest { sign_pub: sign_pub.into() };
        Ok(self.call::<_, LookupReply>(subjects::USER_LOOKUP, &req).await?.user)
    }

    /// Mints an invite (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn create_invite(&self, req: &InviteCreateRequest) -> Result<InviteCreateReply, ClientError> {
        self.call(subjects::ADMIN_INVITE_CREATE, req).await
    }

    /// One page of invites (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn list_invites(&self, req: &InviteListRequest) -> Result<InviteListReply, ClientError> {
        self.call(subjects::ADMIN_INVITE_LIST, req).await
    }

    /// One invite by id (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn get_invite(&self, id: &str) -> Result<Invite, ClientError> {
        Ok(self
            .call::<_, InviteReply>(subjects::ADMIN_INVITE_GET, &IdRequest { id: id.into() })
            .await?
            .invite)
    }

    /// Cancels an invite (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn cancel_invite(&self, id: &str) -> Result<Invite, ClientError> {
        Ok(self
            .call::<_, InviteReply>(subjects::ADMIN_INVITE_CANCEL, &IdRequest { id: id.into() })
            .await?
            .invite)
    }

    /// One page of users (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn list_users(&self, req: &UserListRequest) -> Result<UserListReply, ClientError> {
        self.call(subjects::ADMIN_USER_LIST, req).await
    }

    /// One user (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn get_user(&self, sign_pub: &str) -> Result<User, ClientError> {
        let req = SignPubRequest { sign_pub: sign_pub.into() };
        Ok(self.call::<_, UserReply>(subjects::ADMIN_USER_GET, &req).await?.user)
    }

    /// Revokes a user and closes its connections (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn revoke_user(&self, sign_pub: &str) -> Result<RevokeReply, ClientError> {
        self.call(subjects::ADMIN_USER_REVOKE, &SignPubRequest { sign_pub: sign_pub.into() }).await
    }

    /// Restores a revoked user (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn restore_user(&self, sign_pub: &str) -> Result<User, ClientError> {
        let req = SignPubRequest { sign_pub: sign_pub.into() };
        Ok(self.call::<_, UserReply>(subjects::ADMIN_USER_RESTORE, &req).await?.user)
    }

    /// Deletes a user and closes its connections (admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn delete_user(&self, sign_pub: &str) -> Result<DeleteReply, ClientError> {
        self.call(subjects::ADMIN_USER_DELETE, &SignPubRequest { sign_pub: sign_pub.into() }).await
    }

    /// Creates a room owned by this identity. The server closes this
    /// connection after the reply; it reconnects with the room granted.
    ///
    /// # Errors
    /// Wire errors.
    pub async fn create_room(&self, name: &str) -> Result<Room, ClientError> {
        Ok(self
            .call::<_, RoomReply>(subjects::ROOM_CREATE, &RoomCreateRequest { name: name.into() })
            .await?
            .room)
    }

    /// One room (members and admins).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn get_room(&self, id: &str) -> Result<Room, ClientError> {
        Ok(self.call::<_, RoomReply>(subjects::ROOM_GET, &IdRequest { id: id.into() }).await?.room)
    }

    /// One page of the rooms this identity is in.
    ///
    /// # Errors
    /// Wire errors.
    pub async fn list_rooms(&self, req: &RoomListRequest) -> Result<RoomListReply, ClientError> {
        self.call(subjects::ROOM_LIST, req).await
    }

    /// Adds a member (room owner or admin).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn add_member(&self, room: &str, sign_pub: &str) -> Result<Room, ClientError> {
        let req = MemberRequest { id: room.into(), sign_pub: sign_pub.into() };
        Ok(self.call::<_, RoomReply>(subjects::ROOM_MEMBER_ADD, &req).await?.room)
    }

    /// Removes a member (owner, admin, or the member itself).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn remove_member(&self, room: &str, sign_pub: &str) -> Result<Room, ClientError> {
        let req = MemberRequest { id: room.into(), sign_pub: sign_pub.into() };
        Ok(self.call::<_, RoomReply>(subjects::ROOM_MEMBER_REMOVE, &req).await?.room)
    }

    /// Blocks a key (any well-formed key but your own); returns the whole
    /// block list. DMs from it are dropped by this client's inbox.
    ///
    /// # Errors
    /// Wire errors: `bad_request` for your own key, `limit_reached` past
    /// 1,000 keys.
    pub async fn block_add(&self, sign_pub: &str) -> Result<Vec<String>, ClientError> {
        let req = SignPubRequest { sign_pub: sign_pub.into() };
        let list = self.call::<_, BlockListReply>(subjects::BLOCK_ADD, &req).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }

    /// Unblocks a key; returns the whole block list.
    ///
    /// # Errors
    /// Wire errors.
    pub async fn block_remove(&self, sign_pub: &str) -> Result<Vec<String>, ClientError> {
        let req = SignPubRequest { sign_pub: sign_pub.into() };
        let list = self.call::<_, BlockListReply>(subjects::BLOCK_REMOVE, &req).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }

    /// This identity's block list (also refreshes the local copy).
    ///
    /// # Errors
    /// Wire errors.
    pub async fn block_list(&self) -> Result<Vec<String>, ClientError> {
        let list = self.call::<_, BlockListReply>(subjects::BLOCK_LIST, &Empty {}).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }
}
