//! Refused connects as the server reports them: its auth-error advisories
//! (`$SYS.ACCOUNT.CLIENT.AUTH.ERR`, watched with the service user), and the
//! check that a refusal was unibusd's signed denial, not a dropped or
//! timed-out callout.

use std::time::Duration;

use unibus::ClientError;
use unibus_proto::subjects;

/// The auth-error advisories of one server (`$SYS.ACCOUNT.CLIENT.AUTH.ERR`,
/// published in account AUTH), watched with the service user.
pub struct AuthErrors {
    _conn: async_nats::Client,
    sub: async_nats::Subscriber,
}

impl AuthErrors {
    /// Subscribes (and flushes) before returning, so no later refusal is missed.
    pub async fn watch(url: &str, service_seed: String) -> AuthErrors {
        let conn =
            async_nats::ConnectOptions::with_nkey(service_seed).connect(url).await.expect("service user");
        let sub = conn.subscribe(subjects::AUTH_ERROR_ADVISORY).await.expect("advisory subscription");
        conn.flush().await.expect("flush");
        AuthErrors { _conn: conn, sub }
    }

    /// The whole next advisory within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<serde_json::Value> {
        let msg = tokio::time::timeout(limit, futures::StreamExt::next(&mut self.sub)).await.ok()??;
        Some(serde_json::from_slice(&msg.payload).expect("advisory is JSON"))
    }

    /// The `reason` of the next advisory within `limit`.
    pub async fn next_reason(&mut self, limit: Duration) -> Option<String> {
        self.next(limit).await.map(|a| a["reason"].as_str().unwrap_or_default().to_string())
    }

    /// The next advisory within `limit` about the connection `who`: the
    /// nkey it presented (`client.user`) or the name it set (`client.name`).
    /// Advisories about other connections (say, a revoked client's
    /// automatic reconnects) are skipped.
    pub async fn next_about(&mut self, who: &str, limit: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let advisory = self.next(left).await?;
            if advisory["client"]["user"] == who || advisory["client"]["name"] == who {
                return Some(advisory);
            }
        }
    }

    /// The `reason` of the next advisory about `who` within `limit` (see
    /// [`AuthErrors::next_about`]).
    pub async fn next_reason_about(&mut self, who: &str, limit: Duration) -> Option<String> {
        self.next_about(who, limit).await.map(|a| a["reason"].as_str().unwrap_or_default().to_string())
    }
}

/// The text nats-server puts before a callout's own denial reason; a
/// timed-out or unanswered callout reads differently.
pub const SIGNED_DENIAL: &str = "Auth callout service returned an error: ";
/// Well inside the server's 2 s auth timeout: a dropped callout cannot
/// be refused this fast, a signed denial (even after the 1.5 s decision
/// budget) is.
pub const DENIAL_WITHIN: Duration = Duration::from_millis(1900);

/// Runs `connect` (a connect as `who`: the nkey it presents, or the
/// connection name it sets) and asserts unibusd refused it with a signed
/// denial: `NotAuthorized` within [`DENIAL_WITHIN`], and the server's
/// advisory about that connection (not any other refused meanwhile)
/// carries unibus's reason, not a timeout. Returns that reason.
pub async fn expect_signed_denial_of<T>(
    errors: &mut AuthErrors,
    who: &str,
    connect: impl std::future::Future<Output = Result<T, ClientError>>,
) -> String {
    let started = tokio::time::Instant::now();
    let r = connect.await.map(|_| "admitted");
    let took = started.elapsed();
    assert!(matches!(r, Err(ClientError::NotAuthorized)), "{who}: expected a denial, got {r:?}");
    let reason = errors.next_reason_about(who, Duration::from_secs(3)).await;
    let reason = reason.unwrap_or_else(|| panic!("no auth error advisory about {who}"));
    assert!(reason.contains(SIGNED_DENIAL), "not a signed denial: {reason:?} after {took:?}");
    assert!(took < DENIAL_WITHIN, "denial took {took:?} ({reason})");
    reason[reason.find(SIGNED_DENIAL).unwrap() + SIGNED_DENIAL.len()..].to_string()
}
