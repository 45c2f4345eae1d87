//! Key material on the wire: hex parsing, weak-key checks for Ed25519 and
//! X25519 (docs/protocol.md section 2), the strict nonce-signature check the callout
//! relies on, and invite tokens (random 256-bit secrets whose SHA-256 is the
//! stored invite id).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::subjects::INVITE_LINK_PREFIX;

/// Parses 64 hex characters (either case) into 32 bytes.
///
/// # Errors
/// `bad_request` naming `field` when the length or a character is wrong.
pub fn parse_hex32(field: &str, s: &str) -> Result<[u8; 32], Error> {
    if s.len() != 64 {
        return Err(Error::bad(format!("{field}: expected 64 hex characters, got {}", s.chars().count())));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::bad(format!("{field}: not hexadecimal")))?;
    Ok(out)
}

/// Parses and checks an Ed25519 public key given as hex.
///
/// # Errors
/// `bad_request` for bad hex, a point that does not decode, a non-canonical
/// encoding, or a small-order (weak) point.
pub fn parse_sign_pub(field: &str, s: &str) -> Result<VerifyingKey, Error> {
    let bytes = parse_hex32(field, s)?;
    check_sign_pub(&bytes).map_err(|why| Error::bad(format!("{field}: {why}")))
}

/// Checks raw Ed25519 public-key bytes: decodes, canonical, not small order.
///
/// # Errors
/// A short reason when the key is unusable.
pub fn check_sign_pub(bytes: &[u8; 32]) -> Result<VerifyingKey, &'static str> {
    let point = curve25519_dalek::edwards::CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or("not a valid Ed25519 point")?;
    if point.is_small_order() {
        return Err("weak (small-order) Ed25519 key");
    }
    // VerifyingKey keeps the bytes it was given; re-encode the point to
    // refuse non-canonical encodings (y >= p, or -0).
    if point.compress().to_bytes() != *bytes {
        return Err("non-canonical Ed25519 encoding");
    }
    VerifyingKey::from_bytes(bytes).map_err(|_| "not a valid Ed25519 point")
}

/// Parses and checks an X25519 public key given as hex.
///
/// # Errors
/// `bad_request` for bad hex, a non-canonical encoding (u >= p or the top
/// bit set), or a low-order point (including all zeros).
pub fn parse_kex_pub(field: &str, s: &str) -> Result<[u8; 32], Error> {
    let bytes = parse_hex32(field, s)?;
    check_kex_pub(&bytes).map_err(|why| Error::bad(format!("{field}: {why}")))?;
    Ok(bytes)
}

/// The field prime 2^255 - 19, little-endian.
const P25519: [u8; 32] = {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Checks raw X25519 public-key bytes (RFC 7748 section 6.1).
///
/// # Errors
/// A short reason when the key is non-canonical or of low order.
pub fn check_kex_pub(bytes: &[u8; 32]) -> Result<(), &'static str> {
    if bytes[31] & 0x80 != 0 || !lt_le(bytes, &P25519) {
        return Err("non-canonical X25519 encoding");
    }
    // Every clamped scalar is a multiple of the cofactor 8, so X25519 with a
    // fixed clamped scalar is all-zero exactly when the point has low order
    // (on the curve or its twist). 9 is the base point's u; any fixed scalar
    // works.
    let probe = x25519_dalek::x25519([9u8; 32], *bytes);
    if probe.iter().all(|b| *b == 0) {
        return Err("low-order X25519 key");
    }
    Ok(())
}

