//! Admin endpoints: invites and users listed, read and changed, with
//! filters, pagination, audit fields and every error code; and the micro
//! service's discovery and statistics.

use crate::support::as_key;
use unibus::Identity;
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{InviteStatus, Role, UserStatus};
use unibus_proto::subjects;
use unibus_proto::wire::{InviteCreateRequest, InviteListRequest, UserListRequest};

use crate::support::{Stack, code};

/// invite.list (filters, pages, no tokens), invite.get and invite.cancel
/// with their audit fields and error codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_endpoints() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let me = admin.sign_pub().to_string();
    let used = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let redeemer = Identity::generate();
    stack.connect(&redeemer).await.unwrap().register(&used.token, None).await.unwrap();
    let cancelled = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let pending = admin
        .create_invite(&InviteCreateRequest { note: Some("for zoe".into()), ..Default::default() })
        .await
        .unwrap();
    let (expired, _) = stack
        .store()
        .create_invite(Role::Member, String::new(), unibus_proto::Actor::Key(as_key(&me)), 0)
        .await
        .unwrap();

    // cancel: audit fields; idempotent; used -> invite_used; unknown -> not_found.
    let c = admin.cancel_invite(&cancelled.invite.id).await.unwrap();
    assert_eq!(c.status, InviteStatus::Cancelled);
    assert_eq!(c.cancelled_by.map(|k| k.to_string()).as_deref(), Some(me.as_str()));
    let again = admin.cancel_invite(&cancelled.invite.id).await.unwrap();
    assert_eq!(again.cancelled_at, c.cancelled_at);
    assert_eq!(admin.cancel_invite(&expired.id).await.unwrap().status, InviteStatus::Expired);
    assert_eq!(code(admin.cancel_invite(&used.invite.id).await), "invite_used");
    assert_eq!(code(admin.cancel_invite(&"ab".repeat(32)).await), "not_found");
    assert_eq!(code(admin.cancel_invite("xyz").await), "bad_request");

    // get: computed status and audit fields.
    let u = admin.get_invite(&used.invite.id.to_uppercase()).await.unwrap();
    assert_eq!(u.status, InviteStatus::Used);
    assert_eq!(u.used_by.map(|k| k.to_string()).as_deref(), Some(redeemer.sign_pub_hex().as_str()));
    assert!(u.used_at.is_some() && u.completed);
    assert_eq!(u.created_by, me);
    assert_eq!(admin.get_invite(&expired.id).await.unwrap().status, InviteStatus::Expired);
    assert_eq!(code(admin.get_invite(&InviteToken::generate().id()).await), "not_found");

    // list by status.
    for (status, want) in [
        (InviteStatus::Used, vec![&used.invite.id]),
        (InviteStatus::Cancelled, vec![&cancelled.invite.id]),
        (InviteStatus::Pending, vec![&pending.invite.id]),
        (InviteStatus::Expired, vec![&expired.id]),
    ] {
        let page = admin
            .list_invites(&InviteListRequest { status: Some(status), ..Default::default() })
            .await
            .unwrap();
        let got: Vec<&unibus_proto::InviteId> = page.invites.iter().map(|i| &i.id).collect();
        // the first-admin invite is used too
        let got: Vec<&unibus_proto::InviteId> =
            got.into_iter().filter(|id| want.contains(id) || status != InviteStatus::Used).collect();
        assert_eq!(got, want, "{status:?}");
        assert!(page.invites.iter().all(|i| i.status == status));
    }

    // pages of one through all five, and no token anywhere.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let raw = admin
            .call_raw(
                subjects::ADMIN_INVITE_LIST,
                serde_json::to_vec(&InviteListRequest {
                    limit: Some(2),
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .unwrap(),
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&raw.payload).to_string();
        for t in [&used.token, &cancelled.token, &pending.token] {
            assert!(!text.contains(t.as_str()), "token in a listing");
        }
        assert!(!text.contains("\"token\""));
        let page: unibus_proto::wire::InviteListReply = serde_json::from_str(&text).unwrap();
        assert!(page.invites.len() <= 2);
        seen.extend(page.invites.into_iter().map(|i| i.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "bootstrap + four");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "key order, no repeats");

    // Cursors: forged, or from another filter, are bad_request.
    let first =
        admin.list_invites(&InviteListRequest { limit: Some(1), ..Default::default() }).await.unwrap();
    let other_filter =
        InviteListRequest { status: Some(InviteStatus::Pending), limit: Some(1), cursor: first.next };
    assert_eq!(code(admin.list_invites(&other_filter).await), "bad_request");
    let forged = InviteListRequest {
        cursor: Some("dXNlcnMKCmFi.AAAAAAAAAAAAAAAAAAAAAA".into()),
        ..Default::default()
    };
    assert_eq!(code(admin.list_invites(&forged).await), "bad_request");
    assert_eq!(
        code(admin.list_invites(&InviteListRequest { limit: Some(1001), ..Default::default() }).await),
        "bad_request"
    );
}

/// user.list (filters, pages), user.get, user.lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_endpoints() {
    let stack = Stack::start_without_xkey().await;
    let (_a, admin) = stack.admin().await;
    let mut members = Vec::new();
    for i in 0..5 {
        let (id, c) = stack.user(&admin, Role::Member, &format!("m{i}")).await;
        drop(c);
        members.push(id);
    }
    admin.revoke_user(&members[0].sign_pub_hex()).await.unwrap();
    admin.revoke_user(&members[1].sign_pub_hex()).await.unwrap();

    let all = collect_users(&admin, None, 2).await;
    assert_eq!(all.len(), 6);
    let revoked = collect_users(&admin, Some(UserStatus::Revoked), 1).await;
    let mut want = vec![members[0].sign_pub_hex(), members[1].sign_pub_hex()];
    want.sort();
    assert_eq!(revoked, want);
    assert_eq!(collect_users(&admin, Some(UserStatus::Active), 1000).await.len(), 4);

    let u = admin.get_user(&members[2].sign_pub_hex().to_uppercase()).await.unwrap();
    assert_eq!((u.name.as_str(), u.invited_by.to_string().as_str()), ("m2", admin.sign_pub()));
    assert_eq!(code(admin.get_user(&Identity::generate().sign_pub_hex()).await), "not_found");
    assert_eq!(code(admin.get_user("00").await), "bad_request");
    assert_eq!(code(admin.revoke_user(&Identity::generate().sign_pub_hex()).await), "not_found");
    assert_eq!(code(admin.restore_user(&Identity::generate().sign_pub_hex()).await), "not_found");

    // lookup: any active user may; a revoked one shows its status.
    let (_m, member) = stack.user(&admin, Role::Member, "looker").await;
    let r = member.lookup(&members[0].sign_pub_hex()).await.unwrap();
    assert_eq!(r.status, UserStatus::Revoked);
    assert_eq!(r.kex_pub, Some(members[0].kex_key()));
    assert_eq!(code(member.lookup(&Identity::generate().sign_pub_hex()).await), "not_found");
}

