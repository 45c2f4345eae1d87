//! End-to-end messages between accounts with linked devices, through a real
//! nats-server and unibusd (docs/envelope.md version 2, docs/protocol.md
//! section 8 "Data plane"): a DM reaches every device of the recipient and
//! the sender's other devices; a revoked device, or a device claiming
//! another account, is rejected; a device whose binding does not verify,
//! or whose `kex_pub` changed, is refused before anything is sealed.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, ClientError, DeviceRefused, Identity, Inbox, Incoming};
use unibus_proto::e2e::{self, Addressing, Envelope, Kind, Recipient, Reject, Sender};
use unibus_proto::records::Role;
use unibus_proto::subjects;

use crate::support::Stack;

/// An account with two devices: its first (the phone) and a laptop added
/// by the phone from the laptop's bundle, both connected.
struct Linked {
    account: String,
    phone_id: Identity,
    phone: Client,
    laptop_id: Identity,
    laptop: Client,
}

impl Linked {
    async fn new(stack: &Stack, admin: &Client, name: &str) -> Linked {
        let (phone_id, phone) = stack.user(admin, Role::Member, name).await;
        let account = phone_id.sign_pub_hex();
        let laptop_id = Identity::generate().with_account(&account).unwrap();
        phone.add_device(&laptop_id.bundle(Some("laptop"))).await.unwrap();
        let laptop = stack.connect(&laptop_id).await.unwrap();
        Linked { account, phone_id, phone, laptop_id, laptop }
    }
}

/// The Ed25519 key of an identity, from its nkey seed (to forge with it).
fn signing_key(id: &Identity) -> ed25519_dalek::SigningKey {
    let (_, raw) = nkeys::decode_seed(&id.nkey_seed()).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&raw)
}

async fn next(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(3), inbox.next())
        .await
        .expect("an inbox item")
        .expect("open inbox")
}

/// Nothing arrives for a while.
async fn quiet(inbox: &mut Inbox) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), inbox.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

