//! Request decoding as the service applies it, without a server: each
//! malformed body of a control endpoint ends in `bad_request` (400) with a
//! message naming what is wrong. A body is decoded as the endpoint table's
//! request type ([`Endpoint::Request`], as the dispatcher does), then put
//! through the pure checks the endpoint's handler makes before it touches
//! the store (invite token, names, TTL, note, page size, the `kex_sig`
//! binding). Each case breaks one thing in a body that passes whole (every
//! test checks that first), so each refusal is the one its case names.
//! What needs a server (the error on the wire, KV unchanged, `block.add`
//! of oneself, list cursors) stays in `tests/it/malformed.rs`.

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use unibus_proto::binding::{sign_binding, verify_binding};
use unibus_proto::devicelist::{By, DeviceList, ListedDevice};
use unibus_proto::endpoint::{self as ep, Endpoint};
use unibus_proto::error::Error;
use unibus_proto::ids::SignPub;
use unibus_proto::keys::InviteToken;
use unibus_proto::wire::{self, page_limit, validate_name};

/// A check a handler makes on its decoded request before any store work.
type Rule<R> = fn(&Keys, &R) -> Result<(), Error>;

/// Fixed keys: a registering guest, an account (the caller of the device
/// endpoints) and a new device bound to that account.
struct Keys {
    guest: SigningKey,
    gk: String,
    kex: String,
    sig: String,
    me: String,
    dev_key: String,
    dev_kex: String,
    dev_sig: String,
}

fn hex_of(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

fn kex_of(secret: u8) -> String {
    hex::encode(x25519_dalek::x25519([secret; 32], x25519_dalek::X25519_BASEPOINT_BYTES))
}

fn keys() -> Keys {
    let guest = SigningKey::from_bytes(&[1; 32]);
    let (gk, kex) = (hex_of(&guest), kex_of(2));
    let sig = sign_binding(&guest, &gk, &kex).to_string();
    let me = hex_of(&SigningKey::from_bytes(&[3; 32]));
    let dev = SigningKey::from_bytes(&[4; 32]);
    let (dev_key, dev_kex) = (hex_of(&dev), kex_of(5));
    let dev_sig = sign_binding(&dev, &me, &dev_kex).to_string();
    Keys { guest, gk, kex, sig, me, dev_key, dev_kex, dev_sig }
}

fn sign_pub(s: &str) -> SignPub {
    SignPub::parse(s).unwrap()
}

/// No check beyond decoding.
fn none<R>(_: &Keys, _: &R) -> Result<(), Error> {
    Ok(())
}

/// `unibus.register`: the token or link, the name, and the binding of the
/// first device to itself (the caller, `gk`).
fn register_rule(k: &Keys, r: &<ep::Register as Endpoint>::Request) -> Result<(), Error> {
    InviteToken::parse(&r.invite)?;
    r.name.as_deref().map_or(Ok(()), |n| validate_name("name", n))?;
    let caller = sign_pub(&k.gk);
    verify_binding(&caller.key(), &caller, &r.kex_pub, &r.kex_sig)
}

/// `unibus.device.add`: the name and the binding to the caller's account.
fn device_add_rule(k: &Keys, r: &<ep::DeviceAdd as Endpoint>::Request) -> Result<(), Error> {
    r.name.as_deref().map_or(Ok(()), |n| validate_name("name", n))?;
    verify_binding(&sign_pub(&k.me).key(), &r.device, &r.kex_pub, &r.kex_sig)
}

/// `unibus.admin.device.add`: the name and the binding to `account`.
fn recovery_rule(_: &Keys, r: &<ep::AdminDeviceAdd as Endpoint>::Request) -> Result<(), Error> {
    r.name.as_deref().map_or(Ok(()), |n| validate_name("name", n))?;
    verify_binding(&r.account.key(), &r.device, &r.kex_pub, &r.kex_sig)
}

fn invite_create_rule(_: &Keys, r: &<ep::AdminInviteCreate as Endpoint>::Request) -> Result<(), Error> {
    r.ttl().and(r.note()).map(drop)
}

fn invite_list_rule(_: &Keys, r: &<ep::AdminInviteList as Endpoint>::Request) -> Result<(), Error> {
    page_limit(r.limit).map(drop)
}

fn user_list_rule(_: &Keys, r: &<ep::AdminUserList as Endpoint>::Request) -> Result<(), Error> {
    page_limit(r.limit).map(drop)
}

fn room_list_rule(_: &Keys, r: &<ep::RoomList as Endpoint>::Request) -> Result<(), Error> {
    page_limit(r.limit).map(drop)
}

fn room_create_rule(_: &Keys, r: &<ep::RoomCreate as Endpoint>::Request) -> Result<(), Error> {
    validate_name("name", &r.name)
}

/// One malformed body and a piece of the message it must be refused with.
type Case = (&'static str, Body, &'static str);

/// A body: JSON, or raw bytes for what is not JSON at all.
enum Body {
    Json(Value),
    Raw(&'static str),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::Raw(s) => s.as_bytes().to_vec(),
        }
    }
}

