//! Read-your-writes of the callout's store view across instances: the
//! standing of a key and its rooms come from watched indexes, and
//! concurrent callouts share leader probes, yet a write acknowledged to one
//! instance is seen by every later decision on another instance. Recent
//! reads (`mail.send`'s view) see this process's writes at once and
//! another's within the bound, and refuse only on a current view.

use std::time::Duration;

use crate::mail::{dm, now_ms};
use crate::support::as_key;
use unibus_proto::mail::{MailSendReply, MailSendRequest};
use unibus_proto::records::{Role, User, UserStatus};
use unibus_proto::subjects;
use unibusd::store::Standing;
use unibusd::store::index::{Fresh, RECENT};

use crate::support::Stack;

fn record(sign_pub: &str) -> User {
    User::new_active(
        unibus_proto::records::Device::first(as_key(sign_pub), as_key(&"ab".repeat(32)), None),
        "x",
        Role::Member,
        unibus_proto::Actor::Bootstrap,
        unibus_proto::InviteId::parse(&"7e".repeat(32)).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_instance_are_seen_by_the_next_decision_on_another() {
    let stack = Stack::start_without_xkey().await;
    let writer = stack.open_store().await;
    let reader = stack.store().clone();
    let users = format!("$JS.API.STREAM.INFO.KV_{}", subjects::BUCKET_USERS);
    let probes = stack.watch(&[], &[&users]).await;
    // Many writers and readers at once, so that the readers' leader probes
    // are shared and in flight while writes are acknowledged: each reader
    // asks only after its write was acknowledged and must see it.
    let tasks: Vec<_> = (0..64u8)
        .map(|i| {
            let (writer, reader) = (writer.clone(), reader.clone());
            tokio::spawn(async move {
                for round in 0..10u8 {
                    let key = format!("{i:02x}{round:02x}{}", "7".repeat(60));
                    assert_eq!(reader.standing(as_key(&key)).await.unwrap(), Standing::Unknown);
                    writer.add_user(&record(&key)).await.unwrap();
                    assert_eq!(
                        reader.standing(as_key(&key)).await.unwrap(),
                        Standing::Active { role: Role::Member, account: as_key(&key) },
                        "{key}"
                    );
                    let room = writer.create_room("r", as_key(&key)).await.unwrap();
                    assert_eq!(reader.rooms_of_member(as_key(&key)).await.unwrap(), vec![room.id], "{key}");
                    writer
                        .set_user_status(as_key(&key), UserStatus::Revoked, unibus_proto::Actor::Bootstrap)
                        .await
                        .unwrap();
                    assert_eq!(reader.standing(as_key(&key)).await.unwrap(), Standing::Revoked, "{key}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The readers asked for the users' standing 64 x 10 x 3 times; far
    // fewer leader probes means callers shared them (joined a probe sent
    // after they asked), which is what could go wrong here.
    let (asked, probed) = (64 * 10 * 3, probes.take().await.requests(&users));
    println!("freshness: {asked} standing reads shared {probed} leader probes of the users stream");
    assert!(probed > 0, "no leader probe of the users stream seen: the watch saw nothing");
    assert!(probed < asked / 2, "{probed} leader probes for {asked} reads: callers did not share them");
}

/// A recent read ([`Fresh::Recent`]) sees every write of its own process
/// at once (the write counts as unproven until a probe sent after it
/// answers), and what another instance wrote once [`RECENT`] has passed;
/// under steady traffic the reads share few leader probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_reads_see_own_writes_at_once_and_others_within_the_bound() {
    let stack = Stack::start_without_xkey().await;
    let other = stack.open_store().await;
    let own = stack.store().clone();
    let users = format!("$JS.API.STREAM.INFO.KV_{}", subjects::BUCKET_USERS);
    let probes = stack.watch(&[], &[&users]).await;
    let blocker = format!("b1{}", "7".repeat(62));
    own.add_user(&record(&blocker)).await.unwrap();
    for round in 0..20u8 {
        // This process's own writes: seen by the very next recent read.
        let key = format!("a1{round:02x}{}", "7".repeat(60));
        own.add_user(&record(&key)).await.unwrap();
        let [seen] = own.accounts([as_key(&key)], Fresh::Recent).await.unwrap();
        assert!(seen.is_some_and(|a| a.active), "{key}: own write not seen");
        own.block(as_key(&blocker), as_key(&key), 1_000).await.unwrap();
        assert!(own.has_blocked_at(as_key(&blocker), as_key(&key), Fresh::Recent).await.unwrap());
        own.unblock(as_key(&blocker), as_key(&key)).await.unwrap();
        assert!(!own.has_blocked_at(as_key(&blocker), as_key(&key), Fresh::Recent).await.unwrap());
        // Another instance's write: seen once the bound has passed.
        let key = format!("a2{round:02x}{}", "7".repeat(60));
        other.add_user(&record(&key)).await.unwrap();
        let room = other.create_room("r", as_key(&key)).await.unwrap();
        tokio::time::sleep(RECENT + Duration::from_millis(5)).await;
        let [seen] = own.accounts([as_key(&key)], Fresh::Recent).await.unwrap();
        assert!(seen.is_some(), "{key}: another instance's write not seen after {RECENT:?}");
        let members = own.room_members(&room.id, Fresh::Recent).await.unwrap();
        assert_eq!(members, Some(vec![as_key(&key)]), "{key}");
    }
    // Steady traffic: 2,000 recent reads share a handful of probes.
    probes.take().await;
    let probes = stack.watch(&[], &[&users]).await;
    let start = std::time::Instant::now();
    for _ in 0..2_000 {
        own.accounts([as_key(&blocker)], Fresh::Recent).await.unwrap();
    }
    let (elapsed, probed) = (start.elapsed(), probes.take().await.requests(&users));
    println!("freshness: 2000 recent reads in {elapsed:?} took {probed} leader probes");
    assert!(probed < 200, "{probed} leader probes for 2000 recent reads: the proof is not shared");
}

/// `mail.send` never refuses on a view that trails: a change another
/// instance made a moment ago that lifts a refusal (an account restored,
/// an unblock) is honoured by the very next send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_send_refuses_only_on_a_current_view() {
    let stack = Stack::start_mail_unlimited().await;
    let other = stack.open_store().await;
    let (_admin, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let (a, b) = (as_key(&alice.sign_pub_hex()), as_key(&bob.sign_pub_hex()));
    let to_bob = |n: usize| {
        let body = format!("m{n}");
        let envelope = dm(&alice, &bob.sign_pub_hex(), &[bob.recipient()], body.as_bytes(), now_ms());
        serde_json::to_vec(&MailSendRequest { envelope }).unwrap()
    };
    let send = |n: usize| {
        let (c, body) = (alice_c.clone(), to_bob(n));
        async move {
            let reply = c.call_raw(subjects::MAIL_SEND, body).await.unwrap();
            unibus::decode_reply::<MailSendReply>(subjects::MAIL_SEND, &reply)
        }
    };
    let bootstrap = unibus_proto::Actor::Bootstrap;
    for n in 0..20 {
        // Refused while bob is revoked (judged on a current view, which
        // also makes the recent view's proof young)...
        other.set_user_status(b, UserStatus::Revoked, bootstrap).await.unwrap();
        let refused = send(3 * n).await;
        assert!(refused.is_err(), "send {n} to a revoked account: {refused:?}");
        // ...and stored the moment another instance restores him, even
        // while unibusd's users index still shows him revoked (its watch
        // held for 50 ms): that refusal is judged again on a current view.
        let hold = stack.store().hold_users_index();
        other.set_user_status(b, UserStatus::Active, bootstrap).await.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(hold);
        });
        let sent = send(3 * n + 1).await;
        assert!(sent.is_ok(), "send {n} right after a restore elsewhere: {sent:?}");
        other.block(b, a, 1_000).await.unwrap();
        other.unblock(b, a).await.unwrap();
        let sent = send(3 * n + 2).await;
        assert!(sent.is_ok(), "send {n} right after an unblock elsewhere: {sent:?}");
    }
}
