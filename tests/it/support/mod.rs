//! Helpers of the integration tests; the test modules beside this one hold
//! only tests. The names most tests use are re-exported here
//! (`crate::support::{Stack, code, ...}`).
//!
//! - [`stack`]: one nats-server and one unibusd per test, users and rooms.
//! - [`cluster`]: three clustered servers and unibusd.
//! - [`denials`]: auth-error advisories and signed denials.
//! - [`events`]: a client's connection events and wire error codes.
//! - [`process`]: `unibusd`, the `unibus` CLI and the example as processes.
//! - [`evidence`]: KV write attempts and requests watched, KV snapshots.
//! - [`raw`]: a plain socket speaking the NATS protocol.
//! - [`syscheck`]: the system account's view (connections, partitions,
//!   paused processes, connect loops).
//! - [`devices`], [`reflection`]: what several device and reply tests share.

pub mod cluster;
pub mod denials;
pub mod devices;
pub mod events;
pub mod evidence;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod reflection;
pub mod stack;
pub mod syscheck;

pub use cluster::Cluster;
pub use denials::{AuthErrors, DENIAL_WITHIN, SIGNED_DENIAL, expect_signed_denial_of};
pub use events::{code, connect_watched_to, expect_event_within, expect_server_error};
pub use process::{program, spawn_stdout_lines, unibus_cli, unibusd_bin};
pub use stack::{HEAVY, Stack, Xkey, init_tracing};

/// The key whose hex is `hex` (as the store and records take it).
pub fn as_key(hex: &str) -> unibus_proto::Key {
    unibus_proto::Key::parse(hex).expect("a key's hex")
}

/// The room id whose hex is `hex`.
pub fn as_room(hex: &str) -> unibus_proto::RoomId {
    unibus_proto::RoomId::parse(hex).expect("a room id's hex")
}
