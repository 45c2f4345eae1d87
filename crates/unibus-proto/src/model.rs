//! The records kept in JetStream KV (docs/protocol.md section 3) and the time helpers
//! they use. Every record carries `"v": 1`; unknown fields are ignored when
//! reading so that later versions can add fields.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ids::Timestamp;

/// Schema version written into every record.
pub const SCHEMA_VERSION: u32 = 1;
/// Audit value for actions taken by the first-admin bootstrap.
pub const BOOTSTRAP: &str = "bootstrap";

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May use the bus and the member control subjects.
    Member,
    /// Member plus `unibus.admin.>`.
    Admin,
}

/// Whether a user may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Allowed.
    Active,
    /// Denied on control and data plane until restored.
    Revoked,
}

impl UserStatus {
    /// The wire name (`active`, `revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Revoked => "revoked",
        }
    }
}

/// Stored invite state. `expired` is never stored, only computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InviteStatus {
    /// Not yet redeemed.
    Pending,
    /// Redeemed (see `used_by`, `completed`).
    Used,
    /// Cancelled by an admin (or superseded bootstrap invite).
    Cancelled,
    /// Computed: pending and past `expires_at`. Never stored.
    Expired,
}

impl InviteStatus {
    /// The wire name (`pending`, `used`, `cancelled`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            InviteStatus::Pending => "pending",
            InviteStatus::Used => "used",
            InviteStatus::Cancelled => "cancelled",
            InviteStatus::Expired => "expired",
        }
    }
}

/// A record in `UNIBUS_users`, keyed by `sign_pub`: an account
/// (docs/protocol.md sections 3 and 8). Its id is the `sign_pub` of its
/// first device, for good. It holds the device set and the `seq` counter,
/// and changes only by compare-and-swap.
///
/// Records written before devices existed have no `devices`: they read as
/// one active device (the account key, `seq` 1, `via: "invite"`, no
/// binding), so old accounts keep working and are migrated by their next
/// write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredUser")]
pub struct User {
    /// Schema version.
    pub v: u32,
    /// The account id: Ed25519 public key of its first device, lowercase hex.
    pub sign_pub: String,
    /// X25519 key of the oldest active device; `None` when none is active.
    pub kex_pub: Option<String>,
    /// Binding of that key; `None` when none is active or the device
    /// predates bindings.
    pub kex_sig: Option<String>,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `sign_pub` of the inviting admin, or `bootstrap`.
    pub invited_by: String,
    /// Id of the redeemed invite.
    pub invite_id: String,
    /// Set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
    /// The account's devices, in `seq` order: every active one and the
    /// most recent revoked ones (at most [`REVOKED_DEVICES_KEPT`]).
    pub devices: Vec<Device>,
    /// Highest `seq` given out so far.
    pub device_seq: u32,
}

/// The stored shape, which may predate devices.
#[derive(Deserialize)]
struct StoredUser {
    v: u32,
    sign_pub: String,
    #[serde(default)]
    kex_pub: Option<String>,
    #[serde(default)]
    kex_sig: Option<String>,
    name: String,
    role: Role,
    status: UserStatus,
    created_at: String,
    invited_by: String,
    invite_id: String,
    #[serde(default)]
    revoked_at: Option<String>,
    #[serde(default)]
    revoked_by: Option<String>,
    updated_at: String,
    #[serde(default)]
    devices: Option<Vec<Device>>,
    #[serde(default)]
    device_seq: Option<u32>,
}

impl From<StoredUser> for User {
    fn from(s: StoredUser) -> User {
        let (devices, device_seq) = match s.devices {
            Some(devices) => {
                let seq = s.device_seq.unwrap_or_else(|| devices.iter().map(|d| d.seq).max().unwrap_or(0));
                (devices, seq)
            }
            // Before devices: the account key is the one device.
            None => {
                let first = s.kex_pub.as_ref().map(|kex_pub| Device {
                    v: SCHEMA_VERSION,
                    device: s.sign_pub.clone(),
                    account: s.sign_pub.clone(),
                    seq: 1,
                    kex_pub: kex_pub.clone(),
                    kex_sig: None,
                    name: default_name(&s.sign_pub),
                    status: DeviceStatus::Active,
                    added_at: s.created_at.clone(),
                    added_by: VIA_INVITE.to_string(),
                    via: Via::Invite,
                    revoked_at: None,
                    revoked_by: None,
                });
                (first.into_iter().collect(), 1)
            }
        };
        let mut user = User {
            v: s.v,
            sign_pub: s.sign_pub,
            kex_pub: s.kex_pub,
            kex_sig: s.kex_sig,
            name: s.name,
            role: s.role,
            status: s.status,
            created_at: s.created_at,
            invited_by: s.invited_by,
            invite_id: s.invite_id,
            revoked_at: s.revoked_at,
            revoked_by: s.revoked_by,
            updated_at: s.updated_at,
            devices,
            device_seq,
        };
        user.refresh_account_keys();
        user
    }
}

