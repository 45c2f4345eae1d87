//! The way in: one task reads every control-plane request and decides, from
//! its size, its header and the endpoint alone, whether it may be handled
//! ([`crate::limits`]). Only admitted requests get a task of their own, so
//! the number of requests being handled, and the memory and store load
//! they take, stay bounded whatever clients send; the excess is refused at
//! once or, far past a caller's limit, dropped without a reply
//! (docs/protocol.md section 2, "Load is hostile too").
//!
//! Order of the checks, cheapest first and none reading the store: the
//! caller's identity (the server-stamped header), the body's size (before
//! any parsing), then the caller's budget: a guest's `unibus.register`
//! against the guest limits, anything else against the caller's budget in
//! the [`Gate`](crate::limits::Gate). Whether a key is a guest is read
//! from the local indexes (no I/O): a key any account lists is a member's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt as _};
use tracing::debug;

use super::handlers::cost_of;
use super::micro::Micro;
use super::{Caller, Ctx, answer, caller_from_headers, reply_error};
use crate::limits::{Cost, Decision, MAX_REQUEST_BYTES, Ticket};
use unibus_proto::error::Error;
use unibus_proto::subjects;

/// The budget key of requests without a usable identity (they can only
/// come from a malformed header block): all of them share one budget.
const ANONYMOUS: [u8; 32] = [0; 32];

/// Requests dropped without a reply, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Dropped(AtomicU64);

impl Dropped {
    /// How many so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What becomes of one request.
enum Intake {
    /// Handle it.
    Run(Caller, Ticket),
    /// Answer this error and nothing else.
    Refuse(Error),
    /// No reply.
    Silent,
}

/// Reads `requests` until they end: admitted ones are answered each in its
/// own task, the rest refused or dropped here.
pub(super) async fn serve(
    ctx: Arc<Ctx>,
    micro: Arc<Micro>,
    client: async_nats::Client,
    mut requests: impl Stream<Item = async_nats::Message> + Unpin,
) {
    while let Some(msg) = requests.next().await {
        let Some(reply_to) = msg.reply.clone() else { continue };
        match judge(&ctx, &msg) {
            Intake::Run(caller, ticket) => {
                let (ctx, micro, client) = (ctx.clone(), micro.clone(), client.clone());
                tokio::spawn(async move { answer(&ctx, &micro, &client, msg, caller, ticket).await });
            }
            Intake::Refuse(err) => {
                debug!(subject = %msg.subject, code = err.code(), "request refused at intake");
                let detail = format!("{} {}", err.code(), err.public_message());
                micro.record(&msg.subject, std::time::Duration::ZERO, Some(detail));
                let (headers, body) = reply_error(&err);
                let _ = client.publish_with_headers(reply_to, headers, body).await;
            }
            Intake::Silent => {
                ctx.dropped.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The intake's verdict on one request (no I/O).
fn judge(ctx: &Ctx, msg: &async_nats::Message) -> Intake {
    let subject = msg.subject.as_str();
    let cost = cost_of(subject).unwrap_or(Cost::Read);
    let caller = match caller_from_headers(msg.headers.as_ref()) {
        Ok(caller) => caller,
        Err(e) => return refuse_with(ctx.gate.admit(&ANONYMOUS, Cost::Read), e),
    };
    let key = *caller.device.verifying_key().as_bytes();
    let guest = subject == subjects::REGISTER && !ctx.store.knows_key(&caller.device);
    if msg.payload.len() > MAX_REQUEST_BYTES {
        let too_big = Error::BadRequest(format!(
            "request body of {} bytes; at most {MAX_REQUEST_BYTES}",
            msg.payload.len()
        ));
        let decision = match guest {
            true => ctx.guests.decide(&key),
            false => ctx.gate.admit(&key, Cost::Read),
        };
        return refuse_with(decision, too_big);
    }
    let decision = match guest {
        true => ctx.guests.decide(&key),
        false => ctx.gate.admit(&key, cost),
    };
    match decision {
        Decision::Run(ticket) => Intake::Run(caller, ticket),
        Decision::Refuse(e) => Intake::Refuse(e),
        Decision::Silent => Intake::Silent,
    }
}

/// A request refused with `err` when the budget admits an answer: the
/// gate's own refusal, or silence, otherwise.
fn refuse_with(decision: Decision, err: Error) -> Intake {
    match decision {
        Decision::Run(_ticket) => Intake::Refuse(err),
        Decision::Refuse(limit) => Intake::Refuse(limit),
        Decision::Silent => Intake::Silent,
    }
}
