//! Closing live connections: finds every connection of a key on every
//! server of the cluster (a complete roll call of the servers, then
//! `$SYS.REQ.SERVER.<id>.CONNZ` per server, filtered by the user name the
//! callout put into the user JWT and paged past the page size) and closes
//! them with `$SYS.REQ.SERVER.<id>.KICK`, over a system-account
//! connection. [`sweep`] schedules the sweeps that follow a write which
//! takes rights away, so that no connection admitted before the write
//! survives it.

mod servers;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{debug, warn};

use unibus_proto::error::Error;
use unibus_proto::subjects;

pub use sweep::Sweep;

/// One live connection: the server it is on and its client id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Server public key (`N...`).
    pub server_id: String,
    /// Client id on that server.
    pub cid: u64,
}

/// The connections of one key that a search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Every connection listed.
    pub targets: Vec<Target>,
    /// True when every server of the cluster answered (all pages): no
    /// connection can have been missed.
    pub complete: bool,
    /// Per server id: that server's clock when it listed (CONNZ `now`).
    pub listed_at: HashMap<String, OffsetDateTime>,
    /// Per target: when its server created the connection (CONNZ `start`).
    started: Vec<Option<OffsetDateTime>>,
}

impl Found {
    /// The targets created no later than their server's cutoff in
    /// `cutoffs` (server id -> time on that server's own clock, so clocks
    /// of different servers are never compared). Targets on a server
    /// without a cutoff, and those of unknown creation time, are all kept.
    pub fn created_by(&self, cutoffs: &HashMap<String, OffsetDateTime>) -> Vec<Target> {
        let old =
            |(t, started): &(&Target, &Option<OffsetDateTime>)| match (cutoffs.get(&t.server_id), started) {
                (Some(cutoff), Some(started)) => *started <= *cutoff,
                _ => true,
            };
        self.targets.iter().zip(&self.started).filter(old).map(|(t, _)| t.clone()).collect()
    }
}

/// One server's listing: its clock, and each connection's creation time.
struct Listing {
    now: Option<OffsetDateTime>,
    conns: BTreeMap<u64, Option<OffsetDateTime>>,
}

fn rfc3339(s: Option<&str>) -> Option<OffsetDateTime> {
    s.and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// Default CONNZ page size (connections per request and server).
pub const CONNZ_PAGE: usize = 4096;
/// Longest wait for one KICK answer.
const KICK_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between a flushed reply and the KICK of its requester: the server
/// was seen to drop replies that were immediately followed by a KICK of the
/// requester. 20 ms sufficed on an idle box, but with 64 clients
/// registering on 2 busy cores one benchmark run in three lost a register
/// reply (the client timed out although it was registered); with 200 ms no
/// run did. Revocation stays well within the 1 s of docs/protocol.md section 5.
pub const REPLY_GRACE: Duration = Duration::from_millis(250);

/// A reply of nats-server's `$SYS.REQ.SERVER.<id>.<endpoint>` API (its
/// `ServerAPIResponse`): the answering server, then the endpoint's `data`
/// or an `error`.
#[derive(Debug, Deserialize)]
struct ApiReply<T> {
    /// Every reply names its server (not read here), so a reply without
    /// it is not one of these.
    #[serde(rename = "server")]
    _server: serde::de::IgnoredAny,
    data: Option<T>,
    error: Option<ApiError>,
}

/// nats-server's `ApiError`.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: i64,
    #[serde(default)]
    description: String,
}

/// Why a `$SYS` API reply is no success.
#[derive(Debug, thiserror::Error)]
enum ReplyError {
    /// Not a reply of the API (not JSON, or without its server).
    #[error("malformed reply: {0}")]
    Malformed(serde_json::Error),
    /// The server refused.
    #[error("refused: {} ({})", .0.description, .0.code)]
    Refused(ApiError),
}

/// Reads one `$SYS` API reply: `Ok(data)` when the server did what was
/// asked (no `error`; `data` is absent where an endpoint returns none, as
/// KICK).
///
/// # Errors
/// [`ReplyError`] when the reply is not one of the API's, or an error.
fn read_reply<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Option<T>, ReplyError> {
    let reply: ApiReply<T> = serde_json::from_slice(payload).map_err(ReplyError::Malformed)?;
    match reply.error {
        Some(e) => Err(ReplyError::Refused(e)),
        None => Ok(reply.data),
    }
}

/// Whether a KICK reply confirms the connection was closed.
///
/// # Errors
/// [`ReplyError`] when it does not.
fn kicked(payload: &[u8]) -> Result<(), ReplyError> {
    read_reply::<serde::de::IgnoredAny>(payload).map(|_| ())
}

#[derive(Deserialize)]
struct ConnzData {
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    total: usize,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    connections: Vec<ConnInfo>,
}

#[derive(Deserialize)]
struct ConnInfo {
    cid: u64,
    #[serde(default)]
    start: Option<String>,
}

