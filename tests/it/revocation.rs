//! Live revocation: revoke and delete close every live connection of the
//! key within 1 s of the reply; reconnects are denied (revoked) or land as
//! guest (deleted); restore takes effect on the next connect.

use std::time::Duration;

use unibus::client::ClientError;
use unibus::model::{Role, UserStatus};
use unibus::subjects;

use crate::harness::{Stack, code, expect_event_within, expect_server_error};

/// Revoke closes the user's connections (kicked >= 1) within 1 s, its
/// reconnects are denied; after restore it connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_live_connections_and_restore_readmits() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (bob, first) = stack.user(&admin, Role::Member, "bob").await;
    drop(first);
    let (bob_conn, mut events) = stack.connect_watched(&bob).await;
    let (_second, mut events2) = stack.connect_watched(&bob).await;

    let reply = admin.revoke_user(&bob.sign_pub_hex()).await.unwrap();
    assert_eq!(reply.user.status, UserStatus::Revoked);
    assert_eq!(reply.user.revoked_by.as_deref(), Some(admin.sign_pub()));
    assert!(reply.user.revoked_at.is_some());
    assert_eq!(reply.kicked, 2, "both live connections targeted");
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    expect_event_within(&mut events2, "disconnected", Duration::from_secs(1)).await;
    assert!(matches!(stack.connect(&bob).await, Err(ClientError::NotAuthorized)));
    // The old client keeps retrying and is denied: requests do not go through.
    assert!(bob_conn.whoami().await.is_err());

    // Idempotent: revoking again changes nothing.
    let again = admin.revoke_user(&bob.sign_pub_hex()).await.unwrap();
    assert_eq!(again.user.updated_at, reply.user.updated_at);
    assert_eq!(again.kicked, 0);

    let restored = admin.restore_user(&bob.sign_pub_hex()).await.unwrap();
    assert_eq!((restored.status, restored.revoked_by), (UserStatus::Active, None));
    assert_eq!(stack.connect(&bob).await.unwrap().whoami().await.unwrap().name, "bob");
    let same = admin.restore_user(&bob.sign_pub_hex()).await.unwrap();
    assert_eq!(same.updated_at, restored.updated_at, "restore of an active user changes nothing");
}

/// Delete closes the user's connections within 1 s; the reconnect is a
/// guest; the record is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_live_connections_and_reconnect_is_guest() {
    let stack = Stack::start(false).await;
    let (_a, admin) = stack.admin().await;
    let (carol, first) = stack.user(&admin, Role::Member, "carol").await;
    drop(first);
    let (_conn, mut events) = stack.connect_watched(&carol).await;
    let reply = admin.delete_user(&carol.sign_pub_hex()).await.unwrap();
    assert_eq!(reply.deleted, carol.sign_pub_hex());
    assert!(reply.kicked >= 1);
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    assert_eq!(code(admin.get_user(&carol.sign_pub_hex()).await), "not_found");
    assert_eq!(code(admin.delete_user(&carol.sign_pub_hex()).await), "not_found");

    let (guest, mut errs) = stack.connect_watched(&carol).await;
    guest.nats().publish(subjects::WHOAMI, "{}".into()).await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Publish to \"unibus.whoami\"").await;
}

/// The last active admin can be neither revoked nor deleted; with a second
/// admin both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_active_admin_is_protected() {
    let stack = Stack::start(true).await;
    let (root, admin) = stack.admin().await;
    assert_eq!(code(admin.revoke_user(&root.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(admin.delete_user(&root.sign_pub_hex()).await), "forbidden");
    let (ops, ops_conn) = stack.user(&admin, Role::Admin, "ops").await;
    // Two admins: ops may revoke root, and then root is not the last one.
    let r = ops_conn.revoke_user(&root.sign_pub_hex()).await.unwrap();
    assert_eq!(r.user.status, UserStatus::Revoked);
    // Now ops is the last active admin.
    assert_eq!(code(ops_conn.revoke_user(&ops.sign_pub_hex()).await), "forbidden");
    assert_eq!(code(ops_conn.delete_user(&ops.sign_pub_hex()).await), "forbidden");
    ops_conn.restore_user(&root.sign_pub_hex()).await.unwrap();
    assert!(stack.connect(&root).await.is_ok());
}
