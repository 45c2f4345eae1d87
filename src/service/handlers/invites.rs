//! Invites: the admin invite endpoints.

use super::{Caller, Ctx, Outcome, Paging, active_admin};
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, InviteId, Timestamp};
use unibus_proto::records::{InviteStatus, Role};
use unibus_proto::wire::{
    InviteCreateReply, InviteCreateRequest, InviteIdRequest, InviteListReply, InviteListRequest, InviteReply,
};

/// `unibus.admin.invite.create`: mint an invite; the token is in the reply
/// only.
pub async fn create(
    ctx: &Ctx,
    caller: &Caller,
    req: InviteCreateRequest,
) -> Result<Outcome<InviteCreateReply>, Error> {
    let ttl = req.ttl()?;
    let note = req.note()?;
    let role = req.role.unwrap_or(Role::Member);
    let admin = active_admin(ctx, caller).await?;
    let (invite, token) = ctx.store.create_invite(role, note, Actor::Key(admin.sign_pub), ttl).await?;
    Outcome::reply(InviteCreateReply { invite, token: token.to_hex(), link: token.link() })
}

/// `unibus.admin.invite.list`: one page, no tokens, `expired` computed.
pub async fn list(
    ctx: &Ctx,
    caller: &Caller,
    req: InviteListRequest,
) -> Result<Outcome<InviteListReply>, Error> {
    let filter = req.status.map_or("", InviteStatus::as_str);
    let page = Paging::open(ctx, "invites", filter, req.limit, req.cursor.as_deref())?;
    active_admin(ctx, caller).await?;
    let (invites, last) =
        ctx.store.list_invites_page(req.status, page.after::<InviteId>()?.as_ref(), page.limit).await?;
    Outcome::reply(InviteListReply { invites, next: page.next(ctx, last) })
}

/// `unibus.admin.invite.get`.
pub async fn get(ctx: &Ctx, caller: &Caller, req: InviteIdRequest) -> Result<Outcome<InviteReply>, Error> {
    let id = req.id;
    let (invite, _) =
        ctx.store.get_invite(&id).await?.ok_or_else(|| Error::NotFound("no such invite".into()))?;
    active_admin(ctx, caller).await?;
    Outcome::reply(InviteReply { invite: invite.view(Timestamp::now()) })
}

/// `unibus.admin.invite.cancel`: idempotent for cancelled or expired
/// invites; `invite_used` for used ones.
pub async fn cancel(ctx: &Ctx, caller: &Caller, req: InviteIdRequest) -> Result<Outcome<InviteReply>, Error> {
    let id = req.id;
    ctx.store.get_invite(&id).await?.ok_or_else(|| Error::NotFound("no such invite".into()))?;
    let admin = active_admin(ctx, caller).await?;
    let invite = ctx.store.cancel_invite(&id, Actor::Key(admin.sign_pub)).await?;
    Outcome::reply(InviteReply { invite })
}
