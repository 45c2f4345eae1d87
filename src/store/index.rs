//! In-memory indexes of the buckets, fed by a KV watch (last value per key,
//! then every change). They serve listings with pagination, the room
//! membership of a user, and cheap repeated denials of revoked keys. They
//! never *allow* anything on their own: allow decisions read the leader.
//!
//! [`Index::sync`] makes an index current: it asks the stream leader for its
//! last sequence and waits until the watch has applied it, so a caller sees
//! every write acknowledged before the call (read-your-writes across
//! instances). A watch that fails is rebuilt from scratch; until it is, the
//! index is not ready and `sync` fails (callers fail closed).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::KvError;

/// How one index folds bucket entries into its state.
pub trait Fold: Default + Send + Sync + 'static {
    /// Applies a put (`Some(value)`) or delete (`None`) of `key`.
    fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: u64);
}

/// A replica not heard from for this long no longer counts toward quorum.
const PEER_SILENCE: Duration = Duration::from_secs(3);

struct Shared<S> {
    state: RwLock<S>,
    /// (generation, applied revision); generation changes on every rebuild.
    applied: watch::Sender<(u64, u64)>,
    /// Asks the watch task to start over (the stream was recreated).
    rebuild: tokio::sync::Notify,
}

/// A watched, folded view of one bucket.
pub struct Index<S: Fold> {
    shared: Arc<Shared<S>>,
    kv: kv::Store,
    task: tokio::task::JoinHandle<()>,
}

impl<S: Fold> Drop for Index<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: Fold> Index<S> {
    /// Starts following `kv`.
    pub fn follow(kv: kv::Store) -> Index<S> {
        let (applied, _) = watch::channel((0, 0));
        let shared = Arc::new(Shared {
            state: RwLock::new(S::default()),
            applied,
            rebuild: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(run(kv.clone(), shared.clone()));
        Index { shared, kv, task }
    }

    /// Reads the state (no I/O).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The revision applied so far (0 before the first load).
    pub fn applied(&self) -> u64 {
        self.shared.applied.borrow().1
    }

    /// Waits (bounded) until the index has applied `revision`.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] when it does not get there in time.
    pub async fn wait_for(&self, revision: u64, limit: Duration) -> Result<(), KvError> {
        self.wait_until(limit, |_, rev| rev >= revision).await
    }

    async fn wait_until(&self, limit: Duration, done: impl Fn(u64, u64) -> bool) -> Result<(), KvError> {
        let mut rx = self.shared.applied.subscribe();
        match tokio::time::timeout(limit, rx.wait_for(|(g, r)| done(*g, *r))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(KvError::Unavailable(format!("index of {} is not current", self.kv.name))),
        }
    }

    /// Makes the index current with the stream leader (see module docs).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] when the leader cannot be asked or the
    /// watch does not catch up within `limit`.
    pub async fn sync(&self, limit: Duration) -> Result<(), KvError> {
        let last = self.last_sequence().await?;
        let (generation, applied) = *self.shared.applied.borrow();
        if applied > last {
            // The stream was recreated under us: rebuild before answering.
            self.shared.rebuild.notify_one();
            return self.wait_until(limit, |g, r| g > generation && r >= last).await;
        }
        let reached = self.wait_for(last, limit).await;
        if reached.is_err() {
            // The watch is stuck (for example its consumer was on a server
            // that died): start a fresh one so that the next call can succeed.
            self.shared.rebuild.notify_one();
        }
        reached
    }

    /// The stream's last sequence, from its leader, provided the leader
    /// still sees a majority of its replicas as current: a leader that has
    /// lost its quorum keeps answering for a while, and nothing it says can
    /// be trusted to be the latest.
    async fn last_sequence(&self) -> Result<u64, KvError> {
        let mut stream = self.kv.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| KvError::Unavailable(format!("stream info of {}: {e}", self.kv.name)))?;
        if let Some(cluster) = &info.cluster {
            if !cluster.replicas.is_empty() {
                // Raft heartbeats come every second: a peer not heard from
                // for a few seconds is gone, whatever `current` still says.
                let alive = |p: &&async_nats::jetstream::stream::PeerInfo| {
                    p.current && !p.offline && p.active <= PEER_SILENCE
                };
                let current = 1 + cluster.replicas.iter().filter(alive).count();
                let total = cluster.replicas.len() + 1;
                if cluster.leader.is_none() || current * 2 <= total {
                    return Err(KvError::Unavailable(format!(
                        "{}: leader sees {current} of {total} replicas current (no quorum)",
                        self.kv.name
                    )));
                }
            }
        }
        Ok(info.state.last_sequence)
    }
}

async fn run<S: Fold>(kv: kv::Store, shared: Arc<Shared<S>>) {
    let mut generation = 0u64;
    let mut delay = Duration::from_millis(50);
    loop {
        generation += 1;
        match follow_once(&kv, &shared, generation).await {
            Ok(()) => {
                debug!(bucket = %kv.name, "index rebuild requested");
                delay = Duration::from_millis(50);
                continue;
            }
            Err(e) => warn!(bucket = %kv.name, error = %e, "index watch failed; rebuilding"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn follow_once<S: Fold>(kv: &kv::Store, shared: &Shared<S>, generation: u64) -> Result<(), String> {
    let mut entries = kv.watch_with_history(">").await.map_err(|e| e.to_string())?;
    // A new generation starts from an empty state.
    *shared.state.write().unwrap_or_else(|p| p.into_inner()) = S::default();
    shared.applied.send_replace((generation, 0));
    loop {
        let entry = tokio::select! {
            next = entries.next() => match next {
                Some(entry) => entry.map_err(|e| e.to_string())?,
                None => return Err("watch ended".to_string()),
            },
            _ = shared.rebuild.notified() => return Ok(()),
        };
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value.as_ref()),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        {
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(&entry.key, value, entry.revision);
        }
        shared.applied.send_modify(|(_, rev)| *rev = (*rev).max(entry.revision));
    }
}
