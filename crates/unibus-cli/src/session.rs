//! What the commands share: loading the identity, connecting with it (and
//! the contacts' device sets saved next to it, and for the commands that
//! read messages the mail state), reporting the contacts'
//! device changes, and the note a revoke or delete adds when closing
//! connections continues in the background.

use std::path::Path;

use crate::error::{CliError, with_cause};
use crate::output::{Out, wire};
use unibus::proto::e2e::Freshness;
use unibus::{Client, Contacts, DeviceChange, Identity, ListNotice, MailState};

/// The identity file at `path`.
///
/// # Errors
/// [`CliError::Local`] when it cannot be read, naming `unibus keygen`.
pub(crate) fn load(path: &Path) -> Result<Identity, CliError> {
    Identity::load(path)
        .map_err(|e| CliError::Local(format!("{} (create one with `unibus keygen`)", with_cause(&e))))
}

/// A client connected to `url` with the identity at `identity`.
///
/// # Errors
/// [`CliError::Local`] for the identity or contacts file, the client's
/// connection errors.
pub(crate) async fn connect(url: &str, identity: &Path) -> Result<Client, CliError> {
    let c = Client::connect(url, &load(identity)?).await?;
    // The device sets seen before (next to the identity): changes since are
    // reported, and a device whose kex_pub changed is refused.
    let contacts =
        Contacts::load(&Contacts::path_for(identity)).map_err(|e| CliError::Local(e.to_string()))?;
    c.set_contacts(contacts);
    Ok(c)
}

/// [`connect`], with the mail state kept beside the identity
/// ([`MailState::path_for`]): what was shown before is not shown again and
/// catching up starts where the last run stopped. When another process
/// has that file open, this one reads it and does not write it (a note
/// says so).
///
/// # Errors
/// As [`connect`]; [`CliError::Local`] for an unreadable mail state.
pub(crate) async fn connect_reading(url: &str, identity: &Path) -> Result<Client, CliError> {
    let c = connect(url, identity).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let state = MailState::open(&MailState::path_for(identity), Freshness::default(), now)
        .map_err(|e| CliError::Local(with_cause(&e)))?;
    if !state.is_persistent() {
        eprintln!(
            "note: another unibus process reads this identity's messages; this one will show again, next time, what it shows now"
        );
    }
    c.set_mail_state(state);
    Ok(c)
}

/// Prints the contacts' device changes seen since the last call (gained,
/// lost, recovery, unbound, a device list that needs verifying again or
/// changed by an admin) and saves the device sets and accepted lists next
/// to the identity.
///
/// # Errors
/// [`CliError::Local`] when the contacts file cannot be saved.
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
        DeviceChange::List { account, notice: ListNotice::AdminRemoved { version, device } } => {
            format!("[contact] {account}: an admin removed device {device} (device list version {version})")
        }
        DeviceChange::List { account, notice: ListNotice::FirstSignedBy { signer } } => format!(
            "[contact] {account}: its first device list was signed by its device {signer}, not by the account key \
             (an account from before signed lists)"
        ),
        DeviceChange::NeedsVerify { account, hold } => format!(
            "[contact] {account} must be verified again: {hold}. Nothing is sealed to it until you check with its \
             owner and run: unibus verify {account} --accept"
        ),
        // Kinds of changes this CLI does not know yet.
        _ => "[contact] device set changed".to_string(),
    }
}

/// What a revoke or delete reply with `kick_pending` adds to its line.
pub(crate) fn pending_note(pending: bool) -> &'static str {
    match pending {
        true => " (not every server answered; closing continues in the background)",
        false => "",
    }
}
