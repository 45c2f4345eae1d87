//! Linked devices (docs/protocol.md section 8) through a real nats-server:
//! add, list, revoke and recover with every error and KV unchanged on
//! refusal, the seniority, last-device and last-admin rules, the cap under
//! concurrency, records from before devices, a kill of unibusd in the
//! middle of an add storm, and revocation across a cluster. Races of the
//! rules are in `device_races.rs`, their permanence in `device_rules.rs`.

use crate::support::as_key;
use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Bundle, Client, Identity};
use unibus_proto::records::{DeviceStatus, MAX_DEVICES_PER_ACCOUNT, Role, Via};
use unibus_proto::wire::InviteCreateRequest;

use crate::support::devices::new_device;
use crate::support::{
    Cluster, Stack, code, connect_watched_to, expect_event_within, expect_signed_denial_of,
};

/// A registered member with one device (its phone), connected.
async fn member(stack: &Stack, admin: &Client, name: &str) -> (Identity, Client) {
    stack.user(admin, Role::Member, name).await
}

/// Add, list, whoami, lookup, revoke; every refusal leaves KV unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_revoke_and_their_errors() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = member(&stack, &admin, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (bob_id, bob) = member(&stack, &admin, "bob").await;

    // Register replied with the first device; it is bound.
    let me = phone.whoami_device().await.unwrap();
    assert_eq!(
        (me.device.seq, me.device.via, me.device.device.to_hex().as_str()),
        (1, Via::Invite, alice.as_str())
    );
    assert!(me.device.kex_sig.is_some() && me.user.kex_sig == me.device.kex_sig);

    let (laptop_id, laptop_bundle) = new_device(&alice, "laptop");
    let added = phone.add_device(&laptop_bundle).await.unwrap();
    assert_eq!((added.seq, added.via, added.account.to_hex().as_str()), (2, Via::Device, alice.as_str()));
    assert_eq!(added.added_by, alice);
    let laptop = stack.connect(&laptop_id).await.unwrap();
    let seen = laptop.whoami_device().await.unwrap();
    assert_eq!(seen.user.sign_pub, alice, "a device acts as its account");
    assert_eq!(seen.device.device, laptop_id.sign_pub_hex());
    let listed = laptop.list_devices().await.unwrap();
    assert_eq!(listed.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2]);
    let public = bob.lookup(&alice).await.unwrap();
    assert_eq!(public.devices.len(), 2);
    assert_eq!(public.kex_pub, Some(phone_id.kex_key()), "account keys are the oldest device's");
    // The device's record exists in UNIBUS_devices, equal to the account's copy.
    let (record, _) = stack.store().get_device(laptop_id.sign_key()).await.unwrap().unwrap();
    assert_eq!(record, added);

    // Refusals, each with KV unchanged.
    let before = stack.kv_snapshot().await;
    let (_, for_bob) = new_device(&bob_id.sign_pub_hex(), "x");
    assert_eq!(code(phone.add_device(&for_bob).await), "bad_request", "a binding for another account");
    let mut forged = new_device(&alice, "y").1;
    forged.kex_pub = Identity::generate().kex_pub_hex();
    assert_eq!(code(phone.add_device(&forged).await), "bad_request", "a binding over another kex_pub");
    let bob_as_device = bob_id.clone().with_account(&alice).unwrap().bundle(None);
    assert_eq!(code(phone.add_device(&bob_as_device).await), "user_exists", "an account's key");
    let laptop_again = laptop_id.bundle(None);
    assert_eq!(code(phone.add_device(&laptop_again).await), "user_exists", "already a device");
    let (_, bobs_tablet) = new_device(&bob_id.sign_pub_hex(), "tablet");
    assert_eq!(code(phone.add_device(&bobs_tablet).await), "bad_request", "bound to bob, not alice");
    assert_eq!(
        code(bob.revoke_device(&laptop_id.sign_pub_hex()).await),
        "forbidden",
        "another account's device"
    );
    assert_eq!(code(laptop.revoke_device(&alice).await), "forbidden", "an older device");
    assert_eq!(code(phone.revoke_device(&Identity::generate().sign_pub_hex()).await), "not_found");
    assert_eq!(code(phone.revoke_device("zz").await), "bad_request");
    assert_eq!(stack.kv_snapshot().await, before, "refusals changed KV");

    // The phone revokes the newer laptop: the laptop is cut off and denied
    // (never a guest).
    let (_watched, mut events) = connect_watched_to(&stack.url, &laptop_id).await;
    let reply = phone.revoke_device(&laptop_id.sign_pub_hex()).await.unwrap();
    assert_eq!(reply.device.status, DeviceStatus::Revoked);
    assert_eq!(reply.device.revoked_by.map(|k| k.to_string()).as_deref(), Some(alice.as_str()));
    assert!(reply.kicked >= 1);
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    let mut errors = stack.auth_errors().await;
    let reason =
        expect_signed_denial_of(&mut errors, &laptop_id.nkey_public(), stack.connect(&laptop_id)).await;
    assert_eq!(reason, format!("user {} is revoked", laptop_id.sign_pub_hex()));
    // Revoking a revoked device changes nothing.
    let again = phone.revoke_device(&laptop_id.sign_pub_hex()).await.unwrap();
    assert_eq!(again.device, reply.device);
    // The phone is the last active device: it cannot revoke itself.
    assert_eq!(code(phone.revoke_device(&alice).await), "forbidden");
    // A revoked device's key cannot come back.
    assert_eq!(code(phone.add_device(&laptop_id.bundle(None)).await), "user_exists");
    let all = phone.list_devices().await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![DeviceStatus::Active, DeviceStatus::Revoked]
    );
}

