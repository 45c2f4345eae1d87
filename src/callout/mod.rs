//! The auth-callout responder: every data-plane connect is decided here.
//! Each request goes through the [`envelope`] (unseal, verify the server's
//! request JWT, check it is for us and fresh), then the [`decision`]
//! (the client's nonce signature, which the server does not check, and
//! its key's standing in the store), and back through the envelope (the
//! user JWT with per-identity permissions, or a signed denial, sealed for
//! the server). Anything it cannot establish denies: fail closed.
//!
//! With the `internals` feature only (tests), `hold` is a seam that lets
//! a test hold an admitting answer between signing and publishing; a
//! release build has no such code.

pub mod claims;
pub mod decision;
pub mod envelope;
#[cfg(feature = "internals")]
pub mod hold;
pub mod jwt;
pub mod sealing;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::store::Store;
use claims::grant;
use envelope::{Answer, Refused};
use unibus_proto::ids::{Key, RoomId};
use unibus_proto::records::Role;
use unibus_proto::subjects;

/// How often the count of revoked-key denials is logged at info.
const REVOKED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Keys and policy of the responder.
pub struct Callout {
    /// Signs user and response JWTs; its public key is `auth_callout.issuer`.
    pub issuer: nkeys::KeyPair,
    /// Opens sealed requests and seals responses; `None` = encryption off.
    pub xkey: Option<sealing::Sealer>,
    /// Where standings come from.
    pub store: Store,
    /// Keys refused for a while after flooding the control plane.
    pub penalties: Arc<crate::limits::Penalties>,
    /// Lifetime of issued user JWTs (backstop for revocation).
    pub user_jwt_ttl: Duration,
    /// Time spent per answered request (open, verify, decide, sign, seal).
    pub latency: crate::metrics::Histogram,
    /// Denials of revoked keys since they were last reported (logged as
    /// one count a minute, not one line per connect).
    pub revoked_denials: Tally,
}

/// The outcome for one connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let in, as guest (`None`) or with a role.
    Allow {
        /// The account id (the device's own key for a guest).
        account: Key,
        /// The connecting key: the JWT's `name`, the `Nats-Request-Info`
        /// user and the inbox.
        device: Key,
        /// `None` for a guest.
        role: Option<Role>,
        /// Rooms it is a member of.
        rooms: Vec<RoomId>,
    },
    /// Keep out, with the reason for the server log.
    Deny(String),
    /// Keep out without an answer: a penalized key's connect beyond the
    /// one a second that is denied (the server's authorization timeout
    /// refuses it).
    Unanswered,
    /// Keep out a key whose record is revoked. Such clients retry every few
    /// seconds forever, so these are logged at debug with a periodic count.
    Revoked(Key),
}

impl Callout {
    /// Handles one raw callout message: returns the bytes to publish to its
    /// reply subject, or `None` when it is deliberately left unanswered
    /// ([`Verdict::Unanswered`]).
    ///
    /// # Errors
    /// [`Refused`] when the request is not a valid, fresh request signed by
    /// a server for our issuer, or its sealing does not match our config.
    pub async fn handle(
        &self,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<Option<Bytes>, Refused> {
        let server_xkey = headers.and_then(|h| h.get(subjects::HDR_SERVER_XKEY)).map(|v| v.as_str());
        let issuer = self.issuer.public_key();
        let opened = envelope::open(&issuer, self.xkey.as_ref(), server_xkey, payload, unix_now())?;
        let verdict = self.decide(&opened.claims).await;
        let Some(answer) = self.answer(&opened.claims, &verdict) else { return Ok(None) };
        let bytes = envelope::answer(&self.issuer, self.xkey.as_ref(), &opened, answer, unix_now())?;
        // Test seam: a test may hold this key's admitting answer here.
        #[cfg(feature = "internals")]
        if let Verdict::Allow { device, .. } = &verdict {
            hold::before_publish(&device.to_hex()).await;
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// Authenticates the client and asks the store ([`decision::decide`]).
    pub async fn decide(&self, req: &claims::RequestClaims) -> Verdict {
        decision::decide(&self.store, &self.penalties, req).await
    }

    /// What to answer for `verdict` (`None`: no answer), logged.
    fn answer(&self, req: &claims::RequestClaims, verdict: &Verdict) -> Option<Answer> {
        let cid = req.nats.client_info.id.unwrap_or_default();
        let host = &req.nats.client_info.host;
        Some(match verdict {
            Verdict::Unanswered => return None,
            Verdict::Allow { account, device, role, rooms } => {
                debug!(%account, %device, ?role, cid, server = %req.nats.server_id.name, "callout allow");
                let grant = grant(*role, *account, *device, rooms);
                Answer::Admit { name: device.to_hex(), grant, ttl: self.user_jwt_ttl }
            }
            Verdict::Deny(reason) => {
                info!(cid, ?host, %reason, "callout deny");
                Answer::Deny(reason.clone())
            }
            Verdict::Revoked(sign_pub) => {
                debug!(cid, ?host, %sign_pub, "callout deny: revoked");
                if let Some(n) = self.revoked_denials.note(std::time::Instant::now()) {
                    info!(
                        denied = n,
                        "callout: denied {n} connects of revoked keys in the last minute or more"
                    );
                }
                Answer::Deny(format!("user {sign_pub} is revoked"))
            }
        })
    }
}

/// Counts events and yields the count at most once per period: at the
/// first event after a period has passed since the last report.
pub struct Tally {
    every: Duration,
    state: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl Default for Tally {
    /// A tally reported once a minute at most.
    fn default() -> Tally {
        Tally::new(REVOKED_REPORT_EVERY)
    }
}

impl Tally {
    /// A tally reported once per `every` at most.
    pub fn new(every: Duration) -> Tally {
        Tally { every, state: std::sync::Mutex::new((0, None)) }
    }

    /// Counts one event at `now`; `Some(count)` when a report is due.
    pub fn note(&self, now: std::time::Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        let since = *st.1.get_or_insert(now);
        if now.saturating_duration_since(since) < self.every {
            return None;
        }
        let n = st.0;
        *st = (0, Some(now));
        Some(n)
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Subscribes to callout requests in the responders' queue group.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn subscribe(
    client: &async_nats::Client,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client.queue_subscribe(subjects::AUTH_CALLOUT, subjects::AUTH_QUEUE.to_string()).await
}

/// Answers callout requests from `sub` until it ends, each in its own task.
pub async fn run(client: async_nats::Client, mut sub: async_nats::Subscriber, callout: Arc<Callout>) {
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else { continue };
        let (client, callout) = (client.clone(), callout.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let handled = callout.handle(msg.headers.as_ref(), &msg.payload).await;
            callout.latency.record(started.elapsed());
            match handled {
                Ok(Some(bytes)) => {
                    if let Err(e) = client.publish(reply, bytes).await {
                        warn!(error = %e, "callout: cannot publish response");
                    }
                }
                Ok(None) => {}
                Err(abort) => warn!(reason = %abort, "callout: request not answered"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Revoked-key denials are reported as one count per period, not one
    /// line per connect: nothing within the period, then the whole count.
    #[test]
    fn tally_reports_once_per_period() {
        let t = Tally::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.note(t0), None);
        for i in 1..100u64 {
            assert_eq!(t.note(t0 + Duration::from_millis(i * 500)), None, "event {i}");
        }
        assert_eq!(t.note(t0 + Duration::from_secs(60)), Some(101));
        assert_eq!(t.note(t0 + Duration::from_secs(61)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(119)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(120)), Some(3));
    }
}