impl User {
    /// A new active account whose first device is `first` (created now).
    pub fn new_active(first: Device, name: &str, role: Role, invited_by: &str, invite_id: &str) -> User {
        let t = first.added_at.clone();
        let mut user = User {
            v: SCHEMA_VERSION,
            sign_pub: first.account.clone(),
            kex_pub: None,
            kex_sig: None,
            name: name.to_string(),
            role,
            status: UserStatus::Active,
            created_at: t.clone(),
            invited_by: invited_by.to_string(),
            invite_id: invite_id.to_string(),
            revoked_at: None,
            revoked_by: None,
            updated_at: t,
            device_seq: first.seq,
            devices: vec![first],
        };
        user.refresh_account_keys();
        user
    }

    /// Active and admin.
    pub fn is_active_admin(&self) -> bool {
        self.status == UserStatus::Active && self.role == Role::Admin
    }

    /// The account's active devices, oldest first.
    pub fn active_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|d| d.status == DeviceStatus::Active)
    }

    /// The device `key` of this account, any status.
    pub fn device(&self, key: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.device == key)
    }

    /// True when `key` is an active device of this account.
    pub fn has_active_device(&self, key: &str) -> bool {
        self.device(key).is_some_and(|d| d.status == DeviceStatus::Active)
    }

    /// Sets `kex_pub` and `kex_sig` to those of the oldest active device
    /// (`None` when none is active), for clients that know one key per
    /// account.
    pub fn refresh_account_keys(&mut self) {
        let oldest = self.active_devices().min_by_key(|d| d.seq);
        (self.kex_pub, self.kex_sig) = match oldest {
            Some(d) => (Some(d.kex_pub.clone()), d.kex_sig.clone()),
            None => (None, None),
        };
    }

    /// Drops the oldest revoked devices beyond [`REVOKED_DEVICES_KEPT`]
    /// (their `UNIBUS_devices` records stay, so the keys stay used).
    pub fn trim_revoked(&mut self) {
        let revoked = self.devices.iter().filter(|d| d.status == DeviceStatus::Revoked).count();
        let mut drop = revoked.saturating_sub(REVOKED_DEVICES_KEPT);
        self.devices.retain(|d| {
            if drop > 0 && d.status == DeviceStatus::Revoked {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Most active devices per account (docs/protocol.md section 8).
pub const MAX_DEVICES_PER_ACCOUNT: usize = 8;
/// Most devices an account may ever add (its highest `seq`): revoked
/// devices keep their records for good, so add-and-revoke loops must not
/// grow the store without bound.
pub const MAX_DEVICES_EVER: u32 = 1024;
/// Revoked devices an account record keeps listing; older ones are
/// still in `UNIBUS_devices`.
pub const REVOKED_DEVICES_KEPT: usize = 32;
/// `added_by` of an account's first device.
pub const VIA_INVITE: &str = "invite";

/// A user's default display name: the first 8 hex characters of its key.
pub fn default_name(key: &str) -> String {
    key.chars().take(8).collect()
}

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// May connect (while its account is active too).
    Active,
    /// Revoked for good.
    Revoked,
}

impl DeviceStatus {
    /// The wire name (`active`, `revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked => "revoked",
        }
    }
}

/// How a device joined its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The key that redeemed the invite: the first device.
    Invite,
    /// Added by another device of the account (`unibus.device.add`).
    Device,
    /// Added by an admin while the account had no active device
    /// (`unibus.admin.device.add`); clients flag it to contacts.
    Recovery,
}

impl Via {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Invite => "invite",
            Via::Device => "device",
            Via::Recovery => "recovery",
        }
    }
}

impl Device {
    /// The first device of a new account `key` (its own account), added
    /// now by the invite.
    pub fn first(key: &str, kex_pub: &str, kex_sig: Option<String>) -> Device {
        Device { seq: 1, ..Device::joining(key, key, kex_pub, kex_sig, Via::Invite, VIA_INVITE) }
    }

    /// A new active device `key` of `account`, added now by `added_by`
    /// (`seq` 0: the account's CAS gives it its number).
    pub fn joining(
        account: &str,
        key: &str,
        kex_pub: &str,
        kex_sig: Option<String>,
        via: Via,
        added_by: &str,
    ) -> Device {
        Device {
            v: SCHEMA_VERSION,
            device: key.to_string(),
            account: account.to_string(),
            seq: 0,
            kex_pub: kex_pub.to_string(),
            kex_sig,
            name: default_name(key),
            status: DeviceStatus::Active,
            added_at: fmt_time(now()),
            added_by: added_by.to_string(),
            via,
            revoked_at: None,
            revoked_by: None,
        }
    }
}

