//! What each index keeps of its bucket: compact entries only (no full
//! records), so 100,000 users cost a few MB.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;

use super::index::Fold;
use unibus_proto::ids::{InviteId, Key, RoomId, Timestamp};
use unibus_proto::records::{DeviceStatus, InviteStatus, Role, UserStatus};

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
    /// The devices on the account's signed list when they are not exactly
    /// its active devices (a device written into the record without a
    /// list step, a ghost: DESIGN section 11); `None` when they are, or
    /// when the account has no list yet.
    pub unlisted_differs: Option<Box<[[u8; 32]]>>,
}

impl UserEntry {
    /// The status of device `key` in this account (`account` is the
    /// account's own key); `None` when the account does not list it.
    pub fn device_status(&self, account: Key, key: Key) -> Option<DeviceStatus> {
        match &self.devices {
            None => (account == key).then_some(DeviceStatus::Active),
            Some(devices) => devices.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, s)| *s),
        }
    }
}

/// All users by `sign_pub`.
#[derive(Default)]
pub struct Users {
    /// Sorted by key, for pagination.
    pub entries: BTreeMap<Key, UserEntry>,
    /// Keys whose current value does not decode: the callout denies them.
    pub unreadable: BTreeSet<String>,
}

#[derive(Deserialize)]
struct SlimUser {
    role: Role,
    status: UserStatus,
    #[serde(default)]
    devices: Option<Vec<SlimDevice>>,
    #[serde(default)]
    device_list: Option<SlimList>,
}

#[derive(Deserialize)]
struct SlimDevice {
    device: Key,
    status: DeviceStatus,
}

/// The signed list as far as the index needs it: its device keys.
#[derive(Deserialize)]
struct SlimList {
    devices: Vec<SlimListed>,
}

#[derive(Deserialize)]
struct SlimListed {
    device: String,
}

impl SlimUser {
    /// Device keys that are not 64 hex characters are left out (such a
    /// device cannot connect: its key would not match). An account whose
    /// one device is its own key, active, is kept as `None`, like a record
    /// from before devices: the same meaning, no allocation (most
    /// accounts).
    fn devices(&self, account: Key) -> Option<DeviceKeys> {
        let devices = self.devices.as_ref()?;
        if let [only] = devices.as_slice()
            && only.device == account
            && only.status == DeviceStatus::Active
        {
            return None;
        }
        Some(devices.iter().map(|d| (*d.device.as_bytes(), d.status)).collect())
    }

    /// The listed device keys when they differ from the active ones (see
    /// [`UserEntry::unlisted_differs`]). A listed key that does not parse
    /// matches no device.
    fn listed_if_different(&self, account: Key) -> Option<Box<[[u8; 32]]>> {
        let list = self.device_list.as_ref()?;
        let mut listed: Vec<[u8; 32]> =
            list.devices.iter().filter_map(|d| Key::parse(&d.device).ok()).map(|k| *k.as_bytes()).collect();
        listed.sort_unstable();
        let mut active: Vec<[u8; 32]> = match &self.devices {
            None => vec![*account.as_bytes()],
            Some(devices) => devices
                .iter()
                .filter(|d| d.status == DeviceStatus::Active)
                .map(|d| *d.device.as_bytes())
                .collect(),
        };
        active.sort_unstable();
        (listed != active || listed.len() != list.devices.len()).then(|| listed.into_boxed_slice())
    }
}