fn j(v: Value) -> Body {
    Body::Json(v)
}

/// `base` with `edit` applied (a `null` value removes the field).
fn with(base: &Value, edit: Value) -> Value {
    let mut v = base.clone();
    for (key, value) in edit.as_object().unwrap() {
        match value {
            Value::Null => drop(v.as_object_mut().unwrap().remove(key)),
            _ => v[key] = value.clone(),
        }
    }
    v
}

/// [`with`], as a case's body.
fn edit(base: &Value, e: Value) -> Body {
    j(with(base, e))
}

/// Checks that `good` passes endpoint `E` whole, then that every case is
/// refused with `bad_request` and a message containing its text.
fn check<E: Endpoint>(k: &Keys, rule: Rule<E::Request>, good: Option<Value>, cases: Vec<Case>) {
    if let Some(good) = good {
        let r = wire::decode::<E::Request>(&serde_json::to_vec(&good).unwrap())
            .unwrap_or_else(|e| panic!("{}: the unbroken body is refused: {e}", E::SUBJECT));
        rule(k, &r).unwrap_or_else(|e| panic!("{}: the unbroken body fails its rule: {e}", E::SUBJECT));
    }
    for (what, body, expected) in cases {
        let outcome = wire::decode::<E::Request>(&body.bytes()).and_then(|r| rule(k, &r));
        let Err(e) = outcome else { panic!("{} {what}: accepted", E::SUBJECT) };
        assert_eq!((e.code(), e.number()), ("bad_request", 400), "{} {what}: {e:?}", E::SUBJECT);
        let message = e.public_message();
        assert!(message.contains(expected), "{} {what}: {message:?} does not say {expected:?}", E::SUBJECT);
    }
}

const NOT_OBJECT: &str = "must be a JSON object";
/// X25519 points that must be refused: u = 0, u = 1, a point of order 8,
/// u = p (non-canonical).
const ORDER8: &str = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
const U_IS_P: &str = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f";

fn small_order() -> String {
    format!("01{}", "00".repeat(31))
}

fn register_body(k: &Keys) -> Value {
    json!({"invite": "ab".repeat(32), "kex_pub": k.kex, "kex_sig": k.sig, "device_list": first_list(k)})
}

/// Version 1 of the guest's list: itself alone, signed by itself.
fn first_list(k: &Keys) -> Value {
    serde_json::to_value(DeviceList::first(&k.guest, &k.kex, &k.sig)).unwrap()
}

/// A next version of the account's list adding the new device (decoding
/// only: whether it follows the current list is the store's to judge).
fn next_list(k: &Keys) -> Value {
    let listed = ListedDevice {
        device: k.dev_key.clone(),
        kex_pub: k.dev_kex.clone(),
        kex_sig: Some(k.dev_sig.clone()),
    };
    let me = SigningKey::from_bytes(&[3; 32]);
    serde_json::to_value(DeviceList::sign(&k.me, 2, "ab".repeat(32), vec![listed], &me, By::Device)).unwrap()
}

/// The new device's add request body.
fn device_body(k: &Keys) -> Value {
    json!({"device": k.dev_key, "kex_pub": k.dev_kex, "kex_sig": k.dev_sig, "device_list": next_list(k)})
}

