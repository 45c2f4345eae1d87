//! Guest flood limits on `unibus.register`: a flood costs the
//! flooder, not the store or other clients, and a refused request changes
//! nothing in KV.

use unibus::Identity;
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{InviteStatus, Role};
use unibusd::daemon;
use unibusd::limits::GuestLimits;

use crate::support::{Stack, code};

/// With the default limits, one key flooding `unibus.register` gets its
/// burst of 5 answered and `limit_reached` for the rest; then even a valid
/// invite from that key is refused without being spent, while another
/// guest's register and a member's whoami succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_key_is_limited_others_are_not() {
    let stack = Stack::start().await;
    let (_id, admin) = stack.admin().await;
    let (_m, member) = stack.user(&admin, Role::Member, "member").await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let other_inv = admin.create_invite(&Default::default()).await.unwrap();
    let flooder = stack.connect(&Identity::generate()).await.unwrap();
    let before = stack.kv_snapshot().await;

    let unknown = InviteToken::generate().link();
    let codes: Vec<String> = futures::future::join_all((0..50).map(|_| flooder.register(&unknown, None)))
        .await
        .into_iter()
        .map(code)
        .collect();
    let answered = codes.iter().filter(|c| *c == "invite_not_found").count();
    let limited = codes.iter().filter(|c| *c == "limit_reached").count();
    assert_eq!(answered + limited, 50, "{codes:?}");
    // Burst 5, then one per 2 s (one more if the flood took that long).
    assert!((5..=6).contains(&answered), "{answered} answered: {codes:?}");

    // A valid invite from the flooding key: refused before the store.
    assert_eq!(code(flooder.register(&inv.token, None).await), "limit_reached");
    assert_eq!(stack.kv_snapshot().await, before, "KV changed");
    let (untouched, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
    assert_eq!(untouched.status, InviteStatus::Pending);

    // Others are unaffected.
    member.whoami().await.expect("member whoami");
    let guest = stack.connect(&Identity::generate()).await.unwrap();
    guest.register(&other_inv.token, None).await.expect("another guest registers");
}

/// The global limit (here a burst of 3, then 1/s) refuses registrations of
/// distinct fresh keys beyond it, each refusal leaving its invite pending
/// and no user behind; the admitted ones succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_refuses_without_spending() {
    let mut stack = Stack::start_server_only().await;
    let mut settings = stack.settings();
    settings.guest = GuestLimits { global_burst: 3, global_per_sec: 1, ..GuestLimits::default() };
    stack.daemon = Some(daemon::start(&settings).await.expect("unibusd starts"));
    let (_id, admin) = stack.admin().await;
    let mut jobs = Vec::new();
    for _ in 0..12 {
        let inv = admin.create_invite(&Default::default()).await.unwrap();
        let id = Identity::generate();
        jobs.push((stack.connect(&id).await.unwrap(), inv, id));
    }
    let results =
        futures::future::join_all(jobs.iter().map(|(c, inv, _)| c.register(&inv.token, None))).await;
    let mut ok = 0;
    for ((_, inv, id), r) in jobs.iter().zip(results) {
        let (stored, _) = stack.store().get_invite(&inv.invite.id).await.unwrap().unwrap();
        let user = stack.store().get_user(id.sign_key()).await.unwrap();
        match r.map(|_| ()) {
            Ok(()) => {
                ok += 1;
                assert!(stored.completed && user.is_some());
            }
            Err(e) => {
                assert_eq!(code(Err::<(), _>(e)), "limit_reached");
                assert!(stored.status == InviteStatus::Pending && user.is_none());
            }
        }
    }
    // The admin's register took one of the 3; refills add one per second.
    assert!((1..12).contains(&ok), "{ok} of 12 admitted");
}
