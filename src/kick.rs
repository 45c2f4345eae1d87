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

/// Quiet time after the last CONNZ answer before the scatter-gather ends.
const CONNZ_QUIET: Duration = Duration::from_millis(60);
/// Upper bound of one CONNZ scatter-gather.
const CONNZ_MAX: Duration = Duration::from_millis(1000);
/// Pause between a delivered reply and the KICK of its requester: the
/// server was seen to drop replies that were immediately followed by a
/// KICK of the requester.
pub const REPLY_GRACE: Duration = Duration::from_millis(20);

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
}

impl Kicker {
    /// Wraps a system-account connection.
    pub fn new(sys: async_nats::Client) -> Kicker {
        Kicker { sys }
    }

    /// Every open connection of `sign_pub`, on every server.
    ///
    /// # Errors
    /// `unavailable` when no server answers.
    pub async fn find(&self, sign_pub: &str) -> Result<Vec<Target>, Error> {
        let inbox = self.sys.new_inbox();
        let mut sub =
            self.sys.subscribe(inbox.clone()).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        let body = serde_json::json!({ "user": sign_pub, "auth": true, "limit": 4096 }).to_string();
        self.sys
            .publish_with_reply(subjects::SYS_CONNZ_PING, inbox, body.into())
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + CONNZ_MAX;
        let mut targets = Vec::new();
        let mut answers = 0;
        loop {
            let wait = if answers == 0 { CONNZ_MAX } else { CONNZ_QUIET };
            let next =
                tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + wait), sub.next()).await;
            let Ok(Some(msg)) = next else { break };
            answers += 1;
            match serde_json::from_slice::<ConnzReply>(&msg.payload) {
                Ok(ConnzReply { data: Some(d) }) => targets.extend(
                    d.connections.into_iter().map(|c| Target { server_id: d.server_id.clone(), cid: c.cid }),
                ),
                _ => warn!("unreadable CONNZ answer"),
            }
        }
        if answers == 0 {
            return Err(Error::Unavailable("no server answered CONNZ".into()));
        }
        debug!(%sign_pub, servers = answers, found = targets.len(), "connections found");
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
