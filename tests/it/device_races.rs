//! Races of the device rules (docs/protocol.md sections 8 and 9) through a
//! real nats-server, each run until it has shown that it raced (see
//! [`crate::evidence`]): a device revoked a moment ago cannot revoke a
//! sibling; an admin revoked a moment ago cannot revoke another account's
//! device; two admins revoking the last admin devices at once leave one;
//! two devices revoking themselves at once leave one; two accounts adding
//! one key at once have one winner.

use crate::support::as_key;
use tokio::time::Instant;
use unibus::Identity;
use unibus_proto::endpoint::{DeviceAdd, DeviceRevoke, Endpoint as _};
use unibus_proto::records::{DeviceStatus, Role, User};
use unibus_proto::subjects::{BUCKET_DEVICES, BUCKET_USERS};
use unibus_proto::wire::InviteCreateRequest;

use crate::support::devices::{CALLER_GONE, LAST_ADMIN_RACE, new_device, refused_with};
use crate::support::evidence::Log;
use crate::support::{Stack, code};

/// Runs `call` and notes when its reply arrived.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Instant) {
    let out = call.await;
    (out, Instant::now())
}

/// Both requests on `subject` (of these two callers) were at the server
/// before either reply arrived.
fn both_in_flight(log: &Log, subject: &str, callers: [&str; 2], first_reply: Instant) -> bool {
    let seen = callers.map(|c| log.request_at(subject, c));
    seen.iter().all(|at| at.is_some_and(|at| at < first_reply))
}

/// Every version of `account`'s record still kept, oldest first.
async fn record_history(stack: &Stack, account: &str) -> Vec<(u64, User)> {
    use futures::StreamExt as _;
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_USERS).await.unwrap();
    let entries: Vec<_> = kv.history(account).await.unwrap().collect().await;
    entries
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.value.is_empty())
        .map(|e| (e.revision, serde_json::from_slice(&e.value).unwrap()))
        .collect()
}

/// The first revision of the history in which `key` is revoked, and by whom.
fn revoked_at(history: &[(u64, User)], key: &str) -> Option<(u64, String)> {
    history.iter().find_map(|(rev, u)| {
        let d = u.device(as_key(key)).filter(|d| d.status == DeviceStatus::Revoked)?;
        Some((*rev, d.revoked_by.map(|k| k.to_string()).unwrap_or_default()))
    })
}

/// Device A (oldest) revokes B while B revokes C (newer than B), many
/// times: B's revoke of C lands only while B is still active in the record
/// written over. The requests overlap at the server (both there before
/// either reply) and in the store (B refused inside the CAS after passing
/// the first checks, or two writes expecting the same revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_a_moment_ago_cannot_revoke_a_sibling() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let view = stack.watch(&[BUCKET_USERS, BUCKET_DEVICES], &[DeviceRevoke::SUBJECT]).await;
    let (mut trials, mut in_flight, mut raced, mut refused_in_cas) = (0, 0, 0, 0);
    while trials < 20 || (raced < 5 && trials < 80) {
        trials += 1;
        let (a_id, a) = stack.user(&admin, Role::Member, &format!("u{trials}")).await;
        let account = a_id.sign_pub_hex();
        let (b_id, b_bundle) = new_device(&account, "b");
        a.add_device(&b_bundle).await.unwrap();
        let (_, c_bundle) = new_device(&account, "c");
        a.add_device(&c_bundle).await.unwrap();
        let b = stack.connect(&b_id).await.unwrap();
        let (bk, ck) = (b_bundle.device.clone(), c_bundle.device.clone());
        view.take().await;
        let ((by_a, at_a), (by_b, at_b)) =
            tokio::join!(timed(a.revoke_device(&bk)), timed(b.revoke_device(&ck)));
        let log = view.take().await;

        let by_a = by_a.expect("the older device revokes B");
        assert_eq!(by_a.device.status, DeviceStatus::Revoked);
        let b_refused = refused_with(&by_b, CALLER_GONE);
        assert!(by_b.is_ok() || refused_with(&by_b, ""), "trial {trials}: {by_b:?}");
        in_flight +=
            usize::from(both_in_flight(&log, DeviceRevoke::SUBJECT, [&account, &bk], at_a.min(at_b)));
        refused_in_cas += usize::from(b_refused);
        raced += usize::from(b_refused || log.lost_races(BUCKET_USERS).contains_key(&account));

        // The record's own history orders the two revocations.
        let history = record_history(&stack, &account).await;
        let (b_gone, _) = revoked_at(&history, &bk).expect("B is revoked");
        match revoked_at(&history, &ck) {
            Some((c_gone, by)) => {
                assert_eq!(by, bk, "trial {trials}: C revoked by someone else");
                assert!(
                    c_gone < b_gone,
                    "trial {trials}: B revoked C at {c_gone}, after its own revoke at {b_gone}"
                );
                assert!(by_b.is_ok(), "trial {trials}: C revoked but B was refused");
            }
            None => assert!(by_b.is_err(), "trial {trials}: B's revoke answered success, C is active"),
        }
    }
    println!(
        "revoke race: {trials} trials, both requests at the server before either reply in {in_flight}, \
         raced in the store in {raced} ({refused_in_cas} refused inside the CAS)"
    );
    assert!(in_flight * 2 >= trials, "the requests rarely overlapped: {in_flight} of {trials}");
    assert!(raced >= 5, "the revokes raced in the store in only {raced} of {trials} trials");
}

