//! Messages that wait for offline devices (docs/protocol.md section 10):
//! the bodies of `unibus.mail.send` and `unibus.mail.fetch`, and what can
//! be judged of a message to store without the store: its shape, its
//! sender, its signature, its freshness and where it goes ([`address`]).
//! unibusd checks the rest (the target exists and takes it, the exact
//! recipient devices, the limits) against its buckets.

use serde::{Deserialize, Serialize};

use crate::e2e::{self, Envelope, Kind, MAX_SKEW_MS, VERSION_2};
use crate::error::Error;
use crate::ids::{Key, RoomId};
use crate::subjects;

/// Most messages one fetch page holds (and its default).
pub const FETCH_LIMIT_MAX: u64 = 100;

/// How long a message waits, by default (the mail bucket's `max_age`): 30
/// days, as Signal and WhatsApp keep undelivered messages. Clients accept
/// a stored envelope up to this old.
pub const DEFAULT_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// `unibus.mail.send` request: one version-2 envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSendRequest {
    /// The envelope, exactly as it is delivered (docs/envelope.md).
    pub envelope: Envelope,
}

/// `unibus.mail.send` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSendReply {
    /// The message's position in the mail bucket (its KV revision, > 0):
    /// the order every device reads its channels in.
    pub seq: u64,
}

/// A mail channel as a fetch names it: the caller's own account's DMs
/// (`"dm"`), or a room (its id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// The DMs to the caller's account and the copies its devices send.
    Dm,
    /// A room's messages.
    Room(RoomId),
}

impl Channel {
    /// `"dm"` or the room id.
    pub fn as_str(&self) -> &str {
        match self {
            Channel::Dm => "dm",
            Channel::Room(id) => id.as_str(),
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Channel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Channel, Error> {
        if s == "dm" {
            return Ok(Channel::Dm);
        }
        let room = RoomId::parse(s).map_err(|_| Error::bad("channel: expected \"dm\" or a room id"))?;
        if room.as_str() != s {
            return Err(Error::bad("channel: a room id is lowercase hex"));
        }
        Ok(Channel::Room(room))
    }
}

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Channel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `unibus.mail.fetch` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailFetchRequest {
    /// Which channel.
    pub channel: Channel,
    /// Only messages with a greater `seq` (default 0: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many messages, 1..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl MailFetchRequest {
    /// The page size asked for.
    ///
    /// # Errors
    /// `bad_request` outside 1..=[`FETCH_LIMIT_MAX`].
    pub fn page_limit(&self) -> Result<usize, Error> {
        let l = self.limit.unwrap_or(FETCH_LIMIT_MAX);
        if !(1..=FETCH_LIMIT_MAX).contains(&l) {
            return Err(Error::bad(format!("limit: must be 1..={FETCH_LIMIT_MAX}, got {l}")));
        }
        Ok(l as usize)
    }
}

/// A stored message as a fetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    /// Its position in the mail bucket.
    pub seq: u64,
    /// The envelope, as it was sent.
    pub envelope: Envelope,
}

/// `unibus.mail.fetch` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailFetchReply {
    /// In `seq` order, only those sealed for the calling device.
    pub messages: Vec<Waiting>,
    /// The `after` of the following page; `null` once caught up. A page
    /// may be short, or even empty, while `next` is not `null` (a page
    /// reads a bounded part of the channel): fetch until it is.
    pub next: Option<u64>,
}

/// A channel of the mail bucket as its keys spell it: `dm.<account>` or
/// `room.<id>` (made only from typed ids, [`subjects`] spells them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailChannel(String);

impl MailChannel {
    /// The DMs to `account` (and its devices' copies).
    pub fn dm(account: &Key) -> MailChannel {
        MailChannel(subjects::mail_channel_dm(&account.to_hex()))
    }

    /// A room's messages.
    pub fn room(room: &RoomId) -> MailChannel {
        MailChannel(subjects::mail_channel_room(room.as_str()))
    }

