//! `unibus verify <account> [--accept]`: the safety number of you and
//! another account ([`unibus::proto::safety`], over the two account keys
//! only), to compare in person, and that account's signed device list
//! (DESIGN section 11): its devices, the version this identity accepted,
//! every version since with who signed it and what it changed, and why
//! the client stopped sealing to the account if it did. `--accept` pins
//! the current list (after a recovery, say), saved in the contacts file
//! beside the identity. Every listed device's binding is verified; one
//! that fails (or a list that does not verify) stops the command.

use std::path::Path;

use serde::Serialize;

use crate::error::CliError;
use crate::output::{Out, clean, qr, wire};
use crate::session::{connect, report_device_changes};
use unibus::proto::binding::verify_binding_str;
use unibus::proto::devicelist::{By, Change, DeviceList};
use unibus::proto::records::Via;
use unibus::proto::safety::{Fingerprint, SafetyNumber};
use unibus::proto::wire::PublicUser;
use unibus::proto::{Key, SignPub};
use unibus::{ClientError, ListReport};

/// One device as `verify` shows it.
#[derive(Debug, Serialize)]
struct Checked {
    device: String,
    seq: u32,
    via: Via,
    /// `verified` or `unbound` (a failing binding is an error instead).
    binding: &'static str,
}

/// One version after the accepted one, as `verify` shows it.
#[derive(Debug, Serialize)]
struct StepLine {
    version: u64,
    /// `added <device>`, `removed <device>`, or `first list`.
    change: String,
    signer: String,
    by: By,
}

/// An active device's keys as a reply gives them.
struct Keys<'a> {
    device: String,
    kex_pub: String,
    kex_sig: Option<&'a str>,
    seq: u32,
    via: Via,
}

