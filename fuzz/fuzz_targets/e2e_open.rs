//! The end-to-end envelope opener on arbitrary bytes: as a first device
//! (account = device, what version 1 addresses) and as a second device of
//! an account (version 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus_proto::e2e::{self, Receiver, ReplayGuard};

fuzz_target!(|data: &[u8]| {
    let me = "ab".repeat(32);
    let device = "cd".repeat(32);
    let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
    let subject = format!("unibus.msg.dm.{me}");
    let now = 1_800_000_000_000;
    let _ = e2e::open(data, &subject, &me, &secret, &ReplayGuard::default(), now);
    let second = Receiver { account: &me, device: &device, kex_secret: &secret };
    let _ = e2e::open_as(data, &subject, &second, &ReplayGuard::default(), now);
});
