//! The way in: one task reads every control-plane request and decides, from
//! its size, its header and the endpoint alone, whether it may be handled
//! ([`crate::limits`]). Only admitted requests get a task of their own, so
//! the number of requests being handled, and the memory and store load
//! they take, stay bounded whatever clients send; the excess is refused at
//! once or, far past a caller's limit, dropped without a reply
//! (docs/protocol.md section 2, "Load is hostile too").
//!
//! Order of the checks, cheapest first and none reading the store: the
//! caller's identity (the server-stamped header; guests come from account
//! GUEST), then the message's size (before any parsing) and the caller's
//! budget and slots in the [`Gate`](crate::limits::Gate). A request within
//! its budget that finds no free slot waits for one in its own task, for a
//! bounded time, with a bounded number of others. A caller far past its
//! limits has its connection closed and its key refused at connect for a
//! while ([`crate::limits::penalties`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt as _};
use tracing::{debug, warn};

use super::micro::Micro;
use super::{Ctx, Request, Stamp, answer, send_error};
use crate::limits::{Class, Cost, Decision, Ticket};
use unibus_proto::error::Error;

/// The budget key of requests without a usable identity (they can only
/// come from a malformed header block): all of them share one budget.
const ANONYMOUS: [u8; 32] = [0; 32];

/// What the intake turned away, since start (shown by `$SRV.STATS` as the
/// service's metadata).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests dropped without a reply (callers past their limits).
    pub dropped: AtomicU64,
    /// Callers penalized (connection closed, key refused for a while).
    pub penalized: AtomicU64,
    /// Requests async-nats dropped because a subscription's buffer was
    /// full (the intake fell behind): anyone's requests, so this should
    /// stay 0.
    pub lost: AtomicU64,
}

impl Counters {
    /// The counters as `$SRV.STATS` metadata.
    pub fn metadata(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        serde_json::json!({"dropped": n(&self.dropped), "penalized": n(&self.penalized), "lost": n(&self.lost)})
    }
}

/// What becomes of one request.
enum Intake {
    /// Handle it.
    Run(Stamp, Ticket),
    /// Handle it once a slot is free (or refuse it when none comes).
    Wait(Stamp, crate::limits::Waiter),
    /// Answer this error and nothing else.
    Refuse(Error),
    /// No reply.
    Silent,
}

/// Reads `requests` (each with the route its subscription carries) until
/// they end: admitted ones are answered each in its own task, the rest
/// refused or dropped here.
pub(super) async fn serve(
    ctx: Arc<Ctx>,
    micro: Arc<Micro>,
    client: async_nats::Client,
    mut requests: impl Stream<Item = Request> + Unpin,
) {
    while let Some(request) = requests.next().await {
        let (route, msg) = &request;
        let Some(reply_to) = msg.reply.clone() else { continue };
        let subject = route.subject;
        match judge(&ctx, subject, route.cost, msg) {
            Intake::Run(stamp, ticket) => {
                let (ctx, micro, client) = (ctx.clone(), micro.clone(), client.clone());
                tokio::spawn(async move { answer(&ctx, &micro, &client, request, stamp, ticket).await });
            }
            Intake::Wait(stamp, waiter) => {
                let (ctx, micro, client) = (ctx.clone(), micro.clone(), client.clone());
                tokio::spawn(async move {
                    match waiter.ticket().await {
                        Ok(ticket) => answer(&ctx, &micro, &client, request, stamp, ticket).await,
                        Err(err) => refuse(&micro, &client, subject, reply_to, &err).await,
                    }
                });
            }
            Intake::Refuse(err) => refuse(&micro, &client, subject, reply_to, &err).await,
            Intake::Silent => {
                ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Answers `err` to a request the intake did not let through.
async fn refuse(
    micro: &Micro,
    client: &async_nats::Client,
    subject: &str,
    reply_to: async_nats::Subject,
    err: &Error,
) {
    debug!(%subject, code = err.code(), "request refused at intake");
    let _ = send_error(micro, client, subject, reply_to, err, std::time::Duration::ZERO).await;
}

/// The intake's verdict on one request to the endpoint `subject` that
/// costs `cost` (no I/O).
fn judge(ctx: &Ctx, subject: &'static str, cost: Cost, msg: &async_nats::Message) -> Intake {
    let stamp = match Stamp::read(msg.headers.as_ref(), subject) {
        Ok(stamp) => stamp,
        Err(e) => {
            let decision =
                ctx.gate.admit(&ANONYMOUS, Class::Member(Cost::Read), msg.payload.len(), msg.length);
            return refuse_with(decision, e);
        }
    };
    let class = match stamp.guest {
        true => Class::Guest,
        false => Class::Member(cost),
    };
    match ctx.gate.admit(&stamp.key, class, msg.payload.len(), msg.length) {
        Decision::Run(ticket) => Intake::Run(stamp, ticket),
        Decision::Wait(waiter) => Intake::Wait(stamp, waiter),
        Decision::Refuse(e) => Intake::Refuse(e),
        Decision::Silent => Intake::Silent,
        Decision::Penalize(why) => {
            penalize(ctx, &stamp, why);
            Intake::Silent
        }
    }
}

/// Refuses `key` at connect for a while and closes the connection that
/// sent the request (once per penalty; the closing runs in the
/// background).
fn penalize(ctx: &Ctx, stamp: &Stamp, why: &'static str) {
    if !ctx.penalties.add(&stamp.key) {
        return;
    }
    ctx.counters.penalized.fetch_add(1, Ordering::Relaxed);
    let device = hex::encode(stamp.key);
    warn!(%device, reason = why, "caller far past its limits: closing its connection");
    let Some((server, cid)) = stamp.origin.clone() else { return };
    let kicker = ctx.kicker.clone();
    tokio::spawn(async move {
        match kicker.request_origin(&server, cid).await {
            Ok(Some(target)) => {
                kicker.kick(&[target]).await;
            }
            Ok(None) => warn!(%server, "penalized caller's server not found; connection not closed"),
            Err(e) => warn!(error = %e, "cannot resolve the penalized caller's connection"),
        }
    });
}

/// A request refused with `err` when the budget admits an answer: the
/// gate's own refusal, or silence, otherwise.
fn refuse_with(decision: Decision, err: Error) -> Intake {
    match decision {
        Decision::Run(_) | Decision::Wait(_) => Intake::Refuse(err),
        Decision::Refuse(limit) => Intake::Refuse(limit),
        Decision::Silent | Decision::Penalize(_) => Intake::Silent,
    }
}
