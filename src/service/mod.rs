//! The control plane as a NATS micro service named `unibus` (queue group
//! `unibus`). Each endpoint is one subscription that carries its route
//! (handler and cost, [`handlers::ROUTES`]) from the moment it is
//! subscribed, so no request is routed by comparing subjects. One way in,
//! one way out: a request is judged by the intake ([`intake`]:
//! server-stamped caller identity, size, the caller's budget; no I/O),
//! then its body decoded strictly, handed to its handler, which never
//! sees NATS types, and the result encoded here, with errors mapped
//! to wire codes in one place ([`reply_error`]). Connections a handler asks
//! to close are kicked only after its reply was delivered, and the sweeps
//! that follow (see [`crate::kick::sweep`]) run after it too, off the
//! request's slot.

mod caller;
pub mod cursor;
mod delivery;
mod handlers;
pub mod intake;
pub mod micro;
mod notices;

pub use caller::{Caller, Stamp};
pub use delivery::Delivery;
pub use notices::Notices;

use std::sync::Arc;
use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::kick::{self, Kicker, Sweep};
use crate::store::Store;
use cursor::Cursors;
use handlers::{ROUTES, Route};
use micro::Micro;
use unibus_proto::error::Error;
use unibus_proto::subjects;
use unibus_proto::wire::ErrorReply;

/// What handlers may use.
pub struct Ctx {
    /// The KV store.
    pub store: Store,
    /// Finds and closes live connections.
    pub kicker: Kicker,
    /// Signs list cursors.
    pub cursors: Cursors,
    /// Per-caller budgets and the slots for requests in flight, checked
    /// before a request is decoded.
    pub gate: crate::limits::Gate,
    /// The limits on registrations, checked once one is decoded.
    pub guests: crate::limits::Limiter,
    /// Keys refused at connect for a while (shared with the callout).
    pub penalties: Arc<crate::limits::Penalties>,
    /// What the intake turned away (shared with the control connection's
    /// event callback, which counts lost requests).
    pub counters: Arc<intake::Counters>,
    /// Publishes notices to accounts.
    pub notices: Notices,
    /// Publishes stored messages live.
    pub delivery: Delivery,
    /// The limits on storing messages.
    pub mail: crate::limits::mail::MailGate,
    /// Rate-limits the log line for `unavailable` answers.
    pub unavailable_log: crate::metrics::LogEvery,
}

/// A handler's result: the typed reply (the endpoint's `Reply`, checked by
/// its [`Route`] against the endpoint table), and connections to close
/// after the reply has been delivered.
pub struct Outcome<R> {
    reply: R,
    /// Connections of a key whose rights a write changed: kicked after the
    /// reply, then swept again in the background.
    sweep: Option<Sweep>,
    /// The requesting connection (server name, client id), to be found and
    /// closed after the reply, off the request's critical path.
    kick_origin: Option<(String, u64)>,
}

impl<R: Serialize> Outcome<R> {
    /// A reply with nothing to close.
    ///
    /// # Errors
    /// None; the `Result` lets handlers end with it.
    pub fn reply(reply: R) -> Result<Outcome<R>, Error> {
        Ok(Outcome { reply, sweep: None, kick_origin: None })
    }

    /// A reply, then close what `sweep` found and sweep again after it
    /// ([`Kicker::follow_up`]).
    ///
    /// # Errors
    /// None; the `Result` lets handlers end with it.
    pub fn reply_then_sweep(reply: R, sweep: Sweep) -> Result<Outcome<R>, Error> {
        Ok(Outcome { reply, sweep: Some(sweep), kick_origin: None })
    }

    /// A reply, then close the requesting connection (`origin` from its
    /// `Nats-Request-Info`; nothing to close when unknown).
    ///
    /// # Errors
    /// None; the `Result` lets handlers end with it.
    pub fn reply_then_kick_origin(reply: R, origin: Option<(String, u64)>) -> Result<Outcome<R>, Error> {
        Ok(Outcome { reply, sweep: None, kick_origin: origin })
    }

    /// The reply serialized, with what to close after it.
    ///
    /// # Errors
    /// `internal` if the reply does not serialize.
    fn encode(self) -> Result<Encoded, Error> {
        let body = serde_json::to_vec(&self.reply).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Encoded { body: body.into(), sweep: self.sweep, kick_origin: self.kick_origin })
    }
}

/// A request as its subscription delivers it: with the route of the
/// subject it was subscribed for.
type Request = (&'static Route, async_nats::Message);

/// An [`Outcome`] ready to send.
pub struct Encoded {
    body: Bytes,
    sweep: Option<Sweep>,
    kick_origin: Option<(String, u64)>,
}

/// The one mapping from [`Error`] to the wire: headers plus JSON body.
pub fn reply_error(err: &Error) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(subjects::HDR_SERVICE_ERROR, err.public_message().as_str());
    headers.insert(subjects::HDR_SERVICE_ERROR_CODE, err.number().to_string().as_str());
    let body = serde_json::to_vec(&ErrorReply::from(err)).unwrap_or_default();
    (headers, Bytes::from(body))
}

