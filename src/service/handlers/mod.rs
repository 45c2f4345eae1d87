//! One handler per control-plane endpoint: `(ctx, caller, request) ->
//! outcome or domain error`. Shape checks first (`bad_request`), then
//! existence (`not_found`), then permission (`forbidden`).

mod blocks;
mod invites;
mod rooms;
mod users;

use async_nats::HeaderMap;

use super::{Caller, Ctx, Outcome, caller_from_headers};
use unibus_proto::error::Error;
use unibus_proto::keys;
use unibus_proto::model::{Role, User, UserStatus};
use unibus_proto::wire::decode;
use unibus_proto::subjects as s;

/// Routes one request: identity, strict decoding, handler.
pub async fn dispatch(
    ctx: &Ctx,
    subject: &str,
    headers: Option<&HeaderMap>,
    body: &[u8],
) -> Result<Outcome, Error> {
    let c = &caller_from_headers(headers)?;
    match subject {
        s::REGISTER => users::register(ctx, c, decode(body)?).await,
        s::WHOAMI => users::whoami(ctx, c, decode(body)?).await,
        s::USER_LOOKUP => users::lookup(ctx, c, decode(body)?).await,
        s::ADMIN_USER_LIST => users::list(ctx, c, decode(body)?).await,
        s::ADMIN_USER_GET => users::get(ctx, c, decode(body)?).await,
        s::ADMIN_USER_REVOKE => users::revoke(ctx, c, decode(body)?).await,
        s::ADMIN_USER_RESTORE => users::restore(ctx, c, decode(body)?).await,
        s::ADMIN_USER_DELETE => users::delete(ctx, c, decode(body)?).await,
        s::ADMIN_INVITE_CREATE => invites::create(ctx, c, decode(body)?).await,
        s::ADMIN_INVITE_LIST => invites::list(ctx, c, decode(body)?).await,
        s::ADMIN_INVITE_GET => invites::get(ctx, c, decode(body)?).await,
        s::ADMIN_INVITE_CANCEL => invites::cancel(ctx, c, decode(body)?).await,
        s::ROOM_CREATE => rooms::create(ctx, c, decode(body)?).await,
        s::ROOM_GET => rooms::get(ctx, c, decode(body)?).await,
        s::ROOM_LIST => rooms::list(ctx, c, decode(body)?).await,
        s::ROOM_MEMBER_ADD => rooms::add(ctx, c, decode(body)?).await,
        s::ROOM_MEMBER_REMOVE => rooms::remove(ctx, c, decode(body)?).await,
        s::BLOCK_ADD => blocks::add(ctx, c, decode(body)?).await,
        s::BLOCK_REMOVE => blocks::remove(ctx, c, decode(body)?).await,
        s::BLOCK_LIST => blocks::list(ctx, c, decode(body)?).await,
        other => Err(Error::Internal(format!("no handler for {other}"))),
    }
}

/// The caller's record if it is an active user. Read from the leader, and
/// only while the store has a quorum (fail closed).
async fn active_user(ctx: &Ctx, caller: &Caller) -> Result<User, Error> {
    let (record, ()) = tokio::try_join!(ctx.store.get_user(&caller.sign_pub), ctx.store.ensure_quorum())?;
    match record {
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

/// A `sign_pub` field, checked and lowercased.
fn sign_pub(field: &str, value: &str) -> Result<String, Error> {
    Ok(hex::encode(keys::parse_sign_pub(field, value)?.as_bytes()))
}

/// A hex id of `bytes` bytes, lowercased.
fn hex_id(field: &str, value: &str, bytes: usize) -> Result<String, Error> {
    if value.len() != bytes * 2 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad(format!("{field}: expected {} hex characters", bytes * 2)));
    }
    Ok(value.to_ascii_lowercase())
}
