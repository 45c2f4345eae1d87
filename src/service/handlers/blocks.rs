//! Block lists (docs/protocol.md section 5): `unibus.block.add|remove|list` for
//! active users. Each answers the caller's whole list. A block keeps the
//! blocked key from adding the caller to rooms (see the rooms handler);
//! clients also drop DMs from blocked keys.

use super::{Caller, Ctx, Outcome, active_user};
use unibus_proto::error::Error;
use unibus_proto::ids::{InviteId, Key};
use unibus_proto::wire::{BlockListReply, Empty, MAX_BLOCKS_PER_USER, SignPubRequest};

/// `unibus.block.add`: any well-formed key but the caller's own; at most
/// 1,000; blocking a blocked key changes nothing.
pub async fn add(ctx: &Ctx, caller: &Caller, req: SignPubRequest) -> Result<Outcome<BlockListReply>, Error> {
    let key = req.sign_pub.key();
    if key == caller.account {
        return Err(Error::bad("sign_pub: you cannot block yourself"));
    }
    let me = active_user(ctx, caller).await?;
    let (blocked, changed) = ctx.store.block(me.sign_pub, key, MAX_BLOCKS_PER_USER).await?;
    if changed {
        ensure_still_registered(ctx, me.sign_pub, &me.invite_id).await?;
    }
    Outcome::reply(BlockListReply { blocked })
}

/// `unibus.block.remove`: unblocking a key that is not blocked changes
/// nothing.
pub async fn remove(
    ctx: &Ctx,
    caller: &Caller,
    req: SignPubRequest,
) -> Result<Outcome<BlockListReply>, Error> {
    let key = req.sign_pub.key();
    let me = active_user(ctx, caller).await?;
    let (blocked, _) = ctx.store.unblock(me.sign_pub, key).await?;
    Outcome::reply(BlockListReply { blocked })
}

/// `unibus.block.list`: the caller's block list.
pub async fn list(ctx: &Ctx, caller: &Caller, _req: Empty) -> Result<Outcome<BlockListReply>, Error> {
    let me = active_user(ctx, caller).await?;
    Outcome::reply(BlockListReply { blocked: ctx.store.blocked_by(me.sign_pub).await? })
}

/// A block list written while its user was being deleted must not outlive
/// the user (a key registered again later inherits nothing): after writing,
/// the user must still be the same registration, else the list goes.
async fn ensure_still_registered(ctx: &Ctx, me: Key, invite_id: &InviteId) -> Result<(), Error> {
    if !ctx.store.still_registered(me, invite_id).await? {
        ctx.store.delete_block_list(me).await?;
        return Err(Error::Forbidden("not a registered user".into()));
    }
    Ok(())
}
