//! Safety numbers (docs/protocol.md section 8): what two people compare in
//! person to know that the device keys each of them sees for the other are
//! the ones the other really has.
//!
//! An account's **fingerprint** is computed over its id and its ACTIVE
//! devices' `(device, kex_pub, kex_sig)`, sorted by device key:
//!
//! ```text
//! m  = enc("unibus-safety/1") enc(account) enc(u32 BE count)
//!      then per device: enc(device) enc(kex_pub) enc(kex_sig or "")
//! h0 = SHA-256(m);  h(i+1) = SHA-256(h(i) || m)   (5200 rounds in all)
//! ```
//!
//! with `enc(x)` = 4-byte big-endian length and the bytes of `x`, as in
//! [`crate::binding`]. The first 30 bytes of the last hash, as six 5-byte
//! big-endian numbers mod 100000, give 30 digits. A pair's **safety
//! number** is the two accounts' 30 digits in ascending order: 60 digits
//! in 12 groups of 5, the same on both sides (as Signal's). The iteration
//! makes a search for another device set with the same digits costlier.
//!
//! A binding is written as given (`None` = unbound, a record made before
//! bindings); checking it is the caller's job
//! ([`crate::binding::verify_binding_str`]) before showing a number.

use sha2::{Digest as _, Sha256};

use crate::ids::Key;
use crate::records::User;
use crate::wire::PublicUser;

/// Domain label of the fingerprint message.
pub const SAFETY_LABEL: &str = "unibus-safety/1";
/// SHA-256 rounds (Signal uses 5200 of SHA-512).
pub const ITERATIONS: u32 = 5200;
/// Digits of one account's fingerprint.
pub const FINGERPRINT_DIGITS: usize = 30;
/// Prefix of the compact string a QR code carries.
pub const SAFETY_QR_PREFIX: &str = "unibus://safety/1/";

/// One active device's keys as they enter the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKeys<'a> {
    /// Ed25519 key (hashed as its lowercase hex).
    pub device: Key,
    /// X25519 key (hashed as its lowercase hex).
    pub kex_pub: Key,
    /// Binding (`None`: unbound).
    pub kex_sig: Option<&'a str>,
}

