//! Claim shapes of the auth-callout exchange (as nats-server 2.10+ sends
//! and expects them) and the permissions each standing is granted
//! (docs/protocol.md section 6).

use serde::{Deserialize, Serialize};

use unibus_proto::ids::{Key, RoomId};
use unibus_proto::records::Role;
use unibus_proto::subjects;

/// Audience of every authorization request.
pub const REQUEST_AUDIENCE: &str = "nats-authorization-request";

/// The request JWT's claims (only what the callout reads).
#[derive(Debug, Deserialize)]
pub struct RequestClaims {
    /// The server's public nkey (`N...`).
    pub iss: String,
    /// The configured issuer account.
    #[serde(default)]
    pub sub: String,
    /// Must be [`REQUEST_AUDIENCE`].
    #[serde(default)]
    pub aud: String,
    /// Expiry, unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// The request proper.
    pub nats: AuthRequest,
}

/// `nats` claim of the request.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    /// `authorization_request`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// One-time user nkey made by the server for this attempt.
    pub user_nkey: String,
    /// The asking server.
    pub server_id: ServerId,
    /// The connecting client.
    #[serde(default)]
    pub client_info: ClientInfo,
    /// What the client sent in CONNECT.
    #[serde(default)]
    pub connect_opts: ConnectOpts,
}

/// Identity of the asking server.
#[derive(Debug, Deserialize)]
pub struct ServerId {
    /// Server name.
    #[serde(default)]
    pub name: String,
    /// Server public nkey; must equal the request `iss`.
    pub id: String,
    /// Server xkey, present when requests are sealed.
    #[serde(default)]
    pub xkey: Option<String>,
}

/// Connecting client, as the server sees it.
#[derive(Debug, Default, Deserialize)]
pub struct ClientInfo {
    /// Client id (cid) on that server.
    #[serde(default)]
    pub id: Option<u64>,
    /// Client address.
    #[serde(default)]
    pub host: Option<String>,
    /// The nonce the server sent in INFO.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Fields of the client's CONNECT that the callout reads.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectOpts {
    /// Presented user nkey (`U...`).
    #[serde(default)]
    pub nkey: Option<String>,
    /// Signature over the nonce, base64 (any flavour).
    #[serde(default)]
    pub sig: Option<String>,
}

/// The response JWT's claims.
#[derive(Debug, Serialize)]
pub struct ResponseClaims {
    /// Issuer account public key.
    pub iss: String,
    /// The request's `user_nkey`.
    pub sub: String,
    /// The asking server's id.
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// The verdict.
    pub nats: AuthResponse,
}

/// `nats` claim of the response: exactly one of `jwt` and `error`.
#[derive(Debug, Serialize)]
pub struct AuthResponse {
    /// `authorization_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 2.
    pub version: u8,
    /// The user JWT when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// The reason when denied (reaches only the server log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The user JWT's claims.
#[derive(Debug, Serialize)]
pub struct UserClaims {
    /// Issuer account public key (the configured `auth_callout.issuer`).
    pub iss: String,
    /// The request's `user_nkey`.
    pub sub: String,
    /// Target account: [`subjects::ACCOUNT_APP`], or
    /// [`subjects::ACCOUNT_GUEST`] for a guest.
    pub aud: &'static str,
    /// `sign_pub` hex: becomes the user in `Nats-Request-Info` and CONNZ.
    pub name: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Backstop expiry, unix seconds.
    pub exp: i64,
    /// Permissions.
    pub nats: UserNats,
}

impl UserClaims {
    /// A user JWT's claims for `name` with `grant` (its account,
    /// permissions and limits), issued now by `iss` for the server's
    /// one-time `user_nkey`, valid `ttl_secs`.
    pub fn new(
        iss: String,
        user_nkey: String,
        name: String,
        grant: Grant,
        now: i64,
        ttl_secs: i64,
    ) -> UserClaims {
        let Grant { account, permissions: perms, limits } = grant;
        UserClaims {
            iss,
            sub: user_nkey,
            aud: account,
            name,
            iat: now,
            exp: now + ttl_secs,
            nats: UserNats {
                kind: "user",
                version: 2,
                publish: Allow { allow: perms.publish },
                subscribe: Allow { allow: perms.subscribe },
                subs: limits.subs,
                data: limits.data,
                payload: limits.payload,
            },
        }
    }
}

/// `nats` claim of the user JWT.
#[derive(Debug, Serialize)]
pub struct UserNats {
    /// `user`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 2.
    pub version: u8,
    /// Publish permissions.
    #[serde(rename = "pub")]
    pub publish: Allow,
    /// Subscribe permissions.
    #[serde(rename = "sub")]
    pub subscribe: Allow,
    /// Subscriptions at once ([`Limits::subs`]).
    pub subs: i64,
    /// Bytes ([`Limits::data`]).
    pub data: i64,
    /// Largest message ([`Limits::payload`]).
    pub payload: i64,
}

/// The JWT limits a standing is given (`-1`: no limit of its own; the
/// server's `max_payload` and the APP account's `limits` apply).
///
/// nats-server 2.15 does not enforce these for users admitted through the
/// auth callout: it applies a user JWT's limits only from the JWT a client
/// presented itself, which the callout path clears before the account's
/// limits are applied (server/auth_callout.go, `processReply`). They are
/// set anyway, so that they take effect wherever a server honours them;
/// what unibusd relies on is its own: the control plane refuses a body over
/// [`crate::limits::MAX_REQUEST_BYTES`] before parsing it, budgets every
/// caller ([`crate::limits`]), and nats.conf caps subscriptions per APP
/// connection (docs/production.md, "What nats-server cannot prevent").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Subscriptions at once.
    pub subs: i64,
    /// Bytes of data (not applied to client connections by nats-server).
    pub data: i64,
    /// Largest message.
    pub payload: i64,
}

