//! The store's one read-modify-write helper under lost races: a writer that
//! gets in between a read and its compare-and-swap makes the rule be judged
//! again on the new record (nothing lost), a record that keeps changing is
//! given up as `unavailable` after 16 attempts, and concurrent requests on
//! one record (room adds, block adds on a list not yet created, cancel
//! against redeem) all land or have exactly one winner.

use crate::support::{as_key, as_room};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use unibus::Identity;
use unibus_proto::error::Error;
use unibus_proto::records::{InviteStatus, Room};
use unibus_proto::subjects;
use unibusd::store::{RoomChange, Store};

use crate::support::{Stack, code};

/// A room record with `key` added to its members.
fn with_member(room: &Room, key: &str) -> RoomChange {
    let mut next = room.clone();
    next.members.push(as_key(key));
    RoomChange::Write(next)
}

/// Adds `key` to room `id` through another store handle, from inside a
/// running rule (between that rule's read and its CAS).
fn interpose(other: &Store, id: &str, key: &str) {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            other
                .change_room(&as_room(id), |room| Ok(with_member(room, key)))
                .await
                .expect("interposed write")
        })
    });
}

/// A write that lands between the rule's read and its CAS makes the CAS
/// fail; the rule is judged again on the new record, and both changes stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_is_judged_again_on_the_new_record() {
    let stack = Stack::start_without_xkey().await;
    let store = stack.store();
    let other = stack.open_store().await;
    let owner = Identity::generate().sign_pub_hex();
    let room = store.create_room("race", as_key(&owner)).await.unwrap();
    let (bob, carol) = (Identity::generate().sign_pub_hex(), Identity::generate().sign_pub_hex());

    let calls = AtomicUsize::new(0);
    let (after, changed) = store
        .change_room(&room.id, |current| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                interpose(&other, &room.id, &carol);
            } else {
                assert!(current.has_member(as_key(&carol)), "judged again on the record written over");
            }
            Ok(with_member(current, &bob))
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one lost race, one re-read");
    assert!(changed);
    let (stored, _) = store.get_room(&room.id).await.unwrap().unwrap();
    assert_eq!(stored, after);
    for key in [&owner, &bob, &carol] {
        assert!(stored.has_member(as_key(key)), "lost update of {key}");
    }
}

/// A record that changes under every attempt is given up after 16 lost
/// races as `unavailable`, and the rule's own change is not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_keeps_changing_is_given_up_as_unavailable() {
    let stack = Stack::start_without_xkey().await;
    let store = stack.store();
    let other = stack.open_store().await;
    let room = store.create_room("busy", as_key(&Identity::generate().sign_pub_hex())).await.unwrap();
    let bob = Identity::generate().sign_pub_hex();

    let calls = AtomicUsize::new(0);
    let result = store
        .change_room(&room.id, |current| {
            calls.fetch_add(1, Ordering::SeqCst);
            interpose(&other, &room.id, &Identity::generate().sign_pub_hex());
            Ok(with_member(current, &bob))
        })
        .await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 16);
    let (stored, _) = store.get_room(&room.id).await.unwrap().unwrap();
    assert_eq!(stored.members.len(), 1 + 16, "every interposed write stands");
    assert!(!stored.has_member(as_key(&bob)), "the given-up change was written");
}

/// Twelve concurrent adds to one room, by its owner and by an admin, all
/// land: the final member list holds every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_member_adds_to_one_room_all_land() {
    let stack = Stack::start_without_xkey().await;
    let (_root, admin) = stack.admin().await;
    let (_alice, alice_c, room) = stack.room_owner(&admin, "alice", "busy").await;
    let users = stack.seed_members(12).await;
    let store = stack.store();
    let watch = stack.watch(&[subjects::BUCKET_ROOMS], &[]).await;
    let adds = users.iter().enumerate().map(|(i, u)| {
        let by = if i % 2 == 0 { &alice_c } else { &admin };
        by.add_member(&room.id, u)
    });
    for (r, u) in futures::future::join_all(adds).await.into_iter().zip(&users) {
        assert!(r.expect("add succeeds").has_member(as_key(u)));
    }
    let (stored, _) = store.get_room(&room.id).await.unwrap().unwrap();
    assert_eq!(stored.members.len(), 1 + users.len(), "{:?}", stored.members);
    for u in &users {
        assert!(stored.has_member(as_key(u)), "lost update of {u}");
    }
    for u in &users {
        assert!(store.rooms_of_member(as_key(u)).await.unwrap().contains(&room.id));
    }
    let lost = watch.take().await.lost_races(subjects::BUCKET_ROOMS);
    assert!(lost.contains_key(room.id.as_str()), "no two adds met at the store: {lost:?}");
    println!("concurrent member adds: {} compare-and-swaps lost a race", lost[room.id.as_str()]);
}

