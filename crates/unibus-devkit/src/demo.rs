//! The narrated demo (`unibusd demo`): starts the local stack, then an
//! admin invites alice and bob, they register, make a room, exchange
//! end-to-end encrypted direct and room messages (shown decrypted at the
//! peers and as the raw bytes a plain NATS subscriber sees on the subject).
//! Bob goes offline; alice sends him a DM and the room a message, both
//! stored; bob comes back and reads both, once, marked as having waited.
//! Alice links her laptop by scanning its bundle; both of her devices get
//! bob's DM and see what the other sent; her phone is lost: the laptop may
//! not revoke the older phone, the admin does, and the laptop keeps
//! chatting. A compromised server then plants a ghost device in alice's
//! account (straight into KV, with a device list the ghost signed itself):
//! bob's client refuses to seal to alice and says why, and rejects what
//! the ghost sends. Last, the admin revokes bob, who is cut off at once.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::dev::{DevArgs, LocalStack};
use unibus::{Bundle, Client, ClientError, Identity, Inbox, Incoming, MailState};
use unibus_proto::devicelist::By;
use unibus_proto::e2e::{Addressing, Freshness, Kind, Recipient};
use unibus_proto::records::{DeviceStatus, User};
use unibus_proto::subjects;
use unibus_proto::wire::InviteCreateRequest;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The stack did not start.
    #[error(transparent)]
    Stack(#[from] crate::dev::DevError),
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Something the demo expected did not happen.
    #[error("{0}")]
    Unexpected(String),
}

fn say(who: &str, what: impl AsRef<str>) {
    println!("{:>8} | {}", who, what.as_ref());
}

fn short(key: &str) -> &str {
    &key[..12.min(key.len())]
}

/// What a plain subscriber sees: the envelope, its ciphertext cut short.
fn wire_view(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let ct: String = field("ct").chars().take(40).collect();
    format!(
        "{} bytes: {{\"v\":{},\"kind\":\"{}\",\"from\":\"{}...\",\"recipients\":[{} wrapped keys],\"ct\":\"{ct}...\",\"sig\":...}}",
        payload.len(),
        v["v"],
        field("kind"),
        short(&field("from")),
        v["recipients"].as_array().map_or(0, Vec::len)
    )
}

async fn next_message(inbox: &mut Inbox) -> Result<unibus_proto::e2e::Opened, DemoError> {
    match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await {
        Ok(Some(Incoming::Message(m))) => Ok(m),
        other => Err(DemoError::Unexpected(format!("expected a message, got {other:?}"))),
    }
}

/// A raw subscriber (plain NATS, no decryption) with `id`'s key.
async fn tap(url: &str, id: &Identity, subject: String) -> Result<async_nats::Subscriber, DemoError> {
    let raw =
        unibus::connect_options(id).connect(url).await.map_err(|e| DemoError::Unexpected(e.to_string()))?;
    let sub = raw.subscribe(subject).await.map_err(|e| DemoError::Unexpected(e.to_string()))?;
    raw.flush().await.map_err(|e| DemoError::Unexpected(e.to_string()))?;
    Ok(sub)
}

/// The next message the raw subscriber received, as shown on the "wire"
/// line: it must be non-empty and must not contain `plaintext` anywhere.
async fn raw_next(sub: &mut async_nats::Subscriber, plaintext: &str) -> Result<String, DemoError> {
    let payload = match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(m)) => m.payload,
        _ => return Err(DemoError::Unexpected("nothing on the wire".into())),
    };
    if payload.is_empty() {
        return Err(DemoError::Unexpected("an empty message on the wire".into()));
    }
    if payload.windows(plaintext.len()).any(|w| w == plaintext.as_bytes()) {
        return Err(DemoError::Unexpected("plaintext on the wire".into()));
    }
    Ok(format!("{} (plaintext absent from all {} bytes)", wire_view(&payload), payload.len()))
}

