//! Control-plane calls of docs/protocol.md section 5: one generic
//! [`Client::request`] over the endpoint table ([`unibus_proto::endpoint`])
//! and a thin named method per endpoint.
//!
//! Every call can also end in the wire codes `unavailable` (the store cannot
//! answer) and `internal`, and in the non-wire errors of [`ClientError`]
//! (no reply, permission denied on the subject, unreadable reply). A named
//! method taking a key or id as `&str` checks it before sending: a value the
//! service would refuse is refused here with the same `bad_request`, as
//! [`ClientError::Service`]. A reply that names what was asked (a lookup,
//! `whoami`, a room, the device list) is refused when it names something
//! else ([`ClientError::WrongAccount`] and its siblings): whoever answers
//! the control subjects must not make this client seal to, or trust,
//! another account than the one it asked about.

use crate::{Client, ClientError};
use unibus_proto::endpoint::{self as ep, Endpoint};
use unibus_proto::error::Error;
use unibus_proto::ids::{InviteId, KexPub, Key, RoomId, SignPub};
use unibus_proto::records::{Device, Invite, Room, User};
use unibus_proto::wire::{
    AccountReply, DeleteReply, Empty, InviteCreateReply, InviteCreateRequest, InviteIdRequest,
    InviteListReply, InviteListRequest, LookupRequest, MemberRequest, PublicUser, RegisterRequest,
    RevokeReply, RoomCreateRequest, RoomIdRequest, RoomListReply, RoomListRequest, SignPubRequest,
    UserListReply, UserListRequest,
};

/// A locally checked argument; refused as the service would refuse it.
fn arg<T>(checked: Result<T, Error>) -> Result<T, ClientError> {
    checked.map_err(ClientError::Service)
}

fn key(sign_pub: &str) -> Result<SignPubRequest, ClientError> {
    Ok(SignPubRequest { sign_pub: arg(SignPub::parse(sign_pub))? })
}

fn member(room: &str, sign_pub: &str) -> Result<MemberRequest, ClientError> {
    Ok(MemberRequest { id: arg(RoomId::parse(room))?, sign_pub: arg(SignPub::parse(sign_pub))? })
}

/// `Ok` when a reply's account `got` is the account `asked` about (hex,
/// either letter case).
fn same_account(asked: &str, got: &Key) -> Result<(), ClientError> {
    match Key::parse(asked).is_ok_and(|k| k == *got) {
        true => Ok(()),
        false => Err(ClientError::WrongAccount { asked: asked.into(), got: got.to_string() }),
    }
}

impl Client {
    /// Calls endpoint `E` of the table with a typed request.
    ///
    /// # Errors
    /// The wire codes of `E` (see the named methods) as
    /// [`ClientError::Service`]; no reply or an unreadable one otherwise.
    pub async fn request<E: Endpoint>(&self, req: &E::Request) -> Result<E::Reply, ClientError> {
        self.call(E::SUBJECT, req).await
    }

    /// Redeems an invite (token or link) for this identity.
    ///
    /// # Errors
    /// `bad_request` (malformed token or link, bad name), `invite_not_found`,
    /// `user_exists`, `invite_used`, `invite_cancelled`, `invite_expired`,
    /// `limit_reached` (guest rate limits).
    pub async fn register(&self, invite: &str, name: Option<&str>) -> Result<User, ClientError> {
        let req = RegisterRequest {
            invite: invite.into(),
            kex_pub: arg(KexPub::parse(&self.identity.kex_pub_hex()))?,
            kex_sig: self.identity.bind(&self.identity.sign_pub_hex()),
            name: name.map(Into::into),
            device_list: self.identity.first_device_list(),
        };
        let reply = self.request::<ep::Register>(&req).await?;
        // The key that registers is the new account's id and first device.
        self.own_account_reply(&reply, self.sign_pub())?;
        Ok(reply.user)
    }

    /// Refuses a `whoami` or `register` reply that is not about this
    /// device of account `account`.
    fn own_account_reply(&self, reply: &AccountReply, account: &str) -> Result<(), ClientError> {
        same_account(account, &reply.user.sign_pub)?;
        same_account(account, &reply.device.account)?;
        match reply.device.device == self.sign_pub() {
            true => Ok(()),
            false => Err(ClientError::WrongDevice {
                asked: self.sign_pub().into(),
                got: reply.device.device.to_string(),
            }),
        }
    }

