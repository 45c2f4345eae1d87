//! Catching up (docs/protocol.md section 10, "Clients") through a real
//! server: devices that were offline get what waited, once, in `seq`
//! order, then what comes live; a device's mail state kept in a file
//! across restarts; a device reconnecting in a loop while 1,000 messages
//! arrive ends with all of them, in order, none twice; a replayed stored
//! message is not shown twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, Event, Inbox, Incoming, MailState};
use unibus_proto::e2e::{Freshness, Opened, Reject};
use unibus_proto::mail::Channel;
use unibus_proto::records::Role;
use unibus_proto::subjects;

use crate::mail::now_ms;
use crate::support::Stack;
use crate::support::devices::new_device;
use crate::support::proxy::Proxy;

async fn next(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("an inbox item")
        .expect("open inbox")
}

/// The mail state in the file `path` (as the CLI keeps it).
fn state(path: &Path) -> MailState {
    MailState::open(path, Freshness::default(), now_ms()).expect("mail state")
}

/// The next item, which must be a message that waited: its seq and body.
async fn waited(inbox: &mut Inbox) -> (u64, Vec<u8>) {
    match next(inbox).await {
        Incoming::Waited { seq, message } => (seq, message.body),
        other => panic!("expected a message that waited, got {other:?}"),
    }
}

/// The next item, which must be a message (waited or live).
async fn message(inbox: &mut Inbox) -> Opened {
    match next(inbox).await {
        Incoming::Waited { message, .. } | Incoming::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Three DMs and a room message between them, sent while both of bob's
/// devices are offline, reach each device when it connects, in `seq`
/// order across the channels, once; a device that was online gets the
/// next message live and nothing again when it restarts (its mail state
/// in a file); a device linked afterwards waits for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_devices_get_what_waited_once_in_order() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let room = alice_c.create_room("plans").await.unwrap();
    alice_c.add_member(&room.id, &bob_key).await.unwrap();
    let (laptop, bundle) = new_device(&bob_key, "laptop");
    bob_c.add_device(&bundle).await.unwrap();
    drop(bob_c);

    let mut sent = Vec::new();
    for (i, body) in ["one", "two", "three", "four"].into_iter().enumerate() {
        let s = match i {
            1 => alice_c.send_room(&room.id, body.as_bytes()).await.unwrap(),
            _ => alice_c.send_dm(&bob_key, body.as_bytes()).await.unwrap(),
        };
        sent.push((s.seq, body.as_bytes().to_vec()));
    }

    let dir = tempfile::tempdir().unwrap();
    let phone_state = MailState::path_for(&dir.path().join("phone.seed"));
    let phone = stack.connect(&bob).await.unwrap();
    phone.set_mail_state(state(&phone_state));
    let mut phone_in = phone.inbox().await.unwrap();
    let laptop_c = stack.connect(&laptop).await.unwrap();
    let mut laptop_in = laptop_c.inbox().await.unwrap();
    for inbox in [&mut phone_in, &mut laptop_in] {
        for want in &sent {
            assert_eq!(&waited(inbox).await, want);
        }
    }

    // Online: the next one comes live, once.
    let five = alice_c.send_dm(&bob_key, b"five").await.unwrap();
    for inbox in [&mut phone_in, &mut laptop_in] {
        match next(inbox).await {
            Incoming::Message(m) => {
                assert_eq!((m.body.as_slice(), m.id.as_str()), (&b"five"[..], five.id.as_str()))
            }
            other => panic!("{other:?}"),
        }
    }

    // The phone restarts with its state file: nothing of what it was
    // handed comes again; the next message does.
    drop(phone_in);
    drop(phone);
    let phone = stack.connect(&bob).await.unwrap();
    phone.set_mail_state(state(&phone_state));
    let mut phone_in = phone.inbox().await.unwrap();
    alice_c.send_dm(&bob_key, b"six").await.unwrap();
    assert_eq!(message(&mut phone_in).await.body, b"six");
    assert!(phone.waiting().await.unwrap().is_empty());

    // A device linked now waits for nothing.
    let (tablet, bundle) = new_device(&bob_key, "tablet");
    stack.connect(&bob).await.unwrap().add_device(&bundle).await.unwrap();
    let tablet_c = stack.connect(&tablet).await.unwrap();
    assert!(tablet_c.waiting().await.unwrap().is_empty());

    // `catch_up` marks what it returns handled; `waiting` does not.
    let seven = alice_c.send_dm(&bob_key, b"seven").await.unwrap();
    let peek = tablet_c.waiting().await.unwrap();
    assert!(matches!(&peek[..], [Incoming::Waited { seq, .. }] if *seq == seven.seq), "{peek:?}");
    assert_eq!(tablet_c.waiting().await.unwrap().len(), 1);
    assert_eq!(tablet_c.catch_up().await.unwrap().len(), 1);
    assert!(tablet_c.catch_up().await.unwrap().is_empty());
    assert_eq!(tablet_c.with_mail_state(|s| s.cursor(&Channel::Dm)), seven.seq);
}

/// bob's only device reaches the server through a proxy that cuts its
/// connection every 150 ms while alice sends 1,000 DMs: bob ends with all
/// 1,000, in `seq` order, none twice, and the cuts happened while the
/// messages were arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_reconnecting_in_a_loop_gets_every_message_in_order_once() {
    const N: usize = 1_000;
    let stack = Stack::start_mail_unlimited().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let port = stack.server.as_ref().unwrap().port;
    let proxy = Proxy::start(port).await;
    let bob_c = Client::connect(&proxy.url, &bob).await.unwrap();
    let mut events = bob_c.events();
    let mut inbox = bob_c.inbox().await.unwrap();

    let sending = Arc::new(AtomicBool::new(true));
    let sender = tokio::spawn({
        let sending = sending.clone();
        async move {
            let mut seqs = HashMap::new();
            for i in 0..N {
                let s = alice_c.send_dm(&bob_key, format!("m{i}").as_bytes()).await.expect("stored");
                seqs.insert(s.id, s.seq);
            }
            sending.store(false, Ordering::SeqCst);
            seqs
        }
    });
    let proxy = Arc::new(proxy);
    let cutter = tokio::spawn({
        let (proxy, sending) = (proxy.clone(), sending.clone());
        async move {
            let mut cuts = 0u32;
            while sending.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                proxy.cut();
                cuts += 1;
            }
            cuts
        }
    });

    let mut got: Vec<String> = Vec::new();
    let mut reconnects_while_receiving = 0;
    while got.len() < N {
        tokio::select! {
            item = next(&mut inbox) => match item {
                Incoming::Waited { message, .. } | Incoming::Message(message) => got.push(message.id),
                other => panic!("{other:?}"),
            },
            Ok(event) = events.recv() => {
                if matches!(event, Event::Connected) && !got.is_empty() {
                    reconnects_while_receiving += 1;
                }
            }
        }
    }
    let seqs = sender.await.unwrap();
    let cuts = cutter.await.unwrap();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), N, "none twice");
    let order: Vec<u64> = got.iter().map(|id| seqs[id]).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert!(
        reconnects_while_receiving >= 3,
        "{reconnects_while_receiving} reconnects mid-stream ({cuts} cuts)"
    );
    assert!(proxy.accepted() > 3);
    // And nothing more comes: the next item is a marker sent now.
    let (_m, marker_c) = stack.user(&admin, Role::Member, "marker").await;
    marker_c.send_dm(&bob.sign_pub_hex(), b"marker").await.unwrap();
    assert_eq!(message(&mut inbox).await.body, b"marker");
}

