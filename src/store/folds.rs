//! What each index keeps of its bucket: compact entries only (no full
//! records), so 100,000 users cost a few MB.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use time::OffsetDateTime;

use super::index::Fold;
use unibus_proto::model::{DeviceStatus, InviteStatus, Role, UserStatus, parse_time};

/// An account's device keys (raw bytes) and their statuses.
pub type DeviceKeys = Box<[([u8; 32], DeviceStatus)]>;

/// A user (account) as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// Role.
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// KV revision of the record.
    pub revision: u64,
    /// The account's devices; `None` when its own key is its one active
    /// device (a record written before devices, or a one-device account).
    pub devices: Option<DeviceKeys>,
}

impl UserEntry {
    /// The status of device `key` in this account (`account` is the
    /// account's own key); `None` when the account does not list it.
    pub fn device_status(&self, account: &str, key: &str) -> Option<DeviceStatus> {
        match &self.devices {
            None => (account == key).then_some(DeviceStatus::Active),
            Some(devices) => {
                let mut raw = [0u8; 32];
                hex::decode_to_slice(key, &mut raw).ok()?;
                devices.iter().find(|(k, _)| *k == raw).map(|(_, s)| *s)
            }
        }
    }
}

/// All users by `sign_pub`.
#[derive(Default)]
pub struct Users {
    /// Sorted by key, for pagination.
    pub entries: BTreeMap<String, UserEntry>,
    /// Keys whose current value does not decode: the callout denies them.
    pub unreadable: BTreeSet<String>,
}

#[derive(Deserialize)]
struct SlimUser {
    role: Role,
    status: UserStatus,
    #[serde(default)]
    devices: Option<Vec<SlimDevice>>,
}

#[derive(Deserialize)]
struct SlimDevice {
    device: String,
    status: DeviceStatus,
}

impl SlimUser {
    /// Device keys that are not 64 hex characters are left out (such a
    /// device cannot connect: its key would not match). An account whose
    /// one device is its own key, active, is kept as `None`, like a record
    /// from before devices: the same meaning, no allocation (most
    /// accounts).
    fn devices(&self, account: &str) -> Option<DeviceKeys> {
        let devices = self.devices.as_ref()?;
        if let [only] = devices.as_slice() {
            if only.device == account && only.status == DeviceStatus::Active {
                return None;
            }
        }
        let keys = devices.iter().filter_map(|d| {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&d.device, &mut raw).ok().map(|()| (raw, d.status))
        });
        Some(keys.collect())
    }
}

impl Fold for Users {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: u64) {
        self.unreadable.remove(key);
        match value.map(serde_json::from_slice::<SlimUser>) {
            Some(Ok(u)) => {
                let entry = UserEntry { role: u.role, status: u.status, revision, devices: u.devices(key) };
                self.entries.insert(key.to_string(), entry);
            }
            Some(Err(_)) => {
                self.entries.remove(key);
                self.unreadable.insert(key.to_string());
            }
            None => {
                self.entries.remove(key);
            }
        }
    }
}

/// Device keys and the account each belongs to (`UNIBUS_devices`). The
/// mapping of a key never changes while its record exists; status is the
/// account record's to say. Held as raw 32-byte keys (100,000 devices cost
/// a few MB).
#[derive(Default)]
pub struct Devices {
    /// Device key -> account id.
    accounts: HashMap<[u8; 32], [u8; 32]>,
    /// Keys whose current value does not decode: the callout denies them.
    pub unreadable: BTreeSet<String>,
}

impl Devices {
    /// The account of device `key` (hex), if the index holds it.
    pub fn account_of(&self, key: &str) -> Option<String> {
        self.accounts.get(&raw_key(key)?).map(hex::encode)
    }

    /// Every device key (hex) the index maps to `account`, whether or not
    /// the account still lists it (revoked devices it no longer lists
    /// included). A scan: for an account's delete, not for the callout.
    pub fn keys_of(&self, account: &str) -> Vec<String> {
        let Some(account) = raw_key(account) else { return Vec::new() };
        self.accounts.iter().filter(|(_, a)| **a == account).map(|(k, _)| hex::encode(k)).collect()
    }
}

/// 64 hex characters as 32 bytes.
fn raw_key(key: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(key, &mut raw).ok().map(|()| raw)
}

#[derive(Deserialize)]
struct SlimDeviceRecord {
    account: String,
}

impl Fold for Devices {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        self.unreadable.remove(key);
        let Some(raw) = raw_key(key) else {
            // Not a key unibusd writes: such an entry can admit nobody.
            if value.is_some() {
                self.unreadable.insert(key.to_string());
            }
            return;
        };
        self.accounts.remove(&raw);
        let Some(value) = value else { return };
        match serde_json::from_slice::<SlimDeviceRecord>(value).ok().and_then(|d| raw_key(&d.account)) {
            Some(account) => {
                self.accounts.insert(raw, account);
            }
            None => {
                self.unreadable.insert(key.to_string());
            }
        }
    }
}