    /// The caller's account record.
    ///
    /// # Errors
    /// `forbidden` (not an active user); as [`Client::whoami_device`] for a
    /// reply about another account or device.
    pub async fn whoami(&self) -> Result<User, ClientError> {
        Ok(self.whoami_device().await?.user)
    }

    /// The caller's account record and this device's record.
    ///
    /// # Errors
    /// `forbidden` (not an active user or device);
    /// [`ClientError::WrongAccount`] or [`ClientError::WrongDevice`] when
    /// the reply is about another account or device than this one.
    pub async fn whoami_device(&self) -> Result<AccountReply, ClientError> {
        let reply = self.request::<ep::Whoami>(&Empty {}).await?;
        self.own_account_reply(&reply, self.account())?;
        Ok(reply)
    }

    /// This account's devices, every status, oldest first.
    ///
    /// # Errors
    /// `forbidden` (not an active user or device);
    /// [`ClientError::WrongAccount`] when a listed device is another
    /// account's.
    pub async fn list_devices(&self) -> Result<Vec<Device>, ClientError> {
        let devices = self.request::<ep::DeviceList>(&Empty {}).await?.devices;
        devices.iter().try_for_each(|d| same_account(self.account(), &d.account))?;
        Ok(devices)
    }

    /// Another user's public record (any status), refused unless it is
    /// about the account asked for.
    ///
    /// # Errors
    /// `bad_request` (malformed key), `not_found`, `forbidden` (caller not
    /// an active user); [`ClientError::WrongAccount`] when the reply's
    /// `user.sign_pub` is another account's.
    pub async fn lookup(&self, sign_pub: &str) -> Result<PublicUser, ClientError> {
        let req = LookupRequest { sign_pub: arg(SignPub::parse(sign_pub))?, since: None };
        let user = self.request::<ep::UserLookup>(&req).await?.user;
        same_account(req.sign_pub.as_str(), &user.sign_pub)?;
        Ok(user)
    }

    /// Mints an invite (admin).
    ///
    /// # Errors
    /// `bad_request` (TTL out of range, note too long), `forbidden`.
    pub async fn create_invite(&self, req: &InviteCreateRequest) -> Result<InviteCreateReply, ClientError> {
        self.request::<ep::AdminInviteCreate>(req).await
    }

    /// One page of invites (admin).
    ///
    /// # Errors
    /// `bad_request` (limit out of range, foreign cursor), `forbidden`.
    pub async fn list_invites(&self, req: &InviteListRequest) -> Result<InviteListReply, ClientError> {
        self.request::<ep::AdminInviteList>(req).await
    }

    /// One invite by id (admin).
    ///
    /// # Errors
    /// `bad_request` (malformed id), `not_found`, `forbidden`.
    pub async fn get_invite(&self, id: &str) -> Result<Invite, ClientError> {
        let req = InviteIdRequest { id: arg(InviteId::parse(id))? };
        Ok(self.request::<ep::AdminInviteGet>(&req).await?.invite)
    }

    /// Cancels an invite (admin); idempotent for cancelled or expired ones.
    ///
    /// # Errors
    /// `bad_request` (malformed id), `not_found`, `forbidden`, `invite_used`.
    pub async fn cancel_invite(&self, id: &str) -> Result<Invite, ClientError> {
        let req = InviteIdRequest { id: arg(InviteId::parse(id))? };
        Ok(self.request::<ep::AdminInviteCancel>(&req).await?.invite)
    }

    /// One page of users (admin).
    ///
    /// # Errors
    /// `bad_request` (limit out of range, foreign cursor), `forbidden`.
    pub async fn list_users(&self, req: &UserListRequest) -> Result<UserListReply, ClientError> {
        self.request::<ep::AdminUserList>(req).await
    }

    /// One user (admin).
    ///
    /// # Errors
    /// `bad_request` (malformed key), `not_found`, `forbidden`.
    pub async fn get_user(&self, sign_pub: &str) -> Result<User, ClientError> {
        Ok(self.request::<ep::AdminUserGet>(&key(sign_pub)?).await?.user)
    }

    /// Revokes a user and closes its connections (admin).
    ///
    /// # Errors
    /// `bad_request` (malformed key), `not_found`, `forbidden` (also for the
    /// last active admin).
    pub async fn revoke_user(&self, sign_pub: &str) -> Result<RevokeReply, ClientError> {
        self.request::<ep::AdminUserRevoke>(&key(sign_pub)?).await
    }