/// Bodies that are not a JSON object, on endpoints of every shape.
#[test]
fn a_body_must_be_a_json_object() {
    let k = keys();
    check::<ep::Register>(
        &k,
        none,
        None,
        vec![
            ("not json", Body::Raw("not json"), "invalid JSON"),
            ("truncated json", Body::Raw("{\"invite\":"), "invalid JSON"),
            ("array body", j(json!([])), NOT_OBJECT),
            ("string body", j(json!("x")), NOT_OBJECT),
            ("number body", j(json!(42)), NOT_OBJECT),
        ],
    );
    check::<ep::DeviceAdd>(&k, none, None, vec![("array body", j(json!([])), NOT_OBJECT)]);
    check::<ep::AdminInviteCreate>(&k, none, None, vec![("array body", j(json!([1])), NOT_OBJECT)]);
    check::<ep::BlockAdd>(&k, none, None, vec![("array body", j(json!([])), NOT_OBJECT)]);
    check::<ep::BlockList>(&k, none, None, vec![("string body", j(json!("x")), NOT_OBJECT)]);
}

/// `unibus.register`: required fields, types, unknown fields, the token or
/// link, and the name.
#[test]
fn register_fields_token_and_name() {
    let k = keys();
    let b = register_body(&k);
    let (tok, kex) = ("ab".repeat(32), k.kex.clone());
    check::<ep::Register>(
        &k,
        register_rule,
        Some(b.clone()),
        vec![
            ("empty object", j(json!({})), "missing field"),
            ("missing kex_pub", edit(&b, json!({"kex_pub": null})), "missing field `kex_pub`"),
            (
                "null kex_pub",
                j(json!({"invite": tok, "kex_sig": k.sig, "kex_pub": null})),
                "invalid type: null",
            ),
            ("invite wrong type", edit(&b, json!({"invite": 5})), "invalid type: integer"),
            ("unknown field", edit(&b, json!({"role": "admin"})), "unknown field `role`"),
            ("token short", edit(&b, json!({"invite": &tok[..63]})), "invite: expected 64 hex"),
            ("token non-hex", edit(&b, json!({"invite": "g".repeat(64)})), "invite: not hexadecimal"),
            ("bad link", edit(&b, json!({"invite": "unibus://invite/xyz"})), "invite: expected 64 hex"),
            ("empty name", edit(&b, json!({"name": ""})), "name: must be 1..=64"),
            ("name 65 chars", edit(&b, json!({"name": "n".repeat(65)})), "name: must be 1..=64"),
            ("name control char", edit(&b, json!({"name": "a\u{7}b"})), "name: control characters"),
            ("name wrong type", edit(&b, json!({"name": 7})), "invalid type: integer"),
            ("kex_pub wrong type", edit(&b, json!({"kex_pub": [1, 2]})), "invalid type: sequence"),
            ("kex_pub 62 hex", edit(&b, json!({"kex_pub": &kex[..62]})), "kex_pub: expected 64 hex"),
            ("kex_pub 66 hex", edit(&b, json!({"kex_pub": format!("{kex}ab")})), "kex_pub: expected 64 hex"),
        ],
    );
}

/// A `kex_pub` must be a canonical X25519 key not of low order, on
/// registration and on a device bundle alike.
#[test]
fn kex_pub_must_be_a_strong_key() {
    let k = keys();
    let b = register_body(&k);
    let weak = |what, kex_pub: String, says| (what, edit(&b, json!({ "kex_pub": kex_pub })), says);
    check::<ep::Register>(
        &k,
        register_rule,
        Some(b.clone()),
        vec![
            weak("kex_pub non-hex", "zz".repeat(32), "kex_pub: not hexadecimal"),
            weak("kex_pub all zero", "00".repeat(32), "kex_pub: low-order"),
            weak("kex_pub u=1", small_order(), "kex_pub: low-order"),
            weak("kex_pub order 8", ORDER8.into(), "kex_pub: low-order"),
            weak("kex_pub u=p", U_IS_P.into(), "kex_pub: non-canonical"),
        ],
    );
    let dev = device_body(&k);
    check::<ep::DeviceAdd>(
        &k,
        device_add_rule,
        Some(dev.clone()),
        vec![("weak kex_pub", edit(&dev, json!({"kex_pub": "00".repeat(32)})), "kex_pub: low-order")],
    );
}

