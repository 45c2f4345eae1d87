//! Version-1 envelopes (one-device accounts, as sealed before linked
//! devices): they still open, and every rejection still holds.

use ed25519_dalek::SigningKey;

use super::seal::random;
use super::*;
use crate::subjects;

pub(super) struct Peer {
    pub(super) sk: SigningKey,
    pub(super) kex: x25519_dalek::StaticSecret,
}

impl Peer {
    pub(super) fn new() -> Peer {
        Peer {
            sk: SigningKey::from_bytes(&random()),
            kex: x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng),
        }
    }
    pub(super) fn id(&self) -> String {
        hex::encode(self.sk.verifying_key().as_bytes())
    }
    pub(super) fn recipient(&self) -> Recipient {
        Recipient { sign_pub: self.id(), kex_pub: x25519_dalek::PublicKey::from(&self.kex).to_bytes() }
    }
}

pub(super) const NOW: i64 = 1_800_000_000_000;

#[test]
fn dm_round_trip_and_rejections() {
    let (alice, bob, eve) = (Peer::new(), Peer::new(), Peer::new());
    let subject = subjects::dm(&bob.id());
    let env = seal(&alice.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"hi bob", NOW).unwrap();
    let raw = serde_json::to_vec(&env).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("hi bob"));
    let mut guard = ReplayGuard::default();
    let opened = open(&raw, &subject, &bob.id(), &bob.kex, &guard, NOW).unwrap();
    assert_eq!((opened.body.as_slice(), opened.from.as_str()), (&b"hi bob"[..], alice.id().as_str()));
    // Opening records nothing: the receiver records what it accepted.
    assert!(open(&raw, &subject, &bob.id(), &bob.kex, &guard, NOW).is_ok());
    guard.record(&opened, NOW).unwrap();
    // replay
    assert_eq!(open(&raw, &subject, &bob.id(), &bob.kex, &guard, NOW), Err(Reject::Replay));
    assert_eq!(guard.record(&opened, NOW), Err(Reject::Replay));
    // another recipient (eve got it on her subject by someone re-publishing)
    let eve_subject = subjects::dm(&eve.id());
    let mut moved = env.clone();
    moved.subject = eve_subject.clone();
    let moved = serde_json::to_vec(&moved).unwrap();
    assert_eq!(
        open(&moved, &eve_subject, &eve.id(), &eve.kex, &ReplayGuard::default(), NOW),
        Err(Reject::BadSignature)
    );
    assert_eq!(
        open(&raw, &eve_subject, &eve.id(), &eve.kex, &ReplayGuard::default(), NOW),
        Err(Reject::WrongSubject)
    );
    // forged sender: signed by eve, claims alice
    let mut forged = seal(&eve.sk, Kind::Dm, &subject, None, &[bob.recipient()], b"x", NOW).unwrap();
    forged.from = alice.id();
    let forged = serde_json::to_vec(&forged).unwrap();
    assert_eq!(
        open(&forged, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), NOW),
        Err(Reject::BadSignature)
    );
    // stale: older than the retention (30 days), or more than 5 minutes
    // ahead of the receiver; a message that waited a day is fresh
    let day = 24 * 3600 * 1000;
    let at = |now| open(&raw, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), now).map(|o| o.body);
    assert_eq!(at(NOW + 30 * day + 1), Err(Reject::Stale));
    assert_eq!(at(NOW - MAX_SKEW_MS - 1), Err(Reject::Stale));
    assert_eq!(at(NOW + day), Ok(b"hi bob".to_vec()));
    assert_eq!(at(NOW - MAX_SKEW_MS), Ok(b"hi bob".to_vec()));
    // live delivery alone keeps the 5-minute window both ways
    let live = ReplayGuard::new(Freshness::LIVE);
    assert_eq!(open(&raw, &subject, &bob.id(), &bob.kex, &live, NOW + MAX_SKEW_MS + 1), Err(Reject::Stale));
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
        let r = open(&bad, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), NOW);
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
        let o = open(&raw, &subject, &p.id(), &p.kex, &ReplayGuard::default(), NOW).unwrap();
        assert_eq!(o.body, b"hello room");
        assert_eq!(o.room.as_deref(), Some(room));
    }
    assert_eq!(
        open(&raw, &subject, &dave.id(), &dave.kex, &ReplayGuard::default(), NOW),
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
            let r = open(&raw, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), now);
            let (behind, ahead) = (i128::from(now) - i128::from(ts), i128::from(ts) - i128::from(now));
            let fresh = behind <= 30 * 24 * 3600 * 1000 && ahead <= i128::from(MAX_SKEW_MS);
            match fresh {
                true => assert_eq!(r.map(|o| o.body), Ok(b"x".to_vec()), "ts {ts} at {now}"),
                false => assert_eq!(r, Err(Reject::Stale), "ts {ts} at {now}"),
            }
        }
    }
    let f = Freshness::default();
    assert!(f.accepts(i64::MAX, i64::MAX) && f.accepts(i64::MIN, i64::MIN));
    assert!(!f.accepts(i64::MIN, i64::MAX) && !f.accepts(i64::MAX, i64::MIN));
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
    let r = open(&raw, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), NOW);
    assert!(matches!(r, Err(Reject::Malformed(_))), "{r:?}");
    let clean = serde_json::to_vec(&env).unwrap();
    assert!(open(&clean, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), NOW).is_ok());
}

/// Bytes that are no JSON object with a `v` (a control-plane reply aimed
/// at a DM subject, any other JSON, no JSON at all) are no envelope; an
/// object with a `v` is judged as an envelope.
#[test]
fn what_is_not_an_envelope() {
    let bob = Peer::new();
    let subject = subjects::dm(&bob.id());
    let open_raw = |raw: &[u8]| open(raw, &subject, &bob.id(), &bob.kex, &ReplayGuard::default(), NOW);
    for raw in [
        &br#"{"error":{"code":"bad_request","message":"missing field `invite`"}}"#[..],
        br#"{"device":{"device":"ab"},"kicked":0}"#,
        br#"{"v":null}"#,
        br#"[2,"dm"]"#,
        br#""text""#,
        b"not json",
        b"",
    ] {
        assert_eq!(open_raw(raw), Err(Reject::NotEnvelope), "{}", String::from_utf8_lossy(raw));
    }
    assert!(matches!(open_raw(br#"{"v":"2"}"#), Err(Reject::Malformed(_))));
    assert_eq!(open_raw(br#" {"v":3}"#), Err(Reject::Version(3)));
    assert!(matches!(open_raw(br#"{"v":2,"kind":"dm"}"#), Err(Reject::Malformed(_))));
}

/// The guard keeps a pair while its envelope could still be fresh, loads
/// saved pairs back, and forgets them once they are stale anyway.
#[test]
fn replay_guard_saves_loads_and_prunes() {
    let day = 24 * 3600 * 1000;
    let mut guard = ReplayGuard::new(Freshness::stored(7 * day));
    assert!(guard.insert("a", "1", NOW - 6 * day));
    assert!(guard.insert("a", "2", NOW));
    assert!(!guard.insert("a", "2", NOW));
    let mut saved: Vec<(String, String, i64)> =
        guard.entries().map(|(f, i, t)| (f.to_string(), i.to_string(), t)).collect();
    saved.sort();
    let mut loaded = ReplayGuard::new(guard.freshness());
    for (from, id, ts) in &saved {
        assert!(loaded.insert(from, id, *ts));
    }
    assert!(loaded.contains("a", "1") && loaded.contains("a", "2"));
    loaded.prune(NOW + 2 * day);
    assert!(!loaded.contains("a", "1") && loaded.contains("a", "2"));
}
