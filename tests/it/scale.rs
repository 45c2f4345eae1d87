//! Scale: listings over 100,000 users, and a storm of revoked clients that
//! must not slow anyone else down nor hit the store for each denial.
//! Timings are printed for whoever reads the test output, never asserted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use unibus::{Client, Identity};
use unibus_proto::records::{Role, User, UserStatus};
use unibus_proto::wire::UserListRequest;

use crate::support::{SIGNED_DENIAL, Stack};

fn record(id: &Identity, status: UserStatus) -> User {
    let name = &id.sign_pub_hex()[..8];
    let mut u = User::new_active(
        unibus_proto::records::Device::first(id.sign_key(), id.kex_key(), None),
        name,
        Role::Member,
        unibus_proto::Actor::Bootstrap,
        unibus_proto::InviteId::parse(&"5e".repeat(32)).unwrap(),
    );
    u.status = status;
    u
}

/// Seeds `n` user records (random keys) straight into KV.
async fn seed(stack: &Stack, n: usize, status: UserStatus) -> Vec<Identity> {
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let store = stack.store();
    let results: Vec<_> = futures::stream::iter(ids.iter().map(|id| {
        let user = record(id, status);
        async move { store.add_user(&user).await }
    }))
    .buffer_unordered(256)
    .collect()
    .await;
    assert!(results.iter().all(|r| r.is_ok()));
    ids
}

/// Times the callout's decision (nonce signature check, revoked check,
/// leader read of the user, rooms index sync) for `id`, in process.
async fn decision_times(stack: &Stack, id: &Identity, n: usize) -> Vec<Duration> {
    use ed25519_dalek::Signer as _;
    let callout = unibusd::callout::Callout {
        penalties: Default::default(),
        issuer: nkeys::KeyPair::from_seed(&stack.secrets.issuer.seed().unwrap()).unwrap(),
        xkey: None,
        store: stack.store().clone(),
        user_jwt_ttl: Duration::from_secs(60),
        latency: Default::default(),
        revoked_denials: Default::default(),
    };
    let sk = ed25519_dalek::SigningKey::from_bytes(&hex_seed(id));
    let nonce = "bmV2ZXItdGhlLXNhbWUtbm9uY2U";
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sk.sign(nonce.as_bytes()).to_bytes(),
    );
    let req: unibusd::callout::claims::RequestClaims = serde_json::from_value(serde_json::json!({
        "iss": "N", "sub": "A", "aud": "nats-authorization-request", "exp": 0,
        "nats": {"type": "authorization_request", "user_nkey": "U", "server_id": {"id": "N"},
                 "client_info": {"nonce": nonce}, "connect_opts": {"nkey": id.nkey_public(), "sig": sig}}
    }))
    .unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let verdict = callout.decide(&req).await;
        out.push(t.elapsed());
        assert!(matches!(verdict, unibusd::callout::Verdict::Allow { role: Some(_), .. }), "{verdict:?}");
    }
    out
}

fn hex_seed(id: &Identity) -> [u8; 32] {
    let (_, raw) = nkeys::decode_seed(&id.nkey_seed()).unwrap();
    raw
}

async fn connect_times(url: &str, id: &Identity, n: usize, pause: Duration) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let c = Client::connect(url, id).await.unwrap_or_else(|e| panic!("an active user must connect: {e}"));
        out.push(t.elapsed());
        drop(c);
        tokio::time::sleep(pause).await;
    }
    out
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

