//! Replies aimed at another user's subjects: a cast (bob with a room,
//! alice, mallory with a revoked device), mallory's reflections of
//! unibusd's replies onto bob's DM, room and notice subjects, and the wire
//! view that shows them arriving there.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, Identity};
use unibus_proto::records::Role;
use unibus_proto::subjects;

use super::raw::Raw;
use super::stack::Stack;

/// Bob (owning a room) and mallory (a member with a revoked second
/// device), both connected, plus an alice to send bob real messages.
pub struct Cast {
    pub bob_id: Identity,
    pub bob: Client,
    pub room: unibus_proto::RoomId,
    pub alice: Client,
    pub mallory_id: Identity,
    /// Mallory's revoked device.
    pub revoked: String,
}

impl Cast {
    pub async fn new(stack: &Stack) -> Cast {
        let (_a, admin) = stack.admin().await;
        let (bob_id, bob, room) = stack.room_owner(&admin, "bob", "bob's room").await;
        let (_alice_id, alice) = stack.user(&admin, Role::Member, "alice").await;
        let (mallory_id, mallory) = stack.user(&admin, Role::Member, "mallory").await;
        let spare = Identity::generate().with_account(&mallory_id.sign_pub_hex()).unwrap();
        mallory.add_device(&spare.bundle(Some("spare"))).await.unwrap();
        let revoked = spare.sign_pub_hex();
        mallory.revoke_device(&revoked).await.unwrap();
        Cast { bob_id, bob, room: room.id, alice, mallory_id, revoked }
    }

    fn account(&self) -> String {
        self.bob_id.sign_pub_hex()
    }

    /// Bob's subjects that the reflections aim at, in the order of
    /// [`Cast::reflect_all`].
    pub fn targets(&self) -> [String; 5] {
        let bob = self.account();
        [
            subjects::dm(&bob),
            subjects::room_msg(&self.room),
            subjects::device_notice(&bob),
            subjects::revoked_notice(&bob),
            subjects::device_notice(&bob),
        ]
    }

    /// A plain subscriber as bob on every target subject: the wire view.
    pub async fn wire(&self, stack: &Stack) -> Wire {
        let conn = async_nats::ConnectOptions::with_nkey(self.bob_id.nkey_seed())
            .custom_inbox_prefix(subjects::inbox_prefix(&self.bob_id.sign_pub_hex()))
            .connect(&stack.url)
            .await
            .unwrap();
        let [dm, room, devices, revoked, _] = self.targets();
        let mut subs = futures::stream::SelectAll::new();
        for subject in [dm, room, devices, revoked] {
            subs.push(conn.subscribe(subject).await.unwrap());
        }
        conn.flush().await.unwrap();
        Wire { _conn: conn, subs }
    }

    /// Mallory's `unibus.register {}` aimed at each of bob's DM, room,
    /// devices-notice and revoked-notice subjects, then her revoke of her
    /// revoked device aimed at bob's devices-notice subject; each by a raw
    /// client, so the reply subject is exactly the one chosen. (A guest
    /// cannot do this: its replies stay in account GUEST, see
    /// `reflect::a_guests_reply_never_reaches_a_member`.)
    pub async fn reflect_all(&self, stack: &Stack) {
        let mut mallory = Raw::connect(&stack.url, &self.mallory_id).await.unwrap();
        let targets = self.targets();
        for reply in &targets[..4] {
            mallory.hpub(subjects::REGISTER, reply, b"NATS/1.0\r\n\r\n", b"{}").await.unwrap();
        }
        let body = serde_json::json!({ "device": self.revoked }).to_string();
        mallory
            .hpub(subjects::DEVICE_REVOKE, &targets[4], b"NATS/1.0\r\n\r\n", body.as_bytes())
            .await
            .unwrap();
        mallory.ping().await.unwrap();
    }
}

/// The wire view: bob's target subjects as any subscriber sees them.
pub struct Wire {
    _conn: async_nats::Client,
    pub subs: futures::stream::SelectAll<async_nats::Subscriber>,
}

/// Asserts that the wire view saw the five reflections: mallory's four
/// error replies (with the service error headers) and her revoke reply
/// (her revoked device's record) on bob's devices-notice subject.
pub async fn expect_reflections_on_the_wire(wire: &mut Wire, cast: &Cast) {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), wire.subs.next()).await;
        seen.push(m.expect("a reflected reply within 5 s").expect("wire open"));
    }
    let mut subjects_seen: Vec<String> = seen.iter().map(|m| m.subject.to_string()).collect();
    let mut want = cast.targets().to_vec();
    subjects_seen.sort();
    want.sort();
    assert_eq!(subjects_seen, want, "every reflection landed where it was aimed");
    let is_error = |m: &async_nats::Message| {
        m.headers.as_ref().is_some_and(|h| h.get(subjects::HDR_SERVICE_ERROR_CODE).is_some())
    };
    let errors = seen.iter().filter(|m| {
        is_error(m)
            && serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["error"]["code"]
                == "bad_request"
    });
    assert_eq!(errors.count(), 4, "mallory's four error replies");
    let revoke = seen.iter().find(|m| !is_error(m)).expect("the revoke reply");
    assert_eq!(revoke.subject.as_str(), subjects::device_notice(&cast.account()));
    let revoke: serde_json::Value = serde_json::from_slice(&revoke.payload).unwrap();
    assert_eq!(revoke["device"]["device"], cast.revoked.as_str(), "mallory's device, on bob's subject");
    assert_eq!(revoke["device"]["status"], "revoked");
    for m in &seen {
        let notice = m.headers.as_ref().and_then(|h| h.get(subjects::HDR_NOTICE));
        assert!(notice.is_none(), "a reply never carries the notice header");
    }
}
