//! The records kept in JetStream KV (docs/protocol.md section 3), the
//! layer above [`crate::ids`]: keys are [`Key`], times [`Timestamp`], who
//! did something an [`Actor`]. Every record carries `"v": 1`; unknown
//! fields are ignored when reading so that later versions can add fields.
//! The JSON is the same, byte for byte, as when these fields were text
//! (`tests/records.rs` reads records captured from that code).

use serde::{Deserialize, Serialize};

use crate::devicelist::{DeviceList, ListedDevice};
use crate::ids::{Actor, InviteId, Key, RoomId, Timestamp};

/// Schema version written into every record.
pub const SCHEMA_VERSION: u32 = 1;

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
    pub sign_pub: Key,
    /// X25519 key of the oldest active device; `None` when none is active.
    pub kex_pub: Option<Key>,
    /// Binding of that key; `None` when none is active or the device
    /// predates bindings.
    pub kex_sig: Option<String>,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// The inviting admin's account, or `bootstrap`.
    pub invited_by: Actor,
    /// Id of the redeemed invite.
    pub invite_id: InviteId,
    /// Set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// The admin who revoked it; set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<Actor>,
    /// Last change.
    pub updated_at: Timestamp,
    /// The account's devices, in `seq` order: every active one and the
    /// most recent revoked ones (at most [`REVOKED_DEVICES_KEPT`]).
    pub devices: Vec<Device>,
    /// Highest `seq` given out so far.
    pub device_seq: u32,
    /// The current signed device list (DESIGN section 11); `None` for an
    /// account made before lists until a device signs one
    /// (`unibus.device.sign`). Changes with the device set, in the same
    /// compare-and-swap. Absent from a record (and from the `user` of a
    /// reply) while there is none, so that older records read and write
    /// back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_list: Option<DeviceList>,
}

/// The stored shape, which may predate devices.
#[derive(Deserialize)]
struct StoredUser {
    v: u32,
    sign_pub: Key,
    #[serde(default)]
    kex_pub: Option<Key>,
    #[serde(default)]
    kex_sig: Option<String>,
    name: String,
    role: Role,
    status: UserStatus,
    created_at: Timestamp,
    invited_by: Actor,
    invite_id: InviteId,
    #[serde(default)]
    revoked_at: Option<Timestamp>,
    #[serde(default)]
    revoked_by: Option<Actor>,
    updated_at: Timestamp,
    #[serde(default)]
    devices: Option<Vec<Device>>,
    #[serde(default)]
    device_seq: Option<u32>,
    #[serde(default)]
    device_list: Option<DeviceList>,
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
                let first = s.kex_pub.map(|kex_pub| Device {
                    v: SCHEMA_VERSION,
                    device: s.sign_pub,
                    account: s.sign_pub,
                    seq: 1,
                    kex_pub,
                    kex_sig: None,
                    name: default_name(&s.sign_pub),
                    status: DeviceStatus::Active,
                    added_at: s.created_at,
                    added_by: Actor::Invite,
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
            device_list: s.device_list,
        };
        user.refresh_account_keys();
        user
    }
}

impl User {
    /// A new active account whose first device is `first` (created now).
    pub fn new_active(first: Device, name: &str, role: Role, invited_by: Actor, invite_id: InviteId) -> User {
        let t = first.added_at;
        let mut user = User {
            v: SCHEMA_VERSION,
            sign_pub: first.account,
            kex_pub: None,
            kex_sig: None,
            name: name.to_string(),
            role,
            status: UserStatus::Active,
            created_at: t,
            invited_by,
            invite_id,
            revoked_at: None,
            revoked_by: None,
            updated_at: t,
            device_seq: first.seq,
            devices: vec![first],
            device_list: None,
        };
        user.refresh_account_keys();
        user
    }

    /// The same account with `list` as its signed device list.
    #[must_use]
    pub fn with_list(self, list: DeviceList) -> User {
        User { device_list: Some(list), ..self }
    }

