//! The auth-callout responder: every data-plane connect is decided here.
//! It opens the (optionally xkey-sealed) request, verifies the server's
//! request JWT, verifies the client's nonce signature itself (the server does
//! not), asks the store for the key's standing and answers with a signed
//! user JWT carrying per-identity permissions, or with a signed denial.
//! Anything it cannot establish denies: fail closed.
//!
//! With the `internals` feature only (tests), [`hold`] is a seam that lets
//! a test hold an admitting answer between signing and publishing; a
//! release build has no such code.

pub mod claims;
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

use crate::limits::penalties::Refusal;
use crate::store::{Standing, Store};
use claims::{AuthResponse, REQUEST_AUDIENCE, RequestClaims, ResponseClaims, UserClaims, grant};
use unibus_proto::ids::{Key, RoomId};
use unibus_proto::keys;
use unibus_proto::records::Role;
use unibus_proto::subjects;

/// nkeys prefix byte of server keys (`N...`).
const SERVER_PREFIX: u8 = 13 << 3;
/// Clock skew tolerated on the request's `exp`.
const EXP_SKEW_SECS: i64 = 2;
/// Longest a decision waits for the store before denying: below the
/// server's 2 s auth timeout, so a slow store yields a denial, not a
/// hanging connect.
const DECISION_BUDGET: Duration = Duration::from_millis(1500);

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

/// A request the callout refuses to answer at all (it cannot be trusted, so
/// no signed reply is made; the client's connect times out).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Abort(String);

