//! What this client knows about its contacts' devices (docs/protocol.md
//! section 8, docs/envelope.md): every device set it has seen per account
//! ([`Contacts`], in memory and optionally in a JSON file next to the
//! identity), the changes since ([`DeviceChange`]: a device gained or
//! lost, recovery devices and unbound devices flagged), and the check that
//! runs before sealing to or accepting from a device ([`DeviceSet`]): its
//! binding must verify, and a known device must keep its `kex_pub`.
//! `directory` keeps them for a [`Client`](crate::Client).

mod directory;
#[cfg(test)]
mod tests;

pub use directory::DEVICES_MAX_AGE;
pub(crate) use directory::Directory;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unibus_proto::binding::verify_binding_str;
use unibus_proto::e2e::{Recipient, Reject};
use unibus_proto::records::{UserStatus, Via};
use unibus_proto::wire::{PublicDevice, PublicUser};

/// A device this client will not seal to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceRefused {
    /// Its `kex_sig` does not verify for its account, device and `kex_pub`
    /// (for example a binding made for another account).
    #[error("device {device} of account {account}: its binding does not verify; refusing to encrypt to it")]
    Binding {
        /// The account that lists it.
        account: String,
        /// The device key.
        device: String,
    },
    /// A device this client knew with another `kex_pub`.
    #[error(
        "device {device} of account {account}: its kex_pub changed since it was first seen; refusing to encrypt to it"
    )]
    KexChanged {
        /// The account that lists it.
        account: String,
        /// The device key.
        device: String,
    },
}

/// One device of a contact as this client last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    /// X25519 key first seen for it, hex.
    pub kex_pub: String,
    /// Order within the account.
    pub seq: u32,
    /// How it joined; `recovery` is flagged.
    pub via: Via,
    /// False for a record that predates bindings (`kex_sig: null`).
    pub bound: bool,
    /// Listed as active at the last lookup.
    pub active: bool,
}

impl KnownDevice {
    /// Added by an admin for recovery: flag it to the user.
    pub fn is_recovery(&self) -> bool {
        self.via == Via::Recovery
    }
}

/// The devices seen for one account, by device key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAccount {
    /// Every device seen, active or not.
    pub devices: BTreeMap<String, KnownDevice>,
}

/// A change in a contact's device set since this client last looked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceChange {
    /// A device appeared (or came back) in the account's active set.
    Gained {
        /// The account.
        account: String,
        /// The device key.
        device: String,
        /// How it joined (`recovery` is flagged).
        via: Via,
        /// False when it has no binding (`kex_sig: null`).
        bound: bool,
    },
    /// A device left the account's active set (revoked).
    Lost {
        /// The account.
        account: String,
        /// The device key.
        device: String,
    },
}

impl DeviceChange {
    /// A recovery device was added: the account was recovered by an admin.
    pub fn is_recovery(&self) -> bool {
        matches!(self, DeviceChange::Gained { via: Via::Recovery, .. })
    }
}

/// Why a contacts file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContactsError {
    /// The file could not be read or written.
    #[error("contacts file {0}")]
    Io(String, #[source] std::io::Error),
    /// The file is not a contacts file.
    #[error("contacts file {0}: not valid")]
    Format(String, #[source] serde_json::Error),
}

/// The device sets this client has seen, per account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    /// By account id.
    pub accounts: BTreeMap<String, KnownAccount>,
    /// Changes not yet taken ([`Contacts::take_changes`]); not saved.
    #[serde(skip)]
    changes: Vec<DeviceChange>,
}

/// An account's active devices after the checks, from one lookup.
#[derive(Debug, Clone)]
pub struct DeviceSet {
    /// The account id.
    pub account: String,
    /// The account is active.
    pub active: bool,
    /// Devices that may be sealed to: binding verified or absent
    /// (`bound` false), `kex_pub` as first seen.
    pub devices: Vec<CheckedDevice>,
    /// Devices refused.
    pub refused: Vec<DeviceRefused>,
}

/// A device that passed the checks.
#[derive(Debug, Clone)]
pub struct CheckedDevice {
    /// The device key.
    pub device: String,
    /// Its X25519 key.
    pub kex_pub: [u8; 32],
    /// False for a device that predates bindings.
    pub bound: bool,
    /// How it joined.
    pub via: Via,
}

impl DeviceSet {
    /// The recipients to seal to, unless a device was refused (then
    /// nothing is sealed: fail closed).
    ///
    /// # Errors
    /// The first [`DeviceRefused`].
    pub fn recipients(&self) -> Result<Vec<Recipient>, DeviceRefused> {
        if let Some(refused) = self.refused.first() {
            return Err(refused.clone());
        }
        Ok(self
            .devices
            .iter()
            .map(|d| Recipient { sign_pub: d.device.clone(), kex_pub: d.kex_pub })
            .collect())
    }

    /// Whether `device` may send as this account: active account, active
    /// device, binding verifies (or predates bindings). A known device
    /// whose `kex_pub` changed still signs with its own key, so it may send.
    ///
    /// # Errors
    /// [`Reject::SenderDevice`] or [`Reject::SenderBinding`].
    pub fn sender(&self, device: &str) -> Result<(), Reject> {
        if !self.active {
            return Err(Reject::SenderDevice);
        }
        if self.devices.iter().any(|d| d.device == device) {
            return Ok(());
        }
        match self.refused.iter().find(|r| refused_device(r) == device) {
            Some(DeviceRefused::KexChanged { .. }) => Ok(()),
            Some(_) => Err(Reject::SenderBinding),
            None => Err(Reject::SenderDevice),
        }
    }
}