/// An admin's standing is in its own record, not in the one its revoke of
/// another account's device writes over: admin B revokes admin A's device
/// while A revokes a member's device, many times. A's revoke stands only
/// if it was written before A's device was revoked (revisions of one
/// stream order the two records' writes); otherwise it is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revoked_a_moment_ago_cannot_revoke_another_accounts_device() {
    let stack = Stack::start().await;
    let (b_id, b) = stack.admin().await;
    let bk = b_id.sign_pub_hex();
    let view = stack.watch(&[BUCKET_USERS, BUCKET_DEVICES], &[DeviceRevoke::SUBJECT]).await;
    let (mut trials, mut in_flight, mut undone) = (0, 0, 0);
    while trials < 20 || (undone < 3 && trials < 80) {
        trials += 1;
        let (a_id, a) = stack.user(&b, Role::Admin, &format!("a{trials}")).await;
        let (m_id, m) = stack.user(&b, Role::Member, &format!("m{trials}")).await;
        let (ak, mk) = (a_id.sign_pub_hex(), m_id.sign_pub_hex());
        let (_, laptop) = new_device(&mk, "laptop");
        m.add_device(&laptop).await.unwrap();
        view.take().await;
        let ((by_b, at_b), (by_a, at_a)) = tokio::join!(
            timed(b.admin_revoke_device(&ak, &ak)),
            timed(a.admin_revoke_device(&mk, &laptop.device))
        );
        let log = view.take().await;

        by_b.expect("B revokes A's device");
        assert!(by_a.is_ok() || refused_with(&by_a, ""), "trial {trials}: {by_a:?}");
        in_flight += usize::from(both_in_flight(&log, DeviceRevoke::SUBJECT, [&bk, &ak], at_a.min(at_b)));
        undone += usize::from(refused_with(&by_a, CALLER_GONE));
        let (a_gone, _) = revoked_at(&record_history(&stack, &ak).await, &ak).expect("A's device is revoked");
        let (mu, _) = stack.store().get_user(as_key(&mk)).await.unwrap().unwrap();
        let now = mu.device(as_key(&laptop.device)).unwrap();
        if now.status == DeviceStatus::Revoked {
            assert!(by_a.is_ok(), "trial {trials}: refused, yet the laptop stays revoked");
            // The last write of M's record that revoked the laptop.
            let history = record_history(&stack, &mk).await;
            let m_gone = history
                .iter()
                .filter(|(_, u)| {
                    u.device(as_key(&laptop.device)).is_some_and(|d| d.status == DeviceStatus::Revoked)
                })
                .map(|(rev, _)| *rev)
                .min()
                .unwrap();
            assert!(
                m_gone < a_gone,
                "trial {trials}: A revoked the laptop at {m_gone}, after its own revoke at {a_gone}"
            );
        } else {
            assert!(by_a.is_err(), "trial {trials}: A's revoke answered success, the laptop is active");
        }
    }
    println!(
        "admin standing race: {trials} trials, both at the server before either reply in {in_flight}, \
         taken back after the write in {undone}"
    );
    assert!(in_flight * 2 >= trials, "the requests rarely overlapped: {in_flight} of {trials}");
    assert!(
        undone >= 3,
        "A's revoke was written after A lost its device in only {undone} of {trials} trials"
    );
}

