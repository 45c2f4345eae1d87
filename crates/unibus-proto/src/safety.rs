//! Safety numbers (docs/client.md, DESIGN section 11): what two people
//! compare in person to know that the account key each of them sees for
//! the other is the one the other really has.
//!
//! An account's **fingerprint** is computed over its id (the account key,
//! its first device's Ed25519 key) alone:
//!
//! ```text
//! m  = enc("unibus-safety/2") enc(account)
//! h0 = SHA-256(m);  h(i+1) = SHA-256(h(i) || m)   (5200 rounds in all)
//! ```
//!
//! with `enc(x)` = 4-byte big-endian length and the bytes of `x` (the
//! account as 64 lowercase hex), as in [`crate::binding`]. The first 30
//! bytes of the last hash, as six 5-byte big-endian numbers mod 100000,
//! give 30 digits. A pair's **safety number** is the two accounts' 30
//! digits in ascending order: 60 digits in 12 groups of 5, the same on
//! both sides (as Signal's). The iteration makes a search for another key
//! with the same digits costlier.
//!
//! The devices are not in it: each account's devices are on its device
//! list, signed back to the account key ([`crate::devicelist`]), which
//! clients check step by step. So the number stays the same while each
//! account adds and revokes its devices itself, and users learn to take a
//! change of it seriously. (Version 1 of this number, `unibus-safety/1`,
//! covered every active device and changed with each of them.)

use sha2::{Digest as _, Sha256};

use crate::ids::Key;
use crate::records::User;
use crate::wire::PublicUser;

/// Domain label of the fingerprint message.
pub const SAFETY_LABEL: &str = "unibus-safety/2";
/// SHA-256 rounds (Signal uses 5200 of SHA-512).
pub const ITERATIONS: u32 = 5200;
/// Digits of one account's fingerprint.
pub const FINGERPRINT_DIGITS: usize = 30;
/// Prefix of the compact string a QR code carries.
pub const SAFETY_QR_PREFIX: &str = "unibus://safety/2/";

/// Appends `enc(x)`: a 4-byte big-endian length, then the bytes.
fn enc(out: &mut Vec<u8>, x: &[u8]) {
    let len = u32::try_from(x.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// The exact bytes an account's fingerprint hashes.
pub fn fingerprint_message(account: &Key) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + SAFETY_LABEL.len() + 4 + 64);
    enc(&mut m, SAFETY_LABEL.as_bytes());
    enc(&mut m, account.to_hex().as_bytes());
    m
}

/// An account's fingerprint: 30 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of `account`.
    pub fn new(account: &Key) -> Fingerprint {
        let m = fingerprint_message(account);
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

    /// The fingerprint of an account record.
    pub fn of_user(user: &User) -> Fingerprint {
        Fingerprint::new(&user.sign_pub)
    }

    /// The fingerprint of a looked-up account; the same as
    /// [`Fingerprint::of_user`] of the record behind it.
    pub fn of_public(user: &PublicUser) -> Fingerprint {
        Fingerprint::new(&user.sign_pub)
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

    /// The compact form a QR code carries: `unibus://safety/2/<60 digits>`.
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
    use crate::ids::{Actor, InviteId};
    use crate::records::{Device, DeviceStatus, Role};
    use ed25519_dalek::SigningKey;

    /// An account whose first device is made from `seed`, with `more`
    /// devices after it.
    fn account(seed: u8, more: &[u8]) -> User {
        let key = |s: u8| Key::from_bytes(SigningKey::from_bytes(&[s; 32]).verifying_key().to_bytes());
        let id = key(seed);
        let invite = InviteId::parse(&"ab".repeat(32)).unwrap();
        let mut user = User::new_active(
            Device::first(id, Key::from_bytes([seed; 32]), None),
            "x",
            Role::Member,
            Actor::Bootstrap,
            invite,
        );
        for (i, s) in more.iter().enumerate() {
            let mut d = Device::first(key(*s), Key::from_bytes([*s; 32]), None);
            (d.account, d.seq) = (id, 2 + i as u32);
            user.devices.push(d);
        }
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

    /// Devices added or revoked do not change it; another account key
    /// does.
    #[test]
    fn only_the_account_key_counts() {
        let before = account(1, &[2]);
        let base = Fingerprint::of_user(&before);
        assert_eq!(Fingerprint::of_user(&account(1, &[2, 3])), base, "a device added");
        let mut revoked = before.clone();
        revoked.devices[1].status = DeviceStatus::Revoked;
        assert_eq!(Fingerprint::of_user(&revoked), base, "a device revoked");
        assert_ne!(Fingerprint::of_user(&account(7, &[2])), base, "another account");
    }

    /// A fixed vector (checked against an independent Python version of
    /// the documented steps): other clients must show these digits for
    /// these values, so the computation may not drift.
    #[test]
    fn known_answer() {
        let key = |c: &str| Key::parse(&c.repeat(64)).unwrap();
        assert_eq!(
            (Fingerprint::new(&key("1")).digits(), Fingerprint::new(&key("2")).digits()),
            ("957269185721426380311872424831", "374675307897826401032107856266")
        );
    }

    #[test]
    fn message_is_length_prefixed() {
        let m = fingerprint_message(&Key::from_bytes([0xcc; 32]));
        let mut want = vec![0, 0, 0, 15];
        want.extend_from_slice(b"unibus-safety/2");
        want.extend_from_slice(&[0, 0, 0, 64]);
        want.extend(hex::encode([0xcc; 32]).into_bytes());
        assert_eq!(m, want);
    }
}
