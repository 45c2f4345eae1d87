//! One handler per control-plane endpoint: `(ctx, caller, request) ->
//! outcome or domain error`, paired with its endpoint of the table in
//! [`unibus_proto::endpoint`] in a [`Route`] ([`ROUTES`]), which the
//! service subscribes. Requests arrive decoded, so their shape is already
//! checked (`bad_request`); handlers then check existence (`not_found`),
//! then permission (`forbidden`).

mod blocks;
mod devices;
mod invites;
mod mail;
mod rooms;
mod users;

use futures::future::BoxFuture;

use super::{Caller, Ctx, Encoded, Outcome, Stamp};
use crate::kick::Sweep;
use crate::limits::Cost;
use unibus_proto::Key;
use unibus_proto::endpoint::{self as ep, Access, Endpoint};
use unibus_proto::error::Error;
use unibus_proto::records::{Role, User, UserStatus};
use unibus_proto::wire::{decode, page_limit};

/// A handler as a subscription calls it: strict decoding of the body as
/// the endpoint's `Request`, the caller's account, the handler, encoding
/// of its `Reply`.
type Handle = for<'a> fn(&'a Ctx, Stamp, &'a [u8]) -> BoxFuture<'a, Result<Encoded, Error>>;

/// One endpoint as it is subscribed: its subject, what a request costs its
/// caller, and its handler. The service subscribes each route's subject
/// and hands every message of that subscription to that route, so a
/// request never has to be routed by its subject again.
pub struct Route {
    /// The endpoint's subject (also its name in `$SRV` STATS).
    pub subject: &'static str,
    /// What one request costs its caller ([`crate::limits::Gate`]).
    pub cost: Cost,
    handle: Handle,
}

impl Route {
    /// Handles one request of the caller the server stamped: the body
    /// decoded, the caller's account resolved (once, here), the handler.
    ///
    /// # Errors
    /// `bad_request` when the body does not decode as the endpoint's
    /// request, `unauthenticated` for a stamp that is not a user key, else
    /// the handler's error.
    pub async fn handle(&self, ctx: &Ctx, stamp: Stamp, body: &[u8]) -> Result<Encoded, Error> {
        (self.handle)(ctx, stamp, body).await
    }
}

/// Pairs each endpoint with its handler and its [`Cost`] in one [`Route`]:
/// the request is decoded as the endpoint's `Request` and the handler must
/// answer its `Reply`, so a handler cannot drift from the table.
macro_rules! routes {
    ($($ep:ty => $handler:path, $cost:expr;)*) => {
        /// Every endpoint with its handler and cost, in table order.
        pub const ROUTES: &[Route] = &[$(
            Route {
                subject: <$ep>::SUBJECT,
                cost: $cost,
                handle: {
                    fn handle<'a>(
                        ctx: &'a Ctx,
                        stamp: Stamp,
                        body: &'a [u8],
                    ) -> BoxFuture<'a, Result<Encoded, Error>> {
                        Box::pin(async move {
                            let req: <$ep as Endpoint>::Request = decode(body)?;
                            let device = stamp.device()?;
                            let account = match <$ep>::ACCESS {
                                // A guest registering: its key is the account.
                                Access::Guest => device.key(),
                                _ => ctx.store.account_of(device.key()).await?,
                            };
                            let c = stamp.caller(device, account);
                            let out: Outcome<<$ep as Endpoint>::Reply> = $handler(ctx, &c, req).await?;
                            out.encode()
                        })
                    }
                    handle
                },
            },
        )*];
    };
}

// Sweep: the write takes rights away or grants new ones, so the cluster
// is listed for the connections to close, and listed again once in-flight
// admissions have settled (crate::kick::sweep).
routes! {
    ep::Register => users::register, Cost::Write;
    ep::Whoami => users::whoami, Cost::Read;
    ep::UserLookup => users::lookup, Cost::Read;
    ep::AdminInviteCreate => invites::create, Cost::Write;
    ep::AdminInviteList => invites::list, Cost::Read;
    ep::AdminInviteGet => invites::get, Cost::Read;
    ep::AdminInviteCancel => invites::cancel, Cost::Write;
    ep::AdminUserList => users::list, Cost::Read;
    ep::AdminUserGet => users::get, Cost::Read;
    ep::AdminUserRevoke => users::revoke, Cost::Sweep;
    ep::AdminUserRestore => users::restore, Cost::Write;
    ep::AdminUserDelete => users::delete, Cost::Sweep;
    ep::RoomCreate => rooms::create, Cost::Sweep;
    ep::RoomGet => rooms::get, Cost::Read;
    ep::RoomList => rooms::list, Cost::Read;
    ep::RoomMemberAdd => rooms::add, Cost::Sweep;
    ep::RoomMemberRemove => rooms::remove, Cost::Sweep;
    ep::BlockAdd => blocks::add, Cost::Write;
    ep::BlockRemove => blocks::remove, Cost::Write;
    ep::BlockList => blocks::list, Cost::Read;
    ep::DeviceAdd => devices::add, Cost::Write;
    ep::DeviceList => devices::list, Cost::Read;
    ep::DeviceRevoke => devices::revoke, Cost::Sweep;
    ep::AdminDeviceAdd => devices::recover, Cost::Write;
    ep::DeviceSign => devices::sign, Cost::Write;
    ep::MailSend => mail::send, Cost::Mail;
    ep::MailFetch => mail::fetch, Cost::Read;
}