/// A guest's one request is a registration (a few hundred bytes); its
/// subscriptions are its inbox and the request multiplexer's.
pub const GUEST_LIMITS: Limits = Limits { subs: 8, data: 64 * 1024, payload: 16 * 1024 };

/// A member's data plane carries room messages of up to the server's
/// `max_payload` (1 MiB); its subscriptions are its inbox, its DM and
/// notice subjects and up to 256 rooms, with room to spare. The same
/// number is nats.conf's per-connection cap for account APP.
pub const MEMBER_LIMITS: Limits = Limits { subs: 1024, data: -1, payload: -1 };

/// What a connection is granted: the account it lands in, its
/// permissions and its JWT limits.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// [`subjects::ACCOUNT_GUEST`] for a guest, else [`subjects::ACCOUNT_APP`].
    pub account: &'static str,
    /// Publish and subscribe allow lists ([`permissions`]).
    pub permissions: Permissions,
    /// [`GUEST_LIMITS`] or [`MEMBER_LIMITS`].
    pub limits: Limits,
}

/// The grant of a connecting `device` of `account`: `None` = guest, else
/// the account's role and the rooms it is a member of.
pub fn grant(role: Option<Role>, account: Key, device: Key, rooms: &[RoomId]) -> Grant {
    let (target, limits) = match role {
        None => (subjects::ACCOUNT_GUEST, GUEST_LIMITS),
        Some(_) => (subjects::ACCOUNT_APP, MEMBER_LIMITS),
    };
    Grant { account: target, permissions: permissions(role, account, device, rooms), limits }
}

/// An allow list.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Allow {
    /// Subjects allowed.
    pub allow: Vec<String>,
}

/// Publish and subscribe permissions for a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Publish allow list.
    pub publish: Vec<String>,
    /// Subscribe allow list.
    pub subscribe: Vec<String>,
}