/// 100,000 users: `admin.user.list` pages through all of them; the connect
/// (callout decision) times with 100 and with 100,000 users are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_users_page_through() {
    let _heavy = crate::support::HEAVY.lock().await;
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (member, m) = stack.user(&admin, Role::Member, "probe").await;
    drop(m);
    seed(&stack, 98, UserStatus::Active).await;
    let mut small = connect_times(&stack.url, &member, 100, Duration::ZERO).await;
    let mut small_decide = decision_times(&stack, &member, 500).await;

    let t = Instant::now();
    seed(&stack, 100_000 - 100, UserStatus::Active).await;
    let seeded_in = t.elapsed();
    let mut large = connect_times(&stack.url, &member, 100, Duration::ZERO).await;
    let mut large_decide = decision_times(&stack, &member, 500).await;

    let t = Instant::now();
    let (mut total, mut pages, mut cursor, mut last_key) =
        (0usize, 0usize, None, unibus_proto::Key::from_bytes([0; 32]));
    loop {
        let page =
            admin.list_users(&UserListRequest { status: None, limit: Some(1000), cursor }).await.unwrap();
        pages += 1;
        for u in &page.users {
            assert!(u.sign_pub > last_key, "key order, no repeats");
            last_key = u.sign_pub;
        }
        total += page.users.len();
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(total, 100_000);
    println!(
        "scale: seeded 99,900 users in {:.1} s; listed {total} users in {pages} pages in {:.1} s; \
         connect p50/p99 with 100 users {:.2}/{:.2} ms, with 100,000 users {:.2}/{:.2} ms; \
         callout decision p50/p99 with 100 users {:.3}/{:.3} ms, with 100,000 users {:.3}/{:.3} ms",
        seeded_in.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        pct(&mut small, 0.5),
        pct(&mut small, 0.99),
        pct(&mut large, 0.5),
        pct(&mut large, 0.99),
        pct(&mut small_decide, 0.5),
        pct(&mut small_decide, 0.99),
        pct(&mut large_decide, 0.5),
        pct(&mut large_decide, 0.99),
    );
}

/// 200 clients of revoked keys reconnect in a loop for 30 s: the storm
/// really happens (every revoked key is refused, by a signed denial, at
/// least twice: its first connect and a retry, counted from the server's
/// auth-error advisories), an active user's connect succeeds every time,
/// and the denials cost (almost) no store requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_reconnect_storm_does_not_hurt_others() {
    let _heavy = crate::support::HEAVY.lock().await;
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (member, m) = stack.user(&admin, Role::Member, "steady").await;
    drop(m);
    let revoked = seed(&stack, 200, UserStatus::Revoked).await;
    // Let the index see them (as it would after any revoke).
    stack.store().list_users_page(None, None, 1).await.unwrap();
    let mut quiet = connect_times(&stack.url, &member, 50, Duration::from_millis(20)).await;

    let js = stack.jetstream().await;
    let mut errors = stack.auth_errors().await;
    let api_before = js.query_account().await.unwrap().requests.total;
    let mut stormers = Vec::new();
    for id in &revoked {
        let opts = unibus::connect_options(id).retry_on_initial_connect();
        stormers.push(opts.connect(&stack.url).await.unwrap());
    }
    let storm_for = Duration::from_secs(30);
    let started = Instant::now();
    let mut during = Vec::new();
    while started.elapsed() < storm_for {
        during.extend(connect_times(&stack.url, &member, 10, Duration::from_millis(50)).await);
    }
    let api_after = js.query_account().await.unwrap().requests.total;
    drop(stormers);
    // Count the storm's denials: one advisory per refused connect, each a
    // signed denial naming a revoked key.
    let revoked_keys: HashSet<String> = revoked.iter().map(|id| id.sign_pub_hex()).collect();
    let mut denials: HashMap<String, usize> = HashMap::new();
    while let Some(reason) = errors.next_reason(Duration::from_secs(1)).await {
        let key = reason
            .strip_prefix(SIGNED_DENIAL)
            .and_then(|r| r.strip_prefix("user "))
            .and_then(|r| r.strip_suffix(" is revoked"))
            .unwrap_or_else(|| panic!("not a signed denial of a revoked key: {reason:?}"));
        assert!(revoked_keys.contains(key), "denied a key outside the storm: {key}");
        *denials.entry(key.to_string()).or_default() += 1;
    }
    let total: usize = denials.values().sum();
    assert_eq!(denials.len(), revoked.len(), "some revoked clients were never refused");
    assert!(denials.values().all(|n| *n >= 2), "some revoked client did not retry: {denials:?}");
    // Each active connect of a known device costs two store requests (the
    // leader probes of the users and rooms indexes; its device record is
    // already in the devices index); the storm's hundreds of denials cost
    // none.
    let api_used = api_after - api_before - 1;
    let active = during.len() as u64;
    assert!(
        api_used <= active * 2 + 20,
        "store requests {api_used} for {active} active connects: denials hit the store"
    );
    println!(
        "storm: {} revoked clients for {} s, {total} signed denials; active connect p50/p99 without storm {:.2}/{:.2} ms, during storm {:.2}/{:.2} ms ({} connects, all succeeded); store API requests {api_used}",
        revoked.len(),
        storm_for.as_secs(),
        pct(&mut quiet, 0.5),
        pct(&mut quiet, 0.99),
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        during.len(),
    );
}