/// Runs the demo on `port` with a fresh data directory.
///
/// # Errors
/// [`DemoError`] when a step fails.
pub async fn run(port: u16) -> Result<(), DemoError> {
    let data_dir = std::env::temp_dir().join(format!("unibus-demo-{}", std::process::id()));
    let stack = LocalStack::start(&DevArgs { port, data_dir: data_dir.clone(), fresh: true }).await?;
    let result = story(&stack, &data_dir).await;
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

/// The text of the next message, with the peer for a copy of what this
/// account sent from another device.
async fn next_text(inbox: &mut Inbox) -> Result<String, DemoError> {
    let m = next_message(inbox).await?;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    Ok(match m.sent_to() {
        Some(peer) => format!("my other device {} sent to {}: \"{text}\"", short(&m.device), short(peer)),
        None => format!("from {} (device {}): \"{text}\"", short(&m.from), short(&m.device)),
    })
}

/// Alice links her laptop, both devices chat, the phone is lost.
async fn linked_devices(
    url: &str,
    admin: &Client,
    alice: &Identity,
    phone: &Client,
    bob: &Client,
    bob_inbox: &mut Inbox,
) -> Result<(), DemoError> {
    let laptop_id = Identity::generate().with_account(&alice.sign_pub_hex()).map_err(ClientError::Service)?;
    let line = laptop_id.bundle(Some("laptop")).to_line();
    say("laptop", format!("new device for alice; my bundle (shown as a QR code): {}...", &line[..40]));
    let bundle = Bundle::parse(&line).map_err(ClientError::Service)?;
    let added = phone.add_device(&bundle).await?;
    say("alice", format!("scanned it on my phone: laptop added as device #{} (binding verified)", added.seq));
    let laptop = Client::connect(url, &laptop_id).await?;
    let (mut phone_inbox, mut laptop_inbox) = (phone.inbox().await?, laptop.inbox().await?);

    let text = "are you both on?";
    bob.send_dm(&alice.sign_pub_hex(), text.as_bytes()).await?;
    say("bob", format!("-> alice (direct): \"{text}\" (sealed for each of her 2 devices)"));
    say("phone", next_text(&mut phone_inbox).await?);
    say("laptop", next_text(&mut laptop_inbox).await?);
    let text = "yes, from my laptop";
    laptop.send_dm(bob.account(), text.as_bytes()).await?;
    say("laptop", format!("-> bob: \"{text}\""));
    say("bob", next_text(bob_inbox).await?);
    say("phone", next_text(&mut phone_inbox).await?);
    lose_the_phone(admin, alice, &laptop, bob, bob_inbox, &mut phone_inbox).await
}

/// The phone is lost: the laptop may not revoke the older phone, the admin
/// does, and the laptop keeps chatting.
async fn lose_the_phone(
    admin: &Client,
    alice: &Identity,
    laptop: &Client,
    bob: &Client,
    bob_inbox: &mut Inbox,
    phone_inbox: &mut Inbox,
) -> Result<(), DemoError> {
    match laptop.revoke_device(&alice.sign_pub_hex()).await {
        Err(ClientError::Service(e)) => say(
            "laptop",
            format!("the phone is lost; revoking it from here is refused ({}): it is older", e.code()),
        ),
        other => return Err(DemoError::Unexpected(format!("the laptop revoked an older device: {other:?}"))),
    }
    let r = admin.admin_revoke_device(&alice.sign_pub_hex(), &alice.sign_pub_hex()).await?;
    say("admin", format!("revoked alice's phone: {} connection(s) closed; the account lives on", r.kicked));
    match tokio::time::timeout(Duration::from_secs(10), phone_inbox.next()).await {
        Ok(Some(Incoming::Closed(_))) => say("phone", "cut off"),
        other => return Err(DemoError::Unexpected(format!("the phone was not cut off: {other:?}"))),
    }
    let text = "new phone soon, laptop only for now";
    laptop.send_dm(bob.account(), text.as_bytes()).await?;
    say("laptop", format!("-> bob: \"{text}\""));
    say("bob", next_text(bob_inbox).await?);
    Ok(())
}

/// A compromised server adds a ghost device to alice's account: it writes
/// the device straight into her account record and device bucket with the
/// store's own connection, and a next version of her device list that the
/// ghost signed itself (it holds no key of alice's). Bob's client follows
/// alice's list only through steps her own devices signed: it refuses to
/// seal to her and says why, and rejects what the ghost sends.
async fn ghost_scene(
    stack: &LocalStack,
    alice: &Identity,
    bob: &Client,
    bob_inbox: &mut Inbox,
) -> Result<(), DemoError> {
    let account = alice.sign_pub_hex();
    let ghost = Identity::generate().with_account(&account).map_err(ClientError::Service)?;
    plant_ghost(stack, &account, &ghost).await?;
    say(
        "server",
        format!(
            "compromised: wrote ghost device {} into alice's account, with a device list it signed itself",
            short(&ghost.sign_pub_hex())
        ),
    );
    match bob.send_dm(&account, b"the ghost must not read this").await {
        Err(ClientError::Device(unibus::DeviceRefused::ListHeld { hold, .. })) => {
            say("bob", format!("refused to encrypt to alice: {hold}"));
        }
        other => return Err(DemoError::Unexpected(format!("bob sealed to a ghost device: {other:?}"))),
    }
    // The ghost connects (the record lists it) and writes to bob as alice.
    let ghost_c = Client::connect(&stack.server.url, &ghost).await?;
    let bob_keys = ghost_c.lookup(bob.account()).await?;
    let recipients: Vec<Recipient> = bob_keys
        .devices
        .iter()
        .map(|d| Recipient { sign_pub: d.device.to_hex(), kex_pub: *d.kex_pub.as_bytes() })
        .collect();
    let subject = subjects::dm(bob.account());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX);
    let forged = ghost.seal(&addr, &recipients, b"hi bob, it's alice", now).map_err(ClientError::Seal)?;
    let body = serde_json::to_vec(&forged).map_err(|e| DemoError::Unexpected(format!("encode: {e}")))?;
    ghost_c.publish_checked(&subject, body).await?;
    match tokio::time::timeout(Duration::from_secs(10), bob_inbox.next()).await {
        Ok(Some(Incoming::Rejected { .. })) => {
            say(
                "bob",
                "rejected a message the ghost signed as alice: its device is not on her accepted list",
            );
        }
        other => return Err(DemoError::Unexpected(format!("bob took the ghost's message: {other:?}"))),
    }
    say("bob", "nothing is sealed to alice until I check with her in person: unibus verify <alice> --accept");
    Ok(())
}

