//! The device rules of docs/protocol.md sections 8 and 9 where they must
//! hold over time, through a real nats-server: revocation is for good
//! (also after the account record has stopped listing the device, and for
//! a revoked record whose account is gone), the last active admin keeps a
//! device and a refusal writes nothing, an unlisted device record is denied
//! (never a guest), and the account keys follow the oldest active device.
//! Their races are in `device_races.rs`.

use crate::support::as_key;
use unibus::{Bundle, ClientError, Identity};
use unibus_proto::records::{Device, DeviceStatus, REVOKED_DEVICES_KEPT, Role, Via};
use unibus_proto::subjects::{BUCKET_DEVICES, BUCKET_USERS};
use unibus_proto::wire::InviteCreateRequest;

use crate::support::devices::{LAST_ADMIN_RACE, new_device, refused_with};
use crate::support::{Stack, code, expect_signed_denial_of};

/// A device revoked long ago, whose entry has scrolled off the account
/// record (it keeps the 32 most recent revoked devices), never comes back:
/// it is denied, cannot be added again (not even at the cap, where the
/// refusal must not free its record), and neither can the account's own
/// revoked key. Deleting the account removes those records too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_never_comes_back() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_bundle) = new_device(&alice, "laptop");
    phone.add_device(&laptop_bundle).await.unwrap();
    let (lost_id, lost) = new_device(&alice, "lost");
    phone.add_device(&lost).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    laptop.revoke_device(&lost.device).await.unwrap();
    phone.revoke_device(&alice).await.unwrap();
    let mut keys = vec![alice.clone(), laptop_id.sign_pub_hex(), lost.device.clone()];
    // 32 more revocations push both off the account record.
    for i in 0..REVOKED_DEVICES_KEPT {
        let (_, b) = new_device(&alice, &format!("d{i}"));
        laptop.add_device(&b).await.unwrap();
        laptop.revoke_device(&b.device).await.unwrap();
        keys.push(b.device);
    }
    let store = stack.store();
    let (user, _) = store.get_user(as_key(&alice)).await.unwrap().unwrap();
    for key in [&lost.device, &alice] {
        assert!(user.device(as_key(key)).is_none(), "{key} is still listed");
        let (record, _) = store.get_device(as_key(key)).await.unwrap().expect("the device record stays");
        assert_eq!(record.status, DeviceStatus::Revoked);
    }

    let mut errors = stack.auth_errors().await;
    for id in [&lost_id, &phone_id] {
        let reason = expect_signed_denial_of(&mut errors, &id.nkey_public(), stack.connect(id)).await;
        assert_eq!(reason, format!("user {} is revoked", id.sign_pub_hex()));
    }
    let before = stack.kv_snapshot().await;
    assert_eq!(code(laptop.add_device(&lost).await), "user_exists", "a revoked device added again");
    assert_eq!(code(laptop.add_device(&phone_id.bundle(None)).await), "user_exists", "the account's own key");
    assert_eq!(stack.kv_snapshot().await, before, "the refused adds changed KV");

    // At the cap the answer is the same, and the refusal frees nothing.
    for i in 0..7 {
        let (_, b) = new_device(&alice, &format!("e{i}"));
        laptop.add_device(&b).await.unwrap();
        keys.push(b.device);
    }
    let before = stack.kv_snapshot().await;
    assert_eq!(code(laptop.add_device(&lost).await), "user_exists", "at the cap");
    assert_eq!(stack.kv_snapshot().await, before, "the refused add at the cap changed KV");
    expect_signed_denial_of(&mut errors, &lost_id.nkey_public(), stack.connect(&lost_id)).await;

    // The account's delete removes every record of its devices, listed or
    // not; the keys are then unknown keys.
    drop(laptop);
    admin.delete_user(&alice).await.unwrap();
    for key in &keys {
        assert!(
            store.get_device(as_key(key)).await.unwrap().is_none(),
            "device record of {key} outlived its account"
        );
    }
    let guest = stack.connect(&lost_id).await.expect("an unknown key connects as a guest");
    assert!(matches!(guest.whoami().await, Err(ClientError::PermissionDenied(_))));
}

/// A revoked device record whose account is gone (a crash between the
/// account's delete and its devices' leaves one) is never taken over:
/// neither another account's add nor a registration of the key gets it,
/// and the record stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_orphan_record_is_never_taken_over() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_DEVICES).await.unwrap();
    let revoked = |key: &Identity, account: &str, seq: u32| {
        let mut d = Device::first(key.sign_key(), key.kex_key(), None);
        (d.account, d.seq, d.status) = (as_key(account), seq, DeviceStatus::Revoked);
        (d.revoked_at, d.revoked_by) = (Some(d.added_at), Some(unibus_proto::Actor::Key(as_key(account))));
        serde_json::to_vec(&d).unwrap()
    };
    // A device (seq 2) of a deleted account, and a deleted account's own key.
    let (device, own) = (Identity::generate(), Identity::generate());
    let gone = Identity::generate().sign_pub_hex();
    kv.create(&device.sign_pub_hex(), revoked(&device, &gone, 2).into()).await.unwrap();
    kv.create(&own.sign_pub_hex(), revoked(&own, &own.sign_pub_hex(), 1).into()).await.unwrap();

    let as_bobs = device.clone().with_account(&bob_id.sign_pub_hex()).unwrap();
    assert_eq!(code(bob.add_device(&as_bobs.bundle(None)).await), "user_exists");
    let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let guest = stack.connect(&own).await.expect("no account: a guest");
    assert_eq!(code(guest.register(&inv.token, None).await), "user_exists");
    for key in [&device, &own] {
        let (record, _) = stack.store().get_device(key.sign_key()).await.unwrap().expect("record stays");
        assert_eq!(record.status, DeviceStatus::Revoked);
    }
}

