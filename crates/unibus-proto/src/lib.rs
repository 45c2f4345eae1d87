//! The unibus wire contract (docs/protocol.md), shared by the service, the
//! client library and the fuzz targets. Pure: no I/O, no NATS connection.
//!
//! Layered, each module importing only those above it in this list:
//! - [`error`]: the domain error and its one mapping to wire codes.
//! - [`subjects`]: every subject, bucket, header and account name.
//! - [`keys`]: hex keys, weak-key checks, nonce signatures, invite tokens.
//! - [`ids`]: keys, ids, actors and times ([`Key`], [`SignPub`],
//!   [`RoomId`], [`Timestamp`], ...).
//! - [`records`]: the records kept in KV and shown in replies.
//! - [`binding`]: device bindings (`kex_sig`) and nonce signing hygiene.
//! - [`devicelist`]: device lists signed by the account (signed bytes,
//!   hash chain, strict checks, what a version changes).
//! - [`wire`]: control-plane request/reply bodies, strict decoding.
//! - [`e2e`]: the end-to-end message envelope (seal, open, replay guard).
//! - [`mail`]: messages that wait (`unibus.mail.*` bodies, the checks of
//!   a message to store).
//! - [`endpoint`]: the endpoint table (subject, request, reply, access).
//! - [`safety`]: safety numbers over an account's active device keys.

pub mod binding;
pub mod devicelist;
pub mod e2e;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod keys;
pub mod mail;
pub mod records;
pub mod safety;
pub mod subjects;
pub mod wire;

pub use binding::KexSig;
pub use endpoint::{Access, Endpoint};
pub use error::Error;
pub use ids::{Actor, InviteId, KexPub, Key, RoomId, SignPub, Timestamp};
