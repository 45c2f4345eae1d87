//! Devices of accounts (docs/protocol.md section 8): add from a device of
//! the account, list, revoke under the seniority and last-device rules, and
//! an admin's recovery add while an account has no active device. Bindings
//! are verified for the account they would join before anything is read.

use super::{Caller, Ctx, Outcome, active_admin, active_user, active_user_at, sweep_keys};
use crate::store::{AdminLoss, ListChange, Listing};
use unibus_proto::KexSig;
use unibus_proto::binding::verify_binding;
use unibus_proto::devicelist::{By, Change};
use unibus_proto::error::Error;
use unibus_proto::ids::{Actor, KexPub, Key, SignPub};
use unibus_proto::records::{Device, Role, User, UserStatus, Via};
use unibus_proto::wire::{
    AdminDeviceAddRequest, DeviceAddRequest, DeviceListOnly, DeviceListReply, DeviceReply, DeviceRevokeReply,
    DeviceRevokeRequest, DeviceSignRequest, Empty, validate_name,
};

/// A new device record for `account`, before the store gives it a `seq`.
fn new_device(
    account: Key,
    key: &SignPub,
    kex_pub: KexPub,
    kex_sig: KexSig,
    name: Option<String>,
    by: &SignPub,
    via: Via,
) -> Device {
    let device =
        Device::joining(account, key.key(), kex_pub.key(), Some(kex_sig.into()), via, Actor::Key(by.key()));
    Device { name: name.unwrap_or(device.name), ..device }
}

/// `unibus.device.add`: an active device of the caller's account adds the
/// new device's public bundle.
pub async fn add(ctx: &Ctx, caller: &Caller, req: DeviceAddRequest) -> Result<Outcome<DeviceReply>, Error> {
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    let account = caller.account;
    verify_binding(&account, &req.device, &req.kex_pub, &req.kex_sig)?;
    active_user(ctx, caller).await?;
    let new =
        new_device(account, &req.device, req.kex_pub, req.kex_sig, req.name, &caller.device, Via::Device);
    let list = ListChange {
        list: req.device_list,
        caller: caller.device.key(),
        by: By::Device,
        change: Change::Added(new.listed()),
    };
    // Judged again on the record written over: the account and the adding
    // device must still be active.
    let by = caller.device.key();
    let rule = move |user: &User| {
        if user.status != UserStatus::Active || !user.has_active_device(by) {
            return Err(Error::Forbidden("device is not an active device of an active account".into()));
        }
        Ok(())
    };
    store_and_announce(ctx, new, rule, &list).await
}

/// Adds `new` under `rule` and `list`'s rules and tells the account's
/// devices.
async fn store_and_announce<F>(
    ctx: &Ctx,
    new: Device,
    rule: F,
    list: &ListChange,
) -> Result<Outcome<DeviceReply>, Error>
where
    F: Fn(&User) -> Result<(), Error>,
{
    let device = ctx.store.add_device(new, rule, list).await?;
    ctx.notices.device_changed(&device).await;
    Outcome::reply(DeviceReply { device })
}

/// `unibus.device.list`: the caller's account's devices, every status,
/// and its current signed list.
pub async fn list(ctx: &Ctx, caller: &Caller, _req: Empty) -> Result<Outcome<DeviceListReply>, Error> {
    let user = active_user(ctx, caller).await?;
    Outcome::reply(DeviceListReply { devices: user.devices, device_list: user.device_list })
}

/// `unibus.device.sign`: version 1 of the list of an account made before
/// lists, from its oldest active device.
pub async fn sign(
    ctx: &Ctx,
    caller: &Caller,
    req: DeviceSignRequest,
) -> Result<Outcome<DeviceListOnly>, Error> {
    req.device_list.check()?;
    active_user(ctx, caller).await?;
    let device_list =
        ctx.store.sign_first_list(caller.account, caller.device.key(), &req.device_list).await?;
    Outcome::reply(DeviceListOnly { device_list })
}

/// `unibus.admin.device.add`: recovery, only while the account has no
/// active device; the device is marked `via: "recovery"`.
pub async fn recover(
    ctx: &Ctx,
    caller: &Caller,
    req: AdminDeviceAddRequest,
) -> Result<Outcome<DeviceReply>, Error> {
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    verify_binding(&req.account.key(), &req.device, &req.kex_pub, &req.kex_sig)?;
    let account = req.account.key();
    ctx.store.get_user(account).await?.ok_or_else(|| Error::NotFound("no such account".into()))?;
    active_admin(ctx, caller).await?;
    let new =
        new_device(account, &req.device, req.kex_pub, req.kex_sig, req.name, &caller.device, Via::Recovery);
    let list = ListChange {
        list: req.device_list,
        caller: caller.device.key(),
        by: By::Admin,
        change: Change::Added(new.listed()),
    };
    let rule = |user: &User| {
        if user.active_devices().next().is_some() {
            return Err(Error::Forbidden("recovery only while the account has no active device".into()));
        }
        Ok(())
    };
    store_and_announce(ctx, new, rule, &list).await
}