    /// The account's active devices as a signed list names them, in `seq`
    /// order (what the next version must start from).
    pub fn listed_devices(&self) -> Vec<ListedDevice> {
        self.active_devices().map(Device::listed).collect()
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
    pub fn device(&self, key: Key) -> Option<&Device> {
        self.devices.iter().find(|d| d.device == key)
    }

    /// True when `key` is an active device of this account.
    pub fn has_active_device(&self, key: Key) -> bool {
        self.device(key).is_some_and(|d| d.status == DeviceStatus::Active)
    }

    /// Sets `kex_pub` and `kex_sig` to those of the oldest active device
    /// (`None` when none is active), for clients that know one key per
    /// account.
    pub fn refresh_account_keys(&mut self) {
        let oldest = self.active_devices().min_by_key(|d| d.seq);
        (self.kex_pub, self.kex_sig) = match oldest {
            Some(d) => (Some(d.kex_pub), d.kex_sig.clone()),
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
/// A user's default display name: the first 8 hex characters of its key.
pub fn default_name(key: &Key) -> String {
    key.to_hex()[..8].to_string()
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
    /// This device as a signed list names it.
    pub fn listed(&self) -> ListedDevice {
        ListedDevice {
            device: self.device.to_hex(),
            kex_pub: self.kex_pub.to_hex(),
            kex_sig: self.kex_sig.clone(),
        }
    }

    /// The first device of a new account `key` (its own account), added
    /// now by the invite.
    pub fn first(key: Key, kex_pub: Key, kex_sig: Option<String>) -> Device {
        Device { seq: 1, ..Device::joining(key, key, kex_pub, kex_sig, Via::Invite, Actor::Invite) }
    }

    /// A new active device `key` of `account`, added now by `added_by`
    /// (`seq` 0: the account's CAS gives it its number).
    pub fn joining(
        account: Key,
        key: Key,
        kex_pub: Key,
        kex_sig: Option<String>,
        via: Via,
        added_by: Actor,
    ) -> Device {
        Device {
            v: SCHEMA_VERSION,
            device: key,
            account,
            seq: 0,
            kex_pub,
            kex_sig,
            name: default_name(&key),
            status: DeviceStatus::Active,
            added_at: Timestamp::now(),
            added_by,
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
    /// The device's Ed25519 key.
    pub device: Key,
    /// The account id.
    pub account: Key,
    /// 1 for the first device, then one more than the account's highest.
    pub seq: u32,
    /// The device's X25519 key.
    pub kex_pub: Key,
    /// Its binding (`None` for a device that predates bindings).
    pub kex_sig: Option<String>,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: DeviceStatus,
    /// When it was added.
    pub added_at: Timestamp,
    /// `invite` for the first device, else the device key that added it
    /// (an admin's device key for a recovery).
    pub added_by: Actor,
    /// How it joined.
    pub via: Via,
    /// Set once revoked.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Device key (or admin device key) that revoked it.
    #[serde(default)]
    pub revoked_by: Option<Actor>,
}

/// A record in `UNIBUS_invites`, keyed by `id` = SHA-256(token) hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Schema version.
    pub v: u32,
    /// SHA-256 of the token's raw bytes.
    pub id: InviteId,
    /// Role the redeemer gets.
    pub role: Role,
    /// Free text from the admin.
    pub note: String,
    /// The admin's account, or `bootstrap`.
    pub created_by: Actor,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Stored status (`pending|used|cancelled`); replies show `expired` too.
    pub status: InviteStatus,
    /// Redeemer's `sign_pub` once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<Key>,
    /// When it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<Timestamp>,
    /// True once the user record exists.
    #[serde(default)]
    pub completed: bool,
    /// Admin who cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<Actor>,
    /// When it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<Timestamp>,
}

impl Invite {
    /// A new pending invite record `id`, created now and expiring after
    /// `ttl_secs`.
    pub fn new_pending(id: InviteId, role: Role, note: String, created_by: Actor, ttl_secs: u64) -> Invite {
        let created = Timestamp::now();
        Invite {
            v: SCHEMA_VERSION,
            id,
            role,
            note,
            created_by,
            created_at: created,
            expires_at: created.plus(time::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX))),
            status: InviteStatus::Pending,
            used_by: None,
            used_at: None,
            completed: false,
            cancelled_by: None,
            cancelled_at: None,
        }
    }

    /// Pending but past its expiry.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.status == InviteStatus::Pending && now >= self.expires_at
    }

    /// The invite as shown on the wire: `expired` computed.
    pub fn view(mut self, now: Timestamp) -> Invite {
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
    /// 16 random bytes.
    pub id: RoomId,
    /// Display name.
    pub name: String,
    /// The owner's account; `None` once the owner was deleted (then only
    /// admins manage the room).
    pub owner: Option<Key>,
    /// Member accounts, sorted.
    pub members: Vec<Key>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Room {
    /// Is `account` a member?
    pub fn has_member(&self, account: Key) -> bool {
        self.members.binary_search(&account).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_expires_at_its_expiry() {
        let id = InviteId::parse(&"ab".repeat(32)).unwrap();
        let inv = Invite::new_pending(id, Role::Member, String::new(), Actor::Bootstrap, 600);
        assert!(!inv.is_expired(Timestamp::now()));
        assert!(inv.is_expired(inv.expires_at));
        let later = inv.expires_at.plus(time::Duration::SECOND);
        assert_eq!(inv.view(later).status, InviteStatus::Expired);
        // An unparseable expiry no longer reads at all (it was text).
        let mut json = serde_json::to_value(Invite::new_pending(
            InviteId::parse(&"cd".repeat(32)).unwrap(),
            Role::Member,
            String::new(),
            Actor::Bootstrap,
            600,
        ))
        .unwrap();
        json["expires_at"] = "not a time".into();
        assert!(serde_json::from_value::<Invite>(json).is_err());
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
