//! End-to-end message envelope, version 1 (documented in docs/envelope.md).
//! A message is encrypted once with a random content key; the content key
//! is wrapped for each recipient with X25519 (ephemeral sender key) ->
//! HKDF-SHA256 -> ChaCha20-Poly1305; the whole envelope (sender, every
//! recipient, subject, room, id, time) is authenticated as AEAD data and
//! signed with the sender's Ed25519 key. nats-server and unibusd see only
//! ciphertext. Receivers reject tampered, forged, misaddressed, stale and
//! replayed envelopes with a typed reason.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use hkdf::Hkdf;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys;
use crate::subjects;

/// Envelope format version.
pub const VERSION: u32 = 1;
/// Envelopes older or newer than this (sender clock vs receiver clock) are
/// rejected as stale.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
const DOMAIN: &[u8] = b"unibus-e2e/1";

/// Direct message or room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// To one user, on `unibus.msg.dm.<to>`.
    Dm,
    /// To a room's members, on `unibus.msg.room.<room>`.
    Room,
}

/// The content key wrapped for one recipient. Unknown fields are refused,
/// as in the envelope: the signature does not cover them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Wrapped {
    /// Recipient `sign_pub` hex.
    pub to: String,
    /// 12-byte nonce, hex.
    pub nonce: String,
    /// Wrapped 32-byte content key (+16-byte tag), base64.
    pub key: String,
}

/// The wire envelope (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// [`VERSION`].
    pub v: u32,
    /// dm or room.
    pub kind: Kind,
    /// Sender `sign_pub` hex.
    pub from: String,
    /// The subject it was published to.
    pub subject: String,
    /// Room id (rooms only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// 16 random bytes, hex: with `from`, the replay key.
    pub id: String,
    /// Sender's clock, unix milliseconds.
    pub ts: i64,
    /// Ephemeral X25519 public key, hex.
    pub epk: String,
    /// One wrapped content key per recipient.
    pub recipients: Vec<Wrapped>,
    /// 12-byte content nonce, hex.
    pub nonce: String,
    /// Ciphertext (+tag), base64.
    pub ct: String,
    /// Ed25519 signature of the sender, base64.
    pub sig: String,
}

/// Why an envelope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// Not a v1 envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The signature does not verify for `from` (tampered or forged).
    #[error("bad signature (tampered or forged sender)")]
    BadSignature,
    /// Received on another subject than the one it names.
    #[error("envelope names another subject (misaddressed)")]
    WrongSubject,
    /// Not addressed to this identity.
    #[error("not addressed to this identity (misaddressed)")]
    NotForMe,
    /// Sender clock too far from ours.
    #[error("stale envelope (outside the {MAX_SKEW_MS} ms window)")]
    Stale,
    /// Seen before.
    #[error("replayed envelope")]
    Replay,
    /// A key did not unwrap or the content did not decrypt.
    #[error("cannot decrypt")]
    Decrypt,
}

/// Why an envelope could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A recipient's X25519 key is weak (low order / non-canonical).
    #[error("recipient {0} has an unusable key: {1}")]
    WeakKey(String, &'static str),
    /// No recipients.
    #[error("no recipients")]
    NoRecipients,
}

/// A recipient: `sign_pub` hex and X25519 public key bytes.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// `sign_pub` hex.
    pub sign_pub: String,
    /// X25519 public key.
    pub kex_pub: [u8; 32],
}

/// A verified, decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// dm or room.
    pub kind: Kind,
    /// Verified sender `sign_pub`.
    pub from: String,
    /// Room id for room messages.
    pub room: Option<String>,
    /// Message id.
    pub id: String,
    /// Sender time, unix ms.
    pub ts: i64,
    /// Plaintext.
    pub body: Vec<u8>,
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u32).to_be_bytes());
    buf.extend_from_slice(field);
}

impl Envelope {
    /// Everything but the content: length-prefixed, unambiguous.
    fn header(&self, with_recipients: bool) -> Vec<u8> {
        let mut h = Vec::with_capacity(512);
        put(&mut h, DOMAIN);
        put(&mut h, self.v.to_string().as_bytes());
        put(&mut h, if self.kind == Kind::Dm { b"dm" } else { b"room" });
        put(&mut h, self.from.as_bytes());
        put(&mut h, self.subject.as_bytes());
        put(&mut h, self.room.as_deref().unwrap_or("").as_bytes());
        put(&mut h, self.id.as_bytes());
        put(&mut h, self.ts.to_string().as_bytes());
        put(&mut h, self.epk.as_bytes());
        if with_recipients {
            put(&mut h, self.recipients.len().to_string().as_bytes());
            for r in &self.recipients {
                put(&mut h, r.to.as_bytes());
                put(&mut h, r.nonce.as_bytes());
                put(&mut h, r.key.as_bytes());
            }
            put(&mut h, self.nonce.as_bytes());
        }
        h
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = self.header(true);
        put(&mut b, self.ct.as_bytes());
        b
    }
}