/// A `kex_sig` is required and is exactly 88 characters of padded standard
/// base64, on registration and on a device bundle alike.
#[test]
fn kex_sig_shape() {
    let k = keys();
    let b = register_body(&k);
    let unpadded = k.sig.trim_end_matches('=').to_string();
    let url = k.sig.replace('+', "-").replace('/', "_").replace('=', "A");
    let shape = "kex_sig: expected 88 characters";
    check::<ep::Register>(
        &k,
        register_rule,
        Some(b.clone()),
        vec![
            ("missing kex_sig", edit(&b, json!({"kex_sig": null})), "missing field `kex_sig`"),
            ("null kex_sig", j(json!({"invite": b["invite"], "kex_pub": k.kex, "kex_sig": null})), "null"),
            ("kex_sig unpadded", edit(&b, json!({ "kex_sig": unpadded })), shape),
            ("kex_sig url alphabet", edit(&b, json!({ "kex_sig": url })), shape),
            ("kex_sig wrong type", edit(&b, json!({"kex_sig": 7})), "invalid type: integer"),
        ],
    );
    let dev = device_body(&k);
    check::<ep::DeviceAdd>(
        &k,
        device_add_rule,
        Some(dev.clone()),
        vec![
            ("missing kex_sig", edit(&dev, json!({"kex_sig": null})), "missing field `kex_sig`"),
            ("kex_sig 87 chars", edit(&dev, json!({"kex_sig": &k.dev_sig[1..]})), shape),
        ],
    );
}

/// A binding verifies only for its own account, device and `kex_pub`.
#[test]
fn a_binding_verifies_for_its_account_device_and_key_only() {
    let k = keys();
    let b = register_body(&k);
    let other = hex_of(&SigningKey::from_bytes(&[6; 32]));
    let other_kex = kex_of(7);
    let for_other = sign_binding(&k.guest, &other, &k.kex).to_string();
    let stale = sign_binding(&k.guest, &k.gk, &other_kex).to_string();
    let foreign = sign_binding(&SigningKey::from_bytes(&[8; 32]), &k.gk, &k.kex).to_string();
    let verify = "kex_sig: the binding does not verify";
    check::<ep::Register>(
        &k,
        register_rule,
        Some(b.clone()),
        vec![
            ("kex_sig for another account", edit(&b, json!({ "kex_sig": for_other })), verify),
            ("kex_sig of another kex_pub", edit(&b, json!({ "kex_sig": stale })), verify),
            ("kex_sig by another key", edit(&b, json!({ "kex_sig": foreign })), verify),
        ],
    );
    let dev = device_body(&k);
    check::<ep::DeviceAdd>(
        &k,
        device_add_rule,
        Some(dev.clone()),
        vec![("kex_sig of another device", edit(&dev, json!({"device": k.gk})), verify)],
    );
    let rec = with(&dev, json!({"account": k.me}));
    check::<ep::AdminDeviceAdd>(
        &k,
        recovery_rule,
        Some(rec.clone()),
        vec![("recovery bound elsewhere", edit(&rec, json!({"account": k.gk})), verify)],
    );
}

/// The device endpoints: `device.add`, `device.list`, `device.revoke` and
/// the admin's recovery `admin.device.add`.
#[test]
fn device_requests() {
    let k = keys();
    let dev = device_body(&k);
    check::<ep::DeviceAdd>(
        &k,
        device_add_rule,
        Some(dev.clone()),
        vec![
            ("missing device", edit(&dev, json!({"device": null})), "missing field `device`"),
            ("small-order device", edit(&dev, json!({"device": small_order()})), "device: weak"),
            ("unknown field", edit(&dev, json!({"seq": 1})), "unknown field `seq`"),
            ("long name", edit(&dev, json!({"name": "n".repeat(65)})), "name: must be 1..=64"),
            ("control name", edit(&dev, json!({"name": "a\u{7}b"})), "name: control characters"),
            ("missing device_list", edit(&dev, json!({"device_list": null})), "missing field `device_list`"),
            (
                "device_list by owner",
                edit(&dev, json!({"device_list": with(&next_list(&k), json!({"by": "owner"}))})),
                "unknown variant `owner`",
            ),
            (
                "device_list extra field",
                edit(&dev, json!({"device_list": with(&next_list(&k), json!({"seq": 1}))})),
                "unknown field `seq`",
            ),
            (
                "device_list version string",
                edit(&dev, json!({"device_list": with(&next_list(&k), json!({"version": "2"}))})),
                "invalid type: string",
            ),
        ],
    );
    check::<ep::DeviceList>(
        &k,
        none,
        Some(json!({})),
        vec![("unknown field", j(json!({"all": true})), "unknown field `all`")],
    );
    check::<ep::DeviceRevoke>(
        &k,
        none,
        Some(json!({"device": k.me})),
        vec![
            ("missing device", j(json!({})), "missing field `device`"),
            ("non-hex", j(json!({"device": "q".repeat(64)})), "device: not hexadecimal"),
            ("extra field", j(json!({"device": k.me, "force": true})), "unknown field `force`"),
            (
                "device_list not an object",
                j(json!({"device": k.me, "device_list": "v2"})),
                "invalid type: string",
            ),
        ],
    );
    let rec = with(&dev, json!({"account": k.me}));
    check::<ep::AdminDeviceAdd>(
        &k,
        recovery_rule,
        Some(rec.clone()),
        vec![
            ("missing account", j(dev.clone()), "missing field `account`"),
            ("bad account", edit(&rec, json!({"account": "ab"})), "account: expected 64 hex"),
            ("unknown field", edit(&rec, json!({"via": "recovery"})), "unknown field `via`"),
        ],
    );
}

