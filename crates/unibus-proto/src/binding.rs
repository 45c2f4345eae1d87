//! Device bindings and signing hygiene (docs/protocol.md section 8).
//!
//! A binding (`kex_sig`) is a device key's Ed25519 signature over
//! `enc("unibus-kex/1") enc(account) enc(device) enc(kex_pub)`, where
//! `enc(x)` is a 4-byte big-endian length and then the bytes of `x`, and
//! the three values are 64-char lowercase hex strings. It proves that the
//! device agreed to join that account with that X25519 key, so it cannot be
//! replayed into another account. On the wire it is standard base64 with
//! padding: exactly 88 characters. It is verified strictly (`verify_strict`
//! on a checked key).
//!
//! The same device key signs NATS nonces, which a hostile server chooses.
//! [`nonce_is_signable`] accepts only nonces shaped like nats-server's (at
//! most 64 characters of `[A-Za-z0-9_-]`): a binding message starts with a
//! zero byte, so no signable nonce can ever equal one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{KexPub, Key, SignPub};

/// Domain label of the binding message.
pub const BINDING_LABEL: &str = "unibus-kex/1";
/// Length of a `kex_sig` on the wire (base64 of 64 bytes, padded).
pub const KEX_SIG_LEN: usize = 88;
/// Longest nonce a client signs.
pub const NONCE_MAX_LEN: usize = 64;

/// Appends `enc(x)`: a 4-byte big-endian length, then the bytes.
fn enc(out: &mut Vec<u8>, x: &[u8]) {
    let len = u32::try_from(x.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// The exact bytes a binding signs.
pub fn binding_message(account: &str, device: &str, kex_pub: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 * 4 + BINDING_LABEL.len() + 3 * 64);
    enc(&mut m, BINDING_LABEL.as_bytes());
    enc(&mut m, account.as_bytes());
    enc(&mut m, device.as_bytes());
    enc(&mut m, kex_pub.as_bytes());
    m
}

/// A binding signature as it appears on the wire: 88 characters of
/// padded standard base64 that decode to 64 bytes. Decoding checks the
/// shape only; [`verify_binding`] checks the signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KexSig {
    text: String,
    sig: [u8; 64],
}

impl KexSig {
    /// Parses a `kex_sig` field.
    ///
    /// # Errors
    /// `bad_request` naming `kex_sig` unless it is exactly 88 characters of
    /// padded standard base64 holding 64 bytes.
    pub fn parse(s: &str) -> Result<KexSig, Error> {
        let bad =
            || Error::bad(format!("kex_sig: expected {KEX_SIG_LEN} characters of padded standard base64"));
        if s.len() != KEX_SIG_LEN {
            return Err(bad());
        }
        let raw = STANDARD.decode(s).map_err(|_| bad())?;
        let sig: [u8; 64] = raw.try_into().map_err(|_| bad())?;
        // Only the canonical text: base64 allows non-zero trailing bits,
        // which would give one signature two spellings.
        if STANDARD.encode(sig) != s {
            return Err(bad());
        }
        Ok(KexSig { text: s.to_string(), sig })
    }

    /// The wire text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Debug for KexSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KexSig({:?})", self.text)
    }
}

impl std::fmt::Display for KexSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for KexSig {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        KexSig::parse(&s)
    }
}

impl From<KexSig> for String {
    fn from(v: KexSig) -> String {
        v.text
    }
}

/// Signs the binding of `device_key` to `account` with `kex_pub`.
pub fn sign_binding(device_key: &SigningKey, account: &str, kex_pub: &str) -> KexSig {
    let device = hex::encode(device_key.verifying_key().as_bytes());
    let sig = device_key.sign(&binding_message(account, &device, kex_pub)).to_bytes();
    KexSig { text: STANDARD.encode(sig), sig }
}

/// Verifies a binding strictly.
///
/// # Errors
/// `bad_request` ("kex_sig: ...") when it does not verify for this account,
/// device and key.
pub fn verify_binding(
    account: &Key,
    device: &SignPub,
    kex_pub: &KexPub,
    kex_sig: &KexSig,
) -> Result<(), Error> {
    let msg = binding_message(&account.to_hex(), device.as_str(), kex_pub.as_str());
    let sig = Signature::from_bytes(&kex_sig.sig);
    device
        .verifying_key()
        .verify_strict(&msg, &sig)
        .map_err(|_| Error::bad("kex_sig: the binding does not verify for this account, device and kex_pub"))
}

