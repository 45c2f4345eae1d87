//! The callout's envelope, apart from its decision: opening a request as
//! nats-server sends it (xkey unseal when configured, the server's JWT
//! verified strictly, checked to be meant for our issuer and fresh) and
//! making the answer it expects (the user JWT and the response JWT signed
//! by our issuer, sealed for the asking server when its request was
//! sealed). Pure functions over bytes and keys: no store, no NATS, the
//! clock passed in, so that every refusal can be tested on its own.
//!
//! A request the envelope refuses gets no answer at all ([`Refused`]):
//! nothing in it can be trusted, not even where a signed denial would go
//! (synadia-io/callout.go calls this an abort, apart from a signed
//! rejection).

use std::time::Duration;

use super::claims::{AuthResponse, Grant, REQUEST_AUDIENCE, RequestClaims, ResponseClaims, UserClaims};
use super::jwt::{self, JwtError};
use super::sealing::{SealError, Sealer};

/// nkeys prefix byte of server keys (`N...`).
pub const SERVER_PREFIX: u8 = 13 << 3;
/// Clock skew tolerated on the request's `exp`.
const EXP_SKEW_SECS: i64 = 2;

/// Why a request is left unanswered. Short texts for the log; none
/// carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Encryption is configured but the request came in the clear.
    #[error("unsealed request but xkey is configured")]
    Unsealed,
    /// The request came sealed but encryption is not configured.
    #[error("sealed request but no xkey is configured")]
    Sealed,
    /// The sealed request does not open (or the answer cannot be sealed).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The opened request is not text.
    #[error("request is not UTF-8")]
    NotUtf8,
    /// The request JWT is malformed or its signature fails.
    #[error("request JWT: {0}")]
    Jwt(JwtError),
    /// The request's `nats.type` is not `authorization_request`.
    #[error("unexpected request type {0:?}")]
    Kind(String),
    /// Signed by another key than the server the request names.
    #[error("request issuer is not the server it names")]
    Issuer,
    /// The audience is not [`REQUEST_AUDIENCE`].
    #[error("request audience is wrong")]
    Audience,
    /// The request is for another callout issuer.
    #[error("request is for another issuer")]
    OtherIssuer,
    /// `exp` is past (beyond the tolerated skew) or missing.
    #[error("request JWT expired or without exp")]
    Expired,
    /// The xkey that sealed the request is not the one of the server it
    /// names.
    #[error("request xkey does not match its server")]
    Xkey,
    /// Our issuer could not sign (which JWT, and why).
    #[error("sign {0}: {1}")]
    Sign(&'static str, JwtError),
}

/// A request the envelope accepted: its claims, verified, and how its
/// answer goes back.
#[derive(Debug)]
pub struct Opened {
    /// The server's request, signed by the server it names, for our
    /// issuer, fresh.
    pub claims: RequestClaims,
    /// The asking server's xkey when the request came sealed: the answer
    /// is sealed for it.
    server_xkey: Option<String>,
}

/// What an answer says.
#[derive(Debug)]
pub enum Answer {
    /// Let the connection in as `name` (the connecting key: the user
    /// JWT's `name`) with `grant`, for `ttl`.
    Admit {
        /// The connecting key, as it will show in `Nats-Request-Info`.
        name: String,
        /// Account, permissions and limits.
        grant: Grant,
        /// Lifetime of the user JWT.
        ttl: Duration,
    },
    /// Keep it out, with a reason for the server log.
    Deny(String),
}

/// Opens one raw callout request: unseals `payload` with `xkey` when the
/// request came sealed (`server_xkey`, its `Nats-Server-Xkey` header),
/// verifies the server's JWT, and checks that the server it names signed
/// it, for `issuer`, unexpired at `now` (unix seconds).
///
/// # Errors
/// [`Refused`] when the sealing does not match our configuration or does
/// not open, or the JWT is not a valid, fresh request for us.
pub fn open(
    issuer: &str,
    xkey: Option<&Sealer>,
    server_xkey: Option<&str>,
    payload: &[u8],
    now: i64,
) -> Result<Opened, Refused> {
    let opened;
    let token = match (xkey, server_xkey) {
        (Some(ours), Some(theirs)) => {
            opened = ours.open(theirs, payload)?;
            opened.as_slice()
        }
        (None, None) => payload,
        (Some(_), None) => return Err(Refused::Unsealed),
        (None, Some(_)) => return Err(Refused::Sealed),
    };
    let token = std::str::from_utf8(token).map_err(|_| Refused::NotUtf8)?;
    let (claims, iss): (RequestClaims, String) =
        jwt::decode_verified(token, SERVER_PREFIX).map_err(Refused::Jwt)?;
    check(&claims, &iss, issuer, server_xkey, now)?;
    Ok(Opened { claims, server_xkey: server_xkey.map(str::to_string) })
}

/// The request must come from the server it names, be meant for us and be
/// fresh.
fn check(req: &RequestClaims, iss: &str, issuer: &str, xkey: Option<&str>, now: i64) -> Result<(), Refused> {
    let n = &req.nats;
    if n.kind != "authorization_request" {
        return Err(Refused::Kind(n.kind.clone()));
    }
    if n.server_id.id != iss {
        return Err(Refused::Issuer);
    }
    if req.aud != REQUEST_AUDIENCE {
        return Err(Refused::Audience);
    }
    if req.sub != issuer {
        return Err(Refused::OtherIssuer);
    }
    match req.exp {
        Some(exp) if now <= exp + EXP_SKEW_SECS => {}
        _ => return Err(Refused::Expired),
    }
    if xkey.is_some() && n.server_id.xkey.as_deref() != xkey {
        return Err(Refused::Xkey);
    }
    Ok(())
}

/// The bytes to publish in answer to `opened`: the response JWT (with the
/// user JWT when admitting) signed by `issuer` at `now`, sealed with
/// `xkey` for the asking server when its request came sealed.
///
/// # Errors
/// [`Refused::Sign`] or [`Refused::Seal`] when our keys cannot sign or
/// seal.
pub fn answer(
    issuer: &nkeys::KeyPair,
    xkey: Option<&Sealer>,
    opened: &Opened,
    answer: Answer,
    now: i64,
) -> Result<Vec<u8>, Refused> {
    let req = &opened.claims.nats;
    let nats = match answer {
        Answer::Admit { name, grant, ttl } => {
            let user = UserClaims::new(
                issuer.public_key(),
                req.user_nkey.clone(),
                name,
                grant,
                now,
                ttl.as_secs() as i64,
            );
            let jwt = jwt::encode_signed(&user, issuer).map_err(|e| Refused::Sign("user JWT", e))?;
            AuthResponse { kind: "authorization_response", version: 2, jwt: Some(jwt), error: None }
        }
        Answer::Deny(reason) => {
            AuthResponse { kind: "authorization_response", version: 2, jwt: None, error: Some(reason) }
        }
    };
    let resp = ResponseClaims {
        iss: issuer.public_key(),
        sub: req.user_nkey.clone(),
        aud: req.server_id.id.clone(),
        iat: now,
        nats,
    };
    let signed = jwt::encode_signed(&resp, issuer).map_err(|e| Refused::Sign("response", e))?;
    match (xkey, &opened.server_xkey) {
        (Some(ours), Some(theirs)) => Ok(ours.seal(theirs, signed.as_bytes())?),
        _ => Ok(signed.into_bytes()),
    }
}

#[cfg(test)]
mod tests;