fn refused_device(r: &DeviceRefused) -> &str {
    match r {
        DeviceRefused::Binding { device, .. } | DeviceRefused::KexChanged { device, .. } => device,
    }
}

/// The active devices a lookup reply lists; a server from before devices
/// lists none, and then the account's own key is its one device.
fn listed_devices(user: &PublicUser) -> Vec<PublicDevice> {
    match (&user.kex_pub, user.devices.is_empty()) {
        (Some(kex_pub), true) => vec![PublicDevice {
            device: user.sign_pub,
            kex_pub: *kex_pub,
            kex_sig: user.kex_sig.clone(),
            seq: 1,
            via: Via::Invite,
        }],
        _ => user.devices.clone(),
    }
}

impl Contacts {
    /// Checks the devices of a lookup reply, records them, and queues the
    /// changes since the last time this account was seen (none the first
    /// time). A refused device is not recorded: a changed `kex_pub` keeps
    /// the one first seen.
    pub fn observe(&mut self, user: &PublicUser) -> DeviceSet {
        let account = user.sign_pub.to_hex();
        let first_time = !self.accounts.contains_key(&account);
        let known = self.accounts.entry(account.clone()).or_default();
        let mut set = DeviceSet {
            account: account.clone(),
            active: user.status == UserStatus::Active,
            devices: Vec::new(),
            refused: Vec::new(),
        };
        let listed = listed_devices(user);
        for d in &listed {
            let device = d.device.to_hex();
            match check(&account, d, known.devices.get(&device)) {
                Ok(checked) => set.devices.push(checked),
                Err(refused) => {
                    set.refused.push(refused);
                    continue;
                }
            }
            let was_active = known.devices.get(&device).is_some_and(|k| k.active);
            let entry = known.devices.entry(device.clone()).or_insert_with(|| KnownDevice {
                kex_pub: d.kex_pub.to_hex(),
                seq: d.seq,
                via: d.via,
                bound: d.kex_sig.is_some(),
                active: true,
            });
            (entry.seq, entry.via, entry.bound, entry.active) = (d.seq, d.via, d.kex_sig.is_some(), true);
            if !was_active && !first_time {
                let (via, bound) = (d.via, d.kex_sig.is_some());
                self.changes.push(DeviceChange::Gained { account: account.clone(), device, via, bound });
            }
        }
        for (device, k) in known.devices.iter_mut().filter(|(_, k)| k.active) {
            if !listed.iter().any(|d| d.device == *device) {
                k.active = false;
                self.changes.push(DeviceChange::Lost { account: account.clone(), device: device.clone() });
            }
        }
        set
    }

    /// The changes observed since the last call.
    pub fn take_changes(&mut self) -> Vec<DeviceChange> {
        std::mem::take(&mut self.changes)
    }

    /// The contacts file that goes with an identity's seed file:
    /// `<seed file>.contacts.json`.
    pub fn path_for(seed: &Path) -> PathBuf {
        let mut name = seed.as_os_str().to_owned();
        name.push(".contacts.json");
        PathBuf::from(name)
    }

    /// Reads a contacts file; a missing file is an empty set.
    ///
    /// # Errors
    /// [`ContactsError`] when it cannot be read or is not a contacts file.
    pub fn load(path: &Path) -> Result<Contacts, ContactsError> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| ContactsError::Format(name, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contacts::default()),
            Err(e) => Err(ContactsError::Io(name, e)),
        }
    }

    /// Writes the contacts file (mode 0600, replaced whole).
    ///
    /// # Errors
    /// [`ContactsError::Io`] when it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), ContactsError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |e: std::io::Error| ContactsError::Io(path.display().to_string(), e);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let json = serde_json::to_vec_pretty(self).expect("contacts always encode");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// The binding and the key continuity of one listed device.
fn check(
    account: &str,
    d: &PublicDevice,
    known: Option<&KnownDevice>,
) -> Result<CheckedDevice, DeviceRefused> {
    let refuse_binding =
        || DeviceRefused::Binding { account: account.to_string(), device: d.device.to_hex() };
    if let Some(kex_sig) = &d.kex_sig {
        verify_binding_str(account, &d.device.to_hex(), &d.kex_pub.to_hex(), kex_sig)
            .map_err(|_| refuse_binding())?;
    }
    // The curve checks a record's key does not carry.
    let kex_pub = unibus_proto::KexPub::parse(&d.kex_pub.to_hex()).map_err(|_| refuse_binding())?;
    if known.is_some_and(|k| k.kex_pub != kex_pub.as_str()) {
        return Err(DeviceRefused::KexChanged { account: account.to_string(), device: d.device.to_hex() });
    }
    Ok(CheckedDevice {
        device: d.device.to_hex(),
        kex_pub: *kex_pub.as_bytes(),
        bound: d.kex_sig.is_some(),
        via: d.via,
    })
}
