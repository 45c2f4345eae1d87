//! Live revocation: revoke and delete close every live connection of the
//! key within 1 s of the reply; reconnects are denied (revoked) or land as
//! guest (deleted); restore takes effect on the next connect. Connections
//! admitted just before the write are swept too, a sweep that cannot list
//! is retried after the reply, and CONNZ is paged.

use std::time::Duration;

use futures::StreamExt as _;

use unibus::{ClientError, Identity};
use unibus_proto::records::{Role, UserStatus};
use unibus_proto::subjects;

use crate::support::syscheck::{Loops, SysPartition, open_connections, sys_client};
use crate::support::{Stack, code, expect_event_within, expect_server_error};

/// Revoke closes the user's connections (kicked >= 1) within 1 s, its
/// reconnects are denied; after restore it connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_live_connections_and_restore_readmits() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob, first) = stack.user(&admin, Role::Member, "bob").await;
    drop(first);
    let (bob_conn, mut events) = stack.connect_watched(&bob).await;
    let (_second, mut events2) = stack.connect_watched(&bob).await;

    let reply = admin.revoke_user(&bob.sign_pub_hex()).await.unwrap();
    assert_eq!(reply.user.status, UserStatus::Revoked);
    assert_eq!(reply.user.revoked_by.map(|k| k.to_string()).as_deref(), Some(admin.sign_pub()));
    assert!(reply.user.revoked_at.is_some());
    assert_eq!(reply.kicked, 2, "both live connections targeted");
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    expect_event_within(&mut events2, "disconnected", Duration::from_secs(1)).await;
    assert!(matches!(stack.connect(&bob).await, Err(ClientError::NotAuthorized)));
    // The old clients keep retrying and each reconnect is refused as an
    // authorization violation (not merely slow or cut off).
    expect_event_within(&mut events, "authorization violation", Duration::from_secs(5)).await;
    expect_event_within(&mut events2, "authorization violation", Duration::from_secs(5)).await;
    drop(bob_conn);

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
    let stack = Stack::start_without_xkey().await;
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
    let stack = Stack::start().await;
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

/// 4 loops connect a key as fast as they can while the admin revokes it: 3 s
/// after the reply the server lists no connection of the key, and every
/// connect begun after the reply was denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_during_reconnect_loops_leaves_no_connection() {
    // The loops load the machine: not alongside the other heavy tests.
    let _heavy = crate::support::HEAVY.lock().await;
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob, first) = stack.user(&admin, Role::Member, "bob").await;
    drop(first);
    let sys = sys_client(&stack.url, &stack.secrets).await;
    let loops = Loops::start(std::slice::from_ref(&stack.url), &bob, 4);
    loops.wait_admitted(8).await;

    let reply = admin.revoke_user(&bob.sign_pub_hex()).await.unwrap();
    let replied = tokio::time::Instant::now();
    loops.mark_reply();
    // (On a starved machine the listing may miss its 500 ms bound: then the
    // reply says so and the background sweeps must still close them all.)
    assert!(reply.kicked >= 1, "no live connection of the loops was targeted: {reply:?}");
    assert!(reply.kicked >= 8 || reply.kick_pending, "the loops' connections were targeted: {reply:?}");
    tokio::time::sleep_until(replied + Duration::from_secs(3)).await;
    let open = open_connections(&sys, &bob.sign_pub_hex(), 1).await;
    let (stats, held) = loops.stop().await;
    println!("revoke during loops: {stats:?}, kicked {}, held {}", reply.kicked, held.len());
    assert_eq!(open, Vec::new(), "connections of the revoked key 3 s after the reply");
    assert_eq!(stats.admitted_after, 0, "a connect begun after the reply was admitted");
    assert!(stats.denied_after > 0, "the loops kept trying and were denied");
}

