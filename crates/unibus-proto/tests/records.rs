//! Records and replies written by unibusd before keys and times were typed
//! (captured from a real stack at commit 911708c into `fixtures/`) read
//! into today's types and write back byte for byte: the typed fields change
//! nothing in KV or on the wire.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use unibus_proto::records::{Device, Invite, Room, User};
use unibus_proto::wire::{
    AccountReply, BlockListReply, DeviceListReply, InviteListReply, InviteReply, LookupReply, RoomListReply,
    RoomReply, UserListReply, UserReply,
};

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture is JSON")
}

/// Reads `text` as `T` and writes it back: the bytes must be equal.
fn round_trip<T: Serialize + DeserializeOwned>(what: &str, text: &str) {
    let value: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} does not read: {e}\n{text}"));
    let again = serde_json::to_string(&value).unwrap();
    assert_eq!(again, text, "{what} is not written back byte for byte");
}

/// As [`round_trip`] for a reply, which today also carries
/// `"device_list": null` (DESIGN section 11) where the account has no
/// list: with those fields taken out, the bytes must be equal.
fn reply_round_trip<T: Serialize + DeserializeOwned>(what: &str, text: &str) {
    let value: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} does not read: {e}\n{text}"));
    let mut again = serde_json::to_value(&value).unwrap();
    let original: Value = serde_json::from_str(text).unwrap();
    drop_new_null_lists(&original, &mut again);
    let again = serde_json::to_string(&again).unwrap();
    let original = serde_json::to_string(&original).unwrap();
    assert_eq!(again, original, "{what} is not written back unchanged");
}

/// Removes every `device_list: null` of `again` that `original` lacks.
fn drop_new_null_lists(original: &Value, again: &mut Value) {
    match (original, again) {
        (Value::Object(o), Value::Object(a)) => {
            if !o.contains_key("device_list") && a.get("device_list") == Some(&Value::Null) {
                a.remove("device_list");
            }
            for (k, v) in a.iter_mut() {
                if let Some(ov) = o.get(k) {
                    drop_new_null_lists(ov, v);
                }
            }
        }
        (Value::Array(o), Value::Array(a)) => {
            for (ov, v) in o.iter().zip(a.iter_mut()) {
                drop_new_null_lists(ov, v);
            }
        }
        _ => {}
    }
}

#[test]
fn kv_records_read_and_write_back_unchanged() {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for entry in fixture("kv-records.json") {
        let bucket = entry["bucket"].as_str().unwrap();
        let text = entry["value"].as_str().unwrap();
        let what = format!("{bucket}/{}", entry["key"].as_str().unwrap());
        match bucket {
            "UNIBUS_users" => round_trip::<User>(&what, text),
            "UNIBUS_devices" => round_trip::<Device>(&what, text),
            "UNIBUS_invites" => round_trip::<Invite>(&what, text),
            "UNIBUS_rooms" => round_trip::<Room>(&what, text),
            // unibusd's own records: checked in its store's unit tests.
            "UNIBUS_blocks" | "UNIBUS_memberships" => continue,
            other => panic!("unknown bucket {other}"),
        }
        *seen.entry(bucket.to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), 4, "every record bucket is covered: {seen:?}");
}

#[test]
fn replies_read_and_write_back_unchanged() {
    let replies = fixture("replies.json");
    assert_eq!(replies.len(), 10);
    for entry in replies {
        let subject = entry["subject"].as_str().unwrap();
        let text = entry["reply"].as_str().unwrap();
        match subject {
            "unibus.whoami" => round_trip::<AccountReply>(subject, text),
            "unibus.device.list" => reply_round_trip::<DeviceListReply>(subject, text),
            "unibus.user.lookup" => reply_round_trip::<LookupReply>(subject, text),
            "unibus.room.get" => round_trip::<RoomReply>(subject, text),
            "unibus.room.list" => round_trip::<RoomListReply>(subject, text),
            "unibus.block.list" => round_trip::<BlockListReply>(subject, text),
            "unibus.admin.user.list" => round_trip::<UserListReply>(subject, text),
            "unibus.admin.invite.list" => round_trip::<InviteListReply>(subject, text),
            "unibus.admin.invite.get" => round_trip::<InviteReply>(subject, text),
            "unibus.admin.user.get" => round_trip::<UserReply>(subject, text),
            other => panic!("unknown subject {other}"),
        }
    }
}

/// An account written before devices existed (no `devices`, no
/// `device_seq`) reads as one active device, its account key.
#[test]
fn an_account_from_before_devices_reads_as_one_device() {
    let key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let kex = "de8cf097557efb00558d832dd4826337c43c296a79297e5eb7661e0eaa1b2c3d";
    let text = format!(
        r#"{{"v":1,"sign_pub":"{key}","kex_pub":"{kex}","name":"old","role":"member","status":"active","created_at":"2025-01-02T03:04:05Z","invited_by":"bootstrap","invite_id":"{id}","updated_at":"2025-01-02T03:04:05Z"}}"#,
        id = "ab".repeat(32)
    );
    let user: User = serde_json::from_str(&text).unwrap();
    assert_eq!(user.devices.len(), 1);
    assert_eq!(user.devices[0].device.to_string(), key);
    assert_eq!(user.devices[0].added_by.to_string(), "invite");
    assert_eq!(user.device_seq, 1);
}
