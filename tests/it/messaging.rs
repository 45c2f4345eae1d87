//! End-to-end encrypted messages through a real server: what is on the
//! wire, what reaches the peer, and what the inbox refuses.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use unibus::{Client, ClientError, Identity, Inbox, Incoming};
use unibus_proto::e2e::{Envelope, Reject};
use unibus_proto::records::Role;
use unibus_proto::subjects;

use crate::support::Stack;

async fn next(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(3), inbox.next())
        .await
        .expect("an inbox item")
        .expect("open inbox")
}

/// DMs and room messages arrive decrypted and verified; the bytes on the
/// subject (seen by a raw NATS subscriber) do not contain the plaintext; a
/// flipped byte, a forged sender, a message for someone else and a replay
/// are each rejected and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_dm_and_room_messages() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let (mallory, mallory_c) = stack.user(&admin, Role::Member, "mallory").await;
    let bob_c = Client::connect(&stack.url, &bob).await.unwrap();
    let mut bob_in = bob_c.inbox().await.unwrap();
    // A raw subscriber on bob's DM subject: the wire view.
    let raw = async_nats::ConnectOptions::with_nkey(bob.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&bob.sign_pub_hex()))
        .connect(&stack.url)
        .await
        .unwrap();
    let mut wire = raw.subscribe(subjects::dm(&bob.sign_pub_hex())).await.unwrap();
    raw.flush().await.unwrap();

    let plaintext = "meet at the north gate at nine";
    alice_c.send_dm(&bob.sign_pub_hex(), plaintext.as_bytes()).await.unwrap();
    let on_wire = tokio::time::timeout(Duration::from_secs(3), wire.next()).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&on_wire.payload).contains(plaintext));
    assert!(!on_wire.payload.windows(9).any(|w| w == b"north gat"));
    match next(&mut bob_in).await {
        Incoming::Message(m) => {
            assert_eq!(m.body, plaintext.as_bytes());
            assert_eq!(m.from, alice.sign_pub_hex());
        }
        other => panic!("{other:?}"),
    }

    // Replay of the exact bytes.
    mallory_c.nats().publish(subjects::dm(&bob.sign_pub_hex()), on_wire.payload.clone()).await.unwrap();
    assert_rejected(&mut bob_in, Reject::Replay).await;

    // A flipped byte in the ciphertext.
    let mut env: Envelope = serde_json::from_slice(&on_wire.payload).unwrap();
    let mut ct = env.ct.into_bytes();
    ct[10] = if ct[10] == b'A' { b'B' } else { b'A' };
    env.ct = String::from_utf8(ct).unwrap();
    env.id = "00".repeat(16);
    mallory_c
        .nats()
        .publish(subjects::dm(&bob.sign_pub_hex()), serde_json::to_vec(&env).unwrap().into())
        .await
        .unwrap();
    assert_rejected(&mut bob_in, Reject::BadSignature).await;

    // A forged sender: mallory's envelope claiming to be alice.
    mallory_c.send_dm(&bob.sign_pub_hex(), b"it's alice, honest").await.unwrap();
    // The wire also carried the replay and the flipped copy: skip to mallory's.
    let genuine = loop {
        let m = tokio::time::timeout(Duration::from_secs(3), wire.next()).await.unwrap().unwrap();
        let e: Envelope = serde_json::from_slice(&m.payload).unwrap();
        if e.from == mallory.sign_pub_hex() {
            break m;
        }
    };
    match next(&mut bob_in).await {
        Incoming::Message(m) => assert_eq!(m.from, mallory.sign_pub_hex()),
        other => panic!("{other:?}"),
    }
    let mut forged: Envelope = serde_json::from_slice(&genuine.payload).unwrap();
    forged.from = alice.sign_pub_hex();
    mallory_c
        .nats()
        .publish(subjects::dm(&bob.sign_pub_hex()), serde_json::to_vec(&forged).unwrap().into())
        .await
        .unwrap();
    assert_rejected(&mut bob_in, Reject::BadSignature).await;

    // A message for someone else (alice's DM, re-sent to bob).
    let alice_raw = async_nats::ConnectOptions::with_nkey(alice.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&alice.sign_pub_hex()))
        .connect(&stack.url)
        .await
        .unwrap();
    let mut alice_wire = alice_raw.subscribe(subjects::dm(&alice.sign_pub_hex())).await.unwrap();
    alice_raw.flush().await.unwrap();
    mallory_c.send_dm(&alice.sign_pub_hex(), b"for alice only").await.unwrap();
    let for_alice = tokio::time::timeout(Duration::from_secs(3), alice_wire.next()).await.unwrap().unwrap();
    mallory_c.nats().publish(subjects::dm(&bob.sign_pub_hex()), for_alice.payload).await.unwrap();
    assert_rejected(&mut bob_in, Reject::WrongSubject).await;

    // Rooms: every member decrypts; the wire has no plaintext.
    let room = alice_c.create_room("plans").await.unwrap();
    let alice_c = Client::connect(&stack.url, &alice).await.unwrap();
    alice_c.add_member(&room.id, &bob.sign_pub_hex()).await.unwrap();
    let bob_c = Client::connect(&stack.url, &bob).await.unwrap();
    let mut bob_in = bob_c.inbox().await.unwrap();
    let raw_bob = async_nats::ConnectOptions::with_nkey(bob.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&bob.sign_pub_hex()))
        .connect(&stack.url)
        .await
        .unwrap();
    let mut room_wire = raw_bob.subscribe(subjects::room_msg(&room.id)).await.unwrap();
    raw_bob.flush().await.unwrap();
    alice_c.send_room(&room.id, b"the room secret").await.unwrap();
    let on_wire = tokio::time::timeout(Duration::from_secs(3), room_wire.next()).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&on_wire.payload).contains("room secret"));
    // This new connection (a fresh mail state) first hands over the DMs
    // that waited since bob's account was made (section 10), then this.
    loop {
        match next(&mut bob_in).await {
            Incoming::Waited { message, .. } => assert_eq!(message.room, None, "only DMs waited"),
            Incoming::Message(m) => {
                assert_eq!(m.body, b"the room secret");
                assert_eq!(m.room.as_deref(), Some(room.id.as_str()));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn assert_rejected(inbox: &mut Inbox, want: Reject) {
    match next(inbox).await {
        Incoming::Rejected { reason, .. } => assert_eq!(reason, want),
        other => panic!("expected rejection {want:?}, got {other:?}"),
    }
}

/// A request on a denied subject fails with a permission error within 1 s
/// (not a timeout); a publish to a room one is not in, likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_subjects_fail_fast_with_a_permission_error() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (_m, member) = stack.user(&admin, Role::Member, "m").await;
    let t = Instant::now();
    let r = member.create_invite(&Default::default()).await;
    assert!(
        matches!(r, Err(ClientError::PermissionDenied(ref s)) if s == subjects::ADMIN_INVITE_CREATE),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    let guest = Client::connect(&stack.url, &Identity::generate()).await.unwrap();
    let t = Instant::now();
    assert!(matches!(guest.whoami().await, Err(ClientError::PermissionDenied(_))));
    assert!(t.elapsed() < Duration::from_secs(1));
    let r = member.publish_checked(&subjects::room_msg(&"ab".repeat(16)), b"x".to_vec()).await;
    assert!(matches!(r, Err(ClientError::PermissionDenied(_))), "{r:?}");
}

/// A revoked user's inbox ends with an authorization error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_inbox_ends_with_an_error() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let bob_c = Client::connect(&stack.url, &bob).await.unwrap();
    let mut inbox = bob_c.inbox().await.unwrap();
    admin.revoke_user(&bob.sign_pub_hex()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), inbox.next()).await.unwrap() {
        Some(Incoming::Closed(ClientError::NotAuthorized)) => {}
        other => panic!("{other:?}"),
    }
}