/// The next item is a message from `account`'s `device` with `body`;
/// returns the peer it names (set on a copy of one's own message).
async fn expect_message(inbox: &mut Inbox, account: &str, device: &str, body: &[u8]) -> Option<String> {
    match next(inbox).await {
        Incoming::Message(m) => {
            assert_eq!((m.from.as_str(), m.device.as_str(), m.body.as_slice()), (account, device, body));
            m.peer
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn expect_rejected(inbox: &mut Inbox, want: Reject) {
    match next(inbox).await {
        Incoming::Rejected { reason, .. } => assert_eq!(reason, want),
        other => panic!("expected rejection {want:?}, got {other:?}"),
    }
}

/// A raw subscriber (the wire view) on `subject`, connected as `id`.
pub(crate) async fn wire(
    stack: &Stack,
    id: &Identity,
    subject: String,
) -> (async_nats::Client, async_nats::Subscriber) {
    let raw = async_nats::ConnectOptions::with_nkey(id.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&id.sign_pub_hex()))
        .connect(&stack.url)
        .await
        .unwrap();
    let sub = raw.subscribe(subject).await.unwrap();
    raw.flush().await.unwrap();
    (raw, sub)
}

/// A DM to a two-device account opens on both of its devices, and the copy
/// the sender publishes on its own account's subject opens on the sender's
/// other device, naming the peer; the sending device itself shows nothing.
/// On the wire: version 2, one wrapped key per recipient device, no
/// plaintext. Replies work the same way back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_opens_on_every_device_of_both_accounts() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let bob = Linked::new(&stack, &admin, "bob").await;
    let (mut a_phone, mut a_laptop) =
        (alice.phone.inbox().await.unwrap(), alice.laptop.inbox().await.unwrap());
    let (mut b_phone, mut b_laptop) = (bob.phone.inbox().await.unwrap(), bob.laptop.inbox().await.unwrap());
    let (_raw, mut on_wire) = wire(&stack, &alice.phone_id, subjects::dm(&alice.account)).await;
    assert_eq!(alice.laptop.account(), alice.account);
    assert_eq!(alice.laptop.sign_pub(), alice.laptop_id.sign_pub_hex());

    let bob_phone = bob.phone_id.sign_pub_hex();
    bob.phone.send_dm(&alice.account, b"to both of you").await.unwrap();
    for inbox in [&mut a_phone, &mut a_laptop] {
        assert_eq!(expect_message(inbox, &bob.account, &bob_phone, b"to both of you").await, None);
    }
    let peer = expect_message(&mut b_laptop, &bob.account, &bob_phone, b"to both of you").await;
    assert_eq!(peer.as_deref(), Some(alice.account.as_str()), "bob's laptop shows what bob's phone sent");
    quiet(&mut b_phone).await;

    let m = tokio::time::timeout(Duration::from_secs(3), on_wire.next()).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&m.payload).contains("both of you"));
    let env: Envelope = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (env.v, env.from.as_str(), env.device.as_deref()),
        (2, bob.account.as_str(), Some(bob_phone.as_str()))
    );
    let mut to: Vec<String> = env.recipients.iter().map(|r| r.to.clone()).collect();
    to.sort();
    let mut want = vec![alice.phone_id.sign_pub_hex(), alice.laptop_id.sign_pub_hex()];
    want.sort();
    assert_eq!(to, want);

    // The reply from alice's laptop: both of bob's devices, and alice's phone.
    let laptop = alice.laptop_id.sign_pub_hex();
    alice.laptop.send_dm(&bob.account, b"got it on my laptop").await.unwrap();
    for inbox in [&mut b_phone, &mut b_laptop] {
        assert_eq!(expect_message(inbox, &alice.account, &laptop, b"got it on my laptop").await, None);
    }
    let peer = expect_message(&mut a_phone, &alice.account, &laptop, b"got it on my laptop").await;
    assert_eq!(peer.as_deref(), Some(bob.account.as_str()));
    quiet(&mut a_laptop).await;
    // Bob's client remembers alice's two bound devices.
    let seen = bob.phone.contacts();
    let devices = &seen.accounts[&alice.account].devices;
    assert_eq!(devices.len(), 2);
    assert!(devices.values().all(|d| d.bound && d.active && !d.is_recovery()));
}

/// A room message is sealed for every active device of every member: both
/// of alice's devices and both of bob's open it (the sender's own device
/// included, as for a one-device member); one wrapped key per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_opens_on_every_device_of_every_member() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let bob = Linked::new(&stack, &admin, "bob").await;
    let room = alice.phone.create_room("both of us").await.unwrap();
    let phone = stack.connect(&alice.phone_id).await.unwrap();
    phone.add_member(&room.id, &bob.account).await.unwrap();
    let mut devices = Vec::new();
    for id in [&alice.phone_id, &alice.laptop_id, &bob.phone_id, &bob.laptop_id] {
        let c = stack.connect(id).await.unwrap();
        let inbox = c.inbox().await.unwrap();
        devices.push((c, inbox));
    }
    let (_raw, mut on_wire) = wire(&stack, &bob.laptop_id, subjects::room_msg(&room.id)).await;
    let laptop = bob.laptop_id.sign_pub_hex();
    devices[3].0.send_room(&room.id, b"hello room").await.unwrap();
    for (_, inbox) in &mut devices {
        assert_eq!(expect_message(inbox, &bob.account, &laptop, b"hello room").await, None);
    }
    let m = tokio::time::timeout(Duration::from_secs(3), on_wire.next()).await.unwrap().unwrap();
    let env: Envelope = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!((env.kind, env.recipients.len()), (Kind::Room, 4));
}

