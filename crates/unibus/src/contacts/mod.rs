//! What this client knows about its contacts' devices (docs/protocol.md
//! section 8, docs/envelope.md): every device set it has seen per account
//! ([`Contacts`], in memory and optionally in a JSON file next to the
//! identity), the changes since ([`DeviceChange`]: a device gained or
//! lost, recovery devices and unbound devices flagged), and the check that
//! runs before sealing to or accepting from a device ([`DeviceSet`]): its
//! binding must verify, and a known device must keep its `kex_pub`.
//! `directory` keeps them for a [`Client`](crate::Client).

mod directory;
mod pins;
#[cfg(test)]
mod tests;

pub(crate) use directory::Directory;
pub use directory::{DEVICES_MAX_AGE, ListReport};
pub use pins::{Hold, ListNotice, Verdict, judge};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unibus_proto::binding::verify_binding_str;
use unibus_proto::devicelist::DeviceList;
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
    /// The account's signed device list changed in a way this client does
    /// not follow by itself (DESIGN section 11): nothing is sealed to the
    /// account until the user accepts the new list
    /// ([`Client::accept_device_list`](crate::Client::accept_device_list),
    /// `unibus verify <account> --accept`).
    #[error("account {account} must be verified again before anything is sealed to it: {hold}")]
    ListHeld {
        /// The account.
        account: String,
        /// Why.
        hold: Hold,
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

fn is_false(b: &bool) -> bool {
    !*b
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
    /// The signed device list accepted for the account (DESIGN section
    /// 11): only its devices are sealed to, and only they may send as the
    /// account. `None` until the account is first seen with a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<DeviceList>,
    /// The account was seen with a list before and the service shows none
    /// now: held like a version that goes back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub had_list: bool,
    /// The hold last reported, so that each is reported once per run.
    #[serde(skip)]
    reported: Option<Hold>,
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
    /// The account's signed list changed in a way worth telling (an admin
    /// removed a device; version 1 signed by another device than the
    /// first), and this client followed it.
    List {
        /// The account.
        account: String,
        /// What.
        #[serde(flatten)]
        notice: ListNotice,
    },
    /// The account's signed list changed in a way this client does not
    /// follow by itself: nothing is sealed to it until the user accepts.
    NeedsVerify {
        /// The account.
        account: String,
        /// Why.
        #[serde(flatten)]
        hold: Hold,
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
    /// Why nothing may be sealed to the account until the user accepts its
    /// new list; the devices above are those of the list accepted before.
    pub hold: Option<Hold>,
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
        if let Some(hold) = &self.hold {
            return Err(DeviceRefused::ListHeld { account: self.account.clone(), hold: hold.clone() });
        }
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
        DeviceRefused::ListHeld { .. } => "",
    }
}

/// The devices of a signed list that the lookup also shows active (a
/// device revoked in the record but still on the list is not trusted:
/// the service may always withhold a device; it may not add one), with
/// the keys the list signs and `seq` and `via` from the lookup.
fn devices_of_list(list: &DeviceList, user: &PublicUser) -> Vec<PublicDevice> {
    let mut out = Vec::with_capacity(list.devices.len());
    for d in &list.devices {
        let (Ok(device), Ok(kex_pub)) =
            (unibus_proto::Key::parse(&d.device), unibus_proto::Key::parse(&d.kex_pub))
        else {
            continue;
        };
        let Some(shown) = user.devices.iter().find(|p| p.device == device) else {
            continue;
        };
        out.push(PublicDevice {
            device,
            kex_pub,
            kex_sig: d.kex_sig.clone(),
            seq: shown.seq,
            via: shown.via,
        });
    }
    out
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
    /// The list accepted for `account`, if any.
    pub fn accepted(&self, account: &str) -> Option<&DeviceList> {
        self.accounts.get(&account.to_ascii_lowercase())?.accepted.as_ref()
    }

    /// Accepts `list` for its account (the user verified it): from now on
    /// its devices are sealed to, and later versions are judged from it.
    pub fn accept(&mut self, list: DeviceList) {
        let known = self.accounts.entry(list.account.to_ascii_lowercase()).or_default();
        known.accepted = Some(list);
        known.had_list = true;
        known.reported = None;
    }

    /// Checks the devices of a lookup reply, records them, and queues the
    /// changes since the last time this account was seen (none the first
    /// time). A refused device is not recorded: a changed `kex_pub` keeps
    /// the one first seen.
    ///
    /// When the account has a signed list (DESIGN section 11), `history`
    /// holds its versions after the one accepted before (from version 1
    /// the first time): the list is followed as far as [`judge`] allows,
    /// and the devices are those of the list accepted now; where it stops,
    /// the set is held ([`DeviceSet::hold`]) and a
    /// [`DeviceChange::NeedsVerify`] is queued once per reason.
    pub fn observe(&mut self, user: &PublicUser, history: &[DeviceList]) -> DeviceSet {
        let account = user.sign_pub.to_hex();
        let first_time = !self.accounts.contains_key(&account);
        let known = self.accounts.entry(account.clone()).or_default();
        let mut set = DeviceSet {
            account: account.clone(),
            active: user.status == UserStatus::Active,
            devices: Vec::new(),
            refused: Vec::new(),
            hold: None,
        };
        let listed = match &user.device_list {
            Some(current) => {
                let verdict = judge(&account, known.accepted.as_ref(), history, current);
                for notice in verdict.notices {
                    self.changes.push(DeviceChange::List { account: account.clone(), notice });
                }
                known.accepted = verdict.accepted;
                known.had_list = true;
                set.hold = verdict.hold;
                known.accepted.as_ref().map_or_else(Vec::new, |l| devices_of_list(l, user))
            }
            None if known.had_list || known.accepted.is_some() => {
                let pinned = known.accepted.as_ref().map_or(0, |l| l.version);
                set.hold = Some(Hold::Rollback { shown: 0, pinned });
                known.accepted.as_ref().map_or_else(Vec::new, |l| devices_of_list(l, user))
            }
            None => listed_devices(user),
        };
        if let Some(hold) = &set.hold
            && known.reported.as_ref() != Some(hold)
        {
            self.changes.push(DeviceChange::NeedsVerify { account: account.clone(), hold: hold.clone() });
        }
        known.reported = set.hold.clone();
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
