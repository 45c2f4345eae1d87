//! Device lists signed by the account (docs/protocol.md section 11) through
//! a real server: every refusal with its code and nothing written, two
//! changes built on one version, the history and `user.lookup`'s `since`,
//! an account from before lists signing its first, a ghost device written
//! straight into KV that mail never reaches, recovery, and the history
//! going with the account.

use serde_json::{Value, json};
use unibus::{Client, ClientError, Identity};
use unibus_proto::devicelist::{By, Change, DeviceList, ListedDevice};
use unibus_proto::e2e::Recipient;
use unibus_proto::mail::Channel;
use unibus_proto::records::Role;
use unibus_proto::subjects::{self, BUCKET_DEVICE_LISTS, BUCKET_USERS};
use unibus_proto::wire::LOOKUP_LISTS_MAX;

use crate::mail::{dm, fetch_all, now_ms};
use crate::support::devices::new_device;
use crate::support::{Stack, code};

/// Sends `body` to `subject` as `c`; the reply or the wire code.
async fn call(c: &Client, subject: &str, body: &Value) -> Result<Value, String> {
    match c.call::<Value, Value>(subject, body).await {
        Ok(v) => Ok(v),
        Err(e @ ClientError::Service(_)) => Err(code(Err::<(), _>(e))),
        Err(e) => panic!("{subject}: {e}"),
    }
}

/// `bundle`'s device as a list names it.
fn listed(b: &unibus::Bundle) -> ListedDevice {
    ListedDevice { device: b.device.clone(), kex_pub: b.kex_pub.clone(), kex_sig: Some(b.kex_sig.clone()) }
}

/// The device fields of an add request for `b` with `list`.
fn add_body(b: &unibus::Bundle, list: &DeviceList) -> Value {
    json!({"device": b.device, "kex_pub": b.kex_pub, "kex_sig": b.kex_sig, "device_list": list})
}

/// `current` plus `extra`, signed by `by_key` for `by`.
fn plus(current: &DeviceList, extra: &[ListedDevice], by_key: &Identity, by: By) -> DeviceList {
    let mut devices = current.devices.clone();
    devices.extend_from_slice(extra);
    by_key.next_device_list(current, devices, by)
}

/// `current` without `gone`, signed by `by_key` for `by`.
fn minus(current: &DeviceList, gone: &str, by_key: &Identity, by: By) -> DeviceList {
    let devices = current.devices.iter().filter(|d| d.device != gone).cloned().collect();
    by_key.next_device_list(current, devices, by)
}