/// A device revoked without a revoked notice (the record rewritten in KV:
/// notices are best effort) is judged on a fresh lookup once the
/// receiver's cache of the sender's devices has aged (here at once: bob
/// trusts a looked-up set for no time at all), so a message signed by its
/// key (a thief's, sent through another connection) is rejected as not a
/// device of the account; so is a device claiming an account it does not
/// belong to. The account's remaining device still gets through. (With
/// the notice, see `a_revocation_reaches_contacts_at_once`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_revoked_device_is_rejected() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let (mallory_id, mallory) = stack.user(&admin, Role::Member, "mallory").await;
    let mut inbox = bob.inbox().await.unwrap();
    let laptop = alice.laptop_id.sign_pub_hex();
    alice.laptop.send_dm(&bob_id.sign_pub_hex(), b"from the laptop").await.unwrap();
    expect_message(&mut inbox, &alice.account, &laptop, b"from the laptop").await;

    rewrite_device(&stack, &alice.account, &laptop, |d| d["status"] = "revoked".into()).await;
    bob.set_devices_max_age(Duration::ZERO);
    let bob_dm = subjects::dm(&bob_id.sign_pub_hex());
    let stolen = forged_dm(&signing_key(&alice.laptop_id), &alice.account, &bob_id, b"it's still me");
    mallory.publish_checked(&bob_dm, stolen).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;
    // Mallory's own key claiming to be a device of alice's account.
    let claimed = forged_dm(&signing_key(&mallory_id), &alice.account, &bob_id, b"alice here, new phone");
    mallory.publish_checked(&bob_dm, claimed).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;

    let phone = alice.phone_id.sign_pub_hex();
    alice.phone.send_dm(&bob_id.sign_pub_hex(), b"the phone still works").await.unwrap();
    expect_message(&mut inbox, &alice.account, &phone, b"the phone still works").await;
    let seen = bob.contacts();
    assert!(!seen.accounts[&alice.account].devices[&laptop].active, "bob saw the laptop go");
}

