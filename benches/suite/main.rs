//! The unibus benchmark suite: every figure beside a baseline measured in
//! the same run, on servers this binary starts on 127.0.0.1.
//! `cargo bench --bench suite [-- --n 500 --json]` (`-- --only mail`: that
//! section alone; `-- --only admission`: connects, register and device add
//! alone, as JSON).
//!
//! Quick mode (`-- --quick`, or `UNIBUS_BENCH_QUICK=1` in the environment):
//! every section with small counts ([`plan::Plan`]), for CI. Its figures
//! mean nothing; what it shows is that each one can be produced. In either
//! mode the run exits non-zero when a figure could not be produced: a
//! section that fails (panics), or a number in the report that is zero,
//! NaN or infinite ([`plan::missing`]).
//!
//! - connects/s through the callout (xkey on) vs static nkey users on the
//!   same nats-server binary, 1 and 8 connectors;
//! - callout time inside unibusd (open, verify, decide, sign, seal);
//! - `unibus.register` latency vs a floor (echo through the same import
//!   doing the same KV operations), and registrations/s with 64 clients;
//! - `unibus.device.add` with its signed device list vs a floor (echo
//!   doing the same KV operations);
//! - callout connects of a device of a 3-device account vs a one-device
//!   account, alternating rounds;
//! - other members' connects/s and decision p99 while one member floods
//!   (and reconnects in a loop once cut off) vs without, alternating rounds;
//! - `unibus.mail.send` p50 and throughput (1 and 64 senders) vs a floor
//!   (one KV create + one publish behind the same import), and catching up
//!   10,000 waiting messages vs reading them straight from the stream;
//! - callout decision time and unibusd RSS with 100 and 100,000 users.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use unibus::{Client, Event, Identity};
use unibus_devkit::natsserver::{self, NatsServer, ServerSpec};
use unibus_proto::records::{Role, User};
use unibus_proto::subjects;
use unibusd::config::Settings;
use unibusd::secrets::Secrets;
use unibusd::store::{Store, StoreConfig};

#[derive(Default)]
struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        self.0.sort();
        self.0[((self.0.len() as f64 * p) as usize).min(self.0.len() - 1)].as_secs_f64() * 1e3
    }
}

fn settings(url: &str, secrets: &Secrets) -> Settings {
    Settings {
        nats_urls: vec![url.parse().unwrap()],
        secrets: secrets.clone(),
        xkey: true,
        store: StoreConfig::default(),
        guest: Default::default(),
        callers: Default::default(),
        mail: Default::default(),
        user_jwt_ttl: Duration::from_secs(3600),
    }
}

async fn unibus_server(dir: &std::path::Path, secrets: &Secrets) -> NatsServer {
    let spec = natsserver::unibus_spec(dir, secrets, true, natsserver::free_port(), "bench").unwrap();
    NatsServer::start(&spec).await.expect("nats-server")
}

/// Connects per second and per-connect latency for `id`.
async fn connects(url: &str, seed: [u8; 32], n: usize, parallel: usize) -> (f64, Lat) {
    let id = Identity::from_seed(seed);
    for _ in 0..20 {
        drop(unibus::connect_options(&id).connect(url).await.expect("warm-up connect"));
    }
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..parallel {
        let (url, id) = (url.to_string(), Identity::from_seed(seed));
        let count = n / parallel + usize::from(w < n % parallel);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let c = unibus::connect_options(&id).connect(&url).await.expect("connect");
                lat.push(t.elapsed());
                drop(c);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    (n as f64 / start.elapsed().as_secs_f64(), Lat(lat))
}

fn user_record(id: &Identity, role: Role) -> User {
    User::new_active(
        unibus_proto::records::Device::first(
            id.sign_key(),
            id.kex_key(),
            Some(id.bind(&id.sign_pub_hex()).to_string()),
        ),
        &id.sign_pub_hex()[..8],
        role,
        unibus_proto::Actor::Bootstrap,
        unibus_proto::InviteId::parse(&"be".repeat(32)).unwrap(),
    )
}

async fn seed_users(store: &Store, n: usize) {
    let results: Vec<_> =
        futures::stream::iter((0..n).map(|_| async move {
            store.add_account(&user_record(&Identity::generate(), Role::Member)).await
        }))
        .buffer_unordered(256)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()), "seeding failed");
}