/// Every refusal of section 11 answers its code and writes nothing; the
/// order of checks is the contract's (section 8's rules before the
/// list's, the list's before the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_writes_nothing() {
    let stack = Stack::start().await;
    let (admin_id, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_b) = new_device(&alice, "laptop");
    phone.add_device(&laptop_b).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    let (_, new_b) = new_device(&alice, "new");
    let new = listed(&new_b);
    let v2 = phone.device_list().await.unwrap().expect("a list");
    assert_eq!(v2.version, 2);
    let v1 = {
        let (_, lists) = admin.lookup_lists(&alice, 0).await.unwrap();
        lists[0].clone()
    };
    let (_, other_b) = new_device(&alice, "other");
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let guest_id = Identity::generate();
    let guest = stack.connect(&guest_id).await.unwrap();

    let before = stack.kv_snapshot().await;
    let mut forged = plus(&v2, std::slice::from_ref(&new), &phone_id, By::Device);
    forged.sig = plus(&v2, &[listed(&other_b)], &phone_id, By::Device).sig;
    let mut v3_on_v1_hash = plus(&v2, std::slice::from_ref(&new), &phone_id, By::Device);
    v3_on_v1_hash = phone_id.sign_device_list(&alice, 3, v1.hash(), v3_on_v1_hash.devices, By::Device);
    let stranger = Identity::generate();
    let add_cases: Vec<(&str, Value, &str)> = vec![
        (
            "no list",
            json!({"device": new_b.device, "kex_pub": new_b.kex_pub, "kex_sig": new_b.kex_sig}),
            "bad_request",
        ),
        (
            "list not an object",
            json!({"device": new_b.device, "kex_pub": new_b.kex_pub, "kex_sig": new_b.kex_sig, "device_list": 3}),
            "bad_request",
        ),
        (
            "signed by the laptop, sent by the phone",
            add_body(&new_b, &plus(&v2, std::slice::from_ref(&new), &laptop_id, By::Device)),
            "bad_request",
        ),
        (
            "signed by a stranger",
            add_body(&new_b, &plus(&v2, std::slice::from_ref(&new), &stranger, By::Device)),
            "bad_request",
        ),
        (
            "by admin on its own account",
            add_body(&new_b, &plus(&v2, std::slice::from_ref(&new), &phone_id, By::Admin)),
            "bad_request",
        ),
        (
            "two devices added",
            add_body(&new_b, &plus(&v2, &[new.clone(), listed(&other_b)], &phone_id, By::Device)),
            "bad_request",
        ),
        (
            "another device than the request's",
            add_body(&new_b, &plus(&v2, &[listed(&other_b)], &phone_id, By::Device)),
            "bad_request",
        ),
        ("a bad signature", add_body(&new_b, &forged), "bad_request"),
        (
            "uppercase hex",
            add_body(&new_b, &{
                let mut l = plus(&v2, std::slice::from_ref(&new), &phone_id, By::Device);
                l.prev = l.prev.to_uppercase();
                l
            }),
            "bad_request",
        ),
        (
            "version 4",
            add_body(
                &new_b,
                &phone_id.sign_device_list(
                    &alice,
                    4,
                    v2.hash(),
                    [v2.devices.clone(), vec![new.clone()]].concat(),
                    By::Device,
                ),
            ),
            "bad_request",
        ),
        (
            "built on version 1",
            add_body(&new_b, &plus(&v1, std::slice::from_ref(&new), &phone_id, By::Device)),
            "stale_devices",
        ),
        ("version 3 with version 1's hash", add_body(&new_b, &v3_on_v1_hash), "stale_devices"),
        // Section 8 before the list: a listed key is `user_exists` whatever
        // the list says.
        (
            "the laptop again, with a bad list",
            add_body(&laptop_b, &plus(&v2, &[listed(&laptop_b)], &stranger, By::Device)),
            "user_exists",
        ),
    ];
    for (what, body, want) in &add_cases {
        assert_eq!(
            call(&phone, subjects::DEVICE_ADD, body).await.err().as_deref(),
            Some(*want),
            "device.add: {what}"
        );
    }
    let revoke_cases: Vec<(&str, &Client, Value, &str)> = vec![
        ("no list", &phone, json!({"device": laptop_b.device}), "bad_request"),
        (
            "minus another device",
            &phone,
            json!({"device": laptop_b.device, "device_list": minus(&v2, &alice, &phone_id, By::Device)}),
            "bad_request",
        ),
        (
            "by admin on its own account",
            &phone,
            json!({"device": laptop_b.device, "device_list": minus(&v2, &laptop_b.device, &phone_id, By::Admin)}),
            "bad_request",
        ),
        (
            "built on version 1",
            &phone,
            json!({"device": laptop_b.device, "device_list": minus(&v1, &laptop_b.device, &phone_id, By::Device)}),
            "stale_devices",
        ),
        // Seniority (section 8) before the list's rules.
        (
            "an older device, with a bad list",
            &laptop,
            json!({"device": alice, "device_list": minus(&v1, &alice, &stranger, By::Device)}),
            "forbidden",
        ),
        (
            "an admin signing by device",
            &admin,
            json!({"device": laptop_b.device, "device_list": minus(&v2, &laptop_b.device, &admin_id, By::Device)}),
            "bad_request",
        ),
        ("an admin without a list", &admin, json!({"device": laptop_b.device}), "bad_request"),
    ];
    for (what, c, body, want) in &revoke_cases {
        assert_eq!(
            call(c, subjects::DEVICE_REVOKE, body).await.err().as_deref(),
            Some(*want),
            "device.revoke: {what}"
        );
    }
    // The account has a list: a first one is refused.
    let again = phone_id.sign_device_list(&alice, 1, String::new(), v2.devices.clone(), By::Device);
    let sign = json!({"device_list": again});
    assert_eq!(call(&phone, subjects::DEVICE_SIGN, &sign).await.err().as_deref(), Some("bad_request"));
    // Recovery while a device is active: `forbidden` before the list.
    let rec = json!({"account": alice, "device": new_b.device, "kex_pub": new_b.kex_pub, "kex_sig": new_b.kex_sig,
        "device_list": plus(&v2, std::slice::from_ref(&new), &stranger, By::Device)});
    assert_eq!(call(&admin, subjects::ADMIN_DEVICE_ADD, &rec).await.err().as_deref(), Some("forbidden"));
    // Registration: a bad list spends no invite.
    let g = guest_id.sign_pub_hex();
    let binding = guest_id.bind(&g).to_string();
    let reg = |list: &DeviceList| json!({"invite": inv.token, "kex_pub": guest_id.kex_pub_hex(), "kex_sig": binding, "device_list": list});
    let first = guest_id.first_device_list();
    let mut two = first.clone();
    two.devices.push(new.clone());
    let register_cases: Vec<(&str, Value)> = vec![
        ("no list", json!({"invite": inv.token, "kex_pub": guest_id.kex_pub_hex(), "kex_sig": binding})),
        (
            "signed by another key",
            reg(&stranger.sign_device_list(&g, 1, String::new(), first.devices.clone(), By::Device)),
        ),
        (
            "another account's",
            reg(&guest_id.sign_device_list(&alice, 1, String::new(), first.devices.clone(), By::Device)),
        ),
        ("version 2", reg(&guest_id.sign_device_list(&g, 2, v1.hash(), first.devices.clone(), By::Device))),
        ("two devices", reg(&guest_id.sign_device_list(&g, 1, String::new(), two.devices, By::Device))),
        ("by admin", reg(&guest_id.sign_device_list(&g, 1, String::new(), first.devices.clone(), By::Admin))),
    ];
    for (what, body) in &register_cases {
        assert_eq!(
            call(&guest, subjects::REGISTER, body).await.err().as_deref(),
            Some("bad_request"),
            "register: {what}"
        );
    }
    assert_eq!(stack.kv_snapshot().await, before, "a refusal wrote to KV");

    // The cap after the list: a ninth device with a good list.
    for i in 0..6 {
        phone.add_device(&new_device(&alice, &format!("d{i}")).1).await.unwrap();
    }
    let full = phone.device_list().await.unwrap().unwrap();
    assert_eq!(full.devices.len(), 8);
    let before = stack.kv_snapshot().await;
    let ninth = add_body(&new_b, &plus(&full, std::slice::from_ref(&new), &phone_id, By::Device));
    assert_eq!(call(&phone, subjects::DEVICE_ADD, &ninth).await.err().as_deref(), Some("limit_reached"));
    assert_eq!(stack.kv_snapshot().await, before, "the cap's refusal wrote to KV");

    // Everything refused above works when asked right.
    guest.register(&inv.link, Some("g")).await.expect("the invite was not spent");
}

