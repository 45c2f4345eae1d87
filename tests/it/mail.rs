//! Messages that wait (docs/protocol.md section 10) through a real server:
//! what `unibus.mail.send` stores and refuses, what `unibus.mail.fetch`
//! returns to which device, live delivery with `Unibus-Seq`, the limits,
//! and an account's DM channel going with the account.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, ClientError, Identity};
use unibus_proto::e2e::{Addressing, Envelope, Kind, Recipient, Sender};
use unibus_proto::mail::Channel;
use unibus_proto::records::{Role, Room};
use unibus_proto::subjects;

use crate::support::devices::new_device;
use crate::support::{Stack, code};

/// Now in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A DM from `from` to account `to`, sealed for `recipients`, dated `ts`.
pub(crate) fn dm(from: &Identity, to: &str, recipients: &[Recipient], body: &[u8], ts: i64) -> Envelope {
    let subject = subjects::dm(to);
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    from.seal(&addr, recipients, body, ts).expect("seals")
}

/// A room message from `from`, sealed for `recipients`.
fn room_msg(from: &Identity, room: &str, recipients: &[Recipient], body: &[u8]) -> Envelope {
    let subject = subjects::room_msg(room);
    let addr = Addressing { kind: Kind::Room, subject: &subject, room: Some(room), peer: None };
    from.seal(&addr, recipients, body, now_ms()).expect("seals")
}

