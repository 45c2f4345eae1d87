//! Devices of accounts (docs/protocol.md section 8): add from a device of
//! the account, list, revoke under the seniority and last-device rules, and
//! an admin's recovery add while an account has no active device. Bindings
//! are verified for the account they would join before anything is read.

use super::{Caller, Ctx, Outcome, active_admin, active_user};
use unibus_proto::binding::verify_binding;
use unibus_proto::error::Error;
use unibus_proto::ids::{KexPub, SignPub};
use unibus_proto::model::{Device, Role, User, UserStatus, Via};
use unibus_proto::wire::{
    AdminDeviceAddRequest, DeviceAddRequest, DeviceListReply, DeviceReply, DeviceRevokeReply, DeviceRevokeRequest,
    Empty, validate_name,
};
use unibus_proto::KexSig;

/// A new device record for `account`, before the store gives it a `seq`.
fn new_device(account: &SignPub, key: &SignPub, kex_pub: KexPub, kex_sig: KexSig, name: Option<String>, by: &SignPub, via: Via) -> Device {
    let device = Device::joining(account, key, &kex_pub, Some(kex_sig.into()), via, by);
    Device { name: name.unwrap_or(device.name), ..device }
}

/// `unibus.device.add`: an active device of the caller's account adds the
/// new device's public bundle.
pub async fn add(ctx: &Ctx, caller: &Caller, req: DeviceAddRequest) -> Result<Outcome<DeviceReply>, Error> {
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    let account = &caller.sign_pub;
    verify_binding(account, &req.device, &req.kex_pub, &req.kex_sig)?;
    active_user(ctx, caller).await?;
    let new = new_device(account, &req.device, req.kex_pub, req.kex_sig, req.name, &caller.device, Via::Device);
    // Judged again on the record written over: the account and the adding
    // device must still be active.
    let by = caller.device.clone();
    let rule = move |user: &User| {
        if user.status != UserStatus::Active || !user.has_active_device(&by) {
            return Err(Error::Forbidden("device is not an active device of an active account".into()));
        }
        Ok(())
    };
    store_and_announce(ctx, new, rule).await
}

/// Adds `new` under `rule` and tells the account's devices.
async fn store_and_announce<F>(ctx: &Ctx, new: Device, rule: F) -> Result<Outcome<DeviceReply>, Error>
where
    F: Fn(&User) -> Result<(), Error>,
{
    let device = ctx.store.add_device(new, rule).await?;
    ctx.notices.device_changed(&device).await;
    Outcome::reply(DeviceReply { device })
}

/// `unibus.device.list`: the caller's account's devices, every status.
pub async fn list(ctx: &Ctx, caller: &Caller, _req: Empty) -> Result<Outcome<DeviceListReply>, Error> {
    let user = active_user(ctx, caller).await?;
    Outcome::reply(DeviceListReply { devices: user.devices })
}

/// `unibus.admin.device.add`: recovery, only while the account has no
/// active device; the device is marked `via: "recovery"`.
pub async fn recover(ctx: &Ctx, caller: &Caller, req: AdminDeviceAddRequest) -> Result<Outcome<DeviceReply>, Error> {
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    verify_binding(&req.account, &req.device, &req.kex_pub, &req.kex_sig)?;
    ctx.store.get_user(&req.account).await?.ok_or_else(|| Error::NotFound("no such account".into()))?;
    active_admin(ctx, caller).await?;
    let new = new_device(&req.account, &req.device, req.kex_pub, req.kex_sig, req.name, &caller.device, Via::Recovery);
    let rule = |user: &User| {
        if user.active_devices().next().is_some() {
            return Err(Error::Forbidden("recovery only while the account has no active device".into()));
        }
        Ok(())
    };
    store_and_announce(ctx, new, rule).await
}

/// `unibus.device.revoke`: a device revokes itself or a newer one of its
/// account, never an older one nor the last active one; an admin revokes
/// any device but the last active device of the last active admin. The
/// revoked device's connections are closed on every server.
pub async fn revoke(ctx: &Ctx, caller: &Caller, req: DeviceRevokeRequest) -> Result<Outcome<DeviceRevokeReply>, Error> {
    let target = req.device;
    let account = ctx.store.account_of(&target).await?;
    let listed = ctx.store.get_user(&account).await?.is_some_and(|(u, _)| u.device(&target).is_some());
    if !listed {
        return Err(Error::NotFound("no such device".into()));
    }
    let me = active_user(ctx, caller).await?;
    let as_admin = me.role == Role::Admin;
    if !as_admin && account != caller.sign_pub.as_str() {
        return Err(Error::Forbidden("not a device of your account".into()));
    }
    let my_seq = me.device(&caller.device).map_or(0, |d| d.seq);
    // Only an admin's revoke can touch the last admin's last device.
    let other_admins = if as_admin { ctx.store.other_admins_with_devices(&account).await? } else { 0 };
    let rule = |user: &User, device: &Device| revoke_rule(user, device, as_admin, my_seq, other_admins);
    let (device, changed) = ctx.store.revoke_device(&account, &target, &caller.device, rule).await?;
    if changed && as_admin && last_admin_left_without_device(ctx, &account).await? {
        ctx.store.undo_revoke(&account, &target).await?;
        return Err(last_admin_device());
    }
    if changed {
        ctx.notices.device_changed(&device).await;
        ctx.notices.revoked(&account, Some(target.as_str())).await;
    }
    let sweep = ctx.kicker.sweep_after_write(&[target.to_string()]).await;
    let (kicked, kick_pending) = (sweep.kicked(), sweep.pending());
    Outcome::reply_then_sweep(DeviceRevokeReply { device, kicked, kick_pending }, sweep)
}

/// The rule of docs/protocol.md section 8, "Revoking", judged on the
/// account record being written over.
fn revoke_rule(user: &User, device: &Device, as_admin: bool, my_seq: u32, other_admins: usize) -> Result<(), Error> {
    let last = user.active_devices().count() <= 1;
    if as_admin {
        if last && user.is_active_admin() && other_admins == 0 {
            return Err(last_admin_device());
        }
        return Ok(());
    }
    if device.seq < my_seq {
        return Err(Error::Forbidden("a device cannot revoke an older device".into()));
    }
    if last {
        return Err(Error::Forbidden("the last active device of an account cannot be revoked".into()));
    }
    Ok(())
}

/// After an admin's revoke: true when `account` is an active admin left
/// without an active device and no other active admin has one (a
/// concurrent revoke elsewhere raced with ours).
async fn last_admin_left_without_device(ctx: &Ctx, account: &str) -> Result<bool, Error> {
    let Some((user, _)) = ctx.store.get_user(account).await? else { return Ok(false) };
    if !user.is_active_admin() || user.active_devices().next().is_some() {
        return Ok(false);
    }
    Ok(ctx.store.other_admins_with_devices(account).await? == 0)
}

fn last_admin_device() -> Error {
    Error::Forbidden("the last active device of the last active admin cannot be revoked".into())
}
