//! Opaque list cursors: the list kind, its filter and the last key of the
//! page, authenticated with an HMAC whose key every unibusd instance of a
//! deployment derives from the issuer seed, so any instance accepts any
//! instance's cursor and a cursor it did not issue (or one replayed with
//! another filter) is `bad_request`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use unibus_proto::error::Error;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks cursors.
#[derive(Clone)]
pub struct Cursors {
    key: [u8; 32],
}

const TAG_LEN: usize = 16;

impl Cursors {
    /// Derives the cursor key from deployment secret material.
    pub fn new(secret: &[u8]) -> Cursors {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"unibus list cursor v1");
        Cursors { key: mac.finalize().into_bytes().into() }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// A cursor continuing after `last_key` for list `kind` with `filter`.
    pub fn issue(&self, kind: &str, filter: &str, last_key: &str) -> String {
        let body = format!("{kind}\n{filter}\n{last_key}");
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(body), URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN]))
    }

    /// The last key of a cursor issued for `kind` and `filter`.
    ///
    /// # Errors
    /// `bad_request` for anything else.
    pub fn open(&self, cursor: &str, kind: &str, filter: &str) -> Result<String, Error> {
        let bad = || Error::bad("cursor: not a cursor of this list");
        let (body, tag) = cursor.split_once('.').ok_or_else(bad)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        let mut mac = self.mac();
        mac.update(&body);
        mac.verify_truncated_left(&tag).map_err(|_| bad())?;
        if tag.len() != TAG_LEN {
            return Err(bad());
        }
        let body = String::from_utf8(body).map_err(|_| bad())?;
        let mut parts = body.splitn(3, '\n');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(f), Some(last)) if k == kind && f == filter => Ok(last.to_string()),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let c = Cursors::new(b"seed");
        let cur = c.issue("users", "active", "ab");
        assert_eq!(c.open(&cur, "users", "active").unwrap(), "ab");
        assert!(c.open(&cur, "users", "revoked").is_err(), "filter bound");
        assert!(c.open(&cur, "invites", "active").is_err(), "kind bound");
        assert!(Cursors::new(b"other").open(&cur, "users", "active").is_err(), "key bound");
        let forged =
            format!("{}.{}", URL_SAFE_NO_PAD.encode("users\nactive\nzz"), cur.split_once('.').unwrap().1);
        assert!(c.open(&forged, "users", "active").is_err());
        assert!(c.open("garbage", "users", "active").is_err());
        let short = format!("{}.{}", cur.split_once('.').unwrap().0, URL_SAFE_NO_PAD.encode([0u8; 1]));
        assert!(c.open(&short, "users", "active").is_err());
    }
}
