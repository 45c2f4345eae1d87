//! What contacts do with signed device lists (docs/protocol.md section 11,
//! docs/client.md) through a real server: a sibling's add and revoke go
//! through without a prompt; a contact that was away checks every step; a
//! ghost device (written straight into KV, even with a list step it signed
//! itself) gets nothing sealed to it and its messages are rejected; an
//! admin's recovery stops sealing until the contact accepts the new list.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, ClientError, DeviceChange, DeviceRefused, Hold, Identity, Inbox, Incoming, ListNotice};
use unibus_proto::devicelist::By;
use unibus_proto::e2e::{Addressing, Envelope, Kind, Recipient, Reject};
use unibus_proto::records::{DeviceStatus, Role, User};
use unibus_proto::subjects;

use crate::devices_e2e::wire;
use crate::mail::now_ms;
use crate::support::Stack;
use crate::support::devices::new_device;

async fn next(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .expect("an inbox item")
        .expect("open inbox")
}

/// The holds `c` reported since the last call.
fn holds(c: &Client) -> Vec<Hold> {
    c.take_device_changes()
        .into_iter()
        .filter_map(|ch| match ch {
            DeviceChange::NeedsVerify { hold, .. } => Some(hold),
            _ => None,
        })
        .collect()
}

/// Bob's DM to `to` as it went over the wire: its recipient devices.
async fn sealed_for(bob: &Client, to: &str, wire: &mut async_nats::Subscriber) -> Vec<String> {
    bob.send_dm(to, b"hello").await.expect("sealed and sent");
    let m = tokio::time::timeout(Duration::from_secs(3), wire.next()).await.unwrap().unwrap();
    let env: Envelope = serde_json::from_slice(&m.payload).unwrap();
    let mut keys: Vec<String> = env.recipients.iter().map(|r| r.to.clone()).collect();
    keys.sort();
    keys
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// Alice adds and revokes her own devices while bob keeps writing to her:
/// bob follows every step without a prompt; bob, away across three
/// changes, checks each of them on his next send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siblings_add_and_revoke_need_no_prompt_and_an_absent_contact_checks_each_step() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let (_bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let alice = phone_id.sign_pub_hex();
    let (_raw, mut on_alice) = wire(&stack, &phone_id, subjects::dm(&alice)).await;
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, vec![alice.clone()]);
    let (laptop_id, laptop_b) = new_device(&alice, "laptop");
    phone.add_device(&laptop_b).await.unwrap();
    let both = sorted(vec![alice.clone(), laptop_b.device.clone()]);
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, both);
    let laptop = stack.connect(&laptop_id).await.unwrap();
    laptop.revoke_device(&laptop_b.device).await.unwrap();
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, vec![alice.clone()]);
    assert_eq!(holds(&bob), vec![], "no prompt for the account's own changes");
    assert_eq!(bob.contacts().accepted(&alice).map(|l| l.version), Some(3));

    // Bob is away (a new client from the same contacts file) while alice
    // makes three changes.
    let saved = bob.contacts();
    let (_, t) = new_device(&alice, "tablet");
    let (_, w) = new_device(&alice, "watch");
    phone.add_device(&t).await.unwrap();
    phone.add_device(&w).await.unwrap();
    phone.revoke_device(&t.device).await.unwrap();
    let report = bob.device_list_report(&alice).await.unwrap();
    assert_eq!(report.steps.iter().map(|l| l.version).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(report.hold, None);
    bob.set_contacts(saved);
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, sorted(vec![alice.clone(), w.device.clone()]));
    assert_eq!(bob.contacts().accepted(&alice).map(|l| l.version), Some(6), "each step checked");
    assert_eq!(holds(&bob), vec![]);
}

/// What a compromised store can do: a ghost device written into alice's
/// account record. Left off her signed list, nothing is sealed to it (the
/// service also refuses a message sealed for it); with a list step it
/// signed itself, bob stops sealing to alice and says why; either way a
/// message the ghost signs is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_device_gets_nothing_and_is_not_believed() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, _phone) = stack.user(&admin, Role::Member, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let alice = phone_id.sign_pub_hex();
    let (_raw, mut on_alice) = wire(&stack, &phone_id, subjects::dm(&alice)).await;
    let mut bob_inbox = bob.inbox().await.unwrap();
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, vec![alice.clone()]);

    let ghost = Identity::generate().with_account(&alice).unwrap();
    plant(&stack, &alice, &ghost, false).await;
    let ghost_c = stack.connect(&ghost).await.expect("the record lists it: it connects");
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, vec![alice.clone()], "not sealed to the ghost");
    forge_to(&ghost, &ghost_c, &bob_id).await;
    match next(&mut bob_inbox).await {
        Incoming::Rejected { reason, .. } => assert_eq!(reason, Reject::SenderDevice),
        other => panic!("the ghost's message was taken: {other:?}"),
    }

    // Now with a list step the ghost signed itself.
    plant(&stack, &alice, &ghost, true).await;
    let refused = bob.send_dm(&alice, b"must not be sealed").await;
    match refused {
        Err(ClientError::Device(DeviceRefused::ListHeld {
            account,
            hold: Hold::Unlisted { signer, .. },
        })) => {
            assert_eq!((account, signer), (alice.clone(), ghost.sign_pub_hex()));
        }
        other => panic!("expected a held list, got {other:?}"),
    }
    assert!(matches!(holds(&bob).as_slice(), [Hold::Unlisted { .. }]), "reported once");
    forge_to(&ghost, &ghost_c, &bob_id).await;
    match next(&mut bob_inbox).await {
        Incoming::Rejected { reason, .. } => assert_eq!(reason, Reject::SenderDevice),
        other => panic!("the ghost's message was taken: {other:?}"),
    }
    // Alice's own device still may write to bob.
    let phone = stack.connect(&phone_id).await.unwrap();
    assert!(phone.send_dm(&bob_id.sign_pub_hex(), b"it's me").await.is_err(), "alice's own client holds too");
}

