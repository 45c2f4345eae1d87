//! Other members' connects while one member floods (docs/protocol.md
//! section 2, "Load is hostile too"), against the same figures without the
//! flood, in alternating rounds on the same server and unibusd.
//!
//! Two floods, each from raw-protocol clients of one member key:
//! - *socket speed*: `unibus.whoami` as fast as the socket takes it, from
//!   8 connections that each connect again at once whenever closed, in a
//!   loop (what a hostile client does once unibusd cuts it off: its
//!   reconnects are then refused by the callout while its penalty lasts,
//!   most of them left unanswered);
//! - *sustained*: `unibus.whoami` at 300/s from one connection, 1.5 times
//!   the device's budget but below what unibusd cuts off, for the whole
//!   measurement (answered within the budget, dropped beyond it).
//!
//! The goal: other members' connects/s at least 90 % of the unflooded
//! figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use unibus::Identity;
use unibus_proto::records::Role;
use unibusd::daemon::Running;

use super::{Lat, connects, median, user_record};

/// What the flooder did during one flooded measurement.
#[derive(Default)]
struct Flooder {
    requests: AtomicU64,
    connects: AtomicU64,
    refused: AtomicU64,
}

/// Connects `id` through a plain socket (nonce signed); `None` when the
/// server refuses it.
async fn raw_connect(addr: &str, id: &Identity) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut reader = BufReader::new(&mut stream);
    let mut info = String::new();
    reader.read_line(&mut info).await.ok()?;
    let info: serde_json::Value = serde_json::from_str(info.strip_prefix("INFO ")?).ok()?;
    let nonce = info["nonce"].as_str()?.to_string();
    let kp = nkeys::KeyPair::from_seed(&id.nkey_seed()).ok()?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.sign(nonce.as_bytes()).ok()?);
    let connect = json!({
        "verbose": false, "pedantic": false, "lang": "raw", "version": "0", "protocol": 1,
        "headers": true, "nkey": kp.public_key(), "sig": sig,
    });
    stream.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await.ok()?;
    let mut reader = BufReader::new(&mut stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 || line.starts_with("-ERR") {
            return None;
        }
        if line.trim_end() == "PONG" {
            break;
        }
    }
    Some(stream)
}

/// How one flood sends.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// As fast as the socket takes it, 8 connections reconnecting in a loop.
    SocketSpeed,
    /// This many requests per second from one connection.
    Sustained(u32),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SocketSpeed => "socket speed, 8 connections reconnecting in a loop",
            Kind::Sustained(_) => "300/s from one connection (1.5x its budget)",
        }
    }
}

/// Floods until `stop`, reconnecting whenever the connection is closed.
async fn flood(addr: String, id: Identity, kind: Kind, stop: Arc<AtomicBool>, stats: Arc<Flooder>) {
    let one = format!("PUB unibus.whoami _INBOX.{}.flood 2\r\n{{}}\r\n", id.sign_pub_hex());
    let (frame, pause) = match kind {
        Kind::SocketSpeed => (one.repeat(64), None),
        // rate / 100 requests every 10 ms.
        Kind::Sustained(rate) => (one.repeat((rate / 100) as usize), Some(Duration::from_millis(10))),
    };
    let per_write = (frame.len() / one.len()) as u64;
    while !stop.load(Ordering::Relaxed) {
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let Some(mut stream) = raw_connect(&addr, &id).await else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut next = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(frame.as_bytes()).await.is_err() {
                break;
            }
            stats.requests.fetch_add(per_write, Ordering::Relaxed);
            if let Some(pause) = pause {
                next += pause;
                tokio::time::sleep_until(next).await;
            }
        }
    }
}

#[derive(Default)]
struct Side {
    rates: Vec<f64>,
    lat: Lat,
    decisions: Lat,
}