/// An invite as the index knows it.
#[derive(Debug, Clone)]
pub struct InviteEntry {
    /// Stored status.
    pub status: InviteStatus,
    /// Parsed expiry; `None` (unparseable) counts as expired.
    pub expires_at: Option<OffsetDateTime>,
}

impl InviteEntry {
    /// Status as shown on the wire (`expired` computed).
    pub fn effective(&self, now: OffsetDateTime) -> InviteStatus {
        match self.status {
            InviteStatus::Pending if self.expires_at.is_none_or(|e| now >= e) => InviteStatus::Expired,
            s => s,
        }
    }
}

/// All invites by id.
#[derive(Default)]
pub struct Invites {
    /// Sorted by id.
    pub entries: BTreeMap<String, InviteEntry>,
}

#[derive(Deserialize)]
struct SlimInvite {
    status: InviteStatus,
    expires_at: String,
}

impl Fold for Invites {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        match value.and_then(|v| serde_json::from_slice::<SlimInvite>(v).ok()) {
            Some(i) => {
                let entry = InviteEntry { status: i.status, expires_at: parse_time(&i.expires_at) };
                self.entries.insert(key.to_string(), entry);
            }
            None => {
                self.entries.remove(key);
            }
        }
    }
}

/// Room membership, both ways.
#[derive(Default)]
pub struct Rooms {
    /// room id -> (owner, members).
    pub rooms: BTreeMap<String, (Option<String>, Vec<String>)>,
    /// member `sign_pub` -> room ids (sorted).
    pub by_member: HashMap<String, BTreeSet<String>>,
}

#[derive(Deserialize)]
struct SlimRoom {
    #[serde(default)]
    owner: Option<String>,
    members: Vec<String>,
}

impl Rooms {
    fn unlink(&mut self, room: &str) {
        if let Some((_, members)) = self.rooms.remove(room) {
            for m in members {
                if let Some(set) = self.by_member.get_mut(&m) {
                    set.remove(room);
                    if set.is_empty() {
                        self.by_member.remove(&m);
                    }
                }
            }
        }
    }

    /// Room ids `sign_pub` is a member of, or owns.
    pub fn rooms_of(&self, sign_pub: &str) -> Vec<String> {
        let mut out: BTreeSet<String> = self.by_member.get(sign_pub).cloned().unwrap_or_default();
        for (id, (owner, _)) in &self.rooms {
            if owner.as_deref() == Some(sign_pub) {
                out.insert(id.clone());
            }
        }
        out.into_iter().collect()
    }

    /// Room ids `sign_pub` is a member of (permissions come from this).
    pub fn member_of(&self, sign_pub: &str) -> Vec<String> {
        self.by_member.get(sign_pub).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

impl Fold for Rooms {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        self.unlink(key);
        if let Some(room) = value.and_then(|v| serde_json::from_slice::<SlimRoom>(v).ok()) {
            for m in &room.members {
                self.by_member.entry(m.clone()).or_default().insert(key.to_string());
            }
            self.rooms.insert(key.to_string(), (room.owner, room.members));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_map_keys_to_accounts_and_flag_what_does_not_decode() {
        let (dev, acct) = ("ab".repeat(32), "cd".repeat(32));
        let mut ix = Devices::default();
        ix.apply(&dev, Some(format!("{{\"account\":\"{acct}\"}}").as_bytes()), 1);
        assert_eq!(ix.account_of(&dev), Some(acct.clone()));
        assert_eq!(ix.account_of(&"AB".repeat(32)), Some(acct), "hex in either case");
        ix.apply(&dev, Some(b"{\"account\":\"nope\"}"), 2);
        assert_eq!(ix.account_of(&dev), None);
        assert!(ix.unreadable.contains(&dev));
        ix.apply(&dev, None, 3);
        assert!(!ix.unreadable.contains(&dev) && ix.account_of(&dev).is_none());
        ix.apply("not-a-key", Some(b"{}"), 4);
        assert!(ix.unreadable.contains("not-a-key"));
    }

    #[test]
    fn a_legacy_user_lists_its_own_key_only() {
        let mut ix = Users::default();
        let key = "ab".repeat(32);
        ix.apply(&key, Some(b"{\"role\":\"member\",\"status\":\"active\"}"), 1);
        let e = &ix.entries[&key];
        assert_eq!(e.device_status(&key, &key), Some(DeviceStatus::Active));
        assert_eq!(e.device_status(&key, &"cd".repeat(32)), None);
        let dev = "cd".repeat(32);
        let rec = format!(
            "{{\"role\":\"member\",\"status\":\"active\",\"devices\":[{{\"device\":\"{key}\",\"status\":\"revoked\"}},{{\"device\":\"{dev}\",\"status\":\"active\"}}]}}"
        );
        ix.apply(&key, Some(rec.as_bytes()), 2);
        let e = &ix.entries[&key];
        assert_eq!(e.device_status(&key, &key), Some(DeviceStatus::Revoked));
        assert_eq!(e.device_status(&key, &dev), Some(DeviceStatus::Active));
    }
}
