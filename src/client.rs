//! The Rust client: an [`Identity`] (Ed25519 signing key + X25519 key, the
//! wallet) and a [`Client`] that connects through the auth callout with the
//! identity's nkey and its own inbox prefix, and calls the control plane
//! with typed requests, replies and errors.
//!
//! ```no_run
//! # async fn demo(invite: &str) -> Result<(), unibus::client::ClientError> {
//! use unibus::client::{Client, Identity};
//! let me = Identity::generate();
//! let guest = Client::connect("nats://127.0.0.1:4222", &me).await?;
//! let user = guest.register(invite, Some("alice")).await?;
//! assert_eq!(user.sign_pub, me.sign_pub_hex());
//! # Ok(()) }
//! ```

use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::User;
use crate::model::{Invite, Room};
use crate::proto::{
    DeleteReply, Empty, ErrorReply, IdRequest, InviteCreateReply, InviteCreateRequest, InviteListReply,
    InviteListRequest, InviteReply, LookupReply, MemberRequest, PublicUser, RegisterRequest, RevokeReply,
    RoomCreateRequest, RoomListReply, RoomListRequest, RoomReply, SignPubRequest, UserListReply,
    UserListRequest, UserReply,
};
use crate::subjects;

/// A person's keys. Never leaves the device; has no `Debug`.
pub struct Identity {
    signing: ed25519_dalek::SigningKey,
    kex: x25519_dalek::StaticSecret,
}

impl Identity {
    /// Fresh keys from the OS CSPRNG.
    pub fn generate() -> Identity {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Identity::from_secrets(
            seed,
            x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng).to_bytes(),
        )
    }

    /// Rebuilds an identity from its two 32-byte secrets.
    pub fn from_secrets(sign_seed: [u8; 32], kex_secret: [u8; 32]) -> Identity {
        Identity {
            signing: ed25519_dalek::SigningKey::from_bytes(&sign_seed),
            kex: x25519_dalek::StaticSecret::from(kex_secret),
        }
    }

    /// Ed25519 public key, lowercase hex (the user id).
    pub fn sign_pub_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// X25519 public key, lowercase hex.
    pub fn kex_pub_hex(&self) -> String {
        hex::encode(x25519_dalek::PublicKey::from(&self.kex).as_bytes())
    }

    /// The NATS user nkey seed (`SU...`) of the signing key: the same key,
    /// usable by any NATS client.
    pub fn nkey_seed(&self) -> String {
        nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, self.signing.to_bytes())
            .and_then(|kp| kp.seed())
            .expect("a 32-byte Ed25519 seed always encodes")
    }

    /// The NATS user public nkey (`U...`).
    pub fn nkey_public(&self) -> String {
        nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, self.signing.to_bytes())
            .map(|kp| kp.public_key())
            .expect("a 32-byte Ed25519 seed always encodes")
    }
}

/// What a client call can end in.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a wire error.
    #[error("{code}: {0}", code = .0.code())]
    Service(Error),
    /// The callout (or server) refused the connection.
    #[error("authorization violation: the server refused this key")]
    NotAuthorized,
    /// Could not connect for another reason.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No reply (timeout, no responders, permission denied on the subject).
    #[error("request on {subject} failed: {reason}")]
    Request {
        /// Subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The reply did not decode.
    #[error("unreadable reply on {0}: {1}")]
    Decode(String, String),
}

impl ClientError {
    /// The wire error, if the service sent one.
    pub fn service_error(&self) -> Option<&Error> {
        match self {
            ClientError::Service(e) => Some(e),
            _ => None,
        }
    }
}

/// Connect options for `identity`: nkey auth (nonce signed) and the
/// per-identity inbox prefix that its permissions require.
pub fn connect_options(identity: &Identity) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_nkey(identity.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&identity.sign_pub_hex()))
        .request_timeout(Some(Duration::from_secs(5)))
}

/// A connection of one identity.
pub struct Client {
    nats: async_nats::Client,
    sign_pub: String,
    kex_pub: String,
}

impl Client {
    /// Connects through the auth callout.
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused.
    pub async fn connect(urls: &str, identity: &Identity) -> Result<Client, ClientError> {
        Self::connect_with(urls, identity, connect_options(identity)).await
    }

    /// Connects with prepared options (see [`connect_options`]).
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused.
    pub async fn connect_with(
        urls: &str,
        identity: &Identity,
        options: async_nats::ConnectOptions,
    ) -> Result<Client, ClientError> {
        let nats = options.connect(urls).await.map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => ClientError::NotAuthorized,
            _ => ClientError::Connect(e.to_string()),
        })?;
        Ok(Client { nats, sign_pub: identity.sign_pub_hex(), kex_pub: identity.kex_pub_hex() })
    }

    /// The underlying NATS connection (data plane).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// One control-plane request with a typed reply.
    ///
    /// # Errors
    /// [`ClientError::Service`] for wire errors, or transport errors.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body =
            serde_json::to_vec(request).map_err(|e| ClientError::Decode(subject.into(), e.to_string()))?;
        let msg = self.call_raw(subject, body).await?;
        decode_reply(subject, &msg)
    }

    /// Sends raw bytes to a control subject and returns the raw reply.
    ///
    /// # Errors
    /// Transport errors only.
    pub async fn call_raw(&self, subject: &str, body: Vec<u8>) -> Result<async_nats::Message, ClientError> {
        self.nats
            .request(subject.to_string(), body.into())
            .await
            .map_err(|e| ClientError::Request { subject: subject.into(), reason: e.to_string() })
    }

    /// This identity's `sign_pub` hex.
    pub fn sign_pub(&self) -> &str {
        &self.sign_pub
    }

    /// Redeems an invite (token or link) for this identity.
    ///
    /// # Errors
    /// Wire errors such as `invite_used`.
    pub async fn register(&self, invite: &str, name: Option<&str>) -> Result<User, ClientError> {
        let req = RegisterRequest {
            invite: invite.into(),
            kex_pub: self.kex_pub.clone(),
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
}

/// Turns a reply into `T` or the wire error it carries.
///
/// # Errors
/// [`ClientError::Service`] or [`ClientError::Decode`].
pub fn decode_reply<T: DeserializeOwned>(subject: &str, msg: &async_nats::Message) -> Result<T, ClientError> {
    let is_error = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_SERVICE_ERROR_CODE)).is_some();
    if is_error {
        let reply: ErrorReply = serde_json::from_slice(&msg.payload)
            .map_err(|e| ClientError::Decode(subject.into(), e.to_string()))?;
        return Err(ClientError::Service(Error::from_wire(&reply.error.code, &reply.error.message)));
    }
    serde_json::from_slice(&msg.payload).map_err(|e| ClientError::Decode(subject.into(), e.to_string()))
}