/// `a < b` for 32-byte little-endian numbers.
fn lt_le(a: &[u8; 32], b: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// Decodes a signature in any base64 flavour NATS clients send (standard
/// or URL alphabet, with or without padding).
pub fn decode_b64_any(s: &str) -> Option<Vec<u8>> {
    [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD].iter().find_map(|engine| engine.decode(s).ok())
}

/// Verifies a client's signature over the ASCII bytes of the server nonce,
/// strictly (no malleable or small-order forms).
///
/// # Errors
/// A short reason for the log; the caller denies.
pub fn verify_nonce_signature(key: &VerifyingKey, nonce: &str, sig_b64: &str) -> Result<(), &'static str> {
    if nonce.is_empty() {
        return Err("empty nonce");
    }
    let raw = decode_b64_any(sig_b64).ok_or("signature is not base64")?;
    let sig = Signature::from_slice(&raw).map_err(|_| "signature has the wrong length")?;
    key.verify_strict(nonce.as_bytes(), &sig).map_err(|_| "signature does not verify")
}

/// A freshly minted invite secret (32 CSPRNG bytes). Shown once, never
/// stored, never logged: it has no `Debug`.
pub struct InviteToken([u8; 32]);

impl InviteToken {
    /// Draws a new token from the OS CSPRNG.
    pub fn generate() -> InviteToken {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        InviteToken(b)
    }

    /// Parses a token or an invite link (`unibus://invite/<token>[?url=..]`),
    /// hex in either case.
    ///
    /// # Errors
    /// `bad_request` when neither form matches.
    pub fn parse(input: &str) -> Result<InviteToken, Error> {
        let hex_part = match input.strip_prefix(INVITE_LINK_PREFIX) {
            Some(rest) => rest.split_once('?').map_or(rest, |(t, _)| t),
            None => input,
        };
        parse_hex32("invite", hex_part).map(InviteToken)
    }

    /// The token as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The invite id: lowercase hex SHA-256 of the 32 raw token bytes.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }

    /// The invite link for this token.
    pub fn link(&self) -> String {
        format!("{INVITE_LINK_PREFIX}{}", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_order_x25519_points_are_refused() {
        let mut zero = [0u8; 32];
        assert!(check_kex_pub(&zero).is_err());
        zero[0] = 1;
        assert!(check_kex_pub(&zero).is_err(), "u = 1 has order 4");
        // u = p - 1 (order 2)
        let mut pm1 = P25519;
        pm1[0] -= 1;
        assert!(check_kex_pub(&pm1).is_err());
        // u = p (non-canonical zero)
        assert!(check_kex_pub(&P25519).is_err());
        // the order-8 point from RFC 7748 / libsodium's blacklist
        let order8 = hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap();
        assert!(check_kex_pub(&order8.try_into().unwrap()).is_err());
        // a real key passes
        let sk = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let pk = x25519_dalek::PublicKey::from(&sk);
        assert!(check_kex_pub(pk.as_bytes()).is_ok());
    }

    #[test]
    fn small_order_ed25519_is_refused() {
        // identity point
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(check_sign_pub(&id).is_err());
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        assert!(check_sign_pub(&sk.verifying_key().to_bytes()).is_ok());
        // y = 2^255 - 1 (non-canonical: >= p)
        assert!(check_sign_pub(&[0xff; 32]).is_err());
    }

    #[test]
    fn nonce_signature_accepts_all_base64_flavours() {
        use ed25519_dalek::Signer;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let sig = sk.sign(b"nonce-abc").to_bytes();
        for engine in [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD] {
            let s = engine.encode(sig);
            verify_nonce_signature(&sk.verifying_key(), "nonce-abc", &s).unwrap();
        }
        let s = URL_SAFE_NO_PAD.encode(sig);
        assert!(verify_nonce_signature(&sk.verifying_key(), "other", &s).is_err());
        assert!(verify_nonce_signature(&sk.verifying_key(), "", &s).is_err());
    }

    #[test]
    fn token_parses_from_link_and_upper_case() {
        let t = InviteToken::generate();
        let link = format!("{}?url=nats%3A%2F%2F127.0.0.1%3A4222", t.link());
        assert_eq!(InviteToken::parse(&link).unwrap().id(), t.id());
        assert_eq!(InviteToken::parse(&t.to_hex().to_uppercase()).unwrap().id(), t.id());
        assert!(InviteToken::parse("unibus://invite/zz").is_err());
    }
}