/// A member connecting in 4 loops is removed from a room: 3 s after the
/// reply none of its open connections can publish to the room (another
/// member hears the owner's control message and nothing before it), while
/// before the removal it could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_removal_during_reconnect_loops_leaves_no_old_permission() {
    // The loops load the machine: not alongside the other heavy tests.
    let _heavy = crate::support::HEAVY.lock().await;
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (owner_id, owner) = stack.user(&admin, Role::Member, "olga").await;
    let (carol, carol_conn) = stack.user(&admin, Role::Member, "carol").await;
    let room = owner.create_room("loops").await.unwrap();
    owner.add_member(&room.id, &carol.sign_pub_hex()).await.unwrap();
    // Both were kicked by the changes: listen with a fresh connection.
    drop((owner, carol_conn));
    let listener = stack.connect(&owner_id).await.unwrap();
    let subject = subjects::room_msg(&room.id);
    let mut heard = listener.nats().subscribe(subject.clone()).await.unwrap();
    listener.nats().flush().await.unwrap();
    let probe = stack.connect(&carol).await.unwrap();
    probe.nats().publish(subject.clone(), "before".into()).await.unwrap();
    probe.nats().flush().await.unwrap();
    let first =
        tokio::time::timeout(Duration::from_secs(3), heard.next()).await.expect("member publish arrives");
    assert_eq!(&first.unwrap().payload[..], b"before");

    let loops = Loops::start(std::slice::from_ref(&stack.url), &carol, 4);
    loops.wait_admitted(8).await;
    let owner = stack.connect(&owner_id).await.unwrap();
    owner.remove_member(&room.id, &carol.sign_pub_hex()).await.unwrap();
    let replied = tokio::time::Instant::now();
    loops.mark_reply();
    // Keep looping a little past the reply; the old-permission connections
    // are the ones admitted before it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stats, mut held) = loops.stop().await;
    tokio::time::sleep_until(replied + Duration::from_secs(3)).await;
    held.push(probe.nats().clone());
    for (i, c) in held.iter().enumerate() {
        if c.connection_state() == async_nats::connection::State::Connected {
            let _ = c.publish(subject.clone(), format!("after {i}").into()).await;
            let _ = c.flush().await;
        }
    }
    // Each flush returned after the server handled that publish, so a
    // publish it let through reaches the listener before this control one.
    owner.nats().publish(subject.clone(), "control".into()).await.unwrap();
    owner.nats().flush().await.unwrap();
    let next =
        tokio::time::timeout(Duration::from_secs(3), heard.next()).await.expect("the listener still hears");
    println!("room removal during loops: {stats:?}, held {}", held.len());
    let payload = next.unwrap().payload;
    assert_eq!(
        String::from_utf8_lossy(&payload),
        "control",
        "a removed member's connection still publishes to the room"
    );
}

/// Connects `id` with the callout holding its admitting answer (decided
/// and signed, not yet published) until `revoke` has replied, then lets
/// the answer through. Returns the revoke's reply, the admitted client
/// and when the reply came: the connect was decided before the revoke's
/// write and reached the server after its first listing.
async fn connect_held_across<R>(
    stack: &Stack,
    id: &Identity,
    revoke: impl std::future::Future<Output = R>,
) -> (R, unibus::Client, tokio::time::Instant) {
    let mut held = unibusd::callout::hold::hold_answers_for(&id.sign_pub_hex());
    let (url, who) = (stack.url.clone(), id.clone());
    let connecting = tokio::spawn(async move { unibus::Client::connect(&url, &who).await });
    assert!(held.next_held(Duration::from_secs(1)).await, "the callout decided to admit the connect");
    let reply = revoke.await;
    let replied = tokio::time::Instant::now();
    held.release();
    let client = connecting.await.unwrap().expect("the connect decided before the revoke is admitted");
    (reply, client, replied)
}

