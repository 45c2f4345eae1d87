//! One handler per control-plane endpoint: `(ctx, caller, request) ->
//! outcome or domain error`, paired with its endpoint of the table in
//! [`unibus_proto::endpoint`] by [`dispatch`]. Requests arrive decoded, so
//! their shape is already checked (`bad_request`); handlers then check
//! existence (`not_found`), then permission (`forbidden`).

mod blocks;
mod invites;
mod rooms;
mod users;

use async_nats::HeaderMap;

use super::{Caller, Ctx, Encoded, Outcome, caller_from_headers};
use unibus_proto::endpoint::{self as ep, Endpoint};
use unibus_proto::error::Error;
use unibus_proto::model::{Role, User, UserStatus};
use unibus_proto::wire::{decode, page_limit};

/// Pairs each endpoint with its handler: the request is decoded as the
/// endpoint's `Request` and the handler must answer its `Reply`, so a
/// handler cannot drift from the table. Also lists the routed subjects.
macro_rules! routes {
    ($($ep:ty => $handler:path,)*) => {
        /// Routes one request: identity, strict decoding, handler, encoding.
        pub async fn dispatch(
            ctx: &Ctx,
            subject: &str,
            headers: Option<&HeaderMap>,
            body: &[u8],
        ) -> Result<Encoded, Error> {
            let c = &caller_from_headers(headers)?;
            $(
                if subject == <$ep>::SUBJECT {
                    let req: <$ep as Endpoint>::Request = decode(body)?;
                    let out: Outcome<<$ep as Endpoint>::Reply> = $handler(ctx, c, req).await?;
                    return out.encode();
                }
            )*
            Err(Error::Internal(format!("no handler for {subject}")))
        }

        /// Every subject [`dispatch`] routes, in table order.
        #[cfg(test)]
        const ROUTED: &[&str] = &[$(<$ep>::SUBJECT),*];
    };
}

routes! {
    ep::Register => users::register,
    ep::Whoami => users::whoami,
    ep::UserLookup => users::lookup,
    ep::AdminInviteCreate => invites::create,
    ep::AdminInviteList => invites::list,
    ep::AdminInviteGet => invites::get,
    ep::AdminInviteCancel => invites::cancel,
    ep::AdminUserList => users::list,
    ep::AdminUserGet => users::get,
    ep::AdminUserRevoke => users::revoke,
    ep::AdminUserRestore => users::restore,
    ep::AdminUserDelete => users::delete,
    ep::RoomCreate => rooms::create,
    ep::RoomGet => rooms::get,
    ep::RoomList => rooms::list,
    ep::RoomMemberAdd => rooms::add,
    ep::RoomMemberRemove => rooms::remove,
    ep::BlockAdd => blocks::add,
    ep::BlockRemove => blocks::remove,
    ep::BlockList => blocks::list,
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

    /// The cursor of the next page, when the store says more may follow
    /// `last`.
    fn next(&self, ctx: &Ctx, last: Option<String>) -> Option<String> {
        last.map(|k| ctx.cursors.issue(self.kind, self.filter, &k))
    }
}

#[cfg(test)]
mod tests {
    /// Every endpoint of the table has a handler, and nothing else does.
    #[test]
    fn every_endpoint_is_routed() {
        assert_eq!(super::ROUTED, unibus_proto::endpoint::SUBJECTS);
    }
}