/// Every page of `channel` for `c` from `after`: `(seq, envelope id)`.
pub(crate) async fn fetch_all(c: &Client, channel: &Channel, after: u64) -> Vec<(u64, String)> {
    let (mut out, mut after) = (Vec::new(), after);
    loop {
        let page = c.mail_fetch(channel, after, None).await.expect("fetches");
        out.extend(page.messages.into_iter().map(|w| (w.seq, w.envelope.id)));
        match page.next {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// A registered user made from a known seed (so that the test can sign
/// as it), connected.
async fn user_from_seed(stack: &Stack, admin: &Client, seed: [u8; 32]) -> (Identity, Client) {
    let inv = admin
        .create_invite(&unibus_proto::wire::InviteCreateRequest {
            role: Some(Role::Member),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = Identity::from_seed(seed);
    stack.connect(&id).await.unwrap().register(&inv.link, Some("seeded")).await.unwrap();
    let c = stack.connect(&id).await.unwrap();
    (id, c)
}

/// A room "plans" of its owner with member erin: the owner's and erin's
/// connections made after the add (which closed the ones before it).
async fn room_with_erin(stack: &Stack, admin: &Client) -> (Client, Identity, Client, Room) {
    let (owner, owner_c, room) = stack.room_owner(admin, "owner", "plans").await;
    let (erin, _e) = stack.user(admin, Role::Member, "erin").await;
    owner_c.add_member(room.id.as_str(), &erin.sign_pub_hex()).await.unwrap();
    let erin_c = stack.connect(&erin).await.unwrap();
    let owner_c = stack.connect(&owner).await.unwrap();
    (owner_c, erin, erin_c, room)
}

/// A DM to an account whose two devices are offline waits for each of
/// them, in order, once per page walk; a page size splits it with `next`;
/// a device linked afterwards gets none of it; a device online gets it
/// live with `Unibus-Seq` equal to the `seq` the sender was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_wait_for_offline_devices_and_new_devices_get_none() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_phone) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let (laptop, bundle) = new_device(&bob_key, "laptop");
    bob_phone.add_device(&bundle).await.unwrap();
    drop(bob_phone);

    // Both of bob's devices are offline.
    let mut sent = Vec::new();
    for i in 0..3 {
        let s = alice_c.send_dm(&bob_key, format!("waiting {i}").as_bytes()).await.expect("stored");
        sent.push((s.seq, s.id));
    }
    assert!(sent.windows(2).all(|w| w[0].0 < w[1].0), "seqs grow: {sent:?}");

    for device in [&bob, &laptop] {
        let c = stack.connect(device).await.unwrap();
        assert_eq!(fetch_all(&c, &Channel::Dm, 0).await, sent, "every message, in order, once");
        let first = c.mail_fetch(&Channel::Dm, 0, Some(2)).await.unwrap();
        assert_eq!(first.messages.len(), 2);
        assert_eq!(first.next, Some(sent[1].0), "a full page says where to go on");
        let rest = c.mail_fetch(&Channel::Dm, sent[1].0, Some(2)).await.unwrap();
        assert_eq!((rest.messages.len(), rest.next), (1, None));
        assert!(c.mail_fetch(&Channel::Dm, sent[2].0, None).await.unwrap().messages.is_empty());
    }

    // A device linked after the messages were stored gets none of them.
    let (tablet, bundle) = new_device(&bob_key, "tablet");
    stack.connect(&bob).await.unwrap().add_device(&bundle).await.unwrap();
    let tablet_c = stack.connect(&tablet).await.unwrap();
    assert!(fetch_all(&tablet_c, &Channel::Dm, 0).await.is_empty());

    // Online: live, with the seq the sender was told.
    let mut live = tablet_c.nats().subscribe(subjects::dm(&bob_key)).await.unwrap();
    tablet_c.nats().flush().await.unwrap();
    let s = alice_c.send_dm(&bob_key, b"live").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(3), live.next()).await.unwrap().unwrap();
    let seq = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_SEQ)).map(|v| v.to_string());
    assert_eq!(seq, Some(s.seq.to_string()));
    let env: Envelope = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(env.id, s.id);
    assert_eq!(fetch_all(&tablet_c, &Channel::Dm, sent[2].0).await, vec![(s.seq, s.id)]);
}

/// Every refusal of section 10 answers its code and stores nothing (KV
/// unchanged, not even a write undone); the same envelope sent twice is
/// stored once and both replies carry its `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_store_nothing_and_a_retry_is_stored_once() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = user_from_seed(&stack, &admin, [0xa1; 32]).await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let (carol, _c) = stack.user(&admin, Role::Member, "carol").await;
    let (dave, dave_c) = stack.user(&admin, Role::Member, "dave").await;
    let (_mallory, mallory_c) = stack.user(&admin, Role::Member, "mallory").await;
    let (_o, owner_c, room) = stack.room_owner(&admin, "owner", "closed").await;
    admin.revoke_user(&carol.sign_pub_hex()).await.unwrap();
    dave_c.block_add(&alice.sign_pub_hex()).await.unwrap();
    let bob_key = bob.sign_pub_hex();
    let good = dm(&alice, &bob_key, &[bob.recipient()], b"hi", now_ms());

    let before = stack.kv_snapshot().await;
    let refused = |r: Result<u64, ClientError>| code(r);
    let mut v1 = good.clone();
    v1.v = 1;
    assert_eq!(refused(alice_c.mail_send(&v1).await), "bad_request", "version 1");
    assert_eq!(refused(mallory_c.mail_send(&good).await), "bad_request", "from another account");
    let mut flipped = good.clone();
    flipped.ct = flipped.ct.replacen(&flipped.ct[..4], "AAAA", 1);
    assert_eq!(refused(alice_c.mail_send(&flipped).await), "bad_request", "bad signature");
    let old = dm(&alice, &bob_key, &[bob.recipient()], b"old", now_ms() - 6 * 60_000);
    assert_eq!(refused(alice_c.mail_send(&old).await), "bad_request", "6 minutes old");
    let ahead = dm(&alice, &bob_key, &[bob.recipient()], b"ahead", now_ms() + 6 * 60_000);
    assert_eq!(refused(alice_c.mail_send(&ahead).await), "bad_request", "6 minutes ahead");
    let to_self = dm(&alice, &alice.sign_pub_hex(), &[alice.recipient()], b"me", now_ms());
    assert_eq!(refused(alice_c.mail_send(&to_self).await), "bad_request", "own DM subject without peer");
    let nobody = Identity::generate();
    let to_nobody = dm(&alice, &nobody.sign_pub_hex(), &[nobody.recipient()], b"?", now_ms());
    assert_eq!(refused(alice_c.mail_send(&to_nobody).await), "not_found", "no such account");
    let no_room = room_msg(&alice, &"ab".repeat(16), &[alice.recipient()], b"?");
    assert_eq!(refused(alice_c.mail_send(&no_room).await), "not_found", "no such room");
    let to_carol = dm(&alice, &carol.sign_pub_hex(), &[carol.recipient()], b"?", now_ms());
    assert_eq!(refused(alice_c.mail_send(&to_carol).await), "forbidden", "revoked recipient");
    let to_dave = dm(&alice, &dave.sign_pub_hex(), &[dave.recipient()], b"?", now_ms());
    assert_eq!(refused(alice_c.mail_send(&to_dave).await), "forbidden", "blocked by the recipient");
    let closed = room_msg(&alice, room.id.as_str(), &[alice.recipient()], b"?");
    assert_eq!(refused(alice_c.mail_send(&closed).await), "forbidden", "not a member");
    let extra = dm(&alice, &bob_key, &[bob.recipient(), nobody.recipient()], b"?", now_ms());
    assert_eq!(refused(alice_c.mail_send(&extra).await), "stale_devices", "a device bob does not have");
    drop(owner_c);
    assert_eq!(stack.kv_snapshot().await, before, "no refusal wrote anything");

    // bob links a laptop: a DM sealed for his phone alone is stale now.
    let (laptop, bundle) = new_device(&bob_key, "laptop");
    stack.connect(&bob).await.unwrap().add_device(&bundle).await.unwrap();
    let before = stack.kv_snapshot().await;
    assert_eq!(refused(alice_c.mail_send(&good).await), "stale_devices", "bob's laptop is missing");
    assert_eq!(stack.kv_snapshot().await, before);

    // The client looks again and seals for both; a retry of the very same
    // envelope is stored once; another envelope with its id is refused.
    let sent = alice_c.send_dm(&bob_key, b"to both").await.unwrap();
    let bob_c = stack.connect(&bob).await.unwrap();
    let page = bob_c.mail_fetch(&Channel::Dm, 0, None).await.unwrap();
    let stored = page.messages.iter().find(|w| w.envelope.id == sent.id).expect("stored").envelope.clone();
    assert_eq!(alice_c.mail_send(&stored).await.unwrap(), sent.seq, "a retry answers the first seq");
    let signing = ed25519_dalek::SigningKey::from_bytes(&[0xa1; 32]);
    let id: [u8; 16] = hex::decode(&sent.id).unwrap().try_into().unwrap();
    let subject = subjects::dm(&bob_key);
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let sender = Sender { device: &signing, account: &alice.sign_pub_hex() };
    let bob_devices = vec![bob.recipient(), laptop.recipient()];
    let twin =
        unibus_proto::e2e::seal_v2_with_id(&sender, &addr, &bob_devices, b"other", now_ms(), &id).unwrap();
    let before = stack.kv_snapshot().await;
    assert_eq!(refused(alice_c.mail_send(&twin).await), "bad_request", "another envelope with this id");
    assert_eq!(stack.kv_snapshot().await, before);
    let ids: Vec<String> = fetch_all(&bob_c, &Channel::Dm, 0).await.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids.iter().filter(|i| **i == sent.id).count(), 1, "stored once");
}

