//! Revocation without a gap: the sweeps that follow a KV write which takes
//! rights away from a key (revoke, delete, a room membership change).
//!
//! One CONNZ snapshot is not enough. A connection whose callout decision
//! was made before the write (so it was admitted with the old rights) may
//! register on its server only after the snapshot. But nats-server starts
//! a connection's authorization timer when the connection is created
//! (after its TLS handshake, with TLS; `authorization.timeout`, 2 s by
//! default, websocket and MQTT listeners may set their own) and closes it
//! unless the callout's answer was applied before the timer fires; the
//! timer started before the decision, which came before the write. So every
//! connection admitted on a decision older than the write is registered
//! (and listed by CONNZ) before `write + auth_timeout`. (The callout's own
//! 1.5 s decision budget is shorter still.)
//!
//! Hence: the first sweep lists before the reply and kicks after it
//! ([`super::REPLY_GRACE`]); the settling sweep lists again at
//! `write + auth_timeout + SETTLE_MARGIN` (auth timeout read from VARZ,
//! the longest in the cluster) and kicks what it finds that its server
//! created before it first listed after the write (later connections were
//! decided after the write and already carry the new rights). A sweep
//! that could not list every server (the system account unreachable, a
//! server silent) is retried with backoff for up to [`RETRY_FOR`] after
//! the write; the write itself always stands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Found, Kicker, Target};

/// Margin after `write + auth_timeout` before the settling sweep lists.
pub const SETTLE_MARGIN: Duration = Duration::from_millis(250);
/// First pause before retrying a sweep that could not list every server.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest pause between two retries.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long after the write unfinished sweeps are retried.
pub const RETRY_FOR: Duration = Duration::from_secs(30);

/// The closing of one key's connections after a write that took rights
/// away: what the first search found, and what is left to do.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Connection names (device keys) whose rights the write changed.
    users: Vec<String>,
    written_at: Instant,
    first: Found,
}

impl Sweep {
    /// How many connections the first search found (the reply's `kicked`).
    pub fn kicked(&self) -> u64 {
        self.first.targets.len() as u64
    }

    /// True when the first search could not list every server: closing
    /// continues in the background (the reply's `kick_pending`).
    pub fn pending(&self) -> bool {
        !self.first.complete
    }

    /// Connections to close right after the reply.
    pub fn targets(&self) -> &[Target] {
        &self.first.targets
    }
}

/// Follow-up sweeps running, by sorted connection names, each with the
/// newer sweep for the same names that waits to run after it.
pub(super) type Settling = Arc<Mutex<HashMap<Vec<String>, Option<Sweep>>>>;

impl Kicker {
    /// Runs the sweeps that follow `sweep` ([`Kicker::follow_up`]) in the
    /// background. At most one follow-up runs per set of names, with at
    /// most one more waiting: a newer sweep replaces a waiting older one,
    /// since its first listing came after the newer write and so its
    /// settling closes everything the older one's would. A flood of
    /// writes to one key therefore keeps at most two follow-ups alive
    /// (each runs for `auth_timeout` and more), not one per write.
    pub fn settle(&self, sweep: Sweep) {
        let mut key = sweep.users.clone();
        key.sort();
        {
            let mut settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(waiting) = settling.get_mut(&key) {
                if waiting.as_ref().is_none_or(|w| w.written_at <= sweep.written_at) {
                    *waiting = Some(sweep);
                }
                return;
            }
            settling.insert(key.clone(), None);
        }
        let kicker = self.clone();
        tokio::spawn(async move {
            let mut next = Some(sweep);
            while let Some(sweep) = next {
                kicker.follow_up(sweep).await;
                let mut settling = kicker.settling.lock().unwrap_or_else(|p| p.into_inner());
                next = settling.get_mut(&key).and_then(Option::take);
                if next.is_none() {
                    settling.remove(&key);
                }
            }
        });
    }

    /// Starts the sweeps for the connections named `users` (an account's
    /// device keys) after a write that has just been acknowledged: the
    /// first search (before the reply). Never fails.
    pub async fn sweep_after_write(&self, users: &[String]) -> Sweep {
        let written_at = Instant::now();
        let first = self.find_all(users).await;
        if !first.complete {
            warn!(
                ?users,
                found = first.targets.len(),
                "not every server listed; closing continues in the background"
            );
        }
        Sweep { users: users.to_vec(), written_at, first }
    }

    /// The sweeps after the first kick: retries until a search lists every
    /// server and closes all it found, and the settling sweep at
    /// `write + auth_timeout + margin`.
    /// Runs after the reply; returns when no connection admitted before the
    /// write can remain, or [`RETRY_FOR`] after the write.
    pub async fn follow_up(&self, sweep: Sweep) {
        let settle_at = sweep.written_at + self.auth_timeout().await + SETTLE_MARGIN;
        let give_up = sweep.written_at + RETRY_FOR;
        let user = sweep.users.join(",");
        let (mut complete, mut delay) = (sweep.first.complete, RETRY_FIRST);
        // Per server, its clock when it first listed after the write: a
        // connection created later was admitted on a decision made after
        // the write (with the new rights) and is left alone.
        let mut cutoffs = sweep.first.listed_at.clone();
        loop {
            let next = if complete { settle_at } else { Instant::now() + delay };
            if next > give_up {
                error!(%user, "gave up closing connections: some may stay open until their JWT expires");
                return;
            }
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            let found = self.find_all(&sweep.users).await;
            for (server, now) in &found.listed_at {
                cutoffs.entry(server.clone()).or_insert(*now);
            }
            let old = found.created_by(&cutoffs);
            let closed = self.kick(&old).await;
            info!(%user, found = found.targets.len(), old = old.len(), closed, complete = found.complete, "sweep");
            // Swept: every server listed and every old connection closed
            // (a KICK that timed out is tried again).
            let swept = found.complete && closed == old.len();
            if swept && started >= settle_at {
                return;
            }
            if !swept {
                let unclosed = old.len() - closed;
                warn!(%user, listed = found.complete, unclosed, retry_in = ?delay, "sweep incomplete");
                delay = (delay * 2).min(RETRY_MAX);
            }
            complete = swept;
        }
    }
}