/// Seeds the flooders and measures (`member_seed`: a member's key that
/// connects in the measurements), in `rounds` rounds per connector count
/// (each measures both sides).
pub async fn run(
    url: &str,
    running: &Running,
    member_seed: [u8; 32],
    n: usize,
    rounds: usize,
) -> serde_json::Value {
    let mut rows = Vec::new();
    for (kind, seed) in [(Kind::SocketSpeed, 77u8), (Kind::Sustained(300), 78u8)] {
        let flooder = Identity::from_seed([seed; 32]);
        running.store.add_account(&user_record(&flooder, Role::Member)).await.unwrap();
        for parallel in [1usize, 8] {
            let who = Who { member_seed, flooder_seed: seed };
            rows.push(measure(url, running, who, n, parallel, kind, rounds).await);
        }
    }
    json!(rows)
}

/// The keys of one measurement: the member who connects and the flooder.
#[derive(Clone, Copy)]
struct Who {
    member_seed: [u8; 32],
    flooder_seed: u8,
}

/// Alternating rounds of `parallel` connectors without and with the flood.
async fn measure(
    url: &str,
    running: &Running,
    who: Who,
    n: usize,
    parallel: usize,
    kind: Kind,
    rounds: usize,
) -> serde_json::Value {
    let Who { member_seed, flooder_seed: seed } = who;
    let addr = url.trim_start_matches("nats://").to_string();
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let (mut calm, mut flooded) = (Side::default(), Side::default());
    let stats = Arc::new(Flooder::default());
    let loops = match kind {
        Kind::SocketSpeed => 8,
        Kind::Sustained(_) => 1,
    };
    for _ in 0..rounds {
        for under_flood in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            if under_flood {
                for _ in 0..loops {
                    let (addr, stop, stats) = (addr.clone(), stop.clone(), stats.clone());
                    tasks.push(tokio::spawn(flood(addr, Identity::from_seed([seed; 32]), kind, stop, stats)));
                }
                // Let the flood start (and, at socket speed, be cut off).
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            running.callout.latency.reset();
            let (rate, lat) = connects(url, member_seed, n, parallel).await;
            let side = if under_flood { &mut flooded } else { &mut calm };
            side.rates.push(rate);
            side.lat.0.extend(lat.0);
            side.decisions.0.push(Duration::from_secs_f64(ms(running.callout.latency.quantile(0.99)) / 1e3));
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                // A connect left unanswered takes the server's auth timeout.
                let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            }
        }
    }
    let summary = |s: &mut Side| {
        json!({
            "per_s": median(&s.rates), "p50_ms": s.lat.pct(0.5), "p99_ms": s.lat.pct(0.99),
            "decision_p99_ms": s.decisions.pct(0.5),
        })
    };
    json!({
        "flood": kind.name(), "connectors": parallel, "n": n, "rounds": rounds,
        "calm": summary(&mut calm), "flooded": summary(&mut flooded),
        "ratio_per_s": median(&flooded.rates) / median(&calm.rates).max(1e-9),
        "flooder": {
            "requests": stats.requests.load(Ordering::Relaxed),
            "connects": stats.connects.load(Ordering::Relaxed),
            "refused": stats.refused.load(Ordering::Relaxed),
        },
    })
}

/// Prints the section.
pub fn print(rows: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!("\nother members' connects while one member floods whoami");
    println!("(alternating rounds, medians; decision p99 = the median round's callout p99)");
    for r in rows.as_array().into_iter().flatten() {
        let (c, fl, who) = (&r["calm"], &r["flooded"], &r["flooder"]);
        println!(
            "{}\n  {} connector(s): calm {:.0}/s (p99 {:.2} ms, decision p99 {:.3} ms), flooded {:.0}/s (p99 {:.2} ms, decision p99 {:.3} ms): {:.2}x",
            r["flood"].as_str().unwrap_or_default(),
            r["connectors"].as_u64().unwrap_or(0),
            f(&c["per_s"]),
            f(&c["p99_ms"]),
            f(&c["decision_p99_ms"]),
            f(&fl["per_s"]),
            f(&fl["p99_ms"]),
            f(&fl["decision_p99_ms"]),
            f(&r["ratio_per_s"])
        );
        println!(
            "    the flooder sent {} requests over {} connects, {} refused at connect",
            who["requests"].as_u64().unwrap_or(0),
            who["connects"].as_u64().unwrap_or(0),
            who["refused"].as_u64().unwrap_or(0)
        );
    }
}
