//! End-to-end message envelope (documented in docs/envelope.md): versions
//! 1 (one-device accounts, opened only) and 2 (linked devices, sealed and
//! opened). A message is encrypted once with a random content key; the
//! content key is wrapped for each recipient device with X25519 (ephemeral
//! sender key) -> HKDF-SHA256 -> ChaCha20-Poly1305; the whole envelope
//! (sender account and device, conversation peer, every recipient,
//! subject, room, id, time) is authenticated as AEAD data and signed with
//! the sending device's Ed25519 key. nats-server and unibusd see only
//! ciphertext. Receivers reject tampered, forged, misaddressed, stale and
//! replayed envelopes with a typed reason ([`Reject`]); whether the
//! sending device belongs to the sender's active account is checked by the
//! client against `unibus.user.lookup` ([`Reject::SenderDevice`]).
//!
//! Layout: this module holds the format; `seal` makes envelopes, `open`
//! checks and decrypts them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

mod open;
mod seal;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v2;

pub use open::{Receiver, check_sealed, open, open_as};
pub use seal::{Addressing, Sender, seal, seal_v2, seal_v2_with_id};

/// Envelope version a single-device account sent before linked devices;
/// still opened, no longer sealed by the client.
pub const VERSION_1: u32 = 1;
/// Envelope version with linked devices: `from` is the account, `device`
/// the signing device, recipients are device keys.
pub const VERSION_2: u32 = 2;
/// The version [`seal_v2`] writes.
pub const VERSION: u32 = VERSION_2;
/// Envelopes newer than this (sender clock vs receiver clock) are
/// rejected as stale, and so are envelopes older than this on live
/// delivery alone ([`Freshness::LIVE`]); stored messages may be as old as
/// the retention ([`Freshness::default`]).
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most recipients one envelope may carry: every device (8) of every
/// member (512) of a room.
pub const MAX_RECIPIENTS: usize = crate::wire::MAX_MEMBERS_PER_ROOM * crate::records::MAX_DEVICES_PER_ACCOUNT;

/// Direct message or room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// To one account, on `unibus.msg.dm.<account>`.
    Dm,
    /// To a room's members, on `unibus.msg.room.<room>`.
    Room,
}

/// The content key wrapped for one recipient. Unknown fields are refused,
/// as in the envelope: the signature does not cover them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Wrapped {
    /// Recipient device key (`sign_pub` hex; in v1 the account's key).
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
    /// [`VERSION_1`] or [`VERSION_2`].
    pub v: u32,
    /// dm or room.
    pub kind: Kind,
    /// Sender account id hex (in v1 also the signing key).
    pub from: String,
    /// v2: the sending device's key hex, which signs. Absent in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// v2, DMs only: on a copy the sender publishes on its own account's DM
    /// subject, the account the conversation is with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
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
    /// One wrapped content key per recipient device.
    pub recipients: Vec<Wrapped>,
    /// 12-byte content nonce, hex.
    pub nonce: String,
    /// Ciphertext (+tag), base64.
    pub ct: String,
    /// Ed25519 signature of the sending device, base64.
    pub sig: String,
}

/// Why an envelope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// Not an envelope at all: not a JSON object with a `v` member (for
    /// example a control-plane reply that a requester aimed at a DM or
    /// room subject). Clients ignore such traffic rather than report it.
    #[error("not an envelope")]
    NotEnvelope,
    /// Not a well-formed envelope of its version.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A version this implementation does not know.
    #[error("unsupported envelope version {0}")]
    Version(u64),
    /// The signature does not verify for the signing key (tampered or
    /// forged).
    #[error("bad signature (tampered or forged sender)")]
    BadSignature,
    /// Received on another subject than the one it names, or a copy naming
    /// a peer that was not sent by this account.
    #[error("envelope names another subject (misaddressed)")]
    WrongSubject,
    /// Not addressed to this device.
    #[error("not addressed to this device (misaddressed)")]
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
    /// The signing device is not an active device of the sender's active
    /// account (revoked, another account's, or the account is not active).
    #[error("the sending device is not an active device of the sender's account")]
    SenderDevice,
    /// The signing device's binding (`kex_sig`) does not verify for the
    /// sender's account.
    #[error("the sending device's binding does not verify for the sender's account")]
    SenderBinding,
    /// The sender's account could not be looked up (fail closed).
    #[error("the sender could not be checked (lookup failed)")]
    SenderUnchecked,
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
    /// More recipients than one envelope of this kind may carry.
    #[error("{0} recipients: more than one envelope of this kind may carry")]
    TooManyRecipients(usize),
    /// The addressing is not valid for the kind (a room without its id, a
    /// peer on a room message).
    #[error("invalid addressing: {0}")]
    Addressing(&'static str),
}

