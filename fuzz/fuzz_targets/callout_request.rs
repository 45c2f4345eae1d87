//! The callout request decoder: opening a sealed request (xkey box, with
//! a cached per-server key), JWT parsing and strict signature check, claim
//! decoding, nkey and nonce-signature handling, on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use unibusd::callout::claims::RequestClaims;

use unibus_proto::keys;
use unibusd::callout::jwt;
use unibusd::callout::sealing::Sealer;

/// A fixed service xkey (seed) and a fixed server key, so that runs repeat.
fn sealer() -> &'static (Sealer, String) {
    static S: OnceLock<(Sealer, String)> = OnceLock::new();
    S.get_or_init(|| {
        let ours = nkeys::XKey::new_from_raw([7; 32]);
        let server = nkeys::XKey::new_from_raw([9; 32]).public_key();
        (Sealer::new(&ours).unwrap(), server)
    })
}

fuzz_target!(|data: &[u8]| {
    // Sealed request bytes from a known server, and as a header value.
    let (s, server) = sealer();
    let _ = s.open(server, data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = s.open(text, b"xkv1 not a box");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // Server-signed request JWT (prefix N) and any JWT (prefix A).
        let _ = jwt::decode_verified::<RequestClaims>(text, 13 << 3);
        let _ = jwt::decode_verified::<serde_json::Value>(text, 0);
        // Client key and nonce signature as the request carries them.
        let mut parts = text.splitn(3, '\n');
        if let (Some(nkey), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next())
            && let Ok(key) = unibusd::callout::decision::user_nkey_to_key(nkey)
        {
            let _ = keys::verify_nonce_signature(&key, nonce, sig);
        }
    }
    let _ = serde_json::from_slice::<RequestClaims>(data);
});