/// Permissions for a connecting `device` of `account` (docs/protocol.md
/// sections 6 and 8): `None` = guest, else the account's role and the rooms
/// it is a member of. The inbox is the device's; the DM subject and rooms
/// are the account's.
pub fn permissions(role: Option<Role>, account: Key, device: Key, rooms: &[RoomId]) -> Permissions {
    let inbox = format!("{}.>", subjects::inbox_prefix(&device.to_hex()));
    let account = account.to_hex();
    let Some(role) = role else {
        return Permissions { publish: vec![subjects::REGISTER.to_string()], subscribe: vec![inbox] };
    };
    let mut publish: Vec<String> = [
        subjects::REGISTER,
        subjects::WHOAMI,
        subjects::USER_LOOKUP,
        subjects::ROOM_ALL,
        subjects::ROOM_MEMBER_ALL,
        subjects::BLOCK_ALL,
        subjects::DEVICE_ALL,
        subjects::MAIL_ALL,
        subjects::MSG_DM_ALL,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if role == Role::Admin {
        publish.push(subjects::ADMIN_ALL.to_string());
    }
    // Only the account's devices hear of its device changes; everyone may
    // hear that a device or account was revoked (it names what a lookup
    // shows anyway), so that contacts stop trusting it at once.
    let mut subscribe = vec![
        inbox,
        subjects::dm(&account),
        subjects::device_notice(&account),
        subjects::REVOKED_NOTICE_ALL.to_string(),
    ];
    for room in rooms {
        publish.push(subjects::room_msg(room));
        subscribe.push(subjects::room_msg(room));
    }
    Permissions { publish, subscribe }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus_proto::endpoint::{self, Access};

    /// Test keys and a room, named by the short text their subjects are
    /// compared with ([`short`]).
    fn k(c: &str) -> Key {
        Key::parse(&c.repeat(32)).unwrap()
    }
    fn r1() -> RoomId {
        RoomId::parse(&"e1".repeat(16)).unwrap()
    }

    /// `subjects` with the test keys and room written as `ab`, `cd`, `r1`.
    fn short(subjects: Vec<String>) -> Vec<String> {
        let names = [(k("ab").to_hex(), "ab"), (k("cd").to_hex(), "cd"), (r1().to_string(), "r1")];
        subjects
            .into_iter()
            .map(|s| names.iter().fold(s, |s, (long, name)| s.replace(long.as_str(), name)))
            .collect()
    }

    /// NATS subject matching: `*` is one token, `>` the rest (one or more).
    fn matches(pattern: &str, subject: &str) -> bool {
        let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// The endpoint table's "who may call" and the callout's publish
    /// grants agree for every control subject: a guest may publish exactly
    /// the guest endpoints, a member also the member ones, an admin all.
    #[test]
    fn grants_follow_the_endpoint_table() {
        assert!(matches("unibus.admin.>", "unibus.admin.user.get"));
        assert!(!matches("unibus.room.*", "unibus.room.member.add"));
        let callers = [(None, 0), (Some(Role::Member), 1), (Some(Role::Admin), 2)];
        for (role, rank) in callers {
            let grants = permissions(role, k("ab"), k("cd"), &[]).publish;
            for (subject, access) in endpoint::ALL {
                let needed = match access {
                    Access::Guest => 0,
                    Access::Member => 1,
                    _ => 2,
                };
                let granted = grants.iter().any(|g| matches(g, subject));
                assert_eq!(granted, rank >= needed, "{role:?} on {subject}");
            }
        }
    }

    /// A guest lands in GUEST with the guest limits, anyone else in APP.
    #[test]
    fn guests_and_members_land_in_their_accounts() {
        let g = grant(None, k("ab"), k("ab"), &[]);
        assert_eq!((g.account, g.limits), (subjects::ACCOUNT_GUEST, GUEST_LIMITS));
        for role in [Role::Member, Role::Admin] {
            let m = grant(Some(role), k("ab"), k("cd"), &[]);
            assert_eq!((m.account, m.limits), (subjects::ACCOUNT_APP, MEMBER_LIMITS));
            assert_eq!(m.permissions, permissions(Some(role), k("ab"), k("cd"), &[]));
        }
    }

    #[test]
    fn guest_may_only_register() {
        let p = permissions(None, k("ab"), k("ab"), &[r1()]);
        let (p_pub, p_sub) = (short(p.publish.clone()), short(p.subscribe.clone()));
        assert_eq!(p_pub, vec!["unibus.register"]);
        assert_eq!(p_sub, vec!["_INBOX.ab.>"]);
    }

    #[test]
    fn only_admins_get_admin_subjects() {
        let m = permissions(Some(Role::Member), k("ab"), k("ab"), &[r1()]);
        let (m_pub, m_sub) = (short(m.publish.clone()), short(m.subscribe.clone()));
        assert!(!m_pub.iter().any(|s| s.starts_with("unibus.admin")));
        assert!(m_pub.contains(&"unibus.msg.room.r1".to_string()));
        assert!(m_pub.contains(&"unibus.block.*".to_string()));
        assert_eq!(
            m_sub,
            vec![
                "_INBOX.ab.>",
                "unibus.msg.dm.ab",
                "unibus.notice.devices.ab",
                "unibus.notice.revoked.*",
                "unibus.msg.room.r1"
            ]
        );
        let a = permissions(Some(Role::Admin), k("ab"), k("ab"), &[]);
        let (a_pub, a_sub) = (short(a.publish.clone()), short(a.subscribe.clone()));
        assert!(a_pub.contains(&"unibus.admin.>".to_string()));
        assert_eq!(
            a_sub,
            vec!["_INBOX.ab.>", "unibus.msg.dm.ab", "unibus.notice.devices.ab", "unibus.notice.revoked.*"]
        );
    }

    /// A second device reads its own inbox and its account's DMs and rooms,
    /// and may call the device endpoints.
    #[test]
    fn a_device_gets_its_inbox_and_its_accounts_subjects() {
        let d = permissions(Some(Role::Member), k("ab"), k("cd"), &[r1()]);
        let (d_pub, d_sub) = (short(d.publish.clone()), short(d.subscribe.clone()));
        assert_eq!(
            d_sub,
            vec![
                "_INBOX.cd.>",
                "unibus.msg.dm.ab",
                "unibus.notice.devices.ab",
                "unibus.notice.revoked.*",
                "unibus.msg.room.r1"
            ]
        );
        assert!(d_pub.contains(&"unibus.device.>".to_string()));
        assert!(
            !permissions(None, k("cd"), k("cd"), &[]).publish.iter().any(|s| s.starts_with("unibus.device"))
        );
    }
}
