//! Hostile header blocks through a raw-protocol client (docs/protocol.md section 2):
//! a forged `Nats-Request-Info` never changes whose identity a request runs
//! as, and no header bytes a client sends can stop, stall or reconnect
//! unibusd's connections. Each trick has the one outcome it must come to.

use crate::support::as_key;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use unibus::Identity;
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibus_proto::wire::InviteCreateRequest;

use crate::support::Stack;
use crate::support::raw::{Frame, Raw};

/// What became of one request.
#[derive(Debug)]
enum Outcome {
    /// No reply, and unibusd's control connection counted one more
    /// malformed message: the patched async-nats dropped it.
    Dropped,
    /// A reply (error code or success body).
    Reply(Frame),
    /// The server closed the attacker's connection.
    Closed(String),
}

/// What a trick must come to (nats-server 2.15.1 rewriting the block as
/// DESIGN section 2 describes, then unibusd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The block as it reaches unibusd is malformed (a bare CR or LF, a
    /// folded line, a bad name or status, non-UTF-8): the patched
    /// async-nats drops it (patches/README.md), so no reply.
    Dropped,
    /// Well formed, but not exactly one `Nats-Request-Info` (names compared
    /// without case: the server replaced only its own spelling), or none:
    /// `unauthenticated`.
    Unauthenticated,
    /// Well formed with the server's copy as the only one (it removed every
    /// copy that follows a CRLF): runs as the real caller.
    AsCaller,
}

