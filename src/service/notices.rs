//! Notices unibusd publishes to accounts on the data plane (not replies):
//! a device added to or revoked from an account (docs/protocol.md section
//! 8). Best effort: the write a notice announces stands either way.

use tracing::warn;

use unibus_proto::subjects;

/// Publishes notices to accounts on the data plane (docs/protocol.md
/// section 8: a device added or revoked is announced to the account's
/// devices). Best effort: the write it announces stands either way.
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
    pub async fn device_changed(&self, device: &unibus_proto::model::Device) {
        let notice = unibus_proto::wire::DeviceNotice { device: device.clone() };
        let Ok(body) = serde_json::to_vec(&notice) else { return };
        let subject = subjects::device_notice(&device.account);
        if let Err(e) = self.client.publish(subject, body.into()).await {
            warn!(error = %e, "device notice not published");
        }
    }
}
