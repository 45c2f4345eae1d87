//! Identifiers and times, the lowest layer of the contract (records, wire
//! bodies and endpoints build on it; it imports only [`crate::error`] and
//! [`crate::keys`]):
//! - [`Key`]: any 32-byte public key as records hold it (hex on the wire);
//!   [`Actor`]: who did something (`bootstrap`, an invite, a key).
//! - [`SignPub`], [`KexPub`]: keys from requests, with their curve checks.
//! - [`RoomId`], [`InviteId`], [`Timestamp`].
//!
//! Each is parsed once, when a request or record is decoded (serde
//! `try_from = "String"`), so a decoded value is valid and lowercased and
//! no later code checks it again. A value that does not parse is
//! `bad_request`, its text naming the field (`sign_pub: ...`, `id: ...`).

use std::fmt;
use std::ops::Deref;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Error;
use crate::keys;

/// The traits every string-backed identifier shares: it reads as `&str`
/// (lowercase hex), converts from and into `String` (the serde form), and
/// compares, orders and hashes by its text.
macro_rules! string_backed {
    ($t:ident) => {
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.as_str())
            }
        }
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                $t::parse(&s)
            }
        }
        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $t::parse(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.as_str().to_string()
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl Eq for $t {}
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.as_str()
            }
        }
        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.as_str()
            }
        }
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }
    };
}

/// A 32-byte public key (Ed25519 or X25519) as records, replies and the
/// store hold it: the raw bytes inside, 64 lowercase hex characters in
/// JSON. Parsing checks only the hex and the length; the curve checks
/// belong to [`SignPub`] and [`KexPub`], which every key from a request
/// passes through before it becomes a `Key`. Orders like its hex text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key([u8; 32]);

impl Key {
    /// Parses 64 hex characters (either case).
    ///
    /// # Errors
    /// `bad_request` (`key: expected 64 hex characters`).
    pub fn parse(s: &str) -> Result<Key, Error> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| Error::bad("key: expected 64 hex characters"))?;
        Ok(Key(bytes))
    }

    /// The key from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Infallible: the buffer is exactly twice the key's length.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(s: String) -> Result<Key, Error> {
        Key::parse(&s)
    }
}

impl std::str::FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Key, Error> {
        Key::parse(s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.to_hex()
    }
}

/// Equal to text when the text is this key's lowercase hex (how keys
/// compared while records held them as text).
impl PartialEq<str> for Key {
    fn eq(&self, s: &str) -> bool {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).is_ok() && buf.as_slice() == s.as_bytes()
    }
}
impl PartialEq<&str> for Key {
    fn eq(&self, s: &&str) -> bool {
        *self == **s
    }
}
impl PartialEq<String> for Key {
    fn eq(&self, s: &String) -> bool {
        *self == *s.as_str()
    }
}
impl PartialEq<Key> for String {
    fn eq(&self, k: &Key) -> bool {
        *k == *self.as_str()
    }
}
impl PartialEq<Key> for &str {
    fn eq(&self, k: &Key) -> bool {
        *k == **self
    }
}
impl PartialEq<Key> for str {
    fn eq(&self, k: &Key) -> bool {
        *k == *self
    }
}

/// Who did something, as records note it (`invited_by`, `added_by`,
/// `created_by`, `revoked_by`, `cancelled_by`): the first-admin bootstrap,
/// an invite (an account's first device joins by one), or a key (an admin's
/// account, a device). In JSON: `"bootstrap"`, `"invite"` or the key's hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Actor {
    /// The first-admin bootstrap (`unibusd bootstrap-admin`).
    Bootstrap,
    /// An invite: how an account's first device joins.
    Invite,
    /// An account or a device.
    Key(Key),
}

impl Actor {
    /// The JSON text of [`Actor::Bootstrap`].
    pub const BOOTSTRAP: &'static str = "bootstrap";
    /// The JSON text of [`Actor::Invite`].
    pub const INVITE: &'static str = "invite";

    /// Parses `bootstrap`, `invite` or a key's hex.
    ///
    /// # Errors
    /// `bad_request` for anything else.
    pub fn parse(s: &str) -> Result<Actor, Error> {
        match s {
            Actor::BOOTSTRAP => Ok(Actor::Bootstrap),
            Actor::INVITE => Ok(Actor::Invite),
            _ => Key::parse(s)
                .map(Actor::Key)
                .map_err(|_| Error::bad("actor: expected \"bootstrap\", \"invite\" or a key")),
        }
    }

    /// The key, when a key acted.
    pub fn key(&self) -> Option<Key> {
        match self {
            Actor::Key(k) => Some(*k),
            Actor::Bootstrap | Actor::Invite => None,
        }
    }
}

impl From<Key> for Actor {
    fn from(k: Key) -> Actor {
        Actor::Key(k)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Bootstrap => f.write_str(Actor::BOOTSTRAP),
            Actor::Invite => f.write_str(Actor::INVITE),
            Actor::Key(k) => k.fmt(f),
        }
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({self})")
    }
}

