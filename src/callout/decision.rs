//! The callout's decision, apart from its envelope: from a request the
//! envelope has verified, who the connecting client is (its nkey, proven by
//! its signature of the server's nonce, which the server itself does not
//! check) and what the store says of that key. Every failure denies: fail
//! closed.

use std::time::Duration;

use tracing::warn;

use super::Verdict;
use super::claims::RequestClaims;
use crate::limits::Penalties;
use crate::limits::penalties::Refusal;
use crate::store::{Standing, Store};
use unibus_proto::ids::Key;
use unibus_proto::keys;

/// Longest a decision waits for the store before denying: below the
/// server's 2 s auth timeout, so a slow store yields a denial, not a
/// hanging connect.
const DECISION_BUDGET: Duration = Duration::from_millis(1500);

/// nkeys prefix byte of user keys (`U...`).
const USER_PREFIX: u8 = 20 << 3;

/// Authenticates the client of `req` and asks `store` for its key's
/// standing, unless `penalties` refuse the key first.
pub async fn decide(store: &Store, penalties: &Penalties, req: &RequestClaims) -> Verdict {
    let n = &req.nats;
    let Some(nkey) = n.connect_opts.nkey.as_deref().filter(|k| !k.is_empty()) else {
        return Verdict::Deny("no nkey presented".into());
    };
    let key = match user_nkey_to_key(nkey) {
        Ok(k) => k,
        Err(why) => return Verdict::Deny(format!("unusable nkey: {why}")),
    };
    // A penalized key is refused before any signature is checked: its
    // owner may be reconnecting in a tight loop, and a refusal is safe
    // whoever presents the key. Most of its connects get no answer
    // (limits::penalties).
    match penalties.refusal(key.as_bytes()) {
        Some(Refusal::Deny) => {
            return Verdict::Deny("penalized for flooding the control plane; retry later".into());
        }
        Some(Refusal::Ignore) => return Verdict::Unanswered,
        None => {}
    }
    let nonce = n.client_info.nonce.as_deref().unwrap_or("");
    let sig = n.connect_opts.sig.as_deref().unwrap_or("");
    if let Err(why) = keys::verify_nonce_signature(&key, nonce, sig) {
        return Verdict::Deny(format!("nonce signature: {why}"));
    }
    let sign_pub = Key::from_bytes(key.to_bytes());
    // Repeated denials (a revoked client retries every few seconds,
    // forever) cost no store round trip: a denial may come from the
    // index as it stands. An allow needs both indexes proven current
    // with their stream leaders (and their quorums) after this request
    // arrived; concurrent callouts share those leader probes.
    if store.known_revoked(sign_pub) {
        return Verdict::Revoked(sign_pub);
    }
    let unavailable = |e: unibus_proto::Error| {
        warn!(error = %e, "callout: store unavailable, denying");
        Verdict::Deny("authorization store unavailable".into())
    };
    let reads = store.admission(sign_pub);
    let Ok(admission) = tokio::time::timeout(DECISION_BUDGET, reads).await else {
        let ms = DECISION_BUDGET.as_millis();
        return unavailable(unibus_proto::Error::Unavailable(format!("no answer within the {ms} ms budget")));
    };
    // The syncs also prove that the store still has a quorum (see
    // `Index::sync`), so they gate guests too.
    match admission {
        Ok((Standing::Revoked, _)) => Verdict::Revoked(sign_pub),
        Ok((Standing::Unknown, _)) => {
            Verdict::Allow { account: sign_pub, device: sign_pub, role: None, rooms: Vec::new() }
        }
        Ok((Standing::Active { role, account }, rooms)) => {
            Verdict::Allow { account, device: sign_pub, role: Some(role), rooms }
        }
        Err(e) => unavailable(e),
    }
}

/// Decodes a NATS user nkey (`U...`) into a checked Ed25519 key.
///
/// # Errors
/// A short reason when it is not a user key or the key is weak.
pub fn user_nkey_to_key(nkey: &str) -> Result<ed25519_dalek::VerifyingKey, &'static str> {
    let (prefix, raw) = nkeys::from_public_key(nkey).map_err(|_| "not an nkey")?;
    if prefix != USER_PREFIX {
        return Err("not a user nkey");
    }
    keys::check_sign_pub(&raw)
}
