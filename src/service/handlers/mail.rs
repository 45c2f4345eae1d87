//! Messages that wait (docs/protocol.md section 10): `unibus.mail.send`
//! stores an envelope for exactly the devices it must reach and delivers
//! it live; `unibus.mail.fetch` reads one page of a channel for the
//! calling device. Each refusal stores nothing: every check comes before
//! the one write.

use bytes::Bytes;
use tracing::warn;

use super::{Caller, Ctx, Outcome, active_user, check_caller};
use crate::store::AccountView;
use crate::store::index::Fresh;
use unibus_proto::e2e::Envelope;
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::mail::{
    Addressed, Channel, MailChannel, MailFetchReply, MailFetchRequest, MailSendReply, MailSendRequest,
    Target, Waiting, address,
};

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
    let expected = judged(ctx, caller, &addressed).await?;
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

/// Steps 2 to 4 on the indexes as they stood at most [`RECENT`] ago (and
/// with every write of this instance): what another instance changed in
/// that window is as if the message had come that much earlier, which the
/// data plane allows for a second (section 6). Anything but a match of the
/// envelope's recipients is judged again on indexes proven current with
/// the leader, so no refusal rests on a view that may trail.
///
/// [`RECENT`]: crate::store::index::RECENT
async fn judged(ctx: &Ctx, caller: &Caller, addressed: &Addressed) -> Result<Vec<Key>, Error> {
    match recipients(ctx, caller, addressed, Fresh::Recent).await {
        Ok(expected) if expected == addressed.recipients => Ok(expected),
        Err(unavailable @ Error::Unavailable(_)) => Err(unavailable),
        Ok(_) | Err(_) => recipients(ctx, caller, addressed, Fresh::Leader).await,
    }
}

/// Existence, permission and the exact recipient devices of a message to
/// `addressed.target` from the caller (steps 2 to 4), from the indexes at
/// freshness `fresh` (no store round trip when they are fresh enough;
/// the list of an account that has blocked someone is a leader read),
/// judged in the contract's order.
async fn recipients(
    ctx: &Ctx,
    caller: &Caller,
    addressed: &Addressed,
    fresh: Fresh,
) -> Result<Vec<Key>, Error> {
    let me = caller.account;
    match &addressed.target {
        Target::Dm(to) => {
            let (accounts, blocked) =
                tokio::join!(ctx.store.accounts([*to, me], fresh), ctx.store.has_blocked_at(*to, me, fresh));
            let [target, mine] = accounts?;
            let target = target.ok_or_else(|| Error::NotFound("no such account".into()))?;
            caller_admitted(caller, mine)?;
            if !target.active {
                return Err(Error::Forbidden("the account is revoked".into()));
            }
            if blocked? {
                return Err(Error::Forbidden("this account has blocked you".into()));
            }
            Ok(target.devices)
        }
        Target::Copy { .. } => {
            let [mine] = ctx.store.accounts([me], fresh).await?;
            let mine = caller_admitted(caller, mine)?;
            Ok(mine.devices.into_iter().filter(|d| *d != caller.device.key()).collect())
        }
        Target::Room(id) => {
            let (members, accounts) =
                tokio::join!(ctx.store.room_members(id, fresh), ctx.store.accounts([me], fresh));
            let members = members?.ok_or_else(|| Error::NotFound("no such room".into()))?;
            let [mine] = accounts?;
            caller_admitted(caller, mine)?;
            if !members.contains(&me) {
                return Err(Error::Forbidden("not a member of this room".into()));
            }
            ctx.store.active_devices_of(&members, fresh).await
        }
    }
}

/// The caller's account as an index read shows it, when it passes
/// [`check_caller`] (the rule `active_user` applies to a leader read).
fn caller_admitted(caller: &Caller, account: Option<AccountView>) -> Result<AccountView, Error> {
    check_caller(account.as_ref().map(|a| (a.active, a.admits(caller.device.key()))))?;
    account.ok_or_else(|| Error::Internal("caller checked without an account".into()))
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
