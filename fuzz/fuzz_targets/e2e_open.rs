//! The end-to-end envelope opener on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus_proto::e2e::{self, ReplayGuard};

fuzz_target!(|data: &[u8]| {
    let me = "ab".repeat(32);
    let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
    let subject = format!("unibus.msg.dm.{me}");
    let _ = e2e::open(data, &subject, &me, &secret, &mut ReplayGuard::default(), 1_800_000_000_000);
});
