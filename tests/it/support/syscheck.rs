//! Checks through the system account, independent of unibusd's own
//! kicker: which connections of a user the servers list (CONNZ on every
//! server), and a loopback TCP relay that can cut unibusd's system-account
//! connection off the server (a network partition of that one connection)
//! while its other connections keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use unibusd::secrets::Secrets;

/// A system-account connection to `url`.
pub async fn sys_client(url: &str, secrets: &Secrets) -> async_nats::Client {
    async_nats::ConnectOptions::with_nkey(secrets.sys.seed().unwrap())
        .connect(url)
        .await
        .expect("system user connects")
}

/// Open connections whose authorized user is `user`, as (server name, cid),
/// from every one of `servers` servers (`$SYS.REQ.SERVER.PING.CONNZ`; the
/// test fails when not all of them answer within 5 s).
pub async fn open_connections(sys: &async_nats::Client, user: &str, servers: usize) -> Vec<(String, u64)> {
    let inbox = sys.new_inbox();
    let mut sub = sys.subscribe(inbox.clone()).await.unwrap();
    let body = serde_json::json!({ "user": user, "auth": true, "limit": 100_000 }).to_string();
    sys.publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, body.into()).await.unwrap();
    let mut found = Vec::new();
    for _ in 0..servers {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("every server answers CONNZ")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let name = v["server"]["name"].as_str().unwrap().to_string();
        for c in v["data"]["connections"].as_array().cloned().unwrap_or_default() {
            found.push((name.clone(), c["cid"].as_u64().unwrap()));
        }
    }
    found
}

/// A TCP relay in front of a nats-server. The connection whose CONNECT
/// names `unibusd-sys` can be frozen: while frozen, no byte of it moves in
/// either direction (as on a partitioned network), all others flow.
pub struct SysPartition {
    /// URL to give unibusd instead of the server's.
    pub url: String,
    frozen: Arc<AtomicBool>,
}

impl SysPartition {
    /// Starts relaying to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> SysPartition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                // The server is gone at the end of a test: refuse quietly.
                if let Ok(up) = tokio::net::TcpStream::connect(&upstream).await {
                    tokio::spawn(relay(down, up, f.clone()));
                }
            }
        });
        SysPartition { url, frozen }
    }

    /// Cuts (true) or heals (false) unibusd's system-account connection.
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn relay(down: tokio::net::TcpStream, up: tokio::net::TcpStream, frozen: Arc<AtomicBool>) {
    let is_sys = Arc::new(AtomicBool::new(false));
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let to_server = pump(dr, uw, frozen.clone(), is_sys.clone(), true);
    let to_client = pump(ur, dw, frozen, is_sys, false);
    let _ = tokio::join!(to_server, to_client);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    is_sys: Arc<AtomicBool>,
    client_side: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) && is_sys.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if client_side && String::from_utf8_lossy(&buf[..n]).contains("\"name\":\"unibusd-sys\"") {
            is_sys.store(true, Ordering::SeqCst);
        }
        // Bytes read just before a freeze wait too.
        while frozen.load(Ordering::SeqCst) && is_sys.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// What reconnect loops saw; "after" = the connect began after
/// [`Loops::mark_reply`].
#[derive(Default, Debug)]
pub struct LoopStats {
    pub admitted_before: usize,
    pub admitted_after: usize,
    pub denied_after: usize,
    pub other_errors: usize,
}

type LoopResult = (LoopStats, Vec<async_nats::Client>);

/// Loops that connect one key again and again, as fast as they can (loop
/// `i` to `urls[i % urls.len()]`), keeping every admitted connection open.
pub struct Loops {
    stop: Arc<AtomicBool>,
    replied: Arc<std::sync::OnceLock<tokio::time::Instant>>,
    admitted: Arc<std::sync::atomic::AtomicUsize>,
    handles: Vec<tokio::task::JoinHandle<LoopResult>>,
}

