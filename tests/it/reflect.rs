//! Nothing is trusted from a reply (docs/protocol.md section 2): a
//! requester chooses its reply subject and nats-server does not check it,
//! so unibusd's replies can be aimed at another user's DM, room and notice
//! subjects. Each reflection is shown to arrive there (a plain subscriber
//! sees it) and shown to be ignored by the client, while real traffic
//! right after it is shown. A responder that answers lookups with another
//! account's genuine record is refused.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, ClientError, Identity, Inbox, Incoming};
use unibus_proto::e2e::{self, Addressing, Kind, Recipient, Reject, Sender};
use unibus_proto::records::{Device, DeviceStatus, Role};
use unibus_proto::subjects;
use unibus_proto::wire::LookupReply;

use crate::support::Stack;
use crate::support::raw::Raw;
use crate::support::reflection::{Cast, expect_reflections_on_the_wire};

/// Waits (bounded) until `inbox` has ignored `n` messages.
pub async fn until_ignored(inbox: &Inbox, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while inbox.ignored() < n {
        assert!(tokio::time::Instant::now() < deadline, "ignored {} of {n} within 5 s", inbox.ignored());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(inbox: &mut Inbox) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), inbox.next()).await.expect("an inbox item").expect("open")
}

/// The reflected replies show nothing in bob's inbox (each counted as
/// ignored: it did arrive) nor in his device notices, and the real DM,
/// room message and device notice right after them are shown, first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflected_replies_show_nothing_in_the_client() {
    let stack = Stack::start().await;
    let cast = Cast::new(&stack).await;
    let bob = &cast.bob;
    let mut notices = Box::pin(bob.device_notices().await.unwrap());
    let mut inbox = bob.inbox().await.unwrap();
    let mut wire = cast.wire(&stack).await;

    cast.reflect_all(&stack).await;
    expect_reflections_on_the_wire(&mut wire, &cast).await;
    until_ignored(&inbox, 5).await;

    cast.alice.send_dm(bob.account(), b"a real dm").await.unwrap();
    match next(&mut inbox).await {
        Incoming::Message(m) => {
            assert_eq!((m.from.as_str(), m.body.as_slice()), (cast.alice.account(), &b"a real dm"[..]))
        }
        other => panic!("expected alice's message first, got {other:?}"),
    }
    bob.send_room(&cast.room, b"a real room message").await.unwrap();
    match next(&mut inbox).await {
        Incoming::Message(m) => assert_eq!(m.room.as_deref(), Some(cast.room.as_str())),
        other => panic!("expected the room message, got {other:?}"),
    }
    let laptop = Identity::generate().with_account(bob.account()).unwrap();
    bob.add_device(&laptop.bundle(Some("laptop"))).await.unwrap();
    let d: Device = tokio::time::timeout(Duration::from_secs(5), notices.next()).await.unwrap().unwrap();
    assert_eq!((d.device, d.status), (laptop.sign_key(), DeviceStatus::Active), "the real notice, first");
    assert_eq!(inbox.ignored(), 5, "the real notice is not ignored");
}

/// A guest's requests aimed at bob's DM, room and notice subjects never
/// reach them: a guest is in account GUEST, where its replies stay. The
/// wire view is live (a member's reflection right after arrives) and
/// unibusd did answer the guest (a request aimed at its own inbox gets
/// its answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_reply_never_reaches_a_member() {
    let stack = Stack::start().await;
    let cast = Cast::new(&stack).await;
    let mut wire = cast.wire(&stack).await;
    let mut guest = Raw::connect(&stack.url, &Identity::generate()).await.unwrap();
    let targets = cast.targets();
    for reply in &targets[..4] {
        guest.hpub(subjects::REGISTER, reply, b"NATS/1.0\r\n\r\n", b"{}").await.unwrap();
    }
    let own = format!("{}.own", guest.inbox);
    guest.sub(&own, 1).await.unwrap();
    guest.hpub(subjects::REGISTER, &own, b"NATS/1.0\r\n\r\n", b"{}").await.unwrap();
    let answer = guest.next_msg(Duration::from_secs(5)).await.unwrap().expect("unibusd answers the guest");
    assert_eq!(answer.error_code().as_deref(), Some("bad_request"));
    // The guest's four requests went out before the one answered: a
    // member's reflection now proves the wire is live, and nothing of the
    // guest's came before it or comes after it.
    let mut mallory = Raw::connect(&stack.url, &cast.mallory_id).await.unwrap();
    mallory.hpub(subjects::WHOAMI, &targets[0], b"NATS/1.0\r\n\r\n", b"{}").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), wire.subs.next()).await.unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(body["user"]["sign_pub"], cast.mallory_id.sign_pub_hex().as_str(), "mallory's reply, first");
    let more = tokio::time::timeout(Duration::from_millis(500), wire.subs.next()).await;
    assert!(more.is_err(), "a guest's reply reached a member's subject: {more:?}");
}

