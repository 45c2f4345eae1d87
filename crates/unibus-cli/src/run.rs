//! Executing CLI commands with the client library.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt as _;
use tokio::io::AsyncBufReadExt as _;

use super::output::{Out, invite_line, qr, room_line, user_line, wire};
use super::{Cli, CliError, Command, InviteCmd, RoomCmd, SendArgs, Target, UserCmd, with_cause};
use unibus::proto::subjects::INVITE_LINK_PREFIX;
use unibus::proto::wire::{InviteCreateRequest, InviteListRequest, RoomListRequest, UserListRequest};
use unibus::{Client, Contacts, DeviceChange, Identity, Incoming};

/// Runs one CLI invocation.
///
/// # Errors
/// [`CliError`]; [`super::exit_code`] maps it to the process exit code.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let out = Out { json: cli.json };
    let url = cli.url.clone();
    match cli.command {
        Command::Keygen => keygen(&cli.identity, &out),
        Command::Register { invite, name } => {
            let url = link_url(&invite)
                .filter(|_| std::env::var_os("UNIBUS_URL").is_none() && !url_flag_given())
                .unwrap_or(url);
            let c = connect(&url, &cli.identity).await?;
            let user = c.register(&invite, name.as_deref()).await?;
            out.user(&user);
            Ok(())
        }
        Command::Whoami => {
            out.account(&connect(&url, &cli.identity).await?.whoami_device().await?);
            Ok(())
        }
        Command::Invite(cmd) => invite(connect(&url, &cli.identity).await?, cmd, &out).await,
        Command::User(cmd) => user(connect(&url, &cli.identity).await?, cmd, &out).await,
        Command::Room(cmd) => room(connect(&url, &cli.identity).await?, cmd, &out).await,
        Command::Send(args) => {
            let c = connect(&url, &cli.identity).await?;
            send(&c, args, &out).await?;
            report_device_changes(&c, &cli.identity, &out)
        }
        Command::Listen { count } => {
            listen(connect(&url, &cli.identity).await?, count, &cli.identity, &out).await
        }
        Command::Chat(target) => chat(connect(&url, &cli.identity).await?, target, &cli.identity, &out).await,
        Command::Block { sign_pub } => {
            out.blocked(&connect(&url, &cli.identity).await?.block_add(&sign_pub).await?);
            Ok(())
        }
        Command::Unblock { sign_pub } => {
            out.blocked(&connect(&url, &cli.identity).await?.block_remove(&sign_pub).await?);
            Ok(())
        }
        Command::Blocked => {
            out.blocked(&connect(&url, &cli.identity).await?.block_list().await?);
            Ok(())
        }
        Command::Device(cmd) => super::device::device(&url, &cli.identity, cmd, &out).await,
        Command::Admin(cmd) => super::device::admin(&url, &cli.identity, cmd, &out).await,
        Command::Verify { account } => super::verify::verify(&url, &cli.identity, &account, &out).await,
    }
}

fn url_flag_given() -> bool {
    std::env::args().any(|a| a == "--url" || a.starts_with("--url="))
}

