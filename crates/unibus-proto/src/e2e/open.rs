//! Checking and decrypting envelopes of version 1 and 2 ([`open_as`]),
//! rejecting on the first failure with a typed [`Reject`].

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::Signature;
use serde::Deserialize;

use super::{
    Envelope, Kind, MAX_RECIPIENTS, Opened, Reject, ReplayGuard, VERSION_1, VERSION_2, Wrapped, wrap_key,
};
use crate::keys;
use crate::records::MAX_DEVICES_PER_ACCOUNT;
use crate::subjects;

/// The receiving device: its account, its own key and its X25519 secret.
#[derive(Clone, Copy)]
pub struct Receiver<'a> {
    /// The account id hex (whose DM subject it reads).
    pub account: &'a str,
    /// This device's `sign_pub` hex (what recipient entries name).
    pub device: &'a str,
    /// This device's X25519 secret.
    pub kex_secret: &'a x25519_dalek::StaticSecret,
}

/// Only the version, read before the strict parse so that an unknown
/// version is reported as such, and anything without one as no envelope.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    v: Option<serde_json::Value>,
}

fn hex32(field: &str, s: &str) -> Result<[u8; 32], Reject> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Reject::Malformed(format!("{field}: expected lowercase hex")));
    }
    keys::parse_hex32(field, s).map_err(|e| Reject::Malformed(e.to_string()))
}

/// Opens an envelope received on `subject` by a device that is its own
/// account (`me` = its `sign_pub` hex): [`open_as`] with account = device.
///
/// # Errors
/// [`Reject`] naming why it was refused.
pub fn open(
    raw: &[u8],
    subject: &str,
    me: &str,
    kex_secret: &x25519_dalek::StaticSecret,
    guard: &ReplayGuard,
    now_ms: i64,
) -> Result<Opened, Reject> {
    open_as(raw, subject, &Receiver { account: me, device: me, kex_secret }, guard, now_ms)
}

/// Opens an envelope received on `subject` by device `me` (docs/envelope.md,
/// "Opening"); a `(from, id)` that `guard` holds is a replay. The caller
/// then checks that the signing device is an active device of the sender
/// account ([`Opened::device`], [`Opened::from`]) and only then records
/// the message in `guard` ([`ReplayGuard::record`]), so that nothing that
/// fails a check uses up an id.
///
/// # Errors
/// [`Reject`] naming why it was refused; [`Reject::NotEnvelope`] for
/// bytes that are no envelope at all.
pub fn open_as(
    raw: &[u8],
    subject: &str,
    me: &Receiver<'_>,
    guard: &ReplayGuard,
    now_ms: i64,
) -> Result<Opened, Reject> {
    let env = parse(raw)?;
    check_subject(&env, subject, me)?;
    verify_signature(&env)?;
    let mine = check_recipients(&env, me.device)?;
    if !guard.freshness().accepts(env.ts, now_ms) {
        return Err(Reject::Stale);
    }
    let body = decrypt(&env, mine, me)?;
    guard.check(&env.from, &env.id)?;
    let device = env.signer().to_string();
    Ok(Opened {
        v: env.v,
        kind: env.kind,
        from: env.from,
        device,
        peer: env.peer,
        room: env.room,
        id: env.id,
        ts: env.ts,
        body,
    })
}

/// Step 1: a JSON object with a `v` (else no envelope at all), the
/// version, then the strict shape of that version.
fn parse(raw: &[u8]) -> Result<Envelope, Reject> {
    if raw.trim_ascii_start().first() != Some(&b'{') {
        return Err(Reject::NotEnvelope);
    }
    let v = serde_json::from_slice::<VersionOnly>(raw).ok().and_then(|v| v.v).ok_or(Reject::NotEnvelope)?;
    let v = v.as_u64().ok_or_else(|| Reject::Malformed("v: expected an unsigned integer".into()))?;
    if v != u64::from(VERSION_1) && v != u64::from(VERSION_2) {
        return Err(Reject::Version(v));
    }
    let env: Envelope = serde_json::from_slice(raw).map_err(|e| Reject::Malformed(e.to_string()))?;
    check_fields(&env)?;
    Ok(env)
}

/// Step 1 after the strict parse: the fields a version needs, as 64
/// lowercase hex, and the room or peer that the kind allows.
fn check_fields(env: &Envelope) -> Result<(), Reject> {
    if env.v != VERSION_1 && env.v != VERSION_2 {
        return Err(Reject::Version(u64::from(env.v)));
    }
    match (env.v, &env.device, &env.peer) {
        (VERSION_1, None, None) => {}
        (VERSION_1, _, _) => return Err(Reject::Malformed("version 1 has no device or peer".into())),
        (_, None, _) => return Err(Reject::Malformed("version 2 names its device".into())),
        (_, Some(device), peer) => {
            hex32("from", &env.from)?;
            hex32("device", device)?;
            if let Some(peer) = peer {
                hex32("peer", peer)?;
            }
        }
    }
    match (env.kind, &env.room, &env.peer) {
        (Kind::Dm, None, _) | (Kind::Room, Some(_), None) => Ok(()),
        _ => Err(Reject::Malformed("room or peer field does not match kind".into())),
    }
}

