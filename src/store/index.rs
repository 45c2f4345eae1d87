//! In-memory indexes of the buckets, fed by a KV watch (last value per key,
//! then every change). They serve listings with pagination, the standing and
//! room membership of a key for the callout, and cheap repeated denials of
//! revoked keys. An index *allows* nothing unless it was just proven current
//! with the stream leader ([`Index::sync`]).
//!
//! [`Index::sync`] makes an index current: it asks the stream leader for its
//! last sequence and waits until the watch has applied it, so a caller sees
//! every write acknowledged before the call (read-your-writes across
//! instances). Concurrent callers share one leader request, but only one
//! that was sent after they called: a caller never rides on an answer that
//! may predate its own arrival. A watch that fails is rebuilt from scratch;
//! until it is, the index is not ready and `sync` fails (callers fail
//! closed).
//!
//! [`Index::recent_read`] is the bounded form for paths that may trail the
//! leader a little ([`Fresh::Recent`]): it reads once the index has applied
//! what a probe sent at most [`RECENT`] ago found, provided this process
//! has written nothing to the bucket since that probe was sent (every write
//! of its [`Bucket`](super::Bucket) counts, whatever its outcome), so a
//! write this instance acknowledged is always seen. Without such a proof it
//! falls back to [`Index::sync_read`]. Either way it fails closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{debug, warn};

use super::KvError;

/// How one index folds bucket entries into its state.
pub trait Fold: Default + Send + Sync + 'static {
    /// Applies a put (`Some(value)`) or delete (`None`) of `key`.
    fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: u64);
}

/// A replica not heard from for this long no longer counts toward quorum.
const PEER_SILENCE: Duration = Duration::from_secs(3);

/// How far a [`Fresh::Recent`] read may trail the stream leader: what
/// another instance acknowledged is seen at most this long after (writes
/// of this process at once). Well under the one second within which a
/// revocation or a membership change closes live connections (section 6),
/// the window in which a live publish is still let through.
pub const RECENT: Duration = Duration::from_millis(100);

/// How current a read from an index must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// Proven current with the stream leader by a probe sent after the
    /// call ([`Index::sync_read`]): read-your-writes across instances.
    Leader,
    /// Proven current as of at most [`RECENT`] ago, and with every write of
    /// this process ([`Index::recent_read`]).
    Recent,
}

/// A leader probe's answer: the stream's last sequence as seen by a probe
/// sent at `sent`, when this process had made `local` writes to the bucket.
#[derive(Debug, Clone, Copy)]
struct Proof {
    point: u64,
    sent: tokio::time::Instant,
    local: u64,
}

/// Callers waiting for the next leader probe.
type Waiters = Vec<oneshot::Sender<Result<u64, String>>>;

/// The folded state with the position it reflects, changed together under
/// one lock so that a reader never sees a fold that does not match them.
struct State<S> {
    fold: S,
    /// Changes on every rebuild (a rebuild starts from an empty fold).
    generation: u64,
    /// Highest revision applied in this generation.
    applied: u64,
    /// When the watch last applied an entry (or started): a watch that is
    /// behind but still moving is loading, not stuck.
    progressed_at: tokio::time::Instant,
}

impl<S: Fold> State<S> {
    /// The empty start of a generation.
    fn empty(generation: u64) -> State<S> {
        State { fold: S::default(), generation, applied: 0, progressed_at: tokio::time::Instant::now() }
    }
}

struct Shared<S> {
    state: RwLock<State<S>>,
    /// Callers that want a probe sent after they asked.
    waiting: Mutex<Waiters>,
    /// Wakes the prober.
    probe: Notify,
    /// Signals every change of the state's position, for waiters.
    moved: watch::Sender<()>,
    /// Asks the watch task to start over.
    rebuild: Notify,
    /// The generation a reader needs: raised when the prober sees that the
    /// stream was recreated, since a watch on the old stream (or one that
    /// resumed on the new stream by sequence) cannot be trusted.
    min_generation: AtomicU64,
    /// The latest probe answer, for [`Index::recent_read`].
    proof: Mutex<Option<Proof>>,
    /// Writes this process made to the bucket (shared with its
    /// [`Bucket`](super::Bucket)).
    local_writes: Arc<AtomicU64>,
    /// Asks the prober for a probe nobody waits for (keeps the proof
    /// young under steady traffic).
    refresh: AtomicBool,
    /// True while a test holds the watch ([`Index::hold`]).
    #[cfg(feature = "internals")]
    held: Arc<watch::Sender<bool>>,
}

/// Holds an index's watch (it applies nothing) until dropped: lets a test
/// make an index trail the stream on purpose.
#[cfg(feature = "internals")]
pub struct Hold(Arc<watch::Sender<bool>>);

#[cfg(feature = "internals")]
impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// A watched, folded view of one bucket.
pub struct Index<S: Fold> {
    shared: Arc<Shared<S>>,
    kv: kv::Store,
    task: tokio::task::JoinHandle<()>,
    prober: tokio::task::JoinHandle<()>,
}

impl<S: Fold> Drop for Index<S> {
    fn drop(&mut self) {
        self.task.abort();
        self.prober.abort();
    }
}

