//! Unit tests of the envelope: requests made as nats-server makes them
//! (a server nkey signs, its xkey seals for ours), opened, answered, and
//! the answer opened again on the server's side; every refusal on its
//! own.

use serde_json::{Value, json};

use super::*;
use crate::callout::claims::{GUEST_LIMITS, grant};
use unibus_proto::ids::{Key, RoomId};
use unibus_proto::records::Role;
use unibus_proto::subjects;

/// A fixed "now" (unix seconds): expiry is judged against it, not the
/// clock.
const NOW: i64 = 1_800_000_000;

fn key(hex: &str) -> Key {
    Key::parse(hex).unwrap()
}

/// A server (its nkey and xkey), our issuer and our xkey.
struct Setup {
    server: nkeys::KeyPair,
    server_xkey: nkeys::XKey,
    issuer: nkeys::KeyPair,
    ours: nkeys::XKey,
    sealer: Sealer,
}

impl Setup {
    fn new() -> Setup {
        let ours = nkeys::XKey::new();
        let sealer = Sealer::new(&ours).unwrap();
        let (server, server_xkey) = (nkeys::KeyPair::new_server(), nkeys::XKey::new());
        Setup { server, server_xkey, issuer: nkeys::KeyPair::new_account(), ours, sealer }
    }

    /// The request claims nats-server 2.10+ sends (the fields it always
    /// fills), for our issuer, expiring at `exp`.
    fn claims(&self, exp: i64) -> Value {
        json!({
            "iss": self.server.public_key(),
            "sub": self.issuer.public_key(),
            "aud": REQUEST_AUDIENCE,
            "iat": exp - 2,
            "exp": exp,
            "nats": {
                "type": "authorization_request",
                "version": 2,
                "user_nkey": "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4",
                "server_id": {
                    "name": "n0", "host": "127.0.0.1", "id": self.server.public_key(),
                    "version": "2.11.0", "xkey": self.server_xkey.public_key(),
                },
                "client_info": {"host": "127.0.0.1", "id": 7, "kind": "Client", "type": "nats", "nonce": "bm9uY2U"},
                "connect_opts": {"nkey": "UABC", "sig": "c2ln", "lang": "rust", "version": "0.51.0", "protocol": 1},
            },
        })
    }

    /// `claims` signed by `signer` (the server, unless a test forges).
    fn signed_by(&self, claims: &Value, signer: &nkeys::KeyPair) -> String {
        jwt::encode_signed(claims, signer).unwrap()
    }

    /// `token` sealed by the server for `to` (our xkey, unless a test
    /// mis-seals).
    fn sealed_for(&self, token: &str, to: &nkeys::XKey) -> Vec<u8> {
        let to = nkeys::XKey::from_public_key(&to.public_key()).unwrap();
        self.server_xkey.seal(token.as_bytes(), &to).unwrap()
    }

    /// A valid sealed request, as its payload and `Nats-Server-Xkey`.
    fn sealed_request(&self) -> (Vec<u8>, String) {
        let token = self.signed_by(&self.claims(NOW + 2), &self.server);
        (self.sealed_for(&token, &self.ours), self.server_xkey.public_key())
    }

    fn open(&self, xkey: Option<&Sealer>, header: Option<&str>, payload: &[u8]) -> Result<Opened, Refused> {
        open(&self.issuer.public_key(), xkey, header, payload, NOW)
    }

    /// What the server reads from our answer: the response claims,
    /// verified against our issuer.
    fn read_answer(&self, bytes: &[u8], sealed: bool) -> Value {
        let plain = match sealed {
            true => {
                let sender = nkeys::XKey::from_public_key(&self.ours.public_key()).unwrap();
                self.server_xkey.open(bytes, &sender).unwrap()
            }
            false => bytes.to_vec(),
        };
        let (claims, iss): (Value, String) =
            jwt::decode_verified(std::str::from_utf8(&plain).unwrap(), 0).unwrap();
        assert_eq!(iss, self.issuer.public_key());
        claims
    }
}

