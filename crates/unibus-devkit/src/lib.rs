//! The unibus dev kit: what runs a unibus stack on one machine for
//! development, demos, tests and benchmarks, kept out of the service
//! library (`unibusd`), which production builds link without it.
//!
//! - [`natsserver`]: finding and running a real nats-server process (with
//!   the pause/resume/kill that fault tests use).
//! - [`dev`]: the one-command local stack of `unibusd dev`.
//! - [`demo`]: the narrated demo of `unibusd demo`.
//! - [`built`]: the workspace's binaries (`unibusd`, `unibus`) as the tests
//!   and the benchmark run them, built when missing or older than the
//!   sources.

pub mod built;
pub mod demo;
pub mod dev;
pub mod natsserver;

/// The repository's `nats.conf`, embedded so that the dev stack and tests
/// run exactly the file that is deployed.
pub const NATS_CONF: &str = include_str!("../../../nats.conf");