/// Two admins, the only ones with an active device, revoke at once, many
/// times, either each other's last device or each its own: every time at
/// least one keeps its device. Each other's is caught by the check of the
/// caller's standing as of the write, each its own by the last-admin
/// re-check after the write; both take the write back. The revokes
/// overlap: both at the server before either reply, and some refused only
/// after their write (so both had passed the checks before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_revoking_the_last_devices_at_once() {
    let stack = Stack::start().await;
    let (root_id, root) = stack.admin().await;
    let view = stack.watch(&[BUCKET_USERS, BUCKET_DEVICES], &[DeviceRevoke::SUBJECT]).await;
    let mut lead = (root_id, root);
    let (mut trials, mut in_flight, mut undone) = (0, 0, [0, 0]);
    while trials < 20 || (undone.iter().any(|n| *n < 2) && trials < 80) {
        trials += 1;
        let own = trials % 2 == 0;
        let (x_id, x) = stack.user(&lead.1, Role::Admin, &format!("x{trials}")).await;
        let (y_id, y) = stack.user(&lead.1, Role::Admin, &format!("y{trials}")).await;
        let (xk, yk) = (x_id.sign_pub_hex(), y_id.sign_pub_hex());
        // X takes every other admin's devices: X and Y are the only
        // admins with one.
        for other in stack.store().list_users().await.unwrap() {
            if other.is_active_admin() && other.sign_pub != xk && other.sign_pub != yk {
                for d in other.active_devices() {
                    x.admin_revoke_device(&other.sign_pub.to_hex(), &d.device.to_hex()).await.unwrap();
                }
            }
        }
        let (x_target, y_target) = if own { (&xk, &yk) } else { (&yk, &xk) };
        view.take().await;
        let ((by_x, at_x), (by_y, at_y)) = tokio::join!(
            timed(x.admin_revoke_device(x_target, x_target)),
            timed(y.admin_revoke_device(y_target, y_target))
        );
        let log = view.take().await;

        let store = stack.store();
        let keeps = |u: &User| u.active_devices().next().is_some();
        let (xu, _) = store.get_user(as_key(&xk)).await.unwrap().unwrap();
        let (yu, _) = store.get_user(as_key(&yk)).await.unwrap().unwrap();
        assert!(keeps(&xu) || keeps(&yu), "trial {trials}: neither admin has a device: {by_x:?} {by_y:?}");
        // A revoke taken back put back the list it replaced: each account's
        // signed list names exactly its active devices.
        for u in [&xu, &yu] {
            let listed: Vec<String> =
                u.device_list.as_ref().unwrap().devices.iter().map(|d| d.device.clone()).collect();
            let active: Vec<String> = u.active_devices().map(|d| d.device.to_hex()).collect();
            assert_eq!(listed, active, "trial {trials}: list and devices of {}", u.sign_pub);
        }
        assert!(by_x.is_err() || by_y.is_err(), "trial {trials}: both revokes succeeded");
        for r in [&by_x, &by_y] {
            // The last one: a revoke that came second all along (its
            // caller already revoked, or the other admin without device).
            let known =
                ["last active admin", CALLER_GONE, "not an active device"].iter().any(|m| refused_with(r, m));
            assert!(r.is_ok() || known, "trial {trials}: {r:?}");
        }
        in_flight += usize::from(both_in_flight(&log, DeviceRevoke::SUBJECT, [&xk, &yk], at_x.min(at_y)));
        let after_write = if own { LAST_ADMIN_RACE } else { CALLER_GONE };
        undone[usize::from(own)] +=
            usize::from(refused_with(&by_x, after_write) || refused_with(&by_y, after_write));
        let next = if keeps(&xu) { x_id } else { y_id };
        lead = (next.clone(), stack.connect(&next).await.unwrap());
    }
    let [others, owns] = undone;
    println!(
        "admin race: {trials} trials, both requests at the server before either reply in {in_flight}, \
         refused after the write in {others} (each other's) and {owns} (each its own)"
    );
    assert!(in_flight * 2 >= trials, "the requests rarely overlapped: {in_flight} of {trials}");
    assert!(
        others >= 2 && owns >= 2,
        "both revokes passed the checks before the write too rarely: {undone:?}"
    );
}

