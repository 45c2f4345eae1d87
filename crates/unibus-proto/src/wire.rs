//! Wire types of the control plane (docs/protocol.md section 5): request bodies with
//! strict decoding (a JSON object, no unknown fields, `null` = absent) and
//! field validation, and reply bodies. Used by the service to parse and by
//! clients to build requests, so the two cannot drift.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::binding::KexSig;
use crate::devicelist::DeviceList;
use crate::error::Error;
use crate::ids::{InviteId, KexPub, Key, RoomId, SignPub};
use crate::records::{Device, Invite, InviteStatus, Role, Room, User, UserStatus, Via};

/// Smallest invite TTL in seconds.
pub const TTL_MIN_SECS: u64 = 60;
/// Largest invite TTL in seconds (30 days).
pub const TTL_MAX_SECS: u64 = 2_592_000;
/// Default invite TTL in seconds (7 days).
pub const TTL_DEFAULT_SECS: u64 = 604_800;
/// Longest user or room name, in Unicode scalar values.
pub const NAME_MAX_CHARS: usize = 64;
/// Longest invite note, in Unicode scalar values.
pub const NOTE_MAX_CHARS: usize = 256;

/// Most rooms one user may be a member of (docs/protocol.md section 5).
pub const MAX_ROOMS_PER_USER: usize = 256;
/// Most members one room may have (docs/protocol.md section 5).
pub const MAX_MEMBERS_PER_ROOM: usize = 512;
/// Most keys one user may block (docs/protocol.md section 5).
pub const MAX_BLOCKS_PER_USER: usize = 1000;

/// Decodes a request body strictly. An empty body counts as `{}`.
///
/// # Errors
/// `bad_request` for invalid JSON, a non-object, a wrong type, a missing
/// required field or an unknown field.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value = if payload.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(payload).map_err(|e| Error::bad(format!("invalid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(Error::bad("request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::bad(e.to_string()))
}

/// Checks a user or room name: 1..=64 scalar values, no control characters.
///
/// # Errors
/// `bad_request` naming the field.
pub fn validate_name(field: &str, name: &str) -> Result<(), Error> {
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX_CHARS {
        return Err(Error::bad(format!("{field}: must be 1..={NAME_MAX_CHARS} characters, got {n}")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::bad(format!("{field}: control characters are not allowed")));
    }
    Ok(())
}

/// `unibus.register` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Invite token or link.
    pub invite: String,
    /// X25519 public key (checked when decoded).
    pub kex_pub: KexPub,
    /// Binding of `kex_pub` to the new account (docs/protocol.md section 8);
    /// required.
    pub kex_sig: KexSig,
    /// Display name; default: first 8 hex characters of `sign_pub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version 1 of the account's signed device list: the first device
    /// alone, signed by it (DESIGN section 11); required.
    pub device_list: DeviceList,
}

/// `unibus.device.add` request: the new device's public bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAddRequest {
    /// The new device's Ed25519 key.
    #[serde(deserialize_with = "device_key")]
    pub device: SignPub,
    /// Its X25519 key.
    pub kex_pub: KexPub,
    /// Its binding to the caller's account.
    pub kex_sig: KexSig,
    /// Display name; default: first 8 hex characters of `device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The next version of the account's list: the current one plus this
    /// device, signed by the calling device, `by: "device"`; required.
    pub device_list: DeviceList,
}

/// `unibus.admin.device.add` request: recovery of an account that has no
/// active device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDeviceAddRequest {
    /// The account id.
    #[serde(deserialize_with = "account_key")]
    pub account: SignPub,
    /// The new device's Ed25519 key.
    #[serde(deserialize_with = "device_key")]
    pub device: SignPub,
    /// Its X25519 key.
    pub kex_pub: KexPub,
    /// Its binding to `account`.
    pub kex_sig: KexSig,
    /// Display name; default: first 8 hex characters of `device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The next version of the account's list (version 1 when it has
    /// none): plus this device, signed by the calling admin's device,
    /// `by: "admin"`; required.
    pub device_list: DeviceList,
}

/// `unibus.device.revoke` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRevokeRequest {
    /// The device to revoke.
    #[serde(deserialize_with = "device_key")]
    pub device: SignPub,
    /// The next version of the account's list: the current one minus this
    /// device, signed by the calling device (`by: "device"` on its own
    /// account, `by: "admin"` on another). Absent only for an admin
    /// revoking a device of an account that has no list yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_list: Option<DeviceList>,
}

/// `unibus.device.sign` request and reply: version 1 of the list of an
/// account made before lists, signed by its oldest active device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSignRequest {
    /// The list.
    pub device_list: DeviceList,
}

/// Reply of `unibus.device.sign`: the account's list as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceListOnly {
    /// The list.
    pub device_list: DeviceList,
}

/// `unibus.user.lookup` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The account's id (checked when decoded).
    pub sign_pub: SignPub,
    /// Also return every version of the account's device list after this
    /// one (`user.device_lists`, oldest first, at most
    /// [`LOOKUP_LISTS_MAX`] per reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// Most list versions one `unibus.user.lookup` reply carries; a client
