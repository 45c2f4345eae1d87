//! Bad input gets `bad_request` and changes nothing in KV.

use unibus::{Client, Identity, decode_reply};
use unibus_proto::subjects;

use crate::support::{Stack, code};

fn low_order_order8() -> String {
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800".into()
}

/// Over 60 malformed requests across every endpoint
/// each get `bad_request`, and KV is unchanged afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_bad_request_and_change_nothing() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let guest_id = Identity::generate();
    let guest = stack.connect(&guest_id).await.unwrap();
    let tok = inv.token.clone();
    let kex = guest_id.kex_pub_hex();
    let (gk, me) = (guest_id.sign_pub_hex(), admin.sign_pub().to_string());
    let p = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f";
    // A valid binding, so that each case fails on the field it names; and
    // bindings that must not pass: made for another account, over another
    // kex_pub, or signed by another key.
    let sig = guest_id.bind(&gk).to_string();
    let other_sig = guest_id.bind(&Identity::generate().sign_pub_hex()).to_string();
    let (_, seed) = nkeys::decode_seed(&guest_id.nkey_seed()).unwrap();
    let other_kex = Identity::generate().kex_pub_hex();
    let stale_sig =
        unibus_proto::binding::sign_binding(&ed25519_dalek::SigningKey::from_bytes(&seed), &gk, &other_kex)
            .to_string();
    let foreign = Identity::generate();
    let foreign_sig = foreign.bind(&gk).to_string();

    let register_cases: Vec<(&str, String)> = vec![
        ("not json", "not json".into()),
        ("truncated json", "{\"invite\":".into()),
        ("array body", "[]".into()),
        ("string body", "\"x\"".into()),
        ("number body", "42".into()),
        ("empty object", "{}".into()),
        ("missing kex_pub", format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\"}}")),
        ("null kex_pub", format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":null}}")),
        ("invite wrong type", format!("{{\"kex_sig\":\"{sig}\",\"invite\":5,\"kex_pub\":\"{kex}\"}}")),
        (
            "unknown field",
            format!(
                "{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"role\":\"admin\"}}"
            ),
        ),
        (
            "kex_pub 62 hex",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{}\"}}", &kex[..62]),
        ),
        ("kex_pub 66 hex", format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}ab\"}}")),
        (
            "kex_pub non-hex",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{}\"}}", "zz".repeat(32)),
        ),
        (
            "kex_pub all zero",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{}\"}}", "00".repeat(32)),
        ),
        (
            "kex_pub u=1",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"01{}\"}}", "00".repeat(31)),
        ),
        (
            "kex_pub order 8",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{}\"}}", low_order_order8()),
        ),
        ("kex_pub u=p", format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{p}\"}}")),
        ("kex_pub wrong type", format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":[1,2]}}")),
        (
            "token short",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{}\",\"kex_pub\":\"{kex}\"}}", &tok[..63]),
        ),
        (
            "token non-hex",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{}\",\"kex_pub\":\"{kex}\"}}", "g".repeat(64)),
        ),
        (
            "bad link",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"unibus://invite/xyz\",\"kex_pub\":\"{kex}\"}}"),
        ),
        (
            "empty name",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"name\":\"\"}}"),
        ),
        (
            "name 65 chars",
            format!(
                "{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"name\":\"{}\"}}",
                "n".repeat(65)
            ),
        ),
        (
            "name control char",
            format!(
                "{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"name\":\"a\\u0007b\"}}"
            ),
        ),
        ("missing kex_sig", format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\"}}")),
        ("null kex_sig", format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":null}}")),
        (
            "kex_sig unpadded",
            format!(
                "{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":\"{}\"}}",
                sig.trim_end_matches('=')
            ),
        ),
        (
            "kex_sig url alphabet",
            format!(
                "{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":\"{}\"}}",
                sig.replace('+', "-").replace('/', "_").replace('=', "A")
            ),
        ),
        ("kex_sig wrong type", format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":7}}")),
        (
            "kex_sig for another account",
            format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":\"{other_sig}\"}}"),
        ),
        (
            "kex_sig of another kex_pub",
            format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":\"{stale_sig}\"}}"),
        ),
        (
            "kex_sig by another key",
            format!("{{\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"kex_sig\":\"{foreign_sig}\"}}"),
        ),
        (
            "name wrong type",
            format!("{{\"kex_sig\":\"{sig}\",\"invite\":\"{tok}\",\"kex_pub\":\"{kex}\",\"name\":7}}"),
        ),
    ];
    // Device bundles: a valid one for the admin's account, then each field
    // broken in turn.
    let dev = Identity::generate().with_account(&me).unwrap().bundle(None);
    let dev_json = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::json!({"device": dev.device, "kex_pub": dev.kex_pub, "kex_sig": dev.kex_sig});
        edit(&mut v);
        v.to_string()
    };
    let recovery_json = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&dev_json(&|_| {})).unwrap();
        v["account"] = me.clone().into();
        edit(&mut v);
        v.to_string()
    };
    let device_cases: Vec<(&str, &str, String)> = vec![
        (
            "device.add missing device",
            subjects::DEVICE_ADD,
            dev_json(&|v| v["device"] = serde_json::Value::Null),
        ),
        (
            "device.add small-order device",
            subjects::DEVICE_ADD,
            dev_json(&|v| v["device"] = format!("01{}", "00".repeat(31)).into()),
        ),
        (
            "device.add weak kex_pub",
            subjects::DEVICE_ADD,
            dev_json(&|v| v["kex_pub"] = "00".repeat(32).into()),
        ),
        (
            "device.add missing kex_sig",
            subjects::DEVICE_ADD,
            dev_json(&|v| v.as_object_mut().unwrap().retain(|k, _| k != "kex_sig")),
        ),
        (
            "device.add kex_sig 87 chars",
            subjects::DEVICE_ADD,
            dev_json(&|v| v["kex_sig"] = dev.kex_sig[1..].into()),
        ),
        (
            "device.add kex_sig of another device",
            subjects::DEVICE_ADD,
            dev_json(&|v| v["device"] = gk.clone().into()),
        ),
        ("device.add unknown field", subjects::DEVICE_ADD, dev_json(&|v| v["seq"] = 1.into())),
        ("device.add long name", subjects::DEVICE_ADD, dev_json(&|v| v["name"] = "n".repeat(65).into())),
        ("device.add control name", subjects::DEVICE_ADD, dev_json(&|v| v["name"] = "a\u{7}b".into())),
        ("device.add array body", subjects::DEVICE_ADD, "[]".into()),
        ("device.list unknown field", subjects::DEVICE_LIST, "{\"all\":true}".into()),
        ("device.revoke missing device", subjects::DEVICE_REVOKE, "{}".into()),
        ("device.revoke non-hex", subjects::DEVICE_REVOKE, format!("{{\"device\":\"{}\"}}", "q".repeat(64))),
        (
            "device.revoke extra field",
            subjects::DEVICE_REVOKE,
            format!("{{\"device\":\"{me}\",\"force\":true}}"),
        ),
        ("recovery missing account", subjects::ADMIN_DEVICE_ADD, dev_json(&|_| {})),
        ("recovery bad account", subjects::ADMIN_DEVICE_ADD, recovery_json(&|v| v["account"] = "ab".into())),
        (
            "recovery bound elsewhere",
            subjects::ADMIN_DEVICE_ADD,
            recovery_json(&|v| v["account"] = gk.clone().into()),
        ),
        (
            "recovery unknown field",
            subjects::ADMIN_DEVICE_ADD,
            recovery_json(&|v| v["via"] = "recovery".into()),
        ),
    ];
    let admin_cases: Vec<(&str, &str, String)> = vec![
        ("ttl too small", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":59}".into()),
        ("ttl too large", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":2592001}".into()),
        ("ttl negative", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":-1}".into()),
        ("ttl string", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":\"60\"}".into()),
        ("ttl fraction", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":60.5}".into()),
        ("ttl huge", subjects::ADMIN_INVITE_CREATE, "{\"ttl_secs\":1e30}".into()),
        ("unknown role", subjects::ADMIN_INVITE_CREATE, "{\"role\":\"root\"}".into()),
        ("role wrong type", subjects::ADMIN_INVITE_CREATE, "{\"role\":1}".into()),
        ("note 257 chars", subjects::ADMIN_INVITE_CREATE, format!("{{\"note\":\"{}\"}}", "x".repeat(257))),
        ("invite unknown field", subjects::ADMIN_INVITE_CREATE, "{\"token\":\"abc\"}".into()),
        ("invite array body", subjects::ADMIN_INVITE_CREATE, "[1]".into()),
        ("whoami unknown field", subjects::WHOAMI, "{\"sign_pub\":\"x\"}".into()),
        ("lookup missing key", subjects::USER_LOOKUP, "{}".into()),
        ("lookup non-hex", subjects::USER_LOOKUP, format!("{{\"sign_pub\":\"{}\"}}", "q".repeat(64))),
        (
            "lookup small-order key",
            subjects::USER_LOOKUP,
            format!("{{\"sign_pub\":\"01{}\"}}", "00".repeat(31)),
        ),
        ("lookup not a point", subjects::USER_LOOKUP, format!("{{\"sign_pub\":\"{}\"}}", "ff".repeat(32))),
        ("invite.list bad status", subjects::ADMIN_INVITE_LIST, "{\"status\":\"bogus\"}".into()),
        ("invite.list limit 0", subjects::ADMIN_INVITE_LIST, "{\"limit\":0}".into()),
        ("invite.list limit string", subjects::ADMIN_INVITE_LIST, "{\"limit\":\"5\"}".into()),
        ("invite.list cursor number", subjects::ADMIN_INVITE_LIST, "{\"cursor\":5}".into()),
        ("invite.list cursor garbage", subjects::ADMIN_INVITE_LIST, "{\"cursor\":\"garbage\"}".into()),
        ("invite.get missing id", subjects::ADMIN_INVITE_GET, "{}".into()),
        ("invite.get short id", subjects::ADMIN_INVITE_GET, "{\"id\":\"abcd\"}".into()),
        ("invite.get non-hex id", subjects::ADMIN_INVITE_GET, format!("{{\"id\":\"{}\"}}", "x".repeat(64))),
        (
            "invite.cancel extra field",
            subjects::ADMIN_INVITE_CANCEL,
            format!("{{\"id\":\"{}\",\"force\":true}}", "a".repeat(64)),
        ),
        ("user.list user status pending", subjects::ADMIN_USER_LIST, "{\"status\":\"pending\"}".into()),
        ("user.list limit 1001", subjects::ADMIN_USER_LIST, "{\"limit\":1001}".into()),
        (
            "user.get small-order",
            subjects::ADMIN_USER_GET,
            format!("{{\"sign_pub\":\"01{}\"}}", "00".repeat(31)),
        ),
        ("user.revoke missing key", subjects::ADMIN_USER_REVOKE, "{}".into()),
        (
            "user.restore non-hex",
            subjects::ADMIN_USER_RESTORE,
            format!("{{\"sign_pub\":\"{}\"}}", "z".repeat(64)),
        ),
        ("user.delete short key", subjects::ADMIN_USER_DELETE, "{\"sign_pub\":\"abcd\"}".into()),
        ("room.create missing name", subjects::ROOM_CREATE, "{}".into()),
        ("room.create null name", subjects::ROOM_CREATE, "{\"name\":null}".into()),
        ("room.create long name", subjects::ROOM_CREATE, format!("{{\"name\":\"{}\"}}", "r".repeat(65))),
        ("room.create newline", subjects::ROOM_CREATE, "{\"name\":\"a\\nb\"}".into()),
        ("room.get invite-length id", subjects::ROOM_GET, format!("{{\"id\":\"{}\"}}", "a".repeat(64))),
        ("room.list unknown field", subjects::ROOM_LIST, "{\"all\":true}".into()),
        ("member.add missing key", subjects::ROOM_MEMBER_ADD, format!("{{\"id\":\"{}\"}}", "a".repeat(32))),
        (
            "member.add small-order",
            subjects::ROOM_MEMBER_ADD,
            format!("{{\"id\":\"{}\",\"sign_pub\":\"01{}\"}}", "a".repeat(32), "00".repeat(31)),
        ),
        (
            "member.remove non-hex id",
            subjects::ROOM_MEMBER_REMOVE,
            format!("{{\"id\":\"{}\",\"sign_pub\":\"{}\"}}", "q".repeat(32), "ab".repeat(32)),
        ),
        ("block.add missing key", subjects::BLOCK_ADD, "{}".into()),
        ("block.add null key", subjects::BLOCK_ADD, "{\"sign_pub\":null}".into()),
        ("block.add short key", subjects::BLOCK_ADD, "{\"sign_pub\":\"abcd\"}".into()),
        ("block.add small-order", subjects::BLOCK_ADD, format!("{{\"sign_pub\":\"01{}\"}}", "00".repeat(31))),
        ("block.add extra field", subjects::BLOCK_ADD, format!("{{\"sign_pub\":\"{gk}\",\"x\":1}}")),
        ("block.add self", subjects::BLOCK_ADD, format!("{{\"sign_pub\":\"{me}\"}}")),
        ("block.add array body", subjects::BLOCK_ADD, "[]".into()),
        ("block.remove non-hex", subjects::BLOCK_REMOVE, format!("{{\"sign_pub\":\"{}\"}}", "z".repeat(64))),
        ("block.remove wrong type", subjects::BLOCK_REMOVE, "{\"sign_pub\":7}".into()),
        ("block.list unknown field", subjects::BLOCK_LIST, "{\"limit\":5}".into()),
        ("block.list string body", subjects::BLOCK_LIST, "\"x\"".into()),
    ];
    assert!(register_cases.len() + admin_cases.len() >= 25);

    let before = stack.kv_snapshot().await;
    for (what, body) in &register_cases {
        assert_bad(&guest, subjects::REGISTER, what, body).await;
    }
    for (what, subject, body) in admin_cases.iter().chain(&device_cases) {
        assert_bad(&admin, subject, what, body).await;
    }
    assert_eq!(stack.kv_snapshot().await, before, "KV changed");

    // The well-formed requests still work afterwards: the invite was
    // untouched, and the device bundle was only refused for its edits.
    guest.register(&tok, Some("ok")).await.unwrap();
    admin.add_device(&dev).await.unwrap();
}

async fn assert_bad(client: &Client, subject: &str, what: &str, body: &str) {
    let msg = client.call_raw(subject, body.as_bytes().to_vec()).await.unwrap();
    let headers = msg.headers.clone().unwrap_or_default();
    let number = headers.get(subjects::HDR_SERVICE_ERROR_CODE).map(|v| v.to_string());
    assert_eq!(number.as_deref(), Some("400"), "{what}: header");
    let r = decode_reply::<serde_json::Value>(subject, &msg);
    assert_eq!(code(r), "bad_request", "{what}");
}