/// `n` connected guests, each with its own fresh invite token.
async fn guests(url: &str, store: &Store, n: usize) -> Vec<(Client, String)> {
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, token) = store
            .create_invite(Role::Member, String::new(), unibus_proto::Actor::Bootstrap, 600)
            .await
            .unwrap();
        jobs.push((Client::connect(url, &Identity::generate()).await.unwrap(), token.to_hex()));
    }
    jobs
}

/// A staying client coming back as a member: (time after the reply, client).
type Comeback = tokio::task::JoinHandle<(Duration, Client)>;

/// What one registration run measured.
struct Registrations {
    /// Registrations per second; with `stay`, the clock stops when every
    /// client is back as a member.
    rate: f64,
    /// Request latency (until the reply).
    reply: Lat,
    /// With `stay`: from the reply until the client is reconnected.
    member: Lat,
}

/// `n` guests each redeeming its own invite, `parallel` requests at a time.
/// Without `stay` a client leaves once answered, as `unibus register` does.
/// With `stay` it stays connected: the service kicks it after the reply
/// (`kick::REPLY_GRACE`) and it reconnects through the callout as a member.
async fn registrations(url: &str, store: &Store, n: usize, parallel: usize, stay: bool) -> Registrations {
    let jobs = guests(url, store, n).await;
    let start = Instant::now();
    let done: Vec<(Duration, Option<Comeback>)> =
        futures::stream::iter(jobs.into_iter().map(|(c, token)| async move {
            let mut events = c.events();
            let t = Instant::now();
            if let Err(e) = c.register(&token, None).await {
                panic!("register of {} failed: {e}", c.sign_pub());
            }
            let replied = Instant::now();
            let back = stay.then(|| {
                tokio::spawn(async move {
                    // Kicked, then back (the first `connected` seen may be
                    // the late event of the guest's own first connect).
                    let mut kicked = false;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                            Ok(Ok(Event::Disconnected)) => kicked = true,
                            Ok(Ok(Event::Connected)) if kicked => break,
                            Ok(_) => continue,
                            Err(_) => panic!("{} did not come back as a member", c.sign_pub()),
                        }
                    }
                    (replied.elapsed(), c)
                })
            });
            (replied - t, back)
        }))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut reply = Vec::with_capacity(n);
    let mut member = Vec::new();
    for (d, back) in done {
        reply.push(d);
        if let Some(back) = back {
            let (d, c) = back.await.unwrap();
            member.push(d);
            c.whoami().await.expect("reconnected as a member");
        }
    }
    Registrations { rate: n as f64 / start.elapsed().as_secs_f64(), reply: Lat(reply), member: Lat(member) }
}

/// Distinct invite keys of the floor (more than it is asked for).
const FLOOR_KEYS: usize = 1000;

/// The median of `v` (0 when empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// A floor server's service connection and store, with unibus's callout
/// answering its connects (floors differ only in their responder).
async fn floor_callout(url: &str, secrets: &Secrets) -> (async_nats::Client, Store) {
    let svc =
        async_nats::ConnectOptions::with_nkey(secrets.service.seed().unwrap()).connect(url).await.unwrap();
    let store = Store::open(svc.clone(), &StoreConfig::default()).await.unwrap();
    let callout = Arc::new(unibusd::callout::Callout {
        penalties: Default::default(),
        issuer: nkeys::KeyPair::from_seed(&secrets.issuer.seed().unwrap()).unwrap(),
        xkey: Some(unibusd::callout::sealing::Sealer::new(&secrets.xkey).unwrap()),
        store: store.clone(),
        user_jwt_ttl: Duration::from_secs(3600),
        latency: Default::default(),
        revoked_denials: Default::default(),
    });
    let auth = unibusd::callout::subscribe(&svc).await.unwrap();
    tokio::spawn(unibusd::callout::run(svc.clone(), auth, callout));
    svc.flush().await.unwrap();
    (svc, store)
}

