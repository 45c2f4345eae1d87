//! A client's connection events and service errors as the tests wait for
//! them.

use std::time::Duration;

use tokio::sync::mpsc;
use unibus::{Client, ClientError, Identity};

/// Connects `id` to `url`, reporting connection events on the channel.
pub async fn connect_watched_to(url: &str, id: &Identity) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let c = Client::connect(url, id).await.expect("connects");
    let mut events = c.events();
    tokio::spawn(async move {
        // As text (`connected`, `server error: nats: Permissions Violation
        // ...`) for the tests' needles.
        while let Ok(e) = events.recv().await {
            if tx.send(e.to_string()).is_err() {
                return;
            }
        }
    });
    (c, rx)
}

/// Waits (bounded) for an async server error containing `needle`.
pub async fn expect_server_error(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    expect_event_within(rx, needle, Duration::from_secs(3)).await
}

/// Waits at most `limit` for an event containing `needle`.
pub async fn expect_event_within(
    rx: &mut mpsc::UnboundedReceiver<String>,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.contains(needle) => return e,
            Ok(Some(_)) => continue,
            _ => panic!("no event containing {needle:?} within {limit:?}"),
        }
    }
}

/// The wire error code of a failed call.
pub fn code(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Service(e)) => e.code().to_string(),
        other => panic!("expected a service error, got {other:?}"),
    }
}