/// An admin revoking its own last device is refused while the only other
/// admin has no active device (an admin without one does not count), and
/// the refusal writes nothing at all (not even a write undone since). Once
/// the other admin has a device again, the revoke goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admins_last_device_stays_and_nothing_is_written() {
    let stack = Stack::start().await;
    let (root_id, root) = stack.admin().await;
    let root_key = root_id.sign_pub_hex();
    let (second_id, _second) = stack.user(&root, Role::Admin, "second").await;
    let second = second_id.sign_pub_hex();
    // The other admin loses its only device: allowed, root still has one.
    root.admin_revoke_device(&second, &second).await.unwrap();

    let before = stack.kv_snapshot().await;
    let refused = root.revoke_device(&root_key).await;
    assert_eq!(stack.kv_snapshot().await, before, "the refusal wrote to KV");
    assert!(refused_with(&refused, "last active admin"), "{refused:?}");
    assert!(!refused_with(&refused, LAST_ADMIN_RACE), "refused only after a write: {refused:?}");

    let (_, recovered) = new_device(&second, "second's new phone");
    root.admin_add_device(&recovered).await.unwrap();
    root.revoke_device(&root_key).await.expect("another admin has a device now");
    let (user, _) = stack.store().get_user(as_key(&root_key)).await.unwrap().unwrap();
    assert_eq!(user.active_devices().count(), 0);
}

/// A device record that its account does not list (what a crash between an
/// add's claim and its listing leaves) makes the key denied by a signed
/// denial, never a guest; the same add, done again, completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_device_record_is_denied_not_a_guest() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (key, bundle) = new_device(&alice, "cut");
    let claim = Device::joining(
        as_key(&alice),
        as_key(&bundle.device),
        as_key(&bundle.kex_pub),
        Some(bundle.kex_sig.clone()),
        Via::Device,
        unibus_proto::Actor::Key(as_key(&alice)),
    );
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_DEVICES).await.unwrap();
    kv.create(&bundle.device, serde_json::to_vec(&claim).unwrap().into()).await.unwrap();

    let mut errors = stack.auth_errors().await;
    let reason = expect_signed_denial_of(&mut errors, &key.nkey_public(), stack.connect(&key)).await;
    assert_eq!(reason, format!("user {} is revoked", key.sign_pub_hex()));
    let added = phone.add_device(&bundle).await.expect("the cut add, retried, completes");
    assert_eq!((added.seq, added.status), (2, DeviceStatus::Active));
    assert_eq!(stack.connect(&key).await.unwrap().whoami().await.unwrap().sign_pub, alice);
}

/// The account's `kex_pub`/`kex_sig` are its oldest active device's: the
/// next one's once the oldest is revoked, null while none is active, then
/// the recovery device's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_keys_follow_the_oldest_active_device() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (_, laptop) = new_device(&alice, "laptop");
    phone.add_device(&laptop).await.unwrap();
    let (_, tablet) = new_device(&alice, "tablet");
    phone.add_device(&tablet).await.unwrap();
    let keys = |b: &Bundle| (Some(as_key(&b.kex_pub)), Some(b.kex_sig.clone()));
    let js = stack.jetstream().await;
    let users = js.get_key_value(BUCKET_USERS).await.unwrap();
    // As a lookup answers, and as the record stores them (raw JSON, as any
    // other reader of the bucket sees it).
    let account_keys = || async {
        let u = admin.lookup(&alice).await.unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&users.get(&alice).await.unwrap().unwrap()).unwrap();
        let stored = [&raw["kex_pub"], &raw["kex_sig"]].map(|v| v.as_str().map(str::to_string));
        assert_eq!(
            [u.kex_pub.map(|k| k.to_hex()), u.kex_sig.clone()],
            stored,
            "lookup and stored record agree"
        );
        (u.kex_pub, u.kex_sig)
    };
    assert_eq!(account_keys().await, keys(&phone_id.bundle(None)));

    phone.revoke_device(&alice).await.unwrap();
    assert_eq!(account_keys().await, keys(&laptop), "the next active device's");
    admin.admin_revoke_device(&alice, &laptop.device).await.unwrap();
    assert_eq!(account_keys().await, keys(&tablet));
    admin.admin_revoke_device(&alice, &tablet.device).await.unwrap();
    assert_eq!(account_keys().await, (None, None), "none active");
    let (_, recovery) = new_device(&alice, "recovery");
    admin.admin_add_device(&recovery).await.unwrap();
    assert_eq!(account_keys().await, keys(&recovery), "the recovery device's");
}
