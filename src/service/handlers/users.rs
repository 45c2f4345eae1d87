//! Users: register, whoami, lookup, and the admin user endpoints.

use super::{Caller, Ctx, Outcome, Paging, active_admin, active_user, connection_names, sweep_keys};
use crate::store::NewUser;
use unibus_proto::binding::verify_binding;
use unibus_proto::devicelist::{By, DeviceList, ListedDevice};
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, Key};
use unibus_proto::keys::InviteToken;
use unibus_proto::records::{Device, User, UserStatus};
use unibus_proto::wire::{
    AccountReply, DeleteReply, Empty, LookupReply, LookupRequest, PublicUser, RegisterRequest, RevokeReply,
    SignPubRequest, UserListReply, UserListRequest, UserReply, validate_name,
};

/// `unibus.register`: redeem an invite for the caller's key, then close the
/// caller's (guest) connections so that they come back as a user. A
/// well-formed request passes the registration limits
/// ([`crate::limits::guests`]) before it may touch the store; a malformed
/// one costs no store work.
pub async fn register(
    ctx: &Ctx,
    caller: &Caller,
    req: RegisterRequest,
) -> Result<Outcome<AccountReply>, Error> {
    let token = InviteToken::parse(&req.invite)?;
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    // The first device is its own account (docs/protocol.md section 8).
    verify_binding(&caller.device.key(), &caller.device, &req.kex_pub, &req.kex_sig)?;
    // The list's shape and contents before the guest limits (so that a
    // client's mistake costs it no registration attempt), its signature
    // after them (so that a flood of registrations pays one signature
    // check each, as before lists); both before the invite is touched, so
    // that a bad list spends nothing (docs/protocol.md section 11).
    first_list(caller.device.key(), &req.device_list, &req.kex_pub.key(), req.kex_sig.as_str())?;
    ctx.guests.admit(caller.device.verifying_key().as_bytes())?;
    req.device_list.check()?;
    let new = NewUser {
        sign_pub: caller.device.key(),
        kex_pub: req.kex_pub.key(),
        kex_sig: req.kex_sig.into(),
        name: req.name,
        device_list: req.device_list,
    };
    let user = ctx.store.redeem_invite(&token, &new).await?;
    let device = own_device(&user, caller.device.key())?;
    // Close the (guest) connection that asked, so that it comes back as a
    // user; best effort: the user is registered either way.
    Outcome::reply_then_kick_origin(AccountReply { user, device }, caller.origin.clone())
}

/// Checks the shape and contents of version 1 of a new account's list:
/// the first device alone (as the request binds it), signed by it,
/// `by: "device"` (the signature itself is checked by the caller).
fn first_list(me: Key, list: &DeviceList, kex_pub: &Key, kex_sig: &str) -> Result<(), Error> {
    list.check_shape()?;
    let only =
        ListedDevice { device: me.to_hex(), kex_pub: kex_pub.to_hex(), kex_sig: Some(kex_sig.to_string()) };
    if list.account != me.to_hex() || list.signer != me.to_hex() || list.by != By::Device {
        return Err(Error::bad(
            "device_list: the new account's own, signed by its first device, by \"device\"",
        ));
    }
    if list.version != 1 || list.devices != [only] {
        return Err(Error::bad("device_list: version 1, listing the first device alone as registered"));
    }
    Ok(())
}

/// `unibus.whoami`: the caller's account and device records.
pub async fn whoami(ctx: &Ctx, caller: &Caller, _req: Empty) -> Result<Outcome<AccountReply>, Error> {
    let user = active_user(ctx, caller).await?;
    let device = own_device(&user, caller.device.key())?;
    Outcome::reply(AccountReply { user, device })
}

/// The record of `device` in `user`'s device set.
fn own_device(user: &User, device: Key) -> Result<Device, Error> {
    user.device(device)
        .cloned()
        .ok_or_else(|| Error::Internal(format!("account does not list device {device}")))
}

