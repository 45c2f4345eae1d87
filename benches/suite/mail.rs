//! Messages that wait (docs/protocol.md section 10), each figure beside a
//! floor measured in the same run, in alternating rounds:
//! - `unibus.mail.send` p50 (one sender, sequential) and throughput (1 and
//!   64 senders, one request in flight each) against a floor: a responder
//!   on a second server, behind the same APP -> AUTH import, that does one
//!   KV `create` on a bucket made like `UNIBUS_mail` and one publish of the
//!   envelope on its subject, then replies; the same client, the same
//!   request bytes;
//! - catching up N waiting messages: walking `unibus.mail.fetch` over them
//!   against a floor that reads the same entries straight from the stream
//!   (batched direct gets from the service connection, as many per batch
//!   as unibusd reads at once); and a client's
//!   whole catch-up (`Client::catch_up`: fetch, then open and check each
//!   message), beside the time to open the same envelopes in memory.
//!
//! unibusd runs here with the per-account mail limits and the per-caller
//! budget raised out of the way: what is measured is the path, not the
//! limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::json;
use unibus::{Client, Identity};
use unibus_proto::e2e::{Addressing, Freshness, Kind, ReplayGuard};
use unibus_proto::mail::{Channel, MailSendReply, MailSendRequest};
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibusd::secrets::Secrets;
use unibusd::store::{READ_AHEAD, StoreConfig};

use super::{Lat, floor_callout, median, settings, unibus_server, user_record};

/// Senders of the parallel figure.
const SENDERS: usize = 64;

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `n` `unibus.mail.send` bodies from `from` to `to`, sealed now.
fn bodies(from: &Identity, to: &Identity, n: usize) -> Vec<Bytes> {
    let subject = subjects::dm(&to.sign_pub_hex());
    let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
    (0..n)
        .map(|i| {
            let envelope =
                from.seal(&addr, &[to.recipient()], format!("message {i}").as_bytes(), now_ms()).unwrap();
            serde_json::to_vec(&MailSendRequest { envelope }).unwrap().into()
        })
        .collect()
}

/// Sends `bodies` one after the other: each latency.
async fn send_all(c: &Client, bodies: &[Bytes]) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(bodies.len());
    for body in bodies {
        let t = Instant::now();
        let reply = c.call_raw(subjects::MAIL_SEND, body.to_vec()).await.expect("mail.send");
        let r: MailSendReply = unibus::decode_reply(subjects::MAIL_SEND, &reply).expect("stored");
        assert!(r.seq > 0);
        lat.push(t.elapsed());
    }
    lat
}

/// Each sender sends its bodies, all senders at once: messages per second.
async fn send_parallel(jobs: &[(Client, Vec<Bytes>)]) -> f64 {
    let total: usize = jobs.iter().map(|(_, b)| b.len()).sum();
    let start = Instant::now();
    futures::future::join_all(jobs.iter().map(|(c, b)| send_all(c, b))).await;
    total as f64 / start.elapsed().as_secs_f64()
}

/// The send floor on its own server: the callout for auth (the senders
/// are members there), and on `unibus.mail.send` one KV create and one
/// publish of the envelope on `subject`, then the reply.
async fn send_floor(url: &str, secrets: &Secrets, senders: &[Identity], subject: String) {
    let (svc, store) = floor_callout(url, secrets).await;
    for s in senders {
        store.add_account(&user_record(s, Role::Member)).await.unwrap();
    }
    let js = async_nats::jetstream::new(svc.clone());
    let mut cfg = unibusd::store::mail_stream_config(&StoreConfig::default());
    cfg.name = "KV_BENCH_mail".into();
    cfg.subjects = vec!["$KV.BENCH_mail.>".into()];
    js.create_stream(cfg).await.unwrap();
    let kv = js.get_key_value("BENCH_mail").await.unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut sub = svc.queue_subscribe(subjects::MAIL_SEND, "floor".into()).await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let (kv, svc, subject) = (kv.clone(), svc.clone(), subject.clone());
            let i = next.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let seq = kv.create(format!("m{i}"), msg.payload.clone()).await.unwrap();
                let _ = svc.publish(subject, msg.payload).await;
                if let Some(reply) = msg.reply {
                    let _ = svc.publish(reply, json!({ "seq": seq }).to_string().into()).await;
                }
            });
        }
    });
}