/// The `?url=` of an invite link, percent-decoded.
fn link_url(invite: &str) -> Option<String> {
    let query = invite.strip_prefix(INVITE_LINK_PREFIX)?.split_once('?')?.1;
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("url="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let h = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(h);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

pub(crate) fn load(path: &Path) -> Result<Identity, CliError> {
    Identity::load(path)
        .map_err(|e| CliError::Local(format!("{} (create one with `unibus keygen`)", with_cause(&e))))
}

pub(crate) async fn connect(url: &str, identity: &Path) -> Result<Client, CliError> {
    let c = Client::connect(url, &load(identity)?).await?;
    // The device sets seen before (next to the identity): changes since are
    // reported, and a device whose kex_pub changed is refused.
    let contacts =
        Contacts::load(&Contacts::path_for(identity)).map_err(|e| CliError::Local(e.to_string()))?;
    c.set_contacts(contacts);
    Ok(c)
}

/// Prints the contacts' device changes seen since the last call (gained,
/// lost, recovery, unbound) and saves the device sets next to the identity.
pub(crate) fn report_device_changes(c: &Client, identity: &Path, out: &Out) -> Result<(), CliError> {
    for change in c.take_device_changes() {
        out.emit(&serde_json::json!({ "contact_device": change }), || contact_change_line(&change));
    }
    c.contacts().save(&Contacts::path_for(identity)).map_err(|e| CliError::Local(e.to_string()))
}

fn contact_change_line(change: &DeviceChange) -> String {
    match change {
        DeviceChange::Gained { account, device, via, bound } => {
            let mut flags = Vec::new();
            if change.is_recovery() {
                flags.push("RECOVERY device: the account was recovered by an admin; verify in person");
            }
            if !bound {
                flags.push("unbound (no kex_sig: made before bindings)");
            }
            format!("[contact] {account} gained device {device} (via {}) {}", wire(via), flags.join("; "))
        }
        DeviceChange::Lost { account, device } => format!("[contact] {account} lost device {device}"),
        // Kinds of changes this CLI does not know yet.
        _ => "[contact] device set changed".to_string(),
    }
}

fn keygen(path: &Path, out: &Out) -> Result<(), CliError> {
    let id = Identity::generate();
    id.save(path).map_err(|e| CliError::Local(with_cause(&e)))?;
    let v = serde_json::json!({
        "identity": path, "sign_pub": id.sign_pub_hex(), "kex_pub": id.kex_pub_hex(), "nkey": id.nkey_public(),
    });
    out.emit(&v, || {
        format!(
            "new identity in {} (mode 0600; also usable as `nats --nkey`)\n  sign_pub: {}\n  kex_pub:  {}\n  nkey:     {}",
            path.display(),
            id.sign_pub_hex(),
            id.kex_pub_hex(),
            id.nkey_public()
        )
    });
    Ok(())
}

async fn invite(c: Client, cmd: InviteCmd, out: &Out) -> Result<(), CliError> {
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

async fn user(c: Client, cmd: UserCmd, out: &Out) -> Result<(), CliError> {
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

/// What a revoke or delete reply with `kick_pending` adds to its line.
pub(crate) fn pending_note(pending: bool) -> &'static str {
    match pending {
        true => " (not every server answered; closing continues in the background)",
        false => "",
    }
}

async fn room(c: Client, cmd: RoomCmd, out: &Out) -> Result<(), CliError> {
    match cmd {
        RoomCmd::Create { name } => out.room(&c.create_room(&name).await?),
        RoomCmd::List { page } => {
            let r = c.list_rooms(&RoomListRequest { limit: page.limit, cursor: page.cursor }).await?;
            out.page("rooms", &r.rooms, &r.next, room_line);
        }
        RoomCmd::Show { id } => out.room(&c.get_room(&id).await?),
        RoomCmd::Add { id, sign_pub } => out.room(&c.add_member(&id, &sign_pub).await?),
        RoomCmd::Remove { id, sign_pub } => out.room(&c.remove_member(&id, &sign_pub).await?),
    }
    Ok(())
}

async fn deliver(c: &Client, target: &Target, text: &str) -> Result<String, CliError> {
    Ok(match (&target.to, &target.room) {
        (Some(to), _) => c.send_dm(to, text.as_bytes()).await?,
        (None, Some(room)) => c.send_room(room, text.as_bytes()).await?,
        (None, None) => return Err(CliError::Local("give --to or --room".into())),
    })
}

async fn send(c: &Client, args: SendArgs, out: &Out) -> Result<(), CliError> {
    let id = deliver(c, &args.target, &args.text.join(" ")).await?;
    out.emit(&serde_json::json!({ "sent": id }), || format!("sent (id {id})"));
    Ok(())
}

/// Display names of senders, looked up once.
struct Names(HashMap<String, String>);

impl Names {
    async fn of(&mut self, c: &Client, key: &str) -> String {
        if let Some(n) = self.0.get(key) {
            return n.clone();
        }
        let name =
            c.lookup(key).await.map(|u| u.name).unwrap_or_else(|_| key[..8.min(key.len())].to_string());
        self.0.insert(key.to_string(), name.clone());
        name
    }
}

/// Prints one inbox item; `Err` when the connection is gone.
async fn show(c: &Client, item: Incoming, names: &mut Names, out: &Out) -> Result<bool, CliError> {
    match item {
        Incoming::Message(m) => {
            let name = names.of(c, &m.from).await;
            // A copy of what this account sent from another device.
            let peer = match m.sent_to() {
                Some(peer) => Some(names.of(c, peer).await),
                None => None,
            };
            out.message(&m, &name, peer.as_deref());
            Ok(true)
        }
        Incoming::Rejected { subject, reason } => {
            eprintln!("dropped a message on {subject}: {reason}");
            Ok(false)
        }
        Incoming::Dropped { from, .. } => {
            eprintln!("dropped a direct message from blocked key {from}");
            Ok(false)
        }
        Incoming::Closed(e) => Err(e.into()),
        // Kinds of items this CLI does not know yet.
        _ => Ok(false),
    }
}

async fn listen(c: Client, count: Option<usize>, identity: &Path, out: &Out) -> Result<(), CliError> {
    // Subscribed before the inbox, whose flush then covers both.
    let mut notices = Box::pin(c.device_notices().await?);
    let mut inbox = c.inbox().await?;
    let mut names = Names(HashMap::new());
    out.emit(&serde_json::json!({ "listening": c.sign_pub() }), || {
        format!("listening as {} (Ctrl-C to stop)", c.sign_pub())
    });
    let mut seen = 0;
    loop {
        tokio::select! {
            item = inbox.next() => {
                let Some(item) = item else { return Ok(()) };
                let shown = show(&c, item, &mut names, out).await?;
                report_device_changes(&c, identity, out)?;
                if shown {
                    seen += 1;
                    if count.is_some_and(|n| seen >= n) {
                        return Ok(());
                    }
                }
            }
            Some(d) = notices.next() => super::device::notice(out, &d),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn chat(c: Client, target: Target, identity: &Path, out: &Out) -> Result<(), CliError> {
    let mut notices = Box::pin(c.device_notices().await?);
    let mut inbox = c.inbox().await?;
    let mut names = Names(HashMap::new());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    if !out.json {
        eprintln!("chatting as {}; type a line and press Enter (Ctrl-D to quit)", c.sign_pub());
    }
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => {
                    if let Err(e) = deliver(&c, &target, &text).await {
                        eprintln!("not sent: {e}");
                    }
                    report_device_changes(&c, identity, out)?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(CliError::Local(format!("stdin: {e}"))),
            },
            item = inbox.next() => {
                let Some(item) = item else { return Ok(()) };
                show(&c, item, &mut names, out).await?;
                report_device_changes(&c, identity, out)?;
            }
            Some(d) = notices.next() => super::device::notice(out, &d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::link_url;

    #[test]
    fn link_url_is_percent_decoded() {
        let t = "ab".repeat(32);
        let link = format!("unibus://invite/{t}?url=nats%3A%2F%2F127.0.0.1%3A4222%2Cnats%3A%2F%2Fh2%3A4222");
        assert_eq!(link_url(&link).as_deref(), Some("nats://127.0.0.1:4222,nats://h2:4222"));
        assert_eq!(link_url(&format!("unibus://invite/{t}")), None);
        assert_eq!(link_url(&t), None);
    }
}
