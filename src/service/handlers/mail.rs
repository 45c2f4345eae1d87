//! Messages that wait (docs/protocol.md section 10): `unibus.mail.send`
//! stores an envelope for exactly the devices it must reach and delivers
//! it live; `unibus.mail.fetch` reads one page of a channel for the
//! calling device. Each refusal stores nothing: every check comes before
//! the one write.

use bytes::Bytes;
use tracing::warn;

use super::{Caller, Ctx, Outcome, active_user};
use unibus_proto::e2e::Envelope;
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::mail::{
    Addressed, Channel, MailChannel, MailFetchReply, MailFetchRequest, MailSendReply, MailSendRequest,
    Target, Waiting, address,
};
use unibus_proto::records::{User, UserStatus};

/// `unibus.mail.send`: checks in the order of the contract (shape,
/// existence, permission, recipients, limits), then stores the envelope
/// with `create` (a retry of the same envelope answers the first `seq`)
/// and publishes it on its subject.
pub async fn send(ctx: &Ctx, caller: &Caller, req: MailSendRequest) -> Result<Outcome<MailSendReply>, Error> {
    let env = req.envelope;
    let addressed = address(&env, &caller.account, &caller.device.key(), now_ms())?;
    let bytes = Bytes::from(serde_json::to_vec(&env).map_err(|e| Error::Internal(format!("encode: {e}")))?);
    if bytes.len() > ctx.delivery.max_envelope() {
        let max = ctx.delivery.max_envelope();
        return Err(Error::bad(format!("envelope of {} bytes; at most {max} can be stored", bytes.len())));
    }
    let expected = recipients(ctx, caller, &addressed).await?;
    if expected != addressed.recipients {
        return Err(stale(&addressed.target, expected.len(), addressed.recipients.len()));
    }
    ctx.mail.admit(caller.account)?;
    let spent = ctx.mail.spend(&ctx.store, caller.account, bytes.len() as u64).await?;
    let stored = match ctx.store.store_mail(&addressed.key, bytes.clone()).await {
        Ok(stored) => stored,
        Err(e) => {
            ctx.mail.give_back(spent);
            return Err(e);
        }
    };
    if let crate::store::Stored::Again(_) = stored {
        ctx.mail.give_back(spent);
    }
    // Again too: the first attempt may have stopped before its publish.
    ctx.delivery.publish(env.subject, stored.seq(), bytes).await;
    Outcome::reply(MailSendReply { seq: stored.seq() })
}

/// Existence, permission and the exact recipient devices of a message to
/// `addressed.target` from the caller (steps 2 to 4). The records these
/// need are read at once (one round trip to the store, not one each),
/// then judged in the contract's order.
async fn recipients(ctx: &Ctx, caller: &Caller, addressed: &Addressed) -> Result<Vec<Key>, Error> {
    match &addressed.target {
        Target::Dm(to) => {
            let (target, me, blocked) = tokio::join!(
                ctx.store.get_user(*to),
                active_user(ctx, caller),
                ctx.store.has_blocked(*to, caller.account)
            );
            let (target, _) = target?.ok_or_else(|| Error::NotFound("no such account".into()))?;
            me?;
            if target.status != UserStatus::Active {
                return Err(Error::Forbidden("the account is revoked".into()));
            }
            if blocked? {
                return Err(Error::Forbidden("this account has blocked you".into()));
            }
            Ok(active_devices(&target, None))
        }
        Target::Copy { .. } => {
            let me = active_user(ctx, caller).await?;
            Ok(active_devices(&me, Some(caller.device.key())))
        }
        Target::Room(id) => {
            let (room, me) = tokio::join!(ctx.store.get_room(id), active_user(ctx, caller));
            let (room, _) = room?.ok_or_else(|| Error::NotFound("no such room".into()))?;
            me?;
            if !room.has_member(caller.account) {
                return Err(Error::Forbidden("not a member of this room".into()));
            }
            ctx.store.active_devices_of(&room.members).await
        }
    }
}

/// `user`'s active devices but `except`, sorted.
fn active_devices(user: &User, except: Option<Key>) -> Vec<Key> {
    let mut keys: Vec<Key> = user.active_devices().map(|d| d.device).filter(|k| Some(*k) != except).collect();
    keys.sort_unstable();
    keys
}

/// The refusal of a recipient set that is not the devices the message
/// must reach.
fn stale(target: &Target, want: usize, got: usize) -> Error {
    let whose = match target {
        Target::Dm(to) => format!("the active devices of {to}"),
        Target::Copy { .. } => "the other active devices of your account".to_string(),
        Target::Room(id) => format!("the active devices of the members of room {id}"),
    };
    Error::StaleDevices(format!(
        "recipients must be exactly {whose} ({want} devices; the envelope names {got} or others): \
         look them up again and seal again"
    ))
}

/// `unibus.mail.fetch`: one page of the caller's DM channel, or of a room
/// it is a member of, holding only envelopes sealed for the calling
/// device.
pub async fn fetch(
    ctx: &Ctx,
    caller: &Caller,
    req: MailFetchRequest,
) -> Result<Outcome<MailFetchReply>, Error> {
    let limit = req.page_limit()?;
    let channel = match &req.channel {
        Channel::Dm => {
            active_user(ctx, caller).await?;
            MailChannel::dm(&caller.account)
        }
        Channel::Room(id) => {
            let (room, me) = tokio::join!(ctx.store.get_room(id), active_user(ctx, caller));
            let (room, _) = room?.ok_or_else(|| Error::NotFound("no such room".into()))?;
            me?;
            if !room.has_member(caller.account) {
                return Err(Error::Forbidden("not a member of this room".into()));
            }
            MailChannel::room(id)
        }
    };
    let after = req.after.unwrap_or(0);
    let max_bytes = ctx.delivery.max_envelope();
    let page = ctx.store.mail_page(&channel, after, caller.device.key(), limit, max_bytes).await?;
    let mut messages = Vec::with_capacity(page.messages.len());
    for (seq, bytes) in page.messages {
        match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(envelope) => messages.push(Waiting { seq, envelope }),
            // Only unibusd writes there, after checking: a record that no
            // longer decodes is skipped rather than blocking the channel.
            Err(e) => warn!(seq, %channel, error = %e, "stored message does not decode; skipped"),
        }
    }
    Outcome::reply(MailFetchReply { messages, next: page.next })
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}
