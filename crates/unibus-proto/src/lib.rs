//! The unibus wire contract (docs/protocol.md), shared by the service, the
//! client library and the fuzz targets. Pure: no I/O, no NATS connection.
//!
//! - [`subjects`]: every subject, bucket, header and account name.
//! - [`error`]: the domain error and its one mapping to wire codes.
//! - [`wire`]: control-plane request/reply bodies, strict decoding.
//! - [`model`]: the records kept in KV and shown in replies.
//! - [`keys`]: hex keys, weak-key checks, nonce signatures, invite tokens.
//! - [`e2e`]: the end-to-end message envelope (seal, open, replay guard).

pub mod e2e;
pub mod error;
pub mod keys;
pub mod model;
pub mod subjects;
pub mod wire;

pub use error::Error;