/// The connection names (device keys) of an account: every device it
/// lists, and its own key.
fn connection_names(user: &User) -> Vec<Key> {
    let mut names: Vec<Key> = user.devices.iter().map(|d| d.device).collect();
    if !names.contains(&user.sign_pub) {
        names.push(user.sign_pub);
    }
    names
}

/// Starts the sweeps for every connection of `account` after a write that
/// changed its rights. Never fails: when the account cannot be read, its
/// own key is swept.
async fn sweep_account(ctx: &Ctx, account: Key) -> Sweep {
    let names = match ctx.store.get_user(account).await {
        Ok(Some((user, _))) => connection_names(&user),
        _ => vec![account],
    };
    sweep_keys(ctx, &names).await
}

/// Starts the sweeps for the connections named by `keys` (a connection's
/// name is its device key's hex).
async fn sweep_keys(ctx: &Ctx, keys: &[Key]) -> Sweep {
    let names: Vec<String> = keys.iter().map(Key::to_hex).collect();
    ctx.kicker.sweep_after_write(&names).await
}

/// The caller's account record if the account is active and lists the
/// calling device as active. Read from the leader, and only while the
/// store has a quorum (fail closed).
async fn active_user(ctx: &Ctx, caller: &Caller) -> Result<User, Error> {
    Ok(active_user_at(ctx, caller).await?.0)
}

/// [`active_user`] and the revision of the record that showed it.
async fn active_user_at(ctx: &Ctx, caller: &Caller) -> Result<(User, u64), Error> {
    let (record, ()) = tokio::try_join!(ctx.store.get_user(caller.account), ctx.store.ensure_quorum())?;
    let key = caller.device.key();
    check_caller(record.as_ref().map(|(u, _)| (u.status == UserStatus::Active, u.has_active_device(key))))?;
    record.ok_or_else(|| Error::Internal("caller checked without a record".into()))
}

/// The one rule for the caller's own account, whatever read showed it (a
/// leader read of the record, or an index): `None` when no account was
/// found, else whether it is active and whether it lists the calling
/// device as active. Each refusal is `forbidden`.
fn check_caller(seen: Option<(bool, bool)>) -> Result<(), Error> {
    match seen {
        None => Err(Error::Forbidden("not a registered user".into())),
        Some((false, _)) => Err(Error::Forbidden("user is revoked".into())),
        Some((true, false)) => Err(Error::Forbidden("device is not an active device of this account".into())),
        Some((true, true)) => Ok(()),
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

/// A list request's paging after the shape checks: the page size and the
/// key to continue after, from a cursor issued for the same list `kind`
/// and `filter` (a cursor of another list or filter is `bad_request`).
struct Paging<'a> {
    kind: &'static str,
    filter: &'a str,
    limit: usize,
    after: Option<String>,
}

impl<'a> Paging<'a> {
    /// Checks `limit` and opens `cursor`.
    fn open(
        ctx: &Ctx,
        kind: &'static str,
        filter: &'a str,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Self, Error> {
        let limit = page_limit(limit)?;
        let after = cursor.map(|c| ctx.cursors.open(c, kind, filter)).transpose()?;
        Ok(Paging { kind, filter, limit, after })
    }

    /// The key to continue after, as the listed table keys it.
    ///
    /// # Errors
    /// `bad_request` when the cursor's key is not one (a cursor is issued
    /// by this service, so only a forged or foreign one gets here).
    fn after<K: std::str::FromStr<Err = Error>>(&self) -> Result<Option<K>, Error> {
        self.after.as_deref().map(str::parse).transpose()
    }

    /// The cursor of the next page, when the store says more may follow
    /// `last`.
    fn next(&self, ctx: &Ctx, last: Option<impl std::fmt::Display>) -> Option<String> {
        last.map(|k| ctx.cursors.issue(self.kind, self.filter, &k.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// Every endpoint of the table has a route (handler and cost), once,
    /// in table order, and nothing else does.
    #[test]
    fn every_endpoint_is_routed() {
        let routed: Vec<&str> = ROUTES.iter().map(|r| r.subject).collect();
        assert_eq!(routed, unibus_proto::endpoint::SUBJECTS);
    }
}
