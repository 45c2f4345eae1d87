//! [`ClientError`]: what a client call can end in, with the underlying
//! async-nats, serde or envelope error kept as its `source()`.

use unibus_proto::e2e::SealError;
use unibus_proto::error::Error;

/// A transport error from async-nats (request, publish, subscribe or
/// flush), boxed because one call can fail in several of them.
pub type TransportError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a client call can end in.
///
/// `Display` describes the failure only; the cause (an async-nats, serde
/// or [`SealError`]) is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service answered with a wire error; [`Error::code`] is its wire
    /// code (`bad_request`, `unauthenticated`, `forbidden`, `not_found`,
    /// `invite_not_found`, `user_exists`, `invite_used`,
    /// `invite_cancelled`, `invite_expired`, `limit_reached`,
    /// `unavailable`, `internal`).
    #[error("{code}: {0}", code = .0.code())]
    Service(Error),
    /// The callout (or server) refused the connection: an unknown,
    /// revoked or deleted key, or a guest flood.
    #[error("authorization violation: the server refused this key")]
    NotAuthorized,
    /// The server refused a publish or subscribe on this subject (for a
    /// request: the control subject, or the reply inbox).
    #[error("permission denied on {0}")]
    PermissionDenied(String),
    /// A message was addressed to a user that is not active (revoked).
    #[error("cannot encrypt: {0} is not an active user")]
    Inactive(String),
    /// A message could not be encrypted for its recipients.
    #[error("cannot encrypt")]
    Seal(#[from] SealError),
    /// A recipient device was refused before sealing (its binding does not
    /// verify, or its `kex_pub` changed since first seen): nothing was sent.
    #[error("refusing to encrypt to a device")]
    Device(#[from] crate::contacts::DeviceRefused),
    /// A reply about another account than the one asked for: a lookup of
    /// `asked` answered with `got`'s record, `whoami` naming another
    /// account, or a device list with a device of another account. Refused
    /// (fail closed): whoever answers the control subjects could otherwise
    /// make this client seal to, or accept messages from, someone else.
    #[error("asked about account {asked} but the reply is about {got}; refused")]
    WrongAccount {
        /// The account asked about (this client's own for `whoami` and the
        /// device list).
        asked: String,
        /// The account the reply is about.
        got: String,
    },
    /// The account has no signed device list yet (made before lists): its
    /// oldest active device signs one first
    /// ([`Client::sign_device_list`](crate::Client::sign_device_list)).
    #[error("account {0} has no signed device list yet; its oldest active device signs one first")]
    NoDeviceList(String),
    /// A device list the service showed does not verify, is out of order,
    /// or does not list what it must: nothing is signed on top of it.
    #[error("the device list of account {account} is refused: {why}")]
    BadDeviceList {
        /// The account.
        account: String,
        /// Why.
        why: String,
    },
    /// A `whoami` reply naming another device than this one.
    #[error("asked about this device {asked} but the reply is about device {got}; refused")]
    WrongDevice {
        /// This device's key.
        asked: String,
        /// The device the reply names.
        got: String,
    },
    /// A `room.get` reply about another room than the one asked for.
    #[error("asked about room {asked} but the reply is about room {got}; refused")]
    WrongRoom {
        /// The room id asked for.
        asked: String,
        /// The room id in the reply.
        got: String,
    },
    /// Could not connect for another reason than a refused key.
    #[error("cannot connect")]
    Connect(#[source] async_nats::ConnectError),
    /// No reply, or the publish, subscribe or flush failed (timeout, no
    /// responders, connection closed).
    #[error("request on {subject} failed")]
    Request {
        /// The subject of the request, publish or subscription.
        subject: String,
        /// The async-nats error.
        #[source]
        source: TransportError,
    },
    /// A request did not encode, or a reply did not decode.
    #[error("unreadable reply on {subject}")]
    Decode {
        /// The subject of the request.
        subject: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The wire error, if the service sent one.
    pub fn service_error(&self) -> Option<&Error> {
        match self {
            ClientError::Service(e) => Some(e),
            _ => None,
        }
    }

    /// A transport failure on `subject`.
    pub(crate) fn transport(subject: &str, source: impl Into<TransportError>) -> ClientError {
        ClientError::Request { subject: subject.into(), source: source.into() }
    }

    /// A body on `subject` that did not encode or decode.
    pub(crate) fn decode(subject: &str, source: serde_json::Error) -> ClientError {
        ClientError::Decode { subject: subject.into(), source }
    }
}
