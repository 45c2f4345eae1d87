use super::*;
use crate::binding::sign_binding;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn hex_of(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

/// A device `n` of `account`, bound to it.
fn listed(account: &str, n: u8) -> ListedDevice {
    let kex_pub = hex::encode([n.wrapping_add(100); 32]);
    let sig = sign_binding(&key(n), account, &kex_pub);
    ListedDevice { device: hex_of(&key(n)), kex_pub, kex_sig: Some(sig.as_str().to_string()) }
}

/// Version 1 of the account of key 1, then key 2 added by key 1.
fn two_versions() -> (DeviceList, DeviceList) {
    let account = hex_of(&key(1));
    let v1 = DeviceList::sign(&account, 1, String::new(), vec![listed(&account, 1)], &key(1), By::Device);
    let v2 = v1.next(vec![listed(&account, 1), listed(&account, 2)], &key(1), By::Device);
    (v1, v2)
}

#[test]
fn signed_bytes_are_the_length_prefixed_fields_in_order() {
    let account = "ab".repeat(32);
    let list = DeviceList {
        account: account.clone(),
        version: 12,
        prev: "cd".repeat(32),
        devices: vec![ListedDevice { device: "ef".repeat(32), kex_pub: "01".repeat(32), kex_sig: None }],
        signer: "ef".repeat(32),
        by: By::Admin,
        sig: String::new(),
    };
    let mut want = Vec::new();
    for field in [
        LIST_LABEL,
        &account,
        "12",
        &"cd".repeat(32),
        "1",
        &"ef".repeat(32),
        &"01".repeat(32),
        "",
        &"ef".repeat(32),
        "admin",
    ] {
        want.extend_from_slice(&(field.len() as u32).to_be_bytes());
        want.extend_from_slice(field.as_bytes());
    }
    assert_eq!(list.signed_bytes(), want);
    // The first byte is zero: no NATS nonce a device signs can be one.
    assert_eq!(list.signed_bytes()[0], 0);
}

/// Known answer: a fixed version 1 and its successor, signed with fixed
/// keys, keep their signed bytes' hash and their signatures (Ed25519 is
/// deterministic). A change to the encoding breaks every client's pins.
#[test]
fn known_answer() {
    let (v1, v2) = two_versions();
    assert_eq!(v1.hash(), KAT_V1_HASH);
    assert_eq!(v1.sig, KAT_V1_SIG);
    assert_eq!(v2.prev, KAT_V1_HASH);
    assert_eq!(v2.hash(), KAT_V2_HASH);
}

const KAT_V1_HASH: &str = "cdc73253984c9d4c1087dcc02d71293db749ec1b37115ff2121395c83ed4c35a";
const KAT_V1_SIG: &str =
    "kJe7A95gVrClppcYQbArJzpTKw39kOYBk4jhX3XhSUa/NU8ve+pVqHNgRSWZKv5HTl3+KKJnuxue+po60u3DDg==";
const KAT_V2_HASH: &str = "33dfb34475f9857a2f220213b00d042b10f0d9187113e303b3f459bd8f434f71";

#[test]
fn a_list_round_trips_as_json_and_unknown_fields_are_refused() {
    let (_, v2) = two_versions();
    let text = serde_json::to_string(&v2).unwrap();
    let back: DeviceList = serde_json::from_str(&text).unwrap();
    assert_eq!(back, v2);
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    let mut extra: serde_json::Value = serde_json::from_str(&text).unwrap();
    extra["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<DeviceList>(extra).is_err());
    let mut by: serde_json::Value = serde_json::from_str(&text).unwrap();
    by["by"] = serde_json::json!("server");
    assert!(serde_json::from_value::<DeviceList>(by).is_err());
}

#[test]
fn checks_refuse_what_is_out_of_shape_or_badly_signed() {
    let (v1, v2) = two_versions();
    v1.check().unwrap();
    v2.check().unwrap();
    let bad = |edit: &dyn Fn(&mut DeviceList)| {
        let mut l = v2.clone();
        edit(&mut l);
        l.check()
    };
    let shape = |r: Result<(), ListError>| matches!(r, Err(ListError::Shape(_)));
    assert!(shape(bad(&|l| l.account = l.account.to_uppercase())), "uppercase hex");
    assert!(shape(bad(&|l| l.signer.push('0'))), "long signer");
    assert!(shape(bad(&|l| l.version = 0)), "version 0");
    assert!(shape(bad(&|l| l.prev = String::new())), "no prev after version 1");
    assert!(shape(bad(&|l| l.prev = l.prev.to_uppercase())), "uppercase prev");
    // A later version may be empty (an admin revoked the last device); its
    // signature no longer verifies once edited, but its shape passes.
    assert!(matches!(bad(&|l| l.devices.clear()), Err(ListError::BadSignature)), "empty later version");
    let mut empty_v1 = v1.clone();
    empty_v1.devices.clear();
    assert!(shape(empty_v1.check()), "version 1 without devices");
    assert!(shape(bad(&|l| l.devices.push(l.devices[0].clone()))), "a device twice");
    assert!(shape(bad(&|l| l.devices[0].kex_sig = Some("x".into()))), "kex_sig not a binding");
    assert!(shape(bad(&|l| l.sig = l.sig.trim_end_matches('=').to_string())), "unpadded sig");
    let mut v1_with_prev = v1.clone();
    v1_with_prev.prev = "ab".repeat(32);
    assert!(shape(v1_with_prev.check()), "prev on version 1");
    let nine: Vec<ListedDevice> = (1..=9).map(|n| listed(&v1.account, n)).collect();
    let big = DeviceList::sign(&v1.account, 1, String::new(), nine, &key(1), By::Device);
    assert!(shape(big.check()), "nine devices");

    let sig_err = |r: Result<(), ListError>| r == Err(ListError::BadSignature);
    assert!(sig_err(bad(&|l| l.version += 1)), "a field changed after signing");
    assert!(sig_err(bad(&|l| l.by = By::Admin)), "by changed after signing");
    assert!(sig_err(bad(&|l| l.signer = hex_of(&key(2)))), "another signer named");
    assert!(sig_err(bad(&|l| l.devices[1].kex_sig = None)), "a binding dropped");
    // A small-order signer key is refused whatever the signature.
    assert!(sig_err(bad(&|l| l.signer = format!("01{}", "00".repeat(31)))), "small-order signer");
}

#[test]
fn a_step_is_one_device_added_at_the_end_or_removed() {
    let (v1, v2) = two_versions();
    let step = v2.step_from(&v1).unwrap();
    assert_eq!(step.change, Change::Added(listed(&v1.account, 2)));
    assert_eq!((step.by, step.signer_listed_before), (By::Device, true));

    // Three devices, then the middle one removes itself.
    let acct = v1.account.clone();
    let v3 = v2.next(vec![listed(&acct, 1), listed(&acct, 2), listed(&acct, 3)], &key(2), By::Device);
    let v4 = v3.next(vec![listed(&acct, 1), listed(&acct, 3)], &key(2), By::Device);
    let step = v4.step_from(&v3).unwrap();
    assert_eq!(step.change, Change::Removed(hex_of(&key(2))));
    assert!(step.signer_listed_before, "a device removing itself was on the list before");

    // An admin's device removes one: not on the list, by admin.
    let v5 = v4.next(vec![listed(&acct, 1)], &key(9), By::Admin);
    let step = v5.step_from(&v4).unwrap();
    assert_eq!((step.by, step.signer_listed_before), (By::Admin, false));
    // A device the list never had, added by itself: not listed before.
    let v6 = v5.next(vec![listed(&acct, 1), listed(&acct, 7)], &key(7), By::Device);
    assert!(!v6.step_from(&v5).unwrap().signer_listed_before);
}

#[test]
fn a_step_that_does_not_continue_is_stale_and_any_other_change_refused() {
    let (v1, v2) = two_versions();
    let acct = v1.account.clone();
    let stale = |r: Result<Step, ListError>| matches!(r, Err(ListError::Stale(_)));
    let change = |r: Result<Step, ListError>| matches!(r, Err(ListError::Change(_)));
    // Built on version 1 again, when version 2 is current.
    let again = v1.next(vec![listed(&acct, 1), listed(&acct, 3)], &key(1), By::Device);
    assert!(stale(again.step_from(&v2)), "same version as the current one");
    let mut skip = v2.next(vec![listed(&acct, 1)], &key(1), By::Device);
    skip.version += 1;
    assert!(stale(skip.step_from(&v2)), "a version skipped");
    let mut wrong_prev = v2.next(vec![listed(&acct, 1)], &key(1), By::Device);
    wrong_prev.prev = v1.hash();
    assert!(stale(wrong_prev.step_from(&v2)), "prev of an older version");
    let other = DeviceList::first(
        &key(5),
        &"05".repeat(32),
        sign_binding(&key(5), &hex_of(&key(5)), &"05".repeat(32)).as_str(),
    );
    assert!(stale(other.step_from(&v1)), "another account");
    let err: Error = stale_error(&again, &v2);
    assert_eq!(err.code(), "stale_devices");

    let two_added = v2.next(
        vec![listed(&acct, 1), listed(&acct, 2), listed(&acct, 3), listed(&acct, 4)],
        &key(1),
        By::Device,
    );
    assert!(change(two_added.step_from(&v2)), "two added");
    let swapped = v2.next(vec![listed(&acct, 1), listed(&acct, 3)], &key(1), By::Device);
    assert!(change(swapped.step_from(&v2)), "one removed and one added");
    let same = v2.next(v2.devices.clone(), &key(1), By::Device);
    assert!(change(same.step_from(&v2)), "no change");
    let reordered = v2.next(vec![listed(&acct, 3), listed(&acct, 1), listed(&acct, 2)], &key(1), By::Device);
    assert!(change(reordered.step_from(&v2)), "added first instead of last");
    let mut rebound = listed(&acct, 1);
    rebound.kex_pub = "99".repeat(32);
    let changed = v2.next(vec![rebound, listed(&acct, 2), listed(&acct, 3)], &key(1), By::Device);
    assert!(change(changed.step_from(&v2)), "a kept device's key changed");
    let err: Error = ListError::Change("x".into()).into();
    assert_eq!(err.code(), "bad_request");
}

fn stale_error(list: &DeviceList, before: &DeviceList) -> Error {
    list.step_from(before).unwrap_err().into()
}
