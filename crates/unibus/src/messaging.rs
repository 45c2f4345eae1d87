//! Sending end-to-end encrypted messages on the data plane: direct
//! messages and room messages sealed with [`unibus_proto::e2e`] for every
//! checked device of their recipients (receiving is [`crate::Inbox`]).

use crate::{Client, ClientError};
use unibus_proto::e2e::{self, Addressing, Kind, Recipient, Sender};
use unibus_proto::subjects;

/// Now, in unix milliseconds (envelope times).
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Client {
    /// The checked devices of an active account, to seal to.
    async fn recipients_of(&self, account: &str) -> Result<Option<Vec<Recipient>>, ClientError> {
        let set = self.device_set(account).await?;
        if !set.active {
            return Ok(None);
        }
        Ok(Some(set.recipients()?).filter(|r| !r.is_empty()))
    }

    /// Seals a version-2 envelope from this device and publishes it on
    /// `to.subject`; returns its id.
    async fn seal_and_publish(
        &self,
        to: &Addressing<'_>,
        recipients: &[Recipient],
        body: &[u8],
    ) -> Result<String, ClientError> {
        let sender = Sender { device: &self.identity.signing, account: self.account() };
        let env = e2e::seal_v2(&sender, to, recipients, body, now_ms())?;
        let raw = serde_json::to_vec(&env).map_err(|e| ClientError::decode(to.subject, e))?;
        self.publish_checked(to.subject, raw).await?;
        Ok(env.id)
    }

    /// Sends an end-to-end encrypted direct message to every active device
    /// of account `to`, then a copy (naming `to`) to this account's other
    /// active devices; returns the message's id. Every device's binding is
    /// verified before anything is sealed.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.user.lookup`: `not_found` for
    /// an unknown user, `bad_request` for a malformed key;
    /// [`ClientError::Inactive`] for a revoked user (or one without an
    /// active device), [`ClientError::Device`] for a device whose binding
    /// does not verify or whose `kex_pub` changed (nothing is sent),
    /// [`ClientError::Seal`] for a weak key, [`ClientError::PermissionDenied`]
    /// (a guest), [`ClientError::Request`] when a publish fails.
    pub async fn send_dm(&self, to: &str, body: &[u8]) -> Result<String, ClientError> {
        let to = to.to_ascii_lowercase();
        let recipients = self.recipients_of(&to).await?.ok_or_else(|| ClientError::Inactive(to.clone()))?;
        let mine = match to == self.account() {
            true => Vec::new(),
            false => self.own_other_devices().await?,
        };
        let subject = subjects::dm(&to);
        let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
        let id = self.seal_and_publish(&addr, &recipients, body).await?;
        if !mine.is_empty() {
            let own = subjects::dm(self.account());
            let addr = Addressing { kind: Kind::Dm, subject: &own, room: None, peer: Some(&to) };
            self.seal_and_publish(&addr, &mine, body).await?;
        }
        Ok(id)
    }

    /// This account's other active devices (checked like any contact's).
    async fn own_other_devices(&self) -> Result<Vec<Recipient>, ClientError> {
        let all = self.recipients_of(self.account()).await?.unwrap_or_default();
        Ok(all.into_iter().filter(|r| r.sign_pub != self.sign_pub()).collect())
    }

    /// Sends an end-to-end encrypted message to every active device of
    /// every active member of a room (this account included); returns its
    /// id.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.get` (`not_found` for an
    /// unknown room, `forbidden` when not a member, `bad_request`) and
    /// `unibus.user.lookup`; [`ClientError::Device`] for a refused device
    /// (nothing is sent); [`ClientError::Seal`] for a weak key or no
    /// active member; [`ClientError::PermissionDenied`] when the room
    /// subject is not granted (a guest, or a member added since this
    /// connection was made), [`ClientError::Request`].
    pub async fn send_room(&self, room: &str, body: &[u8]) -> Result<String, ClientError> {
        let room = self.get_room(room).await?;
        let mut recipients = Vec::new();
        for m in &room.members {
            recipients.extend(self.recipients_of(&m.to_hex()).await?.unwrap_or_default());
        }
        let subject = subjects::room_msg(&room.id);
        let addr = Addressing { kind: Kind::Room, subject: &subject, room: Some(&room.id), peer: None };
        self.seal_and_publish(&addr, &recipients, body).await
    }
}
