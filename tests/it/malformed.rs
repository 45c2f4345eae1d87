//! Bad input gets `bad_request` on the wire and changes nothing in KV.
//! Every decoding rule is covered case by case, without a server, in
//! `crates/unibus-proto/tests/decoding.rs`; here a few representative
//! cases of each kind go through a real nats-server and unibusd, with the
//! rules that need the service: the caller's own key as the account a
//! binding must name, `block.add` of oneself, and list cursors.

use serde_json::{Value, json};
use unibus::{Client, Identity, decode_reply};
use unibus_proto::subjects;

use crate::support::{Stack, code};

/// Malformed requests from a guest and from an admin each get
/// `bad_request` (header and body), and KV is unchanged afterwards; the
/// well-formed requests they were edited from still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_bad_request_and_change_nothing() {
    let stack = Stack::start().await;
    let (admin_id, admin) = stack.admin().await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let guest_id = Identity::generate();
    let guest = stack.connect(&guest_id).await.unwrap();
    let (tok, kex) = (inv.token.clone(), guest_id.kex_pub_hex());
    let (gk, me) = (guest_id.sign_pub_hex(), admin.sign_pub().to_string());
    // A valid binding, so that each case fails on what it names; and one
    // the guest made for another account (only the service knows the
    // caller's key, which must be the account).
    let sig = guest_id.bind(&gk).to_string();
    let other_sig = guest_id.bind(&Identity::generate().sign_pub_hex()).to_string();
    let reg =
        json!({"invite": tok, "kex_pub": kex, "kex_sig": sig, "device_list": guest_id.first_device_list()});
    let with = |base: &Value, edit: Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().extend(edit.as_object().unwrap().clone());
        v.to_string()
    };
    let register_cases: Vec<(&str, String)> = vec![
        ("not json", "not json".into()),
        ("array body", json!([]).to_string()),
        ("unknown field", with(&reg, json!({"role": "admin"}))),
        ("kex_pub all zero", with(&reg, json!({"kex_pub": "00".repeat(32)}))),
        ("bad link", with(&reg, json!({"invite": "unibus://invite/xyz"}))),
        ("name control char", with(&reg, json!({"name": "a\u{7}b"}))),
        ("kex_sig unpadded", with(&reg, json!({"kex_sig": sig.trim_end_matches('=')}))),
        ("kex_sig for another account", with(&reg, json!({"kex_sig": other_sig}))),
    ];
    // A device bundle for the admin's account (the caller's key again).
    let dev = Identity::generate().with_account(&me).unwrap().bundle(None);
    let bundle = json!({"device": dev.device, "kex_pub": dev.kex_pub, "kex_sig": dev.kex_sig,
        "device_list": admin_list_plus(&admin, &admin_id, &dev).await});
    let recovery = json!({"account": me, "device": dev.device, "kex_pub": dev.kex_pub, "kex_sig": dev.kex_sig,
        "device_list": admin_list_plus(&admin, &admin_id, &dev).await});
    let admin_cases: Vec<(&str, &str, String)> = vec![
        ("device.add of another device", subjects::DEVICE_ADD, with(&bundle, json!({"device": gk}))),
        ("device.add unknown field", subjects::DEVICE_ADD, with(&bundle, json!({"seq": 1}))),
        ("device.revoke non-hex", subjects::DEVICE_REVOKE, json!({"device": "q".repeat(64)}).to_string()),
        ("recovery bound elsewhere", subjects::ADMIN_DEVICE_ADD, with(&recovery, json!({"account": gk}))),
        ("ttl too small", subjects::ADMIN_INVITE_CREATE, json!({"ttl_secs": 59}).to_string()),
        ("ttl fraction", subjects::ADMIN_INVITE_CREATE, json!({"ttl_secs": 60.5}).to_string()),
        ("whoami unknown field", subjects::WHOAMI, json!({"sign_pub": "x"}).to_string()),
        ("lookup small-order key", subjects::USER_LOOKUP, json!({"sign_pub": small_order()}).to_string()),
        ("invite.list limit 0", subjects::ADMIN_INVITE_LIST, json!({"limit": 0}).to_string()),
        ("invite.list cursor garbage", subjects::ADMIN_INVITE_LIST, json!({"cursor": "garbage"}).to_string()),
        ("invite.get short id", subjects::ADMIN_INVITE_GET, json!({"id": "abcd"}).to_string()),
        ("user.list status pending", subjects::ADMIN_USER_LIST, json!({"status": "pending"}).to_string()),
        ("room.create long name", subjects::ROOM_CREATE, json!({"name": "r".repeat(65)}).to_string()),
        ("room.get invite-length id", subjects::ROOM_GET, json!({"id": "a".repeat(64)}).to_string()),
        ("block.add self", subjects::BLOCK_ADD, json!({"sign_pub": me}).to_string()),
        ("block.list string body", subjects::BLOCK_LIST, json!("x").to_string()),
    ];

    let before = stack.kv_snapshot().await;
    for (what, body) in &register_cases {
        assert_bad(&guest, subjects::REGISTER, what, body).await;
    }
    for (what, subject, body) in &admin_cases {
        assert_bad(&admin, subject, what, body).await;
    }
    assert_eq!(stack.kv_snapshot().await, before, "KV changed");

    // The well-formed requests still work afterwards: the invite was
    // untouched, and the device bundle was only refused for its edits.
    guest.register(&tok, Some("ok")).await.unwrap();
    admin.add_device(&dev).await.unwrap();
}

/// The next version of the admin's list with `dev` added, signed by the
/// admin: well formed, so that each case fails on what it names.
async fn admin_list_plus(admin: &Client, me: &Identity, dev: &unibus::Bundle) -> serde_json::Value {
    let current = admin.device_list().await.unwrap().expect("the admin's list");
    let mut devices = current.devices.clone();
    devices.push(unibus::proto::devicelist::ListedDevice {
        device: dev.device.clone(),
        kex_pub: dev.kex_pub.clone(),
        kex_sig: Some(dev.kex_sig.clone()),
    });
    serde_json::to_value(me.next_device_list(&current, devices, unibus::proto::devicelist::By::Device))
        .unwrap()
}

fn small_order() -> String {
    format!("01{}", "00".repeat(31))
}

async fn assert_bad(client: &Client, subject: &str, what: &str, body: &str) {
    let msg = client.call_raw(subject, body.as_bytes().to_vec()).await.unwrap();
    let headers = msg.headers.clone().unwrap_or_default();
    let number = headers.get(subjects::HDR_SERVICE_ERROR_CODE).map(|v| v.to_string());
    assert_eq!(number.as_deref(), Some("400"), "{what}: header");
    let r = decode_reply::<serde_json::Value>(subject, &msg);
    assert_eq!(code(r), "bad_request", "{what}");
}
