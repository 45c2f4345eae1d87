//! The admin's commands on invites and users: `invite create|list|show|
//! cancel` and `user list|show|revoke|restore|delete` (the service refuses
//! them to members).

use std::path::Path;

use crate::args::{InviteCmd, UserCmd};
use crate::error::CliError;
use crate::output::{Out, invite_line, qr, user_line, wire};
use crate::session::{connect, pending_note};
use unibus::proto::wire::{InviteCreateRequest, InviteListRequest, UserListRequest};

/// Runs an invite subcommand.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn invite(url: &str, identity: &Path, cmd: InviteCmd, out: &Out) -> Result<(), CliError> {
    let c = connect(url, identity).await?;
    match cmd {
        InviteCmd::Create { ttl_secs, role, note } => {
            let r =
                c.create_invite(&InviteCreateRequest { ttl_secs, role: role.map(Into::into), note }).await?;
            out.emit(&r, || {
                format!(
                    "invite {} ({}), expires {}\n\n  {}\n\n{}\nThe link is shown once: hand it over now.",
                    r.invite.id,
                    wire(&r.invite.role),
                    r.invite.expires_at,
                    r.link,
                    qr(&r.link)
                )
            });
        }
        InviteCmd::List { status, page } => {
            let req =
                InviteListRequest { status: status.map(Into::into), limit: page.limit, cursor: page.cursor };
            let r = c.list_invites(&req).await?;
            out.page("invites", &r.invites, &r.next, invite_line);
        }
        InviteCmd::Show { id } => out.invite(&c.get_invite(&id).await?),
        InviteCmd::Cancel { id } => out.invite(&c.cancel_invite(&id).await?),
    }
    Ok(())
}

/// Runs a user subcommand.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn user(url: &str, identity: &Path, cmd: UserCmd, out: &Out) -> Result<(), CliError> {
    let c = connect(url, identity).await?;
    match cmd {
        UserCmd::List { status, page } => {
            let req =
                UserListRequest { status: status.map(Into::into), limit: page.limit, cursor: page.cursor };
            let r = c.list_users(&req).await?;
            out.page("users", &r.users, &r.next, user_line);
        }
        UserCmd::Show { sign_pub } => out.user(&c.get_user(&sign_pub).await?),
        UserCmd::Revoke { sign_pub } => {
            let r = c.revoke_user(&sign_pub).await?;
            let note = pending_note(r.kick_pending);
            out.emit(&r, || {
                format!("revoked {}; {} live connection(s) closed{note}", r.user.sign_pub, r.kicked)
            });
        }
        UserCmd::Restore { sign_pub } => out.user(&c.restore_user(&sign_pub).await?),
        UserCmd::Delete { sign_pub } => {
            let r = c.delete_user(&sign_pub).await?;
            let note = pending_note(r.kick_pending);
            out.emit(&r, || format!("deleted {}; {} live connection(s) closed{note}", r.deleted, r.kicked));
        }
    }
    Ok(())
}
