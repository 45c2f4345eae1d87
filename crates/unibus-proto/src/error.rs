//! The domain error type and the one mapping from errors to wire codes
//! (docs/protocol.md section 5). Handlers return [`Error`]; the service dispatcher
//! turns it into headers and body with [`Error::code`] and [`Error::number`];
//! the client turns wire errors back into the same enum with
//! [`Error::from_wire`].

/// Every failure a control-plane request can end in.
///
/// The doc line of each variant names its wire code. Non-exhaustive: the
/// contract may add codes; a client treats an unknown one as `internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `bad_request` (400): malformed JSON, missing field, bad hex, weak key,
    /// value out of range.
    #[error("{0}")]
    BadRequest(String),
    /// `unauthenticated` (401): no usable `Nats-Request-Info` identity.
    #[error("{0}")]
    Unauthenticated(String),
    /// `forbidden` (403): caller not an active user, not admin, or not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// `not_found` (404): user / invite id / room unknown.
    #[error("{0}")]
    NotFound(String),
    /// `invite_not_found` (404): the token matches no invite.
    #[error("invite not found")]
    InviteNotFound,
    /// `user_exists` (409): the key is already registered.
    #[error("user already exists")]
    UserExists,
    /// `invite_used` (409): the invite was already redeemed.
    #[error("invite already used")]
    InviteUsed,
    /// `invite_cancelled` (410).
    #[error("invite cancelled")]
    InviteCancelled,
    /// `invite_expired` (410).
    #[error("invite expired")]
    InviteExpired,
    /// `stale_devices` (409): a stored message's recipients are not exactly
    /// the devices it must reach (docs/protocol.md section 10): look the
    /// devices up again, seal again, resend.
    #[error("{0}")]
    StaleDevices(String),
    /// `limit_reached` (429): a cap or rate limit would be exceeded.
    #[error("{0}")]
    LimitReached(String),
    /// `unavailable` (503): the store cannot answer. The text is for logs.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// `internal` (500): anything else. The text is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The wire code string (`bad_request`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::InviteNotFound => "invite_not_found",
            Error::UserExists => "user_exists",
            Error::InviteUsed => "invite_used",
            Error::InviteCancelled => "invite_cancelled",
            Error::InviteExpired => "invite_expired",
            Error::StaleDevices(_) => "stale_devices",
            Error::LimitReached(_) => "limit_reached",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The numeric code (HTTP-like) sent in `Nats-Service-Error-Code`.
    pub fn number(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthenticated(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) | Error::InviteNotFound => 404,
            Error::UserExists | Error::InviteUsed | Error::StaleDevices(_) => 409,
            Error::InviteCancelled | Error::InviteExpired => 410,
            Error::LimitReached(_) => 429,
            Error::Unavailable(_) => 503,
            Error::Internal(_) => 500,
        }
    }

    /// The message that may go on the wire. Store and internal details stay
    /// in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => "store unavailable, try again".to_string(),
            Error::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }

    /// Rebuilds an error from a wire code and message (client side).
    /// Unknown codes become [`Error::Internal`].
    pub fn from_wire(code: &str, message: &str) -> Error {
        let m = message.to_string();
        match code {
            "bad_request" => Error::BadRequest(m),
            "unauthenticated" => Error::Unauthenticated(m),
            "forbidden" => Error::Forbidden(m),
            "not_found" => Error::NotFound(m),
            "invite_not_found" => Error::InviteNotFound,
            "user_exists" => Error::UserExists,
            "invite_used" => Error::InviteUsed,
            "invite_cancelled" => Error::InviteCancelled,
            "invite_expired" => Error::InviteExpired,
            "stale_devices" => Error::StaleDevices(m),
            "limit_reached" => Error::LimitReached(m),
            "unavailable" => Error::Unavailable(m),
            _ => Error::Internal(format!("{code}: {m}")),
        }
    }

    /// Shorthand for a `bad_request` with a message.
    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn wire_round_trip_keeps_the_code() {
        let all = [
            Error::bad("x"),
            Error::Unauthenticated("x".into()),
            Error::Forbidden("x".into()),
            Error::NotFound("x".into()),
            Error::InviteNotFound,
            Error::UserExists,
            Error::InviteUsed,
            Error::InviteCancelled,
            Error::InviteExpired,
            Error::StaleDevices("x".into()),
            Error::LimitReached("x".into()),
            Error::Unavailable("x".into()),
        ];
        for e in all {
            let back = Error::from_wire(e.code(), &e.public_message());
            assert_eq!(back.code(), e.code());
        }
        assert_eq!(Error::Internal("secret detail".into()).public_message(), "internal error");
    }
}
