//! Connect rate through the unibus auth callout against the baseline of the
//! same nats-server binary with a static nkey user, measured in one run.
//! `cargo bench --bench connect [-- --n 500 --json]`.

use std::time::{Duration, Instant};

use unibus::client::{self, Client, Identity};
use unibus::config::Settings;
use unibus::natsserver::{self, NatsServer, ServerSpec};
use unibus::secrets::Secrets;
use unibus::store::StoreConfig;

struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(url: &str, n: usize, parallel: usize) -> Figures {
    let id = Identity::from_seed(SEED);
    for _ in 0..20 {
        drop(Client::connect(url, &id).await.expect("warm-up connect"));
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..parallel {
        let url = url.to_string();
        let opts_id = Identity::from_seed(SEED);
        let count = n / parallel + usize::from(w < n % parallel);
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let c = client::connect_options(&opts_id).connect(&url).await.expect("connect");
                lat.push(t.elapsed());
                drop(c);
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let total = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Figures { rate: n as f64 / total.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99) }
}

/// The benchmark identity's signing seed (fixed, so workers can rebuild it).
const SEED: [u8; 32] = [42u8; 32];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let n: usize = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let id = Identity::from_seed(SEED);

    // Baseline: same binary, a static nkey user, no callout.
    let base_dir = tempfile::tempdir().unwrap();
    let conf = base_dir.path().join("static.conf");
    std::fs::write(&conf, format!("accounts {{ APP {{ users: [ {{ nkey: {} }} ] }} }}\n", id.nkey_public()))
        .unwrap();
    let static_server = NatsServer::start(&ServerSpec {
        binary: natsserver::find_binary().expect("nats-server"),
        config: conf,
        port: natsserver::free_port(),
        name: "static".into(),
        env: vec![],
        args: vec![],
        log_file: None,
    })
    .await
    .expect("static server");

    // unibus: callout with xkey, the identity registered as a member.
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::generate();
    let spec = natsserver::unibus_spec(dir.path(), &secrets, true, natsserver::free_port(), "bench").unwrap();
    let server = NatsServer::start(&spec).await.expect("unibus server");
    let settings = Settings {
        nats_urls: vec![server.url.parse().unwrap()],
        secrets,
        xkey: true,
        store: StoreConfig::default(),
        user_jwt_ttl: Duration::from_secs(3600),
    };
    let running = unibus::daemon::start(&settings).await.expect("unibusd");
    let (_, token) = running.store.bootstrap_admin_invite(600).await.unwrap();
    Client::connect(&server.url, &id).await.unwrap().register(&token.to_hex(), None).await.unwrap();

    let mut rows = Vec::new();
    for parallel in [1usize, 8] {
        let base = measure(&static_server.url, n, parallel).await;
        let callout = measure(&server.url, n, parallel).await;
        rows.push((parallel, base, callout));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, b, c)| {
                serde_json::json!({"connectors": p, "n": n,
                "static_nkey": {"connects_per_s": b.rate, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms},
                "unibus_callout_xkey": {"connects_per_s": c.rate, "p50_ms": c.p50_ms, "p99_ms": c.p99_ms},
                "ratio": c.rate / b.rate})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!("connects (n = {n} per row, nats-server via {:?})", natsserver::find_binary().unwrap());
        println!(
            "{:<11} {:>14} {:>9} {:>9} | {:>14} {:>9} {:>9} | {:>6}",
            "connectors", "static/s", "p50 ms", "p99 ms", "callout/s", "p50 ms", "p99 ms", "ratio"
        );
        for (p, b, c) in &rows {
            println!(
                "{:<11} {:>14.0} {:>9.2} {:>9.2} | {:>14.0} {:>9.2} {:>9.2} | {:>5.2}x",
                p,
                b.rate,
                b.p50_ms,
                b.p99_ms,
                c.rate,
                c.p50_ms,
                c.p99_ms,
                c.rate / b.rate
            );
        }
    }
    running.stop().await;
    server.stop().await;
    static_server.stop().await;
}