/// Appends `enc(x)`: a 4-byte big-endian length, then the bytes.
fn enc(out: &mut Vec<u8>, x: &[u8]) {
    let len = u32::try_from(x.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// The exact bytes an account's fingerprint hashes (devices sorted here).
pub fn fingerprint_message(account: &Key, devices: &[DeviceKeys<'_>]) -> Vec<u8> {
    let mut sorted = devices.to_vec();
    sorted.sort_by_key(|d| d.device);
    let mut m = Vec::with_capacity(64 + sorted.len() * 240);
    enc(&mut m, SAFETY_LABEL.as_bytes());
    enc(&mut m, account.to_hex().as_bytes());
    let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX);
    enc(&mut m, &count.to_be_bytes());
    for d in &sorted {
        enc(&mut m, d.device.to_hex().as_bytes());
        enc(&mut m, d.kex_pub.to_hex().as_bytes());
        enc(&mut m, d.kex_sig.unwrap_or_default().as_bytes());
    }
    m
}

/// An account's fingerprint: 30 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of `account` with these active devices (any order).
    pub fn new(account: &Key, devices: &[DeviceKeys<'_>]) -> Fingerprint {
        let m = fingerprint_message(account, devices);
        let mut h: [u8; 32] = Sha256::digest(&m).into();
        for _ in 1..ITERATIONS {
            h = Sha256::new().chain_update(h).chain_update(&m).finalize().into();
        }
        let digits = h[..30]
            .chunks(5)
            .map(|c| {
                let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                format!("{:05}", n % 100_000)
            })
            .collect();
        Fingerprint(digits)
    }

    /// The fingerprint of an account record's active devices.
    pub fn of_user(user: &User) -> Fingerprint {
        let keys: Vec<DeviceKeys<'_>> = user
            .active_devices()
            .map(|d| DeviceKeys { device: d.device, kex_pub: d.kex_pub, kex_sig: d.kex_sig.as_deref() })
            .collect();
        Fingerprint::new(&user.sign_pub, &keys)
    }

    /// The fingerprint of a looked-up account (its devices are the active
    /// ones); the same as [`Fingerprint::of_user`] of the record behind it.
    pub fn of_public(user: &PublicUser) -> Fingerprint {
        let keys: Vec<DeviceKeys<'_>> = user
            .devices
            .iter()
            .map(|d| DeviceKeys { device: d.device, kex_pub: d.kex_pub, kex_sig: d.kex_sig.as_deref() })
            .collect();
        Fingerprint::new(&user.sign_pub, &keys)
    }

    /// The 30 digits.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

/// The safety number of a pair of accounts: both fingerprints, lower
/// first, so both people see the same 60 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// The number for the pair `a`, `b` (in either order).
    pub fn new(a: &Fingerprint, b: &Fingerprint) -> SafetyNumber {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        SafetyNumber(format!("{}{}", lo.digits(), hi.digits()))
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// 12 groups of 5 digits separated by spaces.
    pub fn grouped(&self) -> String {
        let groups: Vec<&str> =
            (0..self.0.len()).step_by(5).map(|i| &self.0[i..(i + 5).min(self.0.len())]).collect();
        groups.join(" ")
    }

    /// The compact form a QR code carries: `unibus://safety/1/<60 digits>`.
    pub fn qr_text(&self) -> String {
        format!("{SAFETY_QR_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.grouped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::sign_binding;
    use crate::ids::{Actor, InviteId, Timestamp};
    use crate::records::{Device, DeviceStatus, Role, Via};
    use ed25519_dalek::SigningKey;

    /// A device of `account` made from `seed`, with a real binding.
    fn device(account: Key, seed: u8, seq: u32) -> Device {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let device = Key::from_bytes(key.verifying_key().to_bytes());
        let kex_pub = Key::from_bytes([seed.wrapping_add(100); 32]);
        let kex_sig = Some(sign_binding(&key, &account.to_hex(), &kex_pub.to_hex()).to_string());
        let via = if seq == 1 { Via::Invite } else { Via::Device };
        Device {
            v: 1,
            name: device.to_hex()[..8].to_string(),
            device,
            account,
            seq,
            kex_pub,
            kex_sig,
            status: DeviceStatus::Active,
            added_at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            added_by: Actor::Invite,
            via,
            revoked_at: None,
            revoked_by: None,
        }
    }

    /// An account whose first device is made from `seed`, with `more`
    /// devices after it.
    fn account(seed: u8, more: &[u8]) -> User {
        let id = Key::from_bytes(SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes());
        let invite = InviteId::parse(&"ab".repeat(32)).unwrap();
        let mut user = User::new_active(device(id, seed, 1), "x", Role::Member, Actor::Bootstrap, invite);
        for (i, s) in more.iter().enumerate() {
            user.devices.push(device(id, *s, 2 + i as u32));
        }
        user.refresh_account_keys();
        user
    }

    #[test]
    fn digits_have_the_documented_shape() {
        let fp = Fingerprint::of_user(&account(1, &[2]));
        assert_eq!(fp.digits().len(), FINGERPRINT_DIGITS);
        assert!(fp.digits().bytes().all(|b| b.is_ascii_digit()));
        let n = SafetyNumber::new(&fp, &Fingerprint::of_user(&account(3, &[])));
        assert_eq!(n.digits().len(), 60);
        let grouped = n.grouped();
        let groups: Vec<&str> = grouped.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 5));
        assert_eq!(n.qr_text(), format!("{SAFETY_QR_PREFIX}{}", n.digits()));
        assert_eq!(n.to_string(), n.grouped());
    }

    /// Alice about bob and bob about alice see the same number; the record
    /// and the lookup view of it give the same fingerprint.
    #[test]
    fn same_number_on_both_sides() {
        let (alice, bob) = (account(1, &[2]), account(3, &[4, 5]));
        let a_about_b =
            SafetyNumber::new(&Fingerprint::of_user(&alice), &Fingerprint::of_public(&bob.clone().into()));
        let b_about_a =
            SafetyNumber::new(&Fingerprint::of_user(&bob), &Fingerprint::of_public(&alice.clone().into()));
        assert_eq!(a_about_b, b_about_a);
        assert_eq!(Fingerprint::of_user(&alice), Fingerprint::of_public(&alice.into()));
    }

    #[test]
    fn stable_across_device_order() {
        let user = account(1, &[2, 3]);
        let mut reordered = user.clone();
        reordered.devices.reverse();
        assert_eq!(Fingerprint::of_user(&user), Fingerprint::of_user(&reordered));
    }

    #[test]
    fn changes_when_a_device_is_added_or_revoked() {
        let before = account(1, &[2]);
        let added = account(1, &[2, 3]);
        assert_ne!(Fingerprint::of_user(&before), Fingerprint::of_user(&added));
        let mut revoked = added.clone();
        revoked.devices[2].status = DeviceStatus::Revoked;
        assert_eq!(
            Fingerprint::of_user(&revoked),
            Fingerprint::of_user(&before),
            "revoked devices do not count"
        );
        revoked.devices[1].status = DeviceStatus::Revoked;
        assert_ne!(Fingerprint::of_user(&revoked), Fingerprint::of_user(&before));
    }

    #[test]
    fn changes_when_a_kex_pub_or_binding_changes() {
        let user = account(1, &[2]);
        let base = Fingerprint::of_user(&user);
        let mut swapped = user.clone();
        swapped.devices[1].kex_pub = Key::from_bytes([9u8; 32]);
        assert_ne!(Fingerprint::of_user(&swapped), base);
        let mut unbound = user.clone();
        unbound.devices[1].kex_sig = None;
        assert_ne!(Fingerprint::of_user(&unbound), base);
        let mut resigned = user.clone();
        resigned.devices[1].kex_sig = user.devices[0].kex_sig.clone();
        assert_ne!(Fingerprint::of_user(&resigned), base);
        // Another account id with the same devices.
        let mut other = user;
        other.sign_pub = Key::from_bytes([7u8; 32]);
        assert_ne!(Fingerprint::of_user(&other), base);
    }

    /// A fixed vector (checked against an independent Python version of
    /// the documented steps): other clients must show these digits for
    /// these values, so the computation may not drift.
    #[test]
    fn known_answer() {
        let key = |c: &str| Key::parse(&c.repeat(64)).unwrap();
        let sig = "c".repeat(88);
        let fp = Fingerprint::new(
            &key("1"),
            &[DeviceKeys { device: key("a"), kex_pub: key("b"), kex_sig: Some(&sig) }],
        );
        let empty = Fingerprint::new(&key("2"), &[]);
        assert_eq!(
            (fp.digits(), empty.digits()),
            ("704946596491122900382925243491", "662381092903669377518633421755")
        );
    }

    #[test]
    fn message_is_length_prefixed_and_sorted() {
        let key = |b: u8| Key::from_bytes([b; 32]);
        let hex = |b: u8| hex::encode([b; 32]).into_bytes();
        let (a, b) = (
            DeviceKeys { device: key(0xbb), kex_pub: key(1), kex_sig: None },
            DeviceKeys { device: key(0xaa), kex_pub: key(2), kex_sig: Some("s") },
        );
        let m = fingerprint_message(&key(0xcc), &[a, b]);
        let mut want = vec![0, 0, 0, 15];
        want.extend_from_slice(b"unibus-safety/1");
        want.extend_from_slice(&[0, 0, 0, 64]);
        want.extend(hex(0xcc));
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 2]);
        for (device, kex, sig) in [(0xaa, 2, &b"s"[..]), (0xbb, 1, &b""[..])] {
            want.extend_from_slice(&[0, 0, 0, 64]);
            want.extend(hex(device));
            want.extend_from_slice(&[0, 0, 0, 64]);
            want.extend(hex(kex));
            want.extend_from_slice(&u32::try_from(sig.len()).unwrap().to_be_bytes());
            want.extend_from_slice(sig);
        }
        assert_eq!(m, want);
    }
}