/// The register floor: the callout for auth, and on `unibus.register` an
/// echo that does the same six KV operations as a redemption (read the
/// invite, CAS it used, create the device record, create the user, CAS the
/// invite completed, create version 1 of the device list in the history)
/// on a bucket made like unibus's, through the same APP -> AUTH import.
async fn floor(url: &str, secrets: &Secrets) -> Vec<u8> {
    let (svc, _store) = floor_callout(url, secrets).await;
    let js = async_nats::jetstream::new(svc.clone());
    js.create_stream(unibusd::store::bucket_stream_config("BENCH_floor", &StoreConfig::default()))
        .await
        .unwrap();
    let kv = js.get_key_value("BENCH_floor").await.unwrap();
    // One "invite" per request, made before any is timed.
    for i in 0..FLOOR_KEYS {
        kv.create(format!("i{i}"), "{}".into()).await.unwrap();
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sub = svc.queue_subscribe(subjects::REGISTER, "floor".into()).await.unwrap();
    let echo = svc.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let (kv, echo) = (kv.clone(), echo.clone());
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let k1 = format!("i{}", i % FLOOR_KEYS);
                let k2 = format!("u{}", rand::random::<u64>());
                let k3 = format!("d{}", rand::random::<u64>());
                let r = kv.entry(&k1).await.unwrap().unwrap().revision;
                let r = kv.update(&k1, msg.payload.clone(), r).await.unwrap();
                kv.create(&k3, msg.payload.clone()).await.unwrap();
                kv.create(&k2, msg.payload.clone()).await.unwrap();
                kv.update(&k1, msg.payload.clone(), r).await.unwrap();
                kv.create(format!("l{}", rand::random::<u64>()), msg.payload.clone()).await.unwrap();
                if let Some(reply) = msg.reply {
                    let _ = echo.publish(reply, msg.payload).await;
                }
            });
        }
    });
    svc.flush().await.unwrap();
    let client = Client::connect(url, &Identity::generate()).await.unwrap();
    let body = serde_json::to_vec(&json!({"invite": "x".repeat(64), "kex_pub": "y".repeat(64)})).unwrap();
    for _ in 0..20 {
        client.call_raw(subjects::REGISTER, body.clone()).await.unwrap();
    }
    body
}

/// Sequential `unibus.register` latency and its floor, measured in
/// alternating rounds so that both see the same machine: (register, floor).
/// Like each registering client, each floor request comes from a fresh
/// connection that leaves once answered.
async fn register_vs_floor(url: &str, store: &Store, floor_url: &str, body: &[u8], n: usize) -> (Lat, Lat) {
    let mut jobs = guests(url, store, n).await.into_iter();
    let mut floor_clients = Vec::with_capacity(n);
    for _ in 0..n {
        floor_clients.push(Client::connect(floor_url, &Identity::generate()).await.unwrap());
    }
    let mut floor_clients = floor_clients.into_iter();
    let (mut reg, mut fl) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let round = 25;
    let mut left = n;
    while left > 0 {
        left -= round.min(left);
        for c in floor_clients.by_ref().take(round) {
            let t = Instant::now();
            c.call_raw(subjects::REGISTER, body.to_vec()).await.unwrap();
            fl.push(t.elapsed());
        }
        for (c, token) in jobs.by_ref().take(round) {
            let t = Instant::now();
            c.register(&token, None).await.expect("register");
            reg.push(t.elapsed());
        }
    }
    (Lat(reg), Lat(fl))
}

