//! Blocking (docs/protocol.md section 5): the block endpoints and their rules, the
//! block that keeps a non-admin from adding the blocker to rooms, the
//! 1,000-key cap, the CLI commands, and the client dropping DMs from
//! blocked keys.

use crate::support::as_key;
use std::time::Duration;

use futures::StreamExt as _;
use unibus::{ClientError, Identity, Inbox, Incoming};
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibus_proto::wire::MAX_BLOCKS_PER_USER;

use crate::support::process::cli;
use crate::support::{Stack, code};

fn random_key() -> String {
    Identity::generate().sign_pub_hex()
}

/// add, remove and list answer the whole list; self-block is bad_request;
/// blocking twice and unblocking an absent key change nothing in KV; any
/// well-formed key may be blocked; guests may not publish there and
/// requests without a stamped identity are unauthenticated; deleting the
/// user deletes its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_endpoints_and_rules() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let (alice_key, bob_key) = (alice.sign_pub_hex(), bob.sign_pub_hex());

    assert!(alice_c.block_list().await.unwrap().is_empty());
    assert_eq!(alice_c.block_add(&bob_key.to_uppercase()).await.unwrap(), vec![bob_key.clone()]);
    assert!(alice_c.is_blocked(&bob_key));
    let before = stack.kv_snapshot().await;
    assert_eq!(alice_c.block_add(&bob_key).await.unwrap(), vec![bob_key.clone()], "blocking twice");
    let stranger = random_key();
    assert_eq!(alice_c.block_remove(&stranger).await.unwrap(), vec![bob_key.clone()], "absent key");
    assert_eq!(code(alice_c.block_add(&alice_key).await), "bad_request", "blocking oneself");
    assert_eq!(code(alice_c.block_add("abcd").await), "bad_request");
    let small_order = format!("01{}", "00".repeat(31));
    assert_eq!(code(alice_c.block_add(&small_order).await), "bad_request");
    assert_eq!(code(alice_c.block_remove(&"zz".repeat(32)).await), "bad_request");
    assert_eq!(stack.kv_snapshot().await, before, "idempotent and refused calls changed KV");

    // A key that is no user at all may be blocked too.
    let mut want = vec![bob_key.clone(), stranger.clone()];
    want.sort();
    assert_eq!(alice_c.block_add(&stranger).await.unwrap(), want);
    assert_eq!(alice_c.block_remove(&stranger).await.unwrap(), vec![bob_key.clone()]);
    assert!(admin.block_list().await.unwrap().is_empty(), "lists are per user");

    // Guests are not granted the block subjects; AUTH-side requests carry
    // no stamped identity.
    let guest = stack.connect(&Identity::generate()).await.unwrap();
    assert!(matches!(guest.block_list().await, Err(ClientError::PermissionDenied(_))));
    let svc = stack.service_nats().await;
    for subject in [subjects::BLOCK_ADD, subjects::BLOCK_REMOVE, subjects::BLOCK_LIST] {
        let body = format!("{{\"sign_pub\":\"{bob_key}\"}}");
        let msg = svc.request(subject, body.into()).await.unwrap();
        let r = unibus::decode_reply::<serde_json::Value>(subject, &msg);
        assert_eq!(code(r), "unauthenticated", "{subject}");
    }

    // Deleting alice deletes her block list.
    drop(alice_c);
    admin.delete_user(&alice_key).await.unwrap();
    assert!(stack.store().blocked_by(as_key(&alice_key)).await.unwrap().is_empty());
    let js = stack.jetstream().await;
    let kv = js.get_key_value(subjects::BUCKET_BLOCKS).await.unwrap();
    assert!(kv.get(&alice_key).await.unwrap().is_none(), "block record left behind");
}