/// Seniority: a device revokes itself or newer ones. An admin revokes any
/// device, the account's last one included, and then recovers the account
/// with a new device while it has none; the account keeps its rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seniority_recovery_and_the_last_admin() {
    let stack = Stack::start().await;
    let (root_id, admin) = stack.admin().await;
    let (phone_id, phone, room) = stack.room_owner(&admin, "alice", "family").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_bundle) = new_device(&alice, "laptop");
    phone.add_device(&laptop_bundle).await.unwrap();
    let (tablet_id, tablet_bundle) = new_device(&alice, "tablet");
    phone.add_device(&tablet_bundle).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();

    // The laptop (seq 2) revokes the newer tablet, not the older phone.
    assert_eq!(code(laptop.revoke_device(&alice).await), "forbidden");
    laptop.revoke_device(&tablet_id.sign_pub_hex()).await.unwrap();
    // A device revokes itself.
    laptop.revoke_device(&laptop_id.sign_pub_hex()).await.unwrap();

    // Recovery is refused while a device is active.
    let (new_phone_id, new_phone_bundle) = new_device(&alice, "new phone");
    assert_eq!(code(admin.admin_add_device(&new_phone_bundle).await), "forbidden");
    // The phone is lost: the admin revokes it (the last one: admins may).
    admin.admin_revoke_device(&alice, &alice).await.unwrap();
    let mut errors = stack.auth_errors().await;
    let reason =
        expect_signed_denial_of(&mut errors, &phone_id.nkey_public(), stack.connect(&phone_id)).await;
    assert_eq!(reason, format!("user {alice} is revoked"), "the phone's key, not the laptop's");
    // Members may not recover; a binding for another account is refused.
    let (_m, other) = stack.user(&admin, Role::Member, "mallory").await;
    let refused = other.admin_add_device(&new_phone_bundle).await;
    assert!(matches!(refused, Err(unibus::ClientError::PermissionDenied(_))), "{refused:?}");
    let mut wrong = new_phone_bundle.clone();
    wrong.account = root_id.sign_pub_hex();
    assert_eq!(code(admin.admin_add_device(&wrong).await), "bad_request");
    let recovered = admin.admin_add_device(&new_phone_bundle).await.unwrap();
    assert_eq!((recovered.via, recovered.seq), (Via::Recovery, 4));
    assert_eq!(recovered.added_by, root_id.sign_pub_hex());
    // The recovered device is alice, with her room.
    let new_phone = stack.connect(&new_phone_id).await.unwrap();
    assert_eq!(new_phone.whoami().await.unwrap().sign_pub, alice);
    let rooms = new_phone.list_rooms(&Default::default()).await.unwrap().rooms;
    assert_eq!(rooms.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![room.id.clone()]);
    let looked = other.lookup(&alice).await.unwrap();
    assert_eq!(looked.devices.iter().map(|d| d.via).collect::<Vec<_>>(), vec![Via::Recovery]);

    // The only admin cannot lose its last device, not even by its own hand.
    assert_eq!(code(admin.revoke_device(&root_id.sign_pub_hex()).await), "forbidden");
    let (root_laptop, root_laptop_bundle) = new_device(&root_id.sign_pub_hex(), "root laptop");
    admin.add_device(&root_laptop_bundle).await.unwrap();
    // With two devices, the admin's laptop may revoke itself.
    let root_laptop_c = stack.connect(&root_laptop).await.unwrap();
    root_laptop_c.revoke_device(&root_laptop.sign_pub_hex()).await.unwrap();
}