/// An admin recovers alice (her only device revoked, a new one added by
/// the admin): bob stops sealing to her until he accepts her new list;
/// an admin's removal alone goes through with a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_stops_sealing_until_the_contact_accepts() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let (_bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let alice = phone_id.sign_pub_hex();
    let (_, laptop_b) = new_device(&alice, "laptop");
    phone.add_device(&laptop_b).await.unwrap();
    let (_raw, mut on_alice) = wire(&stack, &phone_id, subjects::dm(&alice)).await;
    sealed_for(&bob, &alice, &mut on_alice).await;

    admin.admin_revoke_device(&alice, &laptop_b.device).await.unwrap();
    assert_eq!(sealed_for(&bob, &alice, &mut on_alice).await, vec![alice.clone()]);
    let notices: Vec<DeviceChange> = bob.take_device_changes();
    assert!(
        notices
            .iter()
            .any(|c| matches!(c, DeviceChange::List { notice: ListNotice::AdminRemoved { .. }, .. })),
        "{notices:?}"
    );

    admin.admin_revoke_device(&alice, &alice).await.unwrap();
    let (new_id, new_b) = new_device(&alice, "new phone");
    admin.admin_add_device(&new_b).await.unwrap();
    match bob.send_dm(&alice, b"must wait").await {
        Err(ClientError::Device(DeviceRefused::ListHeld { hold: Hold::Recovery { device, .. }, .. })) => {
            assert_eq!(device, new_b.device);
        }
        other => panic!("expected a held list, got {other:?}"),
    }
    let report = bob.accept_device_list(&alice).await.unwrap();
    assert!(matches!(report.hold, Some(Hold::Recovery { .. })));
    let (_raw2, mut on_new) = wire(&stack, &new_id, subjects::dm(&alice)).await;
    assert_eq!(
        sealed_for(&bob, &alice, &mut on_new).await,
        vec![new_b.device.clone()],
        "sealed again once accepted"
    );
}

/// A compromised store's write: `ghost` as an active device in `account`'s
/// record and the device bucket; with `signed_step`, also the record's
/// list replaced by a next version adding the ghost, signed by the ghost.
async fn plant(stack: &Stack, account: &str, ghost: &Identity, signed_step: bool) {
    let js = stack.jetstream().await;
    let users = js.get_key_value(subjects::BUCKET_USERS).await.unwrap();
    let entry = users.entry(account).await.unwrap().unwrap();
    let mut user: User = serde_json::from_slice(&entry.value).unwrap();
    let listed = ghost.listed();
    if user.device(ghost.sign_key()).is_none() {
        let mut d = user.devices[0].clone();
        user.device_seq += 1;
        (d.device, d.kex_pub, d.kex_sig, d.seq, d.status) = (
            ghost.sign_key(),
            ghost.kex_key(),
            listed.kex_sig.clone(),
            user.device_seq,
            DeviceStatus::Active,
        );
        user.devices.push(d.clone());
        let devices = js.get_key_value(subjects::BUCKET_DEVICES).await.unwrap();
        devices.create(ghost.sign_pub_hex(), serde_json::to_vec(&d).unwrap().into()).await.unwrap();
    }
    if signed_step {
        let current = user.device_list.clone().unwrap();
        let mut devices = current.devices.clone();
        devices.push(listed);
        user.device_list = Some(ghost.next_device_list(&current, devices, By::Device));
    }
    users.update(account, serde_json::to_vec(&user).unwrap().into(), entry.revision).await.unwrap();
}

/// The ghost writes to bob as a device of alice's account, on the data
/// plane.
async fn forge_to(ghost: &Identity, ghost_c: &Client, bob: &Identity) {
    let subject = subjects::dm(&bob.sign_pub_hex());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let to = Recipient {
        sign_pub: bob.sign_pub_hex(),
        kex_pub: unibus_proto::keys::parse_hex32("kex_pub", &bob.kex_pub_hex()).unwrap(),
    };
    let env = ghost.seal(&addr, &[to], b"hi bob, it's alice", now_ms()).unwrap();
    ghost_c.publish_checked(&subject, serde_json::to_vec(&env).unwrap()).await.unwrap();
}