impl<S: Fold> Index<S> {
    /// Starts following `kv`; `local_writes` counts the writes this
    /// process makes to it (see [`Index::recent_read`]).
    pub fn follow(kv: kv::Store, local_writes: Arc<AtomicU64>) -> Index<S> {
        let shared = Arc::new(Shared {
            state: RwLock::new(State::empty(0)),
            waiting: Mutex::default(),
            probe: Notify::new(),
            moved: watch::channel(()).0,
            rebuild: Notify::new(),
            min_generation: AtomicU64::new(0),
            proof: Mutex::new(None),
            local_writes,
            refresh: AtomicBool::new(false),
            #[cfg(feature = "internals")]
            held: Arc::new(watch::channel(false).0),
        });
        let task = tokio::spawn(run(kv.clone(), shared.clone()));
        let prober = tokio::spawn(probe(kv.clone(), shared.clone()));
        Index { shared, kv, task, prober }
    }

    /// Stops the watch from applying anything until the [`Hold`] is
    /// dropped (tests only).
    #[cfg(feature = "internals")]
    pub fn hold(&self) -> Hold {
        self.shared.held.send_replace(true);
        Hold(self.shared.held.clone())
    }

    /// Reads the state as it stands (no I/O, no freshness promise).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.state.read().unwrap_or_else(|p| p.into_inner()).fold)
    }

    /// Waits (bounded) until the index has applied `revision`.
    ///
    /// # Errors
    /// [`KvError::Unavailable`] when it does not get there in time.
    pub async fn wait_for(&self, revision: u64, limit: Duration) -> Result<(), KvError> {
        self.read_at(revision, limit, |_| ()).await
    }

    /// Reads the state once it reflects at least `revision` of the current
    /// stream, checked under the same lock as the read.
    async fn read_at<R>(
        &self,
        revision: u64,
        limit: Duration,
        f: impl FnOnce(&S) -> R,
    ) -> Result<R, KvError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut moved = self.shared.moved.subscribe();
        let mut f = Some(f);
        loop {
            {
                let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
                let wanted = self.shared.min_generation.load(Ordering::Acquire);
                if state.generation >= wanted
                    && state.applied >= revision
                    && let Some(f) = f.take()
                {
                    return Ok(f(&state.fold));
                }
            }
            if !matches!(tokio::time::timeout_at(deadline, moved.changed()).await, Ok(Ok(()))) {
                return Err(KvError::Unavailable(format!("index of {} is not current", self.kv.name)));
            }
        }
    }

    /// Makes the index current with the stream leader (see module docs).
    ///
    /// # Errors
    /// [`KvError::Unavailable`] when the leader cannot be asked or the
    /// watch does not catch up within `limit`.
    pub async fn sync(&self, limit: Duration) -> Result<(), KvError> {
        self.sync_read(limit, |_| ()).await
    }

    /// [`Index::sync`], then reads the state that was proven current (a
    /// rebuild in between cannot slip an emptier state under the reader).
    ///
    /// # Errors
    /// As [`Index::sync`].
    pub async fn sync_read<R>(&self, limit: Duration, f: impl FnOnce(&S) -> R) -> Result<R, KvError> {
        // One deadline for both steps: a caller that gives up on its own
        // (the callout's decision budget) would skip the rebuild below.
        let deadline = tokio::time::Instant::now() + limit;
        let point = self.leader_point(limit).await?;
        self.read_from(point, deadline, f).await
    }

    /// Reads the state at freshness `fresh`: [`Index::sync_read`] or
    /// [`Index::recent_read`].
    ///
    /// # Errors
    /// As [`Index::sync`].
    pub async fn read_fresh<R>(
        &self,
        fresh: Fresh,
        limit: Duration,
        f: impl FnOnce(&S) -> R,
    ) -> Result<R, KvError> {
        match fresh {
            Fresh::Leader => self.sync_read(limit, f).await,
            Fresh::Recent => self.recent_read(limit, f).await,
        }
    }

    /// Reads the state once it has applied what a leader probe sent at most
    /// [`RECENT`] ago found, when this process has written nothing to the
    /// bucket since that probe was sent; otherwise as [`Index::sync_read`].
    /// A proof past half its age asks for a fresh probe in the background,
    /// so steady traffic does not wait for one.
    ///
    /// # Errors
    /// As [`Index::sync`].
    pub async fn recent_read<R>(&self, limit: Duration, f: impl FnOnce(&S) -> R) -> Result<R, KvError> {
        let local = self.shared.local_writes.load(Ordering::SeqCst);
        let proof = *self.shared.proof.lock().unwrap_or_else(|p| p.into_inner());
        match proof {
            Some(p) if p.local == local && p.sent.elapsed() <= RECENT => {
                if p.sent.elapsed() > RECENT / 2 {
                    self.shared.refresh.store(true, Ordering::Release);
                    self.shared.probe.notify_one();
                }
                self.read_from(p.point, tokio::time::Instant::now() + limit, f).await
            }
            _ => self.sync_read(limit, f).await,
        }
    }

    /// The first half of [`Index::sync_read`]: the stream leader's last
    /// sequence, from a probe sent after this call. Lets a caller probe
    /// several indexes at once and then read each at its point.
    ///
    /// # Errors
    /// As [`Index::sync`].
    pub async fn leader_point(&self, limit: Duration) -> Result<u64, KvError> {
        self.leader_last_sequence(limit).await
    }

    /// The second half of [`Index::sync_read`]: reads the state once it
    /// reflects `point` (from [`Index::leader_point`]), waiting until
    /// `deadline`.
    ///
    /// # Errors
    /// As [`Index::sync`].
    pub async fn read_from<R>(
        &self,
        point: u64,
        deadline: tokio::time::Instant,
        f: impl FnOnce(&S) -> R,
    ) -> Result<R, KvError> {
        let limit = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = self.read_at(point, limit, f).await;
        if read.is_err() {
            // A watch that applied nothing for the whole wait is stuck (for
            // example its consumer was on a server that died): start a fresh
            // one so that a later call can succeed. One that is still moving
            // (loading a large bucket) is left alone: restarting it would
            // only start the load over.
            let idle = self.shared.state.read().unwrap_or_else(|p| p.into_inner()).progressed_at.elapsed();
            if idle >= limit {
                self.shared.rebuild.notify_one();
            }
        }
        read
    }

    /// The stream's last sequence from a leader probe sent after this call,
    /// waiting at most `limit` (a probe still out when the call came in
    /// does not count, so a stalled leader must not hold callers for two).
    async fn leader_last_sequence(&self, limit: Duration) -> Result<u64, KvError> {
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        self.shared.probe.notify_one();
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(answer)) => answer.map_err(KvError::Unavailable),
            Ok(Err(_)) => Err(KvError::Unavailable(format!("prober of {} stopped", self.kv.name))),
            Err(_) => Err(KvError::Unavailable(format!("leader of {} did not answer in time", self.kv.name))),
        }
    }
}

