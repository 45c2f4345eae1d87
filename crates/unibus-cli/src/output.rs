//! Printing results: text for people (control characters escaped, so a
//! name cannot rewrite the terminal), one JSON object per line with
//! `--json`.

use serde::Serialize;

use unibus::proto::Key;
use unibus::proto::e2e::{Kind, Opened};
use unibus::proto::records::{Device, DeviceStatus, Invite, Room, User};
use unibus::proto::wire::AccountReply;

/// Prints in the chosen format.
pub struct Out {
    /// JSON lines instead of text.
    pub json: bool,
}

/// Escapes control characters for the terminal.
pub fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// Writes one line to stdout. When the reader has gone (`unibus ... | head`)
/// the command ends quietly with status 141, as a process killed by SIGPIPE
/// would, instead of panicking as `println!` does.
pub fn line_out(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("unibus: cannot write to stdout: {e}");
        std::process::exit(5);
    }
}

impl Out {
    /// Prints `value` as JSON, or `text()` for people.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let line = if self.json { serde_json::to_string(value).unwrap_or_default() } else { text() };
        line_out(&line);
    }

    /// A notice that a device was added to this account or revoked from it
    /// (`{"device_notice": record}` with `--json`).
    pub fn device_notice(&self, d: &Device) {
        self.emit(&serde_json::json!({ "device_notice": d }), || {
            let what = match d.status {
                DeviceStatus::Active => "added to your account",
                DeviceStatus::Revoked => "revoked from your account",
            };
            format!("[device] {what}: {} {} (seq {}, via {})", clean(&d.name), d.device, d.seq, wire(&d.via))
        });
    }

    /// One user.
    pub fn user(&self, u: &User) {
        self.emit(&serde_json::json!({ "user": u }), || user_text(u));
    }

    /// The caller's account and this device (`{"user","device"}`).
    pub fn account(&self, r: &AccountReply) {
        self.emit(r, || {
            let d = &r.device;
            format!(
                "{}\n  this device: {} ({}, seq {}, via {})",
                user_text(&r.user),
                d.device,
                clean(&d.name),
                d.seq,
                wire(&d.via)
            )
        });
    }

    /// One invite.
    pub fn invite(&self, i: &Invite) {
        self.emit(&serde_json::json!({ "invite": i }), || invite_text(i));
    }

    /// A block list (`{"blocked": [...]}`).
    pub fn blocked(&self, keys: &[Key]) {
        self.emit(&serde_json::json!({ "blocked": keys }), || {
            if keys.is_empty() {
                "no blocked keys".to_string()
            } else {
                format!(
                    "{} blocked key(s):\n{}",
                    keys.len(),
                    keys.iter().map(Key::to_hex).collect::<Vec<_>>().join("\n")
                )
            }
        });
    }

    /// One room.
    pub fn room(&self, r: &Room) {
        self.emit(&serde_json::json!({ "room": r }), || room_text(r));
    }

    /// A page of anything with a `next` cursor.
    pub fn page<T: Serialize>(
        &self,
        key: &str,
        items: &[T],
        next: &Option<String>,
        line: impl Fn(&T) -> String,
    ) {
        let v = serde_json::json!({ key: items, "next": next });
        self.emit(&v, || {
            let mut s: Vec<String> = items.iter().map(line).collect();
            if items.is_empty() {
                s.push(format!("(no {key})"));
            }
            if let Some(n) = next {
                s.push(format!("more: --cursor {n}"));
            }
            s.join("\n")
        });
    }

    /// One incoming message; `peer_name` is set for a copy of a DM this
    /// account sent from another device (to that peer); `waited` is its
    /// `seq` when it waited in the mail store (fetched on catching up),
    /// shown with the time it was sent.
    pub fn message(&self, m: &Opened, sender_name: &str, peer_name: Option<&str>, waited: Option<u64>) {
        let text = String::from_utf8_lossy(&m.body).into_owned();
        let v = serde_json::json!({
            "kind": m.kind, "from": m.from, "from_name": sender_name, "device": m.device,
            "to": m.sent_to(), "to_name": peer_name, "room": m.room, "id": m.id, "ts": m.ts, "text": text,
            "waited": waited.is_some(), "seq": waited,
        });
        self.emit(&v, || {
            let line = match (m.kind, &m.room, peer_name) {
                (Kind::Room, Some(room), _) => {
                    format!("[room {}] {}: {}", short(room), clean(sender_name), clean(&text))
                }
                (_, _, Some(peer)) => format!("[dm] me (other device) -> {}: {}", clean(peer), clean(&text)),
                _ => format!("[dm] {}: {}", clean(sender_name), clean(&text)),
            };
            match waited {
                Some(_) => format!("(waited, sent {}) {line}", sent_at(m.ts)),
                None => line,
            }
        });
    }
}