impl TryFrom<String> for Actor {
    type Error = Error;
    fn try_from(s: String) -> Result<Actor, Error> {
        Actor::parse(&s)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.to_string()
    }
}

impl PartialEq<Key> for Actor {
    fn eq(&self, k: &Key) -> bool {
        *self == Actor::Key(*k)
    }
}

/// Equal to text when the text is this actor's JSON text.
impl PartialEq<str> for Actor {
    fn eq(&self, s: &str) -> bool {
        match self {
            Actor::Key(k) => *k == *s,
            Actor::Bootstrap => s == Actor::BOOTSTRAP,
            Actor::Invite => s == Actor::INVITE,
        }
    }
}
impl PartialEq<&str> for Actor {
    fn eq(&self, s: &&str) -> bool {
        *self == **s
    }
}
impl PartialEq<String> for Actor {
    fn eq(&self, s: &String) -> bool {
        *self == *s.as_str()
    }
}

/// A user's Ed25519 public key: decodes, canonical, not of small order
/// (docs/protocol.md section 2); held as 64 lowercase hex characters.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignPub {
    hex: String,
    key: VerifyingKey,
}

impl SignPub {
    /// Parses a `sign_pub` field (hex in either case).
    ///
    /// # Errors
    /// `bad_request` naming `sign_pub` for bad hex, a wrong length, a point
    /// that does not decode, a non-canonical encoding or a weak key.
    pub fn parse(s: &str) -> Result<SignPub, Error> {
        SignPub::parse_field("sign_pub", s)
    }

    /// Like [`SignPub::parse`], with the error text naming `field`.
    ///
    /// # Errors
    /// `bad_request` naming `field`.
    pub fn parse_field(field: &str, s: &str) -> Result<SignPub, Error> {
        let key = keys::parse_sign_pub(field, s)?;
        Ok(SignPub { hex: hex::encode(key.as_bytes()), key })
    }

    /// 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The checked key, for signature checks.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as records hold it.
    pub fn key(&self) -> Key {
        Key(self.key.to_bytes())
    }
}

impl From<&SignPub> for Key {
    fn from(k: &SignPub) -> Key {
        k.key()
    }
}

impl From<SignPub> for Key {
    fn from(k: SignPub) -> Key {
        k.key()
    }
}

impl PartialEq<Key> for SignPub {
    fn eq(&self, k: &Key) -> bool {
        self.key() == *k
    }
}

impl PartialEq<SignPub> for Key {
    fn eq(&self, k: &SignPub) -> bool {
        *self == k.key()
    }
}
string_backed!(SignPub);

/// A user's X25519 public key: canonical and not of low order (docs/protocol.md
/// section 2); held as 64 lowercase hex characters.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KexPub {
    hex: String,
    bytes: [u8; 32],
}

impl KexPub {
    /// Parses a `kex_pub` field (hex in either case).
    ///
    /// # Errors
    /// `bad_request` naming `kex_pub` for bad hex, a wrong length, a
    /// non-canonical encoding or a low-order point.
    pub fn parse(s: &str) -> Result<KexPub, Error> {
        KexPub::parse_field("kex_pub", s)
    }

    /// Like [`KexPub::parse`], with the error text naming `field`.
    ///
    /// # Errors
    /// `bad_request` naming `field`.
    pub fn parse_field(field: &str, s: &str) -> Result<KexPub, Error> {
        let bytes = keys::parse_kex_pub(field, s)?;
        Ok(KexPub { hex: hex::encode(bytes), bytes })
    }

    /// 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key as records hold it.
    pub fn key(&self) -> Key {
        Key(self.bytes)
    }
}

impl From<&KexPub> for Key {
    fn from(k: &KexPub) -> Key {
        k.key()
    }
}
string_backed!(KexPub);

/// Checks `s` is exactly `bytes` bytes of hex and lowercases it.
fn hex_id(s: &str, bytes: usize) -> Result<String, Error> {
    if s.len() != bytes * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad(format!("id: expected {} hex characters", bytes * 2)));
    }
    Ok(s.to_ascii_lowercase())
}

/// A room id: 16 random bytes, 32 lowercase hex characters.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Parses a room `id` (hex in either case).
    ///
    /// # Errors
    /// `bad_request` (`id: expected 32 hex characters`).
    pub fn parse(s: &str) -> Result<RoomId, Error> {
        hex_id(s, 16).map(RoomId)
    }

    /// 32 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_backed!(RoomId);

/// An invite id: SHA-256 of the token, 64 lowercase hex characters.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InviteId(String);

impl InviteId {
    /// Parses an invite `id` (hex in either case).
    ///
    /// # Errors
    /// `bad_request` (`id: expected 64 hex characters`).
    pub fn parse(s: &str) -> Result<InviteId, Error> {
        hex_id(s, 32).map(InviteId)
    }