/// What a compromised store writes: the ghost in alice's record (active,
/// bound to her account by its own signature) and in the device bucket,
/// and her list's next version with the ghost added, signed by the ghost.
async fn plant_ghost(stack: &LocalStack, account: &str, ghost: &Identity) -> Result<(), DemoError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| DemoError::Unexpected(format!("{what}: {e}"));
    let store = stack.running.connections().iter().find(|(role, _)| *role == "store").map(|(_, c)| c.clone());
    let js =
        async_nats::jetstream::new(store.ok_or_else(|| DemoError::Unexpected("no store connection".into()))?);
    let users = js.get_key_value(subjects::BUCKET_USERS).await.map_err(|e| fail("users bucket", &e))?;
    let devices = js.get_key_value(subjects::BUCKET_DEVICES).await.map_err(|e| fail("devices bucket", &e))?;
    let entry = users.entry(account).await.map_err(|e| fail("read alice", &e))?;
    let entry = entry.ok_or_else(|| DemoError::Unexpected("no record for alice".into()))?;
    let mut user: User = serde_json::from_slice(&entry.value).map_err(|e| fail("alice's record", &e))?;
    let mut device =
        user.devices.last().cloned().ok_or_else(|| DemoError::Unexpected("alice has no device".into()))?;
    user.device_seq += 1;
    let listed = ghost.listed();
    (device.device, device.kex_pub, device.kex_sig) =
        (ghost.sign_key(), ghost.kex_key(), listed.kex_sig.clone());
    (device.seq, device.status, device.revoked_at, device.revoked_by) =
        (user.device_seq, DeviceStatus::Active, None, None);
    user.devices.push(device.clone());
    if let Some(current) = &user.device_list {
        let mut on_list = current.devices.clone();
        on_list.push(listed);
        user.device_list = Some(ghost.next_device_list(current, on_list, By::Device));
    }
    let body = serde_json::to_vec(&user).map_err(|e| fail("encode", &e))?;
    users.update(account, body.into(), entry.revision).await.map_err(|e| fail("write alice", &e))?;
    let body = serde_json::to_vec(&device).map_err(|e| fail("encode", &e))?;
    devices.create(ghost.sign_pub_hex(), body.into()).await.map_err(|e| fail("write the ghost", &e))?;
    Ok(())
}

