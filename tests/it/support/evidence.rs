//! What reached the server and the store, for tests that must show that
//! concurrent requests really raced and that a refusal changed nothing:
//! - [`Watch`]: one service-user connection in account AUTH (where
//!   unibusd's store lives and the control subjects are imported) that logs
//!   every write attempt on the KV buckets it watches and every message on
//!   the request subjects it watches. A KV write is a publish on the
//!   bucket's subject for the key, and a compare-and-swap carries the
//!   revision it was read at (`Nats-Expected-Last-Subject-Sequence`, 0 for
//!   a create), whether JetStream then takes it or not: two attempts on one
//!   key expecting the same revision come from writers that read the same
//!   record, and the store let at most one through, so the others lost a
//!   race that really happened ([`Log::lost_races`]). A control request
//!   carries its caller (the server's `Nats-Request-Info`) and is stamped
//!   when it reached the watcher ([`Log::request_at`]); any other
//!   request, such as the store's leader probes
//!   (`$JS.API.STREAM.INFO.<stream>`), is counted ([`Log::requests`]);
//! - [`KvSnapshot`]: every bucket's stream position and keys with their
//!   revisions; equal before and after means nothing was written, not even
//!   a write undone since.
//!
//! A signed denial of one connecting key is `support::expect_signed_denial_of`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use unibus_proto::subjects;

/// One thing the watching connection received.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A request: its subject, the calling key (from the server's
    /// `Nats-Request-Info`; empty when there is none) and when it reached
    /// the watcher.
    Request { at: Instant, subject: String, caller: String },
    /// A write attempt on a KV bucket: the revision it expects (`None`: a
    /// plain put).
    Write { bucket: String, key: String, expected: Option<u64> },
}

/// What a [`Watch`] saw between two [`Watch::take`]s, in the order it
/// arrived (on one subscription, the order the server routed it).
#[derive(Debug, Default)]
pub struct Log(Vec<Seen>);

impl Log {
    /// When the request of `caller` on `subject` reached the watcher.
    pub fn request_at(&self, subject: &str, caller: &str) -> Option<Instant> {
        self.0.iter().find_map(|s| match s {
            Seen::Request { at, subject: sub, caller: who } if sub == subject && who == caller => Some(*at),
            _ => None,
        })
    }

    /// How many requests on `subject`.
    pub fn requests(&self, subject: &str) -> usize {
        self.0.iter().filter(|s| matches!(s, Seen::Request { subject: sub, .. } if sub == subject)).count()
    }

    /// The write attempts on `key` of `bucket`, in the order the server
    /// routed them: the revision each expected.
    pub fn writes_to(&self, bucket: &str, key: &str) -> Vec<Option<u64>> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Seen::Write { bucket: b, key: k, expected } if b == bucket && k == key => Some(*expected),
                _ => None,
            })
            .collect()
    }

    /// Per key of `bucket`, how many attempts were made at a revision
    /// another attempt on that key was also made at: each is a
    /// compare-and-swap that lost a race against a writer that read the
    /// same record. Keys without such a race are left out.
    pub fn lost_races(&self, bucket: &str) -> BTreeMap<String, usize> {
        let mut at: BTreeMap<(&str, u64), usize> = BTreeMap::new();
        for s in &self.0 {
            if let Seen::Write { bucket: b, key, expected: Some(rev) } = s
                && b == bucket
            {
                *at.entry((key.as_str(), *rev)).or_default() += 1;
            }
        }
        let mut lost: BTreeMap<String, usize> = BTreeMap::new();
        for ((key, _), n) in at.into_iter().filter(|(_, n)| *n > 1) {
            *lost.entry(key.to_string()).or_default() += n - 1;
        }
        lost
    }
}

type Ask = oneshot::Sender<Vec<Seen>>;

/// Watches KV write attempts and requests in account AUTH, from
/// [`Watch::start`] on.
pub struct Watch {
    conn: async_nats::Client,
    ask: mpsc::UnboundedSender<Ask>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    /// Watches the write attempts on `buckets` (e.g. `UNIBUS_invites`) and
    /// the messages on `requests` on the server at `url`, as the service
    /// user; subscribed (and flushed) before it returns.
    pub async fn start(url: &str, service_seed: String, buckets: &[&str], requests: &[&str]) -> Watch {
        let conn =
            async_nats::ConnectOptions::with_nkey(service_seed).connect(url).await.expect("service user");
        let js = async_nats::jetstream::new(conn.clone());
        let mut subs = Vec::new();
        let mut prefixes = Vec::new();
        for bucket in buckets {
            // The subject prefix the KV client really publishes on.
            let prefix = js.get_key_value(*bucket).await.expect("bucket").prefix;
            subs.push(conn.subscribe(format!("{prefix}>")).await.expect("write subscription"));
            prefixes.push((bucket.to_string(), prefix));
        }
        for subject in requests {
            subs.push(conn.subscribe(subject.to_string()).await.expect("request subscription"));
        }
        conn.flush().await.expect("flush");
        let (ask, asked) = mpsc::unbounded_channel::<Ask>();
        let task = tokio::spawn(record(subs, prefixes, asked));
        Watch { conn, ask, task }
    }