/// Two adds signed on the same version: one lands, the other is
/// `stale_devices` and lands once signed again on the current list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adds_on_one_version_one_lands_the_other_signs_again() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_b) = new_device(&alice, "laptop");
    phone.add_device(&laptop_b).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    let v2 = phone.device_list().await.unwrap().unwrap();
    let (_, a_b) = new_device(&alice, "tablet");
    let (_, b_b) = new_device(&alice, "watch");
    let by_phone = add_body(&a_b, &plus(&v2, &[listed(&a_b)], &phone_id, By::Device));
    let by_laptop = add_body(&b_b, &plus(&v2, &[listed(&b_b)], &laptop_id, By::Device));
    let (r1, r2) = tokio::join!(
        call(&phone, subjects::DEVICE_ADD, &by_phone),
        call(&laptop, subjects::DEVICE_ADD, &by_laptop)
    );
    let outcomes = [r1.is_ok(), r2.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "one lands: {r1:?} {r2:?}");
    let (late, late_b, late_id) = if outcomes[0] { (r2, &b_b, &laptop_id) } else { (r1, &a_b, &phone_id) };
    assert_eq!(late.err().as_deref(), Some("stale_devices"));
    let v3 = phone.device_list().await.unwrap().unwrap();
    assert_eq!(v3.version, 3);
    let retry = add_body(late_b, &plus(&v3, &[listed(late_b)], late_id, By::Device));
    let late_client = if std::ptr::eq(late_id, &phone_id) { &phone } else { &laptop };
    call(late_client, subjects::DEVICE_ADD, &retry).await.expect("lands once signed again");
    let v4 = phone.device_list().await.unwrap().unwrap();
    assert_eq!((v4.version, v4.devices.len()), (4, 4));
    // The library does the same by itself.
    let (c, d) = (new_device(&alice, "c").1, new_device(&alice, "d").1);
    let (rc, rd) = tokio::join!(phone.add_device(&c), laptop.add_device(&d));
    rc.unwrap();
    rd.unwrap();
    assert_eq!(phone.device_list().await.unwrap().unwrap().version, 6);
}