/// Fetching a room needs current membership (a removed member is refused,
/// an unknown room is `not_found`); a revoked device fetches nothing; an
/// account's delete takes its DM channel with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_follows_membership_and_delete_takes_the_dm_channel() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (owner_c, erin, erin_c, room) = room_with_erin(&stack, &admin).await;
    let sent = owner_c.send_room(room.id.as_str(), b"agenda").await.expect("stored");
    let channel = Channel::Room(room.id.clone());
    assert_eq!(fetch_all(&erin_c, &channel, 0).await, vec![(sent.seq, sent.id.clone())]);
    assert_eq!(
        code(erin_c.mail_fetch(&Channel::Room("cd".repeat(16).parse().unwrap()), 0, None).await),
        "not_found"
    );

    owner_c.remove_member(room.id.as_str(), &erin.sign_pub_hex()).await.unwrap();
    let erin_c = stack.connect(&erin).await.unwrap();
    assert_eq!(code(erin_c.mail_fetch(&channel, 0, None).await), "forbidden", "removed from the room");

    // A DM waits for erin; her device is then revoked (by an admin), and
    // her account deleted: the channel goes with it.
    let erin_key = erin.sign_pub_hex();
    owner_c.send_dm(&erin_key, b"bye").await.unwrap();
    let bucket = stack.jetstream().await.get_key_value(subjects::BUCKET_MAIL).await.unwrap();
    let dm_keys = || async {
        let keys: Vec<String> = bucket.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
        keys.into_iter().filter(|k| k.starts_with(&format!("dm.{erin_key}."))).count()
    };
    assert_eq!(dm_keys().await, 1);
    admin.revoke_user(&erin_key).await.unwrap();
    assert!(stack.connect(&erin).await.is_err(), "revoked: not even a guest");
    admin.delete_user(&erin_key).await.unwrap();
    assert_eq!(dm_keys().await, 0, "the delete reply comes after the channel is gone");
    assert_eq!(fetch_all(&owner_c, &channel, 0).await.len(), 1, "other channels stay");
}