/// A version-1 envelope (what one-device accounts sent before linked
/// devices: the account key signs, the one recipient is the account) still
/// opens in the inbox of a one-device account; its sender passes the
/// device check as its own first device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_message_still_opens() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice_id, alice) = stack.user(&admin, Role::Member, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let mut inbox = alice.inbox().await.unwrap();
    let subject = subjects::dm(&alice_id.sign_pub_hex());
    let recipient = Recipient {
        sign_pub: alice_id.sign_pub_hex(),
        kex_pub: unibus_proto::keys::parse_hex32("kex_pub", &alice_id.kex_pub_hex()).unwrap(),
    };
    let env =
        e2e::seal(&signing_key(&bob_id), Kind::Dm, &subject, None, &[recipient], b"old style", now_ms());
    bob.publish_checked(&subject, serde_json::to_vec(&env.unwrap()).unwrap()).await.unwrap();
    match next(&mut inbox).await {
        Incoming::Message(m) => {
            assert_eq!((m.v, m.body.as_slice()), (1, &b"old style"[..]));
            assert_eq!((m.from.as_str(), m.device.as_str()), (bob.account(), bob.sign_pub()));
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// `from` publishes a marker on `to`'s DM subject, and the next message
/// `on_wire` (a subscriber there) sees is that marker: `from` published
/// nothing on that subject before it (one connection's messages arrive in
/// the order it sent them), so a refused send leaked nothing there.
async fn nothing_before_marker(from: &Client, to: &str, on_wire: &mut async_nats::Subscriber) {
    let marker = format!("marker from {}", from.sign_pub());
    from.publish_checked(&subjects::dm(to), marker.clone().into_bytes()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(3), on_wire.next()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&m.payload), marker, "published before the marker");
}

/// A DM sealed by `key` as a device of `account`, for `to`'s one device
/// (what a thief or an impostor publishes through any connection).
fn forged_dm(key: &ed25519_dalek::SigningKey, account: &str, to: &Identity, body: &[u8]) -> Vec<u8> {
    let subject = subjects::dm(&to.sign_pub_hex());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let recipient = Recipient {
        sign_pub: to.sign_pub_hex(),
        kex_pub: unibus_proto::keys::parse_hex32("kex_pub", &to.kex_pub_hex()).unwrap(),
    };
    let sender = Sender { device: key, account };
    serde_json::to_vec(&e2e::seal_v2(&sender, &addr, &[recipient], body, now_ms()).unwrap()).unwrap()
}

/// A hostile write to the users bucket: `edit` applied to `device`'s entry
/// in `account`'s record, as whoever can write KV could.
async fn rewrite_device(
    stack: &Stack,
    account: &str,
    device: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let kv = stack.jetstream().await.get_key_value(subjects::BUCKET_USERS).await.unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&kv.get(account).await.unwrap().unwrap()).unwrap();
    let devices = record["devices"].as_array_mut().unwrap();
    edit(devices.iter_mut().find(|d| d["device"] == device).unwrap());
    kv.put(account, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
}

/// `edit` applied to `device`'s entry both in `account`'s record and on its
/// current signed list, the list signed again (same version) by `signer`,
/// a device of the account, and kept as that version in the history: a
/// list such a device really signed (a buggy or stolen device), as a
/// contact meeting the account for the first time would check it.
async fn rewrite_listed(
    stack: &Stack,
    account: &str,
    signer: &Identity,
    device: &str,
    edit: impl Fn(&mut serde_json::Value),
) {
    let js = stack.jetstream().await;
    let kv = js.get_key_value(subjects::BUCKET_USERS).await.unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&kv.get(account).await.unwrap().unwrap()).unwrap();
    edit(record["devices"].as_array_mut().unwrap().iter_mut().find(|d| d["device"] == device).unwrap());
    let list = &mut record["device_list"];
    edit(list["devices"].as_array_mut().unwrap().iter_mut().find(|d| d["device"] == device).unwrap());
    let l: unibus_proto::devicelist::DeviceList = serde_json::from_value(list.clone()).unwrap();
    let resigned = signer.sign_device_list(&l.account, l.version, l.prev.clone(), l.devices.clone(), l.by);
    *list = serde_json::to_value(&resigned).unwrap();
    kv.put(account, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
    let lists = js.get_key_value(subjects::BUCKET_DEVICE_LISTS).await.unwrap();
    let key = subjects::device_list_key(account, resigned.version);
    lists.put(key, serde_json::to_vec(&resigned).unwrap().into()).await.unwrap();
}

/// A device listed with a binding made for another account (on a list a
/// device of the account signed) is refused before sealing: the send fails
/// with a typed error and nothing reaches the wire, even from the account's
/// own laptop (its copy would be sealed to it): neither on the recipient's
/// subject nor on its own account's; a message it signs is rejected by its
/// receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_for_another_account_is_refused_before_sealing() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let laptop = alice.laptop_id.sign_pub_hex();
    let bob_dm = subjects::dm(&bob_id.sign_pub_hex());
    let (_raw, mut on_alice) = wire(&stack, &alice.phone_id, subjects::dm(&alice.account)).await;
    let (_raw_bob, mut on_bob) = wire(&stack, &bob_id, bob_dm.clone()).await;
    let mut inbox = bob.inbox().await.unwrap();

    let for_bob = alice.laptop_id.bind(&bob_id.sign_pub_hex()).to_string();
    rewrite_listed(&stack, &alice.account, &alice.phone_id, &laptop, |d| {
        d["kex_sig"] = for_bob.clone().into()
    })
    .await;
    match bob.send_dm(&alice.account, b"must not be sealed").await {
        Err(ClientError::Device(DeviceRefused::Binding { account, device })) => {
            assert_eq!((account, device), (alice.account.clone(), laptop.clone()));
        }
        other => panic!("expected a refused binding, got {other:?}"),
    }
    nothing_before_marker(&bob, &alice.account, &mut on_alice).await;
    // The laptop's DM would go to bob's subject, its copy to alice's.
    let own = alice.laptop.send_dm(&bob_id.sign_pub_hex(), b"hello").await;
    assert!(matches!(own, Err(ClientError::Device(DeviceRefused::Binding { .. }))), "{own:?}");
    nothing_before_marker(&alice.laptop, &bob_id.sign_pub_hex(), &mut on_bob).await;
    nothing_before_marker(&alice.laptop, &alice.account, &mut on_alice).await;
    let signed = forged_dm(&signing_key(&alice.laptop_id), &alice.account, &bob_id, b"hello");
    alice.phone.publish_checked(&bob_dm, signed).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderBinding).await;
}

