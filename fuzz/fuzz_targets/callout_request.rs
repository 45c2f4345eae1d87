//! The callout request decoder: JWT parsing and strict signature check,
//! claim decoding, nkey and nonce-signature handling, on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::callout::claims::RequestClaims;
use unibus::callout::jwt;
use unibus::keys;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Server-signed request JWT (prefix N) and any JWT (prefix A).
        let _ = jwt::decode_verified::<RequestClaims>(text, 13 << 3);
        let _ = jwt::decode_verified::<serde_json::Value>(text, 0);
        // Client key and nonce signature as the request carries them.
        let mut parts = text.splitn(3, '\n');
        if let (Some(nkey), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next()) {
            if let Ok(key) = keys::user_nkey_to_key(nkey) {
                let _ = keys::verify_nonce_signature(&key, nonce, sig);
            }
        }
    }
    let _ = serde_json::from_slice::<RequestClaims>(data);
});