/// Every version is kept and read back: `device.list` shows the current
/// one, `user.lookup` with `since` the ones after it, oldest first, page
/// by page, each a step signed as section 11 says; the history goes with
/// the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_kept_and_read_since_any_version() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    // 70 changes: more than one page of history.
    for i in 0..35 {
        let (_, b) = new_device(&alice, &format!("d{i}"));
        phone.add_device(&b).await.unwrap();
        phone.revoke_device(&b.device).await.unwrap();
    }
    let current = phone.device_list().await.unwrap().unwrap();
    assert_eq!(current.version, 71);
    let (user, lists) = admin.lookup_lists(&alice, 0).await.unwrap();
    assert_eq!(user.device_list.as_ref(), Some(&current));
    assert_eq!(lists.len(), 71, "every version, over {} pages", 71usize.div_ceil(LOOKUP_LISTS_MAX));
    assert_eq!(lists[0].signer, alice, "version 1 signed by the account key");
    for pair in lists.windows(2) {
        let step = pair[1].step_from(&pair[0]).expect("each version follows the one before");
        assert!(step.signer_listed_before && step.by == By::Device);
    }
    assert_eq!(lists.last(), Some(&current));
    // One page, then `since` at and beyond the current version.
    let page = |since: u64| {
        let req = json!({"sign_pub": alice, "since": since});
        let admin = &admin;
        async move { call(admin, subjects::USER_LOOKUP, &req).await.unwrap()["user"]["device_lists"].clone() }
    };
    let first = page(0).await;
    assert_eq!(first.as_array().map(Vec::len), Some(LOOKUP_LISTS_MAX));
    assert_eq!(first[0]["version"], 1);
    let tail = page(69).await;
    assert_eq!(
        tail.as_array().map(|a| a.iter().map(|l| l["version"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(70), json!(71)])
    );
    assert_eq!(page(71).await, json!([]));
    assert_eq!(page(u64::MAX).await, json!([]));
    let plain = call(&admin, subjects::USER_LOOKUP, &json!({"sign_pub": alice})).await.unwrap();
    assert!(plain["user"].get("device_lists").is_none(), "only with since");
    assert_eq!(plain["user"]["device_list"]["version"], 71);
    let bad = json!({"sign_pub": alice, "since": -1});
    assert_eq!(call(&admin, subjects::USER_LOOKUP, &bad).await.err().as_deref(), Some("bad_request"));

    // In the bucket, keyed `<account>.<version>`.
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_DEVICE_LISTS).await.unwrap();
    let stored: DeviceList =
        serde_json::from_slice(&kv.get(format!("{alice}.71")).await.unwrap().unwrap()).unwrap();
    assert_eq!(stored, current);
    // A version lost between the account's write and the history's (a
    // crash) is kept again by the next read.
    kv.purge(format!("{alice}.71")).await.unwrap();
    let (_, again) = admin.lookup_lists(&alice, 70).await.unwrap();
    assert_eq!(again, vec![current.clone()]);

    // Deleting the account deletes its history.
    admin.delete_user(&alice).await.unwrap();
    use futures::StreamExt as _;
    let left: Vec<String> = kv.keys().await.unwrap().filter_map(|k| async move { k.ok() }).collect().await;
    assert!(left.iter().all(|k| !k.starts_with(&alice)), "history left: {}", left.len());
}

