//! The list rules of docs/protocol.md section 11 on an account record,
//! without a server (the wire and KV side: tests/it/devicelists.rs).

use ed25519_dalek::SigningKey;
use unibus_proto::binding::sign_binding;
use unibus_proto::devicelist::{By, Change, DeviceList, ListedDevice};
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, InviteId, Key};
use unibus_proto::records::{Device, DeviceStatus, Role, User, Via};

use super::{ListChange, Listing, judge_signed_first};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn hex(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

fn as_key(k: &SigningKey) -> Key {
    Key::parse(&hex(k)).unwrap()
}

/// Device `k` of `account` as the account record and a list name it.
fn device(account: &SigningKey, k: &SigningKey, seq: u32) -> Device {
    let kex = hex::encode(x25519_dalek::x25519([seq as u8 + 100; 32], x25519_dalek::X25519_BASEPOINT_BYTES));
    let sig = sign_binding(k, &hex(account), &kex).to_string();
    let via = if seq == 1 { Via::Invite } else { Via::Device };
    let mut d =
        Device::joining(as_key(account), as_key(k), Key::parse(&kex).unwrap(), Some(sig), via, Actor::Invite);
    d.seq = seq;
    d
}

/// An account whose first device is `phone`, with its version 1.
fn account(phone: &SigningKey) -> User {
    let first = device(phone, phone, 1);
    let listed = first.listed();
    let list = DeviceList::first(phone, &listed.kex_pub, listed.kex_sig.as_deref().unwrap());
    User::new_active(
        first,
        "alice",
        Role::Member,
        Actor::Bootstrap,
        InviteId::parse(&"ab".repeat(32)).unwrap(),
    )
    .with_list(list)
}

fn add(user: &User, signer: &SigningKey, new: &Device, by: By) -> ListChange {
    let current = user.device_list.clone().unwrap();
    let mut devices = current.devices.clone();
    devices.push(new.listed());
    ListChange {
        list: current.next(devices, signer, by),
        caller: as_key(signer),
        by,
        change: Change::Added(new.listed()),
    }
}

fn bad(r: Result<(), Error>) -> bool {
    matches!(r, Err(Error::BadRequest(_)))
}

#[test]
fn a_device_adds_with_the_next_version_it_signs() {
    let phone = key(1);
    let user = account(&phone);
    let laptop = device(&phone, &key(2), 2);
    let good = add(&user, &phone, &laptop, By::Device);
    good.judge(&user).unwrap();

    // Signed by another key than the caller.
    let mut other = good.clone();
    other.caller = as_key(&key(9));
    assert!(bad(other.judge(&user)), "not the calling device");
    // A signer not on the list (and not a device of the account).
    let stranger = add(&user, &key(9), &laptop, By::Device);
    assert!(bad(stranger.judge(&user)), "signer not listed");
    // `by: admin` on one's own account.
    let mut admin = add(&user, &phone, &laptop, By::Admin);
    admin.by = By::Device;
    assert!(bad(admin.judge(&user)), "wrong by");
    // A list that adds another device than the request.
    let mut swapped = good.clone();
    swapped.change = Change::Added(device(&phone, &key(3), 2).listed());
    assert!(bad(swapped.judge(&user)), "another device");
    // A forged signature.
    let mut forged = good.clone();
    forged.list.version = 2;
    forged.list.sig = DeviceList::sign(&hex(&phone), 2, "cd".repeat(32), vec![], &phone, By::Device).sig;
    assert!(bad(forged.judge(&user)), "bad signature");
}

#[test]
fn a_list_built_on_a_replaced_version_is_stale() {
    let phone = key(1);
    let user = account(&phone);
    let laptop = device(&phone, &key(2), 2);
    let tablet = device(&phone, &key(3), 3);
    // Two adds built on version 1; the laptop lands first.
    let first = add(&user, &phone, &laptop, By::Device);
    let second = add(&user, &phone, &tablet, By::Device);
    let mut after = user.clone();
    after.devices.push(laptop.clone());
    after.device_list = Some(first.list.clone());
    assert!(matches!(second.judge(&after), Err(Error::StaleDevices(_))), "version 2 again");
    // Signed again on version 2, it lands.
    add(&after, &phone, &tablet, By::Device).judge(&after).unwrap();
    // A version 3 whose prev is not version 2's hash.
    let mut skewed = add(&after, &phone, &tablet, By::Device);
    skewed.list =
        DeviceList::sign(&hex(&phone), 3, "ab".repeat(32), skewed.list.devices.clone(), &phone, By::Device);
    assert!(matches!(skewed.judge(&after), Err(Error::StaleDevices(_))), "prev of another version");
}

#[test]
fn without_a_list_only_an_admin_acts() {
    let phone = key(1);
    let mut user = account(&phone);
    user.device_list = None;
    let laptop = device(&phone, &key(2), 2);
    let by_device = ListChange {
        list: DeviceList::sign(&hex(&phone), 1, String::new(), vec![laptop.listed()], &phone, By::Device),
        caller: as_key(&phone),
        by: By::Device,
        change: Change::Added(laptop.listed()),
    };
    assert!(bad(by_device.judge(&user)), "a device changes nothing before the list");
    assert!(bad(Listing::Missing { admin: false }.judge(&user)), "a device's revoke needs the list");
    Listing::Missing { admin: true }.judge(&user).unwrap();

    // Recovery: no active device left, version 1 signed by the admin.
    let admin = key(7);
    for d in &mut user.devices {
        d.status = DeviceStatus::Revoked;
    }
    let recovered = device(&phone, &key(4), 2);
    let recovery = ListChange {
        list: DeviceList::sign(&hex(&phone), 1, String::new(), vec![recovered.listed()], &admin, By::Admin),
        caller: as_key(&admin),
        by: By::Admin,
        change: Change::Added(recovered.listed()),
    };
    recovery.judge(&user).unwrap();
    let mut two = recovery.clone();
    two.list = DeviceList::sign(
        &hex(&phone),
        1,
        String::new(),
        vec![laptop.listed(), recovered.listed()],
        &admin,
        By::Admin,
    );
    assert!(bad(two.judge(&user)), "the new device alone");

    // Once a list exists, a missing one is refused, even from an admin.
    let user = account(&phone);
    assert!(bad(Listing::Missing { admin: true }.judge(&user)), "missing list");
}

#[test]
fn only_the_oldest_active_device_signs_the_first_list() {
    let phone = key(1);
    let mut user = account(&phone);
    user.device_list = None;
    let laptop = device(&phone, &key(2), 2);
    user.devices.push(laptop.clone());
    let listed: Vec<ListedDevice> = user.listed_devices();
    let by_phone = DeviceList::sign(&hex(&phone), 1, String::new(), listed.clone(), &phone, By::Device);
    judge_signed_first(&user, as_key(&phone), &by_phone).unwrap();
    let by_laptop = DeviceList::sign(&hex(&phone), 1, String::new(), listed.clone(), &key(2), By::Device);
    assert!(bad(judge_signed_first(&user, as_key(&key(2)), &by_laptop)), "not the oldest");
    let short = DeviceList::sign(&hex(&phone), 1, String::new(), listed[..1].to_vec(), &phone, By::Device);
    assert!(bad(judge_signed_first(&user, as_key(&phone), &short)), "not every active device");
    // The phone gone, the laptop is the oldest active device.
    user.devices[0].status = DeviceStatus::Revoked;
    let laptop_only =
        DeviceList::sign(&hex(&phone), 1, String::new(), vec![laptop.listed()], &key(2), By::Device);
    judge_signed_first(&user, as_key(&key(2)), &laptop_only).unwrap();
}
