//! Who is asking: the identity nats-server stamps on every request that
//! crosses an import into AUTH (`Nats-Request-Info`), read strictly
//! (docs/protocol.md section 2), and the [`Caller`] handlers act for.

use async_nats::HeaderMap;

use unibus_proto::error::Error;
use unibus_proto::ids::{Key, SignPub};
use unibus_proto::subjects;

/// The authenticated caller: the key the server stamped into
/// `Nats-Request-Info` (the user JWT's `name`: the connecting device) and
/// the account it acts for (docs/protocol.md section 8). Built once, when
/// the account is known ([`Stamp::caller`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account the caller acts for: its device record's account, or
    /// the key itself (an account's own key; a guest registering).
    pub account: Key,
    /// The connecting device's checked Ed25519 key.
    pub device: SignPub,
    /// The requesting connection: server name and client id.
    pub origin: Option<(String, u64)>,
}

#[derive(serde::Deserialize)]
struct RequestInfo {
    #[serde(default)]
    acc: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    id: Option<u64>,
}

/// [`Stamp::read`], then [`Stamp::caller`] (tests).
#[cfg(test)]
fn caller_from_headers(headers: Option<&HeaderMap>, subject: &str) -> Result<Caller, Error> {
    let stamp = Stamp::read(headers, subject)?;
    let device = stamp.device()?;
    let account = device.key();
    Ok(stamp.caller(device, account))
}

/// What the server stamped on a request, read without curve arithmetic
/// (the intake reads one per request, at any rate a client sends): the
/// key's 32 bytes, the connection and the account it came from.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The stamped key (not yet checked to be a valid Ed25519 key).
    pub key: [u8; 32],
    /// The requesting connection: server name and client id.
    pub origin: Option<(String, u64)>,
    /// From account GUEST.
    pub guest: bool,
}

impl Stamp {
    /// Reads the caller of a request on `subject` from the server-stamped
    /// header, without checking the key's curve point ([`Stamp::caller`]
    /// does). Only requests that crossed an import carry it: from account APP
    /// (members' devices), or from account GUEST for `unibus.register` (the
    /// only subject GUEST imports). The server replaces a client's copy
    /// only where it follows a CRLF and appends its own, so a hostile block can
    /// smuggle a forged copy in front (docs/protocol.md section 2). The patched
    /// async-nats (patches/README.md) delivers only well-formed blocks (CRLF
    /// line ends, no bare CR or LF, no folding) and drops the rest; here the
    /// block must then hold exactly one `Nats-Request-Info` value, names
    /// compared without regard to case, from one of those accounts with a key
    /// as user.
    ///
    /// # Errors
    /// `unauthenticated` when absent, repeated, unreadable, from another
    /// account, or not 64 hex characters.
    pub fn read(headers: Option<&HeaderMap>, subject: &str) -> Result<Stamp, Error> {
        let mut copies = headers
            .into_iter()
            .flat_map(|h| h.iter())
            .filter(|(name, _)| {
                AsRef::<[u8]>::as_ref(*name).eq_ignore_ascii_case(subjects::HDR_REQUEST_INFO.as_bytes())
            })
            .flat_map(|(_, values)| values.iter());
        let raw = match (copies.next(), copies.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(Error::Unauthenticated("no Nats-Request-Info identity".into())),
            (Some(_), Some(_)) => {
                return Err(Error::Unauthenticated("more than one Nats-Request-Info identity".into()));
            }
        };
        let info: RequestInfo = serde_json::from_str(raw.as_str())
            .map_err(|_| Error::Unauthenticated("unreadable Nats-Request-Info".into()))?;
        let guest = match info.acc.as_str() {
            subjects::ACCOUNT_APP => false,
            subjects::ACCOUNT_GUEST if subject == subjects::REGISTER => true,
            _ => return Err(Error::Unauthenticated("request not from the APP account".into())),
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(&info.user, &mut key).map_err(|_| not_a_key())?;
        Ok(Stamp { key, origin: info.server.zip(info.id), guest })
    }

    /// The stamped key, checked (a valid Ed25519 key of full order).
    ///
    /// # Errors
    /// `unauthenticated` when it is not a user key.
    pub fn device(&self) -> Result<SignPub, Error> {
        SignPub::parse_field("caller", &hex::encode(self.key)).map_err(|_| not_a_key())
    }

    /// The caller: the stamped key checked by [`Stamp::device`] (parsed
    /// once per request: the curve check is the dearest step of reading a
    /// caller), acting for `account`.
    pub fn caller(self, device: SignPub, account: Key) -> Caller {
        Caller { device, account, origin: self.origin }
    }
}

fn not_a_key() -> Error {
    Error::Unauthenticated("caller is not a user key".into())
}

#[cfg(test)]
mod tests {
    use super::{HeaderMap, caller_from_headers};

    const KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn info(user: &str) -> String {
        format!(r#"{{"acc":"APP","user":"{user}","server":"s","id":7}}"#)
    }

    #[test]
    fn exactly_one_identity_in_any_letter_case_is_required() {
        let mut one = HeaderMap::new();
        one.insert("Nats-Request-Info", info(KEY).as_str());
        assert_eq!(caller_from_headers(Some(&one), "unibus.whoami").unwrap().account, KEY);
        assert_eq!(caller_from_headers(Some(&one), "unibus.whoami").unwrap().origin, Some(("s".into(), 7)));

        let mut two = one.clone();
        two.append("Nats-Request-Info", info(KEY).as_str());
        let mut cased = one.clone();
        cased.insert("nats-request-info", info(KEY).as_str());
        let mut upper = one.clone();
        upper.insert("NATS-REQUEST-INFO", info(KEY).as_str());
        for h in [two, cased, upper] {
            assert_eq!(caller_from_headers(Some(&h), "unibus.whoami").unwrap_err().code(), "unauthenticated");
        }
        assert_eq!(caller_from_headers(None, "unibus.whoami").unwrap_err().code(), "unauthenticated");
        assert_eq!(
            caller_from_headers(Some(&HeaderMap::new()), "unibus.whoami").unwrap_err().code(),
            "unauthenticated"
        );
    }

    /// A guest (account GUEST) may only register.
    #[test]
    fn guests_only_register() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Request-Info", format!(r#"{{"acc":"GUEST","user":"{KEY}"}}"#).as_str());
        assert!(super::Stamp::read(Some(&h), "unibus.register").unwrap().guest);
        assert_eq!(caller_from_headers(Some(&h), "unibus.whoami").unwrap_err().code(), "unauthenticated");
        assert!(!super::Stamp::read(Some(&h_app()), "unibus.register").unwrap().guest);
    }

    fn h_app() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Request-Info", info(KEY).as_str());
        h
    }

    #[test]
    fn identity_must_be_an_app_key() {
        let cases = [
            r#"{"acc":"AUTH","user":"KEY"}"#.replace("KEY", KEY),
            r#"{"acc":"APP","user":"alice"}"#.to_string(),
            r#"{"acc":"APP"}"#.to_string(),
            r#"{"acc":"APP","user":"KEY","user":"KEY"}"#.replace("KEY", KEY),
            "not json".to_string(),
        ];
        for value in cases {
            let mut h = HeaderMap::new();
            h.insert("Nats-Request-Info", value.as_str());
            assert_eq!(
                caller_from_headers(Some(&h), "unibus.whoami").unwrap_err().code(),
                "unauthenticated",
                "{value}"
            );
        }
    }
}
