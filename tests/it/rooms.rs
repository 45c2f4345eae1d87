//! Rooms: the control endpoints with their rules, and the data plane they
//! open and close.

use crate::support::{as_key, as_room};
use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, Identity};
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibus_proto::wire::{MAX_MEMBERS_PER_ROOM, MAX_ROOMS_PER_USER, RoomListRequest};

use crate::support::{Stack, code, expect_server_error};

/// Waits until `id` can connect again after a kick and returns the client.
async fn reconnect(stack: &Stack, id: &Identity) -> Client {
    stack.connect(id).await.expect("reconnects")
}

/// Create, get, list, add and remove with every rule and error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_endpoints_and_rules() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let (carol, carol_c) = stack.user(&admin, Role::Member, "carol").await;

    assert_eq!(code(alice_c.create_room("").await), "bad_request");
    assert_eq!(code(alice_c.create_room(&"x".repeat(65)).await), "bad_request");
    let room = alice_c.create_room("kitchen").await.unwrap();
    assert_eq!(room.id.len(), 32);
    assert_eq!(room.owner.map(|k| k.to_string()).as_deref(), Some(alice.sign_pub_hex().as_str()));
    assert_eq!(room.members, vec![alice.sign_pub_hex()]);
    let alice_c = reconnect(&stack, &alice).await;

    // get: member and admin yes, others forbidden, unknown not_found.
    assert_eq!(alice_c.get_room(&room.id).await.unwrap().name, "kitchen");
    assert_eq!(admin.get_room(&room.id).await.unwrap().id, room.id);
    assert_eq!(code(bob_c.get_room(&room.id).await), "forbidden");
    assert_eq!(code(bob_c.get_room(&"0".repeat(32)).await), "not_found");
    assert_eq!(code(bob_c.get_room("abc").await), "bad_request");

    // add: owner or admin; target must be an active user; idempotent.
    assert_eq!(code(bob_c.add_member(&room.id, &bob.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(alice_c.add_member(&"1".repeat(32), &bob.sign_pub_hex()).await), "not_found");
    let stranger = Identity::generate();
    assert_eq!(code(alice_c.add_member(&room.id, &stranger.sign_pub_hex()).await), "not_found");
    let r = alice_c.add_member(&room.id, &bob.sign_pub_hex()).await.unwrap();
    assert!(r.has_member(as_key(&bob.sign_pub_hex())));
    let again = alice_c.add_member(&room.id, &bob.sign_pub_hex()).await.unwrap();
    assert_eq!(again.updated_at, r.updated_at, "adding a present member changes nothing");
    admin.add_member(&room.id, &carol.sign_pub_hex()).await.unwrap();
    let bob_c = reconnect(&stack, &bob).await;
    let carol_c2 = reconnect(&stack, &carol).await;
    drop(carol_c);

    // list: the caller's rooms, paginated.
    let second = bob_c.create_room("hall").await.unwrap();
    let bob_c = reconnect(&stack, &bob).await;
    let page1 = bob_c.list_rooms(&RoomListRequest { limit: Some(1), cursor: None }).await.unwrap();
    assert_eq!(page1.rooms.len(), 1);
    let page2 =
        bob_c.list_rooms(&RoomListRequest { limit: Some(1), cursor: page1.next.clone() }).await.unwrap();
    assert_eq!(page2.rooms.len(), 1);
    assert!(page2.next.is_none());
    let mut ids = vec![page1.rooms[0].id.clone(), page2.rooms[0].id.clone()];
    ids.sort();
    let mut want = vec![room.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    // A cursor of bob's list is not valid for carol's.
    let forged = carol_c2.list_rooms(&RoomListRequest { limit: Some(1), cursor: page1.next }).await;
    assert_eq!(code(forged), "bad_request");
    assert_eq!(
        code(carol_c2.list_rooms(&RoomListRequest { limit: Some(0), cursor: None }).await),
        "bad_request"
    );

    // remove: a member may not remove another; the owner only by an admin.
    assert_eq!(code(bob_c.remove_member(&room.id, &carol.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(bob_c.remove_member(&room.id, &alice.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(alice_c.remove_member(&room.id, &alice.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(alice_c.remove_member(&"2".repeat(32), &bob.sign_pub_hex()).await), "not_found");
    let r = carol_c2.remove_member(&room.id, &carol.sign_pub_hex()).await.unwrap();
    assert!(!r.has_member(as_key(&carol.sign_pub_hex())), "a member leaves by itself");
    let r = alice_c.remove_member(&room.id, &bob.sign_pub_hex()).await.unwrap();
    assert!(!r.has_member(as_key(&bob.sign_pub_hex())), "the owner removes");
    let same = alice_c.remove_member(&room.id, &bob.sign_pub_hex()).await.unwrap();
    assert_eq!(same.updated_at, r.updated_at, "removing an absent member changes nothing");
    let r = admin.remove_member(&room.id, &alice.sign_pub_hex()).await.unwrap();
    assert!(r.members.is_empty() && r.owner.is_some(), "an admin removes the owner");
}

/// A non-member can neither publish to nor receive from a room; after
/// member.add (and the kick/reconnect) it can; after member.remove it no
/// longer can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_data_plane_follows_membership() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (dave, dave_c) = stack.user(&admin, Role::Member, "dave").await;
    drop(dave_c);
    let room = alice_c.create_room("ops").await.unwrap();
    let alice_c = reconnect(&stack, &alice).await;
    let subject = subjects::room_msg(&room.id);

    // Non-member: publish refused, subscription silent.
    let (dave_c, mut errs) = stack.connect_watched(&dave).await;
    let mut spy = dave_c.nats().subscribe(subject.clone()).await.unwrap();
    dave_c.nats().flush().await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Subscription to").await;
    dave_c.nats().publish(subject.clone(), "from dave".into()).await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Publish to").await;
    let mut alice_sub = alice_c.nats().subscribe(subject.clone()).await.unwrap();
    alice_c.nats().flush().await.unwrap();
    alice_c.nats().publish(subject.clone(), "secret".into()).await.unwrap();
    alice_c.nats().flush().await.unwrap();
    assert_eq!(next_payload(&mut alice_sub).await.as_deref(), Some("secret"));
    assert!(next_payload(&mut spy).await.is_none(), "non-member received a room message");
    drop(dave_c);

    // Added: dave publishes and receives.
    alice_c.add_member(&room.id, &dave.sign_pub_hex()).await.unwrap();
    let dave_c = reconnect(&stack, &dave).await;
    let mut dave_sub = dave_c.nats().subscribe(subject.clone()).await.unwrap();
    dave_c.nats().flush().await.unwrap();
    dave_c.nats().publish(subject.clone(), "hello from dave".into()).await.unwrap();
    dave_c.nats().flush().await.unwrap();
    assert_eq!(next_payload(&mut alice_sub).await.as_deref(), Some("hello from dave"));
    assert_eq!(next_payload(&mut dave_sub).await.as_deref(), Some("hello from dave"));

    // Removed: the kick ends dave's session; the reconnect has no room.
    let (dave_w, mut dave_events) = stack.connect_watched(&dave).await;
    alice_c.remove_member(&room.id, &dave.sign_pub_hex()).await.unwrap();
    crate::support::expect_event_within(&mut dave_events, "disconnected", Duration::from_secs(1)).await;
    drop(dave_w);
    drop(dave_c);
    let (dave_c, mut errs) = stack.connect_watched(&dave).await;
    let mut spy = dave_c.nats().subscribe(subject.clone()).await.unwrap();
    dave_c.nats().flush().await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Subscription to").await;
    alice_c.nats().publish(subject.clone(), "after removal".into()).await.unwrap();
    alice_c.nats().flush().await.unwrap();
    assert!(next_payload(&mut spy).await.is_none(), "removed member still receives");
}

async fn next_payload(sub: &mut async_nats::Subscriber) -> Option<String> {
    match tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        Ok(Some(m)) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
        _ => None,
    }
}

/// Deleting a user removes it from every room (ownership included); the
/// same key registered again inherits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_user_leaves_every_room_and_inherits_nothing() {
    let stack = Stack::start_without_xkey().await;
    let (root, admin) = stack.admin().await;
    let (erin, erin_c, owned) = stack.room_owner(&admin, "erin", "erin's").await;
    let other = admin.create_room("all hands").await.unwrap();
    let admin = reconnect(&stack, &root).await;
    admin.add_member(&other.id, &erin.sign_pub_hex()).await.unwrap();
    drop(erin_c);
    admin.delete_user(&erin.sign_pub_hex()).await.unwrap();
    let o = admin.get_room(&owned.id).await.unwrap();
    assert!(o.owner.is_none() && o.members.is_empty(), "owner cleared: admins only");
    let a = admin.get_room(&other.id).await.unwrap();
    assert!(!a.has_member(as_key(&erin.sign_pub_hex())));
    let kv = stack.jetstream().await.get_key_value(subjects::BUCKET_MEMBERSHIPS).await.unwrap();
    assert!(kv.get(erin.sign_pub_hex()).await.unwrap().is_none(), "room reservations left behind");

    // Registered again with a new invite: no rooms.
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let guest = stack.connect(&erin).await.unwrap();
    guest.register(&inv.token, None).await.unwrap();
    drop(guest);
    let erin_c = reconnect(&stack, &erin).await;
    let rooms = erin_c.list_rooms(&RoomListRequest::default()).await.unwrap();
    assert!(rooms.rooms.is_empty());
    assert_eq!(code(erin_c.get_room(&owned.id).await), "forbidden");
}

/// A user in 256 rooms can neither create nor be added to another
/// (limit_reached, KV unchanged); concurrent adds at 255 let exactly one
/// through; leaving a room frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_per_user_cap_is_exact() {
    let stack = Stack::start_without_xkey().await;
    let (root, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let me = alice.sign_pub_hex();
    let store = stack.store();
    // 255 rooms through the store (quick), then 8 rooms of the admin's.
    for i in 0..MAX_ROOMS_PER_USER - 1 {
        store.create_room(&format!("r{i}"), as_key(&me)).await.unwrap();
    }
    let mut theirs = Vec::new();
    for i in 0..8 {
        theirs.push(store.create_room(&format!("admin {i}"), root.sign_key()).await.unwrap().id);
    }
    // Eight concurrent adds for the one free place: exactly one wins. Until
    // two of them met at the store on alice's reservations (at most 12
    // tries), the admin takes alice out of the room she got and they try
    // again.
    let watch = stack.watch(&[subjects::BUCKET_MEMBERSHIPS], &[]).await;
    for attempt in 1.. {
        let adds = theirs.iter().map(|id| admin.add_member(id, &me));
        let results = futures::future::join_all(adds).await;
        let won: Vec<&unibus_proto::RoomId> =
            theirs.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(id, _)| id).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(code(r), "limit_reached");
        }
        assert_eq!(store.rooms_of_member(as_key(&me)).await.unwrap().len(), MAX_ROOMS_PER_USER);
        if watch.take().await.lost_races(subjects::BUCKET_MEMBERSHIPS).contains_key(&me) {
            println!("rooms per user: two adds met at the store on try {attempt}");
            break;
        }
        assert!(attempt < 12, "in {attempt} tries no two adds met at the store");
        admin.remove_member(won[0], &me).await.unwrap();
    }
    assert_eq!(store.rooms_of_member(as_key(&me)).await.unwrap().len(), MAX_ROOMS_PER_USER);

    let admin = reconnect(&stack, &root).await;
    let alice_c2 = reconnect(&stack, &alice).await;
    drop(alice_c);
    // A member of 256 rooms still connects (its user JWT lists them all).
    let all = store.rooms_of_member(as_key(&me)).await.unwrap();
    for id in [&all[0], &all[all.len() / 2], &all[all.len() - 1]] {
        alice_c2.publish_checked(&subjects::room_msg(id), b"x".to_vec()).await.unwrap();
    }
    let before = stack.kv_snapshot().await;
    assert_eq!(code(alice_c2.create_room("one too many").await), "limit_reached");
    let (mut spare, mut joined) = (String::new(), String::new());
    for id in &theirs {
        match store.get_room(id).await.unwrap().unwrap().0.has_member(as_key(&me)) {
            true => joined = id.to_string(),
            false => spare = id.to_string(),
        }
    }
    assert_eq!(code(admin.add_member(&spare, &me).await), "limit_reached");
    assert_eq!(stack.kv_snapshot().await, before, "a refused add changed KV");

    // Leaving one room frees a place.
    alice_c2.remove_member(&joined, &me).await.unwrap();
    assert!(admin.add_member(&spare, &me).await.unwrap().has_member(as_key(&me)));
    assert_eq!(store.rooms_of_member(as_key(&me)).await.unwrap().len(), MAX_ROOMS_PER_USER);
}

/// A room of 512 members takes no one else (limit_reached, KV unchanged)
/// but re-adding a present member succeeds; concurrent adds at 510 let
/// exactly two through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_per_room_cap_is_exact() {
    let stack = Stack::start_without_xkey().await;
    let (_root, admin) = stack.admin().await;
    let (alice, alice_c, room) = stack.room_owner(&admin, "alice", "crowded").await;
    let store = stack.store();
    // Six real users to add, and fillers written straight into the room.
    let users = stack.seed_members(6).await;
    fill(store, &room.id, MAX_MEMBERS_PER_ROOM - 2).await;

    // Four concurrent adds for the two free places: exactly two get in.
    // Until two of them met at the store on the room (at most 12 tries),
    // the owner takes those two out again and they try again.
    let watch = stack.watch(&[subjects::BUCKET_ROOMS], &[]).await;
    for attempt in 1.. {
        let adds = users[..4].iter().map(|u| alice_c.add_member(&room.id, u));
        let results = futures::future::join_all(adds).await;
        let won: Vec<&String> =
            users.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(u, _)| u).collect();
        assert_eq!(won.len(), 2, "{results:?}");
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(code(r), "limit_reached");
        }
        if watch.take().await.lost_races(subjects::BUCKET_ROOMS).contains_key(room.id.as_str()) {
            println!("members per room: two adds met at the store on try {attempt}");
            break;
        }
        assert!(attempt < 12, "in {attempt} tries no two adds met at the store");
        for u in won {
            alice_c.remove_member(&room.id, u).await.unwrap();
        }
    }
    let full = alice_c.get_room(&room.id).await.unwrap();
    assert_eq!(full.members.len(), MAX_MEMBERS_PER_ROOM);

    let before = stack.kv_snapshot().await;
    assert_eq!(code(alice_c.add_member(&room.id, &users[4]).await), "limit_reached");
    assert_eq!(code(admin.add_member(&room.id, &users[5]).await), "limit_reached", "admins too");
    let present = alice_c.add_member(&room.id, &alice.sign_pub_hex()).await.unwrap();
    assert_eq!(present.updated_at, full.updated_at, "re-adding a present member changes nothing");
    assert_eq!(stack.kv_snapshot().await, before, "KV changed at the cap");
}

