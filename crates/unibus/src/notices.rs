//! Notices unibusd sends to an account: a device added to it or revoked
//! from it (docs/protocol.md section 8), so that every other device of the
//! person learns of it within moments and can show it.

use futures::{Stream, StreamExt as _};

use crate::{Client, ClientError};
use unibus_proto::model::Device;
use unibus_proto::subjects;
use unibus_proto::wire::DeviceNotice;

impl Client {
    /// Device records of this identity's account as they change: an added
    /// device (status `active`) or a revoked one. Notices that do not
    /// decode are skipped.
    ///
    /// # Errors
    /// [`ClientError::Request`] when the subscription cannot be made.
    pub async fn device_notices(&self) -> Result<impl Stream<Item = Device> + Send + 'static, ClientError> {
        let subject = subjects::device_notice(&self.identity.account_hex());
        let sub =
            self.nats.subscribe(subject.clone()).await.map_err(|e| ClientError::transport(&subject, e))?;
        Ok(sub.filter_map(|msg| async move {
            serde_json::from_slice::<DeviceNotice>(&msg.payload).ok().map(|n| n.device)
        }))
    }
}