/// Reads every entry of `filter` in the mail bucket with batched direct
/// gets ([`READ_AHEAD`] per batch, as unibusd's fetch reads): how many.
async fn direct_read_all(svc: &async_nats::Client, filter: &str) -> usize {
    let subject = format!("$JS.API.DIRECT.GET.KV_{}", subjects::BUCKET_MAIL);
    let (mut seq, mut count) = (1u64, 0usize);
    loop {
        let inbox = svc.new_inbox();
        let mut replies = svc.subscribe(inbox.clone()).await.unwrap();
        let req = json!({ "seq": seq, "next_by_subj": filter, "batch": READ_AHEAD, "max_bytes": 4 << 20 });
        svc.publish_with_reply(subject.clone(), inbox, req.to_string().into()).await.unwrap();
        loop {
            let msg = replies.next().await.unwrap();
            let header =
                |n: &str| msg.headers.as_ref().and_then(|h| h.get(n)).map(|v| v.as_str().to_string());
            match msg.status.map(|s| s.as_u16()) {
                Some(204) => {
                    if header("Nats-Num-Pending").and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) == 0 {
                        return count;
                    }
                    break;
                }
                Some(404) => return count,
                Some(code) => panic!("direct get answered {code}"),
                None => {
                    seq = header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok()).unwrap() + 1;
                    count += 1;
                }
            }
        }
    }
}

/// Walks every page of this device's DM channel: how many messages.
async fn fetch_all(c: &Client) -> usize {
    let (mut after, mut count) = (0, 0);
    loop {
        let page = c.mail_fetch(&Channel::Dm, after, None).await.expect("mail.fetch");
        count += page.messages.len();
        match page.next {
            Some(n) => after = n,
            None => return count,
        }
    }
}

/// Runs the section: `sends` sequential sends per round, `waiting`
/// messages to catch up on, `rounds` alternating rounds.
pub async fn run(sends: usize, waiting: usize, rounds: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::generate();
    let server = unibus_server(dir.path(), &secrets).await;
    let mut cfg = settings(&server.url, &secrets);
    cfg.mail.rate = 100_000;
    cfg.mail.burst = 1_000_000;
    cfg.mail.daily_bytes = 1 << 40;
    cfg.callers.rate = 1_000_000;
    cfg.callers.burst = 1_000_000;
    cfg.callers.bytes_per_sec = u32::MAX;
    cfg.callers.bytes_burst = u32::MAX;
    let running = unibusd::daemon::start(&cfg).await.unwrap();
    let senders: Vec<Identity> = (0..SENDERS).map(|i| Identity::from_seed([100 + i as u8; 32])).collect();
    let (bob, carol) = (Identity::from_seed([98; 32]), Identity::from_seed([99; 32]));
    for id in senders.iter().chain([&bob, &carol]) {
        running.store.add_account(&user_record(id, Role::Member)).await.unwrap();
    }
    let floor_dir = tempfile::tempdir().unwrap();
    let floor_secrets = Secrets::generate();
    let floor_server = unibus_server(floor_dir.path(), &floor_secrets).await;
    send_floor(&floor_server.url, &floor_secrets, &senders, subjects::dm(&bob.sign_pub_hex())).await;

    let mut clients = Vec::new();
    let mut floor_clients = Vec::new();
    for s in &senders {
        clients.push(Client::connect(&server.url, s).await.unwrap());
        floor_clients.push(Client::connect(&floor_server.url, s).await.unwrap());
    }
    // Warm-up, both paths.
    send_all(&clients[0], &bodies(&senders[0], &bob, 20)).await;
    send_all(&floor_clients[0], &bodies(&senders[0], &bob, 20)).await;

    let (mut lat, mut floor_lat) = (Lat::default(), Lat::default());
    let (mut one, mut floor_one, mut many, mut floor_many) = (vec![], vec![], vec![], vec![]);
    let per_sender = (sends / 4).max(5);
    for _ in 0..rounds {
        let t = Instant::now();
        floor_lat.0.extend(send_all(&floor_clients[0], &bodies(&senders[0], &bob, sends)).await);
        floor_one.push(sends as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        lat.0.extend(send_all(&clients[0], &bodies(&senders[0], &bob, sends)).await);
        one.push(sends as f64 / t.elapsed().as_secs_f64());
        let jobs = |cs: &[Client]| -> Vec<(Client, Vec<Bytes>)> {
            cs.iter().zip(&senders).map(|(c, s)| (c.clone(), bodies(s, &bob, per_sender))).collect()
        };
        floor_many.push(send_parallel(&jobs(&floor_clients)).await);
        many.push(send_parallel(&jobs(&clients)).await);
    }
    floor_server.stop().await;

    // N messages wait for carol, from the 64 senders (not timed).
    let per = waiting.div_ceil(SENDERS);
    let jobs: Vec<(Client, Vec<Bytes>)> =
        clients.iter().zip(&senders).map(|(c, s)| (c.clone(), bodies(s, &carol, per))).collect();
    send_parallel(&jobs).await;
    let stored = per * SENDERS;
    let carol_c = Client::connect(&server.url, &carol).await.unwrap();
    let svc = async_nats::ConnectOptions::with_nkey(secrets.service.seed().unwrap())
        .connect(&server.url)
        .await
        .unwrap();
    let filter = format!("$KV.{}.dm.{}.>", subjects::BUCKET_MAIL, carol.sign_pub_hex());
    let envelopes: Vec<(Vec<u8>, String)> = {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = carol_c.mail_fetch(&Channel::Dm, after, None).await.unwrap();
            out.extend(
                page.messages
                    .into_iter()
                    .map(|w| (serde_json::to_vec(&w.envelope).unwrap(), w.envelope.subject)),
            );
            match page.next {
                Some(n) => after = n,
                None => break,
            }
        }
        out
    };
    assert_eq!(envelopes.len(), stored);
    let (mut walk, mut floor_walk, mut whole, mut open) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(direct_read_all(&svc, &filter).await, stored);
        floor_walk.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        assert_eq!(fetch_all(&carol_c).await, stored);
        walk.push(t.elapsed().as_secs_f64() * 1e3);
        // A fresh client (nothing handed over yet) catches up on all.
        let fresh = Client::connect(&server.url, &carol).await.unwrap();
        let t = Instant::now();
        assert_eq!(fresh.catch_up().await.unwrap().len(), stored);
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        open_all(&carol, &envelopes);
        open.push(t.elapsed().as_secs_f64() * 1e3);
    }
    running.stop().await;
    server.stop().await;
    let (p50, floor_p50) = (lat.pct(0.5), floor_lat.pct(0.5));
    json!({
        "send": {
            "n": sends, "rounds": rounds,
            "p50_ms": p50, "p99_ms": lat.pct(0.99),
            "floor_p50_ms": floor_p50, "floor_p99_ms": floor_lat.pct(0.99),
            "ratio_p50": p50 / floor_p50,
            "per_s_1_sender": median(&one), "floor_per_s_1_sender": median(&floor_one),
            "per_s_64_senders": median(&many), "floor_per_s_64_senders": median(&floor_many),
            "ratio_per_s_64_senders": median(&floor_many) / median(&many).max(1e-9),
        },
        "catch_up": {
            "messages": stored, "rounds": rounds,
            "fetch_walk_ms": median(&walk), "floor_direct_read_ms": median(&floor_walk),
            "ratio": median(&walk) / median(&floor_walk).max(1e-9),
            "client_catch_up_ms": median(&whole), "open_in_memory_ms": median(&open),
        },
    })
}