/// One account sending as fast as it can is limited (`limit_reached`) and
/// stores no refused message; the daily byte cap holds; a full bucket
/// refuses with `limit_reached` and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_and_store_nothing() {
    let mut stack = Stack::start_server_only().await;
    stack
        .start_daemon_with(|s| {
            s.mail.rate = 1;
            s.mail.burst = 5;
            s.mail.daily_bytes = 1 << 16;
        })
        .await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let mut stored = 0;
    let mut refused = 0;
    for i in 0..20 {
        let env = dm(&alice, &bob_key, &[bob.recipient()], format!("{i}").as_bytes(), now_ms());
        match alice_c.mail_send(&env).await {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(code(Err::<u64, _>(e)), "limit_reached");
                refused += 1;
            }
        }
    }
    assert!((5..=7).contains(&stored) && refused >= 13, "stored {stored}, refused {refused}");
    let bob_c = stack.connect(&bob).await.unwrap();
    assert_eq!(fetch_all(&bob_c, &Channel::Dm, 0).await.len(), stored, "refused ones are not stored");

    // The daily cap (64 KiB): bodies of 20 KiB pass three times at most.
    let (carol, carol_c) = stack.user(&admin, Role::Member, "carol").await;
    let big = vec![7u8; 20 << 10];
    let mut stored = 0;
    for _ in 0..5 {
        let env = dm(&carol, &bob_key, &[bob.recipient()], &big, now_ms());
        match carol_c.mail_send(&env).await {
            Ok(_) => stored += 1,
            Err(e) => assert_eq!(code(Err::<u64, _>(e)), "limit_reached"),
        }
    }
    assert!((1..=3).contains(&stored), "{stored} big messages stored under a 64 KiB day");
    let _ = carol;
}

/// A full mail bucket refuses with `limit_reached` and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bucket_refuses() {
    let mut stack = Stack::start_server_only().await;
    stack.start_daemon_with(|s| s.store.mail.max_bytes = 1 << 20).await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let big = vec![1u8; 200 << 10];
    let mut full = None;
    for i in 0..10 {
        let env = dm(&alice, &bob.sign_pub_hex(), &[bob.recipient()], &big, now_ms());
        if let Err(e) = alice_c.mail_send(&env).await {
            full = Some((i, code(Err::<u64, _>(e))));
            break;
        }
    }
    let (at, why) = full.expect("the bucket fills");
    assert_eq!(why, "limit_reached");
    assert!((3..=5).contains(&at), "full after {at} messages of 200 KiB in 1 MiB");
    let bob_c = stack.connect(&bob).await.unwrap();
    assert_eq!(fetch_all(&bob_c, &Channel::Dm, 0).await.len(), at, "the refused one is not stored");
}