/// A recipient device: its key hex and X25519 public key bytes.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The device's `sign_pub` hex (in v1: the account's).
    pub sign_pub: String,
    /// X25519 public key.
    pub kex_pub: [u8; 32],
}

/// A verified, decrypted message. The caller still checks that `device`
/// is an active device of the account `from` (docs/envelope.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Envelope version.
    pub v: u32,
    /// dm or room.
    pub kind: Kind,
    /// Sender account (its id, `sign_pub` hex).
    pub from: String,
    /// The device that signed (equals `from` in v1).
    pub device: String,
    /// On a DM copy from another device of the receiver's own account: the
    /// account the message was sent to.
    pub peer: Option<String>,
    /// Room id for room messages.
    pub room: Option<String>,
    /// Message id.
    pub id: String,
    /// Sender time, unix ms.
    pub ts: i64,
    /// Plaintext.
    pub body: Vec<u8>,
}

impl Opened {
    /// The account this DM was sent to when it is a copy of a message this
    /// account sent from another device.
    pub fn sent_to(&self) -> Option<&str> {
        self.peer.as_deref()
    }
}

/// Appends `enc(field)`: a 4-byte big-endian length, then the bytes.
fn put(buf: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(field);
}

impl Envelope {
    /// The bytes every wrapped key authenticates (`base`).
    fn base(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(512);
        let kind: &[u8] = if self.kind == Kind::Dm { b"dm" } else { b"room" };
        if self.v == VERSION_1 {
            put(&mut h, b"unibus-e2e/1");
            put(&mut h, b"1");
            put(&mut h, kind);
            put(&mut h, self.from.as_bytes());
        } else {
            put(&mut h, b"unibus-e2e/2");
            put(&mut h, self.v.to_string().as_bytes());
            put(&mut h, kind);
            put(&mut h, self.from.as_bytes());
            put(&mut h, self.device.as_deref().unwrap_or("").as_bytes());
            put(&mut h, self.peer.as_deref().unwrap_or("").as_bytes());
        }
        put(&mut h, self.subject.as_bytes());
        put(&mut h, self.room.as_deref().unwrap_or("").as_bytes());
        put(&mut h, self.id.as_bytes());
        put(&mut h, self.ts.to_string().as_bytes());
        put(&mut h, self.epk.as_bytes());
        h
    }

    /// `base`, every recipient and the content nonce: the content's AEAD
    /// data (`header`).
    fn header(&self) -> Vec<u8> {
        let mut h = self.base();
        put(&mut h, self.recipients.len().to_string().as_bytes());
        for r in &self.recipients {
            put(&mut h, r.to.as_bytes());
            put(&mut h, r.nonce.as_bytes());
            put(&mut h, r.key.as_bytes());
        }
        put(&mut h, self.nonce.as_bytes());
        h
    }

    /// What the sending device signs (`signed`).
    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = self.header();
        put(&mut b, self.ct.as_bytes());
        b
    }

    /// The key that signs: `device` in v2, `from` in v1.
    fn signer(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.from)
    }
}

/// The key that wraps the content key for recipient device `to`.
fn wrap_key(
    shared: &[u8; 32],
    kex_pub: &[u8; 32],
    env: &Envelope,
    epk: &[u8; 32],
    to: &str,
) -> chacha20poly1305::Key {
    use hkdf::Hkdf;
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(kex_pub);
    let hk = Hkdf::<sha2::Sha256>::new(Some(&salt), shared);
    let mut info = Vec::new();
    if env.v == VERSION_1 {
        put(&mut info, b"unibus-e2e/1 wrap");
        put(&mut info, env.from.as_bytes());
    } else {
        put(&mut info, b"unibus-e2e/2 wrap");
        put(&mut info, env.from.as_bytes());
        put(&mut info, env.signer().as_bytes());
    }
    put(&mut info, to.as_bytes());
    put(&mut info, env.subject.as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm).expect("32 bytes is a valid HKDF-SHA256 length");
    okm.into()
}

