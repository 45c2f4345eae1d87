//! The device rules of docs/protocol.md sections 8 and 9 where they must
//! hold under races and over time, through a real nats-server: revocation
//! is for good (also after the account record has stopped listing the
//! device), the revoke rule is judged on the record written over (a device
//! revoked a moment ago cannot revoke a sibling), the last active admin
//! keeps a device (before the write, and after it against a concurrent
//! revoke), an unlisted device record is denied (never a guest), and the
//! account keys follow the oldest active device. Each race shows that its
//! requests overlapped, at the server and in the store.

use std::future::Future;

use tokio::time::Instant;
use unibus::{Bundle, ClientError, Identity};
use unibus_proto::endpoint::{DeviceRevoke, Endpoint as _};
use unibus_proto::model::{Device, DeviceStatus, REVOKED_DEVICES_KEPT, Role, User, Via};
use unibus_proto::subjects::{BUCKET_DEVICES, BUCKET_USERS};
use unibus_proto::wire::InviteCreateRequest;

use crate::evidence::{ServerView, expect_denial_of, kv_snapshot, raced_on, request_seen};
use crate::harness::{Stack, code};

/// The refusal of a revoke whose caller lost its standing after its
/// request passed the first checks: only the check inside the CAS (or, for
/// an admin, after the write) says this.
const CALLER_GONE: &str = "was revoked before this revoke was written";
/// The refusal of the last-admin re-check after the write (then undone).
const LAST_ADMIN_RACE: &str = "a concurrent revoke took the other";

/// A new device key for `account`, and its bundle.
fn new_device(account: &str, name: &str) -> (Identity, Bundle) {
    let id = Identity::generate().with_account(account).unwrap();
    let bundle = id.bundle(Some(name));
    (id, bundle)
}

/// Runs `call` and notes when its reply arrived.
async fn timed<T>(call: impl Future<Output = T>) -> (T, Instant) {
    let out = call.await;
    (out, Instant::now())
}

/// True when the reply is the refusal whose message holds `needle`.
fn refused_with<T>(r: &Result<T, ClientError>, needle: &str) -> bool {
    matches!(r, Err(ClientError::Service(e)) if e.code() == "forbidden" && e.to_string().contains(needle))
}

/// Both revokes were at the server before either reply arrived.
fn both_in_flight(log: &[crate::evidence::Seen], callers: [&str; 2], first_reply: Instant) -> bool {
    let seen = callers.map(|c| request_seen(log, DeviceRevoke::SUBJECT, c));
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
        let d = u.device(key).filter(|d| d.status == DeviceStatus::Revoked)?;
        Some((*rev, d.revoked_by.clone().unwrap_or_default()))
    })
}