async fn collect_users(
    admin: &unibus::Client,
    status: Option<UserStatus>,
    limit: u64,
) -> Vec<unibus_proto::Key> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = admin.list_users(&UserListRequest { status, limit: Some(limit), cursor }).await.unwrap();
        assert!(page.users.len() as u64 <= limit);
        out.extend(page.users.into_iter().map(|u| u.sign_pub));
        match page.next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
}

/// Every admin endpoint answers `forbidden` to an admin that was revoked
/// while its connection was still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_admin_is_forbidden_everywhere() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (ops, ops_c) = stack.user(&admin, Role::Admin, "ops").await;
    let (victim, _v) = stack.user(&admin, Role::Member, "victim").await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    // Revoked in the store directly: no kick, the connection stays.
    stack
        .store()
        .set_user_status(
            ops.sign_key(),
            UserStatus::Revoked,
            unibus_proto::Actor::Key(as_key(admin.sign_pub())),
        )
        .await
        .unwrap();
    let v = victim.sign_pub_hex();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (subjects::ADMIN_INVITE_CREATE, serde_json::json!({})),
        (subjects::ADMIN_INVITE_LIST, serde_json::json!({})),
        (subjects::ADMIN_INVITE_GET, serde_json::json!({"id": inv.invite.id})),
        (subjects::ADMIN_INVITE_CANCEL, serde_json::json!({"id": inv.invite.id})),
        (subjects::ADMIN_USER_LIST, serde_json::json!({})),
        (subjects::ADMIN_USER_GET, serde_json::json!({"sign_pub": v})),
        (subjects::ADMIN_USER_REVOKE, serde_json::json!({"sign_pub": v})),
        (subjects::ADMIN_USER_RESTORE, serde_json::json!({"sign_pub": v})),
        (subjects::ADMIN_USER_DELETE, serde_json::json!({"sign_pub": v})),
        (subjects::WHOAMI, serde_json::json!({})),
        (subjects::USER_LOOKUP, serde_json::json!({"sign_pub": v})),
        (subjects::ROOM_CREATE, serde_json::json!({"name": "x"})),
        (subjects::ROOM_LIST, serde_json::json!({})),
    ];
    let before = stack.kv_snapshot().await;
    for (subject, body) in cases {
        let r = ops_c.call::<_, serde_json::Value>(subject, &body).await;
        assert_eq!(code(r), "forbidden", "{subject}");
    }
    assert_eq!(stack.kv_snapshot().await, before);
}