/// Writes `n` filler keys (plus the owner) into room `id`'s member list.
async fn fill(store: &unibusd::store::Store, id: &str, n: usize) {
    let fillers: Vec<unibus_proto::Key> = (0..n - 1).map(|_| Identity::generate().sign_key()).collect();
    store
        .change_room(&as_room(id), |room| {
            let mut next = room.clone();
            next.members.extend(fillers.iter().cloned());
            Ok(unibusd::store::RoomChange::Write(next))
        })
        .await
        .unwrap();
}

/// The rooms-per-user cap counts rooms that listed a user before its
/// reservation record existed, and a crash's leftover reservations (no room
/// lists the user) are pruned once older than 5 minutes, while recent ones
/// (adds possibly in flight) still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_cap_counts_old_rooms_and_prunes_leftovers() {
    let stack = Stack::start_without_xkey().await;
    let (root, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (carol, carol_c) = stack.user(&admin, Role::Member, "carol").await;
    let store = stack.store();
    let (me, owner) = (alice.sign_pub_hex(), root.sign_pub_hex());

    // 256 rooms list alice, written without reservations (older data).
    for i in 0..MAX_ROOMS_PER_USER {
        let room = store.create_room(&format!("old {i}"), as_key(&owner)).await.unwrap();
        store
            .change_room(&room.id, |r| {
                let mut next = r.clone();
                next.members.push(as_key(&me.clone()));
                Ok(unibusd::store::RoomChange::Write(next))
            })
            .await
            .unwrap();
    }
    let before = stack.kv_snapshot().await;
    assert_eq!(code(alice_c.create_room("257th").await), "limit_reached");
    assert_eq!(stack.kv_snapshot().await, before);

    // Leftovers of crashed adds: 256 reservations of rooms that never came.
    let kv = stack.jetstream().await.get_key_value(subjects::BUCKET_MEMBERSHIPS).await.unwrap();
    let leftovers = |at: &str| {
        let rooms: serde_json::Map<String, serde_json::Value> =
            (0..MAX_ROOMS_PER_USER).map(|i| (format!("{i:032x}"), at.into())).collect();
        serde_json::json!({"v": 1, "sign_pub": carol.sign_pub_hex(), "rooms": rooms, "updated_at": at})
    };
    let now = unibus_proto::Timestamp::now().to_string();
    kv.put(carol.sign_pub_hex(), leftovers(&now).to_string().into()).await.unwrap();
    assert_eq!(code(carol_c.create_room("recent leftovers count").await), "limit_reached");
    kv.put(carol.sign_pub_hex(), leftovers("2020-01-01T00:00:00Z").to_string().into()).await.unwrap();
    let room = carol_c.create_room("old leftovers pruned").await.unwrap();
    let record: unibusd::store::Memberships =
        serde_json::from_slice(&kv.get(carol.sign_pub_hex()).await.unwrap().unwrap()).unwrap();
    assert_eq!(record.rooms.keys().cloned().collect::<Vec<_>>(), vec![room.id]);
}