fn wrap_key(
    shared: &[u8; 32],
    epk: &[u8; 32],
    kex_pub: &[u8; 32],
    from: &str,
    to: &str,
    subject: &str,
) -> Key {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(kex_pub);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut info = Vec::new();
    put(&mut info, b"unibus-e2e/1 wrap");
    put(&mut info, from.as_bytes());
    put(&mut info, to.as_bytes());
    put(&mut info, subject.as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm).expect("32 bytes is a valid HKDF-SHA256 length");
    okm.into()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Seals `body` from `sender` to `recipients` for `subject` (the DM subject
/// of the one recipient, or the room subject with `room`).
///
/// # Errors
/// [`SealError`] for a weak recipient key or no recipients.
pub fn seal(
    sender: &SigningKey,
    kind: Kind,
    subject: &str,
    room: Option<&str>,
    recipients: &[Recipient],
    body: &[u8],
    now_ms: i64,
) -> Result<Envelope, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let from = hex::encode(sender.verifying_key().as_bytes());
    let eph = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let epk = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let mut env = Envelope {
        v: VERSION,
        kind,
        from: from.clone(),
        subject: subject.to_string(),
        room: room.map(str::to_string),
        id: hex::encode(random::<16>()),
        ts: now_ms,
        epk: hex::encode(epk),
        recipients: Vec::new(),
        nonce: String::new(),
        ct: String::new(),
        sig: String::new(),
    };
    let content_key: [u8; 32] = random();
    let wrap_aad = env.header(false);
    for r in recipients {
        keys::check_kex_pub(&r.kex_pub).map_err(|why| SealError::WeakKey(r.sign_pub.clone(), why))?;
        let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(r.kex_pub));
        if !shared.was_contributory() {
            return Err(SealError::WeakKey(r.sign_pub.clone(), "non-contributory shared secret"));
        }
        let kek = wrap_key(shared.as_bytes(), &epk, &r.kex_pub, &from, &r.sign_pub, subject);
        let nonce: [u8; 12] = random();
        let wrapped = ChaCha20Poly1305::new(&kek)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &content_key, aad: &wrap_aad })
            .expect("encrypting 32 bytes cannot fail");
        env.recipients.push(Wrapped {
            to: r.sign_pub.clone(),
            nonce: hex::encode(nonce),
            key: STANDARD.encode(wrapped),
        });
    }
    let nonce: [u8; 12] = random();
    env.nonce = hex::encode(nonce);
    let aad = env.header(true);
    let ct = ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: body, aad: &aad })
        .expect("encryption cannot fail for in-memory data");
    env.ct = STANDARD.encode(ct);
    env.sig = STANDARD.encode(sender.sign(&env.signed_bytes()).to_bytes());
    Ok(env)
}

/// Remembers (sender, id) pairs inside the skew window to refuse replays.
#[derive(Default)]
pub struct ReplayGuard {
    seen: HashMap<(String, String), i64>,
}

impl ReplayGuard {
    /// Records a fresh (from, id); false when it was seen already.
    fn admit(&mut self, from: &str, id: &str, ts: i64, now_ms: i64) -> bool {
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, t| within_skew(*t, now_ms));
        }
        self.seen.insert((from.to_string(), id.to_string()), ts).is_none()
    }
}

/// `|now - ts| <= MAX_SKEW_MS` without overflow for any pair of values
/// (a sender chooses `ts`, so `i64::MIN` must be stale, not a panic).
fn within_skew(ts: i64, now_ms: i64) -> bool {
    now_ms.abs_diff(ts) <= MAX_SKEW_MS.unsigned_abs()
}

fn hex32(field: &str, s: &str) -> Result<[u8; 32], Reject> {
    keys::parse_hex32(field, s).map_err(|e| Reject::Malformed(e.to_string()))
}