/// A sealed request opens with its claims; an admitting answer is sealed
/// for the asking server, signed by our issuer, addressed to the server
/// and its one-time user nkey, and carries a user JWT with the grant.
#[test]
fn sealed_request_opens_and_its_answer_admits() {
    let s = Setup::new();
    let (payload, header) = s.sealed_request();
    let opened = s.open(Some(&s.sealer), Some(&header), &payload).unwrap();
    let user_nkey = opened.claims.nats.user_nkey.clone();
    assert_eq!(opened.claims.nats.server_id.id, s.server.public_key());
    assert_eq!(opened.claims.nats.client_info.id, Some(7));
    assert_eq!(opened.claims.nats.connect_opts.nkey.as_deref(), Some("UABC"));

    let device = "ab".repeat(32);
    let admit = Answer::Admit {
        name: device.clone(),
        grant: grant(
            Some(Role::Member),
            key(&device),
            key(&device),
            &[RoomId::parse(&"e1".repeat(16)).unwrap()],
        ),
        ttl: Duration::from_secs(600),
    };
    let bytes = answer(&s.issuer, Some(&s.sealer), &opened, admit, NOW).unwrap();
    assert!(bytes.starts_with(b"xkv1"), "the answer to a sealed request is sealed");
    let resp = s.read_answer(&bytes, true);
    assert_eq!(resp["sub"], user_nkey.as_str());
    assert_eq!(resp["aud"], s.server.public_key().as_str());
    assert_eq!(resp["iat"], NOW);
    assert_eq!(resp["nats"]["type"], "authorization_response");
    assert_eq!(resp["nats"]["version"], 2);
    assert!(resp["nats"].get("error").is_none());

    let token = resp["nats"]["jwt"].as_str().unwrap();
    let (user, iss): (Value, String) = jwt::decode_verified(token, 0).unwrap();
    assert_eq!(iss, s.issuer.public_key());
    assert_eq!(user["sub"], user_nkey.as_str());
    assert_eq!(user["name"], device.as_str());
    assert_eq!(user["aud"], subjects::ACCOUNT_APP);
    assert_eq!((user["iat"].as_i64(), user["exp"].as_i64()), (Some(NOW), Some(NOW + 600)));
    let subscribe = user["nats"]["sub"]["allow"].as_array().unwrap();
    assert!(subscribe.contains(&json!(format!("unibus.msg.room.{}", "e1".repeat(16)))), "{subscribe:?}");
}

/// With encryption off, a plain request opens and a denial goes back
/// plain: a signed response with the reason and no user JWT.
#[test]
fn plain_request_opens_and_its_answer_denies() {
    let s = Setup::new();
    let mut claims = s.claims(NOW);
    claims["nats"]["server_id"]["xkey"] = Value::Null;
    let token = s.signed_by(&claims, &s.server);
    let opened = s.open(None, None, token.as_bytes()).unwrap();
    let bytes = answer(&s.issuer, None, &opened, Answer::Deny("user x is revoked".into()), NOW).unwrap();
    let resp = s.read_answer(&bytes, false);
    assert_eq!(resp["nats"]["error"], "user x is revoked");
    assert!(resp["nats"].get("jwt").is_none());
    assert_eq!(resp["aud"], s.server.public_key().as_str());
}

/// A guest's user JWT lands in GUEST with the guest limits.
#[test]
fn a_guest_answer_lands_in_guest() {
    let s = Setup::new();
    let token = s.signed_by(&s.claims(NOW), &s.server);
    let opened = s.open(None, None, token.as_bytes()).unwrap();
    let key = "cd".repeat(32);
    let admit = Answer::Admit {
        name: key.clone(),
        grant: grant(None, self::key(&key), self::key(&key), &[]),
        ttl: Duration::from_secs(60),
    };
    let resp = s.read_answer(&answer(&s.issuer, None, &opened, admit, NOW).unwrap(), false);
    let (user, _): (Value, String) = jwt::decode_verified(resp["nats"]["jwt"].as_str().unwrap(), 0).unwrap();
    assert_eq!(user["aud"], subjects::ACCOUNT_GUEST);
    assert_eq!(user["nats"]["subs"], GUEST_LIMITS.subs);
    assert_eq!(user["nats"]["pub"]["allow"], json!([subjects::REGISTER]));
}