/// Revocation without a gap, made certain: a connect of bob decided
/// before the revoke's write reaches the server only after the revoke's
/// first listing (the callout's answer is held until the reply). The
/// reply counts no connection, the connect is admitted and open, and the
/// settling sweep closes it: 3 s after the reply the server lists nothing
/// of bob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_a_connect_admitted_after_its_first_listing() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob, first) = stack.user(&admin, Role::Member, "bob").await;
    drop(first);
    let sys = sys_client(&stack.url, &stack.secrets).await;
    let key = bob.sign_pub_hex();
    let (reply, _late, replied) = connect_held_across(&stack, &bob, admin.revoke_user(&key)).await;
    let reply = reply.expect("revoke succeeds");
    assert_eq!((reply.kicked, reply.kick_pending), (0, false), "the first listing saw no connection");
    assert_eq!(open_connections(&sys, &key, 1).await.len(), 1, "admitted after the listing, still open");
    tokio::time::sleep_until(replied + Duration::from_secs(3)).await;
    assert_eq!(open_connections(&sys, &key, 1).await, Vec::new(), "bob's connection 3 s after the reply");
}

/// The same for a device revoke (`unibus.device.revoke`): the laptop's
/// connect decided before the write and admitted after the first listing
/// is closed by the settling sweep within 3 s of the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_revoke_closes_a_connect_admitted_after_its_first_listing() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let laptop = Identity::generate().with_account(&phone_id.sign_pub_hex()).unwrap();
    phone.add_device(&laptop.bundle(None)).await.unwrap();
    let sys = sys_client(&stack.url, &stack.secrets).await;
    let key = laptop.sign_pub_hex();
    let (reply, _late, replied) = connect_held_across(&stack, &laptop, phone.revoke_device(&key)).await;
    let reply = reply.expect("device revoke succeeds");
    assert_eq!((reply.kicked, reply.kick_pending), (0, false), "the first listing saw no connection");
    assert_eq!(open_connections(&sys, &key, 1).await.len(), 1, "admitted after the listing, still open");
    tokio::time::sleep_until(replied + Duration::from_secs(3)).await;
    assert_eq!(
        open_connections(&sys, &key, 1).await,
        Vec::new(),
        "the laptop's connection 3 s after the reply"
    );
}

/// While unibusd's system-account connection is cut off, a revoke still
/// succeeds (the write stands) and says `kick_pending`; once the connection
/// is back, the revoked key's connection is closed without another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_is_retried_when_system_account_is_unreachable() {
    let mut stack = Stack::start_server_only().await;
    let upstream = stack.url.trim_start_matches("nats://").to_string();
    let relay = SysPartition::start(upstream).await;
    let mut settings = stack.settings();
    settings.nats_urls = vec![relay.url.parse().unwrap()];
    stack.daemon = Some(unibusd::daemon::start(&settings).await.expect("unibusd starts"));
    let (_a, admin) = stack.admin().await;
    let (dave, first) = stack.user(&admin, Role::Member, "dave").await;
    drop(first);
    let (_conn, mut events) = stack.connect_watched(&dave).await;
    let sys = sys_client(&stack.url, &stack.secrets).await;

    relay.freeze(true);
    let reply = admin.revoke_user(&dave.sign_pub_hex()).await.expect("revoke succeeds without SYS");
    assert_eq!(reply.user.status, UserStatus::Revoked);
    assert!(reply.kick_pending, "the reply says closing is pending");
    assert_eq!(reply.kicked, 0);
    assert!(matches!(stack.connect(&dave).await, Err(ClientError::NotAuthorized)), "revoked at once");
    // Cut off, unibusd cannot close it: the connection is still open.
    assert_eq!(open_connections(&sys, &dave.sign_pub_hex(), 1).await.len(), 1);
    relay.freeze(false);
    // Retries come at most 2 s apart (plus one listing).
    expect_event_within(&mut events, "disconnected", Duration::from_secs(4)).await;
    assert_eq!(open_connections(&sys, &dave.sign_pub_hex(), 1).await, Vec::new());
}

