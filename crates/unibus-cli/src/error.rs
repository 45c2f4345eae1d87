//! Failures of a command: [`CliError`], the code printed with each and
//! [`exit_code`], the one mapping to process exit codes.

use unibus::ClientError;

/// Process exit code for a failure: 1 wire error, 3 not authorized or
/// permission denied, 4 connection/transport, 5 local (identity file,
/// encryption, a device binding that does not verify, a contact whose
/// device list must be verified again, a device list missing or refused,
/// a reply about another account, device or room than asked).
pub fn exit_code(err: &CliError) -> u8 {
    match err {
        CliError::Client(ClientError::Service(_)) => 1,
        CliError::Client(ClientError::NotAuthorized | ClientError::PermissionDenied(_)) => 3,
        CliError::Client(ClientError::Seal(_) | ClientError::Inactive(_) | ClientError::Device(_))
        | CliError::Local(_)
        | CliError::Binding(_) => 5,
        CliError::Client(e) if wrong_reply(e) || list_error(e) => 5,
        // Connect, Request, Decode, and whatever the library adds later.
        CliError::Client(_) => 4,
    }
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the bus.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Local problems (identity file, stdin).
    #[error("{0}")]
    Local(String),
    /// A device binding (`kex_sig`) that does not verify: the keys shown
    /// cannot be trusted.
    #[error("{0}")]
    Binding(String),
}

impl CliError {
    /// The message without the code; a client error's cause follows it
    /// (`request on unibus.whoami failed: timed out`).
    pub fn message(&self) -> String {
        match self {
            CliError::Client(ClientError::Service(e)) => e.to_string(),
            CliError::Client(e) => with_cause(e),
            other => other.to_string(),
        }
    }

    /// The code printed with the error (`invite_used`, `not_authorized`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Client(ClientError::Service(e)) => e.code(),
            CliError::Client(ClientError::NotAuthorized) => "not_authorized",
            CliError::Client(ClientError::PermissionDenied(_)) => "permission_denied",
            CliError::Client(ClientError::Seal(_) | ClientError::Inactive(_)) => "encryption",
            CliError::Client(ClientError::Device(unibus::DeviceRefused::ListHeld { .. })) => "needs_verify",
            CliError::Client(ClientError::Device(_)) => "binding",
            CliError::Client(ClientError::NoDeviceList(_) | ClientError::BadDeviceList { .. }) => {
                "device_list"
            }
            CliError::Client(e) if wrong_reply(e) => "wrong_reply",
            CliError::Client(_) => "connection",
            CliError::Local(_) => "local",
            CliError::Binding(_) => "binding",
        }
    }
}

/// A reply about another account, device or room than the one asked for
/// (the library refused it).
fn wrong_reply(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::WrongAccount { .. } | ClientError::WrongDevice { .. } | ClientError::WrongRoom { .. }
    )
}

/// A signed device list missing or refused (DESIGN section 11).
fn list_error(err: &ClientError) -> bool {
    matches!(err, ClientError::NoDeviceList(_) | ClientError::BadDeviceList { .. })
}

/// `err` followed by its cause (`request on unibus.whoami failed: timed
/// out`); the causes from async-nats already name theirs.
pub(crate) fn with_cause(err: &dyn std::error::Error) -> String {
    match err.source() {
        Some(cause) => format!("{err}: {cause}"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::proto::e2e::SealError;
    use unibus::proto::error::Error;

    /// Each kind of client failure keeps its exit code and printed code,
    /// and the message names the cause.
    #[test]
    fn client_errors_map_to_exit_codes_and_codes() {
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        let cases: Vec<(ClientError, u8, &str)> = vec![
            (ClientError::Service(Error::InviteUsed), 1, "invite_used"),
            (ClientError::NotAuthorized, 3, "not_authorized"),
            (ClientError::PermissionDenied("unibus.whoami".into()), 3, "permission_denied"),
            (ClientError::Request { subject: "s".into(), source: "timed out".into() }, 4, "connection"),
            (ClientError::Decode { subject: "s".into(), source: decode }, 4, "connection"),
            (ClientError::Seal(SealError::NoRecipients), 5, "encryption"),
            (ClientError::Inactive("ab".into()), 5, "encryption"),
            (ClientError::WrongAccount { asked: "ab".into(), got: "cd".into() }, 5, "wrong_reply"),
            (ClientError::WrongDevice { asked: "ab".into(), got: "cd".into() }, 5, "wrong_reply"),
            (ClientError::WrongRoom { asked: "ab".into(), got: "cd".into() }, 5, "wrong_reply"),
            (
                ClientError::Device(unibus::DeviceRefused::Binding {
                    account: "ab".into(),
                    device: "cd".into(),
                }),
                5,
                "binding",
            ),
            (
                ClientError::Device(unibus::DeviceRefused::ListHeld {
                    account: "ab".into(),
                    hold: unibus::Hold::AdminFirst,
                }),
                5,
                "needs_verify",
            ),
            (ClientError::NoDeviceList("ab".into()), 5, "device_list"),
        ];
        for (err, exit, code) in cases {
            let err = CliError::from(err);
            assert_eq!((exit_code(&err), err.code()), (exit, code), "{err:?}");
        }
        let binding = CliError::Binding("device ab: kex_sig does not verify".into());
        assert_eq!((exit_code(&binding), binding.code()), (5, "binding"));
        let err = CliError::from(ClientError::Request { subject: "s".into(), source: "timed out".into() });
        assert_eq!(err.message(), "request on s failed: timed out");
        assert_eq!(CliError::from(ClientError::Service(Error::InviteUsed)).message(), "invite already used");
    }
}
