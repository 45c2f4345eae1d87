//! The data-plane gate: who gets in through the auth callout and with what
//! permissions, with callout encryption on and off.

use std::time::Duration;

use ed25519_dalek::Signer as _;
use futures::StreamExt as _;
use unibus::{Client, ClientError, Identity};
use unibus_proto::records::{Role, UserStatus};
use unibus_proto::subjects;

use crate::support::{Stack, Xkey, code, expect_server_error, expect_signed_denial_of};

/// A guest may publish only to unibus.register and cannot read another
/// user's inbox; after registering and reconnecting it has member rights,
/// and a member cannot use unibus.admin.*.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_then_member_permissions() {
    let stack = Stack::start().await;
    let (_admin_id, admin) = stack.admin().await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();

    let id = Identity::generate();
    let (guest, mut errs) = stack.connect_watched(&id).await;
    // Publishing anywhere but unibus.register is refused.
    guest.nats().publish(subjects::WHOAMI, "{}".into()).await.unwrap();
    guest.nats().flush().await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Publish to \"unibus.whoami\"").await;
    guest.nats().publish("unibus.msg.dm.x", "hi".into()).await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Publish to \"unibus.msg.dm.x\"").await;

    // Reading the admin's inbox is refused and delivers nothing.
    let spy_subject = format!("{}.>", subjects::inbox_prefix(admin.sign_pub()));
    let mut spy = guest.nats().subscribe(spy_subject).await.unwrap();
    guest.nats().flush().await.unwrap();
    expect_server_error(&mut errs, "Permissions Violation for Subscription to").await;
    admin.whoami().await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(300), spy.next()).await;
    assert!(leaked.is_err() || leaked.unwrap().is_none(), "guest read the admin's reply");

    // Register, reconnect: member rights.
    let user = guest.register(&inv.token, Some("alice")).await.unwrap();
    assert_eq!((user.role, user.status), (Role::Member, UserStatus::Active));
    assert_eq!(user.name, "alice");
    // The server closes the guest connection after the reply...
    crate::support::expect_event_within(&mut errs, "disconnected", std::time::Duration::from_secs(1)).await;
    // ...and its automatic reconnect comes back with member rights.
    crate::support::expect_event_within(&mut errs, "connected", std::time::Duration::from_secs(2)).await;
    assert_eq!(guest.whoami().await.unwrap().name, "alice");
    drop(guest);
    let (member, mut errs) = stack.connect_watched(&id).await;
    assert_eq!(member.whoami().await.unwrap().sign_pub, id.sign_pub_hex());
    // A member may not publish to admin subjects.
    let denied = member.call_raw(subjects::ADMIN_INVITE_CREATE, b"{}".to_vec()).await;
    assert!(matches!(denied, Err(ClientError::PermissionDenied(_))), "{denied:?}");
    expect_server_error(&mut errs, "Permissions Violation for Publish to \"unibus.admin.invite.create\"")
        .await;
    // ...but may look up the admin.
    assert_eq!(member.lookup(admin.sign_pub()).await.unwrap().sign_pub, admin.sign_pub());
}