/// 30 concurrent adds with different keys for one account never leave more
/// than 8 active devices, and the refused keys keep no device record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_pass_the_cap() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = member(&stack, &admin, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let bundles: Vec<(Identity, Bundle)> = (0..30).map(|i| new_device(&alice, &format!("d{i}"))).collect();
    let results: Vec<_> = futures::stream::iter(bundles.iter())
        .map(|(_, b)| phone.add_device(b))
        .buffer_unordered(30)
        .collect()
        .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, MAX_DEVICES_PER_ACCOUNT - 1, "the phone plus 7");
    for r in results.iter().filter(|r| r.is_err()) {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.service_error().map(|e| e.code()), Some("limit_reached"), "{e}");
    }
    let (user, _) = stack.store().get_user(as_key(&alice)).await.unwrap().unwrap();
    assert_eq!(user.active_devices().count(), MAX_DEVICES_PER_ACCOUNT);
    let mut seqs: Vec<u32> = user.devices.iter().map(|d| d.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=8).collect::<Vec<u32>>(), "seq given once each");
    for (id, _) in &bundles {
        let key = id.sign_pub_hex();
        let record = stack.store().get_device(as_key(&key)).await.unwrap();
        assert_eq!(record.is_some(), user.has_active_device(as_key(&key)), "device record of {key}");
    }
}

/// A record written before devices (no `devices`, no `kex_sig`) reads as
/// one unbound device, connects, and is migrated by its first device add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_from_before_devices_keep_working() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let old = Identity::generate();
    let key = old.sign_pub_hex();
    let legacy = serde_json::json!({
        "v": 1, "sign_pub": key, "kex_pub": old.kex_pub_hex(), "name": "old", "role": "member",
        "status": "active", "created_at": "2026-01-01T00:00:00Z", "invited_by": "bootstrap",
        "invite_id": "00".repeat(32), "updated_at": "2026-01-01T00:00:00Z"
    });
    let js = stack.jetstream().await;
    let kv = js.get_key_value(unibus_proto::subjects::BUCKET_USERS).await.unwrap();
    kv.create(&key, legacy.to_string().into()).await.unwrap();

    let c = stack.connect(&old).await.unwrap();
    let me = c.whoami_device().await.unwrap();
    assert_eq!(me.user.kex_sig, None, "unbound: made before bindings");
    assert_eq!((me.device.seq, me.device.via, me.device.kex_sig.clone()), (1, Via::Invite, None));
    let looked = admin.lookup(&key).await.unwrap();
    assert_eq!((looked.kex_pub, looked.kex_sig), (Some(old.kex_key()), None));
    let (laptop_id, bundle) = new_device(&key, "laptop");
    assert_eq!(c.add_device(&bundle).await.unwrap().seq, 2);
    assert_eq!(stack.connect(&laptop_id).await.unwrap().whoami().await.unwrap().sign_pub, key);
    let raw = kv.get(&key).await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(stored["devices"].as_array().map(Vec::len), Some(2), "migrated on write");
    assert_eq!(stored["device_seq"], 2);
}