/// Finds and closes connections through the system account.
#[derive(Clone)]
pub struct Kicker {
    sys: async_nats::Client,
    page: usize,
    servers: std::sync::Arc<tokio::sync::Mutex<servers::Cache>>,
    /// Follow-up sweeps running, by their sorted connection names, each
    /// with the newer sweep waiting to run after it ([`Kicker::settle`]).
    settling: sweep::Settling,
}

impl Kicker {
    /// Wraps a system-account connection (CONNZ pages of [`CONNZ_PAGE`]).
    pub fn new(sys: async_nats::Client) -> Kicker {
        Self::with_page_size(sys, CONNZ_PAGE)
    }

    /// Wraps a system-account connection, asking CONNZ for `page`
    /// connections at a time (at least 1).
    pub fn with_page_size(sys: async_nats::Client, page: usize) -> Kicker {
        Kicker { sys, page: page.max(1), servers: Default::default(), settling: Default::default() }
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

    /// Every open connection of `sign_pub`, on every server: a fresh roll
    /// call, then every page of CONNZ of each server. Never fails: what
    /// could not be listed shows as `complete: false`.
    #[cfg(feature = "internals")]
    pub async fn find(&self, sign_pub: &str) -> Found {
        self.find_all(&[sign_pub.to_string()]).await
    }

    /// Every open connection of any of `users` (connection names: device
    /// keys), on every server, from one roll call.
    pub async fn find_all(&self, users: &[String]) -> Found {
        let (ids, mut complete) = match self.roll_call().await {
            Ok(roll) if !roll.by_name.is_empty() => (roll.ids(), roll.complete()),
            Ok(_) => (self.cached_ids().await, false),
            Err(e) => {
                warn!(error = %e, "cannot ask the servers");
                (self.cached_ids().await, false)
            }
        };
        let pairs: Vec<(&String, &String)> =
            ids.iter().flat_map(|id| users.iter().map(move |u| (id, u))).collect();
        let lists = futures::future::join_all(pairs.iter().map(|(id, u)| self.connz(id, u))).await;
        let mut found = Found::default();
        for ((id, _), listed) in pairs.iter().zip(lists) {
            match listed {
                Ok(listing) => {
                    if let Some(now) = listing.now {
                        let at = found.listed_at.entry((*id).clone()).or_insert(now);
                        *at = (*at).min(now);
                    }
                    for (cid, started) in listing.conns {
                        found.targets.push(Target { server_id: (*id).clone(), cid });
                        found.started.push(started);
                    }
                }
                Err(e) => {
                    complete = false;
                    warn!(server = %id, error = %e, "cannot list connections");
                }
            }
        }
        found.complete = complete && !ids.is_empty();
        debug!(?users, servers = ids.len(), found = found.targets.len(), complete, "connections found");
        found
    }

    /// Client ids of `user`'s open connections on one server, page by page
    /// (CONNZ sorts by cid; a page shorter than its limit is the last).
    /// Pages overlap by a quarter so that connections closing meanwhile
    /// (which shift later entries forward) are not skipped.
    ///
    /// # Errors
    /// `unavailable` when the server does not answer every page in time.
    async fn connz(&self, server_id: &str, user: &str) -> Result<Listing, Error> {
        let deadline = tokio::time::Instant::now() + servers::GATHER_MAX;
        let subject = subjects::sys_connz(server_id);
        let mut offset = 0usize;
        let mut listing = Listing { now: None, conns: BTreeMap::new() };
        loop {
            let body =
                serde_json::json!({ "user": user, "auth": true, "limit": self.page, "offset": offset });
            let msg =
                tokio::time::timeout_at(deadline, self.sys.request(subject.clone(), body.to_string().into()))
                    .await
                    .map_err(|_| Error::Unavailable("CONNZ timed out".into()))?
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
            let data = read_reply::<ConnzData>(&msg.payload)
                .map_err(|e| Error::Unavailable(format!("CONNZ: {e}")))?
                .ok_or_else(|| Error::Unavailable("CONNZ: reply without data".into()))?;
            let limit = if data.limit == 0 { self.page } else { data.limit };
            let got = data.connections.len();
            // The first page's clock: every connection created later was
            // created after this search began.
            listing.now = listing.now.or_else(|| rfc3339(data.now.as_deref()));
            listing.conns.extend(data.connections.into_iter().map(|c| (c.cid, rfc3339(c.start.as_deref()))));
            if got < limit || offset + limit >= data.total {
                return Ok(listing);
            }
            offset += (limit - limit / 4).max(1);
        }
    }

    /// Closes each target (all at once); returns how many the servers
    /// confirmed.
    pub async fn kick(&self, targets: &[Target]) -> usize {
        let kicks = targets.iter().map(|t| async move {
            let body = serde_json::json!({ "cid": t.cid }).to_string();
            let asked = self.sys.request(subjects::sys_kick(&t.server_id), body.into());
            match tokio::time::timeout(KICK_TIMEOUT, asked).await {
                Ok(Ok(m)) => match kicked(&m.payload) {
                    Ok(()) => true,
                    // The connection is gone already (closed meanwhile).
                    Err(e @ ReplyError::Refused(_)) => {
                        debug!(cid = t.cid, server = %t.server_id, error = %e, "kick refused");
                        false
                    }
                    Err(e) => {
                        warn!(cid = t.cid, server = %t.server_id, error = %e, "kick answered unreadably");
                        false
                    }
                },
                Ok(Err(e)) => {
                    warn!(cid = t.cid, error = %e, "kick failed");
                    false
                }
                Err(_) => {
                    warn!(cid = t.cid, server = %t.server_id, "kick timed out");
                    false
                }
            }
        });
        futures::future::join_all(kicks).await.into_iter().filter(|ok| *ok).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settling sweep keeps connections created up to their own
    /// server's cutoff and those it cannot place in time.
    #[test]
    fn created_by_compares_each_server_with_its_own_cutoff() {
        let t = |s: &str| rfc3339(Some(s));
        let target = |server: &str, cid| Target { server_id: server.into(), cid };
        let found = Found {
            targets: vec![target("A", 1), target("A", 2), target("B", 3), target("C", 4), target("A", 5)],
            complete: true,
            listed_at: HashMap::new(),
            started: vec![
                t("2026-01-01T10:00:00Z"),
                t("2026-01-01T10:00:02.5Z"),
                t("2026-01-01T12:00:00+01:00"),
                t("2026-01-01T10:00:09Z"),
                None,
            ],
        };
        let cutoffs: HashMap<String, OffsetDateTime> = [
            ("A".to_string(), t("2026-01-01T10:00:01.000000001Z").unwrap()),
            ("B".to_string(), t("2026-01-01T11:00:00Z").unwrap()),
        ]
        .into();
        let cids: Vec<u64> = found.created_by(&cutoffs).iter().map(|t| t.cid).collect();
        // 2 is newer than A's cutoff; 3 is exactly B's cutoff (11:00 UTC);
        // C has no cutoff; 5 has no known start.
        assert_eq!(cids, vec![1, 3, 4, 5]);
    }

    /// Replies captured from nats-server 2.15.1 (server info shortened).
    const KICK_OK: &str = r#"{"server":{"name":"n0","host":"127.0.0.1","id":"NAB4","ver":"2.15.1","jetstream":false,"flags":0,"seq":18,"time":"2026-12-07T04:01:00.662878906Z"}}"#;
    const KICK_UNKNOWN: &str = r#"{"server":{"name":"n0","host":"127.0.0.1","id":"NAB4","ver":"2.15.1","jetstream":false,"flags":0,"seq":20,"time":"2026-12-07T04:01:00.666370655Z"},"error":{"code":500,"description":"no such client or leafnode id"}}"#;
    const CONNZ: &str = r#"{"server":{"name":"n0","id":"NAB4"},"data":{"server_id":"NAB4","now":"2026-12-07T04:01:00.654612026Z","num_connections":1,"total":2,"offset":0,"limit":2,"connections":[{"cid":7,"kind":"Client","type":"nats","ip":"127.0.0.1","port":42608,"start":"2026-12-07T04:01:00.608978494Z","rtt":"129µs","subscriptions":0,"authorized_user":"a","account":"APP"}]}}"#;

    /// A KICK is confirmed by a reply of the API without an error, and
    /// only by one: a refusal or anything that is not such a reply is no
    /// confirmation, whatever words it contains.
    #[test]
    fn kick_replies_are_read_not_searched() {
        assert!(kicked(KICK_OK.as_bytes()).is_ok());
        let Err(ReplyError::Refused(e)) = kicked(KICK_UNKNOWN.as_bytes()) else { panic!("not refused") };
        assert_eq!((e.code, e.description.as_str()), (500, "no such client or leafnode id"));
        // A server may well be named "error": still a success.
        assert!(kicked(br#"{"server":{"name":"error","id":"N"}}"#).is_ok());
        for malformed in [
            &b""[..],
            b"ok",
            b"{}",
            b"[]",
            br#"{"data":{}}"#,
            br#"{"server":{},"error":"no such client"}"#,
            br#"{"server":{},"error":{"description":"no code"}}"#,
            br#"{"server":{}"#,
        ] {
            let read = kicked(malformed);
            assert!(
                matches!(read, Err(ReplyError::Malformed(_))),
                "{:?}: {read:?}",
                String::from_utf8_lossy(malformed)
            );
        }
    }

    /// A CONNZ reply gives its data; an error or a malformed reply none.
    #[test]
    fn connz_replies_are_read() {
        let data = read_reply::<ConnzData>(CONNZ.as_bytes()).unwrap().unwrap();
        assert_eq!((data.total, data.limit, data.connections.len()), (2, 2, 1));
        assert_eq!(data.connections[0].cid, 7);
        assert!(rfc3339(data.now.as_deref()).is_some());
        assert!(matches!(read_reply::<ConnzData>(KICK_UNKNOWN.as_bytes()), Err(ReplyError::Refused(_))));
        assert!(matches!(read_reply::<ConnzData>(b"{\"data\":{}}"), Err(ReplyError::Malformed(_))));
        assert!(read_reply::<ConnzData>(KICK_OK.as_bytes()).unwrap().is_none());
    }
}
