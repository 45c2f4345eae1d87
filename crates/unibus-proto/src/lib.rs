//! The unibus wire contract (docs/protocol.md), shared by the service, the
//! client library and the fuzz targets. Pure: no I/O, no NATS connection.
//!
//! - [`subjects`]: every subject, bucket, header and account name.
//! - [`error`]: the domain error and its one mapping to wire codes.
//! - [`wire`]: control-plane request/reply bodies, strict decoding.
//! - [`endpoint`]: the endpoint table (subject, request, reply, access).
//! - [`ids`]: checked keys, ids and times ([`SignPub`], [`RoomId`], ...).
//! - [`model`]: the records kept in KV and shown in replies.
//! - [`binding`]: device bindings (`kex_sig`) and nonce signing hygiene.
//! - [`safety`]: safety numbers over an account's active device keys.
//! - [`keys`]: hex keys, weak-key checks, nonce signatures, invite tokens.
//! - [`e2e`]: the end-to-end message envelope (seal, open, replay guard).

pub mod binding;
pub mod e2e;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod keys;
pub mod model;
pub mod safety;
pub mod subjects;
pub mod wire;

pub use binding::KexSig;
pub use endpoint::{Access, Endpoint};
pub use error::Error;
pub use ids::{InviteId, KexPub, RoomId, SignPub, Timestamp};