/// 200 sends of one account at once (16 handled at a time, the rest
/// waiting for a slot: the per-caller limits) take the daily cap from the store in
/// one lease (or very few), not one lease per send: every send is stored
/// and the account's day counter stays near one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sends_shares_one_lease() {
    let stack = Stack::start_mail_unlimited().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let to = bob.sign_pub_hex();
    let envelopes: Vec<Envelope> =
        (0..200).map(|i| dm(&alice, &to, &[bob.recipient()], format!("{i}").as_bytes(), now_ms())).collect();
    let sends = envelopes.iter().map(|e| alice_c.mail_send(e));
    for r in futures::future::join_all(sends).await {
        r.expect("stored: the day's cap is far away");
    }
    let quota = stack.jetstream().await.get_key_value(subjects::BUCKET_MAIL_QUOTA).await.unwrap();
    let mut keys = quota.keys().await.unwrap();
    let key = keys.next().await.unwrap().unwrap();
    assert!(key.starts_with(&alice.sign_pub_hex()), "{key}");
    let day: serde_json::Value = serde_json::from_slice(&quota.get(&key).await.unwrap().unwrap()).unwrap();
    let taken = day["bytes"].as_u64().unwrap();
    assert!(taken <= 2 << 20, "{taken} bytes taken for 200 small sends");
}

/// A walk through a long channel is served partly from what the previous
/// page read past (one read per 1,024 entries, not one per page), yet it
/// hands over every message in order and once, messages stored meanwhile
/// follow, and every page is checked: a member removed mid-walk is
/// refused the next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_reads_ahead_yet_every_page_is_checked() {
    let stack = Stack::start_mail_unlimited().await;
    let (_a, admin) = stack.admin().await;
    let (owner_c, erin, erin_c, room) = room_with_erin(&stack, &admin).await;
    let channel = Channel::Room(room.id.clone());
    let mut sent = Vec::new();
    for i in 0..250 {
        let s = owner_c.send_room(room.id.as_str(), format!("m{i}").as_bytes()).await.unwrap();
        sent.push((s.seq, s.id));
    }
    let reads = format!("$JS.API.DIRECT.GET.KV_{}", subjects::BUCKET_MAIL);
    let watch = stack.watch(&[], &[&reads]).await;
    let first = erin_c.mail_fetch(&channel, 0, None).await.unwrap();
    assert_eq!(first.messages.len(), 100);
    let mut got: Vec<(u64, String)> = first.messages.into_iter().map(|w| (w.seq, w.envelope.id)).collect();
    for i in 250..260 {
        let s = owner_c.send_room(room.id.as_str(), format!("m{i}").as_bytes()).await.unwrap();
        sent.push((s.seq, s.id));
    }
    got.extend(fetch_all(&erin_c, &channel, first.next.expect("more")).await);
    assert_eq!(got, sent, "every message once, in order, the late ones last");
    let read = watch.take().await.requests(&reads);
    assert!(read <= 3, "3 pages of 100 and a last one took {read} reads of the bucket");

    let page = erin_c.mail_fetch(&channel, 0, None).await.unwrap();
    owner_c.remove_member(room.id.as_str(), &erin.sign_pub_hex()).await.unwrap();
    let erin_c = stack.connect(&erin).await.unwrap();
    assert_eq!(
        code(erin_c.mail_fetch(&channel, page.next.expect("more"), None).await),
        "forbidden",
        "removed mid-walk: what was read ahead for her is not handed over"
    );
}