/// SIGKILL unibusd during concurrent device adds, restart it, retry every
/// add: each device is then either listed by its account with a matching
/// device record, or (refused) has none; no half-added device remains.
/// The kill cuts some adds between the claim and the listing: such a key
/// is denied meanwhile (a signed denial, never a guest), and its add,
/// retried, completes (success, or `limit_reached` once the account is
/// full), never `user_exists` (docs/protocol.md section 9); an add that
/// was listed answers `user_exists` when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_add_storm_leaves_no_half_added_device() {
    let _heavy = crate::support::HEAVY.lock().await;
    let stack = Stack::start_server_only().await;
    let store = stack.open_store().await;
    let mut unibusd = stack.spawn_unibusd().await;
    let (_, token) = store.bootstrap_admin_invite(600).await.unwrap();
    let root = Identity::generate();
    Client::connect(&stack.url, &root).await.unwrap().register(&token.to_hex(), None).await.unwrap();
    let admin = Client::connect(&stack.url, &root).await.unwrap();
    // Adds to one account contend for its device list (one lands per
    // version, the others sign again), so the storm spreads over 25
    // accounts: 4 adds each, 100 at once, many between claim and listing.
    let mut accounts = Vec::new();
    for i in 0..25 {
        accounts.push(stack.user(&admin, Role::Member, &format!("u{i}")).await);
    }
    let keys: Vec<(Identity, Bundle)> =
        (0..100).map(|n| new_device(&accounts[n % 25].0.sign_pub_hex(), &format!("d{n}"))).collect();
    let jobs: Vec<(usize, Bundle)> = keys.iter().enumerate().map(|(n, (_, b))| (n % 25, b.clone())).collect();
    let mut storm =
        futures::stream::iter(jobs.iter().map(|(a, b)| async { accounts[*a].1.add_device(b).await.is_ok() }))
            .buffer_unordered(100);
    let (mut acknowledged, mut killed) = (0, false);
    while let Some(ok) = storm.next().await {
        acknowledged += usize::from(ok);
        if acknowledged >= 15 && !killed {
            unibusd.start_kill().unwrap();
            killed = true;
        }
    }
    assert!(killed, "the storm ended before the kill");
    let _ = unibusd.wait().await;
    drop(storm);

    // Right after the kill: where each add stands.
    let mut listed = vec![false; jobs.len()];
    let mut cut = Vec::new();
    for (n, (a, bundle)) in jobs.iter().enumerate() {
        let (user, _) = store.get_user(accounts[*a].0.sign_key()).await.unwrap().unwrap();
        let record = store.get_device(as_key(&bundle.device)).await.unwrap();
        listed[n] = user.device(as_key(&bundle.device)).is_some();
        if record.is_some() && !listed[n] {
            cut.push(n);
        }
    }
    println!(
        "add storm: {acknowledged} of 100 adds acknowledged before SIGKILL, {} cut between claim and listing",
        cut.len()
    );
    assert!(!cut.is_empty(), "the kill cut no add between its claim and its listing");

    let _unibusd = stack.spawn_unibusd().await;
    let mut errors = stack.auth_errors().await;
    // A cut add's key is denied, never a guest (a few of them: each
    // denial is a callout round trip).
    for n in cut.iter().take(4) {
        let (id, bundle) = &keys[*n];
        let reason =
            expect_signed_denial_of(&mut errors, &id.nkey_public(), Client::connect(&stack.url, id)).await;
        assert_eq!(reason, format!("user {} is revoked", bundle.device));
    }
    for (n, (a, bundle)) in jobs.iter().enumerate() {
        let c = Client::connect(&stack.url, &accounts[*a].0).await.unwrap();
        let retried = c.add_device(bundle).await;
        let code = retried.as_ref().err().map(|e| e.service_error().map(unibus_proto::Error::code));
        if listed[n] {
            assert_eq!(code, Some(Some("user_exists")), "a listed add, retried: {retried:?}");
        } else {
            let completed = matches!(code, None | Some(Some("limit_reached")));
            assert!(
                completed,
                "an add that was not listed (cut: {}), retried: {retried:?}",
                cut.contains(&n)
            );
        }
    }
    for (id, _) in &accounts {
        let (user, _) = store.get_user(id.sign_key()).await.unwrap().unwrap();
        assert_eq!(user.active_devices().count(), 5, "every add completed: the first device and 4");
    }
    for (a, bundle) in &jobs {
        let (user, _) = store.get_user(accounts[*a].0.sign_key()).await.unwrap().unwrap();
        let record = store.get_device(as_key(&bundle.device)).await.unwrap();
        match user.device(as_key(&bundle.device)) {
            Some(listed) => assert_eq!(record.map(|(d, _)| d).as_ref(), Some(listed), "record matches"),
            None => assert!(record.is_none(), "half-added device {}", bundle.device),
        }
    }
}