    /// The key of message `id` from `from` in this channel.
    pub fn key(&self, from: &Key, id: &str) -> MailKey {
        MailKey(subjects::mail_key(&self.0, &from.to_hex(), id))
    }

    /// As the bucket's keys spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's key in the mail bucket: its channel, `from` and `id`
/// ([`MailChannel::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailKey(String);

impl MailKey {
    /// As the bucket spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MailKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a message to store goes, as its envelope says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A DM to another account: sealed for its active devices.
    Dm(Key),
    /// The copy of a DM to `peer` for the sender's own other devices.
    Copy {
        /// The account the DM went to.
        peer: Key,
    },
    /// A room message.
    Room(RoomId),
}

/// A message that passed [`address`]: where it goes and its mail key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// Where it goes.
    pub target: Target,
    /// Its channel in the mail bucket: `dm.<account>` or `room.<id>`.
    pub channel: MailChannel,
    /// Its key in the mail bucket (channel, `from`, `id`).
    pub key: MailKey,
    /// The recipient devices it is sealed for, sorted.
    pub recipients: Vec<Key>,
}

/// Step 1 of `unibus.mail.send` (docs/protocol.md section 10): `env`
/// parses strictly as version 2, was sent by device `device` of account
/// `account`, its signature verifies, its `ts` is within
/// [`MAX_SKEW_MS`] of `now_ms`, and its subject is a DM subject (the
/// caller's own only for a copy, with `peer`) or a room subject.
///
/// # Errors
/// `bad_request` naming the first check that failed.
pub fn address(env: &Envelope, account: &Key, device: &Key, now_ms: i64) -> Result<Addressed, Error> {
    if env.v != VERSION_2 {
        return Err(Error::bad(format!("envelope: version {} cannot be stored (version 2 only)", env.v)));
    }
    e2e::check_sealed(env).map_err(|e| Error::bad(format!("envelope: {e}")))?;
    if *account != env.from.as_str() {
        return Err(Error::bad("envelope: from is not the calling account"));
    }
    if env.device.as_deref().is_none_or(|d| *device != d) {
        return Err(Error::bad("envelope: device is not the calling device"));
    }
    if now_ms.abs_diff(env.ts) > MAX_SKEW_MS.unsigned_abs() {
        return Err(Error::bad("envelope: ts is more than 5 minutes from the server's clock"));
    }
    if env.id.len() != 32 || !env.id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::bad("envelope: id: expected 32 lowercase hex characters"));
    }
    let target = target(env, account)?;
    let channel = match &target {
        Target::Dm(to) => MailChannel::dm(to),
        Target::Copy { .. } => MailChannel::dm(account),
        Target::Room(room) => MailChannel::room(room),
    };
    // `from` is the caller's account (checked above).
    let key = channel.key(account, &env.id);
    let mut recipients: Vec<Key> =
        env.recipients.iter().map(|r| Key::parse(&r.to)).collect::<Result<_, _>>()?;
    recipients.sort_unstable();
    Ok(Addressed { target, channel, key, recipients })
}