impl Fold for Users {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: u64) {
        self.unreadable.remove(key);
        let Ok(account) = Key::parse(key) else {
            // Not a key unibusd writes: such an entry can admit nobody.
            if value.is_some() {
                self.unreadable.insert(key.to_string());
            }
            return;
        };
        match value.map(serde_json::from_slice::<SlimUser>) {
            Some(Ok(u)) => {
                let entry = UserEntry {
                    role: u.role,
                    status: u.status,
                    revision,
                    devices: u.devices(account),
                    unlisted_differs: u.listed_if_different(account),
                };
                self.entries.insert(account, entry);
            }
            Some(Err(_)) => {
                self.entries.remove(&account);
                self.unreadable.insert(key.to_string());
            }
            None => {
                self.entries.remove(&account);
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
    pub fn account_of(&self, key: Key) -> Option<Key> {
        self.accounts.get(key.as_bytes()).map(|a| Key::from_bytes(*a))
    }

    /// Every device key (hex) the index maps to `account`, whether or not
    /// the account still lists it (revoked devices it no longer lists
    /// included). A scan: for an account's delete, not for the callout.
    pub fn keys_of(&self, account: Key) -> Vec<Key> {
        let account = account.as_bytes();
        self.accounts.iter().filter(|(_, a)| *a == account).map(|(k, _)| Key::from_bytes(*k)).collect()
    }
}

/// 64 hex characters as 32 bytes.
fn raw_key(key: &str) -> Option<[u8; 32]> {
    Key::parse(key).ok().map(|k| *k.as_bytes())
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

/// The accounts that have a non-empty block list (`UNIBUS_blocks`): an
/// account not here has blocked nobody. 32 bytes per such account, however
/// long its list.
#[derive(Default)]
pub struct Blockers {
    owners: HashSet<[u8; 32]>,
}

impl Blockers {
    /// False when `owner` has blocked nobody; true when it may have (its
    /// list is then a leader read away).
    pub fn may_block(&self, owner: Key) -> bool {
        self.owners.contains(owner.as_bytes())
    }
}

#[derive(Deserialize)]
struct SlimBlockList {
    blocked: Vec<serde::de::IgnoredAny>,
}

impl Fold for Blockers {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        let Some(raw) = raw_key(key) else { return };
        // A value that does not decode counts as a list: its reader finds
        // out (fail closed), rather than this index calling it empty.
        match value.map(serde_json::from_slice::<SlimBlockList>) {
            Some(Ok(list)) if list.blocked.is_empty() => self.owners.remove(&raw),
            Some(_) => self.owners.insert(raw),
            None => self.owners.remove(&raw),
        };
    }
}

/// An invite as the index knows it.
#[derive(Debug, Clone)]
pub struct InviteEntry {
    /// Stored status.
    pub status: InviteStatus,
    /// Parsed expiry; `None` (unparseable) counts as expired.
    pub expires_at: Timestamp,
}

impl InviteEntry {
    /// Status as shown on the wire (`expired` computed).
    pub fn effective(&self, now: Timestamp) -> InviteStatus {
        match self.status {
            InviteStatus::Pending if now >= self.expires_at => InviteStatus::Expired,
            s => s,
        }
    }
}

/// All invites by id.
#[derive(Default)]
pub struct Invites {
    /// Sorted by id.
    pub entries: BTreeMap<InviteId, InviteEntry>,
}

#[derive(Deserialize)]
struct SlimInvite {
    status: InviteStatus,
    expires_at: Timestamp,
}

impl Fold for Invites {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        let Ok(id) = InviteId::parse(key) else { return };
        match value.and_then(|v| serde_json::from_slice::<SlimInvite>(v).ok()) {
            Some(i) => {
                let entry = InviteEntry { status: i.status, expires_at: i.expires_at };
                self.entries.insert(id, entry);
            }
            None => {
                self.entries.remove(&id);
            }
        }
    }
}

/// Room membership, both ways.
#[derive(Default)]
pub struct Rooms {
    /// room id -> (owner, members).
    pub rooms: BTreeMap<RoomId, (Option<Key>, Vec<Key>)>,
    /// member `sign_pub` -> room ids (sorted).
    pub by_member: HashMap<Key, BTreeSet<RoomId>>,
}

#[derive(Deserialize)]
struct SlimRoom {
    #[serde(default)]
    owner: Option<Key>,
    members: Vec<Key>,
}

impl Rooms {
    fn unlink(&mut self, room: &RoomId) {
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
    pub fn rooms_of(&self, account: Key) -> Vec<RoomId> {
        let mut out: BTreeSet<RoomId> = self.by_member.get(&account).cloned().unwrap_or_default();
        for (id, (owner, _)) in &self.rooms {
            if *owner == Some(account) {
                out.insert(id.clone());
            }
        }
        out.into_iter().collect()
    }

    /// Room ids `sign_pub` is a member of (permissions come from this).
    pub fn member_of(&self, account: Key) -> Vec<RoomId> {
        self.by_member.get(&account).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

impl Fold for Rooms {
    fn apply(&mut self, key: &str, value: Option<&[u8]>, _revision: u64) {
        let Ok(id) = RoomId::parse(key) else { return };
        self.unlink(&id);
        if let Some(room) = value.and_then(|v| serde_json::from_slice::<SlimRoom>(v).ok()) {
            for m in &room.members {
                self.by_member.entry(*m).or_default().insert(id.clone());
            }
            self.rooms.insert(id, (room.owner, room.members));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_map_keys_to_accounts_and_flag_what_does_not_decode() {
        let (dev, acct) = ("ab".repeat(32), "cd".repeat(32));
        let (dev_key, acct_key) = (Key::parse(&dev).unwrap(), Key::parse(&acct).unwrap());
        let mut ix = Devices::default();
        ix.apply(&dev, Some(format!("{{\"account\":\"{acct}\"}}").as_bytes()), 1);
        assert_eq!(ix.account_of(dev_key), Some(acct_key));
        assert_eq!(ix.keys_of(acct_key), vec![dev_key]);
        ix.apply(&dev, Some(b"{\"account\":\"nope\"}"), 2);
        assert_eq!(ix.account_of(dev_key), None);
        assert!(ix.unreadable.contains(&dev));
        ix.apply(&dev, None, 3);
        assert!(!ix.unreadable.contains(&dev) && ix.account_of(dev_key).is_none());
        ix.apply("not-a-key", Some(b"{}"), 4);
        assert!(ix.unreadable.contains("not-a-key"));
    }

    #[test]
    fn a_legacy_user_lists_its_own_key_only() {
        let mut ix = Users::default();
        let key = "ab".repeat(32);
        let (k, d) = (Key::parse(&key).unwrap(), Key::parse(&"cd".repeat(32)).unwrap());
        ix.apply(&key, Some(b"{\"role\":\"member\",\"status\":\"active\"}"), 1);
        let e = &ix.entries[&k];
        assert_eq!(e.device_status(k, k), Some(DeviceStatus::Active));
        assert_eq!(e.device_status(k, d), None);
        let dev = "cd".repeat(32);
        let rec = format!(
            "{{\"role\":\"member\",\"status\":\"active\",\"devices\":[{{\"device\":\"{key}\",\"status\":\"revoked\"}},{{\"device\":\"{dev}\",\"status\":\"active\"}}]}}"
        );
        ix.apply(&key, Some(rec.as_bytes()), 2);
        let e = &ix.entries[&k];
        assert_eq!(e.device_status(k, k), Some(DeviceStatus::Revoked));
        assert_eq!(e.device_status(k, d), Some(DeviceStatus::Active));
    }
}
