//! What the server and the store saw, for tests that must prove a race
//! really raced and a refusal really changed nothing:
//! - [`ServerView`]: a service-user connection in account AUTH that gets a
//!   copy of every control request on the subjects it watches (imported
//!   from APP, stamped by the server with the caller) and of every write
//!   attempt on the users and devices buckets (each a publish carrying the
//!   revision it expects, whether JetStream then takes it or not);
//! - [`kv_snapshot`]: every bucket's keys with their revisions and each
//!   stream's last sequence (a write that was undone still shows);
//! - [`expect_denial_of`]: the callout's signed denial of one given key.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use unibus::ClientError;
use unibus_proto::subjects::{self, BUCKET_DEVICES, BUCKET_USERS};

use crate::harness::{AuthErrors, DENIAL_WITHIN, SIGNED_DENIAL, Stack};

/// One thing the watching connection received, stamped on arrival.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A control request: its subject and the calling key (from the
    /// server's `Nats-Request-Info`).
    Request { at: Instant, subject: String, caller: String },
    /// A write attempt on a KV bucket: the revision it expects (`None`: a
    /// plain put).
    Write { bucket: String, key: String, expected: Option<u64> },
}

type Ask = oneshot::Sender<Vec<Seen>>;

/// Watches requests and KV write attempts in account AUTH.
pub struct ServerView {
    conn: async_nats::Client,
    ask: mpsc::UnboundedSender<Ask>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServerView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServerView {
    /// Subscribes (and flushes) to `requests` and to the write subjects of
    /// the users and devices buckets before returning.
    pub async fn watch(stack: &Stack, requests: &[&str]) -> ServerView {
        let conn = stack.service_nats().await;
        let js = async_nats::jetstream::new(conn.clone());
        let mut subs = Vec::new();
        for subject in requests {
            subs.push(conn.subscribe(subject.to_string()).await.expect("request subscription"));
        }
        let mut prefixes = Vec::new();
        for bucket in [BUCKET_USERS, BUCKET_DEVICES] {
            let prefix = js.get_key_value(bucket).await.expect("bucket").prefix;
            subs.push(conn.subscribe(format!("{prefix}>")).await.expect("write subscription"));
            prefixes.push((bucket, prefix));
        }
        conn.flush().await.expect("flush");
        let (ask, mut asked) = mpsc::unbounded_channel::<Ask>();
        let mut all = futures::stream::select_all(subs);
        let task = tokio::spawn(async move {
            let mut log = Vec::new();
            loop {
                tokio::select! {
                    Some(msg) = all.next() => log.push(seen(&msg, &prefixes)),
                    Some(reply) = asked.recv() => {
                        // Whatever the connection already holds belongs to
                        // the snapshot (the caller flushed first).
                        while let Some(Some(msg)) = all.next().now_or_never() {
                            log.push(seen(&msg, &prefixes));
                        }
                        let _ = reply.send(std::mem::take(&mut log));
                    }
                    else => return,
                }
            }
        });
        ServerView { conn, ask, task }
    }

    /// Everything seen since the last call: the connection is flushed
    /// first, so every message the server routed to it before now is in.
    pub async fn take(&self) -> Vec<Seen> {
        self.conn.flush().await.expect("flush");
        let (tx, rx) = oneshot::channel();
        self.ask.send(tx).expect("watcher runs");
        rx.await.expect("watcher answers")
    }
}

fn seen(msg: &async_nats::Message, prefixes: &[(&'static str, String)]) -> Seen {
    let subject = msg.subject.to_string();
    for (bucket, prefix) in prefixes {
        if let Some(key) = subject.strip_prefix(prefix.as_str()) {
            let expected = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE))
                .and_then(|v| v.as_str().parse().ok());
            return Seen::Write { bucket: bucket.to_string(), key: key.to_string(), expected };
        }
    }
    let info = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_REQUEST_INFO));
    let info: Value = info.and_then(|v| serde_json::from_str(v.as_str()).ok()).unwrap_or_default();
    let caller = info["user"].as_str().unwrap_or_default().to_string();
    Seen::Request { at: Instant::now(), subject, caller }
}

/// When the request of `caller` on `subject` reached the watcher.
pub fn request_seen(log: &[Seen], subject: &str, caller: &str) -> Option<Instant> {
    log.iter().find_map(|s| match s {
        Seen::Request { at, subject: sub, caller: who } if sub == subject && who == caller => Some(*at),
        _ => None,
    })
}

/// The write attempts on `key` of `bucket`, in the order the server
/// routed them: the revision each expected.
pub fn writes_to(log: &[Seen], bucket: &str, key: &str) -> Vec<Option<u64>> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Write { bucket: b, key: k, expected } if b == bucket && k == key => Some(*expected),
            _ => None,
        })
        .collect()
}

/// True when two write attempts on `key` expected the same revision: two
/// writers read the same record and raced to overwrite it (one lost).
pub fn raced_on(log: &[Seen], bucket: &str, key: &str) -> bool {
    let mut expected: Vec<u64> = writes_to(log, bucket, key).into_iter().flatten().collect();
    let n = expected.len();
    expected.sort_unstable();
    expected.dedup();
    expected.len() < n
}

/// Every KV bucket of account AUTH: its stream's last sequence and message
/// count, and each live key with its revision. Equal before and after
/// means nothing was written, not even a write undone since.
pub async fn kv_snapshot(stack: &Stack) -> BTreeMap<String, (u64, u64, BTreeMap<String, u64>)> {
    let js = stack.jetstream().await;
    let names: Vec<String> = js.stream_names().map(|n| n.expect("stream name")).collect().await;
    let mut out = BTreeMap::new();
    for name in names.into_iter().filter(|n| n.starts_with("KV_")) {
        let info = js.get_stream(&name).await.expect("stream").info().await.expect("info").state.clone();
        let kv = js.get_key_value(name.trim_start_matches("KV_")).await.expect("bucket");
        let mut keys = BTreeMap::new();
        let listed: Vec<String> = kv.keys().await.expect("keys").map(|k| k.expect("key")).collect().await;
        for key in listed {
            let revision = kv.entry(&key).await.expect("entry").map_or(0, |e| e.revision);
            keys.insert(key, revision);
        }
        out.insert(name, (info.last_sequence, info.messages, keys));
    }
    out
}

/// Runs `connect` (a connect with `key`) and asserts that the callout
/// refused it with a signed denial: `NotAuthorized` within
/// [`DENIAL_WITHIN`], and an auth-error advisory whose reason is the
/// callout's own and names `key` (advisories of other keys are skipped).
/// Returns that reason.
pub async fn expect_denial_of<T>(
    errors: &mut AuthErrors,
    key: &str,
    connect: impl std::future::Future<Output = Result<T, ClientError>>,
) -> String {
    let started = Instant::now();
    let r = connect.await.map(|_| "admitted");
    let took = started.elapsed();
    assert!(matches!(r, Err(ClientError::NotAuthorized)), "{key}: expected a denial, got {r:?}");
    assert!(took < DENIAL_WITHIN, "{key}: the denial took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reason = errors.next_reason(left).await.unwrap_or_else(|| panic!("no advisory naming {key}"));
        if reason.contains(key) {
            assert!(reason.contains(SIGNED_DENIAL), "not a signed denial: {reason:?}");
            return reason;
        }
    }
}