impl Callout {
    /// Handles one raw callout message: returns the bytes to publish to its
    /// reply subject, or `None` when it is deliberately left unanswered
    /// ([`Verdict::Unanswered`]).
    ///
    /// # Errors
    /// [`Abort`] when the request is not a valid, fresh request signed by a
    /// server for our issuer, or its sealing does not match our config.
    pub async fn handle(&self, headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Option<Bytes>, Abort> {
        let server_xkey =
            headers.and_then(|h| h.get(subjects::HDR_SERVER_XKEY)).map(|v| v.as_str().to_string());
        let jwt_bytes = match (&self.xkey, &server_xkey) {
            (Some(ours), Some(theirs)) => ours.open(theirs, payload).map_err(|e| Abort(e.to_string()))?,
            (None, None) => payload.to_vec(),
            (Some(_), None) => return Err(Abort("unsealed request but xkey is configured".into())),
            (None, Some(_)) => return Err(Abort("sealed request but no xkey is configured".into())),
        };
        let token = std::str::from_utf8(&jwt_bytes).map_err(|_| Abort("request is not UTF-8".into()))?;
        let (req, iss): (RequestClaims, String) =
            jwt::decode_verified(token, SERVER_PREFIX).map_err(|e| Abort(format!("request JWT: {e}")))?;
        self.check_request(&req, &iss, server_xkey.as_deref())?;

        let verdict = self.decide(&req).await;
        let cid = req.nats.client_info.id.unwrap_or_default();
        let nats = match &verdict {
            Verdict::Unanswered => return Ok(None),
            Verdict::Allow { account, device, role, rooms } => {
                debug!(%account, %device, ?role, cid, server = %req.nats.server_id.name, "callout allow");
                AuthResponse {
                    kind: "authorization_response",
                    version: 2,
                    jwt: Some(self.user_jwt(&req, *account, *device, *role, rooms)?),
                    error: None,
                }
            }
            Verdict::Deny(reason) => {
                info!(cid, host = ?req.nats.client_info.host, %reason, "callout deny");
                denial(reason.clone())
            }
            Verdict::Revoked(sign_pub) => {
                debug!(cid, host = ?req.nats.client_info.host, %sign_pub, "callout deny: revoked");
                if let Some(n) = REVOKED_DENIALS.note(std::time::Instant::now()) {
                    info!(
                        denied = n,
                        "callout: denied {n} connects of revoked keys in the last minute or more"
                    );
                }
                denial(format!("user {sign_pub} is revoked"))
            }
        };
        let resp = ResponseClaims {
            iss: self.issuer.public_key(),
            sub: req.nats.user_nkey.clone(),
            aud: req.nats.server_id.id.clone(),
            iat: unix_now(),
            nats,
        };
        let signed =
            jwt::encode_signed(&resp, &self.issuer).map_err(|e| Abort(format!("sign response: {e}")))?;
        let answer = match (&self.xkey, server_xkey) {
            (Some(ours), Some(theirs)) => {
                ours.seal(&theirs, signed.as_bytes()).map(Bytes::from).map_err(|e| Abort(e.to_string()))?
            }
            _ => Bytes::from(signed),
        };
        // Test seam: a test may hold this key's admitting answer here.
        #[cfg(feature = "internals")]
        if let Verdict::Allow { device, .. } = &verdict {
            hold::before_publish(&device.to_hex()).await;
        }
        Ok(Some(answer))
    }

    /// The request must come from the server it names, be meant for us and
    /// be fresh.
    fn check_request(&self, req: &RequestClaims, iss: &str, xkey: Option<&str>) -> Result<(), Abort> {
        let n = &req.nats;
        if n.kind != "authorization_request" {
            return Err(Abort(format!("unexpected request type {:?}", n.kind)));
        }
        if n.server_id.id != iss {
            return Err(Abort("request issuer is not the server it names".into()));
        }
        if req.aud != REQUEST_AUDIENCE {
            return Err(Abort("request audience is wrong".into()));
        }
        if req.sub != self.issuer.public_key() {
            return Err(Abort("request is for another issuer".into()));
        }
        match req.exp {
            Some(exp) if unix_now() <= exp + EXP_SKEW_SECS => {}
            _ => return Err(Abort("request JWT expired or without exp".into())),
        }
        if xkey.is_some() && n.server_id.xkey.as_deref() != xkey {
            return Err(Abort("request xkey does not match its server".into()));
        }
        Ok(())
    }

    /// Authenticates the client and asks the store. Every failure denies.
    pub async fn decide(&self, req: &RequestClaims) -> Verdict {
        let n = &req.nats;
        let Some(nkey) = n.connect_opts.nkey.as_deref().filter(|k| !k.is_empty()) else {
            return Verdict::Deny("no nkey presented".into());
        };
        let key = match user_nkey_to_key(nkey) {
            Ok(k) => k,
            Err(why) => return Verdict::Deny(format!("unusable nkey: {why}")),
        };
        // A penalized key is refused before any signature is checked: its
        // owner may be reconnecting in a tight loop, and a refusal is safe
        // whoever presents the key. Most of its connects get no answer
        // (limits::penalties).
        match self.penalties.refusal(key.as_bytes()) {
            Some(Refusal::Deny) => {
                return Verdict::Deny("penalized for flooding the control plane; retry later".into());
            }
            Some(Refusal::Ignore) => return Verdict::Unanswered,
            None => {}
        }
        let nonce = n.client_info.nonce.as_deref().unwrap_or("");
        let sig = n.connect_opts.sig.as_deref().unwrap_or("");
        if let Err(why) = keys::verify_nonce_signature(&key, nonce, sig) {
            return Verdict::Deny(format!("nonce signature: {why}"));
        }
        let sign_pub = Key::from_bytes(key.to_bytes());
        // Repeated denials (a revoked client retries every few seconds,
        // forever) cost no store round trip: a denial may come from the
        // index as it stands. An allow needs both indexes proven current
        // with their stream leaders (and their quorums) after this request
        // arrived; concurrent callouts share those leader probes.
        if self.store.known_revoked(sign_pub) {
            return Verdict::Revoked(sign_pub);
        }
        let unavailable = |e: unibus_proto::Error| {
            warn!(error = %e, "callout: store unavailable, denying");
            Verdict::Deny("authorization store unavailable".into())
        };
        let reads = self.store.admission(sign_pub);
        let Ok(admission) = tokio::time::timeout(DECISION_BUDGET, reads).await else {
            let ms = DECISION_BUDGET.as_millis();
            return unavailable(unibus_proto::Error::Unavailable(format!(
                "no answer within the {ms} ms budget"
            )));
        };
        // The syncs also prove that the store still has a quorum (see
        // `Index::sync`), so they gate guests too.
        match admission {
            Ok((Standing::Revoked, _)) => Verdict::Revoked(sign_pub),
            Ok((Standing::Unknown, _)) => {
                Verdict::Allow { account: sign_pub, device: sign_pub, role: None, rooms: Vec::new() }
            }
            Ok((Standing::Active { role, account }, rooms)) => {
                Verdict::Allow { account, device: sign_pub, role: Some(role), rooms }
            }
            Err(e) => unavailable(e),
        }
    }

    fn user_jwt(
        &self,
        req: &RequestClaims,
        account: Key,
        device: Key,
        role: Option<Role>,
        rooms: &[RoomId],
    ) -> Result<String, Abort> {
        let claims = UserClaims::new(
            self.issuer.public_key(),
            req.nats.user_nkey.clone(),
            device.to_hex(),
            grant(role, account, device, rooms),
            unix_now(),
            self.user_jwt_ttl.as_secs() as i64,
        );
        jwt::encode_signed(&claims, &self.issuer).map_err(|e| Abort(format!("sign user JWT: {e}")))
    }
}

fn denial(reason: String) -> AuthResponse {
    AuthResponse { kind: "authorization_response", version: 2, jwt: None, error: Some(reason) }
}

/// How often the count of revoked-key denials is logged at info.
const REVOKED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Denials of revoked keys in this process since the last report.
static REVOKED_DENIALS: Tally = Tally::new(REVOKED_REPORT_EVERY);

/// Counts events and yields the count at most once per period: at the
/// first event after a period has passed since the last report.
struct Tally {
    every: Duration,
    state: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl Tally {
    const fn new(every: Duration) -> Tally {
        Tally { every, state: std::sync::Mutex::new((0, None)) }
    }

    /// Counts one event at `now`; `Some(count)` when a report is due.
    fn note(&self, now: std::time::Instant) -> Option<u64> {
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

/// Decodes a NATS user nkey (`U...`) into a checked Ed25519 key.
///
/// # Errors
/// A short reason when it is not a user key or the key is weak.
pub fn user_nkey_to_key(nkey: &str) -> Result<ed25519_dalek::VerifyingKey, &'static str> {
    let (prefix, raw) = nkeys::from_public_key(nkey).map_err(|_| "not an nkey")?;
    // 20 << 3: the base32 'U' prefix byte of user keys.
    if prefix != 160 {
        return Err("not a user nkey");
    }
    keys::check_sign_pub(&raw)
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