/// Header blocks that try to pass `forged` off as the caller's identity,
/// or that no lenient parser agrees on, each with its outcome.
fn tricks(forged: &str) -> Vec<(&'static str, Expect, Vec<u8>)> {
    use Expect::{AsCaller, Dropped, Unauthenticated};
    let f = forged;
    let text = [
        ("bare LF after version", Dropped, format!("NATS/1.0\nNats-Request-Info: {f}\r\n\r\n")),
        ("no CRLF at all", Dropped, format!("NATS/1.0\nNats-Request-Info: {f}\nX-Pad: \n\n")),
        ("bare LF mid block", Dropped, format!("NATS/1.0\r\nX-A: 1\nNats-Request-Info: {f}\r\n\r\n")),
        ("bare LF before the end", Dropped, format!("NATS/1.0\r\nNats-Request-Info: {f}\n\r\n")),
        ("bare CR before the name", Dropped, format!("NATS/1.0\r\nX-A: a\rNats-Request-Info: {f}\r\n\r\n")),
        ("lone CR in a value", Dropped, "NATS/1.0\r\nX-A: a\rb\r\n\r\n".to_string()),
        ("lower-case name", Unauthenticated, format!("NATS/1.0\r\nnats-request-info: {f}\r\n\r\n")),
        ("upper-case name", Unauthenticated, format!("NATS/1.0\r\nNATS-REQUEST-INFO: {f}\r\n\r\n")),
        (
            "two copies",
            AsCaller,
            format!("NATS/1.0\r\nNats-Request-Info: {f}\r\nNats-Request-Info: {f}\r\n\r\n"),
        ),
        ("folded line", Dropped, format!("NATS/1.0\r\nX-A: a\r\n Nats-Request-Info: {f}\r\n\r\n")),
        ("folded value", Dropped, format!("NATS/1.0\r\nNats-Request-Info: {f}\r\n\tmore\r\n\r\n")),
        ("space before colon", Dropped, format!("NATS/1.0\r\nNats-Request-Info : {f}\r\n\r\n")),
        ("no space after colon", AsCaller, format!("NATS/1.0\r\nNats-Request-Info:{f}\r\n\r\n")),
        ("tab after colon", AsCaller, format!("NATS/1.0\r\nNats-Request-Info:\t{f}\r\n\r\n")),
        ("space before name", Dropped, format!("NATS/1.0\r\n Nats-Request-Info: {f}\r\n\r\n")),
        ("glued onto the last line", Unauthenticated, "NATS/1.0\r\nX-Pad: ab".to_string()),
        ("only LFs", Dropped, "NATS/1.0\n\n".to_string()),
        ("status on version line", AsCaller, format!("NATS/1.0 200 OK\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("bad status", Dropped, format!("NATS/1.0 abc\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("copy after the end", AsCaller, format!("NATS/1.0\r\n\r\nNats-Request-Info: {f}\r\n\r\n")),
        ("line without colon", Dropped, format!("NATS/1.0\r\nNats-Request-Info {f}\r\n\r\n")),
        ("copy in another value", AsCaller, format!("NATS/1.0\r\nX-A: Nats-Request-Info: {f}\r\n\r\n")),
    ];
    let mut out: Vec<_> = text.into_iter().map(|(n, e, b)| (n, e, b.into_bytes())).collect();
    let mut non_utf8 = b"NATS/1.0\r\nX-A: \xff\xfe\r\nNats-Request-Info: ".to_vec();
    non_utf8.extend_from_slice(f.as_bytes());
    non_utf8.extend_from_slice(b"\r\n\r\n");
    out.push(("non-UTF-8 value", Dropped, non_utf8));
    out
}

fn forged_info(victim: &str) -> String {
    format!(r#"{{"acc":"APP","user":"{victim}","server":"unibus-test","id":1}}"#)
}

/// Messages unibusd's control connection has dropped as malformed so far.
fn dropped_so_far(stack: &Stack) -> u64 {
    let daemon = stack.daemon.as_ref().expect("daemon running");
    let (_, control) = daemon.connections().iter().find(|(role, _)| *role == "control").expect("control");
    control.statistics().malformed_messages.load(Ordering::Relaxed)
}

/// Sends `body` to `subject` with `header` (attempt `n`: reply subjects of
/// its own), then a plain marker request, and reports what became of the
/// first once both are settled: the marker answered, and the trick either
/// answered or counted as dropped by unibusd's control connection (which
/// reads the two in order). A reply to an earlier attempt fails the test.
async fn attempt(
    stack: &Stack,
    raw: &mut Raw,
    n: usize,
    (subject, header, body): (&str, &[u8], &[u8]),
    marker: (&str, &str),
) -> Outcome {
    let (trick_reply, marker_reply) = (format!("{}.trick{n}", raw.inbox), format!("{}.marker{n}", raw.inbox));
    let dropped_before = dropped_so_far(stack);
    let sent = async {
        raw.hpub(subject, &trick_reply, header, body).await?;
        raw.hpub(marker.0, &marker_reply, b"NATS/1.0\r\n\r\n", marker.1.as_bytes()).await
    };
    if let Err(e) = sent.await {
        return Outcome::Closed(e);
    }
    let (mut trick, mut marker_seen) = (None, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if marker_seen {
            let dropped = dropped_so_far(stack) - dropped_before;
            match trick.take() {
                Some(f) => {
                    assert_eq!(dropped, 0, "attempt {n}: answered, yet counted as malformed");
                    return Outcome::Reply(f);
                }
                None if dropped > 0 => {
                    assert_eq!(dropped, 1, "attempt {n}: more than the trick counted as malformed");
                    return Outcome::Dropped;
                }
                None => {}
            }
        }
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match raw.next_msg(wait).await {
            Ok(Some(f)) if f.subject == trick_reply => trick = Some(f),
            Ok(Some(f)) if f.subject == marker_reply => marker_seen = true,
            Ok(Some(f)) => panic!("attempt {n}: a late reply to an earlier attempt on {}", f.subject),
            Ok(None) => panic!("attempt {n}: neither answered nor dropped within 5 s: unibusd stalled"),
            Err(e) => return Outcome::Closed(e),
        }
    }
}

/// Asserts that `outcome` is what `expect` says; `as_caller` asserts on a
/// reply that ran as the real caller.
fn check(name: &str, subject: &str, expect: Expect, outcome: &Outcome, as_caller: &impl Fn(&str, &Frame)) {
    match (expect, outcome) {
        (Expect::Dropped, Outcome::Dropped) => {}
        (Expect::Unauthenticated, Outcome::Reply(f)) => {
            assert_eq!(f.error_code().as_deref(), Some("unauthenticated"), "{name} on {subject}")
        }
        (Expect::AsCaller, Outcome::Reply(f)) => as_caller(subject, f),
        (want, got) => panic!("{name} on {subject}: expected {want:?}, got {}", describe(got)),
    }
}

/// Runs every trick on each endpoint as `attacker` and returns the outcomes;
/// `as_caller(subject, reply)` asserts on the replies that must run as the
/// attacker itself.
async fn run_tricks(
    stack: &Stack,
    attacker: &Identity,
    victim: &str,
    endpoints: &[(&str, String)],
    as_caller: impl Fn(&str, &Frame),
) -> Vec<String> {
    let mut raw = Raw::connect(&stack.url, attacker).await.expect("attacker connects raw");
    raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
    let mut table = Vec::new();
    let mut n = 0;
    for (name, expect, header) in tricks(&forged_info(victim)) {
        for (subject, body) in endpoints {
            n += 1;
            let sent = (*subject, header.as_slice(), body.as_bytes());
            let outcome = attempt(stack, &mut raw, n, sent, (subjects::WHOAMI, "{}")).await;
            table.push(format!("{name} / {subject}: {}", describe(&outcome)));
            check(name, subject, expect, &outcome, &as_caller);
        }
    }
    table
}

/// Member and room endpoints: a member forging the admin's identity gets
/// whoami as itself at best, never adds itself to the admin's private
/// room, and changes nothing in KV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_run_as_the_victim_on_member_and_room_endpoints() {
    let stack = Stack::start().await;
    let (admin_id, admin) = stack.admin().await;
    let (member_id, _member) = stack.user(&admin, Role::Member, "mallory").await;
    let room = admin.create_room("private").await.unwrap();
    let me = member_id.sign_pub_hex();
    let before = stack.kv_snapshot().await;
    let add = serde_json::json!({"id": room.id, "sign_pub": me}).to_string();
    let endpoints = [(subjects::WHOAMI, "{}".to_string()), (subjects::ROOM_MEMBER_ADD, add)];
    let table = run_tricks(&stack, &member_id, &admin_id.sign_pub_hex(), &endpoints, |subject, f| {
        if subject == subjects::WHOAMI {
            assert_eq!(f.error_code(), None, "whoami as the caller");
            assert_eq!(f.json()["user"]["sign_pub"], me.as_str(), "whoami ran as someone else");
        } else {
            // As the admin it would succeed.
            assert_eq!(f.error_code().as_deref(), Some("forbidden"), "{subject} as the caller");
        }
    })
    .await;
    assert_eq!(stack.kv_snapshot().await, before, "a forged request changed KV");
    assert!(
        !admin.get_room(&room.id).await.unwrap().members.contains(&as_key(&me)),
        "the member got into the room"
    );
    println!("{}", table.join("\n"));
}

/// Device endpoints: a member forging the victim's identity never adds a
/// device to the victim's account nor revokes one of its devices; as
/// itself, the add's binding (made for the victim's account) does not
/// verify and the revoke is not its to make. Raw frames, every header trick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_add_or_revoke_the_victims_devices() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (victim_id, victim) = stack.user(&admin, Role::Member, "victim").await;
    let (mallory_id, _m) = stack.user(&admin, Role::Member, "mallory").await;
    let victim_key = victim_id.sign_pub_hex();
    let victim_laptop = Identity::generate().with_account(&victim_key).unwrap();
    victim.add_device(&victim_laptop.bundle(None)).await.unwrap();
    let before = stack.kv_snapshot().await;
    // A device bound to the victim's account (what mallory wants to add)
    // and a revoke of the victim's laptop.
    let planted = Identity::generate().with_account(&victim_key).unwrap().bundle(None);
    // Each with the next version of the victim's list, signed by mallory
    // (all she can sign).
    let current = victim.device_list().await.unwrap().expect("the victim's list");
    let mut plus = current.devices.clone();
    plus.push(unibus::proto::devicelist::ListedDevice {
        device: planted.device.clone(),
        kex_pub: planted.kex_pub.clone(),
        kex_sig: Some(planted.kex_sig.clone()),
    });
    let minus =
        current.devices.iter().filter(|d| d.device != victim_laptop.sign_pub_hex()).cloned().collect();
    let by = unibus::proto::devicelist::By::Device;
    let add = serde_json::json!({"device": planted.device, "kex_pub": planted.kex_pub, "kex_sig": planted.kex_sig,
        "device_list": mallory_id.next_device_list(&current, plus, by)});
    let revoke = serde_json::json!({"device": victim_laptop.sign_pub_hex(),
        "device_list": mallory_id.next_device_list(&current, minus, by)});
    let endpoints = [(subjects::DEVICE_ADD, add.to_string()), (subjects::DEVICE_REVOKE, revoke.to_string())];
    let table = run_tricks(&stack, &mallory_id, &victim_key, &endpoints, |subject, f| {
        // As the victim, both would succeed.
        let want = if subject == subjects::DEVICE_ADD { "bad_request" } else { "forbidden" };
        assert_eq!(f.error_code().as_deref(), Some(want), "{subject} as the caller");
    })
    .await;
    assert_eq!(stack.kv_snapshot().await, before, "a forged request changed KV");
    let devices = victim.list_devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().all(|d| d.status == unibus_proto::records::DeviceStatus::Active));
    println!("{}", table.join("\n"));
}