/// A non-admin cannot add to a room a user who has blocked it (forbidden,
/// checked after shape and existence, nothing written); an admin can; after
/// unblocking, the owner can again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_owner_cannot_add_the_blocker() {
    let stack = Stack::start_without_xkey().await;
    let (root, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let (alice_key, bob_key) = (alice.sign_pub_hex(), bob.sign_pub_hex());
    let room = bob_c.create_room("bob's").await.unwrap();
    let bob_c = stack.connect(&bob).await.unwrap();
    let other = bob_c.create_room("bob's second").await.unwrap();
    let bob_c = stack.connect(&bob).await.unwrap();
    alice_c.block_add(&bob_key).await.unwrap();

    let before = stack.kv_snapshot().await;
    assert_eq!(code(bob_c.add_member(&room.id, &alice_key).await), "forbidden");
    // Order of checks: shape, then existence, then the block.
    assert_eq!(code(bob_c.add_member("abc", &alice_key).await), "bad_request");
    assert_eq!(code(bob_c.add_member(&"5".repeat(32), &alice_key).await), "not_found");
    assert_eq!(stack.kv_snapshot().await, before, "a refused add changed KV");
    assert!(!bob_c.get_room(&room.id).await.unwrap().has_member(as_key(&alice_key)));

    // Admin adds are not subject to blocks.
    let admin_room = admin.add_member(&room.id, &alice_key).await.unwrap();
    assert!(admin_room.has_member(as_key(&alice_key)));
    drop(admin);
    let _admin = stack.connect(&root).await.unwrap();

    // Unblocked: bob adds alice to his other room.
    let alice_c = stack.connect(&alice).await.unwrap();
    assert!(alice_c.block_remove(&bob_key).await.unwrap().is_empty());
    assert!(bob_c.add_member(&other.id, &alice_key).await.unwrap().has_member(as_key(&alice_key)));
}

/// At most 1,000 blocked keys, exactly under concurrent requests: beyond
/// that `limit_reached`, nothing changed; re-blocking a listed key at the
/// cap still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_list_holds_at_most_1000_keys() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let me = alice.sign_pub_hex();
    // The first 998 through the store (quick), then four concurrent
    // requests for the last two places: exactly two get in.
    let store = stack.store();
    let mut last = String::new();
    for _ in 0..MAX_BLOCKS_PER_USER - 2 {
        last = random_key();
        store.block(as_key(&me), as_key(&last), MAX_BLOCKS_PER_USER).await.unwrap();
    }
    // Until two of them met at the store (at most 12 tries), the two that
    // got in are unblocked and four new keys try again.
    let watch = stack.watch(&[subjects::BUCKET_BLOCKS], &[]).await;
    for attempt in 1.. {
        let keys: Vec<String> = (0..4).map(|_| random_key()).collect();
        let results = futures::future::join_all(keys.iter().map(|k| alice_c.block_add(k))).await;
        let won: Vec<&String> =
            keys.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(k, _)| k).collect();
        assert_eq!(won.len(), 2, "{results:?}");
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(code(r), "limit_reached");
        }
        if watch.take().await.lost_races(subjects::BUCKET_BLOCKS).contains_key(&me) {
            println!("block cap: two blocks met at the store on try {attempt}");
            break;
        }
        assert!(attempt < 12, "in {attempt} tries no two blocks met at the store");
        for k in won {
            alice_c.block_remove(k).await.unwrap();
        }
    }
    assert_eq!(alice_c.block_list().await.unwrap().len(), MAX_BLOCKS_PER_USER);

    let before = stack.kv_snapshot().await;
    assert_eq!(code(alice_c.block_add(&random_key()).await), "limit_reached");
    assert_eq!(alice_c.block_add(&last).await.unwrap().len(), MAX_BLOCKS_PER_USER, "already listed");
    assert_eq!(stack.kv_snapshot().await, before, "KV changed at the cap");

    // One out, one in.
    assert_eq!(alice_c.block_remove(&last).await.unwrap().len(), MAX_BLOCKS_PER_USER - 1);
    assert_eq!(alice_c.block_add(&random_key()).await.unwrap().len(), MAX_BLOCKS_PER_USER);
}

async fn next_item(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .expect("an inbox item within 5 s")
        .expect("inbox open")
}