/// A device revoked long ago, whose entry has scrolled off the account
/// record (it keeps the 32 most recent revoked devices), never comes back:
/// it is denied, cannot be added again (not even at the cap, where the
/// refusal must not free its record), and neither can the account's own
/// revoked key. Deleting the account removes those records too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_never_comes_back() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (laptop_id, laptop_bundle) = new_device(&alice, "laptop");
    phone.add_device(&laptop_bundle).await.unwrap();
    let (lost_id, lost) = new_device(&alice, "lost");
    phone.add_device(&lost).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    laptop.revoke_device(&lost.device).await.unwrap();
    phone.revoke_device(&alice).await.unwrap();
    let mut keys = vec![alice.clone(), laptop_id.sign_pub_hex(), lost.device.clone()];
    // 32 more revocations push both off the account record.
    for i in 0..REVOKED_DEVICES_KEPT {
        let (_, b) = new_device(&alice, &format!("d{i}"));
        laptop.add_device(&b).await.unwrap();
        laptop.revoke_device(&b.device).await.unwrap();
        keys.push(b.device);
    }
    let store = stack.store();
    let (user, _) = store.get_user(&alice).await.unwrap().unwrap();
    for key in [&lost.device, &alice] {
        assert!(user.device(key).is_none(), "{key} is still listed");
        let (record, _) = store.get_device(key).await.unwrap().expect("the device record stays");
        assert_eq!(record.status, DeviceStatus::Revoked);
    }

    let mut errors = stack.auth_errors().await;
    for id in [&lost_id, &phone_id] {
        let reason = expect_denial_of(&mut errors, &id.sign_pub_hex(), stack.connect(id)).await;
        assert!(reason.contains("revoked"), "{reason}");
    }
    let before = kv_snapshot(&stack).await;
    assert_eq!(code(laptop.add_device(&lost).await), "user_exists", "a revoked device added again");
    assert_eq!(code(laptop.add_device(&phone_id.bundle(None)).await), "user_exists", "the account's own key");
    assert_eq!(kv_snapshot(&stack).await, before, "the refused adds changed KV");

    // At the cap the answer is the same, and the refusal frees nothing.
    for i in 0..7 {
        let (_, b) = new_device(&alice, &format!("e{i}"));
        laptop.add_device(&b).await.unwrap();
        keys.push(b.device);
    }
    let before = kv_snapshot(&stack).await;
    assert_eq!(code(laptop.add_device(&lost).await), "user_exists", "at the cap");
    assert_eq!(kv_snapshot(&stack).await, before, "the refused add at the cap changed KV");
    expect_denial_of(&mut errors, &lost.device, stack.connect(&lost_id)).await;

    // The account's delete removes every record of its devices, listed or
    // not; the keys are then unknown keys.
    drop(laptop);
    admin.delete_user(&alice).await.unwrap();
    for key in &keys {
        assert!(
            store.get_device(key).await.unwrap().is_none(),
            "device record of {key} outlived its account"
        );
    }
    let guest = stack.connect(&lost_id).await.expect("an unknown key connects as a guest");
    assert!(matches!(guest.whoami().await, Err(ClientError::PermissionDenied(_))));
}

/// A revoked device record whose account is gone (a crash between the
/// account's delete and its devices' leaves one) is never taken over:
/// neither another account's add nor a registration of the key gets it,
/// and the record stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_orphan_record_is_never_taken_over() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_DEVICES).await.unwrap();
    let revoked = |key: &Identity, account: &str, seq: u32| {
        let mut d = Device::first(&key.sign_pub_hex(), &key.kex_pub_hex(), None);
        (d.account, d.seq, d.status) = (account.to_string(), seq, DeviceStatus::Revoked);
        (d.revoked_at, d.revoked_by) = (Some(d.added_at.clone()), Some(account.to_string()));
        serde_json::to_vec(&d).unwrap()
    };
    // A device (seq 2) of a deleted account, and a deleted account's own key.
    let (device, own) = (Identity::generate(), Identity::generate());
    let gone = Identity::generate().sign_pub_hex();
    kv.create(&device.sign_pub_hex(), revoked(&device, &gone, 2).into()).await.unwrap();
    kv.create(&own.sign_pub_hex(), revoked(&own, &own.sign_pub_hex(), 1).into()).await.unwrap();

    let as_bobs = device.clone().with_account(&bob_id.sign_pub_hex()).unwrap();
    assert_eq!(code(bob.add_device(&as_bobs.bundle(None)).await), "user_exists");
    let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let guest = stack.connect(&own).await.expect("no account: a guest");
    assert_eq!(code(guest.register(&inv.token, None).await), "user_exists");
    for key in [&device, &own] {
        let (record, _) = stack.store().get_device(&key.sign_pub_hex()).await.unwrap().expect("record stays");
        assert_eq!(record.status, DeviceStatus::Revoked);
    }
}

