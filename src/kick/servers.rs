//! Who is in the cluster: a roll call over `$SYS.REQ.SERVER.PING` that is
//! complete by construction. Every answer (STATSZ) names the servers its
//! server has live routes to and the clusters it has gateways to; the roll
//! call waits until every server so named has answered itself and every
//! named cluster has answered at least once, up to a bound. A server that
//! answers late is therefore waited for instead of being left out; one
//! that does not answer within the bound leaves the roll call marked
//! incomplete (callers then say so and try again). Also reads the servers'
//! authorization timeout from VARZ.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use tracing::debug;

use super::Kicker;
use unibus_proto::error::Error;
use unibus_proto::subjects;

/// Upper bound of one scatter-gather over all servers.
pub(super) const GATHER_MAX: Duration = Duration::from_millis(500);
/// How long the cached list of servers (and their auth timeout) is trusted
/// by lookups that do not need a fresh roll call.
const SERVERS_TTL: Duration = Duration::from_secs(10);
/// Least time between two forced refreshes of the cached list.
const SERVERS_REFRESH_MIN: Duration = Duration::from_secs(1);
/// nats-server's default `authorization.timeout`, used when no server says.
pub const AUTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct PingReply {
    server: PingServer,
    #[serde(default)]
    statsz: Option<Statsz>,
}

#[derive(Deserialize)]
struct PingServer {
    name: String,
    id: String,
    #[serde(default)]
    cluster: Option<String>,
}

#[derive(Deserialize, Default)]
struct Statsz {
    #[serde(default)]
    routes: Vec<Peer>,
    #[serde(default)]
    gateways: Vec<Peer>,
}

/// A route (named by the peer server) or a gateway (named by its cluster).
#[derive(Deserialize)]
struct Peer {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct VarzReply {
    #[serde(default)]
    data: Option<Varz>,
}

#[derive(Deserialize)]
struct Varz {
    /// Seconds (nats-server reports a float).
    #[serde(default)]
    auth_timeout: Option<f64>,
    /// Websocket and MQTT listeners may set their own.
    #[serde(default)]
    websocket: Option<Listener>,
    #[serde(default)]
    mqtt: Option<Listener>,
}

#[derive(Deserialize)]
struct Listener {
    #[serde(default)]
    auth_timeout: Option<f64>,
}

impl Varz {
    /// The longest authorization timeout of any client listener.
    fn longest_auth_timeout(&self) -> Option<Duration> {
        let listeners = [&self.websocket, &self.mqtt];
        std::iter::once(self.auth_timeout)
            .chain(listeners.into_iter().map(|l| l.as_ref().and_then(|l| l.auth_timeout)))
            .flatten()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 3600.0)
            .map(Duration::from_secs_f64)
            .max()
    }
}

/// What the PING answers of one roll call have shown.
#[derive(Default, Debug)]
pub struct Roll {
    /// Server name -> server id, of every server that answered.
    pub by_name: HashMap<String, String>,
    clusters_answered: HashSet<String>,
    named_servers: HashSet<String>,
    named_clusters: HashSet<String>,
}

impl Roll {
    fn add(&mut self, reply: PingReply) {
        let stats = reply.statsz.unwrap_or_default();
        self.named_servers.extend(stats.routes.into_iter().map(|p| p.name).filter(|n| !n.is_empty()));
        self.named_clusters.extend(stats.gateways.into_iter().map(|p| p.name).filter(|n| !n.is_empty()));
        if let Some(cluster) = reply.server.cluster.filter(|c| !c.is_empty()) {
            self.clusters_answered.insert(cluster);
        }
        self.by_name.insert(reply.server.name, reply.server.id);
    }

    /// True when some server answered and every server or cluster that an
    /// answer named as a peer has answered too.
    pub fn complete(&self) -> bool {
        !self.by_name.is_empty()
            && self.named_servers.iter().all(|n| self.by_name.contains_key(n))
            && self.named_clusters.iter().all(|c| self.clusters_answered.contains(c))
    }

    /// Ids of the servers that answered.
    pub fn ids(&self) -> Vec<String> {
        self.by_name.values().cloned().collect()
    }
}

/// The cached roll (for lookups by server name) and auth timeout.
#[derive(Default)]
pub(super) struct Cache {
    by_name: HashMap<String, String>,
    seen_at: Option<tokio::time::Instant>,
    auth_timeout: Option<(Duration, tokio::time::Instant)>,
}