/// Counts a refused request in the micro-service STATS and sends its
/// error reply (the one path every error answer takes).
async fn send_error(
    micro: &Micro,
    client: &async_nats::Client,
    subject: &str,
    reply_to: async_nats::Subject,
    err: &Error,
    elapsed: std::time::Duration,
) -> Result<(), async_nats::PublishError> {
    micro.record(subject, elapsed, Some(format!("{} {}", err.code(), err.public_message())));
    let (headers, body) = reply_error(err);
    client.publish_with_headers(reply_to, headers, body).await
}

/// Starts the micro service and subscribes its endpoints, each
/// subscription with its [`Route`]; the returned future answers requests
/// until the connection closes.
///
/// # Errors
/// When a subscription fails.
pub async fn start(
    client: async_nats::Client,
    ctx: Arc<Ctx>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, async_nats::Error> {
    let subjects: Vec<&str> = ROUTES.iter().map(|r| r.subject).collect();
    let micro = Micro::new(
        subjects::SERVICE_NAME,
        env!("CARGO_PKG_VERSION"),
        "unibus membership and admission control plane",
        &subjects,
    );
    let mut subs = Vec::new();
    for route in ROUTES {
        let sub = client.queue_subscribe(route.subject, micro.queue_group().to_string()).await?;
        subs.push(sub.map(move |msg| (route, msg)));
    }
    let counters = ctx.counters.clone();
    let discovery = micro.clone().discovery(client.clone(), move || counters.metadata()).await?;
    Ok(async move {
        let serve = intake::serve(ctx, micro, client, futures::stream::select_all(subs));
        tokio::join!(serve, discovery);
    })
}

/// Handles one admitted request and replies; the ticket's slots are freed
/// once the reply is out. Closing connections and the sweeps that follow
/// run on without it.
async fn answer(
    ctx: &Ctx,
    micro: &Micro,
    client: &async_nats::Client,
    request: Request,
    stamp: Stamp,
    ticket: crate::limits::Ticket,
) {
    let started = Instant::now();
    let (route, msg) = request;
    let subject = route.subject;
    let Some(reply_to) = msg.reply.clone() else { return };
    let result = route.handle(ctx, stamp, &msg.payload).await;
    drop(msg);
    let (sent, sweep, origin) = match result {
        Ok(outcome) => {
            debug!(%subject, "request ok");
            micro.record(subject, started.elapsed(), None);
            (client.publish(reply_to, outcome.body).await, outcome.sweep, outcome.kick_origin)
        }
        Err(err) => {
            match &err {
                Error::Internal(detail) => error!(%subject, %detail, "request failed"),
                Error::Unavailable(detail) => {
                    if let Some(n) = ctx.unavailable_log.note() {
                        warn!(%subject, %detail, since_last = n, "store unavailable");
                    }
                }
                // What a flooding client gets: not a log line per request
                // (the micro-service STATS count them).
                Error::LimitReached(_) | Error::Unauthenticated(_) => {
                    debug!(%subject, code = err.code(), "request refused")
                }
                other => info!(%subject, code = other.code(), "request refused"),
            }
            (send_error(micro, client, subject, reply_to, &err, started.elapsed()).await, None, None)
        }
    };
    if let Err(e) = sent {
        warn!(%subject, error = %e, "cannot send reply");
    }
    // The request is answered: its slots go back now. What follows (the
    // grace before closing, the kicks, the sweeps) is bounded by the
    // caller's budget, which a sweeping request spends most of.
    drop(ticket);
    if sweep.is_some() || origin.is_some() {
        close_after_reply(ctx, client, subject, sweep, origin).await;
    }
}

/// After a reply: closes the connections a handler asked to close, then
/// hands the sweeps that follow to the kicker ([`Kicker::settle`]).
async fn close_after_reply(
    ctx: &Ctx,
    client: &async_nats::Client,
    subject: &str,
    sweep: Option<Sweep>,
    origin: Option<(String, u64)>,
) {
    // Deliver the reply before closing its requester's connection.
    let _ = client.flush().await;
    tokio::time::sleep(kick::REPLY_GRACE).await;
    let mut kick = sweep.as_ref().map(|s| s.targets().to_vec()).unwrap_or_default();
    if let Some((server, cid)) = origin {
        // Best effort: the request has succeeded either way.
        match ctx.kicker.request_origin(&server, cid).await {
            Ok(Some(target)) => kick.push(target),
            Ok(None) => warn!(%subject, %server, "requesting server not found; connection not closed"),
            Err(e) => warn!(%subject, error = %e, "cannot resolve the requesting connection"),
        }
    }
    let closed = ctx.kicker.kick(&kick).await;
    info!(%subject, targeted = kick.len(), closed, "connections closed");
    if let Some(sweep) = sweep {
        ctx.kicker.settle(sweep);
    }
}
