//! Faults on purpose, with real processes on 127.0.0.1: a killed unibusd
//! in the middle of a registration storm, one of two instances killed, and
//! a nats-server restart under load. Nothing acknowledged is lost, no
//! invite is half-spent for good.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use unibus::{Client, Identity};
use unibus_proto::model::{InviteStatus, Role, User};

use crate::harness::{HEAVY, Stack};

fn admin_record(id: &Identity) -> User {
    User::new_active(
        unibus_proto::model::Device::first(&id.sign_pub_hex(), &id.kex_pub_hex(), None),
        "root",
        Role::Admin,
        "bootstrap",
        "seed",
    )
}

/// SIGKILL unibusd during 500 concurrent registrations, restart it: the
/// kill cut some registrations between the invite's claim and its
/// completion (seen in KV right after the kill), and after each key retries
/// its own invite every invite is used by that key and completed, with its
/// user present; no user exists without a spent invite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_registration_storm_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let stack = Stack::start_server_only(true).await;
    let store = stack.open_store().await;
    let mut unibusd = stack.spawn_unibusd().await;
    let mut jobs = Vec::new();
    for _ in 0..500 {
        let (inv, token) = store.create_invite(Role::Member, String::new(), "bootstrap", 600).await.unwrap();
        let id = Identity::generate();
        let c = Client::connect(&stack.url, &id).await.unwrap();
        jobs.push((id, c, token.to_hex(), inv.id));
    }
    // Kill it once 100 registrations were answered: the rest are cut
    // somewhere between their KV steps.
    let mut storm = futures::stream::iter(
        jobs.iter()
            .enumerate()
            .map(|(i, (_, c, token, _))| async move { (i, c.register(token, None).await) }),
    )
    .buffer_unordered(500);
    let mut acknowledged = Vec::new();
    let mut killed = false;
    while let Some((i, r)) = storm.next().await {
        if r.is_ok() {
            acknowledged.push(i);
        }
        if acknowledged.len() >= 100 && !killed {
            unibusd.start_kill().unwrap();
            killed = true;
        }
    }
    let _ = unibusd.wait().await;
    drop(storm);

    // Right after the kill, before any retry: some invites are claimed by
    // their key but not completed (cut after the claim).
    let (mut cut, mut cut_before_user) = (0, 0);
    for (id, _, _, invite_id) in &jobs {
        let (inv, _) = store.get_invite(invite_id).await.unwrap().unwrap();
        if inv.status == InviteStatus::Used {
            assert_eq!(inv.used_by.as_deref(), Some(id.sign_pub_hex().as_str()), "used by a stranger");
            if !inv.completed {
                cut += 1;
                cut_before_user += usize::from(store.get_user(&id.sign_pub_hex()).await.unwrap().is_none());
            }
        }
    }
    assert!(cut > 0, "the kill cut no registration between claim and completion");

    // Restarted: each key retries its own invite.
    let _unibusd = stack.spawn_unibusd().await;
    for (id, _, token, invite_id) in &jobs {
        let retry = Client::connect(&stack.url, id).await.unwrap().register(token, None).await;
        match retry {
            Ok(user) => assert_eq!(user.invite_id, *invite_id),
            Err(e) => assert_eq!(e.service_error().map(|e| e.code()), Some("invite_used"), "{e}"),
        }
        let (inv, _) = store.get_invite(invite_id).await.unwrap().unwrap();
        assert_eq!((inv.status, inv.completed), (InviteStatus::Used, true), "invite left half-spent");
        let (user, _) = store.get_user(&id.sign_pub_hex()).await.unwrap().expect("user record exists");
        assert_eq!(user.invite_id, *invite_id);
    }
    for i in &acknowledged {
        assert!(
            store.get_user(&jobs[*i].0.sign_pub_hex()).await.unwrap().is_some(),
            "acknowledged user lost"
        );
    }
    // No user without a spent invite of its own.
    let invites: HashMap<String, _> =
        store.list_invites().await.unwrap().into_iter().map(|i| (i.id.clone(), i)).collect();
    for u in store.list_users().await.unwrap() {
        let inv = invites.get(&u.invite_id).expect("user's invite exists");
        assert_eq!(inv.used_by.as_deref(), Some(u.sign_pub.as_str()));
    }
    println!(
        "kill storm: {} of 500 acknowledged before SIGKILL; {cut} cut after the claim ({cut_before_user} of them before the user was created), all completed by retry",
        acknowledged.len()
    );
}

