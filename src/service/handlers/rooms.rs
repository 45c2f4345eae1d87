//! Rooms: create, get, list, member add and remove (docs/protocol.md section 5).
//! Membership changes close the affected member's connections after the
//! reply, so that its reconnect carries the new permissions. Adds respect
//! the caps (256 rooms per user, 512 members per room) and block lists.

use super::{Caller, Ctx, Outcome, Paging, active_user, sweep_account};
use unibus_proto::error::Error;
use unibus_proto::records::{Role, Room, UserStatus};
use unibus_proto::wire::{
    MemberRequest, RoomCreateRequest, RoomIdRequest, RoomListReply, RoomListRequest, RoomReply, validate_name,
};

/// `unibus.room.create`: the caller owns the room and is its first member;
/// its connections are closed so that it reconnects with the room granted.
pub async fn create(ctx: &Ctx, caller: &Caller, req: RoomCreateRequest) -> Result<Outcome<RoomReply>, Error> {
    validate_name("name", &req.name)?;
    active_user(ctx, caller).await?;
    let room = ctx.store.create_room(&req.name, caller.account).await?;
    let sweep = sweep_account(ctx, caller.account).await;
    Outcome::reply_then_sweep(RoomReply { room }, sweep)
}

/// `unibus.room.get`: members and admins only.
pub async fn get(ctx: &Ctx, caller: &Caller, req: RoomIdRequest) -> Result<Outcome<RoomReply>, Error> {
    let id = req.id;
    let (room, _) = ctx.store.get_room(&id).await?.ok_or_else(|| Error::NotFound("no such room".into()))?;
    let me = active_user(ctx, caller).await?;
    if me.role != Role::Admin && !room.has_member(me.sign_pub) {
        return Err(Error::Forbidden("not a member of this room".into()));
    }
    Outcome::reply(RoomReply { room })
}

/// `unibus.room.list`: the rooms the caller is a member of.
pub async fn list(ctx: &Ctx, caller: &Caller, req: RoomListRequest) -> Result<Outcome<RoomListReply>, Error> {
    let filter = caller.account.to_hex();
    let page = Paging::open(ctx, "rooms", &filter, req.limit, req.cursor.as_deref())?;
    active_user(ctx, caller).await?;
    let after = page.after()?;
    let (rooms, last) = ctx.store.list_rooms_page(caller.account, after.as_ref(), page.limit).await?;
    Outcome::reply(RoomListReply { rooms, next: page.next(ctx, last) })
}

/// `unibus.room.member.add`: the owner or an admin adds an active user,
/// within both caps; a non-admin cannot add a user who has blocked it.
pub async fn add(ctx: &Ctx, caller: &Caller, req: MemberRequest) -> Result<Outcome<RoomReply>, Error> {
    let id = req.id;
    let target = req.sign_pub.key();
    let current = ctx.store.get_room(&id).await?.ok_or_else(|| Error::NotFound("no such room".into()))?;
    let member = match ctx.store.get_user(target).await? {
        Some((u, _)) if u.status == UserStatus::Active => u,
        _ => return Err(Error::NotFound("no such active user".into())),
    };
    let me = active_user(ctx, caller).await?;
    let is_admin = me.role == Role::Admin;
    let may_add = |room: &Room| {
        if !is_admin && room.owner != Some(me.sign_pub) {
            return Err(Error::Forbidden("only the owner or an admin adds members".into()));
        }
        Ok(())
    };
    // Permission first: only who may add learns whether it is blocked.
    may_add(&current.0)?;
    if !is_admin && ctx.store.has_blocked(target, me.sign_pub).await? {
        return Err(Error::Forbidden("this user has blocked you".into()));
    }
    let (room, changed) = ctx.store.add_room_member(current, &member, may_add).await?;
    if !changed {
        return Outcome::reply(RoomReply { room });
    }
    let sweep = sweep_account(ctx, target).await;
    Outcome::reply_then_sweep(RoomReply { room }, sweep)
}

/// `unibus.room.member.remove`: the owner, an admin, or the member itself;
/// only an admin removes the owner.
pub async fn remove(ctx: &Ctx, caller: &Caller, req: MemberRequest) -> Result<Outcome<RoomReply>, Error> {
    let id = req.id;
    let target = req.sign_pub.key();
    ctx.store.get_room(&id).await?.ok_or_else(|| Error::NotFound("no such room".into()))?;
    let me = active_user(ctx, caller).await?;
    let is_admin = me.role == Role::Admin;
    let may_remove = |room: &Room| {
        let is_owner = room.owner == Some(me.sign_pub);
        let is_self = me.sign_pub == target;
        if !(is_admin || is_owner || is_self) {
            return Err(Error::Forbidden("only the owner, an admin or the member itself removes".into()));
        }
        if room.owner == Some(target) && !is_admin {
            return Err(Error::Forbidden("only an admin removes the owner".into()));
        }
        Ok(())
    };
    let (room, changed) = ctx.store.remove_room_member(&id, target, may_remove).await?;
    if !changed {
        return Outcome::reply(RoomReply { room });
    }
    let sweep = sweep_account(ctx, target).await;
    Outcome::reply_then_sweep(RoomReply { room }, sweep)
}