/// A notice that carries the header but names a device the account does
/// not have (what a buggy or compromised publisher in AUTH could send)
/// yields nothing: the record shown comes from the device list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_naming_a_foreign_device_yields_nothing() {
    let stack = Stack::start().await;
    let cast = Cast::new(&stack).await;
    let bob = &cast.bob;
    let mut notices = Box::pin(bob.device_notices().await.unwrap());
    let foreign = cast.alice.list_devices().await.unwrap().remove(0);
    let svc = stack.service_nats().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(subjects::HDR_NOTICE, subjects::NOTICE_DEVICES);
    let body = serde_json::json!({ "device": foreign }).to_string();
    svc.publish_with_headers(subjects::device_notice(bob.account()), headers, body.into()).await.unwrap();
    svc.flush().await.unwrap();

    let laptop = Identity::generate().with_account(bob.account()).unwrap();
    bob.add_device(&laptop.bundle(None)).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), notices.next()).await.unwrap().unwrap();
    assert_eq!(d.device, laptop.sign_pub_hex(), "the foreign device was not shown");
}

/// A sealed DM from `account`'s device `key` to `to`'s one device.
fn dm_as(key: &ed25519_dalek::SigningKey, account: &str, to: &Identity, body: &[u8]) -> Vec<u8> {
    let subject = subjects::dm(&to.sign_pub_hex());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let kex_pub = unibus_proto::keys::parse_hex32("kex_pub", &to.kex_pub_hex()).unwrap();
    let recipient = Recipient { sign_pub: to.sign_pub_hex(), kex_pub };
    let sender = Sender { device: key, account };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let env = e2e::seal_v2(&sender, &addr, &[recipient], body, i64::try_from(now).unwrap()).unwrap();
    serde_json::to_vec(&env).unwrap()
}

fn signing_key(id: &Identity) -> ed25519_dalek::SigningKey {
    let (_, raw) = nkeys::decode_seed(&id.nkey_seed()).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&raw)
}

/// Waits (bounded) until a lookup of `asked` is answered with `got`'s
/// record: the old control plane's subscriptions are gone (its drain can
/// end after `stop` returns) and the substituting responder answers.
async fn until_substituted(probe: &Client, asked: &str, got: &str) {
    let body = serde_json::json!({ "sign_pub": asked }).to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = probe.nats().request(subjects::USER_LOOKUP, body.clone().into()).await;
        let user = reply.ok().and_then(|m| serde_json::from_slice::<LookupReply>(&m.payload).ok());
        if user.is_some_and(|u| u.user.sign_pub == got) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the substituting responder never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A responder holding the service credentials answers every lookup with
/// mallory's genuine record: alice's send to bob fails with
/// `WrongAccount` and nothing is published on bob's or mallory's DM
/// subject; bob's inbox rejects a message signed by mallory claiming to
/// be from alice; neither client records mallory's devices under the
/// account it asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answered_for_another_account_is_refused() {
    let mut stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice_id, alice) = stack.user(&admin, Role::Member, "alice").await;
    let (bob_id, bob) = stack.user(&admin, Role::Member, "bob").await;
    let (mallory_id, mallory) = stack.user(&admin, Role::Member, "mallory").await;
    let (alice_key, bob_key, mallory_key) =
        (alice_id.sign_pub_hex(), bob_id.sign_pub_hex(), mallory_id.sign_pub_hex());
    let genuine = admin.lookup(&mallory_key).await.unwrap();
    let mut inbox = bob.inbox().await.unwrap();
    let watch = async_nats::ConnectOptions::with_nkey(mallory_id.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&mallory_key))
        .connect(&stack.url)
        .await
        .unwrap();
    let mut on_mallory = watch.subscribe(subjects::dm(&mallory_key)).await.unwrap();
    let bob_watch = async_nats::ConnectOptions::with_nkey(bob_id.nkey_seed())
        .custom_inbox_prefix(subjects::inbox_prefix(&bob_key))
        .connect(&stack.url)
        .await
        .unwrap();
    let mut on_bob = bob_watch.subscribe(subjects::dm(&bob_key)).await.unwrap();
    bob_watch.flush().await.unwrap();
    watch.flush().await.unwrap();

    // The control plane is now the substituting responder.
    stack.daemon.take().unwrap().stop().await;
    let svc = stack.service_nats().await;
    let mut lookups = svc.subscribe(subjects::USER_LOOKUP).await.unwrap();
    svc.flush().await.unwrap();
    let reply = serde_json::to_vec(&LookupReply { user: genuine }).unwrap();
    let responder = svc.clone();
    tokio::spawn(async move {
        while let Some(m) = lookups.next().await {
            if let Some(to) = m.reply {
                let _ = responder.publish(to, reply.clone().into()).await;
            }
        }
    });

    until_substituted(&admin, &bob_key, &mallory_key).await;
    match alice.send_dm(&bob_key, b"for bob only").await {
        Err(ClientError::WrongAccount { asked, got }) => {
            assert_eq!((asked, got), (bob_key.clone(), mallory_key.clone()))
        }
        other => panic!("expected WrongAccount, got {other:?}"),
    }
    let nothing = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! { m = on_bob.next() => m, m = on_mallory.next() => m }
    })
    .await;
    assert!(nothing.is_err(), "nothing was published: {nothing:?}");

    let claimed = dm_as(&signing_key(&mallory_id), &alice_key, &bob_id, b"alice here");
    mallory.publish_checked(&subjects::dm(&bob_key), claimed).await.unwrap();
    match next(&mut inbox).await {
        Incoming::Rejected { reason, .. } => assert_eq!(reason, Reject::SenderUnchecked),
        other => panic!("expected the message claiming alice to be rejected, got {other:?}"),
    }
    assert!(alice.contacts().accounts.is_empty(), "alice recorded nothing: {:?}", alice.contacts());
    assert!(bob.contacts().accounts.is_empty(), "bob recorded nothing: {:?}", bob.contacts());
}

