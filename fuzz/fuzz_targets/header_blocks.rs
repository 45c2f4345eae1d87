//! Arbitrary header-block and payload bytes through the patched async-nats
//! reader (patches/async-nats). A loopback peer speaks the NATS server
//! protocol to one real async-nats client and sends each input as an HMSG
//! on its subscription, then a sentinel MSG. Whatever the bytes, the
//! client must neither panic nor drop its connection: the sentinel always
//! arrives and the connection count stays at one.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

struct Peer {
    rt: tokio::runtime::Runtime,
    frames: mpsc::Sender<Vec<u8>>,
    sub: Mutex<async_nats::Subscriber>,
    client: async_nats::Client,
    sid: u64,
    next: AtomicU64,
}

/// Serves one client: INFO, PONG for every PING, and the frames it is given.
async fn serve(
    listener: TcpListener,
    mut frames: mpsc::Receiver<Vec<u8>>,
    sid: tokio::sync::oneshot::Sender<u64>,
) {
    let (sock, _) = listener.accept().await.expect("client connects");
    let (read, mut write) = sock.into_split();
    let info = r#"INFO {"server_id":"FUZZ","server_name":"fuzz","version":"2.15.1","proto":1,"headers":true,"max_payload":1048576,"host":"127.0.0.1","port":0}"#;
    write.write_all(format!("{info}\r\n").as_bytes()).await.unwrap();
    let (pong_tx, mut pong_rx) = mpsc::channel::<()>(16);
    tokio::spawn(async move {
        let mut lines = BufReader::new(read).lines();
        let mut sid = Some(sid);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("PING") {
                let _ = pong_tx.send(()).await;
            } else if let Some(rest) = line.strip_prefix("SUB ")
                && let Some(tx) = sid.take()
            {
                let _ = tx.send(rest.split(' ').next_back().unwrap().parse().unwrap());
            }
        }
    });
    loop {
        tokio::select! {
            Some(()) = pong_rx.recv() => write.write_all(b"PONG\r\n").await.unwrap(),
            Some(frame) = frames.recv() => write.write_all(&frame).await.unwrap(),
        }
    }
}

fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (frames, rx) = mpsc::channel(4);
        let (client, sub, sid) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (sid_tx, sid_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(serve(listener, rx, sid_tx));
            let client = async_nats::connect(format!("nats://{addr}")).await.expect("connects");
            let sub = client.subscribe("f").await.unwrap();
            client.flush().await.unwrap();
            (client, sub, sid_rx.await.unwrap())
        });
        Peer { rt, frames, sub: Mutex::new(sub), client, sid, next: AtomicU64::new(0) }
    })
}

fuzz_target!(|data: &[u8]| {
    let p = peer();
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (header, payload) = data.split_at(split);
    let n = p.next.fetch_add(1, Ordering::Relaxed);
    let sentinel = format!("sentinel-{n}");
    let mut frame = format!("HMSG f {} {} {}\r\n", p.sid, header.len(), data.len()).into_bytes();
    frame.extend_from_slice(header);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(format!("\r\nMSG f {} {}\r\n{sentinel}\r\n", p.sid, sentinel.len()).as_bytes());
    p.rt.block_on(async {
        p.frames.send(frame).await.unwrap();
        let mut sub = p.sub.lock().await;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("the connection survives: the sentinel arrives")
                .expect("the subscription is alive");
            if msg.payload == sentinel.as_bytes() {
                break;
            }
        }
    });
    assert_eq!(p.client.statistics().connects.load(Ordering::Relaxed), 1, "the client reconnected");
});
