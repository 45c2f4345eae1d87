//! How far a client follows a contact's list by itself.

use unibus_proto::devicelist::{By, DeviceList, ListedDevice};

use super::{Hold, ListNotice, judge};
use crate::Identity;

/// An account (its first device), and its version 1.
fn account() -> (Identity, String, DeviceList) {
    let phone = Identity::generate();
    let account = phone.sign_pub_hex();
    let v1 = phone.first_device_list();
    (phone, account, v1)
}

fn device_of(account: &str) -> (Identity, ListedDevice) {
    let id = Identity::generate().with_account(account).unwrap();
    let listed = id.listed();
    (id, listed)
}

fn plus(l: &DeviceList, d: &ListedDevice, signer: &Identity, by: By) -> DeviceList {
    let mut devices = l.devices.clone();
    devices.push(d.clone());
    signer.next_device_list(l, devices, by)
}

fn minus(l: &DeviceList, gone: &str, signer: &Identity, by: By) -> DeviceList {
    signer.next_device_list(l, l.devices.iter().filter(|d| d.device != gone).cloned().collect(), by)
}

#[test]
fn steps_signed_by_listed_devices_are_followed_silently() {
    let (phone, account, v1) = account();
    let (laptop, laptop_l) = device_of(&account);
    let v2 = plus(&v1, &laptop_l, &phone, By::Device);
    let (_, tablet_l) = device_of(&account);
    let v3 = plus(&v2, &tablet_l, &laptop, By::Device);
    let v4 = minus(&v3, &phone.sign_pub_hex(), &laptop, By::Device);
    let all = [v1.clone(), v2.clone(), v3.clone(), v4.clone()];
    let first = judge(&account, None, &all, &v4);
    assert_eq!((first.accepted.as_ref(), &first.hold, first.notices.len()), (Some(&v4), &None, 0));
    // From a pin, across three steps (a contact that was away).
    let away = judge(&account, Some(&v1), &all[1..], &v4);
    assert_eq!((away.accepted.as_ref(), away.hold), (Some(&v4), None));
    // Nothing new.
    assert_eq!(judge(&account, Some(&v4), &[], &v4).hold, None);
}

#[test]
fn an_admin_removal_is_a_notice_an_admin_add_a_hold() {
    let (phone, account, v1) = account();
    let admin = Identity::generate();
    let (_, laptop_l) = device_of(&account);
    let v2 = plus(&v1, &laptop_l, &phone, By::Device);
    let v3 = minus(&v2, &phone.sign_pub_hex(), &admin, By::Admin);
    let removed = judge(&account, Some(&v2), std::slice::from_ref(&v3), &v3);
    assert_eq!(removed.accepted.as_ref(), Some(&v3));
    assert_eq!(removed.notices, vec![ListNotice::AdminRemoved { version: 3, device: phone.sign_pub_hex() }]);
    let (_, new_l) = device_of(&account);
    let v4 = plus(&v3, &new_l, &admin, By::Admin);
    let recovered = judge(&account, Some(&v2), &[v3.clone(), v4.clone()], &v4);
    assert_eq!(recovered.accepted.as_ref(), Some(&v3), "followed up to the recovery");
    assert_eq!(recovered.hold, Some(Hold::Recovery { version: 4, device: new_l.device.clone() }));
}

#[test]
fn what_does_not_verify_or_follow_holds() {
    let (phone, account, v1) = account();
    let (_, laptop_l) = device_of(&account);
    let stranger = Identity::generate();
    // A ghost's step: signed "by device" by a key not on the list.
    let ghost = plus(&v1, &laptop_l, &stranger, By::Device);
    let held = judge(&account, Some(&v1), std::slice::from_ref(&ghost), &ghost);
    assert!(matches!(held.hold, Some(Hold::Unlisted { version: 2, .. })), "{:?}", held.hold);
    assert_eq!(held.accepted.as_ref(), Some(&v1));
    // A forged signature.
    let mut forged = plus(&v1, &laptop_l, &phone, By::Device);
    forged.devices[1].kex_pub = "11".repeat(32);
    assert!(matches!(
        judge(&account, Some(&v1), std::slice::from_ref(&forged), &forged).hold,
        Some(Hold::Invalid { version: 2, .. })
    ));
    // Going back, forking, a gap.
    let v2 = plus(&v1, &laptop_l, &phone, By::Device);
    assert_eq!(judge(&account, Some(&v2), &[], &v1).hold, Some(Hold::Rollback { shown: 1, pinned: 2 }));
    let (_, other_l) = device_of(&account);
    let fork = plus(&v1, &other_l, &phone, By::Device);
    assert_eq!(judge(&account, Some(&v2), &[], &fork).hold, Some(Hold::Forked { version: 2 }));
    let v3 = plus(&v2, &other_l, &phone, By::Device);
    assert_eq!(judge(&account, Some(&v1), &[], &v3).hold, Some(Hold::Gap { reached: 1, shown: 3 }));
    assert!(
        matches!(
            judge(&account, Some(&v1), std::slice::from_ref(&v3), &v3).hold,
            Some(Hold::Invalid { version: 3, .. })
        ),
        "v2 missing"
    );
    // Another account's list.
    let (_, other_account, w1) = account_for_test();
    assert_ne!(other_account, account);
    assert!(judge(&account, None, std::slice::from_ref(&w1), &w1).hold.is_some());
}

#[test]
fn version_1_is_the_account_keys_unless_shown_otherwise() {
    let (phone, account, v1) = account();
    assert_eq!(judge(&account, None, std::slice::from_ref(&v1), &v1).accepted, Some(v1.clone()));
    // Signed by another device it lists (unibus.device.sign of an older
    // account whose first device is gone): followed, with a notice.
    let (laptop, laptop_l) = device_of(&account);
    let by_laptop = laptop.sign_device_list(&account, 1, String::new(), vec![laptop_l.clone()], By::Device);
    let v = judge(&account, None, std::slice::from_ref(&by_laptop), &by_laptop);
    assert_eq!(v.notices, vec![ListNotice::FirstSignedBy { signer: laptop.sign_pub_hex() }]);
    assert_eq!(v.accepted, Some(by_laptop));
    // By an admin (a recovery of an account from before lists): held.
    let admin = Identity::generate();
    let by_admin = admin.sign_device_list(&account, 1, String::new(), vec![laptop_l.clone()], By::Admin);
    let v = judge(&account, None, std::slice::from_ref(&by_admin), &by_admin);
    assert_eq!((v.accepted, v.hold), (None, Some(Hold::AdminFirst)));
    // By a key it does not list.
    let by_stranger = admin.sign_device_list(&account, 1, String::new(), vec![laptop_l], By::Device);
    assert!(matches!(
        judge(&account, None, std::slice::from_ref(&by_stranger), &by_stranger).hold,
        Some(Hold::Invalid { .. })
    ));
    let _ = phone;
}

/// Another account's version 1 (for the tests above).
pub(super) fn account_for_test() -> (Identity, String, DeviceList) {
    account()
}