/// Sixteen concurrent blocks by one user whose block list does not exist
/// yet: one creates the record, the others lose that race and update it;
/// every key ends up listed, sorted. They raced: more than one tried to
/// create the list (new users are tried until that is seen, at most 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blocks_on_a_new_list_all_land() {
    let stack = Stack::start_without_xkey().await;
    let store = stack.store();
    let watch = stack.watch(&[subjects::BUCKET_BLOCKS], &[]).await;
    for round in 1..=8 {
        let owner = Identity::generate().sign_pub_hex();
        let keys: Vec<String> = (0..16).map(|_| Identity::generate().sign_pub_hex()).collect();
        let results =
            futures::future::join_all(keys.iter().map(|k| store.block(as_key(&owner), as_key(k), 1000)))
                .await;
        for r in results {
            assert!(r.unwrap().1, "each block changed the list");
        }
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(store.blocked_by(as_key(&owner)).await.unwrap(), expected);
        let log = watch.take().await;
        let creates =
            log.writes_to(subjects::BUCKET_BLOCKS, &owner).iter().filter(|w| **w == Some(0)).count();
        if creates > 1 {
            println!("concurrent blocks: {creates} tried to create the list in round {round}");
            return;
        }
    }
    panic!("in 8 rounds never more than one block tried to create the list: they did not race");
}

/// An admin cancels invites while guests redeem them, at the same time:
/// for each invite exactly one wins, the other gets `invite_used` (cancel
/// lost) or `invite_cancelled` (redeem lost), and the record says who won.
/// The store shows that they raced: for some invite both wrote at the
/// revision they had both read, and the store refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_against_redeem_has_one_winner() {
    let stack = Stack::start_without_xkey().await;
    let (_root, admin) = stack.admin().await;
    let watch = stack.watch(&[subjects::BUCKET_INVITES], &[]).await;
    // A pair meets at the store only near the delay (between the cancel's
    // start and the redeem's) at which the winner flips, and that depends
    // on the machine and the build. Each round tries 12 delays 1 ms apart
    // and moves them towards the flip until some pair met.
    let mut base = 0u64;
    for round in 1..=20 {
        let mut races = Vec::new();
        for _ in 0..12 {
            let inv = admin.create_invite(&Default::default()).await.unwrap();
            let guest = stack.connect(&Identity::generate()).await.unwrap();
            races.push((inv, guest));
        }
        let admin = &admin;
        let runs = races.iter().enumerate().map(|(i, (inv, guest))| async move {
            let redeem = async {
                tokio::time::sleep(Duration::from_millis(base + i as u64)).await;
                guest.register(&inv.token, None).await
            };
            futures::join!(admin.cancel_invite(&inv.invite.id), redeem)
        });
        let mut cancels_won = 0;
        for ((inv, _), outcome) in races.iter().zip(futures::future::join_all(runs).await) {
            let (stored, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
            match outcome {
                (Ok(c), r @ Err(_)) => {
                    assert_eq!(code(r), "invite_cancelled");
                    assert_eq!((c.status, stored.status), (InviteStatus::Cancelled, InviteStatus::Cancelled));
                    cancels_won += 1;
                }
                (c @ Err(_), Ok(user)) => {
                    assert_eq!(code(c), "invite_used");
                    assert_eq!(stored.status, InviteStatus::Used);
                    assert_eq!(
                        stored.used_by.map(|k| k.to_string()).as_deref(),
                        Some(user.sign_pub.to_hex().as_str())
                    );
                }
                other => panic!("not exactly one winner: {other:?}"),
            }
        }
        let lost = watch.take().await.lost_races(subjects::BUCKET_INVITES);
        let met = races.iter().filter(|(inv, _)| lost.contains_key(inv.invite.id.as_str())).count();
        if met > 0 {
            println!(
                "cancel against redeem: {met} of 12 pairs met at the store in round {round} (delays {base}..{} ms)",
                base + 11
            );
            return;
        }
        match cancels_won {
            0 => base += 8,
            12 => base = base.saturating_sub(8),
            _ => {}
        }
    }
    panic!("in 20 rounds no cancel and redeem of one invite met at the store");
}