/// `unibus.user.lookup`: public part of a user's record (any status).
pub async fn lookup(ctx: &Ctx, caller: &Caller, req: LookupRequest) -> Result<Outcome<LookupReply>, Error> {
    let target = req.sign_pub.key();
    let (user, _) =
        ctx.store.get_user(target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    active_user(ctx, caller).await?;
    let lists = match (req.since, &user.device_list) {
        (None, _) => None,
        (Some(_), None) => Some(Vec::new()),
        (Some(since), Some(current)) => Some(ctx.store.device_lists_since(current, since).await?),
    };
    let mut user = PublicUser::from(user);
    user.device_lists = lists;
    Outcome::reply(LookupReply { user })
}

/// `unibus.admin.user.list`: one page of users in key order.
pub async fn list(ctx: &Ctx, caller: &Caller, req: UserListRequest) -> Result<Outcome<UserListReply>, Error> {
    let filter = req.status.map_or("", UserStatus::as_str);
    let page = Paging::open(ctx, "users", filter, req.limit, req.cursor.as_deref())?;
    active_admin(ctx, caller).await?;
    let (users, last) = ctx.store.list_users_page(req.status, page.after::<Key>()?, page.limit).await?;
    Outcome::reply(UserListReply { users, next: page.next(ctx, last) })
}

/// `unibus.admin.user.get`.
pub async fn get(ctx: &Ctx, caller: &Caller, req: SignPubRequest) -> Result<Outcome<UserReply>, Error> {
    let target = req.sign_pub.key();
    let (user, _) =
        ctx.store.get_user(target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    active_admin(ctx, caller).await?;
    Outcome::reply(UserReply { user })
}

/// `unibus.admin.user.revoke`: status flip, then close every live
/// connection of the key (also when it was already revoked: stragglers),
/// after the reply and again once in-flight admissions have settled.
pub async fn revoke(ctx: &Ctx, caller: &Caller, req: SignPubRequest) -> Result<Outcome<RevokeReply>, Error> {
    let target = req.sign_pub.key();
    ctx.store.get_user(target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    let admin = active_admin(ctx, caller).await?;
    let (user, _) =
        ctx.store.set_user_status(target, UserStatus::Revoked, Actor::Key(admin.sign_pub)).await?;
    ctx.notices.revoked(target, None).await;
    // The write stands whatever happens now: closing never fails the reply.
    let sweep = sweep_keys(ctx, &connection_names(&user)).await;
    let (kicked, kick_pending) = (sweep.kicked(), sweep.pending());
    Outcome::reply_then_sweep(RevokeReply { user, kicked, kick_pending }, sweep)
}

/// `unibus.admin.user.restore`: takes effect on the next connect.
pub async fn restore(ctx: &Ctx, caller: &Caller, req: SignPubRequest) -> Result<Outcome<UserReply>, Error> {
    let target = req.sign_pub.key();
    ctx.store.get_user(target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    let admin = active_admin(ctx, caller).await?;
    let (user, _) = ctx.store.set_user_status(target, UserStatus::Active, Actor::Key(admin.sign_pub)).await?;
    Outcome::reply(UserReply { user })
}

/// `unibus.admin.user.delete`: hard delete, out of every room, then close
/// its connections (they come back as guests).
pub async fn delete(ctx: &Ctx, caller: &Caller, req: SignPubRequest) -> Result<Outcome<DeleteReply>, Error> {
    let target = req.sign_pub.key();
    ctx.store.get_user(target).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
    active_admin(ctx, caller).await?;
    let deleted = ctx.store.delete_user(target).await?;
    ctx.notices.revoked(target, None).await;
    let sweep = sweep_keys(ctx, &connection_names(&deleted)).await;
    let (kicked, kick_pending) = (sweep.kicked(), sweep.pending());
    Outcome::reply_then_sweep(DeleteReply { deleted: target, kicked, kick_pending }, sweep)
}
