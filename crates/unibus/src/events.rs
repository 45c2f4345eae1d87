//! Connection events: async-nats's typed [`Event`]s as a [`Client`](crate::Client)
//! hands them out, and the one place that reads a permission violation
//! out of the server's error text (the NATS protocol has no typed form for
//! it).

use async_nats::{ConnectErrorKind, Event, ServerError};
use tokio::sync::broadcast;

use crate::ClientError;

/// An operation the server refused on a subject, as reported by
/// [`permission_violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation<'a> {
    /// `PUB` to this subject was refused.
    Publish(&'a str),
    /// `SUB` to this subject was refused.
    Subscribe(&'a str),
}

/// The refused operation in a server error event, if it is a permission
/// violation.
///
/// nats-server reports these asynchronously as
/// `-ERR 'Permissions Violation for Publish to "<subject>"'` or
/// `... for Subscription to "<subject>"` (optionally followed by
/// ` using queue "<queue>"`); async-nats passes that text on as
/// [`ServerError::Other`]. The subject is quoted with Go's `%q`, so a
/// subject needing escapes (never one of unibus's) yields `None`.
pub(crate) fn permission_violation(event: &Event) -> Option<Violation<'_>> {
    let Event::ServerError(ServerError::Other(text)) = event else {
        return None;
    };
    let rest = text.strip_prefix("Permissions Violation for ")?;
    if let Some(quoted) = rest.strip_prefix("Publish to ") {
        first_quoted(quoted).map(Violation::Publish)
    } else {
        first_quoted(rest.strip_prefix("Subscription to ")?).map(Violation::Subscribe)
    }
}

/// The subject at the start of `text`, quoted as by Go's `%q`.
fn first_quoted(text: &str) -> Option<&str> {
    let (subject, _) = text.strip_prefix('"')?.split_once('"')?;
    (!subject.is_empty() && !subject.contains('\\')).then_some(subject)
}

/// True when `event` says the server refused this connection's key: an
/// `-ERR 'Authorization Violation'` on a live connection, or a reconnect
/// refused as one (async-nats reports the latter as a client error carrying
/// the [`ConnectErrorKind`]'s text).
pub(crate) fn is_authorization_violation(event: &Event) -> bool {
    match event {
        Event::ServerError(ServerError::AuthorizationViolation) => true,
        Event::ClientError(async_nats::ClientError::Other(kind)) => {
            *kind == ConnectErrorKind::AuthorizationViolation.to_string()
        }
        _ => false,
    }
}

/// Resolves when the server reports a permission violation for a publish
/// to `subject` or a subscription under `inbox` (the reply inbox of a
/// request); never resolves once the connection is gone.
pub(crate) async fn watch_violation(
    events: &mut broadcast::Receiver<Event>,
    subject: &str,
    inbox: Option<&str>,
) -> ClientError {
    loop {
        match events.recv().await {
            Ok(e) => match permission_violation(&e) {
                Some(Violation::Publish(s)) if s == subject => {
                    return ClientError::PermissionDenied(subject.to_string());
                }
                Some(Violation::Subscribe(s)) if inbox.is_some_and(|i| s.starts_with(i)) => {
                    return ClientError::PermissionDenied(inbox.unwrap_or_default().to_string());
                }
                _ => continue,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> Event {
        Event::ServerError(ServerError::Other(text.to_string()))
    }

    #[test]
    fn publish_and_subscription_violations_are_parsed() {
        let e = server(r#"Permissions Violation for Publish to "unibus.whoami""#);
        assert_eq!(permission_violation(&e), Some(Violation::Publish("unibus.whoami")));
        let e = server(r#"Permissions Violation for Subscription to "_INBOX_ab.x.*""#);
        assert_eq!(permission_violation(&e), Some(Violation::Subscribe("_INBOX_ab.x.*")));
        let e = server(r#"Permissions Violation for Subscription to "a.b" using queue "q""#);
        assert_eq!(permission_violation(&e), Some(Violation::Subscribe("a.b")));
    }

    #[test]
    fn other_events_are_not_violations() {
        for e in [
            server("Maximum Payload Violation"),
            server(r#"Permissions Violation for Publish with Reply of "x""#),
            server(r#"Permissions Violation for Publish to "a\"b""#),
            server(r#"Permissions Violation for Publish to """#),
            server("Permissions Violation for Publish to unquoted"),
            Event::Connected,
            Event::ClientError(async_nats::ClientError::Other(
                r#"Permissions Violation for Publish to "x""#.into(),
            )),
        ] {
            assert_eq!(permission_violation(&e), None, "{e}");
        }
    }

    #[test]
    fn authorization_violations_are_recognised() {
        assert!(is_authorization_violation(&Event::ServerError(ServerError::AuthorizationViolation)));
        let refused = async_nats::ClientError::Other(ConnectErrorKind::AuthorizationViolation.to_string());
        assert!(is_authorization_violation(&Event::ClientError(refused)));
        let timeout = async_nats::ClientError::Other(ConnectErrorKind::TimedOut.to_string());
        assert!(!is_authorization_violation(&Event::ClientError(timeout)));
        assert!(!is_authorization_violation(&Event::Disconnected));
        assert!(!is_authorization_violation(&server("authorization violation, sort of")));
    }
}
