//! Closing live connections: finds every connection of a key on every
//! server of the cluster (`$SYS.REQ.SERVER.PING.CONNZ` filtered by the user
//! name the callout put into the user JWT) and closes them with
//! `$SYS.REQ.SERVER.<id>.KICK`, over a system-account connection.

use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use tracing::{debug, warn};

use crate::error::Error;
use crate::subjects;

/// One live connection: the server it is on and its client id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Server public key (`N...`).
    pub server_id: String,
    /// Client id on that server.
    pub cid: u64,
}

/// Upper bound of one scatter-gather (CONNZ or PING) over all servers.
const GATHER_MAX: Duration = Duration::from_millis(500);
/// With no known answer count, a scatter-gather ends this long after the
/// last answer.
const GATHER_QUIET: Duration = Duration::from_millis(30);
/// How long the list of servers is trusted before it is asked again.
const SERVERS_TTL: Duration = Duration::from_secs(10);
/// Least time between two forced refreshes of the list of servers.
const SERVERS_REFRESH_MIN: Duration = Duration::from_secs(1);
/// Pause between a flushed reply and the KICK of its requester: the server
/// was seen to drop replies that were immediately followed by a KICK of the
/// requester. 20 ms sufficed on an idle box, but with 64 clients
/// registering on 2 busy cores one benchmark run in three lost a register
/// reply (the client timed out although it was registered); with 200 ms no
/// run did. Revocation stays well within DESIGN's 1 s.
pub const REPLY_GRACE: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct PingReply {
    server: PingServer,
}

#[derive(Deserialize)]
struct PingServer {
    name: String,
    id: String,
}

/// Server name -> id of every server in the cluster, as last seen.
#[derive(Default)]
struct Servers {
    by_name: std::collections::HashMap<String, String>,
    seen_at: Option<tokio::time::Instant>,
}

#[derive(Deserialize)]
struct ConnzReply {
    #[serde(default)]
    data: Option<ConnzData>,
}

#[derive(Deserialize)]
struct ConnzData {
    server_id: String,
    #[serde(default)]
    connections: Vec<ConnInfo>,
}

#[derive(Deserialize)]
struct ConnInfo {
    cid: u64,
}

/// Finds and closes connections through the system account.
#[derive(Clone)]
pub struct Kicker {
    sys: async_nats::Client,
    servers: std::sync::Arc<tokio::sync::Mutex<Servers>>,
}

impl Kicker {
    /// Wraps a system-account connection.
    pub fn new(sys: async_nats::Client) -> Kicker {
        Kicker { sys, servers: Default::default() }
    }

    /// Scatter-gather: publishes `body` to `subject` and collects answers
    /// until `expected` arrived (when known; else until [`GATHER_QUIET`]
    /// passed without one) or [`GATHER_MAX`] passed.
    async fn gather(
        &self,
        subject: &str,
        body: String,
        expected: Option<usize>,
    ) -> Result<Vec<async_nats::Message>, Error> {
        let inbox = self.sys.new_inbox();
        let mut sub =
            self.sys.subscribe(inbox.clone()).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        self.sys
            .publish_with_reply(subject.to_string(), inbox, body.into())
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + GATHER_MAX;
        let mut answers = Vec::new();
        while expected.is_none_or(|n| answers.len() < n) {
            let until = match (expected, answers.is_empty()) {
                (None, false) => deadline.min(tokio::time::Instant::now() + GATHER_QUIET),
                _ => deadline,
            };
            match tokio::time::timeout_at(until, sub.next()).await {
                Ok(Some(msg)) => answers.push(msg),
                _ => break,
            }
        }
        Ok(answers)
    }

    /// Server names to ids (and so the cluster size), cached for a while.
    async fn servers(&self, refresh: bool) -> Result<std::collections::HashMap<String, String>, Error> {
        let mut servers = self.servers.lock().await;
        let age = servers.seen_at.map(|t| t.elapsed());
        let fresh = age.is_some_and(|a| a < SERVERS_TTL);
        // Forced refreshes are rate-limited: while the system account is
        // unreachable (a server restart), every kick would otherwise wait
        // out a whole gather, one after another.
        let recent = age.is_some_and(|a| a < SERVERS_REFRESH_MIN);
        if (refresh && !recent) || !fresh {
            let answers = self.gather(subjects::SYS_SERVER_PING, String::new(), None).await?;
            let found: std::collections::HashMap<String, String> = answers
                .iter()
                .filter_map(|m| serde_json::from_slice::<PingReply>(&m.payload).ok())
                .map(|p| (p.server.name, p.server.id))
                .collect();
            if !found.is_empty() {
                servers.by_name = found;
            }
            servers.seen_at = Some(tokio::time::Instant::now());
        }
        Ok(servers.by_name.clone())
    }

    /// The connection that made a request, from its `Nats-Request-Info`
    /// (server name and client id).
    ///
    /// # Errors
    /// `unavailable` when the servers cannot be listed.
    pub async fn request_origin(&self, server_name: &str, cid: u64) -> Result<Option<Target>, Error> {
        let mut ids = self.servers(false).await?;
        if !ids.contains_key(server_name) {
            ids = self.servers(true).await?;
        }
        Ok(ids.get(server_name).map(|id| Target { server_id: id.clone(), cid }))
    }

    /// Every open connection of `sign_pub`, on every server.
    ///
    /// # Errors
    /// `unavailable` when no server answers.
    pub async fn find(&self, sign_pub: &str) -> Result<Vec<Target>, Error> {
        let expected = self.servers(false).await?.len();
        let body = serde_json::json!({ "user": sign_pub, "auth": true, "limit": 4096 }).to_string();
        let answers = self.gather(subjects::SYS_CONNZ_PING, body, Some(expected.max(1))).await?;
        if answers.is_empty() {
            return Err(Error::Unavailable("no server answered CONNZ".into()));
        }
        if answers.len() != expected {
            // The cluster changed: ask for the servers again next time.
            self.servers.lock().await.seen_at = None;
        }
        let mut targets = Vec::new();
        for msg in &answers {
            match serde_json::from_slice::<ConnzReply>(&msg.payload) {
                Ok(ConnzReply { data: Some(d) }) => targets.extend(
                    d.connections.into_iter().map(|c| Target { server_id: d.server_id.clone(), cid: c.cid }),
                ),
                _ => warn!("unreadable CONNZ answer"),
            }
        }
        debug!(%sign_pub, servers = answers.len(), found = targets.len(), "connections found");
        Ok(targets)
    }

    /// Closes each target; returns how many the servers confirmed.
    pub async fn kick(&self, targets: &[Target]) -> usize {
        let mut closed = 0;
        for t in targets {
            let body = serde_json::json!({ "cid": t.cid }).to_string();
            match self.sys.request(subjects::sys_kick(&t.server_id), body.into()).await {
                Ok(m) if !String::from_utf8_lossy(&m.payload).contains("\"error\"") => closed += 1,
                Ok(m) => debug!(cid = t.cid, reply = %String::from_utf8_lossy(&m.payload), "kick refused"),
                Err(e) => warn!(cid = t.cid, error = %e, "kick failed"),
            }
        }
        closed
    }
}