/// Two unibusd instances; one is killed: connects and requests keep
/// working through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_killed() {
    let stack = Stack::start_server_only(false).await;
    let store = stack.open_store().await;
    let root = Identity::generate();
    store.add_user(&admin_record(&root)).await.unwrap();
    let mut first = stack.spawn_unibusd().await;
    let _second = stack.spawn_unibusd().await;
    let admin = Client::connect(&stack.url, &root).await.unwrap();
    admin.whoami().await.unwrap();
    first.start_kill().unwrap();
    let _ = first.wait().await;
    for _ in 0..50 {
        let c = Client::connect(&stack.url, &root).await.expect("connect after one instance died");
        assert_eq!(c.whoami().await.unwrap().name, "root");
    }
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    Client::connect(&stack.url, &Identity::generate())
        .await
        .unwrap()
        .register(&inv.token, None)
        .await
        .unwrap();
}

/// nats-server restarted (file store) under load: registrations are
/// acknowledged both before the stop (it waits for 50) and by requests sent
/// after the restart, every acknowledged registration survives, and unibusd
/// serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_under_load_keeps_acknowledged_writes() {
    let _heavy = HEAVY.lock().await;
    let mut stack = Stack::start(true).await;
    let store = stack.store().clone();
    let mut jobs = Vec::new();
    for _ in 0..200 {
        let (_, token) = store.create_invite(Role::Member, String::new(), "bootstrap", 600).await.unwrap();
        let id = Identity::generate();
        jobs.push((Client::connect(&stack.url, &id).await.unwrap(), id, token.to_hex()));
    }
    let port = stack.server.as_ref().unwrap().port;
    // Each request notes when it was sent; the stream sends new ones only
    // while it is polled, so none is sent while the server is down.
    let mut storm = futures::stream::iter(jobs.iter().enumerate().map(|(i, (c, _, t))| async move {
        let sent = Instant::now();
        (i, sent, c.register(t, None).await)
    }))
    .buffer_unordered(20);
    let (mut acked, mut before_stop, mut restarted_at) = (Vec::new(), 0, None);
    while let Some((i, sent, r)) = storm.next().await {
        if r.is_ok() {
            acked.push((i, sent));
        }
        if acked.len() == 50 && restarted_at.is_none() {
            before_stop = acked.len();
            stack.server.take().unwrap().stop().await;
            stack.restart_server(port).await;
            restarted_at = Some(Instant::now());
        }
    }
    drop(storm);
    let restarted_at = restarted_at.expect("50 registrations acknowledged before the stop");
    let after_restart = acked.iter().filter(|(_, sent)| *sent > restarted_at).count();
    assert!(after_restart > 0, "no registration sent after the restart was acknowledged");
    // unibusd (never restarted) answers again.
    let probe = Identity::generate();
    let mut served = false;
    for _ in 0..100 {
        if let Ok(c) = Client::connect(&stack.url, &probe).await {
            let (_, token) =
                store.create_invite(Role::Member, String::new(), "bootstrap", 600).await.unwrap();
            if c.register(&token.to_hex(), None).await.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "unibusd did not serve again after the server restart");
    for (i, _) in &acked {
        assert!(
            store.get_user(&jobs[*i].1.sign_pub_hex()).await.unwrap().is_some(),
            "acknowledged registration lost"
        );
    }
    println!(
        "server restart: {} of 200 registrations acknowledged, {before_stop} before the stop and {after_restart} sent after the restart; none lost",
        acked.len()
    );
}