/// Once bob has sealed to a device, a new `kex_pub` for it is refused,
/// even with a binding that verifies and on a list a device of the
/// account signed: that version is not the one bob accepted, so nothing
/// is sealed to the account until bob accepts it; the key first seen is
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_kex_pub_for_a_known_device_is_refused() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let (_bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let laptop = alice.laptop_id.sign_pub_hex();
    let (_raw, mut on_wire) = wire(&stack, &alice.phone_id, subjects::dm(&alice.account)).await;
    bob.send_dm(&alice.account, b"first").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(3), on_wire.next()).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Envelope>(&m.payload).unwrap().recipients.len(), 2);

    let swapped = Identity::generate().kex_pub_hex();
    let key = signing_key(&alice.laptop_id);
    let sig = unibus_proto::binding::sign_binding(&key, &alice.account, &swapped).to_string();
    rewrite_listed(&stack, &alice.account, &alice.phone_id, &laptop, |d| {
        d["kex_pub"] = swapped.clone().into();
        d["kex_sig"] = sig.clone().into();
    })
    .await;
    match bob.send_dm(&alice.account, b"must not be sealed").await {
        Err(ClientError::Device(DeviceRefused::ListHeld { hold, .. })) => {
            assert_eq!(hold, unibus::Hold::Forked { version: 2 });
        }
        other => panic!("expected a refused key change, got {other:?}"),
    }
    nothing_before_marker(&bob, &alice.account, &mut on_wire).await;
    let known = &bob.contacts().accounts[&alice.account].devices[&laptop];
    assert_eq!(known.kex_pub, alice.laptop_id.kex_pub_hex(), "the first key is kept");
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// A sibling added a moment after this device looked its own account up
/// (by sending) is not refused: the device notice makes the inbox look
/// again at once, rather than trusting the set it just fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_added_a_moment_ago_is_not_refused() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (bob_id, _bob) = stack.user(&admin, Role::Member, "bob").await;
    let bob = bob_id.sign_pub_hex();
    let (phone_id, phone) = stack.user(&admin, Role::Member, "alice").await;
    let alice = phone_id.sign_pub_hex();
    let mut phone_inbox = phone.inbox().await.unwrap();
    for round in 0..3 {
        // Sending looks the phone's own account up (for the copy).
        phone.send_dm(&bob, b"before").await.unwrap();
        let laptop_id = Identity::generate().with_account(&alice).unwrap();
        phone.add_device(&laptop_id.bundle(None)).await.unwrap();
        let laptop = stack.connect(&laptop_id).await.unwrap();
        laptop.send_dm(&bob, b"from the new laptop").await.unwrap();
        let peer =
            expect_message(&mut phone_inbox, &alice, &laptop_id.sign_pub_hex(), b"from the new laptop").await;
        assert_eq!(peer.as_deref(), Some(bob.as_str()), "round {round}");
    }
}

/// The same DM as `forged_dm` under a chosen message id.
fn dm_with_id(
    key: &ed25519_dalek::SigningKey,
    account: &str,
    to: &Identity,
    body: &[u8],
    id: &[u8; 16],
) -> Vec<u8> {
    let subject = subjects::dm(&to.sign_pub_hex());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let recipient = Recipient {
        sign_pub: to.sign_pub_hex(),
        kex_pub: unibus_proto::keys::parse_hex32("kex_pub", &to.kex_pub_hex()).unwrap(),
    };
    let sender = Sender { device: key, account };
    let env = e2e::seal_v2_with_id(&sender, &addr, &[recipient], body, now_ms(), id).unwrap();
    serde_json::to_vec(&env).unwrap()
}

