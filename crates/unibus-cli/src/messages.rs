//! Messages: `send` one, `listen` for them, `chat` (both at once), each
//! also printing the contacts' device changes and this account's device
//! notices as they come. `listen` and `chat` first show what waited while
//! this device was away (marked, with the time it was sent), reading from
//! where the last run stopped (the mail state beside the identity).

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt as _;
use tokio::io::AsyncBufReadExt as _;

use crate::args::{SendArgs, Target};
use crate::error::CliError;
use crate::output::Out;
use crate::session::{connect, connect_reading, report_device_changes};
use unibus::{Client, Incoming, Sent};

async fn deliver(c: &Client, target: &Target, text: &str) -> Result<Sent, CliError> {
    Ok(match (&target.to, &target.room) {
        (Some(to), _) => c.send_dm(to, text.as_bytes()).await?,
        (None, Some(room)) => c.send_room(room, text.as_bytes()).await?,
        (None, None) => return Err(CliError::Local("give --to or --room".into())),
    })
}

/// Sends one message, then reports the contacts' device changes it saw.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, encryption, the
/// service's codes.
pub(crate) async fn send(url: &str, identity: &Path, args: SendArgs, out: &Out) -> Result<(), CliError> {
    let c = connect(url, identity).await?;
    let sent = deliver(&c, &args.target, &args.text.join(" ")).await;
    if sent.is_err() {
        // Why nothing was sealed, when a contact must be verified again.
        report_device_changes(&c, identity, out)?;
    }
    let Sent { id, seq } = sent?;
    out.emit(&serde_json::json!({ "sent": id, "seq": seq }), || {
        format!("sent (id {id}), stored at seq {seq}")
    });
    report_device_changes(&c, identity, out)
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
    let (m, waited) = match item {
        Incoming::Message(m) => (m, None),
        Incoming::Waited { seq, message } => (message, Some(seq)),
        Incoming::Rejected { subject, reason } => {
            eprintln!("dropped a message on {subject}: {reason}");
            return Ok(false);
        }
        Incoming::Dropped { from, .. } => {
            eprintln!("dropped a direct message from blocked key {from}");
            return Ok(false);
        }
        Incoming::Closed(e) => return Err(e.into()),
        // Kinds of items this CLI does not know yet.
        _ => return Ok(false),
    };
    let name = names.of(c, &m.from).await;
    // A copy of what this account sent from another device.
    let peer = match m.sent_to() {
        Some(peer) => Some(names.of(c, peer).await),
        None => None,
    };
    out.message(&m, &name, peer.as_deref(), waited);
    Ok(true)
}

/// Prints incoming messages and device notices until interrupted, revoked,
/// or `count` messages were shown.
///
/// # Errors
/// [`CliError`]: the identity file, the connection (also when it closes).
pub(crate) async fn listen(
    url: &str,
    identity: &Path,
    count: Option<usize>,
    out: &Out,
) -> Result<(), CliError> {
    let c = connect_reading(url, identity).await?;
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
            Some(d) = notices.next() => out.device_notice(&d),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Sends the lines typed on stdin to `target` and prints incoming messages,
/// until stdin ends.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, reading stdin.
pub(crate) async fn chat(url: &str, identity: &Path, target: Target, out: &Out) -> Result<(), CliError> {
    let c = connect_reading(url, identity).await?;
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
            Some(d) = notices.next() => out.device_notice(&d),
        }
    }
}
