//! unibus client library: an [`Identity`] (Ed25519 signing key + X25519 key, the
//! wallet) and a [`Client`] that connects through the auth callout with the
//! identity's nkey and its own inbox prefix, and calls the control plane
//! with typed requests, replies and errors.
//!
//! Layout: `identity` (the wallet and its seed file), `calls` (one typed
//! method per control subject, refusing replies about something else than
//! was asked), `messaging` (end-to-end encrypted sends), `inbox` (the
//! [`Inbox`] stream: messages checked, no reply taken for a message or a
//! notice, what waited first), `reader` (judging one message, live or
//! waited, and catching up over the mail channels), `mailstate` (the
//! cursors and accepted messages kept beside the identity),
//! `notices` (this account's device notices), `contacts` (the
//! device sets seen per contact account, checked before sealing and on
//! receipt), `events` (connection [`Event`]s and the permission violations
//! read from them), `error` ([`ClientError`]).
//! `examples/hello.rs` registers, listens and sends (`scripts/example`).
//!
//! ```no_run
//! # async fn demo(invite: &str) -> Result<(), unibus::ClientError> {
//! use unibus::{Client, Identity};
//! let me = Identity::generate();
//! let guest = Client::connect("nats://127.0.0.1:4222", &me).await?;
//! let user = guest.register(invite, Some("alice")).await?;
//! assert_eq!(user.sign_pub, me.sign_pub_hex());
//! # Ok(()) }
//! ```

mod calls;
mod contacts;
mod error;
mod events;
mod identity;
mod inbox;
mod lists;
mod mailstate;
mod messaging;
mod notices;
mod reader;

/// The wire contract this client speaks (the `unibus-proto` crate).
pub use unibus_proto as proto;

/// The README's Rust snippet, compiled by `cargo test` as a doctest so
/// that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// A connection event, as [`Client::events`] hands it out.
pub use async_nats::Event;
pub use contacts::DEVICES_MAX_AGE;
pub use contacts::{
    CheckedDevice, Contacts, ContactsError, DeviceChange, DeviceRefused, DeviceSet, Hold, KnownAccount,
    KnownDevice, ListNotice, ListReport, Verdict, judge,
};
pub use error::{ClientError, TransportError};
pub use identity::{BUNDLE_PREFIX, Bundle, Identity, IdentityError};
pub use inbox::{CATCH_UP_EVERY, Inbox, Incoming, LIVE_HOLD_MAX};
pub use lists::LIST_ATTEMPTS;
pub use mailstate::{MailState, MailStateError};
pub use messaging::{SEND_ATTEMPTS, Sent};

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use events::watch_violation;

use unibus_proto::Key;
use unibus_proto::error::Error;
use unibus_proto::subjects;
use unibus_proto::wire::ErrorReply;

/// Connect options for `identity`: nkey auth and the per-device inbox
/// prefix that its permissions require. The nonce is signed only when it
/// is shaped like nats-server's ([`Identity::sign_nonce`]); any other nonce
/// fails the connect instead.
pub fn connect_options(identity: &Identity) -> async_nats::ConnectOptions {
    let signer = identity.clone();
    async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let signer = signer.clone();
        async move {
            let signature = signer.sign_nonce(&nonce).map_err(async_nats::AuthError::new)?;
            let mut auth = async_nats::Auth::new();
            auth.nkey = Some(signer.nkey_public());
            auth.signature = Some(signature);
            Ok(auth)
        }
    })
    .custom_inbox_prefix(subjects::inbox_prefix(&identity.sign_pub_hex()))
    .request_timeout(Some(Duration::from_secs(5)))
}

/// The local copy of the block list.
struct Blocked {
    keys: HashSet<String>,
    /// When it was last loaded; `None` = never.
    loaded: Option<std::time::Instant>,
    /// Reload before judging a DM when older than this.
    max_age: Duration,
}

impl Default for Blocked {
    fn default() -> Self {
        Blocked { keys: HashSet::new(), loaded: None, max_age: BLOCKS_MAX_AGE }
    }
}