impl Loops {
    /// Starts `n` loops for `id`.
    pub fn start(urls: &[String], id: &unibus::Identity, n: usize) -> Loops {
        let stop = Arc::new(AtomicBool::new(false));
        let replied = Arc::new(std::sync::OnceLock::new());
        let admitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles = (0..n)
            .map(|i| {
                let (url, id) = (urls[i % urls.len()].clone(), id.clone());
                let (stop, replied, admitted) = (stop.clone(), replied.clone(), admitted.clone());
                tokio::spawn(async move { one_loop(url, id, stop, replied, admitted).await })
            })
            .collect();
        Loops { stop, replied, admitted, handles }
    }

    /// Waits until the loops hold `k` admitted connections (at most 20 s).
    pub async fn wait_admitted(&self, k: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.admitted.load(Ordering::SeqCst) < k {
            assert!(tokio::time::Instant::now() < deadline, "loops were not admitted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// From now on, connects count as "after".
    pub fn mark_reply(&self) {
        let _ = self.replied.set(tokio::time::Instant::now());
    }

    /// Stops the loops: their summed counts and the connections they hold.
    pub async fn stop(self) -> LoopResult {
        self.stop.store(true, Ordering::SeqCst);
        let (mut total, mut held) = (LoopStats::default(), Vec::new());
        for h in self.handles {
            let (s, c) = h.await.unwrap();
            total.admitted_before += s.admitted_before;
            total.admitted_after += s.admitted_after;
            total.denied_after += s.denied_after;
            total.other_errors += s.other_errors;
            held.extend(c);
        }
        (total, held)
    }
}

async fn one_loop(
    url: String,
    id: unibus::Identity,
    stop: Arc<AtomicBool>,
    replied: Arc<std::sync::OnceLock<tokio::time::Instant>>,
    admitted: Arc<std::sync::atomic::AtomicUsize>,
) -> LoopResult {
    let (mut stats, mut held) = (LoopStats::default(), Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let started = tokio::time::Instant::now();
        // One reconnect at most: a kicked connection that comes back is a
        // fresh admission like any other.
        let opts = unibus::connect_options(&id).max_reconnects(1);
        let outcome = opts.connect(url.as_str()).await;
        let after = replied.get().is_some_and(|r| started >= *r);
        match outcome {
            Ok(c) => {
                match after {
                    true => stats.admitted_after += 1,
                    false => stats.admitted_before += 1,
                }
                admitted.fetch_add(1, Ordering::SeqCst);
                held.push(c);
            }
            Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                stats.denied_after += usize::from(after);
            }
            Err(_) => stats.other_errors += 1,
        }
    }
    (stats, held)
}

/// Names of the servers (of `servers`) holding a connection whose client
/// name is one of `names`.
pub async fn servers_with_connection_named(
    sys: &async_nats::Client,
    names: &[&str],
    servers: usize,
) -> Vec<String> {
    let inbox = sys.new_inbox();
    let mut sub = sys.subscribe(inbox.clone()).await.unwrap();
    let body = serde_json::json!({ "limit": 100_000 }).to_string();
    sys.publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, body.into()).await.unwrap();
    let mut hosts = Vec::new();
    for _ in 0..servers {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("CONNZ").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let conns = v["data"]["connections"].as_array().cloned().unwrap_or_default();
        if conns.iter().any(|c| names.contains(&c["name"].as_str().unwrap_or_default())) {
            hosts.push(v["server"]["name"].as_str().unwrap().to_string());
        }
    }
    hosts
}

/// A process stopped with SIGSTOP until [`Paused::resume`] or drop
/// (SIGCONT): a server that is alive, keeps its routes, but answers late.
pub struct Paused(i32);

impl Paused {
    /// Stops process `pid`.
    pub fn stop(pid: u32) -> Paused {
        // SAFETY: kill(2) on a child process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Paused(pid as i32)
    }

    /// Lets it run again.
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
