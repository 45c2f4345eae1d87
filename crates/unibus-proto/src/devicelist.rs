//! Device lists signed by the account (DESIGN section 11): the list as it
//! travels, the exact bytes its signature covers, its hash (the next
//! version's `prev`), signing, strict checks, and what one version changes
//! over the one before it ([`Step`]).
//!
//! Pure: who may sign a step (a device on the list before it, the calling
//! device, an active admin's device) depends on state this module does not
//! see; [`DeviceList::step_from`] hands the service and the client what
//! they need to judge it.
//!
//! The signature covers the exact strings of the list, so every hex field
//! must be lowercase and every base64 field canonical: a list spelled any
//! other way is refused rather than normalised.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::binding::KexSig;
use crate::error::Error;
use crate::keys;
use crate::records::MAX_DEVICES_PER_ACCOUNT;

/// Domain label of a device list's signed bytes.
pub const LIST_LABEL: &str = "unibus-devices/1";

/// Who signed a version: a device of the account itself, or a device of an
/// admin account (a recovery, or an admin removing a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// A device of this account.
    Device,
    /// A device of an admin account.
    Admin,
}

impl By {
    fn as_str(self) -> &'static str {
        match self {
            By::Device => "device",
            By::Admin => "admin",
        }
    }
}

/// One device on a list: its key, its X25519 key and its binding, as the
/// device record holds them (`kex_sig` null for a device from before
/// bindings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedDevice {
    /// The device's Ed25519 key (64 lowercase hex).
    pub device: String,
    /// Its X25519 key (64 lowercase hex).
    pub kex_pub: String,
    /// Its binding (88 characters of padded standard base64), if any.
    pub kex_sig: Option<String>,
}

/// One version of an account's signed device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceList {
    /// The account id (64 lowercase hex).
    pub account: String,
    /// 1 for the first list, then one more with each change.
    pub version: u64,
    /// Lowercase hex SHA-256 of the previous version's signed bytes; empty
    /// for version 1.
    pub prev: String,
    /// The account's active devices, in `seq` order.
    pub devices: Vec<ListedDevice>,
    /// The device key that signed (64 lowercase hex).
    pub signer: String,
    /// Whose device `signer` is.
    pub by: By,
    /// Ed25519 signature of `signer` over [`DeviceList::signed_bytes`]
    /// (padded standard base64).
    pub sig: String,
}

/// Why a list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// Malformed: a field out of shape, a device twice, too many devices.
    #[error("device_list: {0}")]
    Shape(String),
    /// The signature does not verify (strictly) for `signer`.
    #[error("device_list: the signature does not verify")]
    BadSignature,
    /// Built on a version that is not the one it follows (`version` or
    /// `prev` do not continue it): fetch the current list and sign again.
    #[error("device_list: {0}")]
    Stale(String),
    /// Continues the version before but changes something else than
    /// exactly one device added or removed.
    #[error("device_list: {0}")]
    Change(String),
}

impl From<ListError> for Error {
    fn from(e: ListError) -> Error {
        match e {
            ListError::Stale(_) => Error::StaleDevices(e.to_string()),
            other => Error::bad(other.to_string()),
        }
    }
}

/// What a version changes over the version before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The one device added or removed.
    pub change: Change,
    /// Whose device signed it.
    pub by: By,
    /// The signer is on the version before (for `by: device`, the rule a
    /// contact checks; a device removing itself is on it too).
    pub signer_listed_before: bool,
}

/// The one change of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This device was added (last, as the newest by `seq`).
    Added(ListedDevice),
    /// The device with this key was removed.
    Removed(String),
}

/// Appends `enc(x)`: a 4-byte big-endian length, then the bytes.
fn enc(out: &mut Vec<u8>, x: &[u8]) {
    let len = u32::try_from(x.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// `s` is 64 lowercase hex characters.
fn lower_hex64(field: &str, s: &str) -> Result<(), ListError> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ListError::Shape(format!("{field}: expected 64 lowercase hex characters")))
    }
}