/// A forged envelope (signed by a key that is no device of the account it
/// claims) carrying the id of a real message arrives first: it is
/// rejected, and the real message is still delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_envelope_does_not_use_up_a_real_id() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice_id, _alice) = stack.user(&admin, Role::Member, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let (mallory_id, mallory) = stack.user(&admin, Role::Member, "mallory").await;
    let mut inbox = bob.inbox().await.unwrap();
    let alice = alice_id.sign_pub_hex();
    let id: [u8; 16] = rand::random();
    let real = dm_with_id(&signing_key(&alice_id), &alice, &bob_id, b"the real one", &id);
    let forged = dm_with_id(&signing_key(&mallory_id), &alice, &bob_id, b"forged", &id);
    let bob_dm = subjects::dm(&bob_id.sign_pub_hex());

    mallory.publish_checked(&bob_dm, forged).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;
    mallory.publish_checked(&bob_dm, real.clone()).await.unwrap();
    expect_message(&mut inbox, &alice, &alice, b"the real one").await;
    mallory.publish_checked(&bob_dm, real).await.unwrap();
    expect_rejected(&mut inbox, Reject::Replay).await;
}

/// Bob trusts looked-up device sets for a minute, yet a device revoked a
/// moment ago is refused right after the revoke's reply (the revoked
/// notice evicts alice's cached set): a message signed by alice's revoked
/// laptop, published by any connection allowed to (here the admin's), is
/// rejected; so are messages from an account revoked or deleted a moment
/// ago. Alice's phone still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_contacts_at_once() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let (carol_id, carol) = stack.user(&admin, Role::Member, "carol").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    bob.set_devices_max_age(Duration::from_secs(60));
    let mut inbox = bob.inbox().await.unwrap();
    let bob_dm = subjects::dm(&bob_id.sign_pub_hex());
    let (laptop, phone) = (alice.laptop_id.sign_pub_hex(), alice.phone_id.sign_pub_hex());
    alice.laptop.send_dm(&bob_id.sign_pub_hex(), b"from the laptop").await.unwrap();
    expect_message(&mut inbox, &alice.account, &laptop, b"from the laptop").await;
    let carol_key = carol_id.sign_pub_hex();
    carol.send_dm(&bob_id.sign_pub_hex(), b"hi from carol").await.unwrap();
    expect_message(&mut inbox, &carol_key, &carol_key, b"hi from carol").await;

    alice.phone.revoke_device(&laptop).await.unwrap();
    let stolen = forged_dm(&signing_key(&alice.laptop_id), &alice.account, &bob_id, b"still me");
    admin.publish_checked(&bob_dm, stolen).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;
    alice.phone.send_dm(&bob_id.sign_pub_hex(), b"the phone still works").await.unwrap();
    expect_message(&mut inbox, &alice.account, &phone, b"the phone still works").await;

    admin.revoke_user(&alice.account).await.unwrap();
    let after = forged_dm(&signing_key(&alice.phone_id), &alice.account, &bob_id, b"revoked account");
    admin.publish_checked(&bob_dm, after).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;

    admin.delete_user(&carol_key).await.unwrap();
    let gone = forged_dm(&signing_key(&carol_id), &carol_key, &bob_id, b"deleted account");
    admin.publish_checked(&bob_dm, gone).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;
}

/// The same for a device's own account: the phone trusts its account's
/// set for a minute, yet a message signed by the sibling laptop it just
/// revoked is refused right after the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sibling_is_refused_at_once() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let alice = Linked::new(&stack, &admin, "alice").await;
    let (bob_id, _bob) = stack.user(&admin, Role::Member, "bob").await;
    let bob = bob_id.sign_pub_hex();
    alice.phone.set_devices_max_age(Duration::from_secs(60));
    let mut inbox = alice.phone.inbox().await.unwrap();
    let laptop = alice.laptop_id.sign_pub_hex();
    alice.laptop.send_dm(&bob, b"sent from the laptop").await.unwrap();
    let peer = expect_message(&mut inbox, &alice.account, &laptop, b"sent from the laptop").await;
    assert_eq!(peer.as_deref(), Some(bob.as_str()), "the phone saw the laptop's copy");

    alice.phone.revoke_device(&laptop).await.unwrap();
    let stolen = forged_dm(&signing_key(&alice.laptop_id), &alice.account, &alice.phone_id, b"still me");
    admin.publish_checked(&subjects::dm(&alice.account), stolen).await.unwrap();
    expect_rejected(&mut inbox, Reject::SenderDevice).await;
}