/// A device record: in `UNIBUS_devices` (key = `device`) and in its
/// account's `devices` (docs/protocol.md section 8). The account record is
/// the authority on status; the `UNIBUS_devices` copy maps the key to its
/// account and keeps the key used for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Schema version.
    pub v: u32,
    /// The device's Ed25519 key, lowercase hex.
    pub device: String,
    /// The account id.
    pub account: String,
    /// 1 for the first device, then one more than the account's highest.
    pub seq: u32,
    /// The device's X25519 key.
    pub kex_pub: String,
    /// Its binding (`None` for a device that predates bindings).
    pub kex_sig: Option<String>,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: DeviceStatus,
    /// RFC 3339 UTC.
    pub added_at: String,
    /// `invite` for the first device, else the device key that added it
    /// (an admin's device key for a recovery).
    pub added_by: String,
    /// How it joined.
    pub via: Via,
    /// Set once revoked.
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// Device key (or admin device key) that revoked it.
    #[serde(default)]
    pub revoked_by: Option<String>,
}

/// A record in `UNIBUS_invites`, keyed by `id` = SHA-256(token) hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Schema version.
    pub v: u32,
    /// SHA-256 of the token's raw bytes, lowercase hex.
    pub id: String,
    /// Role the redeemer gets.
    pub role: Role,
    /// Free text from the admin.
    pub note: String,
    /// `sign_pub` of the admin, or `bootstrap`.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; unparseable counts as expired.
    pub expires_at: String,
    /// Stored status (`pending|used|cancelled`); replies show `expired` too.
    pub status: InviteStatus,
    /// Redeemer's `sign_pub` once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
    /// When it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    /// True once the user record exists.
    #[serde(default)]
    pub completed: bool,
    /// Admin who cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// When it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
}

impl Invite {
    /// A new pending invite record `id`, created now and expiring after
    /// `ttl_secs`.
    pub fn new_pending(id: String, role: Role, note: String, created_by: &str, ttl_secs: u64) -> Invite {
        let created = now();
        Invite {
            v: SCHEMA_VERSION,
            id,
            role,
            note,
            created_by: created_by.to_string(),
            created_at: fmt_time(created),
            expires_at: fmt_time(created + time::Duration::seconds(ttl_secs as i64)),
            status: InviteStatus::Pending,
            used_by: None,
            used_at: None,
            completed: false,
            cancelled_by: None,
            cancelled_at: None,
        }
    }

    /// Pending but past its expiry (or with an unparseable expiry: the
    /// stored field stays a `String` so that such a record still reads, and
    /// counts as expired).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.status == InviteStatus::Pending && parse_time(&self.expires_at).is_none_or(|exp| now >= exp)
    }

    /// The invite as shown on the wire: `expired` computed.
    pub fn view(mut self, now: OffsetDateTime) -> Invite {
        if self.is_expired(now) {
            self.status = InviteStatus::Expired;
        }
        self
    }
}

/// A record in `UNIBUS_rooms`, keyed by `id` (32 lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Schema version.
    pub v: u32,
    /// 16 random bytes, lowercase hex.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `sign_pub` of the owner; `None` once the owner was deleted (then only
    /// admins manage the room).
    pub owner: Option<String>,
    /// Member `sign_pub`s, sorted.
    pub members: Vec<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

impl Room {
    /// Is `sign_pub` a member?
    pub fn has_member(&self, sign_pub: &str) -> bool {
        self.members.binary_search_by(|m| m.as_str().cmp(sign_pub)).is_ok()
    }
}

/// Current time, UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Formats a time as RFC 3339 UTC (whole seconds are not forced).
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Parses an RFC 3339 time; `None` when it does not parse (see
/// [`Timestamp::parse`] for the checked wire type).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    Timestamp::parse(s).ok().map(Timestamp::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparseable_expiry_counts_as_expired() {
        let inv = Invite {
            expires_at: "not a time".into(),
            ..Invite::new_pending("x".into(), Role::Member, String::new(), BOOTSTRAP, 600)
        };
        assert!(inv.is_expired(now()));
        assert_eq!(inv.view(now()).status, InviteStatus::Expired);
    }

    #[test]
    fn status_names_are_the_serde_names() {
        for s in [UserStatus::Active, UserStatus::Revoked] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        use InviteStatus::*;
        for s in [Pending, Used, Cancelled, Expired] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