/// Opens an envelope received on `subject` by `me` (its `sign_pub` hex and
/// X25519 secret).
///
/// # Errors
/// [`Reject`] naming why it was refused.
pub fn open(
    raw: &[u8],
    subject: &str,
    me: &str,
    kex_secret: &x25519_dalek::StaticSecret,
    guard: &mut ReplayGuard,
    now_ms: i64,
) -> Result<Opened, Reject> {
    let env: Envelope = serde_json::from_slice(raw).map_err(|e| Reject::Malformed(e.to_string()))?;
    if env.v != VERSION {
        return Err(Reject::Malformed(format!("unsupported version {}", env.v)));
    }
    let expected_subject = match (env.kind, env.room.as_deref()) {
        (Kind::Dm, None) => subjects::dm(me),
        (Kind::Room, Some(room)) => subjects::room_msg(room),
        _ => return Err(Reject::Malformed("room field does not match kind".into())),
    };
    if env.subject != subject || subject != expected_subject {
        return Err(Reject::WrongSubject);
    }
    let from_key = keys::check_sign_pub(&hex32("from", &env.from)?).map_err(|_| Reject::BadSignature)?;
    let sig = STANDARD.decode(&env.sig).map_err(|_| Reject::BadSignature)?;
    let sig = Signature::from_slice(&sig).map_err(|_| Reject::BadSignature)?;
    from_key.verify_strict(&env.signed_bytes(), &sig).map_err(|_| Reject::BadSignature)?;
    if env.kind == Kind::Dm && env.recipients.len() != 1 {
        return Err(Reject::Malformed("a direct message has exactly one recipient".into()));
    }
    let mine = env.recipients.iter().find(|r| r.to == me).ok_or(Reject::NotForMe)?;
    if !within_skew(env.ts, now_ms) {
        return Err(Reject::Stale);
    }
    let epk = hex32("epk", &env.epk)?;
    let my_pub = x25519_dalek::PublicKey::from(kex_secret).to_bytes();
    let shared = kex_secret.diffie_hellman(&x25519_dalek::PublicKey::from(epk));
    if !shared.was_contributory() {
        return Err(Reject::Decrypt);
    }
    let kek = wrap_key(shared.as_bytes(), &epk, &my_pub, &env.from, me, &env.subject);
    let wrap_nonce = hex::decode(&mine.nonce).ok().filter(|n| n.len() == 12).ok_or(Reject::Decrypt)?;
    let wrapped = STANDARD.decode(&mine.key).map_err(|_| Reject::Decrypt)?;
    let content_key = ChaCha20Poly1305::new(&kek)
        .decrypt(Nonce::from_slice(&wrap_nonce), Payload { msg: &wrapped, aad: &env.header(false) })
        .map_err(|_| Reject::Decrypt)?;
    if content_key.len() != 32 {
        return Err(Reject::Decrypt);
    }
    let nonce = hex::decode(&env.nonce).ok().filter(|n| n.len() == 12).ok_or(Reject::Decrypt)?;
    let ct = STANDARD.decode(&env.ct).map_err(|_| Reject::Decrypt)?;
    let body = ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: &env.header(true) })
        .map_err(|_| Reject::Decrypt)?;
    // Only a fully valid envelope enters the replay window.
    if !guard.admit(&env.from, &env.id, env.ts, now_ms) {
        return Err(Reject::Replay);
    }
    Ok(Opened { kind: env.kind, from: env.from, room: env.room, id: env.id, ts: env.ts, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Peer {
        sk: SigningKey,
        kex: x25519_dalek::StaticSecret,
    }

    impl Peer {
        fn new() -> Peer {
            Peer {
                sk: SigningKey::from_bytes(&random()),
                kex: x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng),
            }
        }
        fn id(&self) -> String {
            hex::encode(self.sk.verifying_key().as_bytes())
        }
        fn recipient(&self) -> Recipient {
            Recipient { sign_pub: self.id(), kex_pub: x25519_dalek::PublicKey::from(&self.kex).to_bytes() }
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn dm_round_trip_and_rejections() {
        let (alice, bob, eve) = (Peer::new(), Peer::new(), Peer::new());
        let subject = subjects::dm(&bob.id());
        let env = seal(&alice.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"hi bob", NOW).unwrap();
        let raw = serde_json::to_vec(&env).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("hi bob"));
        let mut guard = ReplayGuard::default();
        let opened = open(&raw, &subject, &bob.id(), &bob.kex, &mut guard, NOW).unwrap();
        assert_eq!((opened.body.as_slice(), opened.from.as_str()), (&b"hi bob"[..], alice.id().as_str()));
        // replay
        assert_eq!(open(&raw, &subject, &bob.id(), &bob.kex, &mut guard, NOW), Err(Reject::Replay));
        // another recipient (eve got it on her subject by someone re-publishing)
        let eve_subject = subjects::dm(&eve.id());
        let mut moved = env.clone();
        moved.subject = eve_subject.clone();
        let moved = serde_json::to_vec(&moved).unwrap();
        assert_eq!(
            open(&moved, &eve_subject, &eve.id(), &eve.kex, &mut ReplayGuard::default(), NOW),
            Err(Reject::BadSignature)
        );
        assert_eq!(
            open(&raw, &eve_subject, &eve.id(), &eve.kex, &mut ReplayGuard::default(), NOW),
            Err(Reject::WrongSubject)
        );
        // forged sender: signed by eve, claims alice
        let mut forged = seal(&eve.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"x", NOW).unwrap();
        forged.from = alice.id();
        let forged = serde_json::to_vec(&forged).unwrap();
        assert_eq!(
            open(&forged, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), NOW),
            Err(Reject::BadSignature)
        );
        // stale
        assert_eq!(
            open(&raw, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), NOW + MAX_SKEW_MS + 1),
            Err(Reject::Stale)
        );
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let (alice, bob) = (Peer::new(), Peer::new());
        let subject = subjects::dm(&bob.id());
        let env = seal(&alice.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"secret", NOW).unwrap();
        let raw = serde_json::to_vec(&env).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let r = open(&bad, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), NOW);
            assert!(r.is_err() || r.as_ref().unwrap().body == b"secret", "byte {i} accepted altered content");
            // JSON-neutral flips (e.g. in whitespace-free key case) still must not alter the content
        }
    }

    #[test]
    fn room_wraps_for_each_member_and_refuses_weak_keys() {
        let (alice, bob, carol, dave) = (Peer::new(), Peer::new(), Peer::new(), Peer::new());
        let room = "00112233445566778899aabbccddeeff";
        let subject = subjects::room_msg(room);
        let env = seal(
            &alice.sk,
            Kind::Room,
            &subject,
            Some(room),
            &[alice.recipient(), bob.recipient(), carol.recipient()],
            b"hello room",
            NOW,
        )
        .unwrap();
        let raw = serde_json::to_vec(&env).unwrap();
        for p in [&alice, &bob, &carol] {
            let o = open(&raw, &subject, &p.id(), &p.kex, &mut ReplayGuard::default(), NOW).unwrap();
            assert_eq!(o.body, b"hello room");
            assert_eq!(o.room.as_deref(), Some(room));
        }
        assert_eq!(
            open(&raw, &subject, &dave.id(), &dave.kex, &mut ReplayGuard::default(), NOW),
            Err(Reject::NotForMe)
        );
        let mut weak = bob.recipient();
        weak.kex_pub = [0u8; 32];
        assert!(matches!(
            seal(&alice.sk, Kind::Room, &subject, Some(room), &[weak], b"x", NOW),
            Err(SealError::WeakKey(..))
        ));
        let mut low = bob.recipient();
        low.kex_pub = [0u8; 32];
        low.kex_pub[0] = 1;
        assert!(seal(&alice.sk, Kind::Dm, &subjects::dm(&bob.id()), None, &[low], b"x", NOW).is_err());
    }

    /// Extreme `ts` values (chosen by the sender, signed) are stale, never
    /// an arithmetic overflow, whatever the receiver's clock.
    #[test]
    fn extreme_ts_is_stale_not_a_panic() {
        let (alice, bob) = (Peer::new(), Peer::new());
        let subject = subjects::dm(&bob.id());
        for ts in [i64::MIN, i64::MIN + 1, -1, i64::MAX] {
            let raw = serde_json::to_vec(
                &seal(&alice.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"x", ts).unwrap(),
            )
            .unwrap();
            for now in [NOW, i64::MIN, i64::MAX, 0] {
                let r = open(&raw, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), now);
                let fresh = (i128::from(now) - i128::from(ts)).abs() <= i128::from(MAX_SKEW_MS);
                match fresh {
                    true => assert_eq!(r.map(|o| o.body), Ok(b"x".to_vec()), "ts {ts} at {now}"),
                    false => assert_eq!(r, Err(Reject::Stale), "ts {ts} at {now}"),
                }
            }
        }
        assert!(within_skew(i64::MAX, i64::MAX) && within_skew(i64::MIN, i64::MIN));
    }

    /// A recipient entry with a field the format does not have is refused
    /// (the signature does not cover unknown fields).
    #[test]
    fn recipient_entries_refuse_unknown_fields() {
        let (alice, bob) = (Peer::new(), Peer::new());
        let subject = subjects::dm(&bob.id());
        let env = seal(&alice.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"x", NOW).unwrap();
        let mut v = serde_json::to_value(&env).unwrap();
        v["recipients"][0]["extra"] = serde_json::json!("smuggled");
        let raw = serde_json::to_vec(&v).unwrap();
        let r = open(&raw, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), NOW);
        assert!(matches!(r, Err(Reject::Malformed(_))), "{r:?}");
        let clean = serde_json::to_vec(&env).unwrap();
        assert!(open(&clean, &subject, &bob.id(), &bob.kex, &mut ReplayGuard::default(), NOW).is_ok());
    }
}
