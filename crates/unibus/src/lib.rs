//! unibus client library: an [`Identity`] (Ed25519 signing key + X25519 key, the
//! wallet) and a [`Client`] that connects through the auth callout with the
//! identity's nkey and its own inbox prefix, and calls the control plane
//! with typed requests, replies and errors.
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
mod identity;
mod messaging;

/// The wire contract this client speaks (the `unibus-proto` crate).
pub use unibus_proto as proto;

pub use identity::{Identity, IdentityError};
pub use messaging::{Inbox, Incoming};

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use unibus_proto::error::Error;
use unibus_proto::subjects;
use unibus_proto::wire::ErrorReply;

/// What a client call can end in.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a wire error.
    #[error("{code}: {0}", code = .0.code())]
    Service(Error),
    /// The callout (or server) refused the connection.
    #[error("authorization violation: the server refused this key")]
    NotAuthorized,
    /// The server refused a publish or subscribe on this subject.
    #[error("permission denied on {0}")]
    PermissionDenied(String),
    /// A message could not be encrypted for its recipients.
    #[error("cannot encrypt: {0}")]
    Seal(String),
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
    events: broadcast::Sender<String>,
    /// Keys this identity has blocked, as last heard from the service, and
    /// when (shared by clones; the inbox drops their DMs).
    blocked: Arc<RwLock<Blocked>>,
}

impl Client {
    /// Connects through the auth callout.
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused.
    pub async fn connect(urls: &str, identity: &Identity) -> Result<Client, ClientError> {
        Self::connect_with(urls, identity, connect_options(identity)).await
    }

    /// Connects with prepared options (see [`connect_options`]); an event
    /// callback set on them is replaced.
    ///
    /// # Errors
    /// [`ClientError::NotAuthorized`] when the key is refused.
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
                let _ = tx.send(event.to_string());
            }
        });
        let nats = options.connect(urls).await.map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => ClientError::NotAuthorized,
            _ => ClientError::Connect(e.to_string()),
        })?;
        Ok(Client {
            nats,
            identity: identity.clone(),
            sign_pub: identity.sign_pub_hex(),
            events,
            blocked: Arc::default(),
        })
    }

    /// The underlying NATS connection (data plane).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// This identity's `sign_pub` hex.
    pub fn sign_pub(&self) -> &str {
        &self.sign_pub
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
    fn set_blocked(&self, list: &[String]) {
        let mut b = self.blocked.write().unwrap_or_else(|p| p.into_inner());
        b.keys = list.iter().cloned().collect();
        b.loaded = Some(std::time::Instant::now());
    }

    /// Connection events as text (`connected`, `disconnected`,
    /// `server error: ...`, `client error: authorization violation`).
    pub fn events(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// One control-plane request with a typed reply.
    ///
    /// # Errors
    /// [`ClientError::Service`] for wire errors,
    /// [`ClientError::PermissionDenied`] within moments when the server
    /// refuses the subject, or transport errors.
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
    /// [`ClientError::PermissionDenied`] or transport errors.
    pub async fn call_raw(&self, subject: &str, body: Vec<u8>) -> Result<async_nats::Message, ClientError> {
        let mut events = self.events.subscribe();
        let inbox = subjects::inbox_prefix(self.sign_pub());
        let request = self.nats.request(subject.to_string(), body.into());
        tokio::select! {
            reply = request => reply.map_err(|e| ClientError::Request { subject: subject.into(), reason: e.to_string() }),
            denied = watch_violation(&mut events, subject, Some(&inbox)) => Err(denied),
        }
    }

    /// Publishes raw bytes and confirms the server accepted the subject.
    ///
    /// # Errors
    /// [`ClientError::PermissionDenied`] when the server refused it.
    pub async fn publish_checked(&self, subject: &str, body: Vec<u8>) -> Result<(), ClientError> {
        let mut events = self.events.subscribe();
        let io = |e: &dyn std::fmt::Display| ClientError::Request {
            subject: subject.into(),
            reason: e.to_string(),
        };
        self.nats.publish(subject.to_string(), body.into()).await.map_err(|e| io(&e))?;
        self.nats.flush().await.map_err(|e| io(&e))?;
        match tokio::time::timeout(VIOLATION_GRACE, watch_violation(&mut events, subject, None)).await {
            Ok(denied) => Err(denied),
            Err(_) => Ok(()),
        }
    }
}

/// Resolves when the server reports a permission violation for `subject`
/// (publish) or for the inbox (subscribe).
async fn watch_violation(
    events: &mut broadcast::Receiver<String>,
    subject: &str,
    inbox: Option<&str>,
) -> ClientError {
    let publish = format!("Permissions Violation for Publish to \"{subject}\"");
    let subscribe = inbox.map(|i| format!("Permissions Violation for Subscription to \"{i}"));
    loop {
        match events.recv().await {
            Ok(e) if e.contains(&publish) => return ClientError::PermissionDenied(subject.to_string()),
            Ok(e) if subscribe.as_ref().is_some_and(|s| e.contains(s)) => {
                return ClientError::PermissionDenied(inbox.unwrap_or_default().to_string());
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
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