/// `$SRV.INFO` lists every endpoint; `$SRV.STATS` counts requests and
/// errors; `$SRV.PING` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_service_discovery_and_stats() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    admin.whoami().await.unwrap();
    assert_eq!(code(admin.get_user("nope").await), "bad_request");
    // The typed client refuses a malformed key before sending; the service
    // counts the one that reaches it raw.
    let nope = serde_json::json!({"sign_pub": "nope"});
    let raw = admin.call::<_, serde_json::Value>(subjects::ADMIN_USER_GET, &nope).await;
    assert_eq!(code(raw), "bad_request");
    let svc = stack.service_nats().await;

    let ping: serde_json::Value =
        serde_json::from_slice(&svc.request("$SRV.PING.unibus", "".into()).await.unwrap().payload).unwrap();
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    let id = ping["id"].as_str().unwrap().to_string();

    let info: serde_json::Value =
        serde_json::from_slice(&svc.request("$SRV.INFO.unibus", "".into()).await.unwrap().payload).unwrap();
    assert_eq!(info["name"], "unibus");
    let endpoints: Vec<String> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    for s in unibus_proto::endpoint::SUBJECTS {
        assert!(endpoints.contains(&s.to_string()), "{s} missing from $SRV.INFO");
    }
    assert_eq!(endpoints.len(), unibus_proto::endpoint::SUBJECTS.len());

    let stats: serde_json::Value = serde_json::from_slice(
        &svc.request(format!("$SRV.STATS.unibus.{id}"), "".into()).await.unwrap().payload,
    )
    .unwrap();
    let ep = |subject: &str| {
        stats["endpoints"].as_array().unwrap().iter().find(|e| e["subject"] == subject).unwrap().clone()
    };
    assert!(ep(subjects::WHOAMI)["num_requests"].as_u64().unwrap() >= 1);
    assert_eq!(ep(subjects::WHOAMI)["num_errors"], 0);
    assert_eq!(ep(subjects::ADMIN_USER_GET)["num_requests"], 1);
    assert_eq!(ep(subjects::ADMIN_USER_GET)["num_errors"], 1);
    assert!(ep(subjects::ADMIN_USER_GET)["last_error"].as_str().unwrap().starts_with("bad_request"));
}

/// A users bucket created elsewhere with direct gets on (reads from any
/// replica, possibly stale) is reconfigured to `allow_direct: false` when
/// unibusd opens the store, and its records stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_bucket_with_direct_gets_is_reconfigured() {
    use unibusd::store::{Store, StoreConfig, bucket_stream_config};
    let stack = Stack::start_server_only_without_xkey().await;
    let js = stack.jetstream().await;
    let mut config = bucket_stream_config(subjects::BUCKET_USERS, &StoreConfig::default());
    config.allow_direct = true;
    js.create_stream(config).await.unwrap();
    let kv = js.get_key_value(subjects::BUCKET_USERS).await.unwrap();
    let alice = Identity::generate();
    let user = unibus_proto::records::User::new_active(
        unibus_proto::records::Device::first(alice.sign_key(), alice.kex_key(), None),
        "alice",
        Role::Member,
        unibus_proto::Actor::Bootstrap,
        unibus_proto::InviteId::parse(&"00".repeat(32)).unwrap(),
    );
    kv.create(alice.sign_pub_hex(), serde_json::to_vec(&user).unwrap().into()).await.unwrap();
    let direct = |js: async_nats::jetstream::Context| async move {
        let mut s = js.get_stream(format!("KV_{}", subjects::BUCKET_USERS)).await.unwrap();
        let c = s.info().await.unwrap().config.clone();
        (c.allow_direct, c.mirror_direct)
    };
    assert_eq!(direct(js.clone()).await, (true, false));

    let store = Store::open(stack.service_nats().await, &StoreConfig::default()).await.unwrap();
    assert_eq!(direct(js.clone()).await, (false, false), "still serving direct gets");
    let (read, _) = store.get_user(alice.sign_key()).await.unwrap().expect("record kept");
    assert_eq!(read.name, "alice");
}
