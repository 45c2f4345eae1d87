//! Live delivery of stored messages (docs/protocol.md section 10): once a
//! message is in the mail bucket, unibusd publishes its envelope on the
//! envelope's own subject with the `Unibus-Seq` header, so that devices
//! online get it at once and can tell it from what they fetch. AUTH
//! exports `unibus.msg.>` as a stream and APP imports it (nats.conf).
//! Best effort: the message is stored either way, and a device that
//! missed the live copy fetches it.

use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::warn;

use unibus_proto::subjects;

/// Publishes stored messages on their subjects.
#[derive(Clone)]
pub struct Delivery {
    client: async_nats::Client,
}

/// Room a fetch reply needs besides its envelopes (`{"messages":[...]}`,
/// each `{"seq":...,"envelope":...}`, `next`), and a live delivery
/// besides its envelope (the `Unibus-Seq` header): envelopes are held to
/// `max_payload` less this.
pub const FRAMING_BYTES: usize = 8 << 10;

impl Delivery {
    /// Delivery through `client` (unibusd's own connection in AUTH).
    pub fn new(client: async_nats::Client) -> Delivery {
        Delivery { client }
    }

    /// The largest envelope that can be stored (and fetched) in bytes:
    /// the `max_payload` of the server unibusd is connected to (NATS'
    /// default before it first said) less [`FRAMING_BYTES`].
    pub fn max_envelope(&self) -> usize {
        self.client.max_payload().saturating_sub(FRAMING_BYTES)
    }

    /// Publishes `envelope`, stored at `seq`, on `subject`.
    pub async fn publish(&self, subject: String, seq: u64, envelope: Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HDR_SEQ, seq.to_string().as_str());
        if let Err(e) = self.client.publish_with_headers(subject, headers, envelope).await {
            warn!(error = %e, seq, "stored message not delivered live");
        }
    }
}