/// Sealing must match the configuration, and a box sealed for another
/// key, or changed on the way, does not open.
#[test]
fn mis_sealed_requests_are_refused() {
    let s = Setup::new();
    let (payload, header) = s.sealed_request();
    let token = s.signed_by(&s.claims(NOW), &s.server);
    assert_eq!(s.open(Some(&s.sealer), None, token.as_bytes()).unwrap_err(), Refused::Unsealed);
    assert_eq!(s.open(None, Some(&header), &payload).unwrap_err(), Refused::Sealed);

    let someone_else = nkeys::XKey::new();
    let for_another = s.sealed_for(&token, &someone_else);
    assert_eq!(
        s.open(Some(&s.sealer), Some(&header), &for_another).unwrap_err(),
        Refused::Seal(SealError::Open)
    );
    let mut flipped = payload.clone();
    flipped[40] ^= 1;
    assert_eq!(s.open(Some(&s.sealer), Some(&header), &flipped).unwrap_err(), Refused::Seal(SealError::Open));
    // The header names another server's xkey: the box does not open.
    let other = nkeys::XKey::new().public_key();
    assert_eq!(s.open(Some(&s.sealer), Some(&other), &payload).unwrap_err(), Refused::Seal(SealError::Open));
    let account = nkeys::KeyPair::new_account().public_key();
    assert_eq!(
        s.open(Some(&s.sealer), Some(&account), &payload).unwrap_err(),
        Refused::Seal(SealError::ServerKey)
    );
    assert_eq!(s.open(None, None, &[0xff, 0xfe]).unwrap_err(), Refused::NotUtf8);
}

/// A request whose server xkey (in its claims) is not the one that sealed
/// it is refused: the box opened, but for another server than it names.
#[test]
fn a_request_sealed_by_another_server_than_it_names_is_refused() {
    let s = Setup::new();
    let mut claims = s.claims(NOW);
    claims["nats"]["server_id"]["xkey"] = json!(nkeys::XKey::new().public_key());
    let payload = s.sealed_for(&s.signed_by(&claims, &s.server), &s.ours);
    let header = s.server_xkey.public_key();
    assert_eq!(s.open(Some(&s.sealer), Some(&header), &payload).unwrap_err(), Refused::Xkey);
}

/// A changed claim, a signature by someone else than the server it names,
/// or by a key that is no server's, is refused.
#[test]
fn tampered_and_forged_requests_are_refused() {
    let s = Setup::new();
    let token = s.signed_by(&s.claims(NOW), &s.server);
    let mut changed = s.claims(NOW);
    changed["nats"]["connect_opts"]["nkey"] = json!("UOTHER");
    let other = s.signed_by(&changed, &s.server);
    let parts: Vec<&str> = token.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
    assert_eq!(s.open(None, None, spliced.as_bytes()).unwrap_err(), Refused::Jwt(JwtError::Signature));

    // Another server signs a request naming the first one.
    let mut forged = s.claims(NOW);
    let mallory = nkeys::KeyPair::new_server();
    forged["iss"] = json!(mallory.public_key());
    let forged = s.signed_by(&forged, &mallory);
    assert_eq!(s.open(None, None, forged.as_bytes()).unwrap_err(), Refused::Issuer);

    // An account key (not a server) signs as itself.
    let account = nkeys::KeyPair::new_account();
    let mut by_account = s.claims(NOW);
    by_account["iss"] = json!(account.public_key());
    let by_account = s.signed_by(&by_account, &account);
    assert_eq!(s.open(None, None, by_account.as_bytes()).unwrap_err(), Refused::Jwt(JwtError::Signature));
    assert!(matches!(s.open(None, None, b"not.a.jwt").unwrap_err(), Refused::Jwt(JwtError::Malformed(_))));
}

/// Only a fresh request for our issuer, of the request type and audience,
/// is answered; `exp` is judged against the given time, with 2 s of skew.
#[test]
fn stale_and_misaddressed_requests_are_refused() {
    let s = Setup::new();
    let refused = |claims: Value| s.open(None, None, s.signed_by(&claims, &s.server).as_bytes()).err();
    assert_eq!(refused(s.claims(NOW - 2)), None, "within the skew");
    assert_eq!(refused(s.claims(NOW - 3)), Some(Refused::Expired));
    let mut no_exp = s.claims(NOW);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(refused(no_exp), Some(Refused::Expired));

    let mut other_issuer = s.claims(NOW);
    other_issuer["sub"] = json!(nkeys::KeyPair::new_account().public_key());
    assert_eq!(refused(other_issuer), Some(Refused::OtherIssuer));
    let mut audience = s.claims(NOW);
    audience["aud"] = json!("nats-authorization-response");
    assert_eq!(refused(audience), Some(Refused::Audience));
    let mut kind = s.claims(NOW);
    kind["nats"]["type"] = json!("authorization_response");
    assert_eq!(refused(kind), Some(Refused::Kind("authorization_response".into())));
}