/// A device connected to node 3 is cut off within 1 s when another device
/// of its account revokes it through node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_revoke_through_node1_cuts_off_node3() {
    let _heavy = crate::support::HEAVY.lock().await;
    let cluster = Cluster::start().await;
    let store = &cluster.daemon.store;
    let (_, token) = store.bootstrap_admin_invite(600).await.unwrap();
    let phone_id = Identity::generate();
    Client::connect(&cluster.urls[0], &phone_id)
        .await
        .unwrap()
        .register(&token.to_hex(), None)
        .await
        .unwrap();
    let phone = Client::connect(&cluster.urls[0], &phone_id).await.unwrap();
    let (laptop_id, bundle) = new_device(&phone_id.sign_pub_hex(), "laptop");
    phone.add_device(&bundle).await.unwrap();
    let (on_node3, mut events) = connect_watched_to(&cluster.urls[2], &laptop_id).await;
    assert_eq!(on_node3.whoami().await.unwrap().sign_pub, phone_id.sign_pub_hex());

    let reply = phone.revoke_device(&laptop_id.sign_pub_hex()).await.unwrap();
    assert!(reply.kicked >= 1);
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    cluster.expect_revoked_everywhere(&laptop_id).await;
    // The phone is untouched.
    assert_eq!(phone.whoami().await.unwrap().sign_pub, phone_id.sign_pub_hex());
}

/// The account's other devices hear of an added and a revoked device at
/// once; nobody else may listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_devices_hear_of_adds_and_revokes() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = member(&stack, &admin, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let mut notices = Box::pin(phone.device_notices().await.unwrap());
    phone.nats().flush().await.unwrap();
    let (laptop_id, bundle) = new_device(&alice, "laptop");
    phone.add_device(&bundle).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), notices.next()).await.unwrap().unwrap();
    assert_eq!(
        (heard.device.to_hex().as_str(), heard.status),
        (laptop_id.sign_pub_hex().as_str(), DeviceStatus::Active)
    );
    phone.revoke_device(&laptop_id.sign_pub_hex()).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), notices.next()).await.unwrap().unwrap();
    assert_eq!(heard.status, DeviceStatus::Revoked);

    // Another account may not subscribe to alice's notices.
    let (bob_id, _bob) = member(&stack, &admin, "bob").await;
    let (bob, mut events) = stack.connect_watched(&bob_id).await;
    let _sub = bob.nats().subscribe(unibus_proto::subjects::device_notice(&alice)).await.unwrap();
    bob.nats().flush().await.unwrap();
    crate::support::expect_server_error(&mut events, "Permissions Violation").await;
}

/// Account and device statuses are separate: revoking and restoring an
/// account changes no device; deleting it deletes its device records, and
/// its device keys are then unknown keys (guests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_revoke_restore_and_delete() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = member(&stack, &admin, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, bundle) = new_device(&alice, "laptop");
    phone.add_device(&bundle).await.unwrap();
    let (_laptop, mut events) = stack.connect_watched(&laptop_id).await;

    let reply = admin.revoke_user(&alice).await.unwrap();
    assert!(reply.kicked >= 2, "both devices' connections: {}", reply.kicked);
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    assert!(reply.user.active_devices().count() == 2, "devices keep their status");
    let mut errors = stack.auth_errors().await;
    let reason =
        expect_signed_denial_of(&mut errors, &laptop_id.nkey_public(), stack.connect(&laptop_id)).await;
    assert_eq!(
        reason,
        format!("user {} is revoked", laptop_id.sign_pub_hex()),
        "the laptop's key, not the phone's"
    );
    admin.restore_user(&alice).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    assert_eq!(laptop.whoami().await.unwrap().sign_pub, alice);
    drop(laptop);

    admin.delete_user(&alice).await.unwrap();
    for key in [alice.clone(), laptop_id.sign_pub_hex()] {
        assert!(
            stack.store().get_device(as_key(&key)).await.unwrap().is_none(),
            "device record of {key} left"
        );
    }
    let guest = stack.connect(&laptop_id).await.unwrap();
    let refused = guest.whoami().await;
    assert!(matches!(refused, Err(unibus::ClientError::PermissionDenied(_))), "a guest: {refused:?}");
    // The key is free again: it may become an account of its own.
    let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    assert_eq!(guest.register(&inv.token, None).await.unwrap().sign_pub, laptop_id.sign_pub_hex());
}