/// How far an envelope's `ts` may be from the receiver's clock
/// (docs/envelope.md, opening step 5): at most `ahead_ms` in the future and
/// at most `behind_ms` in the past. Since messages wait for offline
/// devices (docs/protocol.md section 10), the past reaches back as far as
/// a message can wait: [`Freshness::default`] is 5 minutes ahead and the
/// default retention (30 days) behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The most an envelope may be older than the receiver's clock.
    pub behind_ms: i64,
    /// The most an envelope may be ahead of the receiver's clock.
    pub ahead_ms: i64,
}

impl Freshness {
    /// The window of live delivery alone: 5 minutes either way.
    pub const LIVE: Freshness = Freshness { behind_ms: MAX_SKEW_MS, ahead_ms: MAX_SKEW_MS };

    /// 5 minutes ahead, `retention_ms` behind.
    pub fn stored(retention_ms: i64) -> Freshness {
        Freshness { behind_ms: retention_ms.max(MAX_SKEW_MS), ahead_ms: MAX_SKEW_MS }
    }

    /// Whether `ts` is fresh at `now_ms`, without overflow for any pair of
    /// values (a sender chooses `ts`, so `i64::MIN` must be stale, not a
    /// panic).
    pub fn accepts(&self, ts: i64, now_ms: i64) -> bool {
        let (ts, now) = (i128::from(ts), i128::from(now_ms));
        now - ts <= i128::from(self.behind_ms) && ts - now <= i128::from(self.ahead_ms)
    }
}

impl Default for Freshness {
    fn default() -> Self {
        let retention = i64::try_from(crate::mail::DEFAULT_RETENTION_SECS * 1000).unwrap_or(i64::MAX);
        Freshness::stored(retention)
    }
}

/// Remembers the (sender account, id) pairs of accepted messages for as
/// long as their envelopes are fresh ([`Freshness`]), to refuse replays.
///
/// [`open_as`] only reads it (a pair recorded already is
/// [`Reject::Replay`]) and judges freshness by its window; the receiver
/// records a message with [`ReplayGuard::record`] once it has accepted it,
/// after its own checks too (the sending device is a device of `from`).
/// So an envelope that fails any check, a forged one carrying a real
/// message's id included, never uses up that id. A receiver that keeps
/// the pairs across restarts saves [`ReplayGuard::entries`] and loads them
/// back with [`ReplayGuard::insert`].
#[derive(Default, Clone)]
pub struct ReplayGuard {
    seen: HashMap<(String, String), i64>,
    freshness: Freshness,
}

impl ReplayGuard {
    /// A guard judging freshness by `freshness`.
    pub fn new(freshness: Freshness) -> ReplayGuard {
        ReplayGuard { seen: HashMap::new(), freshness }
    }

    /// The window envelopes are judged fresh in.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// Whether (from, id) was recorded.
    pub fn contains(&self, from: &str, id: &str) -> bool {
        self.seen.contains_key(&(from.to_string(), id.to_string()))
    }

    /// `Err(Replay)` when (from, id) was recorded already.
    fn check(&self, from: &str, id: &str) -> Result<(), Reject> {
        match self.contains(from, id) {
            true => Err(Reject::Replay),
            false => Ok(()),
        }
    }

    /// Records an accepted message's (from, id), so that the same pair is
    /// refused from now on (while its envelope would still be fresh).
    ///
    /// # Errors
    /// [`Reject::Replay`] when the pair was recorded already (the message
    /// must then not be accepted).
    pub fn record(&mut self, opened: &Opened, now_ms: i64) -> Result<(), Reject> {
        if self.seen.len() > 10_000 && self.seen.len().is_power_of_two() {
            self.prune(now_ms);
        }
        match self.insert(&opened.from, &opened.id, opened.ts) {
            true => Ok(()),
            false => Err(Reject::Replay),
        }
    }

    /// Records (from, id) sent at `ts` (loading saved pairs); false when
    /// it was recorded already.
    pub fn insert(&mut self, from: &str, id: &str, ts: i64) -> bool {
        self.seen.insert((from.to_string(), id.to_string()), ts).is_none()
    }

    /// Forgets the pairs whose envelopes are no longer fresh at `now_ms`
    /// (they would be refused as stale anyway).
    pub fn prune(&mut self, now_ms: i64) {
        let freshness = self.freshness;
        self.seen.retain(|_, ts| freshness.accepts(*ts, now_ms));
    }

    /// Every recorded pair: `(from, id, ts)`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.seen.iter().map(|((from, id), ts)| (from.as_str(), id.as_str(), *ts))
    }
}
