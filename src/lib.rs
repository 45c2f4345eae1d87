//! unibus: NATS-native membership and admission. A person's identity is an
//! Ed25519 key (plus an X25519 key) that never leaves their device; unibusd
//! admits keys through single-use invites kept in JetStream KV and decides
//! every data-plane connect through the NATS auth callout.
//!
//! Layout:
//! - [`subjects`]: every subject, bucket, header and account name.
//! - [`error`]: the domain error and its one mapping to wire codes.
//! - [`proto`]: control-plane request/reply types, strict decoding.
//! - [`model`]: KV records (users, invites) and time helpers.
//! - [`keys`]: hex keys, weak-key checks, nonce signatures, invite tokens.
//! - [`store`]: typed KV operations, CAS only, redemption protocol, block
//!   lists and the room reservations behind the rooms-per-user cap.
//! - [`callout`]: the auth-callout responder (JWTs, xkey, permissions).
//! - [`kick`]: finding and closing live connections (CONNZ, KICK).
//! - [`limits`]: guest flood limits on `unibus.register`.
//! - [`metrics`]: the callout's latency histogram.
//! - [`service`]: the control-plane micro service and its handlers.
//! - [`client`]: identities and the typed Rust client.
//! - [`cli`]: the `unibus` command line.
//! - [`e2e`]: the end-to-end message envelope (seal, open, replay guard).
//! - [`secrets`], [`config`]: keys and validated settings.
//! - [`daemon`]: running unibusd; [`dev`]: the one-command local stack;
//!   [`demo`]: the narrated end-to-end demo.
//! - [`natsserver`]: finding and running a real nats-server.

pub mod callout;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dev;
pub mod e2e;
pub mod error;
pub mod keys;
pub mod kick;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod natsserver;
pub mod proto;
pub mod secrets;
pub mod service;
pub mod store;
pub mod subjects;

pub use error::Error;

/// The repository's `nats.conf`, embedded so that the dev stack and tests
/// run exactly the file that is deployed.
pub const NATS_CONF: &str = include_str!("../nats.conf");