/// Where the subject points, for the kind.
fn target(env: &Envelope, account: &Key) -> Result<Target, Error> {
    match (env.kind, env.room.as_deref(), env.peer.as_deref()) {
        (Kind::Room, Some(room), None) => {
            let id = RoomId::parse(room).ok().filter(|id| id.as_str() == room);
            let id = id.ok_or_else(|| Error::bad("envelope: room: expected 32 lowercase hex characters"))?;
            if env.subject != subjects::room_msg(id.as_str()) {
                return Err(Error::bad("envelope: subject is not the room's subject"));
            }
            Ok(Target::Room(id))
        }
        (Kind::Dm, None, peer) => {
            let to = env.subject.strip_prefix("unibus.msg.dm.").and_then(|b| {
                let key = Key::parse(b).ok()?;
                (key == b).then_some(key)
            });
            let to = to.ok_or_else(|| Error::bad("envelope: subject is not a DM subject"))?;
            match (to == *account, peer) {
                (false, None) => Ok(Target::Dm(to)),
                (true, Some(peer)) => {
                    let peer = Key::parse(peer)?;
                    if peer == *account {
                        return Err(Error::bad("envelope: a copy's peer is another account"));
                    }
                    Ok(Target::Copy { peer })
                }
                (false, Some(_)) => Err(Error::bad("envelope: peer is only on a copy to the own account")),
                (true, None) => {
                    Err(Error::bad("envelope: a DM to the own account is a copy and names its peer"))
                }
            }
        }
        _ => Err(Error::bad("envelope: room or peer does not match kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_dm_or_a_lowercase_room_id() {
        assert_eq!("dm".parse::<Channel>().unwrap(), Channel::Dm);
        let room = "00112233445566778899aabbccddeeff";
        assert_eq!(room.parse::<Channel>().unwrap().as_str(), room);
        assert!("00112233445566778899AABBCCDDEEFF".parse::<Channel>().is_err());
        assert!("DM".parse::<Channel>().is_err());
        assert!("room".parse::<Channel>().is_err());
        let req: MailFetchRequest = serde_json::from_str(r#"{"channel":"dm","after":7}"#).unwrap();
        assert_eq!((req.page_limit().unwrap(), req.channel, req.after), (100, Channel::Dm, Some(7)));
        let over: MailFetchRequest = serde_json::from_str(r#"{"channel":"dm","limit":101}"#).unwrap();
        assert!(over.page_limit().is_err());
        assert!(serde_json::from_str::<MailFetchRequest>(r#"{"channel":"dm","extra":1}"#).is_err());
    }

    /// A device: its signing key and X25519 public key.
    struct Dev {
        key: ed25519_dalek::SigningKey,
        kex: [u8; 32],
    }

    fn dev(n: u8) -> Dev {
        let key = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
        let kex = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([n ^ 0x55; 32])).to_bytes();
        Dev { key, kex }
    }

    impl Dev {
        fn hex(&self) -> String {
            hex::encode(self.key.verifying_key().as_bytes())
        }
        fn id(&self) -> Key {
            Key::parse(&self.hex()).unwrap()
        }
        fn to(&self) -> e2e::Recipient {
            e2e::Recipient { sign_pub: self.hex(), kex_pub: self.kex }
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    /// `from` (a device of `account`) seals for `to` at `ts`.
    fn seal(from: &Dev, account: &str, addr: e2e::Addressing<'_>, to: &[&Dev], ts: i64) -> Envelope {
        let sender = e2e::Sender { device: &from.key, account };
        let recipients: Vec<e2e::Recipient> = to.iter().map(|d| d.to()).collect();
        e2e::seal_v2(&sender, &addr, &recipients, b"body", ts).unwrap()
    }

    fn dm_addr(subject: &str) -> e2e::Addressing<'_> {
        e2e::Addressing { kind: Kind::Dm, subject, room: None, peer: None }
    }

    #[test]
    fn a_dm_a_copy_and_a_room_message_are_addressed_to_their_channels() {
        let (alice, bob, bob2) = (dev(1), dev(2), dev(3));
        let to_bob = subjects::dm(&bob.hex());
        let env = seal(&alice, &alice.hex(), dm_addr(&to_bob), &[&bob2, &bob], NOW);
        let a = address(&env, &alice.id(), &alice.id(), NOW + 1000).unwrap();
        assert_eq!(a.target, Target::Dm(bob.id()));
        assert_eq!(a.channel.as_str(), format!("dm.{}", bob.hex()));
        assert_eq!(a.key.as_str(), format!("dm.{}.{}.{}", bob.hex(), alice.hex(), env.id));
        let mut want = vec![bob.id(), bob2.id()];
        want.sort_unstable();
        assert_eq!(a.recipients, want, "sorted");

        let own = subjects::dm(&alice.hex());
        let bob_hex = bob.hex();
        let copy = e2e::Addressing { peer: Some(&bob_hex), ..dm_addr(&own) };
        let phone = dev(4);
        let env = seal(&alice, &alice.hex(), copy, &[&phone], NOW);
        let a = address(&env, &alice.id(), &alice.id(), NOW).unwrap();
        assert_eq!(
            (a.target, a.channel.as_str().to_string()),
            (Target::Copy { peer: bob.id() }, format!("dm.{}", alice.hex()))
        );

        let room = "0123456789abcdef0123456789abcdef";
        let subject = subjects::room_msg(room);
        let addr = e2e::Addressing { kind: Kind::Room, subject: &subject, room: Some(room), peer: None };
        let env = seal(&alice, &alice.hex(), addr, &[&alice, &bob], NOW);
        let a = address(&env, &alice.id(), &alice.id(), NOW).unwrap();
        assert_eq!(a.target, Target::Room(RoomId::parse(room).unwrap()));
        assert_eq!(a.key.as_str(), format!("room.{room}.{}.{}", alice.hex(), env.id));
    }

    #[test]
    fn every_shape_refusal_is_a_bad_request() {
        let (alice, laptop, bob) = (dev(1), dev(5), dev(2));
        let to_bob = subjects::dm(&bob.hex());
        let good = seal(&alice, &alice.hex(), dm_addr(&to_bob), &[&bob], NOW);
        let refused = |env: &Envelope, account: &Dev, device: &Dev, now: i64| {
            let e = address(env, &account.id(), &device.id(), now).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{e}");
            e.to_string()
        };
        assert!(address(&good, &alice.id(), &alice.id(), NOW).is_ok());
        assert!(refused(&good, &bob, &bob, NOW).contains("from is not"));
        // A device of alice's account sending the phone's envelope.
        assert!(refused(&good, &alice, &laptop, NOW).contains("device is not"));
        assert!(refused(&good, &alice, &alice, NOW + MAX_SKEW_MS + 1).contains("5 minutes"));
        assert!(refused(&good, &alice, &alice, NOW - MAX_SKEW_MS - 1).contains("5 minutes"));
        let mut v1 = good.clone();
        v1.v = 1;
        assert!(refused(&v1, &alice, &alice, NOW).contains("version 2 only"));
        let mut tampered = good.clone();
        tampered.recipients[0].nonce = "00".repeat(12);
        assert!(refused(&tampered, &alice, &alice, NOW).contains("signature"));

        // Subjects: the own DM subject only as a copy, a peer only there
        // and never the own account, a room message on its room's subject.
        let own = subjects::dm(&alice.hex());
        let to_self = seal(&alice, &alice.hex(), dm_addr(&own), &[&laptop], NOW);
        assert!(refused(&to_self, &alice, &alice, NOW).contains("copy"));
        let bob_hex = bob.hex();
        let peer_on_dm = seal(
            &alice,
            &alice.hex(),
            e2e::Addressing { peer: Some(&bob_hex), ..dm_addr(&to_bob) },
            &[&bob],
            NOW,
        );
        assert!(refused(&peer_on_dm, &alice, &alice, NOW).contains("peer"));
        let alice_hex = alice.hex();
        let peer_self = seal(
            &alice,
            &alice.hex(),
            e2e::Addressing { peer: Some(&alice_hex), ..dm_addr(&own) },
            &[&laptop],
            NOW,
        );
        assert!(refused(&peer_self, &alice, &alice, NOW).contains("peer"));
        let not_dm = seal(&alice, &alice.hex(), dm_addr("unibus.msg.dm.bob"), &[&bob], NOW);
        assert!(refused(&not_dm, &alice, &alice, NOW).contains("DM subject"));
        let room = "0123456789abcdef0123456789abcdef";
        let other = subjects::room_msg(&"ff".repeat(16));
        let addr = e2e::Addressing { kind: Kind::Room, subject: &other, room: Some(room), peer: None };
        let misfiled = seal(&alice, &alice.hex(), addr, &[&alice], NOW);
        assert!(refused(&misfiled, &alice, &alice, NOW).contains("room's subject"));
    }

    #[test]
    fn a_caught_up_page_says_next_null() {
        let reply = MailFetchReply { messages: vec![], next: None };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"messages":[],"next":null}"#);
    }
}