/// The callout denies, each with a signed denial naming the reason (not a
/// dropped or timed-out callout): a revoked user, an nkey whose nonce is
/// signed by another key, a small-order key, and a connection without an
/// nkey.
async fn callout_denials(xkey: Xkey) {
    let stack = Stack::start_with(xkey).await;
    let mut errors = stack.auth_errors().await;
    let (_a, admin) = stack.admin().await;
    let (bob, bob_conn) = stack.user(&admin, Role::Member, "bob").await;
    drop(bob_conn);

    // Revoked -> denied; restored -> admitted again without a restart.
    stack
        .store()
        .set_user_status(bob.sign_key(), UserStatus::Revoked, unibus_proto::Actor::Bootstrap)
        .await
        .unwrap();
    let reason = expect_signed_denial_of(&mut errors, &bob.nkey_public(), stack.connect(&bob)).await;
    assert_eq!(reason, format!("user {} is revoked", bob.sign_pub_hex()));
    stack
        .store()
        .set_user_status(bob.sign_key(), UserStatus::Active, unibus_proto::Actor::Bootstrap)
        .await
        .unwrap();
    assert_eq!(stack.connect(&bob).await.unwrap().whoami().await.unwrap().name, "bob");

    // Bob's nkey, nonce signed by mallory.
    let mallory = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let bob_nkey = bob.nkey_public();
    let forged = async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let sig = mallory.sign(&nonce).to_bytes().to_vec();
        let nkey = bob_nkey.clone();
        async move {
            let mut auth = async_nats::Auth::new();
            auth.nkey = Some(nkey);
            auth.signature = Some(sig);
            Ok(auth)
        }
    });
    let forged = Client::connect_with(&stack.url, &bob, forged);
    let reason = expect_signed_denial_of(&mut errors, &bob.nkey_public(), forged).await;
    assert!(reason.starts_with("nonce signature"), "forged signature: {reason}");

    // A small-order Ed25519 key (the identity point) with some signature.
    let weak = nkeys_user_public([1u8; 1].iter().copied().chain([0u8; 31]).collect::<Vec<_>>());
    let weak_nkey = weak.clone();
    let weak_opts = async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
        let nkey = weak.clone();
        async move {
            let mut auth = async_nats::Auth::new();
            auth.nkey = Some(nkey);
            auth.signature = Some(vec![0u8; 64]);
            Ok(auth)
        }
    });
    let weak = Client::connect_with(&stack.url, &bob, weak_opts);
    let reason = expect_signed_denial_of(&mut errors, &weak_nkey, weak).await;
    assert!(reason.starts_with("unusable nkey"), "weak key: {reason}");

    // No nkey at all: anonymous, user/password, token; each names its
    // connection so that its advisory is told apart.
    for (i, opts) in [
        async_nats::ConnectOptions::new(),
        async_nats::ConnectOptions::with_user_and_password("bob".into(), "pw".into()),
        async_nats::ConnectOptions::with_token("t0k3n".into()),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("no-nkey-{i}-{}", rand::random::<u32>());
        let connect = Client::connect_with(&stack.url, &bob, opts.name(&name));
        let reason = expect_signed_denial_of(&mut errors, &name, connect).await;
        assert_eq!(reason, "no nkey presented");
    }
}

/// Encodes raw 32 bytes as a `U...` public nkey (via an xkey-free path: the
/// nkeys crate has no public-only encoder, so build it from base32 + crc16).
fn nkeys_user_public(raw: Vec<u8>) -> String {
    let mut data = vec![20u8 << 3];
    data.extend_from_slice(&raw);
    let crc = crc16(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    base32_nopad(&data)
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in data {
        crc ^= (*b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

fn base32_nopad(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buf, mut bits) = (String::new(), 0u32, 0u32);
    for b in data {
        buf = (buf << 8) | *b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_denials_with_xkey() {
    callout_denials(Xkey::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_denials_without_xkey() {
    callout_denials(Xkey::Plain).await;
}

/// The base32 helper above agrees with nkeys on a real key.
#[test]
fn nkey_encoding_helper_matches_nkeys() {
    let id = Identity::generate();
    let raw = hex::decode(id.sign_pub_hex()).unwrap();
    assert_eq!(nkeys_user_public(raw), id.nkey_public());
}

/// A client cannot pose as someone else: the server overwrites any
/// Nats-Request-Info header it sends, and requests from outside APP (no
/// stamped identity) are `unauthenticated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_only_from_the_server() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (_m, member) = stack.user(&admin, Role::Member, "mallory").await;
    let mut headers = async_nats::HeaderMap::new();
    let spoof = serde_json::json!({"acc": "APP", "user": admin.sign_pub()}).to_string();
    headers.insert(subjects::HDR_REQUEST_INFO, spoof.as_str());
    let msg = member.nats().request_with_headers(subjects::WHOAMI, headers, "{}".into()).await.unwrap();
    let me: unibus_proto::wire::UserReply = unibus::decode_reply(subjects::WHOAMI, &msg).unwrap();
    assert_eq!(me.user.name, "mallory");

    // Requests from inside AUTH carry no stamped identity: every endpoint
    // answers `unauthenticated`.
    let svc = stack.service_nats().await;
    for subject in unibus_proto::endpoint::SUBJECTS {
        let msg = svc.request(*subject, "{}".into()).await.unwrap();
        let r = unibus::decode_reply::<serde_json::Value>(subject, &msg);
        assert_eq!(code(r), "unauthenticated", "{subject}");
        let hdrs = msg.headers.unwrap();
        assert_eq!(hdrs.get(subjects::HDR_SERVICE_ERROR_CODE).unwrap().as_str(), "401");
    }
}