/// Sends leader probes: each round takes every caller waiting at that
/// moment, sends one request, and gives all of them its answer. Callers
/// that arrive while a probe is out wait for the next round.
/// A probe that sees a new stream creation time raises the generation
/// readers need, so that they wait for a rebuilt watch.
async fn probe<S: Fold>(kv: kv::Store, shared: Arc<Shared<S>>) {
    let mut created = None;
    loop {
        shared.probe.notified().await;
        let batch = std::mem::take(&mut *shared.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        let refresh = shared.refresh.swap(false, Ordering::AcqRel);
        if batch.is_empty() && !refresh {
            continue;
        }
        // Read before the probe is sent: a write counted after this may
        // not be in the answer.
        let local = shared.local_writes.load(Ordering::SeqCst);
        let sent = tokio::time::Instant::now();
        let answer = match last_sequence(&kv).await {
            Ok((last, born)) => {
                if created.is_some_and(|c| c != born) {
                    warn!(bucket = %kv.name, "stream was recreated; rebuilding the index");
                    let current = shared.state.read().unwrap_or_else(|p| p.into_inner()).generation;
                    shared.min_generation.fetch_max(current + 1, Ordering::AcqRel);
                    shared.rebuild.notify_one();
                }
                created = Some(born);
                let mut proof = shared.proof.lock().unwrap_or_else(|p| p.into_inner());
                if proof.is_none_or(|p| p.sent < sent) {
                    *proof = Some(Proof { point: last, sent, local });
                }
                Ok(last)
            }
            Err(e) => {
                // Nothing can be proven now: recent reads wait for a probe.
                *shared.proof.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(e.to_string())
            }
        };
        for tx in batch {
            let _ = tx.send(answer.clone());
        }
    }
}

/// The stream's last sequence, from its leader, provided the leader still
/// sees a majority of its replicas as current: a leader that has lost its
/// quorum keeps answering for a while, and nothing it says can be trusted
/// to be the latest.
async fn last_sequence(kv: &kv::Store) -> Result<(u64, time::OffsetDateTime), KvError> {
    let mut stream = kv.stream.clone();
    let info =
        stream.info().await.map_err(|e| KvError::Unavailable(format!("stream info of {}: {e}", kv.name)))?;
    if let Some(cluster) = &info.cluster
        && !cluster.replicas.is_empty()
    {
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
                kv.name
            )));
        }
    }
    Ok((info.state.last_sequence, info.created))
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
    *shared.state.write().unwrap_or_else(|p| p.into_inner()) = State::empty(generation);
    shared.moved.send_replace(());
    loop {
        let entry = tokio::select! {
            next = entries.next() => match next {
                Some(entry) => entry.map_err(|e| e.to_string())?,
                None => return Err("watch ended".to_string()),
            },
            _ = shared.rebuild.notified() => return Ok(()),
        };
        #[cfg(feature = "internals")]
        {
            let _ = shared.held.subscribe().wait_for(|held| !held).await;
        }
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value.as_ref()),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        {
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            state.fold.apply(&entry.key, value, entry.revision);
            state.applied = state.applied.max(entry.revision);
            state.progressed_at = tokio::time::Instant::now();
        }
        shared.moved.send_replace(());
    }
}
