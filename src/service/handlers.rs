//! One handler per control-plane endpoint: `(ctx, caller, request) ->
//! reply or domain error`. Shape checks first (`bad_request`), then
//! existence (`not_found`), then permission (`forbidden`).

use super::{Caller, Ctx};
use crate::error::Error;
use crate::keys::{self, InviteToken};
use crate::model::{Role, User, UserStatus};
use crate::proto::{
    InviteCreateReply, InviteCreateRequest, LookupReply, LookupRequest, RegisterRequest, UserReply,
    validate_name,
};
use crate::store::NewUser;

/// The caller's record if it is an active user.
async fn active_user(ctx: &Ctx, caller: &Caller) -> Result<User, Error> {
    match ctx.store.get_user(&caller.sign_pub).await? {
        Some((u, _)) if u.status == UserStatus::Active => Ok(u),
        Some(_) => Err(Error::Forbidden("user is revoked".into())),
        None => Err(Error::Forbidden("not a registered user".into())),
    }
}

/// The caller's record if it is an active admin.
async fn active_admin(ctx: &Ctx, caller: &Caller) -> Result<User, Error> {
    let user = active_user(ctx, caller).await?;
    if user.role != Role::Admin {
        return Err(Error::Forbidden("admin role required".into()));
    }
    Ok(user)
}

/// `unibus.register`: redeem an invite for the caller's key.
pub async fn register(ctx: &Ctx, caller: &Caller, req: RegisterRequest) -> Result<UserReply, Error> {
    let token = InviteToken::parse(&req.invite)?;
    let kex_pub = hex::encode(keys::parse_kex_pub("kex_pub", &req.kex_pub)?);
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    let new = NewUser { sign_pub: caller.sign_pub.clone(), kex_pub, name: req.name };
    let user = ctx.store.redeem_invite(&token, &new).await?;
    Ok(UserReply { user })
}

/// `unibus.whoami`: the caller's own record.
pub async fn whoami(ctx: &Ctx, caller: &Caller) -> Result<UserReply, Error> {
    Ok(UserReply { user: active_user(ctx, caller).await? })
}

/// `unibus.user.lookup`: public part of a user's record.
pub async fn lookup(ctx: &Ctx, caller: &Caller, req: LookupRequest) -> Result<LookupReply, Error> {
    let target = hex::encode(keys::parse_sign_pub("sign_pub", &req.sign_pub)?.as_bytes());
    let (user, _) =
        ctx.store.get_user(&target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    active_user(ctx, caller).await?;
    Ok(LookupReply { user: user.into() })
}

/// `unibus.admin.invite.create`: mint an invite; the token is in the reply
/// only.
pub async fn invite_create(
    ctx: &Ctx,
    caller: &Caller,
    req: InviteCreateRequest,
) -> Result<InviteCreateReply, Error> {
    let ttl = req.ttl()?;
    let note = req.note()?;
    let role = req.role.unwrap_or(Role::Member);
    let admin = active_admin(ctx, caller).await?;
    let (invite, token) = ctx.store.create_invite(role, note, &admin.sign_pub, ttl).await?;
    Ok(InviteCreateReply { invite, token: token.to_hex(), link: token.link() })
}