    /// Everything seen since the last call. The connection is flushed
    /// first: on one server, every message it routed to the watcher before
    /// this call is in (the PONG comes after the copies queued earlier).
    pub async fn take(&self) -> Log {
        self.conn.flush().await.expect("flush");
        let (tx, rx) = oneshot::channel();
        self.ask.send(tx).expect("watcher runs");
        Log(rx.await.expect("watcher answers"))
    }

    /// Everything seen from now until `done` holds of it, or `limit` passed
    /// (on a cluster, copies of writes made through another server may
    /// still be on their way when the replies are in).
    pub async fn take_until(&self, limit: Duration, done: impl Fn(&Log) -> bool) -> Log {
        let deadline = Instant::now() + limit;
        let mut log = self.take().await;
        while !done(&log) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.0.extend(self.take().await.0);
        }
        log
    }
}

/// The watcher's task: logs every message as it arrives (the stamp of a
/// request is its arrival), and hands the log over when asked.
async fn record(
    subs: Vec<async_nats::Subscriber>,
    prefixes: Vec<(String, String)>,
    mut asked: mpsc::UnboundedReceiver<Ask>,
) {
    let mut all = futures::stream::select_all(subs);
    let mut log = Vec::new();
    loop {
        tokio::select! {
            Some(msg) = all.next() => log.push(seen(&msg, &prefixes)),
            Some(reply) = asked.recv() => {
                // What the connection already holds belongs to this take
                // (the caller flushed first). Polled outside tokio's
                // cooperative budget, which would otherwise make a ready
                // subscription look empty after 128 messages in one turn.
                while let Some(Some(msg)) = tokio::task::unconstrained(all.next()).now_or_never() {
                    log.push(seen(&msg, &prefixes));
                }
                let _ = reply.send(std::mem::take(&mut log));
            }
            else => return,
        }
    }
}

fn seen(msg: &async_nats::Message, prefixes: &[(String, String)]) -> Seen {
    let subject = msg.subject.to_string();
    for (bucket, prefix) in prefixes {
        if let Some(key) = subject.strip_prefix(prefix.as_str()) {
            let expected = header(msg, async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE);
            let expected = expected.and_then(|v| v.parse().ok());
            return Seen::Write { bucket: bucket.clone(), key: key.to_string(), expected };
        }
    }
    let info = header(msg, subjects::HDR_REQUEST_INFO).and_then(|v| serde_json::from_str(&v).ok());
    let info: serde_json::Value = info.unwrap_or_default();
    let caller = info["user"].as_str().unwrap_or_default().to_string();
    Seen::Request { at: Instant::now(), subject, caller }
}

fn header(msg: &async_nats::Message, name: impl async_nats::header::IntoHeaderName) -> Option<String> {
    msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string())
}

/// One KV bucket's stream: its last sequence and message count, and each
/// live key with its revision.
#[derive(Debug, PartialEq, Eq)]
pub struct BucketState {
    pub last_sequence: u64,
    pub messages: u64,
    pub keys: BTreeMap<String, u64>,
}

/// Every KV bucket of account AUTH, by stream name (see [`BucketState`]).
/// Equal before and after means nothing was written, not even a write
/// undone since (it still moved the stream's last sequence).
#[derive(Debug, PartialEq, Eq)]
pub struct KvSnapshot(pub BTreeMap<String, BucketState>);

impl KvSnapshot {
    /// Reads every `KV_` stream through `js` (account AUTH).
    pub async fn read(js: &async_nats::jetstream::Context) -> KvSnapshot {
        let names: Vec<String> = js.stream_names().map(|n| n.expect("stream name")).collect().await;
        let mut out = BTreeMap::new();
        for name in names.into_iter().filter(|n| n.starts_with("KV_")) {
            let state = js.get_stream(&name).await.expect("stream").info().await.expect("info").state.clone();
            let kv = js.get_key_value(name.trim_start_matches("KV_")).await.expect("bucket");
            let listed: Vec<String> = kv.keys().await.expect("keys").map(|k| k.expect("key")).collect().await;
            let mut keys = BTreeMap::new();
            for key in listed {
                let revision = kv.entry(&key).await.expect("entry").map_or(0, |e| e.revision);
                keys.insert(key, revision);
            }
            let bucket = BucketState { last_sequence: state.last_sequence, messages: state.messages, keys };
            out.insert(name, bucket);
        }
        KvSnapshot(out)
    }
}