/// CONNZ answers one page at a time: with a page of 2, a key's 5
/// connections are all found (3 pages) and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connz_is_paged() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let (erin, first) = stack.user(&admin, Role::Member, "erin").await;
    let mut conns = vec![first];
    for _ in 0..4 {
        conns.push(stack.connect(&erin).await.unwrap());
    }
    // Other users' connections on the same server are not listed.
    let (_f, _other) = stack.user(&admin, Role::Member, "frank").await;
    let sys = sys_client(&stack.url, &stack.secrets).await;
    let kicker = unibusd::kick::Kicker::with_page_size(sys.clone(), 2);
    let found = kicker.find(&erin.sign_pub_hex()).await;
    assert!(found.complete);
    let mut cids: Vec<u64> = found.targets.iter().map(|t| t.cid).collect();
    cids.sort_unstable();
    let mut expected: Vec<u64> =
        open_connections(&sys, &erin.sign_pub_hex(), 1).await.into_iter().map(|(_, cid)| cid).collect();
    expected.sort_unstable();
    assert_eq!((cids.len(), &cids), (5, &expected));
    assert_eq!(kicker.kick(&found.targets).await, 5);
    // The clients reconnect (erin is still a user), each with a new cid.
    let after = open_connections(&sys, &erin.sign_pub_hex(), 1).await;
    assert!(after.iter().all(|(_, cid)| !expected.contains(cid)), "{after:?} vs {expected:?}");
}

/// The settling sweep waits for the servers' own authorization timeout,
/// read from VARZ: a server configured with 3 s reports 3 s (not the 2 s
/// default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_sweep_follows_the_servers_auth_timeout() {
    let mut stack = Stack::start_server_only_without_xkey().await;
    let conf = std::fs::read_to_string(&stack.spec.config).unwrap();
    assert!(conf.contains("\nauthorization {"));
    std::fs::write(&stack.spec.config, conf.replace("\nauthorization {", "\nauthorization {\n  timeout: 3"))
        .unwrap();
    let port = stack.server.as_ref().unwrap().port;
    stack.server.take().unwrap().stop().await;
    stack.restart_server(port).await;
    let sys = sys_client(&stack.url, &stack.secrets).await;
    let kicker = unibusd::kick::Kicker::new(sys);
    assert_eq!(kicker.auth_timeout().await, Duration::from_secs(3));
}

/// Replies of servers before `kick_pending` still decode (as not pending),
/// and a reply with it decodes too.
#[test]
fn revoke_and_delete_replies_decode_with_and_without_kick_pending() {
    use unibus_proto::wire::{DeleteReply, RevokeReply};
    let old: DeleteReply =
        serde_json::from_str(&format!(r#"{{"deleted":"{}","kicked":2}}"#, "ab".repeat(32))).unwrap();
    assert_eq!((old.kicked, old.kick_pending), (2, false));
    let new: DeleteReply = serde_json::from_str(&format!(
        r#"{{"deleted":"{}","kicked":0,"kick_pending":true}}"#,
        "ab".repeat(32)
    ))
    .unwrap();
    assert!(new.kick_pending);
    let user = unibus_proto::records::User::new_active(
        unibus_proto::records::Device::first(
            unibus_proto::Key::from_bytes([0xab; 32]),
            unibus_proto::Key::from_bytes([0xcd; 32]),
            None,
        ),
        "bob",
        Role::Member,
        unibus_proto::Actor::Bootstrap,
        unibus_proto::InviteId::parse(&"ef".repeat(32)).unwrap(),
    );
    let mut old = serde_json::json!({ "user": user, "kicked": 1 });
    let decoded: RevokeReply = serde_json::from_value(old.clone()).unwrap();
    assert_eq!((decoded.kicked, decoded.kick_pending), (1, false));
    old["kick_pending"] = true.into();
    assert!(serde_json::from_value::<RevokeReply>(old).unwrap().kick_pending);
}