impl Kicker {
    /// Scatter-gather: publishes `body` to `subject` and collects answers
    /// until `done` says the set is complete or [`GATHER_MAX`] passed.
    ///
    /// # Errors
    /// `unavailable` when the request cannot be sent.
    async fn gather(
        &self,
        subject: &str,
        body: String,
        mut done: impl FnMut(&async_nats::Message) -> bool,
    ) -> Result<(), Error> {
        let unavailable = |e: String| Error::Unavailable(e);
        let inbox = self.sys.new_inbox();
        let mut sub = self.sys.subscribe(inbox.clone()).await.map_err(|e| unavailable(e.to_string()))?;
        self.sys
            .publish_with_reply(subject.to_string(), inbox, body.into())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + GATHER_MAX;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if done(&msg) {
                break;
            }
        }
        Ok(())
    }

    /// A fresh roll call of the cluster's servers (also refreshes the
    /// cache used by [`Kicker::request_origin`]).
    ///
    /// # Errors
    /// `unavailable` when the request cannot be sent.
    pub async fn roll_call(&self) -> Result<Roll, Error> {
        let mut roll = Roll::default();
        self.gather(subjects::SYS_SERVER_PING, String::new(), |msg| {
            match serde_json::from_slice::<PingReply>(&msg.payload) {
                Ok(reply) => roll.add(reply),
                Err(e) => debug!(error = %e, "unreadable PING answer"),
            }
            roll.complete()
        })
        .await?;
        debug!(servers = roll.by_name.len(), complete = roll.complete(), "roll call");
        if !roll.by_name.is_empty() {
            let mut cache = self.servers.lock().await;
            cache.by_name.extend(roll.by_name.iter().map(|(k, v)| (k.clone(), v.clone())));
            if roll.complete() {
                cache.by_name.retain(|name, _| roll.by_name.contains_key(name));
            }
            cache.seen_at = Some(tokio::time::Instant::now());
        }
        Ok(roll)
    }

    /// Server names to ids, cached for a while.
    ///
    /// # Errors
    /// `unavailable` when the servers cannot be asked.
    pub(super) async fn servers(&self, refresh: bool) -> Result<HashMap<String, String>, Error> {
        {
            let cache = self.servers.lock().await;
            let age = cache.seen_at.map(|t| t.elapsed());
            let fresh = age.is_some_and(|a| a < SERVERS_TTL);
            // Forced refreshes are rate-limited: while the system account is
            // unreachable, every lookup would otherwise wait out a gather.
            let recent = age.is_some_and(|a| a < SERVERS_REFRESH_MIN);
            if fresh && (!refresh || recent) {
                return Ok(cache.by_name.clone());
            }
        }
        // The roll call refreshes the cache; an empty one still counts as
        // asked (rate limit).
        self.roll_call().await?;
        let mut cache = self.servers.lock().await;
        cache.seen_at = Some(tokio::time::Instant::now());
        Ok(cache.by_name.clone())
    }

    /// Ids of the servers last seen (for when a roll call fails).
    pub(super) async fn cached_ids(&self) -> Vec<String> {
        self.servers.lock().await.by_name.values().cloned().collect()
    }

    /// The longest `authorization.timeout` of the cluster's servers and
    /// their websocket and MQTT listeners (from VARZ; nats-server's default
    /// of 2 s where a server does not say, or when none answers). A
    /// connection is closed by its server unless admitted within this time
    /// of its creation (of its TLS handshake, with TLS).
    pub async fn auth_timeout(&self) -> Duration {
        if let Some((t, at)) = self.servers.lock().await.auth_timeout
            && at.elapsed() < SERVERS_TTL
        {
            return t;
        }
        let mut expected = self.cached_ids().await.len();
        if expected == 0 {
            expected = self.roll_call().await.map_or(0, |r| r.by_name.len());
        }
        let expected = expected.max(1);
        let (mut answers, mut longest) = (0, None::<Duration>);
        let gathered = self
            .gather(subjects::SYS_VARZ_PING, String::new(), |msg| {
                answers += 1;
                let said = serde_json::from_slice::<VarzReply>(&msg.payload)
                    .ok()
                    .and_then(|r| r.data)
                    .and_then(|v| v.longest_auth_timeout());
                let t = said.unwrap_or(AUTH_TIMEOUT_DEFAULT);
                longest = Some(longest.map_or(t, |l| l.max(t)));
                answers >= expected
            })
            .await;
        let Some(mut t) = longest.filter(|_| gathered.is_ok()) else {
            return AUTH_TIMEOUT_DEFAULT;
        };
        if answers < expected {
            // A silent server may use the default: never assume less.
            t = t.max(AUTH_TIMEOUT_DEFAULT);
        }
        self.servers.lock().await.auth_timeout = Some((t, tokio::time::Instant::now()));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str, cluster: &str, routes: &[&str], gateways: &[&str]) -> PingReply {
        let peers =
            |names: &[&str]| names.iter().map(|n| serde_json::json!({ "name": n })).collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({
            "server": { "name": name, "id": format!("N{name}"), "cluster": cluster },
            "statsz": { "routes": peers(routes), "gateways": peers(gateways), "active_servers": 3 }
        }))
        .unwrap()
    }

    /// The longest of the client, websocket and MQTT auth timeouts counts.
    #[test]
    fn auth_timeout_is_the_longest_listener_timeout() {
        let varz = |v: serde_json::Value| serde_json::from_value::<Varz>(v).unwrap().longest_auth_timeout();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(varz(serde_json::json!({ "auth_timeout": 2 })), ms(2000));
        assert_eq!(
            varz(
                serde_json::json!({ "auth_timeout": 3, "websocket": { "auth_timeout": 5 }, "mqtt": { "auth_timeout": 4.5 } })
            ),
            ms(5000)
        );
        assert_eq!(varz(serde_json::json!({ "auth_timeout": 0.5, "mqtt": {} })), ms(500));
        assert_eq!(varz(serde_json::json!({ "auth_timeout": -1 })), None);
    }

    /// A roll call is complete only once every server a peer names (by
    /// route) has answered, and every cluster named by a gateway.
    #[test]
    fn roll_waits_for_every_named_server_and_cluster() {
        let mut roll = Roll::default();
        assert!(!roll.complete(), "no answer yet");
        roll.add(answer("n0", "c", &["n1", "n1", "n2"], &[]));
        roll.add(answer("n1", "c", &["n0", "n2"], &[]));
        assert!(!roll.complete(), "n2 is named but silent");
        roll.add(answer("n2", "c", &["n0", "n1"], &["east"]));
        assert!(!roll.complete(), "cluster east is named but silent");
        roll.add(answer("e0", "east", &[], &["c"]));
        assert!(roll.complete());
        assert_eq!(roll.ids().len(), 4);
        let mut single = Roll::default();
        single.add(answer("solo", "", &[], &[]));
        assert!(single.complete(), "a lone server without routes is the whole cluster");
    }
}