/// `unibus.device.revoke`: a device revokes itself or a newer one of its
/// account, never an older one nor the last active one; an admin revokes
/// any device but the last active device of the last active admin. The
/// caller's own standing is judged on the record written over when it is
/// the target's account; an admin's standing in its own, other record is
/// checked as of the write afterwards, like the last-admin rule, and the
/// revoke is taken back when either fails. The revoked device's
/// connections are closed on every server.
pub async fn revoke(
    ctx: &Ctx,
    caller: &Caller,
    req: DeviceRevokeRequest,
) -> Result<Outcome<DeviceRevokeReply>, Error> {
    let target = req.device.key();
    let account = ctx.store.account_of(target).await?;
    let listed = ctx.store.get_user(account).await?.is_some_and(|(u, _)| u.device(target).is_some());
    if !listed {
        return Err(Error::NotFound("no such device".into()));
    }
    let (me, my_rev) = active_user_at(ctx, caller).await?;
    let as_admin = me.role == Role::Admin;
    let own = account == caller.account;
    if !as_admin && !own {
        return Err(Error::Forbidden("not a device of your account".into()));
    }
    // An admin acting on another account: its standing is in its own
    // record, just read active with the calling device active; its
    // revision is what the check after the write starts from.
    let admin_since = (!own).then_some(my_rev);
    // Only an admin's revoke can touch the last admin's last device.
    let admin_remains = !as_admin || ctx.store.admin_remains(account).await?;
    let judge = Judge { caller: caller.device.key(), as_admin, own, admin_remains };
    let rule = |user: &User, device: &Device| judge.rule(user, device);
    let by = Actor::Key(caller.device.key());
    // Signed by the calling device: `by: "device"` on its own account,
    // `by: "admin"` on another (docs/protocol.md section 11).
    let listing = match req.device_list {
        Some(list) => Listing::Change(Box::new(ListChange {
            list,
            caller: caller.device.key(),
            by: if own { By::Device } else { By::Admin },
            change: Change::Removed(target.to_hex()),
        })),
        None => Listing::Missing { admin: !own },
    };
    let revoked = ctx.store.revoke_device(account, target, by, rule, &listing).await?;
    let device = revoked.device.clone();
    if let Some(at) = revoked.revision {
        if let Some(since) = admin_since
            && !caller_stood(ctx, caller, since, at).await?
        {
            ctx.store.undo_revoke(&revoked).await?;
            return Err(Error::Forbidden(CALLER_GONE.into()));
        }
        if as_admin {
            // The last-admin rule, checked again after the write.
            ctx.store.keep_an_admin(account, AdminLoss::DeviceRevoked(revoked)).await?;
        }
        ctx.notices.device_changed(&device).await;
        ctx.notices.revoked(account, Some(target)).await;
    }
    let sweep = sweep_keys(ctx, &[target]).await;
    let (kicked, kick_pending) = (sweep.kicked(), sweep.pending());
    Outcome::reply_then_sweep(DeviceRevokeReply { device, kicked, kick_pending }, sweep)
}

/// The rule of docs/protocol.md section 8, "Revoking", as far as it is
/// judged on the account record being written over.
struct Judge {
    /// The calling device.
    caller: Key,
    /// The caller's account is an admin.
    as_admin: bool,
    /// The target is a device of the caller's own account.
    own: bool,
    /// Some active admin other than the target's account has an active
    /// device (read before the write; the store checks again after it).
    admin_remains: bool,
}

impl Judge {
    fn rule(&self, user: &User, device: &Device) -> Result<(), Error> {
        // A device revoked (or an account revoked) a moment ago cannot
        // revoke a sibling: judged on this very record.
        if self.own && (user.status != UserStatus::Active || !user.has_active_device(self.caller)) {
            return Err(Error::Forbidden(CALLER_GONE.into()));
        }
        let last = user.active_devices().count() <= 1;
        if self.as_admin {
            if last && user.is_active_admin() && !self.admin_remains {
                return Err(crate::store::last_admin());
            }
            return Ok(());
        }
        let my_seq = user.device(self.caller).map_or(u32::MAX, |d| d.seq);
        if device.seq < my_seq {
            return Err(Error::Forbidden("a device cannot revoke an older device".into()));
        }
        if last {
            return Err(Error::Forbidden("the last active device of an account cannot be revoked".into()));
        }
        Ok(())
    }
}

/// Refused while the calling device or its account is no longer active in
/// the record the revoke would be written over (or, for an admin acting
/// on another account, in its own record as of that write).
const CALLER_GONE: &str = "the calling device or its account was revoked before this revoke was written";

fn admin_stands(me: &User, device: Key) -> bool {
    me.is_active_admin() && me.has_active_device(device)
}

/// Whether the calling admin still stood as of the revoke written at
/// revision `at` (its own record, another than the target's, which it was
/// found standing in at revision `since`).
async fn caller_stood(ctx: &Ctx, caller: &Caller, since: u64, at: u64) -> Result<bool, Error> {
    let stands = |me: &User| admin_stands(me, caller.device.key());
    ctx.store.user_held_at(caller.account, since, at, stands).await
}