/// The checks anyone can make of an envelope without a receiving key
/// (docs/envelope.md, opening steps 1, 3 and 4 but the one naming the
/// receiver): its fields for its version and kind, its signature, and its
/// recipient list (count for the kind, no device twice, each `to` 64
/// lowercase hex). unibusd makes them before it stores a message
/// (docs/protocol.md section 10); the subject, the sender and the exact
/// recipients are its own to check.
///
/// # Errors
/// [`Reject::Version`], [`Reject::Malformed`], [`Reject::BadSignature`].
pub fn check_sealed(env: &Envelope) -> Result<(), Reject> {
    check_fields(env)?;
    check_recipient_list(env)?;
    for r in &env.recipients {
        hex32("to", &r.to)?;
    }
    verify_signature(env)
}

/// Step 2: it arrived where it says, and that is this device's account DM
/// subject or the room's; a copy naming a peer comes from this account.
fn check_subject(env: &Envelope, subject: &str, me: &Receiver<'_>) -> Result<(), Reject> {
    let expected = match (env.kind, env.room.as_deref()) {
        (Kind::Room, Some(room)) => subjects::room_msg(room),
        _ => subjects::dm(me.account),
    };
    if env.subject != subject || subject != expected {
        return Err(Reject::WrongSubject);
    }
    if env.peer.is_some() && env.from != me.account {
        return Err(Reject::WrongSubject);
    }
    Ok(())
}

/// Step 3: a canonical signing key and a strict signature over `signed`.
fn verify_signature(env: &Envelope) -> Result<(), Reject> {
    let signer = keys::parse_hex32("signer", env.signer()).map_err(|_| Reject::BadSignature)?;
    let key = keys::check_sign_pub(&signer).map_err(|_| Reject::BadSignature)?;
    let sig = STANDARD.decode(&env.sig).map_err(|_| Reject::BadSignature)?;
    let sig = Signature::from_slice(&sig).map_err(|_| Reject::BadSignature)?;
    key.verify_strict(&env.signed_bytes(), &sig).map_err(|_| Reject::BadSignature)
}

/// Step 4: recipient count for the kind, no device twice, one entry for me.
fn check_recipients<'e>(env: &'e Envelope, device: &str) -> Result<&'e Wrapped, Reject> {
    check_recipient_list(env)?;
    env.recipients.iter().find(|r| r.to == device).ok_or(Reject::NotForMe)
}

/// Step 4 but the receiver's entry: the count for the kind, no device twice.
fn check_recipient_list(env: &Envelope) -> Result<(), Reject> {
    let n = env.recipients.len();
    let ok = match (env.v, env.kind) {
        (VERSION_1, Kind::Dm) => n == 1,
        (_, Kind::Dm) => (1..=MAX_DEVICES_PER_ACCOUNT).contains(&n),
        (_, Kind::Room) => (1..=MAX_RECIPIENTS).contains(&n),
    };
    if !ok {
        return Err(Reject::Malformed(format!("{n} recipients for a {:?} message", env.kind)));
    }
    let mut seen = HashSet::with_capacity(n);
    if !env.recipients.iter().all(|r| seen.insert(r.to.as_str())) {
        return Err(Reject::Malformed("a recipient appears twice".into()));
    }
    Ok(())
}

/// Steps 6: unwrap the content key with this device's secret, decrypt.
fn decrypt(env: &Envelope, mine: &Wrapped, me: &Receiver<'_>) -> Result<Vec<u8>, Reject> {
    let epk = hex32("epk", &env.epk)?;
    let my_pub = x25519_dalek::PublicKey::from(me.kex_secret).to_bytes();
    let shared = me.kex_secret.diffie_hellman(&x25519_dalek::PublicKey::from(epk));
    if !shared.was_contributory() {
        return Err(Reject::Decrypt);
    }
    let kek = wrap_key(shared.as_bytes(), &my_pub, env, &epk, me.device);
    let wrap_nonce = hex::decode(&mine.nonce).ok().filter(|n| n.len() == 12).ok_or(Reject::Decrypt)?;
    let wrapped = STANDARD.decode(&mine.key).map_err(|_| Reject::Decrypt)?;
    let content_key = ChaCha20Poly1305::new(&kek)
        .decrypt(Nonce::from_slice(&wrap_nonce), Payload { msg: &wrapped, aad: &env.base() })
        .map_err(|_| Reject::Decrypt)?;
    if content_key.len() != 32 {
        return Err(Reject::Decrypt);
    }
    let nonce = hex::decode(&env.nonce).ok().filter(|n| n.len() == 12).ok_or(Reject::Decrypt)?;
    let ct = STANDARD.decode(&env.ct).map_err(|_| Reject::Decrypt)?;
    ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: &env.header() })
        .map_err(|_| Reject::Decrypt)
}
