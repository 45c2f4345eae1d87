//! Hostile header blocks through a raw-protocol client (docs/protocol.md section 2):
//! a forged `Nats-Request-Info` never changes whose identity a request runs
//! as, and no header bytes a client sends can stop, stall or reconnect
//! unibusd's connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use unibus::Identity;
use unibus_proto::model::Role;
use unibus_proto::subjects;
use unibus_proto::wire::InviteCreateRequest;

use crate::harness::Stack;
use crate::raw::{Frame, Raw};

/// What became of one request.
#[derive(Debug)]
enum Outcome {
    /// No reply: unibusd dropped the message (or never got it).
    Dropped,
    /// A reply (error code or success body).
    Reply(Frame),
    /// The server closed the attacker's connection.
    Closed(String),
}

/// Header blocks that try to pass `forged` off as the caller's identity,
/// or that no lenient parser agrees on.
fn tricks(forged: &str) -> Vec<(&'static str, Vec<u8>)> {
    let f = forged;
    let text = [
        ("bare LF after version", format!("NATS/1.0\nNats-Request-Info: {f}\r\n\r\n")),
        ("no CRLF at all", format!("NATS/1.0\nNats-Request-Info: {f}\nX-Pad: \n\n")),
        ("bare LF mid block", format!("NATS/1.0\r\nX-A: 1\nNats-Request-Info: {f}\r\n\r\n")),
        ("bare LF before the end", format!("NATS/1.0\r\nNats-Request-Info: {f}\n\r\n")),
        ("bare CR before the name", format!("NATS/1.0\r\nX-A: a\rNats-Request-Info: {f}\r\n\r\n")),
        ("lone CR in a value", "NATS/1.0\r\nX-A: a\rb\r\n\r\n".to_string()),
        ("lower-case name", format!("NATS/1.0\r\nnats-request-info: {f}\r\n\r\n")),
        ("upper-case name", format!("NATS/1.0\r\nNATS-REQUEST-INFO: {f}\r\n\r\n")),
        ("two copies", format!("NATS/1.0\r\nNats-Request-Info: {f}\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("folded line", format!("NATS/1.0\r\nX-A: a\r\n Nats-Request-Info: {f}\r\n\r\n")),
        ("folded value", format!("NATS/1.0\r\nNats-Request-Info: {f}\r\n\tmore\r\n\r\n")),
        ("space before colon", format!("NATS/1.0\r\nNats-Request-Info : {f}\r\n\r\n")),
        ("no space after colon", format!("NATS/1.0\r\nNats-Request-Info:{f}\r\n\r\n")),
        ("tab after colon", format!("NATS/1.0\r\nNats-Request-Info:\t{f}\r\n\r\n")),
        ("space before name", format!("NATS/1.0\r\n Nats-Request-Info: {f}\r\n\r\n")),
        ("glued onto the last line", "NATS/1.0\r\nX-Pad: ab".to_string()),
        ("only LFs", "NATS/1.0\n\n".to_string()),
        ("status on version line", format!("NATS/1.0 200 OK\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("bad status", format!("NATS/1.0 abc\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("copy after the end", format!("NATS/1.0\r\n\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("line without colon", format!("NATS/1.0\r\nNats-Request-Info {f}\r\n\r\n")),
        ("copy in another value", format!("NATS/1.0\r\nX-A: Nats-Request-Info: {f}\r\n\r\n")),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = text.into_iter().map(|(n, b)| (n, b.into_bytes())).collect();
    let mut non_utf8 = b"NATS/1.0\r\nX-A: \xff\xfe\r\nNats-Request-Info: ".to_vec();
    non_utf8.extend_from_slice(f.as_bytes());
    non_utf8.extend_from_slice(b"\r\n\r\n");
    out.push(("non-UTF-8 value", non_utf8));
    out
}

fn forged_info(victim: &str) -> String {
    format!(r#"{{"acc":"APP","user":"{victim}","server":"unibus-test","id":1}}"#)
}

/// Sends `body` to `subject` with `header`, then a plain marker request, and
/// reports what became of the first once the marker has been answered.
async fn attempt(raw: &mut Raw, subject: &str, header: &[u8], body: &[u8], marker: (&str, &str)) -> Outcome {
    let (trick_reply, marker_reply) = (format!("{}.trick", raw.inbox), format!("{}.marker", raw.inbox));
    let sent = async {
        raw.hpub(subject, &trick_reply, header, body).await?;
        raw.hpub(marker.0, &marker_reply, b"NATS/1.0\r\n\r\n", marker.1.as_bytes()).await
    };
    if let Err(e) = sent.await {
        return Outcome::Closed(e);
    }
    let (mut trick, mut marker_seen) = (None, false);
    let mut wait = Duration::from_secs(5);
    while trick.is_none() {
        match raw.next_msg(wait).await {
            Ok(Some(f)) if f.subject == trick_reply => trick = Some(f),
            Ok(Some(f)) if f.subject == marker_reply => {
                marker_seen = true;
                // Replies are handled concurrently: give the first a moment.
                wait = Duration::from_millis(200);
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Outcome::Closed(e),
        }
    }
    match trick {
        Some(f) => Outcome::Reply(f),
        None => {
            assert!(marker_seen, "the marker request after a trick was not answered: unibusd stalled");
            Outcome::Dropped
        }
    }
}

/// Runs every trick on each endpoint as `attacker` and returns the outcomes;
/// `check` asserts on each reply.
async fn run_tricks(
    stack: &Stack,
    attacker: &Identity,
    victim: &str,
    endpoints: &[(&str, String)],
    check: impl Fn(&str, &str, &Frame),
) -> Vec<String> {
    let mut raw = Raw::connect(&stack.url, attacker).await.expect("attacker connects raw");
    raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
    let mut table = Vec::new();
    for (name, header) in tricks(&forged_info(victim)) {
        for (subject, body) in endpoints {
            let outcome =
                attempt(&mut raw, subject, &header, body.as_bytes(), (subjects::WHOAMI, "{}")).await;
            match &outcome {
                Outcome::Reply(f) => check(name, subject, f),
                Outcome::Closed(_) => {
                    raw = Raw::connect(&stack.url, attacker).await.expect("attacker reconnects raw");
                    raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
                }
                Outcome::Dropped => {}
            }
            table.push(format!("{name} / {subject}: {}", describe(&outcome)));
        }
    }
    table
}

/// Member and room endpoints: a member forging the admin's identity gets
/// whoami as itself at best, never adds itself to the admin's private
/// room, and changes nothing in KV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_run_as_the_victim_on_member_and_room_endpoints() {
    let stack = Stack::start(true).await;
    let (admin_id, admin) = stack.admin().await;
    let (member_id, _member) = stack.user(&admin, Role::Member, "mallory").await;
    let room = admin.create_room("private").await.unwrap();
    let me = member_id.sign_pub_hex();
    let before = stack.kv_fingerprint().await;
    let add = serde_json::json!({"id": room.id, "sign_pub": me}).to_string();
    let endpoints = [(subjects::WHOAMI, "{}".to_string()), (subjects::ROOM_MEMBER_ADD, add)];
    let table = run_tricks(&stack, &member_id, &admin_id.sign_pub_hex(), &endpoints, |name, subject, f| {
        match f.error_code() {
            Some(code) => assert!(
                code == "unauthenticated" || code == "forbidden",
                "{name} on {subject}: unexpected {code}"
            ),
            None => {
                assert_eq!(subject, subjects::WHOAMI, "{name} on {subject} succeeded: ran as the admin");
                assert_eq!(f.json()["user"]["sign_pub"], me.as_str(), "{name}: whoami ran as someone else");
            }
        }
    })
    .await;
    assert_eq!(stack.kv_fingerprint().await, before, "a forged request changed KV");
    assert!(!admin.get_room(&room.id).await.unwrap().members.contains(&me), "the member got into the room");
    println!("{}", table.join("\n"));
}

/// Device endpoints: a member forging the victim's identity never adds a
/// device to the victim's account nor revokes one of its devices; a
/// successful add (the forgery ignored) lands in the attacker's own
/// account. Raw frames, every header trick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_add_or_revoke_the_victims_devices() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (victim_id, victim) = stack.user(&admin, Role::Member, "victim").await;
    let (mallory_id, _m) = stack.user(&admin, Role::Member, "mallory").await;
    let victim_key = victim_id.sign_pub_hex();
    let victim_laptop = Identity::generate().with_account(&victim_key).unwrap();
    victim.add_device(&victim_laptop.bundle(None)).await.unwrap();
    let before = stack.kv_fingerprint().await;
    // A device bound to the victim's account (what mallory wants to add)
    // and a revoke of the victim's laptop.
    let planted = Identity::generate().with_account(&victim_key).unwrap().bundle(None);
    let add =
        serde_json::json!({"device": planted.device, "kex_pub": planted.kex_pub, "kex_sig": planted.kex_sig});
    let revoke = serde_json::json!({"device": victim_laptop.sign_pub_hex()});
    let endpoints = [(subjects::DEVICE_ADD, add.to_string()), (subjects::DEVICE_REVOKE, revoke.to_string())];
    let table = run_tricks(&stack, &mallory_id, &victim_key, &endpoints, |name, subject, f| {
        let code = f.error_code();
        assert!(
            matches!(code.as_deref(), Some("unauthenticated" | "forbidden" | "bad_request")),
            "{name} on {subject}: {code:?} (a success ran as the victim)"
        );
    })
    .await;
    assert_eq!(stack.kv_fingerprint().await, before, "a forged request changed KV");
    let devices = victim.list_devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().all(|d| d.status == unibus_proto::model::DeviceStatus::Active));
    println!("{}", table.join("\n"));
}

/// Admin endpoints: an admin forging another admin's identity never gets
/// an invite recorded as created by the other admin (audit fields hold the
/// real caller), and a member forging an admin is refused by the server's
/// permissions before unibusd sees anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_run_as_the_victim_on_admin_endpoints() {
    let stack = Stack::start(true).await;
    let (victim_id, admin) = stack.admin().await;
    let (attacker_id, _b) = stack.user(&admin, Role::Admin, "eve").await;
    let eve = attacker_id.sign_pub_hex();
    let endpoints = [
        (subjects::ADMIN_INVITE_CREATE, r#"{"note":"forged"}"#.to_string()),
        (subjects::ADMIN_USER_LIST, "{}".to_string()),
    ];
    let table =
        run_tricks(&stack, &attacker_id, &victim_id.sign_pub_hex(), &endpoints, |name, subject, f| {
            if let Some(code) = f.error_code() {
                assert_eq!(code, "unauthenticated", "{name} on {subject}");
            } else if subject == subjects::ADMIN_INVITE_CREATE {
                assert_eq!(
                    f.json()["invite"]["created_by"],
                    eve.as_str(),
                    "{name}: invite made in another's name"
                );
            }
        })
        .await;
    let invites = admin.list_invites(&Default::default()).await.unwrap().invites;
    for inv in invites.iter().filter(|i| i.note == "forged") {
        assert_eq!(inv.created_by, eve, "an invite is recorded as created by the victim");
    }
    println!("{}", table.join("\n"));
}

/// A guest forging another key's identity on `unibus.register` never
/// registers that key, whatever the header block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_register_never_registers_the_victim_key() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let victim = Identity::generate().sign_pub_hex();
    let forged = forged_info(&victim);
    for (name, header) in tricks(&forged) {
        let guest = Identity::generate();
        let invite = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
        let mut raw = Raw::connect(&stack.url, &guest).await.expect("guest connects raw");
        raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
        let body = serde_json::json!({"invite": invite.token, "kex_pub": guest.kex_pub_hex(), "kex_sig": guest.bind(&guest.sign_pub_hex()).to_string()}).to_string();
        let outcome =
            attempt(&mut raw, subjects::REGISTER, &header, body.as_bytes(), (subjects::REGISTER, "{}")).await;
        if let Outcome::Reply(f) = &outcome
            && f.error_code().is_none()
        {
            let who = f.json()["user"]["sign_pub"].as_str().unwrap_or_default().to_string();
            assert_eq!(who, guest.sign_pub_hex(), "{name}: registered another key");
        }
        assert!(
            stack.store().get_user(&victim).await.unwrap().is_none(),
            "{name}: the victim key was registered"
        );
        println!("{name}: {}", describe(&outcome));
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Dropped => "dropped".into(),
        Outcome::Reply(f) => f.error_code().unwrap_or_else(|| "ok (as the real caller)".into()),
        Outcome::Closed(e) => format!("closed: {e}"),
    }
}

/// A guest sends every malformed header form once, then floods them at
/// 50/s for 4 s; meanwhile members keep connecting through the callout and
/// asking the control plane. No connect fails, every request is answered,
/// unibusd's connections never reconnect, and the malformed messages are
/// counted as dropped on the control connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_flood_leaves_unibusd_admitting_and_answering() {
    let stack = Stack::start(true).await;
    let (_a, admin) = stack.admin().await;
    let (member_id, member) = stack.user(&admin, Role::Member, "bob").await;
    let guest = Identity::generate();
    let mut raw = Raw::connect(&stack.url, &guest).await.expect("guest connects raw");
    let forged = forged_info(&member_id.sign_pub_hex());
    let forms = tricks(&forged);
    let reply = format!("{}.x", raw.inbox);
    for (_, header) in &forms {
        raw.hpub(subjects::REGISTER, &reply, header, b"{}").await.expect("server takes the frame");
    }
    raw.ping().await.expect("guest connection still up");

    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let connector = {
        let (url, id, failures, done) =
            (stack.url.clone(), member_id.clone(), failures.clone(), done.clone());
        tokio::spawn(async move {
            let mut connects = 0u64;
            loop {
                match unibus::Client::connect(&url, &id).await {
                    Ok(c) => {
                        if c.whoami().await.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                connects += 1;
                tokio::select! {
                    _ = done.notified() => return connects,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
    };
    let mut answered = 0;
    let flood_end = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut i = 0;
    while tokio::time::Instant::now() < flood_end {
        tick.tick().await;
        let (_, header) = &forms[i % forms.len()];
        raw.hpub(subjects::REGISTER, &reply, header, b"{}").await.expect("flood frame");
        i += 1;
        if i % 10 == 0 {
            member.whoami().await.expect("member answered during the flood");
            answered += 1;
        }
    }
    done.notify_one();
    let connects = connector.await.unwrap();
    raw.ping().await.expect("guest connection still up");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "connects or requests of others failed during the flood");
    assert!(connects >= 10 && answered >= 10, "too little traffic to prove anything: {connects} connects");
    let daemon = stack.daemon.as_ref().unwrap();
    for (role, client) in daemon.connections() {
        let stats = client.statistics();
        assert_eq!(stats.connects.load(Ordering::Relaxed), 1, "unibusd's {role} connection reconnected");
        let dropped = stats.malformed_messages.load(Ordering::Relaxed);
        match *role {
            "control" => assert!(dropped > 0, "the control connection counted no malformed message"),
            _ => assert_eq!(dropped, 0, "the {role} connection received client-shaped bytes"),
        }
    }
    println!("flood: {i} frames, {connects} member connects, {answered} requests answered, 0 failures");
}