/// Device A (oldest) revokes B while B revokes C (newer than B), many
/// times: B's revoke of C lands only while B is still active in the record
/// written over. The requests overlap at the server (both there before
/// either reply) and in the store (B refused inside the CAS after passing
/// the first checks, or two writes expecting the same revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_a_moment_ago_cannot_revoke_a_sibling() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let view = ServerView::watch(&stack, &[DeviceRevoke::SUBJECT]).await;
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
        in_flight += usize::from(both_in_flight(&log, [&account, &bk], at_a.min(at_b)));
        refused_in_cas += usize::from(b_refused);
        raced += usize::from(b_refused || raced_on(&log, BUCKET_USERS, &account));

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
    let stack = Stack::start(true).await;
    let (b_id, b) = stack.admin().await;
    let bk = b_id.sign_pub_hex();
    let view = ServerView::watch(&stack, &[DeviceRevoke::SUBJECT]).await;
    let (mut trials, mut in_flight, mut undone) = (0, 0, 0);
    while trials < 20 || (undone < 3 && trials < 80) {
        trials += 1;
        let (a_id, a) = stack.user(&b, Role::Admin, &format!("a{trials}")).await;
        let (m_id, m) = stack.user(&b, Role::Member, &format!("m{trials}")).await;
        let (ak, mk) = (a_id.sign_pub_hex(), m_id.sign_pub_hex());
        let (_, laptop) = new_device(&mk, "laptop");
        m.add_device(&laptop).await.unwrap();
        view.take().await;
        let ((by_b, at_b), (by_a, at_a)) =
            tokio::join!(timed(b.revoke_device(&ak)), timed(a.revoke_device(&laptop.device)));
        let log = view.take().await;

        by_b.expect("B revokes A's device");
        assert!(by_a.is_ok() || refused_with(&by_a, ""), "trial {trials}: {by_a:?}");
        in_flight += usize::from(both_in_flight(&log, [&bk, &ak], at_a.min(at_b)));
        undone += usize::from(refused_with(&by_a, CALLER_GONE));
        let (a_gone, _) = revoked_at(&record_history(&stack, &ak).await, &ak).expect("A's device is revoked");
        let (mu, _) = stack.store().get_user(&mk).await.unwrap().unwrap();
        let now = mu.device(&laptop.device).unwrap();
        if now.status == DeviceStatus::Revoked {
            assert!(by_a.is_ok(), "trial {trials}: refused, yet the laptop stays revoked");
            // The last write of M's record that revoked the laptop.
            let history = record_history(&stack, &mk).await;
            let m_gone = history
                .iter()
                .filter(|(_, u)| u.device(&laptop.device).is_some_and(|d| d.status == DeviceStatus::Revoked))
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

/// An admin revoking its own last device is refused while the only other
/// admin has no active device (an admin without one does not count), and
/// the refusal writes nothing at all (not even a write undone since). Once
/// the other admin has a device again, the revoke goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admins_last_device_stays_and_nothing_is_written() {
    let stack = Stack::start(true).await;
    let (root_id, root) = stack.admin().await;
    let root_key = root_id.sign_pub_hex();
    let (second_id, _second) = stack.user(&root, Role::Admin, "second").await;
    let second = second_id.sign_pub_hex();
    // The other admin loses its only device: allowed, root still has one.
    root.revoke_device(&second).await.unwrap();

    let before = kv_snapshot(&stack).await;
    let refused = root.revoke_device(&root_key).await;
    assert_eq!(kv_snapshot(&stack).await, before, "the refusal wrote to KV");
    assert!(refused_with(&refused, "last active admin"), "{refused:?}");
    assert!(!refused_with(&refused, LAST_ADMIN_RACE), "refused only after a write: {refused:?}");

    let (_, recovered) = new_device(&second, "second's new phone");
    root.admin_add_device(&recovered).await.unwrap();
    root.revoke_device(&root_key).await.expect("another admin has a device now");
    let (user, _) = stack.store().get_user(&root_key).await.unwrap().unwrap();
    assert_eq!(user.active_devices().count(), 0);
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
    let stack = Stack::start(true).await;
    let (root_id, root) = stack.admin().await;
    let view = ServerView::watch(&stack, &[DeviceRevoke::SUBJECT]).await;
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
                    x.revoke_device(&d.device).await.unwrap();
                }
            }
        }
        let (x_target, y_target) = if own { (&xk, &yk) } else { (&yk, &xk) };
        view.take().await;
        let ((by_x, at_x), (by_y, at_y)) =
            tokio::join!(timed(x.revoke_device(x_target)), timed(y.revoke_device(y_target)));
        let log = view.take().await;

        let store = stack.store();
        let keeps = |u: &User| u.active_devices().next().is_some();
        let (xu, _) = store.get_user(&xk).await.unwrap().unwrap();
        let (yu, _) = store.get_user(&yk).await.unwrap().unwrap();
        assert!(keeps(&xu) || keeps(&yu), "trial {trials}: neither admin has a device: {by_x:?} {by_y:?}");
        assert!(by_x.is_err() || by_y.is_err(), "trial {trials}: both revokes succeeded");
        for r in [&by_x, &by_y] {
            // The last one: a revoke that came second all along (its
            // caller already revoked, or the other admin without device).
            let known =
                ["last active admin", CALLER_GONE, "not an active device"].iter().any(|m| refused_with(r, m));
            assert!(r.is_ok() || known, "trial {trials}: {r:?}");
        }
        in_flight += usize::from(both_in_flight(&log, [&xk, &yk], at_x.min(at_y)));
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