    /// Restores a revoked user (admin).
    ///
    /// # Errors
    /// `bad_request` (malformed key), `not_found`, `forbidden`.
    pub async fn restore_user(&self, sign_pub: &str) -> Result<User, ClientError> {
        Ok(self.request::<ep::AdminUserRestore>(&key(sign_pub)?).await?.user)
    }

    /// Deletes a user and closes its connections (admin).
    ///
    /// # Errors
    /// `bad_request` (malformed key), `not_found`, `forbidden` (also for the
    /// last active admin).
    pub async fn delete_user(&self, sign_pub: &str) -> Result<DeleteReply, ClientError> {
        self.request::<ep::AdminUserDelete>(&key(sign_pub)?).await
    }

    /// Creates a room owned by this identity. The server closes this
    /// connection after the reply; it reconnects with the room granted.
    ///
    /// # Errors
    /// `bad_request` (bad name), `forbidden`, `limit_reached` (256 rooms).
    pub async fn create_room(&self, name: &str) -> Result<Room, ClientError> {
        let req = RoomCreateRequest { name: name.into() };
        Ok(self.request::<ep::RoomCreate>(&req).await?.room)
    }

    /// One room (members and admins), refused unless it is the room asked
    /// for.
    ///
    /// # Errors
    /// `bad_request` (malformed id), `not_found`, `forbidden`;
    /// [`ClientError::WrongRoom`] when the reply is about another room.
    pub async fn get_room(&self, id: &str) -> Result<Room, ClientError> {
        let req = RoomIdRequest { id: arg(RoomId::parse(id))? };
        let room = self.request::<ep::RoomGet>(&req).await?.room;
        if room.id != req.id {
            return Err(ClientError::WrongRoom { asked: req.id.as_str().into(), got: room.id.to_string() });
        }
        Ok(room)
    }

    /// One page of the rooms this identity is in.
    ///
    /// # Errors
    /// `bad_request` (limit out of range, foreign cursor), `forbidden`.
    pub async fn list_rooms(&self, req: &RoomListRequest) -> Result<RoomListReply, ClientError> {
        self.request::<ep::RoomList>(req).await
    }

    /// Adds a member (room owner or admin).
    ///
    /// # Errors
    /// `bad_request` (malformed id or key), `not_found` (room, or not an
    /// active user), `forbidden` (not owner or admin, or the member has
    /// blocked you), `limit_reached` (512 members, 256 rooms).
    pub async fn add_member(&self, room: &str, sign_pub: &str) -> Result<Room, ClientError> {
        Ok(self.request::<ep::RoomMemberAdd>(&member(room, sign_pub)?).await?.room)
    }

    /// Removes a member (owner, admin, or the member itself).
    ///
    /// # Errors
    /// `bad_request` (malformed id or key), `not_found`, `forbidden`.
    pub async fn remove_member(&self, room: &str, sign_pub: &str) -> Result<Room, ClientError> {
        Ok(self.request::<ep::RoomMemberRemove>(&member(room, sign_pub)?).await?.room)
    }

    /// Blocks a key (any well-formed key but your own); returns the whole
    /// block list. DMs from it are dropped by this client's inbox.
    ///
    /// # Errors
    /// `bad_request` (malformed key, your own key), `forbidden`,
    /// `limit_reached` past 1,000 keys.
    pub async fn block_add(&self, sign_pub: &str) -> Result<Vec<Key>, ClientError> {
        let list = self.request::<ep::BlockAdd>(&key(sign_pub)?).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }

    /// Unblocks a key; returns the whole block list.
    ///
    /// # Errors
    /// `bad_request` (malformed key), `forbidden`.
    pub async fn block_remove(&self, sign_pub: &str) -> Result<Vec<Key>, ClientError> {
        let list = self.request::<ep::BlockRemove>(&key(sign_pub)?).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }

    /// This identity's block list (also refreshes the local copy).
    ///
    /// # Errors
    /// `forbidden` (not an active user).
    pub async fn block_list(&self) -> Result<Vec<Key>, ClientError> {
        let list = self.request::<ep::BlockList>(&Empty {}).await?.blocked;
        self.set_blocked(&list);
        Ok(list)
    }
}