/// `unibus.admin.invite.create`: TTL range and type, role, note length.
#[test]
fn invite_create() {
    let k = keys();
    check::<ep::AdminInviteCreate>(
        &k,
        invite_create_rule,
        Some(json!({"ttl_secs": 60, "role": "admin", "note": "x".repeat(256)})),
        vec![
            ("ttl too small", j(json!({"ttl_secs": 59})), "ttl_secs: must be 60..=2592000"),
            ("ttl too large", j(json!({"ttl_secs": 2_592_001})), "ttl_secs: must be 60..=2592000"),
            ("ttl negative", j(json!({"ttl_secs": -1})), "invalid value: integer `-1`"),
            ("ttl string", j(json!({"ttl_secs": "60"})), "invalid type: string"),
            ("ttl fraction", j(json!({"ttl_secs": 60.5})), "invalid type: floating point"),
            ("ttl huge", j(json!({"ttl_secs": 1e30})), "invalid type: floating point"),
            ("unknown role", j(json!({"role": "root"})), "unknown variant `root`"),
            ("role wrong type", j(json!({"role": 1})), "invalid type: integer"),
            ("note 257 chars", j(json!({"note": "x".repeat(257)})), "note: at most 256"),
            ("unknown field", j(json!({"token": "abc"})), "unknown field `token`"),
        ],
    );
}

/// Requests without fields (`whoami`, `block.list`; `device.list` above)
/// take `{}` or an empty body and nothing else.
#[test]
fn requests_without_fields() {
    let k = keys();
    check::<ep::Whoami>(
        &k,
        none,
        Some(json!({})),
        vec![("unknown field", j(json!({"sign_pub": "x"})), "unknown field")],
    );
    check::<ep::BlockList>(
        &k,
        none,
        Some(json!({})),
        vec![("unknown field", j(json!({"limit": 5})), "unknown field `limit`")],
    );
    assert!(wire::decode::<<ep::Whoami as Endpoint>::Request>(b" \n").is_ok(), "an empty body is {{}}");
}

/// Requests naming a user by `sign_pub`: required, 64 hex, a valid
/// Ed25519 point, not of small order; no other field.
#[test]
fn sign_pub_requests() {
    let k = keys();
    let good = Some(json!({"sign_pub": k.gk}));
    let key = |what, v: Value, says| (what, j(json!({ "sign_pub": v })), says);
    check::<ep::UserLookup>(
        &k,
        none,
        good.clone(),
        vec![
            ("missing key", j(json!({})), "missing field `sign_pub`"),
            key("non-hex", json!("q".repeat(64)), "sign_pub: not hexadecimal"),
            key("small-order key", json!(small_order()), "sign_pub: weak"),
            key("not a point", json!("ff".repeat(32)), "sign_pub: non-canonical Ed25519 encoding"),
        ],
    );
    check::<ep::AdminUserGet>(
        &k,
        none,
        good.clone(),
        vec![key("small-order", json!(small_order()), "sign_pub: weak")],
    );
    check::<ep::AdminUserRevoke>(
        &k,
        none,
        good.clone(),
        vec![("missing key", j(json!({})), "missing field `sign_pub`")],
    );
    check::<ep::AdminUserRestore>(
        &k,
        none,
        good.clone(),
        vec![key("non-hex", json!("z".repeat(64)), "not hexadecimal")],
    );
    check::<ep::AdminUserDelete>(
        &k,
        none,
        good.clone(),
        vec![key("short key", json!("abcd"), "expected 64 hex")],
    );
    check::<ep::BlockAdd>(
        &k,
        none,
        good.clone(),
        vec![
            ("missing key", j(json!({})), "missing field `sign_pub`"),
            ("null key", j(json!({"sign_pub": null})), "invalid type: null"),
            key("short key", json!("abcd"), "sign_pub: expected 64 hex"),
            key("small-order", json!(small_order()), "sign_pub: weak"),
            ("extra field", j(json!({"sign_pub": k.gk, "x": 1})), "unknown field `x`"),
        ],
    );
    check::<ep::BlockRemove>(
        &k,
        none,
        good,
        vec![
            key("non-hex", json!("z".repeat(64)), "sign_pub: not hexadecimal"),
            key("wrong type", json!(7), "invalid type: integer"),
        ],
    );
}

