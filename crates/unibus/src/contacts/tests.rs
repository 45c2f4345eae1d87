//! Device sets as a client sees them: bindings checked, changes reported,
//! a changed `kex_pub` refused, the file round trip.

use super::*;
use crate::Identity;

fn device(account: &Identity, d: &Identity, seq: u32, via: Via) -> PublicDevice {
    let account = account.sign_pub_hex();
    PublicDevice {
        device: d.sign_key(),
        kex_pub: d.kex_key(),
        kex_sig: Some(d.bind(&account).to_string()),
        seq,
        via,
    }
}

fn user(account: &Identity, devices: Vec<PublicDevice>) -> PublicUser {
    PublicUser {
        sign_pub: account.sign_key(),
        kex_pub: devices.first().map(|d| d.kex_pub),
        kex_sig: devices.first().and_then(|d| d.kex_sig.clone()),
        name: "alice".into(),
        status: UserStatus::Active,
        devices,
        device_list: None,
        device_lists: None,
    }
}

/// Gained, lost and recovery devices are reported after the first sight
/// (which reports nothing); the set seals to every active device.
#[test]
fn changes_are_reported_after_the_first_sight() {
    let (phone, laptop, spare) = (Identity::generate(), Identity::generate(), Identity::generate());
    let mut c = Contacts::default();
    let one = user(&phone, vec![device(&phone, &phone, 1, Via::Invite)]);
    assert_eq!(c.observe(&one, &[]).recipients().unwrap().len(), 1);
    assert!(c.take_changes().is_empty());
    let two =
        user(&phone, vec![device(&phone, &phone, 1, Via::Invite), device(&phone, &laptop, 2, Via::Device)]);
    assert_eq!(c.observe(&two, &[]).recipients().unwrap().len(), 2);
    let account = phone.sign_pub_hex();
    let gained = DeviceChange::Gained {
        account: account.clone(),
        device: laptop.sign_pub_hex(),
        via: Via::Device,
        bound: true,
    };
    assert_eq!(c.take_changes(), vec![gained]);
    // The phone is lost; an admin recovers the account onto a spare.
    let recovered = user(&phone, vec![device(&phone, &spare, 3, Via::Recovery)]);
    let set = c.observe(&recovered, &[]);
    assert_eq!(set.sender(&spare.sign_pub_hex()), Ok(()));
    assert_eq!(set.sender(&phone.sign_pub_hex()), Err(Reject::SenderDevice));
    let changes = c.take_changes();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(changes[0].is_recovery());
    assert!(changes.contains(&DeviceChange::Lost { account: account.clone(), device: phone.sign_pub_hex() }));
    assert!(c.accounts[&account].devices[&spare.sign_pub_hex()].is_recovery());
    assert!(!c.accounts[&account].devices[&phone.sign_pub_hex()].active);
}

/// A binding made for another account, or one that does not verify, is
/// refused before sealing and as a sender; an unbound (pre-binding)
/// device is allowed and shown as unbound.
#[test]
fn bindings_are_verified_and_null_is_unbound() {
    let (alice, bob, laptop) = (Identity::generate(), Identity::generate(), Identity::generate());
    let mut c = Contacts::default();
    // laptop's binding names bob's account, but alice's record lists it.
    let mut stolen = device(&bob, &laptop, 2, Via::Device);
    stolen.device = laptop.sign_key();
    let set = c.observe(&user(&alice, vec![device(&alice, &alice, 1, Via::Invite), stolen]), &[]);
    let refused = DeviceRefused::Binding { account: alice.sign_pub_hex(), device: laptop.sign_pub_hex() };
    assert_eq!(set.recipients().err(), Some(refused));
    assert_eq!(set.sender(&laptop.sign_pub_hex()), Err(Reject::SenderBinding));
    assert_eq!(set.sender(&alice.sign_pub_hex()), Ok(()));
    assert!(!c.accounts[&alice.sign_pub_hex()].devices.contains_key(&laptop.sign_pub_hex()));
    // A record from before bindings: sealable, flagged unbound.
    let mut old = device(&bob, &bob, 1, Via::Invite);
    old.kex_sig = None;
    let set = c.observe(&user(&bob, vec![old]), &[]);
    assert_eq!(set.recipients().unwrap().len(), 1);
    assert!(!set.devices[0].bound && !c.accounts[&bob.sign_pub_hex()].devices[&bob.sign_pub_hex()].bound);
    // A server from before devices: the account key is its one device.
    let mut legacy = user(&bob, vec![device(&bob, &bob, 1, Via::Invite)]);
    legacy.devices.clear();
    assert_eq!(
        Contacts::default().observe(&legacy, &[]).recipients().unwrap()[0].sign_pub,
        bob.sign_pub_hex()
    );
}

/// A known device showing up with another `kex_pub` (even with a binding
/// that verifies) is refused for sealing; the first key is kept.
#[test]
fn a_changed_kex_pub_is_refused() {
    let alice = Identity::generate();
    let mut c = Contacts::default();
    let first = device(&alice, &alice, 1, Via::Invite);
    c.observe(&user(&alice, vec![first.clone()]), &[]);
    let other = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
    let other = unibus_proto::Key::from_bytes(*other.as_bytes());
    let sig = unibus_proto::binding::sign_binding(&alice.signing, &alice.sign_pub_hex(), &other.to_hex());
    let swapped = PublicDevice { kex_pub: other, kex_sig: Some(sig.to_string()), ..first.clone() };
    let set = c.observe(&user(&alice, vec![swapped]), &[]);
    let refused = DeviceRefused::KexChanged { account: alice.sign_pub_hex(), device: alice.sign_pub_hex() };
    assert_eq!(set.recipients().err(), Some(refused));
    assert_eq!(set.sender(&alice.sign_pub_hex()), Ok(()), "its signatures are still its own");
    assert_eq!(c.accounts[&alice.sign_pub_hex()].devices[&alice.sign_pub_hex()].kex_pub, first.kex_pub);
    assert!(c.take_changes().is_empty());
}

/// Saved and loaded next to the identity; a missing file is empty; the
/// loaded set still refuses a changed key.
#[test]
fn file_round_trip() {
    let dir = std::env::temp_dir().join(format!(
        "unibus-contacts-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = Contacts::path_for(&dir.join("me.seed"));
    assert!(path.to_string_lossy().ends_with("me.seed.contacts.json"));
    assert_eq!(Contacts::load(&path).unwrap(), Contacts::default());
    let alice = Identity::generate();
    let mut c = Contacts::default();
    c.observe(&user(&alice, vec![device(&alice, &alice, 1, Via::Invite)]), &[]);
    c.save(&path).unwrap();
    let back = Contacts::load(&path).unwrap();
    assert_eq!(back.accounts, c.accounts);
    std::fs::write(&path, b"not json").unwrap();
    assert!(matches!(Contacts::load(&path), Err(ContactsError::Format(..))));
    std::fs::remove_dir_all(dir).unwrap();
}