/// that gets this many asks again from the last one.
pub const LOOKUP_LISTS_MAX: usize = 64;

/// Decodes a key field so that its error names `device`.
fn device_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SignPub, D::Error> {
    named_key(d, "device")
}

/// Decodes a key field so that its error names `account`.
fn account_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SignPub, D::Error> {
    named_key(d, "account")
}

fn named_key<'de, D: serde::Deserializer<'de>>(d: D, field: &str) -> Result<SignPub, D::Error> {
    let s = String::deserialize(d)?;
    SignPub::parse_field(field, &s).map_err(serde::de::Error::custom)
}

/// `unibus.whoami` request (no fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `unibus.admin.invite.create` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteCreateRequest {
    /// Lifetime in seconds, 60..=2592000 (default 604800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Role of the redeemer (default `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Free text, at most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl InviteCreateRequest {
    /// The TTL after range checks.
    ///
    /// # Errors
    /// `bad_request` when out of 60..=2592000.
    pub fn ttl(&self) -> Result<u64, Error> {
        let ttl = self.ttl_secs.unwrap_or(TTL_DEFAULT_SECS);
        if !(TTL_MIN_SECS..=TTL_MAX_SECS).contains(&ttl) {
            return Err(Error::bad(format!("ttl_secs: must be {TTL_MIN_SECS}..={TTL_MAX_SECS}, got {ttl}")));
        }
        Ok(ttl)
    }

    /// The note after the length check.
    ///
    /// # Errors
    /// `bad_request` when longer than 256 characters.
    pub fn note(&self) -> Result<String, Error> {
        let note = self.note.clone().unwrap_or_default();
        if note.chars().count() > NOTE_MAX_CHARS {
            return Err(Error::bad(format!("note: at most {NOTE_MAX_CHARS} characters")));
        }
        Ok(note)
    }
}

/// Default page size of list requests.
pub const LIMIT_DEFAULT: u64 = 100;
/// Largest page size of list requests.
pub const LIMIT_MAX: u64 = 1000;

/// The page size after the range check.
///
/// # Errors
/// `bad_request` outside 1..=1000.
pub fn page_limit(limit: Option<u64>) -> Result<usize, Error> {
    let l = limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&l) {
        return Err(Error::bad(format!("limit: must be 1..={LIMIT_MAX}, got {l}")));
    }
    Ok(l as usize)
}

/// `unibus.admin.invite.list` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteListRequest {
    /// `pending|used|cancelled|expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InviteStatus>,
    /// Page size 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `unibus.admin.user.list` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserListRequest {
    /// `active|revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
    /// Page size 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `unibus.room.list` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomListRequest {
    /// Page size 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Requests naming an invite by id (`unibus.admin.invite.get|cancel`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteIdRequest {
    /// Invite id, 64 hex (checked when decoded).
    pub id: InviteId,
}

/// Requests naming a room by id (`unibus.room.get`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomIdRequest {
    /// Room id, 32 hex (checked when decoded).
    pub id: RoomId,
}

/// Requests naming a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignPubRequest {
    /// The user's Ed25519 key (checked when decoded).
    pub sign_pub: SignPub,
}

/// `unibus.room.create` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomCreateRequest {
    /// Room name, 1..=64 characters.
    pub name: String,
}

/// `unibus.room.member.add|remove` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// Room id (checked when decoded).
    pub id: RoomId,
    /// Member's Ed25519 key (checked when decoded).
    pub sign_pub: SignPub,
}

/// Reply carrying one invite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteReply {
    /// The invite (no token; `expired` computed).
    pub invite: Invite,
}

/// Reply of `unibus.admin.invite.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteListReply {
    /// One page.
    pub invites: Vec<Invite>,
    /// Cursor of the next page; absent at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Reply of `unibus.admin.user.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserListReply {
    /// One page.
    pub users: Vec<User>,
    /// Cursor of the next page; absent at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Reply of `unibus.admin.user.revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeReply {
    /// The record after the change.
    pub user: User,
    /// Live connections targeted for closing.
    pub kicked: u64,
    /// True when not every server could list its connections before the
    /// reply (`kicked` may then be short): unibusd keeps closing in the
    /// background. Absent (false) from servers before this field.
    #[serde(default)]
    pub kick_pending: bool,
}

/// Reply of `unibus.admin.user.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteReply {
    /// The deleted account.
    pub deleted: Key,
    /// Live connections targeted for closing.
    pub kicked: u64,
    /// True when not every server could list its connections before the
    /// reply (`kicked` may then be short): unibusd keeps closing in the
    /// background. Absent (false) from servers before this field.
    #[serde(default)]
    pub kick_pending: bool,
}

/// Reply carrying one room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomReply {
    /// The room.
    pub room: Room,
}

/// Reply of `unibus.room.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomListReply {
    /// One page.
    pub rooms: Vec<Room>,
    /// Cursor of the next page; absent at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Reply carrying one user record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserReply {
    /// The record.
    pub user: User,
}