/// Default age after which the block list is reloaded before the inbox
/// judges the next DM, so that a block made elsewhere (another process of
/// the same key, such as `unibus block`) holds within this bound without a
/// request per message. See [`Client::set_blocks_max_age`].
pub const BLOCKS_MAX_AGE: Duration = Duration::from_secs(30);

/// How long after a flush a permission error for it may still arrive.
const VIOLATION_GRACE: Duration = Duration::from_millis(50);

/// A connection of one identity. Permission violations and authorization
/// failures reported by the server become typed errors of the call that
/// caused them.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    identity: Identity,
    sign_pub: String,
    /// The account this device belongs to (its own key for a first device).
    account: String,
    events: broadcast::Sender<Event>,
    /// Keys this identity has blocked, as last heard from the service, and
    /// when (shared by clones; the inbox drops their DMs).
    blocked: Arc<RwLock<Blocked>>,
    /// Contacts' device sets as seen, and recent lookups of them (shared
    /// by clones).
    devices: Arc<std::sync::Mutex<contacts::Directory>>,
    /// The mail channels' cursors and the accepted messages (shared by
    /// clones).
    mail: Arc<std::sync::Mutex<MailState>>,
}

impl Client {
    /// Connects through the auth callout.
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused (unknown keys
    /// are admitted as guests; revoked or deleted keys and guest floods
    /// are not), [`ClientError::Connect`] when the server cannot be reached.
    pub async fn connect(urls: &str, identity: &Identity) -> Result<Client, ClientError> {
        Self::connect_with(urls, identity, connect_options(identity)).await
    }

    /// Connects with prepared options (see [`connect_options`]); an event
    /// callback set on them is replaced.
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused,
    /// [`ClientError::Connect`] otherwise.
    pub async fn connect_with(
        urls: &str,
        identity: &Identity,
        options: async_nats::ConnectOptions,
    ) -> Result<Client, ClientError> {
        let (events, _) = broadcast::channel(256);
        let tx = events.clone();
        let options = options.event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
        let nats = options.connect(urls).await.map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => ClientError::NotAuthorized,
            _ => ClientError::Connect(e),
        })?;
        Ok(Client {
            nats,
            identity: identity.clone(),
            sign_pub: identity.sign_pub_hex(),
            account: identity.account_hex(),
            events,
            blocked: Arc::default(),
            devices: Arc::default(),
            mail: Arc::default(),
        })
    }

    /// The underlying NATS connection (data plane).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// This device's `sign_pub` hex (its key; see [`Client::account`]).
    pub fn sign_pub(&self) -> &str {
        &self.sign_pub
    }

    /// The account this device belongs to, hex: its own key for an
    /// account's first device. DMs to the account arrive on
    /// `unibus.msg.dm.<account>`.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// True when `sign_pub` is on this identity's block list as last
    /// loaded (by [`Client::block_list`], the block calls, or the inbox).
    pub fn is_blocked(&self, sign_pub: &str) -> bool {
        self.blocked.read().unwrap_or_else(|p| p.into_inner()).keys.contains(&sign_pub.to_ascii_lowercase())
    }

    /// Sets how old the local block list may get before the inbox reloads
    /// it ahead of the next DM (default [`BLOCKS_MAX_AGE`]; zero reloads
    /// before every DM). Applies to every clone of this client.
    pub fn set_blocks_max_age(&self, age: Duration) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).max_age = age;
    }

    /// True when the local block list was never loaded or is older than
    /// its maximum age.
    fn blocks_stale(&self) -> bool {
        let b = self.blocked.read().unwrap_or_else(|p| p.into_inner());
        b.loaded.is_none_or(|t| t.elapsed() >= b.max_age)
    }

    /// Replaces the local copy of the block list with the service's.
    fn set_blocked(&self, list: &[Key]) {
        let mut b = self.blocked.write().unwrap_or_else(|p| p.into_inner());
        b.keys = list.iter().map(Key::to_hex).collect();
        b.loaded = Some(std::time::Instant::now());
    }

    /// Replaces this device's mail state (for example with
    /// [`MailState::open`] of the file beside the identity,
    /// [`MailState::path_for`]), so that what was handed over before is
    /// not handed over again and catching up starts where it stopped. The
    /// default is an empty state in memory. Applies to every clone of this
    /// client and to inboxes opened afterwards.
    pub fn set_mail_state(&self, state: MailState) {
        *self.mail.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Runs `f` on this device's mail state.
    pub fn with_mail_state<T>(&self, f: impl FnOnce(&mut MailState) -> T) -> T {
        f(&mut self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// This connection's events from now on ([`Event::Connected`],
    /// [`Event::Disconnected`], [`Event::ServerError`] such as a
    /// permission violation, [`Event::ClientError`] such as a refused
    /// reconnect). A receiver that falls more than 256 events behind
    /// loses the oldest ([`broadcast::error::RecvError::Lagged`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// One control-plane request with a typed reply.
    ///
    /// # Errors
    /// [`ClientError::Service`] with the endpoint's wire codes (every
    /// endpoint may answer `bad_request`, `unauthenticated`, `forbidden`,
    /// `limit_reached`, `unavailable` or `internal`),
    /// [`ClientError::PermissionDenied`] within moments when the server
    /// refuses the subject, [`ClientError::Request`] (no reply, timeout)
    /// and [`ClientError::Decode`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::decode(subject, e))?;
        let msg = self.call_raw(subject, body).await?;
        decode_reply(subject, &msg)
    }

    /// Sends raw bytes to a control subject and returns the raw reply
    /// (a wire error stays in its headers, see [`decode_reply`]).
    ///
    /// # Errors
    /// [`ClientError::PermissionDenied`] when the server refuses the
    /// subject or the reply inbox, [`ClientError::Request`] (no reply,
    /// timeout).
    pub async fn call_raw(&self, subject: &str, body: Vec<u8>) -> Result<async_nats::Message, ClientError> {
        let mut events = self.events.subscribe();
        let inbox = subjects::inbox_prefix(self.sign_pub());
        let request = self.nats.request(subject.to_string(), body.into());
        tokio::select! {
            reply = request => reply.map_err(|e| ClientError::transport(subject, e)),
            denied = watch_violation(&mut events, subject, Some(&inbox)) => Err(denied),
        }
    }

    /// Publishes raw bytes and confirms the server accepted the subject.
    ///
    /// # Errors
    /// [`ClientError::PermissionDenied`] when the server refused it,
    /// [`ClientError::Request`] when the publish or flush failed.
    pub async fn publish_checked(&self, subject: &str, body: Vec<u8>) -> Result<(), ClientError> {
        let mut events = self.events.subscribe();
        let published = self.nats.publish(subject.to_string(), body.into()).await;
        published.map_err(|e| ClientError::transport(subject, e))?;
        self.nats.flush().await.map_err(|e| ClientError::transport(subject, e))?;
        match tokio::time::timeout(VIOLATION_GRACE, watch_violation(&mut events, subject, None)).await {
            Ok(denied) => Err(denied),
            Err(_) => Ok(()),
        }
    }
}

/// Turns a reply into `T` or the wire error it carries.
///
/// # Errors
/// [`ClientError::Service`] when the reply carries a wire error (any wire
/// code), [`ClientError::Decode`] when it is not the expected JSON.
pub fn decode_reply<T: DeserializeOwned>(subject: &str, msg: &async_nats::Message) -> Result<T, ClientError> {
    let is_error = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_SERVICE_ERROR_CODE)).is_some();
    if is_error {
        let reply: ErrorReply =
            serde_json::from_slice(&msg.payload).map_err(|e| ClientError::decode(subject, e))?;
        return Err(ClientError::Service(Error::from_wire(&reply.error.code, &reply.error.message)));
    }
    serde_json::from_slice(&msg.payload).map_err(|e| ClientError::decode(subject, e))
}