/// A message's `ts` (unix ms, the sender's clock) as `yyyy-mm-dd hh:mm:ss
/// UTC`; the raw number when out of range.
fn sent_at(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("ts {ts}"),
    }
}

/// The wire name of an enum value (`member`, `revoked`, `expired`, ...).
pub fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// A user in one line.
pub fn user_line(u: &User) -> String {
    format!("{}  {:<16} {}/{}", u.sign_pub, clean(&u.name), wire(&u.role), wire(&u.status))
}

fn user_text(u: &User) -> String {
    let mut s = format!(
        "{} ({}, {})\n  sign_pub:   {}\n  kex_pub:    {}\n  created:    {}\n  invited_by: {}",
        clean(&u.name),
        wire(&u.role),
        wire(&u.status),
        u.sign_pub,
        u.kex_pub.map_or_else(|| "(no active device)".to_string(), |k| k.to_hex()),
        u.created_at,
        u.invited_by
    );
    if let (Some(at), Some(by)) = (&u.revoked_at, &u.revoked_by) {
        s.push_str(&format!("\n  revoked:    {at} by {by}"));
    }
    let active = u.active_devices().count();
    s.push_str(&format!("\n  devices:    {active} active of {} listed", u.devices.len()));
    if u.kex_sig.is_none() && u.kex_pub.is_some() {
        s.push_str("\n  binding:    none (account made before bindings: its kex_pub is unbound)");
    }
    s
}

/// An invite in one line.
pub fn invite_line(i: &Invite) -> String {
    format!(
        "{}  {:<9} {:<6} expires {}  {}",
        i.id,
        wire(&i.status),
        wire(&i.role),
        i.expires_at,
        clean(&i.note)
    )
}

fn invite_text(i: &Invite) -> String {
    let mut s = format!(
        "invite {}\n  status:     {}\n  role:       {}\n  created:    {} by {}\n  expires:    {}",
        i.id,
        wire(&i.status),
        wire(&i.role),
        i.created_at,
        i.created_by,
        i.expires_at
    );
    if !i.note.is_empty() {
        s.push_str(&format!("\n  note:       {}", clean(&i.note)));
    }
    if let (Some(by), Some(at)) = (&i.used_by, &i.used_at) {
        s.push_str(&format!("\n  used:       {at} by {by} (completed: {})", i.completed));
    }
    if let (Some(by), Some(at)) = (&i.cancelled_by, &i.cancelled_at) {
        s.push_str(&format!("\n  cancelled:  {at} by {by}"));
    }
    s
}

/// A room in one line.
pub fn room_line(r: &Room) -> String {
    format!("{}  {:<20} {} members", r.id, clean(&r.name), r.members.len())
}

fn room_text(r: &Room) -> String {
    let mut s = format!(
        "room {} ({})\n  owner:   {}\n  members:",
        clean(&r.name),
        r.id,
        r.owner.map_or_else(|| "(none: admins manage it)".to_string(), |k| k.to_hex())
    );
    for m in &r.members {
        s.push_str(&format!("\n    {m}"));
    }
    s
}

/// A QR code of `text` for the terminal.
pub fn qr(text: &str) -> String {
    qr_at(text, qrcode::EcLevel::M)
}

/// A QR code of `text` with the lowest error correction: the smallest
/// code, for long texts shown on a screen (a device bundle), where the
/// redundancy for print damage is not needed.
pub fn qr_small(text: &str) -> String {
    qr_at(text, qrcode::EcLevel::L)
}

fn qr_at(text: &str, level: qrcode::EcLevel) -> String {
    match qrcode::QrCode::with_error_correction_level(text.as_bytes(), level) {
        Ok(code) => code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build(),
        Err(_) => String::new(),
    }
}
