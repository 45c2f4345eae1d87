//! Invites: creation by an admin, redemption races, crash recovery and
//! every error code of the register path.

use crate::support::as_key;
use futures::StreamExt as _;
use sha2::Digest as _;
use unibus::Identity;
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{InviteStatus, Role, UserStatus};
use unibus_proto::subjects;
use unibus_proto::wire::InviteCreateRequest;

use crate::support::{Stack, Xkey, code};

/// Admin bootstrap -> admin connects through the callout -> creates
/// invites: 64-hex token, 7-day default, TTL bounds, role honoured, and KV
/// holds only the SHA-256 id, never the token.
async fn admin_creates_invites(xkey: Xkey) {
    let stack = Stack::start_with(xkey).await;
    let (_id, admin) = stack.admin().await;

    let r = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    assert_eq!(r.token.len(), 64);
    assert!(r.token.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(r.link, format!("unibus://invite/{}", r.token));
    let token_bytes = hex::decode(&r.token).unwrap();
    assert_eq!(r.invite.id, hex::encode(sha2::Sha256::digest(&token_bytes)));
    let ttl = r.invite.expires_at.get() - r.invite.created_at.get();
    assert_eq!(ttl.whole_seconds(), 604_800);
    assert_eq!((r.invite.role, r.invite.status), (Role::Member, InviteStatus::Pending));
    assert_eq!(r.invite.created_by, admin.sign_pub());

    for (ttl, ok) in [(59, false), (60, true), (2_592_000, true), (2_592_001, false)] {
        let res =
            admin.create_invite(&InviteCreateRequest { ttl_secs: Some(ttl), ..Default::default() }).await;
        match ok {
            true => {
                let inv = res.unwrap().invite;
                let got = inv.expires_at.get() - inv.created_at.get();
                assert_eq!(got.whole_seconds(), ttl as i64);
            }
            false => assert_eq!(code(res), "bad_request", "ttl {ttl}"),
        }
    }

    // Role honoured: an admin invite makes an admin.
    let adm = admin
        .create_invite(&InviteCreateRequest {
            role: Some(Role::Admin),
            note: Some("ops".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(adm.invite.note, "ops");
    let id = Identity::generate();
    let guest = stack.connect(&id).await.unwrap();
    let user = guest.register(&adm.token.to_uppercase(), None).await.unwrap();
    assert_eq!(user.role, Role::Admin);
    assert_eq!(user.name, id.sign_pub_hex()[..8]);
    assert_eq!(user.invited_by, admin.sign_pub());
    assert_eq!(user.invite_id, adm.invite.id);

    // Nothing in the invites stream contains a token.
    let js = stack.jetstream().await;
    let stream = js.get_stream("KV_UNIBUS_invites").await.unwrap();
    let info = stream.get_info().await.unwrap();
    let mut seen_ids = 0;
    for seq in 1..=info.state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else { continue };
        let text = format!("{} {}", m.subject, String::from_utf8_lossy(&m.payload));
        for t in [&r.token, &adm.token] {
            assert!(!text.to_lowercase().contains(t.as_str()), "token stored in KV");
        }
        if text.contains(r.invite.id.as_str()) {
            seen_ids += 1;
        }
    }
    assert!(seen_ids >= 1, "the id is the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_invites_with_xkey() {
    admin_creates_invites(Xkey::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_invites_without_xkey() {
    admin_creates_invites(Xkey::Plain).await;
}

/// 50 concurrent redeemers of one invite: exactly one user is created; the
/// other 49 get `invite_used`. They raced: claims made at the revision
/// they all read reached the store, which let one through (a new invite
/// and 50 new guests are tried until that is seen, at most 6 times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_redeemers_one_winner() {
    let stack = Stack::start().await;
    let (_id, admin) = stack.admin().await;
    let watch = stack.watch(&[subjects::BUCKET_INVITES], &[]).await;
    for round in 1..=6 {
        let inv = admin.create_invite(&Default::default()).await.unwrap();
        let mut guests = Vec::new();
        for _ in 0..50 {
            guests.push(stack.connect(&Identity::generate()).await.unwrap());
        }
        let results: Vec<_> = futures::stream::iter(guests.iter())
            .map(|c| c.register(&inv.token, None))
            .buffer_unordered(50)
            .collect()
            .await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one winner");
        for r in results.iter().filter(|r| r.is_err()) {
            let e = r.as_ref().unwrap_err().service_error().expect("service error");
            assert_eq!(e.code(), "invite_used");
        }
        let users = stack.store().list_users().await.unwrap();
        let from_invite: Vec<_> = users.iter().filter(|u| u.invite_id == inv.invite.id).collect();
        assert_eq!(from_invite.len(), 1);
        assert_eq!(from_invite[0].sign_pub, winners[0].sign_pub);
        let (stored, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
        assert_eq!(stored.status, InviteStatus::Used);
        assert!(stored.completed);
        assert_eq!(
            stored.used_by.map(|k| k.to_string()).as_deref(),
            Some(winners[0].sign_pub.to_hex().as_str())
        );
        if let Some(lost) =
            watch.take().await.lost_races(subjects::BUCKET_INVITES).get(inv.invite.id.as_str())
        {
            println!("fifty redeemers: {lost} claims lost at the store in round {round}");
            return;
        }
    }
    panic!("in 6 rounds no two claims of one invite met at the store");
}

/// A crash between "mark used" and "create user" loses nothing: the same
/// key's retry completes it; any other key gets `invite_used`, and so does
/// anyone once it is completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_retry_completes_interrupted_redemption() {
    let stack = Stack::start().await;
    let (_id, admin) = stack.admin().await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let alice = Identity::generate();
    // Step 3 only, as if unibusd died right after it.
    let token = InviteToken::parse(&inv.token).unwrap();
    stack.store().claim_invite(&token, alice.sign_key()).await.unwrap();
    let (mid, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
    assert_eq!((mid.status, mid.completed), (InviteStatus::Used, false));
    assert!(stack.store().get_user(alice.sign_key()).await.unwrap().is_none());

    let other = stack.connect(&Identity::generate()).await.unwrap();
    assert_eq!(code(other.register(&inv.token, None).await), "invite_used");

    let guest = stack.connect(&alice).await.unwrap();
    let user = guest.register(&inv.link, Some("alice")).await.unwrap();
    assert_eq!(user.invite_id, inv.invite.id);
    let (done, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
    assert!(done.completed);

    // Completed: even alice (say, after deletion) cannot replay it.
    stack.store().delete_user(alice.sign_key()).await.unwrap();
    drop(guest);
    let again = stack.connect(&alice).await.unwrap();
    assert_eq!(code(again.register(&inv.token, None).await), "invite_used");
}

/// invite_expired, invite_cancelled, invite_not_found, user_exists (the
/// invite stays spent), forbidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_admin_error_codes() {
    let stack = Stack::start().await;
    let (_id, admin) = stack.admin().await;
    let store = stack.store();
    let guest = stack.connect(&Identity::generate()).await.unwrap();

    let (_, expired) = store
        .create_invite(Role::Member, String::new(), unibus_proto::Actor::Key(as_key(admin.sign_pub())), 0)
        .await
        .unwrap();
    assert_eq!(code(guest.register(&expired.to_hex(), None).await), "invite_expired");

    let cancelled = admin.create_invite(&Default::default()).await.unwrap();
    let c = store
        .cancel_invite(&cancelled.invite.id, unibus_proto::Actor::Key(as_key(admin.sign_pub())))
        .await
        .unwrap();
    assert_eq!(c.status, InviteStatus::Cancelled);
    assert_eq!(code(guest.register(&cancelled.token, None).await), "invite_cancelled");

    let unknown = InviteToken::generate();
    assert_eq!(code(guest.register(&unknown.link(), None).await), "invite_not_found");

    // A registered key redeeming a fresh invite: user_exists, invite spent.
    let fresh = admin.create_invite(&Default::default()).await.unwrap();
    assert_eq!(code(admin.register(&fresh.token, None).await), "user_exists");
    let (spent, _) = store.get_invite(&fresh.invite.id).await.unwrap().unwrap();
    assert_eq!(spent.status, InviteStatus::Used);
    assert_eq!(code(guest.register(&fresh.token, None).await), "invite_used");

    // forbidden: a second admin revoked while still connected.
    let (ops, ops_conn) = stack.user(&admin, Role::Admin, "ops").await;
    store
        .set_user_status(
            ops.sign_key(),
            UserStatus::Revoked,
            unibus_proto::Actor::Key(as_key(admin.sign_pub())),
        )
        .await
        .unwrap();
    assert_eq!(code(ops_conn.create_invite(&Default::default()).await), "forbidden");
    assert_eq!(code(ops_conn.whoami().await), "forbidden");
}

/// The first-admin invite: only the newest pending one works, and none can
/// be minted once an admin exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_supersedes_and_then_refuses() {
    let stack = Stack::start_without_xkey().await;
    let store = stack.store();
    let (first, t1) = store.bootstrap_admin_invite(600).await.unwrap();
    let (_, t2) = store.bootstrap_admin_invite(600).await.unwrap();
    let (old, _) = store.get_invite(&first.id).await.unwrap().unwrap();
    assert_eq!(old.status, InviteStatus::Cancelled);
    let id = Identity::generate();
    let guest = stack.connect(&id).await.unwrap();
    assert_eq!(code(guest.register(&t1.to_hex(), None).await), "invite_cancelled");
    let admin = guest.register(&t2.to_hex(), None).await.unwrap();
    assert_eq!((admin.role, admin.invited_by.to_string().as_str()), (Role::Admin, "bootstrap"));
    let refused = store.bootstrap_admin_invite(600).await;
    assert_eq!(refused.err().unwrap().code(), "forbidden");
}

/// Deleting a user finishes the invite it registered with, so the deleted
/// key cannot replay it: both after a normal registration and after a crash
/// between "create user" and "mark completed" (invite used, not completed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_user_cannot_replay_its_invite() {
    let stack = Stack::start().await;
    let (_id, admin) = stack.admin().await;

    // Normal registration, deleted over the wire, replayed by the same key.
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let alice = Identity::generate();
    stack.connect(&alice).await.unwrap().register(&inv.token, None).await.unwrap();
    admin.delete_user(&alice.sign_pub_hex()).await.unwrap();
    let again = stack.connect(&alice).await.unwrap();
    assert_eq!(code(again.register(&inv.token, None).await), "invite_used");

    // The crash case: claimed and user created, but never completed.
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let bob = Identity::generate();
    let token = InviteToken::parse(&inv.token).unwrap();
    let claimed = stack.store().claim_invite(&token, bob.sign_key()).await.unwrap();
    let user = unibus_proto::records::User::new_active(
        unibus_proto::records::Device::first(bob.sign_key(), bob.kex_key(), None),
        "bob",
        Role::Member,
        claimed.created_by,
        claimed.id.clone(),
    );
    stack.store().add_user(&user).await.unwrap();
    let (mid, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
    assert_eq!((mid.status, mid.completed), (InviteStatus::Used, false));
    admin.delete_user(&bob.sign_pub_hex()).await.unwrap();
    let (after, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
    assert_eq!((after.status, after.completed), (InviteStatus::Used, true));
    let guest = stack.connect(&bob).await.unwrap();
    assert_eq!(code(guest.register(&inv.token, None).await), "invite_used");
    assert!(stack.store().get_user(bob.sign_key()).await.unwrap().is_none());
}