/// A stored message re-published live by someone else is refused as a
/// replay, before and after the device restarts with its state file; a
/// copy carrying a made-up `Unibus-Seq` at or below the cursor is skipped
/// without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_stored_message_is_not_shown_twice() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let (_m, mallory_c) = stack.user(&admin, Role::Member, "mallory").await;
    let bob_key = bob.sign_pub_hex();
    let sent = alice_c.send_dm(&bob_key, b"once").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = MailState::path_for(&dir.path().join("bob.seed"));
    let bob_c = stack.connect(&bob).await.unwrap();
    bob_c.set_mail_state(state(&path));
    let stored = bob_c.mail_fetch(&Channel::Dm, 0, None).await.unwrap().messages;
    let raw = serde_json::to_vec(&stored[0].envelope).unwrap();
    let mut inbox = bob_c.inbox().await.unwrap();
    assert_eq!(waited(&mut inbox).await, (sent.seq, b"once".to_vec()));

    let replay = |headers: Option<async_nats::HeaderMap>| {
        let (c, raw, subject) = (mallory_c.clone(), raw.clone(), subjects::dm(&bob_key));
        async move {
            match headers {
                Some(h) => c.nats().publish_with_headers(subject, h, raw.into()).await.unwrap(),
                None => c.nats().publish(subject, raw.into()).await.unwrap(),
            }
            c.nats().flush().await.unwrap();
        }
    };
    let mut low = async_nats::HeaderMap::new();
    low.insert(subjects::HDR_SEQ, sent.seq.to_string().as_str());
    replay(Some(low.clone())).await;
    replay(None).await;
    assert!(matches!(next(&mut inbox).await, Incoming::Rejected { reason: Reject::Replay, .. }));

    drop(inbox);
    drop(bob_c);
    let bob_c = stack.connect(&bob).await.unwrap();
    bob_c.set_mail_state(state(&path));
    let mut inbox = bob_c.inbox().await.unwrap();
    replay(Some(low)).await;
    replay(None).await;
    assert!(matches!(next(&mut inbox).await, Incoming::Rejected { reason: Reject::Replay, .. }));
    alice_c.send_dm(&bob_key, b"after").await.unwrap();
    assert_eq!(message(&mut inbox).await.body, b"after");
}