/// Checks every binding of `account`'s devices; `who` names the account
/// in warnings.
fn check_devices(
    account: &Key,
    who: &str,
    keys: &[Keys<'_>],
) -> Result<(Vec<Checked>, Vec<String>), CliError> {
    let mut warnings = Vec::new();
    let mut devices = Vec::new();
    for k in keys {
        let binding = match k.kex_sig {
            Some(sig) => {
                verify_binding_str(&account.to_hex(), &k.device, &k.kex_pub, sig).map_err(|e| {
                    CliError::Binding(format!(
                        "device {} of {who} (account {account}): {}; refusing to show a safety number",
                        k.device, e
                    ))
                })?;
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
        devices.push(Checked { device: k.device.clone(), seq: k.seq, via: k.via, binding });
    }
    if keys.is_empty() {
        warnings.push(format!("{who}: no active device"));
    }
    Ok((devices, warnings))
}

/// The devices to show: those of the current signed list (with `seq` and
/// `via` from the lookup), or the looked-up ones for an account without a
/// list.
fn shown_keys<'a>(user: &'a PublicUser, list: Option<&'a DeviceList>) -> Vec<Keys<'a>> {
    match list {
        Some(list) => list
            .devices
            .iter()
            .enumerate()
            .map(|(n, d)| {
                let seen = user.devices.iter().find(|p| p.device.to_hex() == d.device);
                Keys {
                    device: d.device.clone(),
                    kex_pub: d.kex_pub.clone(),
                    kex_sig: d.kex_sig.as_deref(),
                    seq: seen.map_or(u32::try_from(n + 1).unwrap_or(u32::MAX), |p| p.seq),
                    via: seen.map_or(Via::Device, |p| p.via),
                }
            })
            .collect(),
        None => user
            .devices
            .iter()
            .map(|d| Keys {
                device: d.device.to_hex(),
                kex_pub: d.kex_pub.to_hex(),
                kex_sig: d.kex_sig.as_deref(),
                seq: d.seq,
                via: d.via,
            })
            .collect(),
    }
}

/// Each version after the accepted one: what it changed and who signed.
fn step_lines(report: &ListReport) -> Vec<StepLine> {
    let mut before = report.accepted.clone();
    let mut out = Vec::new();
    for list in &report.steps {
        let change = match before.as_ref().map(|b| list.step_from(b)) {
            None => "first list".to_string(),
            Some(Ok(step)) => match step.change {
                Change::Added(d) => format!("added {}", d.device),
                Change::Removed(d) => format!("removed {d}"),
            },
            Some(Err(e)) => format!("does not follow: {e}"),
        };
        out.push(StepLine { version: list.version, change, signer: list.signer.clone(), by: list.by });
        before = Some(list.clone());
    }
    out
}

/// Looks up both accounts, checks the other's signed list and its
/// devices' bindings, prints the safety number (digits and QR code), and
/// with `accept` pins the current list.
///
/// # Errors
/// `bad_request` for a malformed account id (before connecting), the
/// service's codes; [`CliError::Binding`] when a binding or the list does
/// not verify; [`ClientError::WrongAccount`] (code `wrong_reply`) when the
/// lookup answers for another account, or `whoami` for another account or
/// device, than asked (the library refuses such replies).
pub(crate) async fn verify(
    url: &str,
    identity: &Path,
    account: &str,
    accept: bool,
    out: &Out,
) -> Result<(), CliError> {
    let asked =
        SignPub::parse_field("account", account).map_err(|e| CliError::Client(ClientError::Service(e)))?;
    let c = connect(url, identity).await?;
    let me = c.whoami_device().await?;
    let them = c.lookup(asked.as_str()).await?;
    let name = clean(&them.name);
    let report = c.device_list_report(asked.as_str()).await?;
    if let Some(current) = &report.current {
        current.check().map_err(|e| {
            CliError::Binding(format!(
                "the device list of {name} (account {}): {e}; refusing to show a safety number",
                them.sign_pub
            ))
        })?;
    }
    let (devices, mut warnings) =
        check_devices(&them.sign_pub, &name, &shown_keys(&them, report.current.as_ref()))?;
    let number = SafetyNumber::new(&Fingerprint::new(&me.user.sign_pub), &Fingerprint::new(&them.sign_pub));
    if report.current.is_none() {
        warnings.push(format!("{name}: no signed device list yet (an account from before lists)"));
    }
    if let Some(hold) = &report.hold {
        warnings.push(format!("{name}: must be verified again before anything is sealed to it: {hold}"));
    }
    let accepted = if accept && report.current.is_some() {
        let done = c.accept_device_list(asked.as_str()).await?;
        report_device_changes(&c, identity, out)?;
        done.current.map(|l| l.version)
    } else {
        report_device_changes(&c, identity, out)?;
        None
    };
    let v = serde_json::json!({
        "account": them.sign_pub, "name": them.name, "status": them.status, "own_account": me.user.sign_pub,
        "safety_number": number.digits(), "qr": number.qr_text(), "devices": devices,
        "device_list": {
            "accepted_version": report.accepted.as_ref().map(|l| l.version),
            "current_version": report.current.as_ref().map(|l| l.version),
            "steps": step_lines(&report), "notices": report.notices, "hold": report.hold,
        },
        "accepted": accepted, "warnings": warnings,
    });
    out.emit(&v, || text(&them, &number, &devices, &report, accepted, &warnings));
    Ok(())
}

fn device_lines(who: &str, devices: &[Checked]) -> String {
    let mut s = format!("{who}: {} device(s) on the signed list", devices.len());
    for d in devices {
        s.push_str(&format!("\n  seq {:>2}  {}  {:<8} binding {}", d.seq, d.device, wire(&d.via), d.binding));
    }
    s
}

fn text(
    them: &PublicUser,
    n: &SafetyNumber,
    devices: &[Checked],
    report: &ListReport,
    accepted: Option<u64>,
    warnings: &[String],
) -> String {
    let name = clean(&them.name);
    let grouped = n.grouped();
    let groups: Vec<&str> = grouped.split(' ').collect();
    let rows: Vec<String> = groups.chunks(4).map(|row| format!("    {}", row.join(" "))).collect();
    let mut s = format!(
        "safety number for you and {name} (account {}, {}):\n\n{}\n\n{}\n{}",
        them.sign_pub,
        wire(&them.status),
        rows.join("\n"),
        qr(&n.qr_text()),
        device_lines(&name, devices),
    );
    let pinned = report.accepted.as_ref().map_or("none".to_string(), |l| format!("version {}", l.version));
    let current = report.current.as_ref().map_or("none".to_string(), |l| format!("version {}", l.version));
    s.push_str(&format!("\ndevice list: accepted {pinned}, the service shows {current}"));
    for step in step_lines(report) {
        s.push_str(&format!(
            "\n  version {:>3}: {} (signed by {}, by {})",
            step.version,
            step.change,
            step.signer,
            wire(&step.by)
        ));
    }
    for w in warnings {
        s.push_str(&format!("\nwarning: {w}"));
    }
    if let Some(v) = accepted {
        s.push_str(&format!(
            "\naccepted version {v} of {name}'s device list: messages are sealed to its devices again"
        ));
    } else if report.hold.is_some() {
        s.push_str(&format!(
            "\nOnce you have checked with {name} (in person), accept it: unibus verify {} --accept",
            them.sign_pub
        ));
    }
    s.push_str(&format!(
        "\nCompare these digits (or scan the code) with {name} in person: they match only when both \
         of you see the same account keys. They do not change when either account adds or revokes a \
         device itself: its devices sign its device list."
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::Identity;

    /// A device of `account` with its real binding.
    fn dev(account: &Key) -> (String, String, String) {
        let id = Identity::generate();
        (id.sign_pub_hex(), id.kex_pub_hex(), id.bind(&account.to_hex()).to_string())
    }

    fn keys<'a>(d: &'a (String, String, String), sig: Option<&'a str>, seq: u32, via: Via) -> Keys<'a> {
        Keys { device: d.0.clone(), kex_pub: d.1.clone(), kex_sig: sig, seq, via }
    }

    /// Verified and unbound devices are listed, unbound and recovery ones
    /// flagged.
    #[test]
    fn bindings_are_checked_and_flags_raised() {
        let account = Identity::generate().sign_key();
        let (a, b) = (dev(&account), dev(&account));
        let list = [keys(&a, Some(&a.2), 1, Via::Invite), keys(&b, None, 2, Via::Recovery)];
        let (devices, warnings) = check_devices(&account, "bob", &list).unwrap();
        let bindings: Vec<&str> = devices.iter().map(|d| d.binding).collect();
        assert_eq!(bindings, ["verified", "unbound"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("unbound") && warnings[1].contains("recovery"), "{warnings:?}");
        let (_, empty) = check_devices(&account, "bob", &[]).unwrap();
        assert_eq!(empty, ["bob: no active device"]);
    }

    /// A binding made for another account, or over another kex_pub, stops
    /// the command with a `binding` error.
    #[test]
    fn a_failing_binding_is_refused() {
        let account = Identity::generate().sign_key();
        let elsewhere = dev(&Identity::generate().sign_key());
        let err = check_devices(&account, "bob", &[keys(&elsewhere, Some(&elsewhere.2), 1, Via::Device)])
            .err()
            .unwrap();
        assert_eq!(err.code(), "binding");
        assert!(err.message().contains(&elsewhere.0), "{}", err.message());
        let mut swapped = dev(&account);
        swapped.1 = Identity::generate().kex_pub_hex();
        let err = check_devices(&account, "bob", &[keys(&swapped, Some(&swapped.2), 1, Via::Device)])
            .err()
            .unwrap();
        assert_eq!(err.code(), "binding");
    }
}
