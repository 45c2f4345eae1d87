//! Notices unibusd publishes to accounts on the data plane (not replies):
//! a device added to or revoked from an account, to that account's devices,
//! and a device or account revoked, to everyone (docs/protocol.md section
//! 8). Every notice carries the `Unibus-Notice` header, which replies never
//! carry: a requester chooses its reply subject, so a reply can be aimed at
//! a notice subject, and clients tell the two apart by that header alone.
//! Best effort: the write a notice announces stands either way.

use async_nats::HeaderMap;
use tracing::warn;

use unibus_proto::ids::Key;
use unibus_proto::records::Device;
use unibus_proto::subjects;
use unibus_proto::wire::{DeviceNotice, RevokedNotice};

/// Publishes notices to accounts on the data plane (docs/protocol.md
/// section 8). Best effort: the write it announces stands either way.
#[derive(Clone)]
pub struct Notices {
    client: async_nats::Client,
}

impl Notices {
    /// Notices published through `client` (unibusd's own connection, in
    /// the account that exports `unibus.notice.>`).
    pub fn new(client: async_nats::Client) -> Notices {
        Notices { client }
    }

    /// Announces `device` (after an add or a revoke) to its account.
    pub async fn device_changed(&self, device: &Device) {
        let notice = DeviceNotice { device: device.clone() };
        let subject = subjects::device_notice(&device.account.to_hex());
        self.publish(subject, subjects::NOTICE_DEVICES, &notice).await;
    }

    /// Announces to everyone that `device` of `account` was revoked, or
    /// (`device` `None`) that the account was revoked or deleted, so that
    /// contacts look its devices up again before trusting another message
    /// from it.
    pub async fn revoked(&self, account: Key, device: Option<Key>) {
        let notice = RevokedNotice { account, device };
        self.publish(subjects::revoked_notice(&account.to_hex()), subjects::NOTICE_REVOKED, &notice).await;
    }

    /// Publishes with the notice header, then flushes: the handler replies
    /// only after this returns, and the flush makes the server take the
    /// notice before the reply (whichever connection sends the reply), so
    /// whatever the caller does after the reply (a thief's message signed
    /// by the revoked device) reaches a subscriber after the notice.
    async fn publish(&self, subject: String, kind: &'static str, body: &impl serde::Serialize) {
        let Ok(body) = serde_json::to_vec(body) else { return };
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HDR_NOTICE, kind);
        if let Err(e) = self.client.publish_with_headers(subject, headers, body.into()).await {
            warn!(error = %e, "notice not published");
            return;
        }
        if let Err(e) = self.client.flush().await {
            warn!(error = %e, "notice not flushed");
        }
    }
}