/// Verifies a binding given as stored strings (a record read back or a
/// reply a client received).
///
/// # Errors
/// `bad_request` when a value does not parse or the signature does not
/// verify.
pub fn verify_binding_str(account: &str, device: &str, kex_pub: &str, kex_sig: &str) -> Result<(), Error> {
    let account = SignPub::parse_field("account", account)?;
    let device = SignPub::parse_field("device", device)?;
    let kex_pub = KexPub::parse(kex_pub)?;
    let kex_sig = KexSig::parse(kex_sig)?;
    verify_binding(&account.key(), &device, &kex_pub, &kex_sig)
}

/// True when a client may sign this server nonce: 1 to 64 characters of
/// `[A-Za-z0-9_-]`, as nats-server sends (docs/protocol.md section 8).
pub fn nonce_is_signable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= NONCE_MAX_LEN
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pub_of(k: &SigningKey) -> SignPub {
        SignPub::parse(&hex::encode(k.verifying_key().as_bytes())).unwrap()
    }

    fn kex() -> KexPub {
        let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
        KexPub::parse(&hex::encode(x25519_dalek::PublicKey::from(&secret).as_bytes())).unwrap()
    }

    #[test]
    fn message_layout_is_length_prefixed() {
        let m = binding_message("a", "bb", "ccc");
        let mut want = vec![0, 0, 0, 12];
        want.extend_from_slice(b"unibus-kex/1");
        want.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'b', 0, 0, 0, 3, b'c', b'c', b'c']);
        assert_eq!(m, want);
        assert_eq!(m[0], 0, "starts with a zero byte, which no signable nonce does");
    }

    #[test]
    fn sign_then_verify_and_refuse_other_accounts() {
        let dev = key(1);
        let acct = pub_of(&key(2));
        let sig = sign_binding(&dev, acct.as_str(), kex().as_str());
        assert_eq!(sig.as_str().len(), KEX_SIG_LEN);
        verify_binding(&acct.key(), &pub_of(&dev), &kex(), &sig).unwrap();
        // Replayed into another account, or claimed by another device.
        assert!(verify_binding(&pub_of(&key(3)).key(), &pub_of(&dev), &kex(), &sig).is_err());
        assert!(verify_binding(&acct.key(), &pub_of(&key(3)), &kex(), &sig).is_err());
        let round = KexSig::parse(sig.as_str()).unwrap();
        assert_eq!(round, sig);
    }

    #[test]
    fn kex_sig_shape_is_strict() {
        let good = sign_binding(&key(1), &"0".repeat(64), &"1".repeat(64)).as_str().to_string();
        assert!(KexSig::parse(&good).is_ok());
        assert!(KexSig::parse(good.trim_end_matches('=')).is_err(), "unpadded");
        assert!(KexSig::parse(&format!("{good}=")).is_err());
        assert!(KexSig::parse("").is_err());
        // Non-zero trailing bits: same bytes, second spelling.
        let mut chars: Vec<char> = good.chars().collect();
        let last = chars[85];
        let idx = STANDARD_ALPHABET.find(last).unwrap();
        chars[85] = STANDARD_ALPHABET.as_bytes()[idx ^ 1] as char;
        let other: String = chars.into_iter().collect();
        assert!(KexSig::parse(&other).is_err());
    }

    const STANDARD_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    #[test]
    fn only_server_shaped_nonces_are_signable() {
        assert!(nonce_is_signable("Ab-_09xYzAbCdEf"));
        assert!(nonce_is_signable(&"a".repeat(64)));
        assert!(!nonce_is_signable(&"a".repeat(65)));
        assert!(!nonce_is_signable(""));
        assert!(!nonce_is_signable("abc="));
        assert!(!nonce_is_signable("a b"));
        assert!(!nonce_is_signable("\0unibus"));
        let msg = binding_message(&"0".repeat(64), &"1".repeat(64), &"2".repeat(64));
        assert!(!nonce_is_signable(&String::from_utf8_lossy(&msg)));
    }
}
