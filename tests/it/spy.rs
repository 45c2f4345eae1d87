//! Evidence that concurrent requests really raced at the store: every
//! write attempt on a KV bucket as it reaches nats-server, seen by a plain
//! subscriber in account AUTH (a KV write is a publish on
//! `$KV.<bucket>.<key>`, and a compare-and-swap carries the revision it
//! was read at in `Nats-Expected-Last-Subject-Sequence`; a create carries
//! 0). Two attempts on one key with the same expected revision come from
//! writers that read the same record: the store lets at most one through,
//! so the others lost a race that really happened. And the requests on
//! any subject of AUTH, counted ([`Requests`]), such as the store's leader
//! probes (`$JS.API.STREAM.INFO.<stream>`).

use std::collections::BTreeMap;

use futures::StreamExt as _;

/// The next message `sub` already holds, if any: polled once, outside
/// tokio's cooperative budget (which would otherwise make a ready
/// subscription look empty after 128 messages in one task turn).
fn ready(sub: &mut async_nats::Subscriber) -> Option<Option<async_nats::Message>> {
    futures::FutureExt::now_or_never(tokio::task::unconstrained(sub.next()))
}

/// The header of a compare-and-swap (async-nats `kv::Store::update`/`create`).
const EXPECTED_REVISION: &str = "Nats-Expected-Last-Subject-Sequence";

/// One write attempt (accepted or refused by the store).
#[derive(Debug, Clone)]
pub struct Write {
    /// The KV key.
    pub key: String,
    /// The revision the writer read (0: create), `None` for a blind put.
    pub expected: Option<u64>,
}

/// The write attempts on one bucket, watched from [`KvWrites::watch`] on.
pub struct KvWrites {
    conn: async_nats::Client,
    sub: async_nats::Subscriber,
    prefix: String,
    seen: Vec<Write>,
}

impl KvWrites {
    /// Watches `bucket` (e.g. `UNIBUS_invites`) on the server at `url`, as
    /// the service user (account AUTH, where unibusd's store lives).
    pub async fn watch(url: &str, service_seed: String, bucket: &str) -> KvWrites {
        let conn =
            async_nats::ConnectOptions::with_nkey(service_seed).connect(url).await.expect("service user");
        let prefix = format!("$KV.{bucket}.");
        let sub = conn.subscribe(format!("{prefix}>")).await.expect("KV subscription");
        conn.flush().await.expect("flush");
        KvWrites { conn, sub, prefix, seen: Vec::new() }
    }

    /// Every attempt seen so far. On one server, every attempt the server
    /// took before this call is included: the flush's PONG comes after the
    /// copies it queued for this connection earlier.
    pub async fn all(&mut self) -> &[Write] {
        self.conn.flush().await.expect("flush");
        while let Some(Some(msg)) = ready(&mut self.sub) {
            let key = msg.subject.as_str().strip_prefix(&self.prefix).unwrap_or_default().to_string();
            let expected = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(EXPECTED_REVISION))
                .and_then(|v| v.as_str().parse().ok());
            self.seen.push(Write { key, expected });
        }
        &self.seen
    }

    /// Per key, how many attempts were made at a revision another attempt
    /// on that key was also made at: each is a compare-and-swap that lost
    /// a race against a writer that read the same record. Keys without
    /// such a race are left out.
    pub async fn lost_races(&mut self) -> BTreeMap<String, usize> {
        let mut at: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for w in self.all().await {
            if let Some(rev) = w.expected {
                *at.entry((w.key.clone(), rev)).or_default() += 1;
            }
        }
        let mut lost: BTreeMap<String, usize> = BTreeMap::new();
        for ((key, _), n) in at.into_iter().filter(|(_, n)| *n > 1) {
            *lost.entry(key).or_default() += n - 1;
        }
        lost
    }

    /// [`KvWrites::lost_races`], waiting up to `limit` for some to show
    /// (on a cluster, copies of writes made through another server may
    /// still be on their way when the replies are in).
    pub async fn lost_races_within(&mut self, limit: std::time::Duration) -> BTreeMap<String, usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let lost = self.lost_races().await;
            if !lost.is_empty() || tokio::time::Instant::now() >= deadline {
                return lost;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The messages on one subject of account AUTH, counted from
/// [`Requests::watch`] on.
pub struct Requests {
    conn: async_nats::Client,
    sub: async_nats::Subscriber,
    seen: usize,
}

impl Requests {
    /// Counts what is published on `subject` on the server at `url`, as the
    /// service user.
    pub async fn watch(url: &str, service_seed: String, subject: &str) -> Requests {
        let conn =
            async_nats::ConnectOptions::with_nkey(service_seed).connect(url).await.expect("service user");
        let sub = conn.subscribe(subject.to_string()).await.expect("subscription");
        conn.flush().await.expect("flush");
        Requests { conn, sub, seen: 0 }
    }

    /// How many so far (on one server, every one it took before this call).
    pub async fn count(&mut self) -> usize {
        self.conn.flush().await.expect("flush");
        while let Some(Some(_)) = ready(&mut self.sub) {
            self.seen += 1;
        }
        self.seen
    }
}