/// One leader round trip as the callout makes it (`STREAM.INFO` of the
/// users bucket from unibusd's connection), sequentially: p50/p99 in ms.
async fn leader_round_trip(url: &str, secrets: &Secrets, trips: usize) -> serde_json::Value {
    let svc =
        async_nats::ConnectOptions::with_nkey(secrets.service.seed().unwrap()).connect(url).await.unwrap();
    let js = async_nats::jetstream::new(svc);
    let mut stream = js.get_stream(format!("KV_{}", subjects::BUCKET_USERS)).await.unwrap();
    let warm_up = trips / 10;
    let mut lat = Vec::with_capacity(trips);
    for i in 0..warm_up + trips {
        let t = Instant::now();
        stream.info().await.unwrap();
        if i >= warm_up {
            lat.push(t.elapsed());
        }
    }
    let mut lat = Lat(lat);
    json!({"p50_ms": lat.pct(0.5), "p99_ms": lat.pct(0.99)})
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

mod bare;
mod devadd;
mod devices;
mod flood;
mod mail;
mod plan;
mod scale;

/// The nats-server binary, found as the tests find it; when there is none,
/// the pinned one is installed first with `scripts/install-nats-server`
/// (idempotent, into `.tools/nats/`), as `scripts/test` does, so that the
/// bench runs on a fresh clone.
fn nats_server_or_install() -> std::path::PathBuf {
    if let Ok(binary) = natsserver::find_binary() {
        return binary;
    }
    let script = natsserver::find_in_project("scripts/install-nats-server")
        .expect("scripts/install-nats-server not found: run the bench inside the repository");
    eprintln!("nats-server not found; installing the pinned one with {}", script.display());
    let status = std::process::Command::new(&script)
        .stdout(std::io::stderr()) // stdout is the report (--json)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed ({status})", script.display());
    natsserver::find_binary().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let json_out = args.iter().any(|a| a == "--json");
    let plan = plan::Plan::from_args(&args);
    if plan.quick {
        eprintln!("quick mode: small counts, figures meaningless ({plan:?})");
    }
    let n = plan.n;
    let mut report = serde_json::Map::new();
    let binary = nats_server_or_install();
    // `--only mail`: that section alone (for working on it; the published
    // figures come from whole runs).
    if args.iter().any(|a| a == "--only") && args.iter().any(|a| a == "mail") {
        let mail = mail::run(plan.mail_sends, plan.mail_waiting, plan.rounds).await;
        match json_out {
            true => println!("{mail}"),
            false => mail::print(&mail),
        }
        return;
    }
    let seed = [42u8; 32];
    let id = Identity::from_seed(seed);

    // 1. Connects: static nkey baseline vs the unibus callout.
    let base_dir = tempfile::tempdir().unwrap();
    let conf = base_dir.path().join("static.conf");
    std::fs::write(&conf, format!("accounts {{ APP {{ users: [ {{ nkey: {} }} ] }} }}\n", id.nkey_public()))
        .unwrap();
    let static_server = NatsServer::start(&ServerSpec {
        binary: binary.clone(),
        config: conf,
        port: natsserver::free_port(),
        name: "static".into(),
        env: vec![],
        args: vec![],
        log_file: None,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::generate();
    let server = unibus_server(dir.path(), &secrets).await;
    let running = unibusd::daemon::start(&settings(&server.url, &secrets)).await.unwrap();
    running.store.add_account(&user_record(&id, Role::Member)).await.unwrap();
    // The bound: the cheapest correct responder on a third server.
    let bare_dir = tempfile::tempdir().unwrap();
    let bare_secrets = Secrets::generate();
    let bare_server = unibus_server(bare_dir.path(), &bare_secrets).await;
    let bare_client = async_nats::ConnectOptions::with_nkey(bare_secrets.service.seed().unwrap())
        .connect(&bare_server.url)
        .await
        .unwrap();
    let bare_latency = Arc::new(unibusd::metrics::Histogram::default());
    tokio::spawn(bare::serve(
        bare_client.clone(),
        nkeys::KeyPair::from_seed(&bare_secrets.issuer.seed().unwrap()).unwrap(),
        unibusd::callout::sealing::Sealer::new(&bare_secrets.xkey).unwrap(),
        bare_latency.clone(),
    ));
    bare_client.flush().await.unwrap();
    let mut rows = Vec::new();
    for parallel in [1usize, 8] {
        let (base_rate, mut base) = connects(&static_server.url, seed, n, parallel).await;
        bare_latency.reset();
        let (bare_rate, _) = connects(&bare_server.url, seed, n, parallel).await;
        running.callout.latency.reset();
        let (rate, mut lat) = connects(&server.url, seed, n, parallel).await;
        let h = &running.callout.latency;
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let row = json!({
            "connectors": parallel, "n": n,
            "static_per_s": base_rate, "static_p50_ms": base.pct(0.5), "static_p99_ms": base.pct(0.99),
            "callout_per_s": rate, "callout_p50_ms": lat.pct(0.5), "callout_p99_ms": lat.pct(0.99),
            "ratio": rate / base_rate,
            "bare_callout_per_s": bare_rate, "bare_ratio": bare_rate / base_rate,
            "decision_p50_ms": ms(h.quantile(0.5)), "decision_p99_ms": ms(h.quantile(0.99)),
            "bare_decision_p50_ms": ms(bare_latency.quantile(0.5)),
        });
        rows.push(row);
    }
    static_server.stop().await;
    bare_server.stop().await;
    report.insert("connects".into(), json!(rows));
    report.insert("devices".into(), devices::run(&server.url, &running, seed, n, plan.rounds).await);
    report.insert("leader_round_trip".into(), leader_round_trip(&server.url, &secrets, plan.trips).await);
    report.insert("flood".into(), flood::run(&server.url, &running, seed, n, plan.rounds).await);

    // 2. Register vs floor, and throughput with 64 clients: clients that
    // leave once answered, then clients that stay and reconnect as members.
    let floor_dir = tempfile::tempdir().unwrap();
    let floor_secrets = Secrets::generate();
    let floor_server = unibus_server(floor_dir.path(), &floor_secrets).await;
    let body = floor(&floor_server.url, &floor_secrets).await;
    let (mut reg, mut fl) =
        register_vs_floor(&server.url, &running.store, &floor_server.url, &body, plan.register_seq).await;
    floor_server.stop().await;
    let reg_rate = registrations(&server.url, &running.store, plan.register_par, 64, false).await.rate;
    let mut reg_stay = registrations(&server.url, &running.store, plan.register_seq, 1, true).await;
    let reg_stay_par = registrations(&server.url, &running.store, plan.register_par, 64, true).await;
    report.insert("device_add".into(), devadd::run(&server.url, &running, plan.register_seq).await);
    running.stop().await;
    server.stop().await;
    report.insert(
        "register".into(),
        json!({
            "register_p50_ms": reg.pct(0.5), "register_p99_ms": reg.pct(0.99),
            "floor_p50_ms": fl.pct(0.5), "floor_p99_ms": fl.pct(0.99),
            "ratio_p50": reg.pct(0.5) / fl.pct(0.5),
            "registrations_per_s_64_clients": reg_rate,
            "with_reconnect": {
                "register_p50_ms": reg_stay.reply.pct(0.5), "register_p99_ms": reg_stay.reply.pct(0.99),
                "ratio_p50": reg_stay.reply.pct(0.5) / fl.pct(0.5),
                "member_after_reply_p50_ms": reg_stay.member.pct(0.5),
                "member_after_reply_p99_ms": reg_stay.member.pct(0.99),
                "registrations_per_s_64_clients": reg_stay_par.rate,
            },
        }),
    );

    // `--only admission`: sections 1 and 2 alone, as JSON (for comparing
    // builds quickly; the published figures come from whole runs).
    let admission_only = args.iter().any(|a| a == "--only") && args.iter().any(|a| a == "admission");
    let json_out = json_out || admission_only;
    if !admission_only {
        // 3. Messages that wait: send and catch-up against their floors.
        report.insert("mail".into(), mail::run(plan.mail_sends, plan.mail_waiting, plan.rounds).await);

        // 4. Decision time and unibusd RSS with 100 and 100,000 users.
        report.insert("scale".into(), scale::run(plan.scale_users, plan.decisions).await);
    }

    print_report(&report, json_out, plan.scale_users);
    let skipped = |m: &String| admission_only && (m.starts_with("mail:") || m.starts_with("scale:"));
    let missing: Vec<String> = plan::missing(&report).into_iter().filter(|m| !skipped(m)).collect();
    if !missing.is_empty() {
        eprintln!("figures not produced:");
        missing.iter().for_each(|m| eprintln!("  {m}"));
        std::process::exit(1);
    }
}

fn print_report(report: &serde_json::Map<String, serde_json::Value>, json_out: bool, scale_users: usize) {
    if json_out {
        println!("{}", serde_json::Value::Object(report.clone()));
        return;
    }
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!("unibus benchmark suite (nats-server {:?})", natsserver::find_binary().unwrap());
    println!("\nconnects (callout with xkey vs static nkey users, same server binary)");
    println!(
        "{:<11} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>6} | {:>12} {:>12}",
        "connectors",
        "static/s",
        "p50 ms",
        "p99 ms",
        "callout/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "decide p50",
        "decide p99"
    );
    for r in report["connects"].as_array().unwrap() {
        println!(
            "{:<11} {:>10.0} {:>8.2} {:>8.2} | {:>10.0} {:>8.2} {:>8.2} | {:>5.2}x | {:>9.3} ms {:>9.3} ms",
            r["connectors"].as_u64().unwrap_or(0),
            f(&r["static_per_s"]),
            f(&r["static_p50_ms"]),
            f(&r["static_p99_ms"]),
            f(&r["callout_per_s"]),
            f(&r["callout_p50_ms"]),
            f(&r["callout_p99_ms"]),
            f(&r["ratio"]),
            f(&r["decision_p50_ms"]),
            f(&r["decision_p99_ms"])
        );
    }
    let r = &report["register"];
    println!("bound: the cheapest correct callout responder (no store, no nonce check) on the same binary:");
    for r in report["connects"].as_array().unwrap() {
        println!(
            "  {} connector(s): {:.0}/s = {:.2}x static; unibus reaches {:.0}% of it",
            r["connectors"].as_u64().unwrap_or(0),
            f(&r["bare_callout_per_s"]),
            f(&r["bare_ratio"]),
            100.0 * f(&r["callout_per_s"]) / f(&r["bare_callout_per_s"]).max(1e-9)
        );
    }
    let rt = &report["leader_round_trip"];
    let c1 = &report["connects"][0];
    println!(
        "decision bound (1 connector): the bare responder's own time p50 {:.3} ms + one leader round trip p50 {:.3} ms = {:.3} ms; unibus p50 {:.3} ms",
        f(&c1["bare_decision_p50_ms"]),
        f(&rt["p50_ms"]),
        f(&c1["bare_decision_p50_ms"]) + f(&rt["p50_ms"]),
        f(&c1["decision_p50_ms"])
    );
    println!(
        "\nunibus.register vs floor (echo through the same import + the same 6 KV operations), in alternating rounds"
    );
    println!("floor p50/p99 {:.2}/{:.2} ms", f(&r["floor_p50_ms"]), f(&r["floor_p99_ms"]));
    let w = &r["with_reconnect"];
    for (what, v) in [("client leaves when answered", r), ("client stays, reconnects as member", w)] {
        println!(
            "{what:<35} register p50/p99 {:.2}/{:.2} ms   ratio p50 {:.2}x   {:.0} registrations/s with 64 clients",
            f(&v["register_p50_ms"]),
            f(&v["register_p99_ms"]),
            f(&v["ratio_p50"]),
            f(&v["registrations_per_s_64_clients"])
        );
    }
    println!(
        "  staying clients are members again {:.0}/{:.0} ms (p50/p99) after the reply (kick grace {} ms);",
        f(&w["member_after_reply_p50_ms"]),
        f(&w["member_after_reply_p99_ms"]),
        unibusd::kick::REPLY_GRACE.as_millis()
    );
    println!("  their registrations/s stop the clock when the last one is back");
    let d = &report["device_add"];
    println!(
        "\nunibus.device.add with its signed list vs floor (echo through the same import + the same 12 KV operations), alternating rounds\n  add p50/p99 {:.2}/{:.2} ms   floor p50/p99 {:.2}/{:.2} ms   ratio p50 {:.2}x",
        f(&d["add_p50_ms"]),
        f(&d["add_p99_ms"]),
        f(&d["floor_p50_ms"]),
        f(&d["floor_p99_ms"]),
        f(&d["ratio_p50"])
    );
    devices::print(&report["devices"]);
    flood::print(&report["flood"]);
    mail::print(&report["mail"]);
    scale::print(&report["scale"], scale_users);
}