/// The client drops DMs whose verified sender is blocked (reported as
/// dropped, not as an error) and delivers everyone else's; a block made on
/// another connection of the same key is picked up when the inbox opens and,
/// while it runs, once its copy is older than the maximum age; after
/// unblocking, DMs arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_drops_dms_from_blocked_keys() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let (_carol, carol_c) = stack.user(&admin, Role::Member, "carol").await;
    // Blocked from a second connection (as the CLI would): the inbox
    // loads the list from the service when it opens.
    let other = stack.connect(&alice).await.unwrap();
    other.block_add(&bob.sign_pub_hex()).await.unwrap();
    let mut inbox = alice_c.inbox().await.unwrap();

    // unibusd refuses to store it; published on the data plane, the
    // inbox drops it itself.
    assert_eq!(code(bob_c.send_dm(&alice.sign_pub_hex(), b"let me in").await), "forbidden");
    bob_c.send_dm_live(&alice.sign_pub_hex(), b"let me in").await.unwrap();
    carol_c.send_dm(&alice.sign_pub_hex(), b"hi alice").await.unwrap();
    match next_item(&mut inbox).await {
        Incoming::Dropped { from, subject } => {
            assert_eq!(from, bob.sign_pub_hex());
            assert_eq!(subject, subjects::dm(&alice.sign_pub_hex()));
        }
        other => panic!("expected bob's DM dropped, got {other:?}"),
    }
    match next_item(&mut inbox).await {
        Incoming::Message(m) => {
            assert_eq!((m.from, m.body), (carol_c.sign_pub().to_string(), b"hi alice".to_vec()))
        }
        other => panic!("expected carol's DM, got {other:?}"),
    }

    alice_c.block_remove(&bob.sign_pub_hex()).await.unwrap();
    bob_c.send_dm(&alice.sign_pub_hex(), b"thanks").await.unwrap();
    match next_item(&mut inbox).await {
        Incoming::Message(m) => assert_eq!(m.body, b"thanks".to_vec()),
        other => panic!("expected bob's DM after unblocking, got {other:?}"),
    }

    // A block made by another connection reaches the running inbox once
    // its copy is older than the maximum age (zero here: every DM).
    alice_c.set_blocks_max_age(Duration::ZERO);
    other.block_add(carol_c.sign_pub()).await.unwrap();
    carol_c.send_dm_live(&alice.sign_pub_hex(), b"still there?").await.unwrap();
    match next_item(&mut inbox).await {
        Incoming::Dropped { from, .. } => assert_eq!(from, carol_c.sign_pub()),
        other => panic!("expected carol's DM dropped, got {other:?}"),
    }
}

/// `unibus block`, `unibus blocked` and `unibus unblock` with `--json`;
/// blocking oneself exits 1 and prints `bad_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_block_commands() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (_bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.nk");
    let alice = Identity::generate();
    alice.save(&path).unwrap();
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let guest = stack.connect(&alice).await.unwrap();
    guest.register(&inv.link, Some("alice")).await.unwrap();
    drop(guest);
    let url = stack.url.as_str();
    let bob_key = bob_c.sign_pub().to_string();

    let (rc, v, _) = cli(url, &path, &["block", &bob_key]).await;
    assert_eq!(rc, 0);
    assert_eq!(v["blocked"], serde_json::json!([bob_key]));
    let (rc, v, _) = cli(url, &path, &["blocked"]).await;
    assert_eq!((rc, v["blocked"].clone()), (0, serde_json::json!([bob_key])));
    let (rc, v, _) = cli(url, &path, &["block", &alice.sign_pub_hex()]).await;
    assert_eq!(rc, 1);
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let (rc, v, _) = cli(url, &path, &["unblock", &bob_key]).await;
    assert_eq!((rc, v["blocked"].clone()), (0, serde_json::json!([])));
    let (rc, v, _) = cli(url, &path, &["blocked"]).await;
    assert_eq!((rc, v["blocked"].clone()), (0, serde_json::json!([])));
}
