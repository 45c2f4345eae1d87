//! The small part of NATS JWTs (v2, `ed25519-nkey`) the callout needs:
//! decode and verify a signed token, and encode and sign claims. Written
//! here because the claims are few and a full JWT library would verify
//! signatures non-strictly.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signature;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Why a token was refused. Short texts for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// Header algorithm is not ed25519-nkey.
    #[error("unsupported JWT algorithm")]
    Algorithm,
    /// Signature does not verify against the claimed issuer.
    #[error("JWT signature does not verify")]
    Signature,
    /// Signing failed (bad issuer seed).
    #[error("cannot sign JWT")]
    Sign,
}

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

#[derive(serde::Deserialize)]
struct Issuer {
    iss: String,
}

/// Decodes a JWT and verifies it strictly against the public nkey in its
/// own `iss` claim, which `expect_prefix` must accept. Returns the claims
/// and the issuer.
///
/// # Errors
/// [`JwtError`] when the token is malformed, of another algorithm, or its
/// signature fails.
pub fn decode_verified<T: DeserializeOwned>(
    token: &str,
    expect_issuer_prefix: u8,
) -> Result<(T, String), JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three parts"));
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed("header"))?;
    if header.alg != "ed25519-nkey" && header.alg != "ed25519" {
        return Err(JwtError::Algorithm);
    }
    let payload = b64(p)?;
    let iss: Issuer = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed("iss"))?;
    let (prefix, raw) = nkeys::from_public_key(&iss.iss).map_err(|_| JwtError::Malformed("iss"))?;
    if prefix != expect_issuer_prefix {
        return Err(JwtError::Signature);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| JwtError::Signature)?;
    let sig = Signature::from_slice(&b64(s)?).map_err(|_| JwtError::Signature)?;
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify_strict(signed.as_bytes(), &sig).map_err(|_| JwtError::Signature)?;
    let claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed("claims"))?;
    Ok((claims, iss.iss))
}

fn b64(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed("base64"))
}

/// Encodes `claims` (which must hold `iss` = the signer's public key and an
/// empty or absent `jti`) and signs it with `signer`. The `jti` is set to
/// the SHA-256 of the claims, as the NATS JWT library does.
///
/// # Errors
/// [`JwtError::Sign`] when the key cannot sign.
pub fn encode_signed<T: Serialize>(claims: &T, signer: &nkeys::KeyPair) -> Result<String, JwtError> {
    let mut value = serde_json::to_value(claims).map_err(|_| JwtError::Sign)?;
    let digest = Sha256::digest(serde_json::to_vec(&value).map_err(|_| JwtError::Sign)?);
    value["jti"] = serde_json::Value::String(hex::encode(&digest[..16]));
    let payload = serde_json::to_vec(&value).map_err(|_| JwtError::Sign)?;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
    let sig = signer.sign(signing_input.as_bytes()).map_err(|_| JwtError::Sign)?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct C {
        iss: String,
        x: u32,
    }

    #[test]
    fn round_trip_and_tamper() {
        let kp = nkeys::KeyPair::new_account();
        let tok = encode_signed(&C { iss: kp.public_key(), x: 7 }, &kp).unwrap();
        let (c, iss): (C, String) = decode_verified(&tok, 0).unwrap();
        assert_eq!(c.x, 7);
        assert_eq!(iss, kp.public_key());
        // same signature over different claims
        let parts: Vec<&str> = tok.split('.').collect();
        let other = encode_signed(&C { iss: kp.public_key(), x: 8 }, &kp).unwrap();
        let forged = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(decode_verified::<C>(&forged, 0).unwrap_err(), JwtError::Signature);
        // signed by another key that claims the first key as issuer
        let mallory = nkeys::KeyPair::new_account();
        let bad = encode_signed(&C { iss: kp.public_key(), x: 7 }, &mallory).unwrap();
        assert_eq!(decode_verified::<C>(&bad, 0).unwrap_err(), JwtError::Signature);
        // wrong issuer type (account key prefix is 0, server is 13 << 3)
        assert_eq!(decode_verified::<C>(&tok, 13 << 3).unwrap_err(), JwtError::Signature);
    }
}
