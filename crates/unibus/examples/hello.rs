//! Register, listen, send: a fresh identity redeems an invite, opens its
//! inbox, sends itself an end-to-end encrypted direct message and prints
//! it as received, decrypted and verified.
//!
//! One command from a fresh clone (starts and stops a local stack):
//! `scripts/example`. Against a running bus:
//! `cargo run -p unibus --example hello -- <nats url> <invite token or link>`
//! (or `UNIBUS_URL` and `UNIBUS_INVITE`).

use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, Identity, Incoming};

const USAGE: &str = "usage: hello <nats url> <invite token or link>";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().or_else(|| std::env::var("UNIBUS_URL").ok()).ok_or(USAGE)?;
    let invite = args.next().or_else(|| std::env::var("UNIBUS_INVITE").ok()).ok_or(USAGE)?;

    // A new key connects as a guest, who may only register.
    let me = Identity::generate();
    let user = Client::connect(&url, &me).await?.register(&invite, Some("hello")).await?;
    println!("registered {} as {:?}", user.sign_pub, user.role);

    // Connecting again, the callout grants the rights of a user.
    let client = Client::connect(&url, &me).await?;
    let mut inbox = client.inbox().await?;
    let text = "hello from the unibus example";
    // A note to self is published live only: the mail store keeps DMs to
    // other accounts and the copies for one's other devices.
    let id = client.send_dm_live(client.sign_pub(), text.as_bytes()).await?;
    println!("sent an encrypted direct message to myself (id {id})");

    match tokio::time::timeout(Duration::from_secs(10), inbox.next()).await {
        Ok(Some(Incoming::Message(m))) => {
            println!("received from {}: {}", m.from, String::from_utf8_lossy(&m.body));
            Ok(())
        }
        other => Err(format!("expected my message, got {other:?}").into()),
    }
}