/// Bob's device, connected with the mail state it keeps in `state`.
async fn bob_device(url: &str, bob: &Identity, state: &std::path::Path) -> Result<Client, DemoError> {
    let c = Client::connect(url, bob).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let state = MailState::open(state, Freshness::default(), now)
        .map_err(|e| DemoError::Unexpected(e.to_string()))?;
    c.set_mail_state(state);
    Ok(c)
}

/// Bob goes offline; alice sends him a DM and the room a message; bob
/// comes back and reads both, once. Returns bob's new connection and
/// inbox.
async fn offline_scene(
    url: &str,
    alice: &Client,
    alice_inbox: &mut Inbox,
    bob: &Identity,
    room: &str,
    state: &std::path::Path,
) -> Result<(Client, Inbox), DemoError> {
    say("bob", "goes offline (closes the app)");
    let dm = "call me when you land";
    let sent = alice.send_dm(&bob.sign_pub_hex(), dm.as_bytes()).await?;
    say("alice", format!("-> bob (direct, bob offline): \"{dm}\" stored at seq {}", sent.seq));
    let text = "tickets are booked";
    let sent = alice.send_room(room, text.as_bytes()).await?;
    say("alice", format!("-> room plans (bob offline): \"{text}\" stored at seq {}", sent.seq));
    // Alice's own device gets the room message too (read, so that it is
    // not handed over again to her next inbox).
    next_message(alice_inbox).await?;
    let bob_c = bob_device(url, bob, state).await?;
    let mut inbox = bob_c.inbox().await?;
    say("bob", "back online: catching up from where this device stopped");
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await {
            Ok(Some(Incoming::Waited { seq, message })) => {
                let place = message.room.as_ref().map_or("direct".to_string(), |_| "room plans".to_string());
                say(
                    "bob",
                    format!(
                        "waited (seq {seq}), {place}, from {}: \"{}\"",
                        short(&message.from),
                        String::from_utf8_lossy(&message.body)
                    ),
                );
            }
            other => {
                return Err(DemoError::Unexpected(format!("expected a message that waited, got {other:?}")));
            }
        }
    }
    let left = bob_c.waiting().await?;
    if !left.is_empty() {
        return Err(DemoError::Unexpected(format!("still waiting: {left:?}")));
    }
    say("bob", "nothing else waiting: what this device read before is not shown again");
    Ok((bob_c, inbox))
}

