//! The records kept in JetStream KV (docs/protocol.md section 3) and the time helpers
//! they use. Every record carries `"v": 1`; unknown fields are ignored when
//! reading so that later versions can add fields.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ids::Timestamp;

/// Schema version written into every record.
pub const SCHEMA_VERSION: u32 = 1;
/// Audit value for actions taken by the first-admin bootstrap.
pub const BOOTSTRAP: &str = "bootstrap";

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May use the bus and the member control subjects.
    Member,
    /// Member plus `unibus.admin.>`.
    Admin,
}

/// Whether a user may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Allowed.
    Active,
    /// Denied on control and data plane until restored.
    Revoked,
}

impl UserStatus {
    /// The wire name (`active`, `revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Revoked => "revoked",
        }
    }
}

/// Stored invite state. `expired` is never stored, only computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InviteStatus {
    /// Not yet redeemed.
    Pending,
    /// Redeemed (see `used_by`, `completed`).
    Used,
    /// Cancelled by an admin (or superseded bootstrap invite).
    Cancelled,
    /// Computed: pending and past `expires_at`. Never stored.
    Expired,
}

impl InviteStatus {
    /// The wire name (`pending`, `used`, `cancelled`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            InviteStatus::Pending => "pending",
            InviteStatus::Used => "used",
            InviteStatus::Cancelled => "cancelled",
            InviteStatus::Expired => "expired",
        }
    }
}

/// A record in `UNIBUS_users`, keyed by `sign_pub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Schema version.
    pub v: u32,
    /// Ed25519 public key, lowercase hex.
    pub sign_pub: String,
    /// X25519 public key, lowercase hex.
    pub kex_pub: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `sign_pub` of the inviting admin, or `bootstrap`.
    pub invited_by: String,
    /// Id of the redeemed invite.
    pub invite_id: String,
    /// Set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Set while revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

impl User {
    /// A new active user record, created now.
    pub fn new_active(
        sign_pub: &str,
        kex_pub: &str,
        name: &str,
        role: Role,
        invited_by: &str,
        invite_id: &str,
    ) -> User {
        let t = fmt_time(now());
        User {
            v: SCHEMA_VERSION,
            sign_pub: sign_pub.to_string(),
            kex_pub: kex_pub.to_string(),
            name: name.to_string(),
            role,
            status: UserStatus::Active,
            created_at: t.clone(),
            invited_by: invited_by.to_string(),
            invite_id: invite_id.to_string(),
            revoked_at: None,
            revoked_by: None,
            updated_at: t,
        }
    }

    /// Active and admin.
    pub fn is_active_admin(&self) -> bool {
        self.status == UserStatus::Active && self.role == Role::Admin
    }
}

/// A record in `UNIBUS_invites`, keyed by `id` = SHA-256(token) hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Schema version.
    pub v: u32,
    /// SHA-256 of the token's raw bytes, lowercase hex.
    pub id: String,
    /// Role the redeemer gets.
    pub role: Role,
    /// Free text from the admin.
    pub note: String,
    /// `sign_pub` of the admin, or `bootstrap`.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; unparseable counts as expired.
    pub expires_at: String,
    /// Stored status (`pending|used|cancelled`); replies show `expired` too.
    pub status: InviteStatus,
    /// Redeemer's `sign_pub` once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
    /// When it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    /// True once the user record exists.
    #[serde(default)]
    pub completed: bool,
    /// Admin who cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// When it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
}

impl Invite {
    /// A new pending invite record `id`, created now and expiring after
    /// `ttl_secs`.
    pub fn new_pending(id: String, role: Role, note: String, created_by: &str, ttl_secs: u64) -> Invite {
        let created = now();
        Invite {
            v: SCHEMA_VERSION,
            id,
            role,
            note,
            created_by: created_by.to_string(),
            created_at: fmt_time(created),
            expires_at: fmt_time(created + time::Duration::seconds(ttl_secs as i64)),
            status: InviteStatus::Pending,
            used_by: None,
            used_at: None,
            completed: false,
            cancelled_by: None,
            cancelled_at: None,
        }
    }

    /// Pending but past its expiry (or with an unparseable expiry: the
    /// stored field stays a `String` so that such a record still reads, and
    /// counts as expired).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.status == InviteStatus::Pending && parse_time(&self.expires_at).is_none_or(|exp| now >= exp)
    }

    /// The invite as shown on the wire: `expired` computed.
    pub fn view(mut self, now: OffsetDateTime) -> Invite {
        if self.is_expired(now) {
            self.status = InviteStatus::Expired;
        }
        self
    }
}

/// A record in `UNIBUS_rooms`, keyed by `id` (32 lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Schema version.
    pub v: u32,
    /// 16 random bytes, lowercase hex.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `sign_pub` of the owner; `None` once the owner was deleted (then only
    /// admins manage the room).
    pub owner: Option<String>,
    /// Member `sign_pub`s, sorted.
    pub members: Vec<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

impl Room {
    /// Is `sign_pub` a member?
    pub fn has_member(&self, sign_pub: &str) -> bool {
        self.members.binary_search_by(|m| m.as_str().cmp(sign_pub)).is_ok()
    }
}

/// Current time, UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Formats a time as RFC 3339 UTC (whole seconds are not forced).
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Parses an RFC 3339 time; `None` when it does not parse (see
/// [`Timestamp::parse`] for the checked wire type).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    Timestamp::parse(s).ok().map(Timestamp::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparseable_expiry_counts_as_expired() {
        let inv = Invite {
            expires_at: "not a time".into(),
            ..Invite::new_pending("x".into(), Role::Member, String::new(), BOOTSTRAP, 600)
        };
        assert!(inv.is_expired(now()));
        assert_eq!(inv.view(now()).status, InviteStatus::Expired);
    }

    #[test]
    fn status_names_are_the_serde_names() {
        for s in [UserStatus::Active, UserStatus::Revoked] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        use InviteStatus::*;
        for s in [Pending, Used, Cancelled, Expired] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
