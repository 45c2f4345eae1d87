//! Fail closed: when the store cannot answer, the callout denies and the
//! control plane answers `unavailable`; both recover by themselves when the
//! store is back, without restarting unibusd.

use serde_json::json;
use unibus::Identity;
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibusd::store::{Store, StoreConfig};

use crate::support::{Stack, Xkey, code, expect_signed_denial_of};

async fn store_outage(xkey: Xkey) {
    let stack = Stack::start_with(xkey).await;
    let mut errors = stack.auth_errors().await;
    let (root, admin) = stack.admin().await;
    let (bob, bob_conn) = stack.user(&admin, Role::Member, "bob").await;
    drop(bob_conn);
    let room = admin.create_room("r").await.unwrap();
    drop(admin);
    let admin = stack.connect(&root).await.unwrap();
    let invite = admin.create_invite(&Default::default()).await.unwrap();
    let users = stack.store().list_users().await.unwrap();

    // The users bucket disappears.
    let js = stack.jetstream().await;
    js.delete_stream("KV_UNIBUS_users").await.unwrap();

    // A known member is denied (not let in as guest, not allowed), by a
    // signed denial rather than a hanging connect.
    let reason = expect_signed_denial_of(&mut errors, &bob.nkey_public(), stack.connect(&bob)).await;
    assert_eq!(reason, "authorization store unavailable");
    // So is an unknown key: no guest access while the store is blind.
    let stranger = Identity::generate();
    let reason =
        expect_signed_denial_of(&mut errors, &stranger.nkey_public(), stack.connect(&stranger)).await;
    assert_eq!(reason, "authorization store unavailable");
    // The still-connected admin gets `unavailable` from every endpoint.
    let b = bob.sign_pub_hex();
    let r = room.id.clone();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (subjects::WHOAMI, json!({})),
        (subjects::USER_LOOKUP, json!({"sign_pub": b})),
        (
            subjects::REGISTER,
            // Well formed for the caller (its binding verifies), so that only
            // the store can refuse it.
            json!({"invite": invite.token, "kex_pub": root.kex_pub_hex(), "kex_sig": root.bind(&root.sign_pub_hex()).to_string(), "device_list": root.first_device_list()}),
        ),
        (subjects::ADMIN_INVITE_CREATE, json!({})),
        (subjects::ADMIN_INVITE_LIST, json!({})),
        (subjects::ADMIN_INVITE_GET, json!({"id": invite.invite.id})),
        (subjects::ADMIN_INVITE_CANCEL, json!({"id": invite.invite.id})),
        (subjects::ADMIN_USER_LIST, json!({})),
        (subjects::ADMIN_USER_GET, json!({"sign_pub": b})),
        (subjects::ADMIN_USER_REVOKE, json!({"sign_pub": b})),
        (subjects::ADMIN_USER_RESTORE, json!({"sign_pub": b})),
        (subjects::ADMIN_USER_DELETE, json!({"sign_pub": b})),
        (subjects::ROOM_CREATE, json!({"name": "x"})),
        (subjects::ROOM_GET, json!({"id": r})),
        (subjects::ROOM_LIST, json!({})),
        (subjects::ROOM_MEMBER_ADD, json!({"id": r, "sign_pub": b})),
        (subjects::ROOM_MEMBER_REMOVE, json!({"id": r, "sign_pub": b})),
    ];
    for (subject, body) in &cases {
        let got = admin.call::<_, serde_json::Value>(subject, body).await;
        assert_eq!(code(got), "unavailable", "{subject}");
    }

    // The operator restores the bucket; unibusd is not restarted.
    let restored = Store::open(stack.service_nats().await, &StoreConfig::default()).await.unwrap();
    for u in &users {
        restored.add_user(u).await.unwrap();
    }
    assert_eq!(stack.connect(&bob).await.unwrap().whoami().await.unwrap().name, "bob");
    assert_eq!(admin.whoami().await.unwrap().sign_pub, admin.sign_pub());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_fails_closed_and_recovers_with_xkey() {
    store_outage(Xkey::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_fails_closed_and_recovers_without_xkey() {
    store_outage(Xkey::Plain).await;
}

/// JetStream itself gone (the server restarted without its store): the
/// callout denies until it is back. Here: the server is stopped and
/// restarted on the same store; unibusd reconnects and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_survived_without_restarting_unibusd() {
    let mut stack = Stack::start().await;
    let (admin_id, admin) = stack.admin().await;
    drop(admin);
    let server = stack.server.take().unwrap();
    let port = server.port;
    server.stop().await;
    // Nothing listens now: a connect fails to reach a server (not a denial).
    let down = stack.connect(&admin_id).await;
    assert!(matches!(down, Err(unibus::ClientError::Connect(_))), "{:?}", down.map(|_| "connected"));
    stack.restart_server(port).await;
    // unibusd (same process, same connection object) serves again.
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(c) = stack.connect(&admin_id).await
            && c.whoami().await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "unibusd did not recover after the server came back");
}

/// A user record that does not decode (written by another tool) denies its
/// key: it is neither let in as a guest nor as a user, and it does not
/// disturb anyone else. Rewriting the record readmits the key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_user_record_denies_only_that_key() {
    let stack = Stack::start().await;
    let mut errors = stack.auth_errors().await;
    let (_root, admin) = stack.admin().await;
    let (bob, bob_conn) = stack.user(&admin, Role::Member, "bob").await;
    drop(bob_conn);
    let (record, _) = stack.store().get_user(bob.sign_key()).await.unwrap().unwrap();
    let kv = stack.jetstream().await.get_key_value(subjects::BUCKET_USERS).await.unwrap();
    kv.put(bob.sign_pub_hex(), "{\"role\":".into()).await.unwrap();

    let reason = expect_signed_denial_of(&mut errors, &bob.nkey_public(), stack.connect(&bob)).await;
    assert!(!reason.is_empty(), "a reason for the corrupt record");
    // Others are unaffected: the admin's requests and a guest's connect work.
    assert_eq!(admin.whoami().await.unwrap().sign_pub, admin.sign_pub());
    assert!(stack.connect(&Identity::generate()).await.is_ok());

    kv.put(bob.sign_pub_hex(), serde_json::to_vec(&record).unwrap().into()).await.unwrap();
    assert_eq!(stack.connect(&bob).await.unwrap().whoami().await.unwrap().name, "bob");
}

/// A connection whose task is gone for good (here: closed under unibusd's
/// feet) stops serving, so that the binary exits non-zero and its
/// supervisor restarts it; unibusd never stays up unable to admit anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_stops_serving() {
    for role in ["store", "sys"] {
        let mut stack = Stack::start().await;
        let daemon = stack.daemon.as_mut().unwrap();
        let (_, client) = daemon.connections().iter().find(|(r, _)| *r == role).unwrap().clone();
        client.drain().await.unwrap();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), daemon.wait()).await;
        assert!(stopped.is_ok(), "unibusd kept serving with its {role} connection gone");
    }
}
