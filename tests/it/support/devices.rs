//! What the device tests share: a new device key and its bundle, and the
//! refusals that only a race (a caller revoked meanwhile, a concurrent
//! revoke of the other admin) produces.

use unibus::{Bundle, ClientError, Identity};

/// The refusal of a revoke whose caller lost its standing after its
/// request passed the first checks: only the check inside the CAS (or, for
/// an admin, after the write) says this.
pub const CALLER_GONE: &str = "was revoked before this revoke was written";
/// The refusal of the last-admin re-check after the write (then undone).
pub const LAST_ADMIN_RACE: &str = "a concurrent change took the other";

/// A new device key for `account`, and its bundle.
pub fn new_device(account: &str, name: &str) -> (Identity, Bundle) {
    let id = Identity::generate().with_account(account).unwrap();
    let bundle = id.bundle(Some(name));
    (id, bundle)
}

/// True when the reply is the refusal whose message holds `needle`.
pub fn refused_with<T>(r: &Result<T, ClientError>, needle: &str) -> bool {
    matches!(r, Err(ClientError::Service(e)) if e.code() == "forbidden" && e.to_string().contains(needle))
}