/// Two devices each revoking itself at the same moment: one wins, the other
/// is refused as the last device; never 0 active devices. The rounds show
/// that they raced: both requests at the server before either reply, and
/// in some rounds two writes of the account record expecting the same
/// revision (both had read it before either wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revokes_never_leave_none() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let view = stack.watch(&[BUCKET_USERS, BUCKET_DEVICES], &[DeviceRevoke::SUBJECT]).await;
    let (mut rounds, mut in_flight, mut raced) = (0, 0, 0);
    while rounds < 10 || (raced < 3 && rounds < 60) {
        rounds += 1;
        let (phone_id, phone) = stack.user(&admin, Role::Member, &format!("u{rounds}")).await;
        let account = phone_id.sign_pub_hex();
        let (laptop_id, bundle) = new_device(&account, "laptop");
        phone.add_device(&bundle).await.unwrap();
        let laptop = stack.connect(&laptop_id).await.unwrap();
        let laptop_key = laptop_id.sign_pub_hex();
        view.take().await;
        let ((a, at_a), (b, at_b)) =
            tokio::join!(timed(phone.revoke_device(&account)), timed(laptop.revoke_device(&laptop_key)));
        let log = view.take().await;
        assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "round {rounds}: {a:?} {b:?}");
        let (user, _) = stack.store().get_user(as_key(&account)).await.unwrap().unwrap();
        assert_eq!(user.active_devices().count(), 1);
        let first_reply = at_a.min(at_b);
        in_flight +=
            usize::from(both_in_flight(&log, DeviceRevoke::SUBJECT, [&account, &laptop_key], first_reply));
        raced += usize::from(log.lost_races(BUCKET_USERS).contains_key(&account));
    }
    println!(
        "self-revoke race: {rounds} rounds, both at the server before either reply in {in_flight}, \
         raced in the store in {raced}"
    );
    assert!(in_flight * 2 >= rounds, "the requests rarely overlapped: {in_flight} of {rounds}");
    assert!(raced >= 3, "the revokes raced in the store in only {raced} of {rounds} rounds");
}

/// A key becomes a device of one account at most: two accounts adding it
/// at once have one winner, and a device key cannot register. The rounds
/// show that they raced: both requests at the server before either reply,
/// and in some rounds both claims of the key (`create` of its device
/// record) before the winner's final write of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_a_device_of_one_account_only() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let view = stack.watch(&[BUCKET_USERS, BUCKET_DEVICES], &[DeviceAdd::SUBJECT]).await;
    let (mut rounds, mut in_flight, mut raced) = (0, 0, 0);
    let mut winners = Vec::new();
    while rounds < 10 || (raced < 3 && rounds < 60) {
        rounds += 1;
        // Fresh accounts each round: the winners fill up.
        let (alice_id, alice) = stack.user(&admin, Role::Member, &format!("alice{rounds}")).await;
        let (bob_id, bob) = stack.user(&admin, Role::Member, &format!("bob{rounds}")).await;
        let key = Identity::generate();
        let for_alice = key.clone().with_account(&alice_id.sign_pub_hex()).unwrap().bundle(None);
        let for_bob = key.clone().with_account(&bob_id.sign_pub_hex()).unwrap().bundle(None);
        view.take().await;
        let ((a, at_a), (b, at_b)) =
            tokio::join!(timed(alice.add_device(&for_alice)), timed(bob.add_device(&for_bob)));
        let log = view.take().await;
        assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{a:?} {b:?}");
        let first_reply = at_a.min(at_b);
        let callers = [alice_id.sign_pub_hex(), bob_id.sign_pub_hex()];
        in_flight +=
            usize::from(both_in_flight(&log, DeviceAdd::SUBJECT, [&callers[0], &callers[1]], first_reply));
        let writes = log.writes_to(BUCKET_DEVICES, &for_alice.device);
        let claims_first = writes.iter().take_while(|w| **w == Some(0)).count();
        raced += usize::from(claims_first >= 2);
        winners.push(if a.is_ok() { "alice" } else { "bob" });
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(code(loser), "user_exists");
        // The device key cannot redeem an invite either.
        let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
        let as_guest = stack.connect(&key).await.unwrap();
        assert_eq!(code(as_guest.register(&inv.token, None).await), "user_exists");
    }
    println!(
        "one key, two accounts: {rounds} rounds, both at the server before either reply in {in_flight}, \
         both claims before the winner's final write in {raced}; winners {winners:?}"
    );
    assert!(in_flight * 2 >= rounds, "the requests rarely overlapped: {in_flight} of {rounds}");
    assert!(raced >= 3, "the adds raced in the store in only {raced} of {rounds} rounds");
}