/// Answers every request on `subject` (in account AUTH) with `reply`.
async fn substitute(stack: &Stack, subject: &'static str, reply: Vec<u8>) {
    let svc = stack.service_nats().await;
    let mut requests = svc.subscribe(subject).await.unwrap();
    svc.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(to) = m.reply {
                let _ = svc.publish(to, reply.clone().into()).await;
            }
        }
    });
}

/// The other replies that name what was asked are checked too: `whoami`
/// answered with another account's genuine reply (`WrongAccount`) or with
/// a sibling device's (`WrongDevice`), `room.get` with another room
/// (`WrongRoom`), `device.list` with another account's devices
/// (`WrongAccount`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_room_and_device_list_replies_about_something_else_are_refused() {
    let mut stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice_id, alice, alice_room) = stack.room_owner(&admin, "alice", "alice's room").await;
    let (_m, mallory, mallory_room) = stack.room_owner(&admin, "mallory", "mallory's room").await;
    let laptop_id = Identity::generate().with_account(&alice_id.sign_pub_hex()).unwrap();
    alice.add_device(&laptop_id.bundle(Some("laptop"))).await.unwrap();
    let laptop = stack.connect(&laptop_id).await.unwrap();
    let mallory_whoami = serde_json::to_vec(&mallory.whoami_device().await.unwrap()).unwrap();
    let phone_whoami = serde_json::to_vec(&alice.whoami_device().await.unwrap()).unwrap();
    let rooms = serde_json::json!({ "room": mallory_room });
    let devices = serde_json::json!({ "devices": mallory.list_devices().await.unwrap() });

    stack.daemon.take().unwrap().stop().await;
    substitute(&stack, subjects::ROOM_GET, rooms.to_string().into_bytes()).await;
    substitute(&stack, subjects::DEVICE_LIST, devices.to_string().into_bytes()).await;
    let whoami = stack.service_nats().await;
    let mut asked = whoami.subscribe(subjects::WHOAMI).await.unwrap();
    whoami.flush().await.unwrap();
    // The phone is told it is mallory; the laptop is told it is the phone.
    let (phone_key, laptop_key) = (alice_id.sign_pub_hex(), laptop_id.sign_pub_hex());
    tokio::spawn(async move {
        while let Some(m) = asked.next().await {
            let info = m.headers.as_ref().and_then(|h| h.get(subjects::HDR_REQUEST_INFO)).unwrap();
            let reply = match info.as_str().contains(&laptop_key) {
                true => phone_whoami.clone(),
                false => mallory_whoami.clone(),
            };
            let _ = whoami.publish(m.reply.unwrap(), reply.into()).await;
        }
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let room = loop {
        match alice.get_room(&alice_room.id).await {
            Err(ClientError::Request { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    match room {
        Err(ClientError::WrongRoom { asked, got }) => {
            assert_eq!((asked, got), (alice_room.id.to_string(), mallory_room.id.to_string()))
        }
        other => panic!("expected WrongRoom, got {other:?}"),
    }
    match alice.list_devices().await {
        Err(ClientError::WrongAccount { asked, got }) => {
            assert_eq!((asked, got), (phone_key.clone(), mallory.account().to_string()))
        }
        other => panic!("expected WrongAccount, got {other:?}"),
    }
    match alice.whoami().await {
        Err(ClientError::WrongAccount { asked, got }) => {
            assert_eq!((asked, got), (phone_key.clone(), mallory.account().to_string()))
        }
        other => panic!("expected WrongAccount, got {other:?}"),
    }
    match laptop.whoami_device().await {
        Err(ClientError::WrongDevice { asked, got }) => {
            assert_eq!((asked, got), (laptop_id.sign_pub_hex(), phone_key))
        }
        other => panic!("expected WrongDevice, got {other:?}"),
    }
}