/// Opens each envelope as carol would (no network, no sender lookup).
fn open_all(carol: &Identity, envelopes: &[(Vec<u8>, String)]) {
    let guard = ReplayGuard::new(Freshness::default());
    for (raw, subject) in envelopes {
        carol.open(raw, subject, &guard, now_ms()).expect("opens");
    }
}

/// Prints the section.
pub fn print(v: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let s = &v["send"];
    println!(
        "\nunibus.mail.send vs floor (one KV create + one publish behind the same import), alternating rounds"
    );
    println!(
        "1 sender:   p50/p99 {:.2}/{:.2} ms vs floor {:.2}/{:.2} ms: ratio p50 {:.2}x; {:.0}/s vs floor {:.0}/s",
        f(&s["p50_ms"]),
        f(&s["p99_ms"]),
        f(&s["floor_p50_ms"]),
        f(&s["floor_p99_ms"]),
        f(&s["ratio_p50"]),
        f(&s["per_s_1_sender"]),
        f(&s["floor_per_s_1_sender"])
    );
    println!(
        "64 senders: {:.0} messages/s vs floor {:.0}/s: floor/unibus {:.2}x",
        f(&s["per_s_64_senders"]),
        f(&s["floor_per_s_64_senders"]),
        f(&s["ratio_per_s_64_senders"])
    );
    let c = &v["catch_up"];
    println!(
        "catching up {} waiting messages: mail.fetch walk {:.0} ms vs direct reads of the stream {:.0} ms: {:.2}x; a client's whole catch-up (fetch, open, check) {:.0} ms, of which opening alone takes {:.0} ms in memory",
        c["messages"].as_u64().unwrap_or(0),
        f(&c["fetch_walk_ms"]),
        f(&c["floor_direct_read_ms"]),
        f(&c["ratio"]),
        f(&c["client_catch_up_ms"]),
        f(&c["open_in_memory_ms"])
    );
}
