//! unibusd: the unibus service. It admits Ed25519 keys through single-use
//! invites kept in JetStream KV and decides every data-plane connect through
//! the NATS auth callout. The wire contract is the `unibus-proto` crate, the
//! client library the `unibus` crate.
//!
//! Public, for running the service: [`config`], [`daemon`], [`secrets`],
//! [`dev`] (the one-command local stack), [`demo`] and [`natsserver`]
//! (finding and running a real nats-server). Internal, public only with the
//! `internals` feature that this package's tests, benches and fuzz targets
//! turn on:
//! - `store`: typed KV operations, CAS only, the redemption protocol, block
//!   lists and the room reservations behind the rooms-per-user cap.
//! - `callout`: the auth-callout responder (JWTs, xkey, permissions).
//! - `kick`: finding and closing live connections (CONNZ, KICK).
//! - `limits`: guest flood limits on `unibus.register`.
//! - `metrics`: the callout's latency histogram.
//! - `service`: the control-plane micro service and its handlers.

/// Declares internal modules: `pub` with the `internals` feature,
/// crate-private otherwise (so that rustc reports dead code).
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal!(callout, kick, limits, metrics, service, store);

pub mod config;
pub mod daemon;
pub mod demo;
pub mod dev;
pub mod natsserver;
pub mod secrets;

/// The repository's `nats.conf`, embedded so that the dev stack and tests
/// run exactly the file that is deployed.
pub const NATS_CONF: &str = include_str!("../nats.conf");