/// Reply of `unibus.register` and `unibus.whoami`: the account and the
/// device (the first one, or the caller's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountReply {
    /// The account record.
    pub user: User,
    /// The device record.
    pub device: Device,
}

/// Reply carrying one device record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceReply {
    /// The record.
    pub device: Device,
}

/// Reply of `unibus.device.list`: the caller's account's devices, every
/// status, in `seq` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceListReply {
    /// The devices.
    pub devices: Vec<Device>,
    /// The account's current signed list; null until one is signed.
    #[serde(default)]
    pub device_list: Option<DeviceList>,
}

/// Reply of `unibus.device.revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRevokeReply {
    /// The record after the change.
    pub device: Device,
    /// Live connections targeted for closing.
    pub kicked: u64,
    /// True when not every server could list its connections before the
    /// reply; unibusd keeps closing in the background.
    #[serde(default)]
    pub kick_pending: bool,
}

/// What unibusd publishes on [`crate::subjects::device_notice`] when a
/// device of the account was added (status `active`) or revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceNotice {
    /// The device record after the change.
    pub device: Device,
}

/// What unibusd publishes on [`crate::subjects::revoked_notice`] after a
/// device of `account` was revoked (`device` set) or the account itself
/// was revoked or deleted (`device` null). A hint of which account's
/// device set to look up again, nothing to trust beyond that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedNotice {
    /// The account.
    pub account: Key,
    /// The revoked device; null when the whole account went.
    pub device: Option<Key>,
}

/// An active device as `unibus.user.lookup` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicDevice {
    /// Ed25519 key.
    pub device: Key,
    /// X25519 key.
    pub kex_pub: Key,
    /// Binding; `None` for a device that predates bindings.
    pub kex_sig: Option<String>,
    /// Order within the account.
    pub seq: u32,
    /// How it joined (`recovery` is flagged to contacts).
    pub via: Via,
}

/// The public part of a user, as `unibus.user.lookup` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicUser {
    /// Account id (Ed25519 public key of its first device).
    pub sign_pub: Key,
    /// X25519 key of the oldest active device; `None` when none is active.
    pub kex_pub: Option<Key>,
    /// Its binding; `None` when none is active or it predates bindings.
    #[serde(default)]
    pub kex_sig: Option<String>,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: UserStatus,
    /// Active devices, in `seq` order (absent from servers before
    /// devices).
    #[serde(default)]
    pub devices: Vec<PublicDevice>,
    /// The current signed device list; null until one is signed.
    #[serde(default)]
    pub device_list: Option<DeviceList>,
    /// With `since`: the versions after it, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_lists: Option<Vec<DeviceList>>,
}

impl From<User> for PublicUser {
    fn from(u: User) -> Self {
        let devices = u
            .active_devices()
            .map(|d| PublicDevice {
                device: d.device,
                kex_pub: d.kex_pub,
                kex_sig: d.kex_sig.clone(),
                seq: d.seq,
                via: d.via,
            })
            .collect();
        PublicUser {
            sign_pub: u.sign_pub,
            kex_pub: u.kex_pub,
            kex_sig: u.kex_sig,
            name: u.name,
            status: u.status,
            devices,
            device_list: u.device_list,
            device_lists: None,
        }
    }
}

/// Reply of `unibus.user.lookup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupReply {
    /// The public record.
    pub user: PublicUser,
}

/// Reply of `unibus.admin.invite.create`: the token is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteCreateReply {
    /// The stored record (no token).
    pub invite: Invite,
    /// The secret, 64 lowercase hex.
    pub token: String,
    /// `unibus://invite/<token>`.
    pub link: String,
}

/// Reply of `unibus.block.add|remove|list`: the caller's whole block list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockListReply {
    /// Blocked accounts, sorted.
    pub blocked: Vec<Key>,
}

/// Error body: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The error.
    pub error: ErrorBody,
}

/// Inside [`ErrorReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Wire code, e.g. `invite_used`.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

impl From<&Error> for ErrorReply {
    fn from(e: &Error) -> Self {
        ErrorReply { error: ErrorBody { code: e.code().to_string(), message: e.public_message() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        assert!(decode::<Empty>(b"").is_ok());
        assert!(decode::<Empty>(b"{}").is_ok());
        assert!(decode::<Empty>(b"[]").is_err());
        assert!(decode::<Empty>(b"{\"x\":1}").is_err());
        let r: InviteCreateRequest = decode(b"{\"ttl_secs\":null,\"role\":\"admin\"}").unwrap();
        assert_eq!(r.ttl().unwrap(), TTL_DEFAULT_SECS);
        assert!(decode::<InviteCreateRequest>(b"{\"ttl_secs\":60.5}").is_err());
        assert!(decode::<InviteCreateRequest>(b"{\"role\":\"root\"}").is_err());
        assert!(decode::<RegisterRequest>(b"[\"a\",\"b\"]").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("name", "alice").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "a\u{7}b").is_err());
        assert!(validate_name("name", &"é".repeat(64)).is_ok());
        assert!(validate_name("name", &"é".repeat(65)).is_err());
    }
}