/// A hostile server chooses the nonce: the client signs only nonces shaped
/// like nats-server's, so it never signs bytes that could be a binding or
/// an envelope. Checked against a plain socket playing the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sign_only_server_shaped_nonces() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let id = Identity::generate();
    let binding = String::from_utf8_lossy(&unibus_proto::binding::binding_message(
        &id.sign_pub_hex(),
        &id.sign_pub_hex(),
        &id.kex_pub_hex(),
    ))
    .into_owned();
    let cases = [
        ("qC2-xs_0aB8mZ9k", true),
        (binding.as_str(), false),
        ("dGhpcyBpcyBub3QgYSBub25jZQ==", false),
        (&*"a".repeat(65), false),
        ("with space", false),
    ];
    for (nonce, signable) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let info = serde_json::json!({
            "server_id": "fake", "server_name": "fake", "version": "2.14.4", "proto": 1, "headers": true,
            "max_payload": 1048576, "auth_required": true, "nonce": nonce, "host": "127.0.0.1", "port": 4222,
        });
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (read, mut write) = sock.into_split();
            write.write_all(format!("INFO {info}\r\n").as_bytes()).await.unwrap();
            let mut line = String::new();
            let got =
                tokio::time::timeout(Duration::from_secs(2), BufReader::new(read).read_line(&mut line)).await;
            match got {
                Ok(Ok(n)) if n > 0 => Some(line),
                _ => None,
            }
        });
        let opts = unibus::connect_options(&id).connection_timeout(Duration::from_secs(2));
        let _ = tokio::time::timeout(Duration::from_secs(3), opts.connect(&url)).await;
        let sent = server.await.unwrap();
        let signed = sent.as_deref().is_some_and(|l| l.starts_with("CONNECT") && l.contains("\"sig\""));
        assert_eq!(signed, signable, "nonce {nonce:?}: the client sent {sent:?}");
    }
}

/// A device record left behind by a deleted account (a crash between the
/// account's delete and its devices') makes the key a guest, and the next
/// add of the key to another account takes it over: the callout then
/// admits it as that account's device at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_device_record_is_taken_over() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob_id, bob) = member(&stack, &admin, "bob").await;
    let key = Identity::generate();
    let gone = Identity::generate().sign_pub_hex();
    let mut orphan = unibus_proto::records::Device::first(key.sign_key(), key.kex_key(), None);
    orphan.account = as_key(&gone.clone());
    let js = stack.jetstream().await;
    let kv = js.get_key_value(unibus_proto::subjects::BUCKET_DEVICES).await.unwrap();
    kv.create(&key.sign_pub_hex(), serde_json::to_vec(&orphan).unwrap().into()).await.unwrap();

    // A guest: it may register only.
    let guest = stack.connect(&key).await.unwrap();
    assert!(matches!(guest.whoami().await, Err(unibus::ClientError::PermissionDenied(_))));
    drop(guest);
    let as_bobs = key.clone().with_account(&bob_id.sign_pub_hex()).unwrap();
    bob.add_device(&as_bobs.bundle(None)).await.unwrap();
    let device = stack.connect(&as_bobs).await.unwrap();
    assert_eq!(device.whoami().await.unwrap().sign_pub, bob_id.sign_pub_hex());
    let (record, _) = stack.store().get_device(key.sign_key()).await.unwrap().unwrap();
    assert_eq!(record.account, bob_id.sign_pub_hex());
}

/// Revoked devices keep their records for good, so an account may add at
/// most `MAX_DEVICES_EVER` devices in all: an add-and-revoke loop cannot
/// grow the store without bound. The refused add changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_adds_a_bounded_number_of_devices_in_all() {
    use unibus_proto::records::MAX_DEVICES_EVER;
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = member(&stack, &admin, "alice").await;
    let alice = phone_id.sign_pub_hex();
    // As if the account had added and revoked devices all its life.
    let js = stack.jetstream().await;
    let kv = js.get_key_value(unibus_proto::subjects::BUCKET_USERS).await.unwrap();
    let entry = kv.entry(&alice).await.unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    record["device_seq"] = (MAX_DEVICES_EVER - 1).into();
    kv.update(&alice, record.to_string().into(), entry.revision).await.unwrap();

    let (_, last) = new_device(&alice, "last");
    assert_eq!(phone.add_device(&last).await.unwrap().seq, MAX_DEVICES_EVER);
    let before = stack.kv_snapshot().await;
    let (extra_id, extra) = new_device(&alice, "one too many");
    assert_eq!(code(phone.add_device(&extra).await), "limit_reached");
    assert_eq!(stack.kv_snapshot().await, before, "the refusal changed KV");
    assert!(stack.store().get_device(extra_id.sign_key()).await.unwrap().is_none(), "record freed");
}