/// An account made before lists (written as an older unibusd left it)
/// keeps connecting; only its oldest active device may sign its first
/// list, which the library does before its first device change; then it
/// changes devices like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_from_before_lists_signs_its_first_and_keeps_working() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_b) = new_device(&alice, "laptop");
    phone.add_device(&laptop_b).await.unwrap();
    // Take the list out, as a record from before lists.
    let js = stack.jetstream().await;
    let users = js.get_key_value(BUCKET_USERS).await.unwrap();
    let entry = users.entry(&alice).await.unwrap().unwrap();
    let mut record: Value = serde_json::from_slice(&entry.value).unwrap();
    record.as_object_mut().unwrap().remove("device_list");
    users.update(&alice, record.to_string().into(), entry.revision).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    assert_eq!(laptop.device_list().await.unwrap(), None, "no list yet");
    assert_eq!(admin.lookup(&alice).await.unwrap().device_list, None);

    // Nothing changes before the list exists.
    let (_, tablet_b) = new_device(&alice, "tablet");
    let cur = phone_id.first_device_list();
    let body = add_body(&tablet_b, &plus(&cur, &[listed(&tablet_b)], &laptop_id, By::Device));
    assert_eq!(call(&laptop, subjects::DEVICE_ADD, &body).await.err().as_deref(), Some("bad_request"));
    assert!(
        matches!(laptop.add_device(&tablet_b).await, Err(ClientError::NoDeviceList(_))),
        "the laptop is not the oldest"
    );
    // The laptop may not sign the first list; the phone (oldest) may.
    assert_eq!(laptop.sign_device_list().await.unwrap(), None);
    let devices = vec![phone_id.listed(), laptop_id.listed()];
    let by_laptop = laptop_id.sign_device_list(&alice, 1, String::new(), devices.clone(), By::Device);
    let sign = json!({"device_list": by_laptop});
    assert_eq!(call(&laptop, subjects::DEVICE_SIGN, &sign).await.err().as_deref(), Some("bad_request"));
    let short = phone_id.sign_device_list(&alice, 1, String::new(), devices[..1].to_vec(), By::Device);
    assert_eq!(
        call(&phone, subjects::DEVICE_SIGN, &json!({"device_list": short})).await.err().as_deref(),
        Some("bad_request")
    );
    let phone = stack.connect(&phone_id).await.unwrap();
    let v1 = phone.sign_device_list().await.unwrap().expect("the oldest device signs");
    assert_eq!((v1.version, v1.signer.as_str(), v1.devices.clone()), (1, alice.as_str(), devices));
    assert_eq!(phone.sign_device_list().await.unwrap(), Some(v1.clone()), "signed once");
    // From now on, as any account.
    laptop.add_device(&tablet_b).await.unwrap();
    let (user, lists) = admin.lookup_lists(&alice, 0).await.unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[1].step_from(&lists[0]).unwrap().change, Change::Added(listed(&tablet_b)));
    assert_eq!(user.devices.len(), 3);
}

