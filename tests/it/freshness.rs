//! Read-your-writes of the callout's store view across instances: the
//! standing of a key and its rooms come from watched indexes, and
//! concurrent callouts share leader probes, yet a write acknowledged to one
//! instance is seen by every later decision on another instance.

use crate::support::as_key;
use unibus_proto::records::{Role, User, UserStatus};
use unibus_proto::subjects;
use unibusd::store::Standing;

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
