//! Making envelopes: [`seal_v2`] (and [`seal_v2_with_id`]) for
//! linked-device accounts (what clients send) and [`seal`], the version-1
//! form kept for tests and tools.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer as _, SigningKey};
use rand::RngCore as _;

use super::{Envelope, Kind, MAX_RECIPIENTS, Recipient, SealError, VERSION_1, VERSION_2, Wrapped, wrap_key};
use crate::keys;
use crate::records::MAX_DEVICES_PER_ACCOUNT;

/// The sending side: a device key and the account it is a device of.
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    /// The device's signing key.
    pub device: &'a SigningKey,
    /// The account id hex (the device's own key for a first device).
    pub account: &'a str,
}

/// Where an envelope goes.
#[derive(Debug, Clone, Copy)]
pub struct Addressing<'a> {
    /// dm or room.
    pub kind: Kind,
    /// The subject it is published on: the DM subject of the recipient
    /// account (or of the sender's own account for a copy), or the room's.
    pub subject: &'a str,
    /// The room id, for room messages.
    pub room: Option<&'a str>,
    /// For a DM copy on the sender's own DM subject: the account the
    /// message was sent to.
    pub peer: Option<&'a str>,
}

pub(super) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Seals a version-2 envelope from `sender`'s device to `recipients`
/// (device keys). A DM carries at most one account's devices (8).
///
/// # Errors
/// [`SealError`] for a weak recipient key, no or too many recipients, or
/// addressing that does not fit the kind (a room message without a room,
/// or with a peer).
pub fn seal_v2(
    sender: &Sender<'_>,
    to: &Addressing<'_>,
    recipients: &[Recipient],
    body: &[u8],
    now_ms: i64,
) -> Result<Envelope, SealError> {
    seal_v2_with_id(sender, to, recipients, body, now_ms, &random())
}

/// [`seal_v2`] with a chosen message `id` instead of a random one: for
/// sending the same message again under its id, and for tests that need
/// two envelopes with one id (receivers refuse a `(from, id)` they
/// accepted before).
///
/// # Errors
/// As [`seal_v2`].
pub fn seal_v2_with_id(
    sender: &Sender<'_>,
    to: &Addressing<'_>,
    recipients: &[Recipient],
    body: &[u8],
    now_ms: i64,
    id: &[u8; 16],
) -> Result<Envelope, SealError> {
    let max = if to.kind == Kind::Dm { MAX_DEVICES_PER_ACCOUNT } else { MAX_RECIPIENTS };
    if recipients.len() > max {
        return Err(SealError::TooManyRecipients(recipients.len()));
    }
    match (to.kind, to.room, to.peer) {
        (Kind::Dm, None, _) | (Kind::Room, Some(_), None) => {}
        (Kind::Dm, Some(_), _) => return Err(SealError::Addressing("a direct message has no room")),
        (Kind::Room, None, _) => return Err(SealError::Addressing("a room message names its room")),
        (Kind::Room, _, Some(_)) => return Err(SealError::Addressing("a room message has no peer")),
    }
    let device = hex::encode(sender.device.verifying_key().as_bytes());
    let mut env = blank(VERSION_2, to, sender.account.to_string(), Some(device), now_ms);
    env.id = hex::encode(id);
    finish(env, sender.device, recipients, body)
}

/// Seals a version-1 envelope (one-device accounts: the signing key is the
/// account) from `sender` to `recipients` for `subject` (the DM subject of
/// the one recipient, or the room subject with `room`). Clients send
/// version 2 ([`seal_v2`]); this stays so that version 1 can be tested.
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
    let from = hex::encode(sender.verifying_key().as_bytes());
    let to = Addressing { kind, subject, room, peer: None };
    finish(blank(VERSION_1, &to, from, None, now_ms), sender, recipients, body)
}

/// An envelope with its addressing filled in and no content yet.
fn blank(v: u32, to: &Addressing<'_>, from: String, device: Option<String>, now_ms: i64) -> Envelope {
    Envelope {
        v,
        kind: to.kind,
        from,
        device,
        peer: to.peer.map(str::to_string),
        subject: to.subject.to_string(),
        room: to.room.map(str::to_string),
        id: hex::encode(random::<16>()),
        ts: now_ms,
        epk: String::new(),
        recipients: Vec::new(),
        nonce: String::new(),
        ct: String::new(),
        sig: String::new(),
    }
}

/// Wraps a fresh content key for every recipient, encrypts and signs.
fn finish(
    mut env: Envelope,
    signer: &SigningKey,
    recipients: &[Recipient],
    body: &[u8],
) -> Result<Envelope, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let mut seen = std::collections::HashSet::with_capacity(recipients.len());
    if !recipients.iter().all(|r| seen.insert(r.sign_pub.as_str())) {
        return Err(SealError::Addressing("a recipient appears twice"));
    }
    let eph = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let epk = x25519_dalek::PublicKey::from(&eph).to_bytes();
    env.epk = hex::encode(epk);
    let content_key: [u8; 32] = random();
    let wrap_aad = env.base();
    for r in recipients {
        keys::check_kex_pub(&r.kex_pub).map_err(|why| SealError::WeakKey(r.sign_pub.clone(), why))?;
        let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(r.kex_pub));
        if !shared.was_contributory() {
            return Err(SealError::WeakKey(r.sign_pub.clone(), "non-contributory shared secret"));
        }
        let kek = wrap_key(shared.as_bytes(), &r.kex_pub, &env, &epk, &r.sign_pub);
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
    let aad = env.header();
    let ct = ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: body, aad: &aad })
        .expect("encryption cannot fail for in-memory data");
    env.ct = STANDARD.encode(ct);
    env.sig = STANDARD.encode(signer.sign(&env.signed_bytes()).to_bytes());
    Ok(env)
}
