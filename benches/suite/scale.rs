//! Scale figures: the callout decision (in process) and the RSS of a
//! separate unibusd process, with 100 and with 100,000 users.

use std::time::{Duration, Instant};

use ed25519_dalek::Signer as _;
use serde_json::json;
use unibus::{Client, Identity};
use unibus_proto::records::Role;
use unibus_proto::wire::UserListRequest;
use unibusd::secrets::Secrets;
use unibusd::store::{Store, StoreConfig};

use super::{Lat, rss_mib, seed_users, unibus_server, user_record};

async fn decisions(store: &Store, secrets: &Secrets, id: &Identity, n: usize) -> Lat {
    let callout = unibusd::callout::Callout {
        penalties: Default::default(),
        issuer: nkeys::KeyPair::from_seed(&secrets.issuer.seed().unwrap()).unwrap(),
        xkey: None,
        store: store.clone(),
        user_jwt_ttl: Duration::from_secs(60),
        latency: Default::default(),
        revoked_denials: Default::default(),
    };
    let (_, raw) = nkeys::decode_seed(&id.nkey_seed()).unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&raw);
    let nonce = "YmVuY2htYXJrLW5vbmNl";
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sk.sign(nonce.as_bytes()).to_bytes(),
    );
    let req: unibusd::callout::claims::RequestClaims = serde_json::from_value(json!({
        "iss": "N", "sub": "A", "aud": "nats-authorization-request", "exp": 0,
        "nats": {"type": "authorization_request", "user_nkey": "U", "server_id": {"id": "N"},
                 "client_info": {"nonce": nonce}, "connect_opts": {"nkey": id.nkey_public(), "sig": sig}}
    }))
    .unwrap();
    for _ in 0..50 {
        callout.decide(&req).await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let v = callout.decide(&req).await;
        lat.push(t.elapsed());
        assert!(matches!(v, unibusd::callout::Verdict::Allow { role: Some(_), .. }));
    }
    Lat(lat)
}

/// Runs the scale measurements on a fresh stack: `decisions` timed callout
/// decisions with 100 users, then with `users`.
pub async fn run(users: usize, decisions_per_figure: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::generate();
    let server = unibus_server(dir.path(), &secrets).await;
    let env_file = dir.path().join("keys.env");
    secrets.write_new(&env_file).unwrap();
    // The `unibusd` binary is its own package (crates/unibusd-bin): built
    // here when missing or stale.
    let binary =
        unibus_devkit::built::path(unibus_devkit::built::UNIBUSD).await.unwrap_or_else(|e| panic!("{e}"));
    let mut unibusd = tokio::process::Command::new(binary)
        .args(["run", "--nats-url", &server.url, "--secrets"])
        .arg(&env_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("unibusd");
    let pid = unibusd.id().unwrap();
    let svc = async_nats::ConnectOptions::with_nkey(secrets.service.seed().unwrap())
        .connect(&server.url)
        .await
        .unwrap();
    let store = Store::open(svc.clone(), &StoreConfig::default()).await.unwrap();
    // Wait for unibusd to answer.
    for _ in 0..100 {
        if svc.request("$SRV.PING.unibus", "".into()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (admin_id, member) = (Identity::generate(), Identity::generate());
    store.add_account(&user_record(&admin_id, Role::Admin)).await.unwrap();
    store.add_account(&user_record(&member, Role::Member)).await.unwrap();
    seed_users(&store, 98).await;
    let admin = Client::connect(&server.url, &admin_id).await.unwrap();
    let mut out = serde_json::Map::new();
    for target in [100, users] {
        let have = 100;
        if target > have {
            seed_users(&store, target - have).await;
        }
        // The external unibusd's index is current after a listing.
        admin.list_users(&UserListRequest { limit: Some(1), ..Default::default() }).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut d = decisions(&store, &secrets, &member, decisions_per_figure).await;
        out.insert(
            target.to_string(),
            json!({"decision_p50_ms": d.pct(0.5), "decision_p99_ms": d.pct(0.99), "rss_mib": rss_mib(pid)}),
        );
    }
    let _ = unibusd.kill().await;
    server.stop().await;
    serde_json::Value::Object(out)
}

/// Prints the section (`users`: the large figure's count).
pub fn print(s: &serde_json::Value, users: usize) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!("\nscale (callout decision in process; unibusd RSS as a separate process)");
    let large = users.to_string();
    for k in ["100", large.as_str()] {
        let v = &s[k];
        println!(
            "{:>7} users: decision p50/p99 {:.3}/{:.3} ms   unibusd RSS {:.1} MiB",
            k,
            f(&v["decision_p50_ms"]),
            f(&v["decision_p99_ms"]),
            f(&v["rss_mib"])
        );
    }
    // "100k" as the figure has always been labelled.
    let label = if users.is_multiple_of(1000) { format!("{}k", users / 1000) } else { large.clone() };
    println!(
        "decision ratio {label}/100 (p50): {:.2}x",
        f(&s[large.as_str()]["decision_p50_ms"]) / f(&s["100"]["decision_p50_ms"]).max(1e-9)
    );
}
