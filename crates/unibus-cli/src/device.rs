//! The device commands (docs/protocol.md section 8): `device request` on a
//! new device (its key and its bundle as a QR code and one line), `device
//! add`, `device list` and `device revoke` on a device of the account, and
//! the admin's recovery `admin device add`.

use std::path::Path;

use crate::args::{AdminCmd, AdminDeviceCmd, DeviceCmd};
use crate::error::{CliError, with_cause};
use crate::output::{Out, clean, qr_small, wire};
use crate::session::{connect, load, pending_note};
use unibus::proto::SignPub;
use unibus::proto::records::Device;
use unibus::{Bundle, Client, ClientError, Identity};

/// A bundle parsed and its binding verified; refused as the service would
/// refuse it (`bad_request`).
fn parse_bundle(text: &str) -> Result<Bundle, CliError> {
    Bundle::parse(text).map_err(|e| CliError::Client(ClientError::Service(e)))
}

/// Runs a device subcommand.
///
/// # Errors
/// [`CliError`]: bundle parse errors as `bad_request`, the service's codes.
pub(crate) async fn device(url: &str, identity: &Path, cmd: DeviceCmd, out: &Out) -> Result<(), CliError> {
    match cmd {
        DeviceCmd::Request { account, name } => request(identity, &account, name.as_deref(), out),
        DeviceCmd::Add { bundle } => {
            let bundle = parse_bundle(&bundle)?;
            let c = connect(url, identity).await?;
            let d = c.add_device(&bundle).await?;
            out.emit(&serde_json::json!({ "device": d }), || format!("added\n{}", device_text(&d)));
            Ok(())
        }
        DeviceCmd::List => list(connect(url, identity).await?, out).await,
        DeviceCmd::Revoke { device, account } => {
            let c = connect(url, identity).await?;
            let r = match account.filter(|a| !a.eq_ignore_ascii_case(c.account())) {
                Some(account) => c.admin_revoke_device(&account, &device).await?,
                None => c.revoke_device(&device).await?,
            };
            let note = pending_note(r.kick_pending);
            out.emit(&r, || {
                format!("revoked device {}; {} live connection(s) closed{note}", r.device.device, r.kicked)
            });
            Ok(())
        }
    }
}

/// Runs an admin subcommand.
///
/// # Errors
/// [`CliError`]: bundle parse errors as `bad_request`, the service's codes.
pub(crate) async fn admin(url: &str, identity: &Path, cmd: AdminCmd, out: &Out) -> Result<(), CliError> {
    match cmd {
        AdminCmd::Device(AdminDeviceCmd::Add { bundle }) => {
            let bundle = parse_bundle(&bundle)?;
            let d = connect(url, identity).await?.admin_add_device(&bundle).await?;
            out.emit(&serde_json::json!({ "device": d }), || {
                format!("added a recovery device to account {}\n{}", d.account, device_text(&d))
            });
            Ok(())
        }
    }
}

/// The identity at `path` for `account`: a new key saved there, or the
/// one already there when it was made for that account (to show its
/// bundle again).
fn identity_for(path: &Path, account: &str) -> Result<Identity, CliError> {
    let bad = |e| CliError::Client(ClientError::Service(e));
    let wanted = SignPub::parse_field("account", account).map_err(bad)?;
    if !path.exists() {
        let id = Identity::generate().with_account(wanted.as_str()).map_err(bad)?;
        id.save(path).map_err(|e| CliError::Local(with_cause(&e)))?;
        return Ok(id);
    }
    let id = load(path)?;
    if id.account_hex() == wanted.as_str() && id.sign_pub_hex() != wanted.as_str() {
        return Ok(id);
    }
    Err(CliError::Local(format!(
        "{} already holds the key of a device of account {}; give another --identity for the new device",
        path.display(),
        id.account_hex()
    )))
}

fn request(path: &Path, account: &str, name: Option<&str>, out: &Out) -> Result<(), CliError> {
    let id = identity_for(path, account)?;
    let bundle = id.bundle(name);
    let line = bundle.to_line();
    // The QR code carries the bare JSON (which `device add` takes too):
    // shorter than its base64, so the code fits an 80-column terminal.
    let json = serde_json::to_string(&bundle).unwrap_or_default();
    let v = serde_json::json!({
        "identity": path, "account": bundle.account, "device": bundle.device,
        "kex_pub": bundle.kex_pub, "bundle": line,
    });
    out.emit(&v, || {
        format!(
            "device key in {} (mode 0600) asks to join account {}\n  device:  {}\n\n{}\n  {line}\n\n\
             On a device of that account, scan the code or run:\n  unibus device add '{line}'\n\
             (an admin recovers an account with no device left: unibus admin device add '...')",
            path.display(),
            bundle.account,
            bundle.device,
            qr_small(&json),
        )
    });
    Ok(())
}

async fn list(c: Client, out: &Out) -> Result<(), CliError> {
    let devices = c.list_devices().await?;
    let me = c.sign_pub().to_string();
    let v = serde_json::json!({ "devices": devices, "this_device": me });
    out.emit(&v, || {
        let mut lines = vec![format!(
            "  {:>3}  {:<64}  {:<16} {:<7} {:<8} added",
            "seq", "device", "name", "status", "via"
        )];
        lines.extend(devices.iter().map(|d| device_line(d, d.device == me)));
        if devices.is_empty() {
            lines.push("(no devices)".into());
        }
        lines.join("\n")
    });
    Ok(())
}

/// A device in one line; `*` marks this device.
fn device_line(d: &Device, this: bool) -> String {
    format!(
        "{} {:>3}  {}  {:<16} {:<7} {:<8} {}",
        if this { "*" } else { " " },
        d.seq,
        d.device,
        clean(&d.name),
        wire(&d.status),
        wire(&d.via),
        d.added_at
    )
}

fn device_text(d: &Device) -> String {
    let mut s = format!(
        "device {} ({}, seq {}, {})\n  account:  {}\n  kex_pub:  {}\n  binding:  {}\n  added:    {} by {} (via {})",
        d.device,
        clean(&d.name),
        d.seq,
        wire(&d.status),
        d.account,
        d.kex_pub,
        if d.kex_sig.is_some() { "signed" } else { "none (unbound: made before bindings)" },
        d.added_at,
        d.added_by,
        wire(&d.via)
    );
    if let (Some(at), Some(by)) = (&d.revoked_at, &d.revoked_by) {
        s.push_str(&format!("\n  revoked:  {at} by {by}"));
    }
    s
}