/// A ghost: a device written straight into the account record and the
/// device bucket, with a binding that verifies but no list step (what a
/// compromised store could do). It may connect, but no message may be
/// stored for it, and it may store none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_device_gets_no_mail_and_sends_none() {
    let stack = Stack::start_mail_unlimited().await;
    let (_a, admin) = stack.admin().await;
    let (alice_id, _alice) = stack.user(&admin, Role::Member, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let alice = alice_id.sign_pub_hex();
    let (ghost_id, ghost_b) = new_device(&alice, "ghost");
    let store = stack.store();
    let (mut user, revision) = store.get_user(crate::support::as_key(&alice)).await.unwrap().unwrap();
    let mut ghost = user.devices[0].clone();
    ghost.device = ghost_id.sign_key();
    ghost.kex_pub = ghost_id.kex_key();
    ghost.kex_sig = Some(ghost_b.kex_sig.clone());
    ghost.seq = 2;
    ghost.via = unibus_proto::records::Via::Device;
    user.devices.push(ghost.clone());
    user.device_seq = 2;
    let js = stack.jetstream().await;
    let users = js.get_key_value(BUCKET_USERS).await.unwrap();
    users.update(&alice, serde_json::to_vec(&user).unwrap().into(), revision).await.unwrap();
    let devices = js.get_key_value(subjects::BUCKET_DEVICES).await.unwrap();
    devices.create(ghost_id.sign_pub_hex(), serde_json::to_vec(&ghost).unwrap().into()).await.unwrap();
    let ghost_c = stack.connect(&ghost_id).await.expect("the record lists it: it connects");

    let listed_only = [alice_id.recipient()];
    let with_ghost = [alice_id.recipient(), ghost_id.recipient()];
    let to_alice = |recipients: &[Recipient]| dm(&bob_id, &alice, recipients, b"hi", now_ms());
    let sealed_for_ghost = bob.mail_send(&to_alice(&with_ghost)).await;
    assert_eq!(code(sealed_for_ghost), "stale_devices", "sealed for the ghost: refused");
    bob.mail_send(&to_alice(&listed_only)).await.expect("sealed for the listed devices: stored");
    // The ghost sends nothing, and nothing waits for it.
    let from_ghost = dm(&ghost_id, &bob_id.sign_pub_hex(), &[bob_id.recipient()], b"it's me", now_ms());
    assert_eq!(code(ghost_c.mail_send(&from_ghost).await), "forbidden");
    assert!(fetch_all(&ghost_c, &Channel::Dm, 0).await.is_empty());
}

/// An admin removes an account's last device (the list goes empty), then
/// recovers it (`by: "admin"`); an account without a list is recovered
/// with a version 1 the admin signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_a_step_signed_by_the_admin() {
    let stack = Stack::start().await;
    let (admin_id, admin) = stack.admin().await;
    let (phone_id, _phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    admin.admin_revoke_device(&alice, &alice).await.unwrap();
    let (user, lists) = admin.lookup_lists(&alice, 0).await.unwrap();
    assert_eq!(lists.len(), 2);
    assert!(lists[1].devices.is_empty(), "no device left");
    assert_eq!((lists[1].by, lists[1].signer.as_str()), (By::Admin, admin_id.sign_pub_hex().as_str()));
    assert!(user.devices.is_empty());
    let (new_id, new_b) = new_device(&alice, "new phone");
    admin.admin_add_device(&new_b).await.unwrap();
    let (_, lists) = admin.lookup_lists(&alice, 2).await.unwrap();
    let step = lists[0].step_from(&admin.lookup_lists(&alice, 1).await.unwrap().1[0]).unwrap();
    assert_eq!((step.change, step.by), (Change::Added(listed(&new_b)), By::Admin));
    let new = stack.connect(&new_id).await.unwrap();
    assert_eq!(new.device_list().await.unwrap().unwrap().version, 3);

    // Without a list: the admin's version 1 holds the new device alone.
    let (bob_id, _bob) = stack.user(&admin, Role::Member, "bob").await;
    let bob = bob_id.sign_pub_hex();
    let users = stack.jetstream().await.get_key_value(BUCKET_USERS).await.unwrap();
    let entry = users.entry(&bob).await.unwrap().unwrap();
    let mut record: Value = serde_json::from_slice(&entry.value).unwrap();
    record.as_object_mut().unwrap().remove("device_list");
    users.update(&bob, record.to_string().into(), entry.revision).await.unwrap();
    admin.admin_revoke_device(&bob, &bob).await.expect("an admin revokes without a list");
    let (_, bob_new) = new_device(&bob, "bob's new phone");
    admin.admin_add_device(&bob_new).await.unwrap();
    let (user, lists) = admin.lookup_lists(&bob, 0).await.unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(
        (lists[0].version, lists[0].by, lists[0].devices.clone()),
        (1, By::Admin, vec![listed(&bob_new)])
    );
    assert_eq!(user.device_list, Some(lists[0].clone()));
}
