//! A contact's accepted device list (DESIGN section 11, docs/client.md):
//! [`judge`] walks the versions a lookup returned from the pinned one (or
//! from version 1 on first contact) and says how far the client may follow
//! on its own. Steps signed `by: "device"` by a device on the version
//! before are followed silently; a step signed `by: "admin"` that removes a
//! device is followed with a notice; anything else (an admin adding a
//! device, a step that does not verify or does not follow, a version that
//! goes back or forks) stops there until the user accepts the list
//! ([`Hold`]).
//!
//! Pure: the lookups are the directory's.

use serde::{Deserialize, Serialize};
use unibus_proto::devicelist::{By, Change, DeviceList};

/// Why a contact's list needs the user's acceptance before this client
/// seals to that contact again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Hold {
    /// An admin added a device: the account was recovered.
    #[error("version {version}: an admin added device {device} (a recovery)")]
    Recovery {
        /// The version that added it.
        version: u64,
        /// The device added.
        device: String,
    },
    /// A version 1 signed by an admin (a recovery of an account from
    /// before lists).
    #[error("version 1 was signed by an admin, not by the account")]
    AdminFirst,
    /// A step signed `by: "device"` by a key that is not on the version
    /// before.
    #[error("version {version} was signed by {signer}, which is not a device on version {before}")]
    Unlisted {
        /// The version.
        version: u64,
        /// Its signer.
        signer: String,
        /// The version before.
        before: u64,
    },
    /// A version that does not verify or does not follow the one before.
    #[error("version {version} does not verify: {why}")]
    Invalid {
        /// The version.
        version: u64,
        /// What is wrong.
        why: String,
    },
    /// The service shows an older version than the one accepted.
    #[error("the service shows version {shown}, older than the accepted version {pinned}")]
    Rollback {
        /// Shown now.
        shown: u64,
        /// Accepted before.
        pinned: u64,
    },
    /// The service shows another list under the accepted version.
    #[error("the service shows another list as version {version} than the one accepted")]
    Forked {
        /// The version.
        version: u64,
    },
    /// The history does not reach the version the service shows.
    #[error("the history stops at version {reached}; the service shows version {shown}")]
    Gap {
        /// Last version checked.
        reached: u64,
        /// Shown now.
        shown: u64,
    },
}

/// What a step the client followed by itself is worth telling the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListNotice {
    /// An admin removed a device.
    AdminRemoved {
        /// The version.
        version: u64,
        /// The device removed.
        device: String,
    },
    /// Version 1 was signed by a device of the account other than its
    /// first (an account from before lists whose first device is gone).
    FirstSignedBy {
        /// The signer.
        signer: String,
    },
}

/// How far the client follows a contact's list by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The newest version it accepts (to pin); `None` when not even
    /// version 1 is acceptable.
    pub accepted: Option<DeviceList>,
    /// What it noticed on the way.
    pub notices: Vec<ListNotice>,
    /// Why it stops before the version the service shows, if it does.
    pub hold: Option<Hold>,
}

/// Judges `current` (the version the service shows for `account`) from
/// `pinned` (the version accepted before; `None` on first contact) along
/// `history` (the versions after the pinned one, oldest first: from
/// version 1 on first contact).
pub fn judge(
    account: &str,
    pinned: Option<&DeviceList>,
    history: &[DeviceList],
    current: &DeviceList,
) -> Verdict {
    let mut verdict = Verdict { accepted: pinned.cloned(), notices: Vec::new(), hold: None };
    if let Some(pin) = pinned {
        if current.version < pin.version {
            verdict.hold = Some(Hold::Rollback { shown: current.version, pinned: pin.version });
            return verdict;
        }
        if current.version == pin.version {
            if current != pin {
                verdict.hold = Some(Hold::Forked { version: pin.version });
            }
            return verdict;
        }
    }
    let mut before: Option<DeviceList> = pinned.cloned();
    for list in history {
        let version = list.version;
        if let Some(pin) = pinned
            && version <= pin.version
        {
            continue;
        }
        let invalid = |why: String| Hold::Invalid { version, why };
        if let Err(e) = list.check() {
            verdict.hold = Some(invalid(e.to_string()));
            return verdict;
        }
        if !list.account.eq_ignore_ascii_case(account) {
            verdict.hold = Some(invalid("another account's list".into()));
            return verdict;
        }
        match &before {
            None => {
                if version != 1 {
                    verdict.hold = Some(invalid("the history does not start at version 1".into()));
                    return verdict;
                }
                match list.by {
                    By::Admin => {
                        verdict.hold = Some(Hold::AdminFirst);
                        return verdict;
                    }
                    By::Device if list.signer.eq_ignore_ascii_case(account) => {}
                    By::Device if list.lists(&list.signer) => {
                        verdict.notices.push(ListNotice::FirstSignedBy { signer: list.signer.clone() });
                    }
                    By::Device => {
                        verdict.hold = Some(invalid("version 1 signed by a key it does not list".into()));
                        return verdict;
                    }
                }
            }
            Some(prev) => {
                let step = match list.step_from(prev) {
                    Ok(step) => step,
                    Err(e) => {
                        verdict.hold = Some(invalid(e.to_string()));
                        return verdict;
                    }
                };
                match (step.by, &step.change) {
                    (By::Device, _) if step.signer_listed_before => {}
                    (By::Device, _) => {
                        let (signer, before) = (list.signer.clone(), prev.version);
                        verdict.hold = Some(Hold::Unlisted { version, signer, before });
                        return verdict;
                    }
                    (By::Admin, Change::Removed(device)) => {
                        verdict.notices.push(ListNotice::AdminRemoved { version, device: device.clone() });
                    }
                    (By::Admin, Change::Added(added)) => {
                        verdict.hold = Some(Hold::Recovery { version, device: added.device.clone() });
                        return verdict;
                    }
                }
            }
        }
        verdict.accepted = Some(list.clone());
        before = Some(list.clone());
    }
    let reached = verdict.accepted.as_ref().map_or(0, |l| l.version);
    if verdict.accepted.as_ref() != Some(current) {
        verdict.hold = Some(if reached >= current.version {
            Hold::Forked { version: current.version }
        } else {
            Hold::Gap { reached, shown: current.version }
        });
    }
    verdict
}

#[cfg(test)]
mod tests;