/// Admin endpoints: an admin forging another admin's identity never gets
/// an invite recorded as created by the other admin (audit fields hold the
/// real caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_never_run_as_the_victim_on_admin_endpoints() {
    let stack = Stack::start().await;
    let (victim_id, admin) = stack.admin().await;
    let (attacker_id, _b) = stack.user(&admin, Role::Admin, "eve").await;
    let eve = attacker_id.sign_pub_hex();
    let endpoints = [
        (subjects::ADMIN_INVITE_CREATE, r#"{"note":"forged"}"#.to_string()),
        (subjects::ADMIN_USER_LIST, "{}".to_string()),
    ];
    let table = run_tricks(&stack, &attacker_id, &victim_id.sign_pub_hex(), &endpoints, |subject, f| {
        assert_eq!(f.error_code(), None, "{subject} as the caller (an admin)");
        if subject == subjects::ADMIN_INVITE_CREATE {
            assert_eq!(f.json()["invite"]["created_by"], eve.as_str(), "invite made in another's name");
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
/// registers that key, whatever the header block. The body's binding is
/// made for the guest's own key, so a request that ran as the victim would
/// be `bad_request`: every reply is the guest's own registration or
/// `unauthenticated`, never that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_register_never_registers_the_victim_key() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let victim = Identity::generate().sign_pub_hex();
    let forged = forged_info(&victim);
    for (n, (name, expect, header)) in tricks(&forged).into_iter().enumerate() {
        let guest = Identity::generate();
        let invite = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
        let mut raw = Raw::connect(&stack.url, &guest).await.expect("guest connects raw");
        raw.sub(&format!("{}.>", raw.inbox), 1).await.unwrap();
        let body = serde_json::json!({"invite": invite.token, "kex_pub": guest.kex_pub_hex(), "kex_sig": guest.bind(&guest.sign_pub_hex()).to_string(), "device_list": guest.first_device_list()}).to_string();
        let sent = (subjects::REGISTER, header.as_slice(), body.as_bytes());
        let outcome = attempt(&stack, &mut raw, n, sent, (subjects::REGISTER, "{}")).await;
        check(name, subjects::REGISTER, expect, &outcome, &|_, f: &Frame| {
            assert_eq!(f.error_code(), None, "{name}: not registered as the guest itself");
            assert_eq!(
                f.json()["user"]["sign_pub"],
                guest.sign_pub_hex().as_str(),
                "{name}: registered another key"
            );
        });
        assert!(
            stack.store().get_user(as_key(&victim)).await.unwrap().is_none(),
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
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (member_id, member) = stack.user(&admin, Role::Member, "bob").await;
    let guest = Identity::generate();
    let mut raw = Raw::connect(&stack.url, &guest).await.expect("guest connects raw");
    let forged = forged_info(&member_id.sign_pub_hex());
    let forms = tricks(&forged);
    let reply = format!("{}.x", raw.inbox);
    for (_, _, header) in &forms {
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
        let (_, _, header) = &forms[i % forms.len()];
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
