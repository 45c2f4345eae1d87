//! Notices unibusd sends to an account: a device added to it or revoked
//! from it (docs/protocol.md section 8), so that every other device of the
//! person learns of it within moments and can show it.
//!
//! A notice is believed only as far as it must be: it counts only with the
//! `Unibus-Notice` header (which unibusd's replies never carry, so a reply
//! a requester aimed at the notice subject is not one) and only on this
//! account's own subject, and even then it is only a hint: the record this
//! client shows comes from `unibus.device.list`, not from the notice.

use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use tracing::debug;

use crate::{Client, ClientError};
use unibus_proto::records::Device;
use unibus_proto::subjects;

/// True when `msg` carries the notice header with value `kind`.
pub(crate) fn is_notice(msg: &async_nats::Message, kind: &str) -> bool {
    let value = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_NOTICE));
    value.is_some_and(|v| v.as_str() == kind)
}

/// True when `msg` is a control-plane error reply (it carries the
/// micro-service error headers), wherever it arrived.
pub(crate) fn is_reply(msg: &async_nats::Message) -> bool {
    let Some(h) = &msg.headers else { return false };
    h.get(subjects::HDR_SERVICE_ERROR).is_some() || h.get(subjects::HDR_SERVICE_ERROR_CODE).is_some()
}

/// The one thing read from a device notice's body: which device it names.
#[derive(Deserialize)]
struct Hint {
    device: HintDevice,
}

#[derive(Deserialize)]
struct HintDevice {
    device: String,
}

impl Client {
    /// Device records of this identity's account as they change: an added
    /// device (status `active`) or a revoked one. Only genuine notices
    /// count (the notice header, this account's subject); each makes the
    /// client read `unibus.device.list` and yields the named device's
    /// record from that list. A notice that does not decode, names a
    /// device the list does not have, or whose list cannot be read yields
    /// nothing. Each notice also makes the inbox look this account's
    /// devices up again before it trusts another message from them.
    ///
    /// # Errors
    /// [`ClientError::Request`] when the subscription cannot be made.
    pub async fn device_notices(&self) -> Result<impl Stream<Item = Device> + Send + 'static, ClientError> {
        let subject = subjects::device_notice(self.account());
        let sub =
            self.nats.subscribe(subject.clone()).await.map_err(|e| ClientError::transport(&subject, e))?;
        let client = self.clone();
        Ok(sub.filter_map(move |msg| {
            let client = client.clone();
            async move { client.device_from_notice(&msg).await }
        }))
    }

    /// The current record of the device a genuine notice names.
    async fn device_from_notice(&self, msg: &async_nats::Message) -> Option<Device> {
        let subject = msg.subject.as_str();
        if subject != subjects::device_notice(self.account()) || !is_notice(msg, subjects::NOTICE_DEVICES) {
            debug!(subject, "not a device notice; ignored");
            return None;
        }
        self.forget_device_set(self.account());
        let Ok(hint) = serde_json::from_slice::<Hint>(&msg.payload) else {
            debug!(subject, "device notice does not decode; ignored");
            return None;
        };
        let devices = match self.list_devices().await {
            Ok(devices) => devices,
            Err(e) => {
                debug!(subject, error = %e, "device list unreadable; notice not shown");
                return None;
            }
        };
        let found = devices.into_iter().find(|d| d.device == hint.device.device);
        if found.is_none() {
            debug!(subject, device = %hint.device.device, "notice names no device of this account; ignored");
        }
        found
    }
}