/// Hostile bodies on `unibus.mail.send` and `unibus.mail.fetch`, sent from
/// a raw socket (no client library to tidy them): each gets `bad_request`
/// on the wire and KV is unchanged; the well-formed send they were edited
/// from is stored afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mail_bodies_are_bad_request_and_store_nothing() {
    use crate::support::raw::Raw;
    use serde_json::{Value, json};

    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (alice, _alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let good = dm(&alice, &bob_key, &[bob.recipient()], b"hi", now_ms());
    let env = serde_json::to_value(&good).unwrap();
    let edit = |path: &str, value: Value| {
        let mut e = env.clone();
        *e.pointer_mut(path).expect("field") = value;
        json!({ "envelope": e }).to_string()
    };
    let mut flipped = good.sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let day_ms = 86_400_000i64;
    let sends: Vec<(&str, String)> = vec![
        ("not json", "{not json".into()),
        ("array", "[]".into()),
        ("no envelope", "{}".into()),
        ("unknown top field", json!({"envelope": env, "seq": 1}).to_string()),
        ("envelope version 1", edit("/v", json!(1))),
        ("envelope unknown field", {
            let mut e = env.clone();
            e.as_object_mut().unwrap().insert("extra".into(), json!(true));
            json!({ "envelope": e }).to_string()
        }),
        ("signature flipped", edit("/sig", json!(String::from_utf8(flipped).unwrap()))),
        ("from another account", edit("/from", json!(bob_key))),
        ("ts 10 minutes ahead", edit("/ts", json!(now_ms() + 600_000))),
        ("ts 31 days old", edit("/ts", json!(now_ms() - 31 * day_ms))),
        ("ts not a number", edit("/ts", json!("now"))),
        ("subject not a dm subject", edit("/subject", json!("unibus.msg.dm.xyz"))),
        ("subject elsewhere", edit("/subject", json!("unibus.whoami"))),
        ("id not hex", edit("/id", json!("zz".repeat(16)))),
        ("recipients empty", edit("/recipients", json!([]))),
        ("nul in a string", edit("/nonce", json!("\u{0}"))),
    ];
    let fetches: Vec<(&str, String)> = vec![
        ("fetch not json", "nope".into()),
        ("fetch no channel", json!({}).to_string()),
        ("fetch channel not a room id", json!({"channel": "x.y"}).to_string()),
        ("fetch channel a number", json!({"channel": 7}).to_string()),
        ("fetch limit 0", json!({"channel": "dm", "limit": 0}).to_string()),
        ("fetch limit 101", json!({"channel": "dm", "limit": 101}).to_string()),
        ("fetch after negative", json!({"channel": "dm", "after": -1}).to_string()),
        ("fetch after past u64", r#"{"channel": "dm", "after": 18446744073709551616}"#.into()),
        ("fetch after a string", json!({"channel": "dm", "after": "1"}).to_string()),
        ("fetch unknown field", json!({"channel": "dm", "from": 1}).to_string()),
    ];

    let mut raw = Raw::connect(&stack.url, &alice).await.expect("alice connects raw");
    raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
    let before = stack.kv_snapshot().await;
    let cases = sends.iter().map(|(w, b)| (subjects::MAIL_SEND, w, b));
    let cases = cases.chain(fetches.iter().map(|(w, b)| (subjects::MAIL_FETCH, w, b)));
    for (n, (subject, what, body)) in cases.enumerate() {
        let reply = format!("{}.m{n}", raw.inbox);
        raw.hpub(subject, &reply, b"NATS/1.0\r\n\r\n", body.as_bytes()).await.unwrap();
        let frame =
            raw.next_msg(Duration::from_secs(5)).await.unwrap().unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(frame.subject, reply, "{what}");
        assert_eq!(frame.error_code().as_deref(), Some("bad_request"), "{what}: {:?}", frame.json());
    }
    assert_eq!(stack.kv_snapshot().await, before, "a malformed mail request changed KV");

    // The envelope they were edited from is stored, once.
    let body = json!({ "envelope": env }).to_string();
    raw.hpub(subjects::MAIL_SEND, &format!("{}.ok", raw.inbox), b"NATS/1.0\r\n\r\n", body.as_bytes())
        .await
        .unwrap();
    let frame = raw.next_msg(Duration::from_secs(5)).await.unwrap().expect("reply");
    assert_eq!(frame.error_code(), None, "{:?}", frame.json());
    assert!(frame.json()["seq"].as_u64().is_some_and(|s| s > 0));
}