/// A device record that its account does not list (what a crash between an
/// add's claim and its listing leaves) makes the key denied by a signed
/// denial, never a guest; the same add, done again, completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_device_record_is_denied_not_a_guest() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (key, bundle) = new_device(&alice, "cut");
    let claim = Device::joining(
        &alice,
        &bundle.device,
        &bundle.kex_pub,
        Some(bundle.kex_sig.clone()),
        Via::Device,
        &alice,
    );
    let js = stack.jetstream().await;
    let kv = js.get_key_value(BUCKET_DEVICES).await.unwrap();
    kv.create(&bundle.device, serde_json::to_vec(&claim).unwrap().into()).await.unwrap();

    let mut errors = stack.auth_errors().await;
    let reason = expect_denial_of(&mut errors, &bundle.device, stack.connect(&key)).await;
    assert!(reason.contains("revoked"), "{reason}");
    let added = phone.add_device(&bundle).await.expect("the cut add, retried, completes");
    assert_eq!((added.seq, added.status), (2, DeviceStatus::Active));
    assert_eq!(stack.connect(&key).await.unwrap().whoami().await.unwrap().sign_pub, alice);
}

/// The account's `kex_pub`/`kex_sig` are its oldest active device's: the
/// next one's once the oldest is revoked, null while none is active, then
/// the recovery device's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_keys_follow_the_oldest_active_device() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let (_, laptop) = new_device(&alice, "laptop");
    phone.add_device(&laptop).await.unwrap();
    let (_, tablet) = new_device(&alice, "tablet");
    phone.add_device(&tablet).await.unwrap();
    let keys = |b: &Bundle| (Some(b.kex_pub.clone()), Some(b.kex_sig.clone()));
    let js = stack.jetstream().await;
    let users = js.get_key_value(BUCKET_USERS).await.unwrap();
    // As a lookup answers, and as the record stores them (raw JSON, as any
    // other reader of the bucket sees it).
    let account_keys = || async {
        let u = admin.lookup(&alice).await.unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&users.get(&alice).await.unwrap().unwrap()).unwrap();
        let stored = [&raw["kex_pub"], &raw["kex_sig"]].map(|v| v.as_str().map(str::to_string));
        assert_eq!([u.kex_pub.clone(), u.kex_sig.clone()], stored, "lookup and stored record agree");
        (u.kex_pub, u.kex_sig)
    };
    assert_eq!(account_keys().await, keys(&phone_id.bundle(None)));

    phone.revoke_device(&alice).await.unwrap();
    assert_eq!(account_keys().await, keys(&laptop), "the next active device's");
    admin.revoke_device(&laptop.device).await.unwrap();
    assert_eq!(account_keys().await, keys(&tablet));
    admin.revoke_device(&tablet.device).await.unwrap();
    assert_eq!(account_keys().await, (None, None), "none active");
    let (_, recovery) = new_device(&alice, "recovery");
    admin.admin_add_device(&recovery).await.unwrap();
    assert_eq!(account_keys().await, keys(&recovery), "the recovery device's");
}
