//! `unibus verify <account>`: the safety number of you and another account
//! ([`unibus::proto::safety`]), to compare in person. Every active device's
//! binding of both accounts is verified first; one that fails stops the
//! command (no number is shown for keys the service may have swapped).
//! Unbound devices (made before bindings) and recovery devices are flagged.

use std::path::Path;

use serde::Serialize;

use crate::error::CliError;
use crate::output::{Out, clean, qr, wire};
use crate::session::connect;
use unibus::ClientError;
use unibus::proto::binding::verify_binding_str;
use unibus::proto::records::{User, Via};
use unibus::proto::safety::{DeviceKeys, Fingerprint, SafetyNumber};
use unibus::proto::wire::PublicUser;
use unibus::proto::{Key, SignPub};

/// One active device as `verify` shows it.
#[derive(Debug, Serialize)]
struct Checked {
    device: String,
    seq: u32,
    via: Via,
    /// `verified` or `unbound` (a failing binding is an error instead).
    binding: &'static str,
}

/// One account's side: its devices checked, its fingerprint, its flags.
struct Side {
    devices: Vec<Checked>,
    fingerprint: Fingerprint,
    warnings: Vec<String>,
}

/// An active device's keys as a reply gives them.
struct Keys<'a> {
    device: Key,
    kex_pub: Key,
    kex_sig: Option<&'a str>,
    seq: u32,
    via: Via,
}