/// List requests: status values, page size 1..=1000, types, fields.
#[test]
fn list_requests() {
    let k = keys();
    check::<ep::AdminInviteList>(
        &k,
        invite_list_rule,
        Some(json!({"status": "expired", "limit": 1000})),
        vec![
            ("bad status", j(json!({"status": "bogus"})), "unknown variant `bogus`"),
            ("limit 0", j(json!({"limit": 0})), "limit: must be 1..=1000, got 0"),
            ("limit string", j(json!({"limit": "5"})), "invalid type: string"),
            ("cursor number", j(json!({"cursor": 5})), "invalid type: integer"),
        ],
    );
    check::<ep::AdminUserList>(
        &k,
        user_list_rule,
        Some(json!({"status": "revoked", "limit": 1})),
        vec![
            ("user status pending", j(json!({"status": "pending"})), "unknown variant `pending`"),
            ("limit 1001", j(json!({"limit": 1001})), "limit: must be 1..=1000, got 1001"),
        ],
    );
    check::<ep::RoomList>(
        &k,
        room_list_rule,
        Some(json!({"limit": 5})),
        vec![("unknown field", j(json!({"all": true})), "unknown field `all`")],
    );
}

/// Invite and room ids: required, exact length of hex, no other field.
#[test]
fn id_requests() {
    let k = keys();
    let invite = "a".repeat(64);
    check::<ep::AdminInviteGet>(
        &k,
        none,
        Some(json!({ "id": invite })),
        vec![
            ("missing id", j(json!({})), "missing field `id`"),
            ("short id", j(json!({"id": "abcd"})), "id: expected 64 hex"),
            ("non-hex id", j(json!({"id": "x".repeat(64)})), "id: expected 64 hex"),
        ],
    );
    check::<ep::AdminInviteCancel>(
        &k,
        none,
        Some(json!({ "id": invite })),
        vec![("extra field", j(json!({"id": invite, "force": true})), "unknown field `force`")],
    );
    let room = "a".repeat(32);
    check::<ep::RoomGet>(
        &k,
        none,
        Some(json!({ "id": room })),
        vec![("invite-length id", j(json!({ "id": invite })), "id: expected 32 hex")],
    );
    let member = json!({"id": room, "sign_pub": k.gk});
    check::<ep::RoomMemberAdd>(
        &k,
        none,
        Some(member.clone()),
        vec![
            ("missing key", edit(&member, json!({"sign_pub": null})), "missing field `sign_pub`"),
            ("small-order", edit(&member, json!({"sign_pub": small_order()})), "sign_pub: weak"),
        ],
    );
    check::<ep::RoomMemberRemove>(
        &k,
        none,
        Some(member.clone()),
        vec![("non-hex id", edit(&member, json!({"id": "q".repeat(32)})), "id: expected 32 hex")],
    );
}

/// `unibus.room.create`: a name of 1..=64 characters without control
/// characters, required.
#[test]
fn room_create() {
    let k = keys();
    check::<ep::RoomCreate>(
        &k,
        room_create_rule,
        Some(json!({"name": "r".repeat(64)})),
        vec![
            ("missing name", j(json!({})), "missing field `name`"),
            ("null name", j(json!({"name": null})), "invalid type: null"),
            ("long name", j(json!({"name": "r".repeat(65)})), "name: must be 1..=64"),
            ("newline", j(json!({"name": "a\nb"})), "name: control characters"),
        ],
    );
}