impl DeviceList {
    /// The exact bytes the signature covers: `enc("unibus-devices/1")
    /// enc(account) enc(version) enc(prev) enc(count) [enc(device)
    /// enc(kex_pub) enc(kex_sig)]... enc(signer) enc(by)`, numbers in
    /// decimal, a missing `kex_sig` as the empty string.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + self.devices.len() * 260 + 3 * 64);
        enc(&mut m, LIST_LABEL.as_bytes());
        enc(&mut m, self.account.as_bytes());
        enc(&mut m, self.version.to_string().as_bytes());
        enc(&mut m, self.prev.as_bytes());
        enc(&mut m, self.devices.len().to_string().as_bytes());
        for d in &self.devices {
            enc(&mut m, d.device.as_bytes());
            enc(&mut m, d.kex_pub.as_bytes());
            enc(&mut m, d.kex_sig.as_deref().unwrap_or("").as_bytes());
        }
        enc(&mut m, self.signer.as_bytes());
        enc(&mut m, self.by.as_str().as_bytes());
        m
    }

    /// Lowercase hex SHA-256 of the signed bytes: the next version's `prev`.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.signed_bytes()))
    }

    /// Signs a list with `signer` (whose key becomes `signer`).
    pub fn sign(
        account: &str,
        version: u64,
        prev: String,
        devices: Vec<ListedDevice>,
        signer: &SigningKey,
        by: By,
    ) -> DeviceList {
        let mut list = DeviceList {
            account: account.to_string(),
            version,
            prev,
            devices,
            signer: hex::encode(signer.verifying_key().as_bytes()),
            by,
            sig: String::new(),
        };
        list.sig = STANDARD.encode(signer.sign(&list.signed_bytes()).to_bytes());
        list
    }

    /// Version 1 of an account: its first device alone, signed by that
    /// device (whose key is the account id), as `unibus.register` carries it.
    pub fn first(device: &SigningKey, kex_pub: &str, kex_sig: &str) -> DeviceList {
        let me = hex::encode(device.verifying_key().as_bytes());
        let listed = ListedDevice {
            device: me.clone(),
            kex_pub: kex_pub.to_string(),
            kex_sig: Some(kex_sig.to_string()),
        };
        DeviceList::sign(&me, 1, String::new(), vec![listed], device, By::Device)
    }

    /// The next version: `devices`, following this one, signed by `signer`.
    pub fn next(&self, devices: Vec<ListedDevice>, signer: &SigningKey, by: By) -> DeviceList {
        DeviceList::sign(&self.account, self.version + 1, self.hash(), devices, signer, by)
    }

    /// The shape checks and the signature (strict, on a checked key).
    ///
    /// # Errors
    /// [`ListError::Shape`], or [`ListError::BadSignature`].
    pub fn check(&self) -> Result<(), ListError> {
        self.check_shape()?;
        self.check_signature()
    }

    /// Every field in shape: lowercase hex keys, canonical base64, version
    /// at least 1 with `prev` empty exactly for version 1, at most 8
    /// devices (at least 1 in version 1), none twice.
    ///
    /// # Errors
    /// [`ListError::Shape`] naming the field.
    pub fn check_shape(&self) -> Result<(), ListError> {
        lower_hex64("account", &self.account)?;
        lower_hex64("signer", &self.signer)?;
        match (self.version, self.prev.is_empty()) {
            (0, _) => return Err(ListError::Shape("version: at least 1".into())),
            (1, true) => {}
            (1, false) => return Err(ListError::Shape("prev: empty for version 1".into())),
            (_, true) => return Err(ListError::Shape("prev: the previous version's hash".into())),
            (_, false) => lower_hex64("prev", &self.prev)?,
        }
        // Version 1 names the first device; a later version may be empty
        // (an admin revoked the last device, awaiting a recovery).
        let least = usize::from(self.version == 1);
        if self.devices.len() < least || self.devices.len() > MAX_DEVICES_PER_ACCOUNT {
            return Err(ListError::Shape(format!("devices: {least} to {MAX_DEVICES_PER_ACCOUNT}")));
        }
        for (i, d) in self.devices.iter().enumerate() {
            lower_hex64("devices.device", &d.device)?;
            lower_hex64("devices.kex_pub", &d.kex_pub)?;
            if let Some(sig) = &d.kex_sig {
                KexSig::parse(sig).map_err(|_| ListError::Shape("devices.kex_sig: not a binding".into()))?;
            }
            if self.devices[..i].iter().any(|o| o.device == d.device) {
                return Err(ListError::Shape(format!("devices: {} listed twice", d.device)));
            }
        }
        let sig = STANDARD.decode(&self.sig).ok().filter(|s| s.len() == 64);
        if sig.is_none_or(|s| STANDARD.encode(s) != self.sig) {
            return Err(ListError::Shape("sig: expected 88 characters of padded standard base64".into()));
        }
        Ok(())
    }

    /// The signature of `signer` over the signed bytes, strictly, on a key
    /// that passes the weak-key checks.
    fn check_signature(&self) -> Result<(), ListError> {
        let signer = keys::parse_hex32("signer", &self.signer).map_err(|_| ListError::BadSignature)?;
        let key = keys::check_sign_pub(&signer).map_err(|_| ListError::BadSignature)?;
        let sig = STANDARD.decode(&self.sig).map_err(|_| ListError::BadSignature)?;
        let sig = Signature::from_slice(&sig).map_err(|_| ListError::BadSignature)?;
        key.verify_strict(&self.signed_bytes(), &sig).map_err(|_| ListError::BadSignature)
    }

    /// Whether `device` is on this list.
    pub fn lists(&self, device: &str) -> bool {
        self.devices.iter().any(|d| d.device == device)
    }

    /// What this version changes over `before`, the version it must
    /// follow. Both are assumed checked ([`DeviceList::check`]).
    ///
    /// # Errors
    /// [`ListError::Stale`] when it does not continue `before` (another
    /// account, a version that is not the next, a `prev` that is not
    /// `before`'s hash); [`ListError::Change`] when its devices are not
    /// `before`'s plus one at the end or minus exactly one, the others
    /// unchanged and in order.
    pub fn step_from(&self, before: &DeviceList) -> Result<Step, ListError> {
        if self.account != before.account {
            return Err(ListError::Stale("account: another account's list".into()));
        }
        if before.version.checked_add(1) != Some(self.version) {
            return Err(ListError::Stale(format!(
                "version {} does not follow version {}",
                self.version, before.version
            )));
        }
        if self.prev != before.hash() {
            return Err(ListError::Stale(format!("prev is not the hash of version {}", before.version)));
        }
        let change = match self.devices.len().checked_sub(before.devices.len()) {
            Some(1) if self.devices[..before.devices.len()] == before.devices[..] => {
                let added = self.devices[before.devices.len()].clone();
                Change::Added(added)
            }
            Some(0) => return Err(ListError::Change("the same number of devices: no change".into())),
            None if before.devices.len() == self.devices.len() + 1 => {
                let gone = before.devices.iter().position(|d| !self.lists(&d.device));
                let gone = gone.ok_or_else(|| ListError::Change("no device removed".into()))?;
                let mut kept = before.devices.clone();
                let removed = kept.remove(gone);
                if kept != self.devices {
                    return Err(ListError::Change("devices other than the removed one changed".into()));
                }
                Change::Removed(removed.device)
            }
            _ => return Err(ListError::Change("not exactly one device added or removed".into())),
        };
        Ok(Step { change, by: self.by, signer_listed_before: before.lists(&self.signer) })
    }
}

#[cfg(test)]
mod tests;