    /// The id of `token` (SHA-256 of its bytes).
    pub fn of(token: &keys::InviteToken) -> InviteId {
        InviteId(token.id())
    }

    /// 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_backed!(InviteId);

/// A point in time on the wire: RFC 3339, written in UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp(OffsetDateTime::now_utc())
    }

    /// Parses RFC 3339 (any offset; kept as UTC).
    ///
    /// # Errors
    /// `bad_request` when `s` is not RFC 3339.
    pub fn parse(s: &str) -> Result<Timestamp, Error> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Timestamp(t.to_offset(time::UtcOffset::UTC)))
            .map_err(|_| Error::bad(format!("expected an RFC 3339 time, got {s:?}")))
    }

    /// The time itself.
    pub fn get(self) -> OffsetDateTime {
        self.0
    }

    /// This time plus `d`.
    pub fn plus(self, d: time::Duration) -> Timestamp {
        Timestamp(self.0 + d)
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }
}

/// Formats a time as RFC 3339 UTC (sub-second digits as the time has them):
/// the text of every time in records and on the wire.
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Timestamp {
        Timestamp(t.to_offset(time::UtcOffset::UTC))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = Error;
    fn try_from(s: String) -> Result<Timestamp, Error> {
        Timestamp::parse(&s)
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_time(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        sign_pub: SignPub,
        id: RoomId,
    }

    /// Decodes as the wire does, without depending on it.
    fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(b).map_err(|e| Error::bad(e.to_string()))
    }

    #[test]
    fn keys_and_actors_read_and_write_as_text() {
        let k: Key = serde_json::from_str(&format!("\"{}\"", KEY.to_uppercase())).unwrap();
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{KEY}\""));
        assert_eq!(k, KEY);
        assert!(k != KEY.to_uppercase(), "text compares as lowercase hex");
        assert_eq!(k.to_string(), KEY);
        assert_eq!(SignPub::parse(KEY).unwrap().key(), k);
        assert!(Key::parse("abcd").is_err() && Key::parse(&"zz".repeat(32)).is_err());
        for (text, actor) in
            [("bootstrap", Actor::Bootstrap), ("invite", Actor::Invite), (KEY, Actor::Key(k))]
        {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), actor);
            assert_eq!(serde_json::to_string(&actor).unwrap(), json);
        }
        assert!(serde_json::from_str::<Actor>("\"test\"").is_err());
        // Ordered like the hex text (sorted lists stay sorted).
        let (a, b) = (Key::from_bytes([0x0f; 32]), Key::from_bytes([0xa0; 32]));
        assert_eq!(a < b, a.to_hex() < b.to_hex());
    }

    #[test]
    fn decoding_checks_and_lowercases() {
        let body = format!(r#"{{"sign_pub":"{}","id":"{}"}}"#, KEY.to_uppercase(), "AB".repeat(16));
        let r: Req = decode(body.as_bytes()).unwrap();
        assert_eq!(r.sign_pub, KEY);
        assert_eq!(r.id.as_str(), "ab".repeat(16));
        assert_eq!(serde_json::to_string(&r.sign_pub).unwrap(), format!("\"{KEY}\""));
    }

    #[test]
    fn bad_values_are_bad_request_naming_the_field() {
        let small_order = format!("01{}", "00".repeat(31));
        for (body, needle) in [
            (format!(r#"{{"sign_pub":"abcd","id":"{}"}}"#, "a".repeat(32)), "sign_pub: expected 64 hex"),
            (format!(r#"{{"sign_pub":"{small_order}","id":"{}"}}"#, "a".repeat(32)), "sign_pub: weak"),
            (format!(r#"{{"sign_pub":"{KEY}","id":"{}"}}"#, "a".repeat(64)), "id: expected 32 hex"),
            (format!(r#"{{"sign_pub":"{KEY}","id":"{}"}}"#, "q".repeat(32)), "id: expected 32 hex"),
            (format!(r#"{{"sign_pub":null,"id":"{}"}}"#, "a".repeat(32)), "invalid type: null"),
        ] {
            let err = decode::<Req>(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "bad_request", "{body}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        assert_eq!(InviteId::parse("abcd").unwrap_err().to_string(), "id: expected 64 hex characters");
        assert!(KexPub::parse(&"00".repeat(32)).unwrap_err().to_string().starts_with("kex_pub: "));
    }

    #[test]
    fn timestamps_round_trip_in_utc() {
        let t = Timestamp::parse("2026-01-02T03:04:05+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-02T01:04:05Z");
        assert_eq!(serde_json::from_str::<Timestamp>("\"2026-01-02T01:04:05Z\"").unwrap(), t);
        assert_eq!(Timestamp::parse("not a time").unwrap_err().code(), "bad_request");
    }
}