async fn story(stack: &LocalStack, data_dir: &std::path::Path) -> Result<(), DemoError> {
    let url = stack.server.url.clone();
    say(
        "stack",
        format!("nats-server on {url}; unibusd answers the auth callout (xkey sealed) and the control plane"),
    );
    let token =
        stack.admin_invite.as_ref().ok_or_else(|| DemoError::Unexpected("no first-admin invite".into()))?;

    let root = Identity::generate();
    Client::connect(&url, &root).await?.register(&token.to_hex(), Some("root")).await?;
    let admin = Client::connect(&url, &root).await?;
    say(
        "admin",
        format!("redeemed the first-admin invite; I am {} (role admin)", short(&root.sign_pub_hex())),
    );

    let (alice, bob) = (Identity::generate(), Identity::generate());
    for (name, id) in [("alice", &alice), ("bob", &bob)] {
        let inv = admin
            .create_invite(&InviteCreateRequest { note: Some(format!("for {name}")), ..Default::default() })
            .await?;
        say(
            "admin",
            format!("invite for {name}: unibus://invite/{}... (single use, 7 days)", &inv.token[..8]),
        );
        let user = Client::connect(&url, id).await?.register(&inv.link, Some(name)).await?;
        say(
            name,
            format!("registered with only my public keys: sign_pub {}...", short(&user.sign_pub.to_hex())),
        );
    }
    let alice_c = Client::connect(&url, &alice).await?;
    let bob_c = Client::connect(&url, &bob).await?;

    let room = alice_c.create_room("plans").await?;
    let alice_c = Client::connect(&url, &alice).await?;
    alice_c.add_member(&room.id, &bob.sign_pub_hex()).await?;
    say("alice", format!("created room \"plans\" ({}) and added bob", short(&room.id)));
    let bob_state = data_dir.join("bob.mail");
    let bob_c = {
        drop(bob_c);
        bob_device(&url, &bob, &bob_state).await?
    };
    let mut bob_inbox = bob_c.inbox().await?;
    let mut alice_inbox = alice_c.inbox().await?;

    let mut dm_wire = tap(&url, &bob, subjects::dm(&bob.sign_pub_hex())).await?;
    let text = "the key is under the blue pot";
    alice_c.send_dm(&bob.sign_pub_hex(), text.as_bytes()).await?;
    say("alice", format!("-> bob (direct): \"{text}\""));
    say("wire", raw_next(&mut dm_wire, text).await?);
    let got = next_message(&mut bob_inbox).await?;
    say(
        "bob",
        format!(
            "decrypted and verified from {}: \"{}\"",
            short(&got.from),
            String::from_utf8_lossy(&got.body)
        ),
    );

    let mut room_wire = tap(&url, &alice, subjects::room_msg(&room.id)).await?;
    let text = "meeting moved to 10:00";
    bob_c.send_room(&room.id, text.as_bytes()).await?;
    say("bob", format!("-> room plans: \"{text}\""));
    say("wire", raw_next(&mut room_wire, text).await?);
    for (who, inbox) in [("alice", &mut alice_inbox), ("bob", &mut bob_inbox)] {
        let got = next_message(inbox).await?;
        say(
            who,
            format!("room plans, from {}: \"{}\"", short(&got.from), String::from_utf8_lossy(&got.body)),
        );
    }

    drop((bob_inbox, bob_c));
    let (bob_c, mut bob_inbox) =
        offline_scene(&url, &alice_c, &mut alice_inbox, &bob, &room.id, &bob_state).await?;

    linked_devices(&url, &admin, &alice, &alice_c, &bob_c, &mut bob_inbox).await?;
    ghost_scene(stack, &alice, &bob_c, &mut bob_inbox).await?;

    let started = Instant::now();
    let r = admin.revoke_user(&bob.sign_pub_hex()).await?;
    say("admin", format!("revoked bob: {} live connection(s) closed", r.kicked));
    match tokio::time::timeout(Duration::from_secs(10), bob_inbox.next()).await {
        Ok(Some(Incoming::Closed(e))) => {
            say("bob", format!("cut off after {} ms: {e}", started.elapsed().as_millis()))
        }
        other => return Err(DemoError::Unexpected(format!("bob was not cut off: {other:?}"))),
    }
    match Client::connect(&url, &bob).await {
        Err(ClientError::NotAuthorized) => say("bob", "reconnect refused: authorization violation"),
        other => return Err(DemoError::Unexpected(format!("bob got back in: {:?}", other.err()))),
    }
    say("demo", "done: nats-server and unibusd saw only ciphertext; revocation took effect at once");
    Ok(())
}