/// Checks every binding of `account`'s active devices and computes its
/// fingerprint; `who` names the account in warnings.
fn side(account: &Key, who: &str, keys: &[Keys<'_>]) -> Result<Side, CliError> {
    let mut warnings = Vec::new();
    let mut devices = Vec::new();
    for k in keys {
        let binding = match k.kex_sig {
            Some(sig) => {
                verify_binding_str(&account.to_hex(), &k.device.to_hex(), &k.kex_pub.to_hex(), sig).map_err(
                    |e| {
                        CliError::Binding(format!(
                            "device {} of {who} (account {account}): {}; refusing to show a safety number",
                            k.device, e
                        ))
                    },
                )?;
                "verified"
            }
            None => {
                warnings.push(format!("{who}: device {} is unbound (made before bindings)", k.device));
                "unbound"
            }
        };
        if k.via == Via::Recovery {
            warnings.push(format!("{who}: device {} was added by an admin (recovery)", k.device));
        }
        devices.push(Checked { device: k.device.to_string(), seq: k.seq, via: k.via, binding });
    }
    if keys.is_empty() {
        warnings.push(format!("{who}: no active device"));
    }
    let dk: Vec<DeviceKeys<'_>> = keys
        .iter()
        .map(|k| DeviceKeys { device: k.device, kex_pub: k.kex_pub, kex_sig: k.kex_sig })
        .collect();
    Ok(Side { devices, fingerprint: Fingerprint::new(account, &dk), warnings })
}

fn own_side(user: &User) -> Result<Side, CliError> {
    // Its public part: the active devices, as a lookup shows them.
    their_side(&PublicUser::from(user.clone()), "you")
}

fn their_side(user: &PublicUser, label: &str) -> Result<Side, CliError> {
    let keys: Vec<Keys<'_>> = user
        .devices
        .iter()
        .map(|d| Keys {
            device: d.device,
            kex_pub: d.kex_pub,
            kex_sig: d.kex_sig.as_deref(),
            seq: d.seq,
            via: d.via,
        })
        .collect();
    side(&user.sign_pub, label, &keys)
}

/// Looks up both accounts, checks their bindings and prints the safety
/// number (digits and QR code).
///
/// # Errors
/// `bad_request` for a malformed account id (before connecting), the
/// service's codes; [`CliError::Binding`] when a binding does not verify;
/// [`ClientError::WrongAccount`] (code `wrong_reply`) when the lookup
/// answers for another account, or `whoami` for another account or
/// device, than asked (the library refuses such replies).
pub(crate) async fn verify(url: &str, identity: &Path, account: &str, out: &Out) -> Result<(), CliError> {
    let asked =
        SignPub::parse_field("account", account).map_err(|e| CliError::Client(ClientError::Service(e)))?;
    let c = connect(url, identity).await?;
    let me = c.whoami_device().await?;
    let them = c.lookup(asked.as_str()).await?;
    let (mine, theirs) = (own_side(&me.user)?, their_side(&them, &clean(&them.name))?);
    let number = SafetyNumber::new(&mine.fingerprint, &theirs.fingerprint);
    let warnings: Vec<&String> = theirs.warnings.iter().chain(&mine.warnings).collect();
    let v = serde_json::json!({
        "account": them.sign_pub, "name": them.name, "status": them.status, "own_account": me.user.sign_pub,
        "safety_number": number.digits(), "qr": number.qr_text(),
        "devices": theirs.devices, "own_devices": mine.devices, "warnings": warnings,
    });
    out.emit(&v, || text(&them, &number, &theirs, &mine, &warnings));
    Ok(())
}

fn device_lines(who: &str, devices: &[Checked]) -> String {
    let mut s = format!("{who}: {} active device(s)", devices.len());
    for d in devices {
        s.push_str(&format!("\n  seq {:>2}  {}  {:<8} binding {}", d.seq, d.device, wire(&d.via), d.binding));
    }
    s
}

fn text(them: &PublicUser, n: &SafetyNumber, theirs: &Side, mine: &Side, warnings: &[&String]) -> String {
    let name = clean(&them.name);
    let grouped = n.grouped();
    let groups: Vec<&str> = grouped.split(' ').collect();
    let rows: Vec<String> = groups.chunks(4).map(|row| format!("    {}", row.join(" "))).collect();
    let mut s = format!(
        "safety number for you and {name} (account {}, {}):\n\n{}\n\n{}\n{}\n{}",
        them.sign_pub,
        wire(&them.status),
        rows.join("\n"),
        qr(&n.qr_text()),
        device_lines(&name, &theirs.devices),
        device_lines("you", &mine.devices),
    );
    for w in warnings {
        s.push_str(&format!("\nwarning: {w}"));
    }
    s.push_str(&format!(
        "\nCompare these digits (or scan the code) with {name} in person: they match only when both \
         of you see the same devices and keys for both accounts. They change when either account \
         adds or revokes a device."
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::Identity;

    /// A device of `account` with its real binding.
    fn dev(account: &Key) -> (Key, Key, String) {
        let id = Identity::generate();
        (id.sign_key(), id.kex_key(), id.bind(&account.to_hex()).to_string())
    }

    fn keys<'a>(d: &'a (Key, Key, String), sig: Option<&'a str>, seq: u32, via: Via) -> Keys<'a> {
        Keys { device: d.0, kex_pub: d.1, kex_sig: sig, seq, via }
    }

    /// Verified and unbound devices are listed, unbound and recovery ones
    /// flagged; the fingerprint is the one of `safety`.
    #[test]
    fn bindings_are_checked_and_flags_raised() {
        let account = Identity::generate().sign_key();
        let (a, b) = (dev(&account), dev(&account));
        let list = [keys(&a, Some(&a.2), 1, Via::Invite), keys(&b, None, 2, Via::Recovery)];
        let s = side(&account, "bob", &list).unwrap();
        let bindings: Vec<&str> = s.devices.iter().map(|d| d.binding).collect();
        assert_eq!(bindings, ["verified", "unbound"]);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("unbound") && s.warnings[1].contains("recovery"), "{:?}", s.warnings);
        let dk: Vec<DeviceKeys<'_>> = list
            .iter()
            .map(|k| DeviceKeys { device: k.device, kex_pub: k.kex_pub, kex_sig: k.kex_sig })
            .collect();
        assert_eq!(s.fingerprint, Fingerprint::new(&account, &dk));
        let empty = side(&account, "bob", &[]).unwrap();
        assert_eq!(empty.warnings, ["bob: no active device"]);
    }

    /// A binding made for another account, or over another kex_pub, stops
    /// the command with a `binding` error.
    #[test]
    fn a_failing_binding_is_refused() {
        let account = Identity::generate().sign_key();
        let elsewhere = dev(&Identity::generate().sign_key());
        let err =
            side(&account, "bob", &[keys(&elsewhere, Some(&elsewhere.2), 1, Via::Device)]).err().unwrap();
        assert_eq!(err.code(), "binding");
        assert!(err.message().contains(&elsewhere.0.to_hex()), "{}", err.message());
        let mut swapped = dev(&account);
        swapped.1 = Identity::generate().kex_key();
        let err = side(&account, "bob", &[keys(&swapped, Some(&swapped.2), 1, Via::Device)]).err().unwrap();
        assert_eq!(err.code(), "binding");
    }
}
