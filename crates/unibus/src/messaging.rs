//! Sending end-to-end encrypted messages: direct messages and room
//! messages sealed with [`unibus_proto::e2e`] for every checked device of
//! their recipients, stored with `unibus.mail.send` so that devices that
//! are offline get them when they connect (docs/protocol.md section 10),
//! or published live only ([`Client::send_dm_live`]). A send that gets no
//! answer is sent again, the same envelope ([`SEND_ATTEMPTS`]). Receiving
//! is [`crate::Inbox`].

use crate::{Client, ClientError};
use unibus_proto::e2e::{Addressing, Envelope, Kind, Recipient};
use unibus_proto::endpoint as ep;
use unibus_proto::error::Error;
use unibus_proto::mail::{Channel, MailFetchReply, MailFetchRequest, MailSendRequest};
use unibus_proto::subjects;

/// How many times the sending methods send one envelope to
/// `unibus.mail.send` when no answer comes.
pub const SEND_ATTEMPTS: u32 = 3;

/// The pause before the second attempt (then twice as long).
const SEND_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Now, in unix milliseconds (envelope times).
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A message sent through the mail store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message's id (with the sending account, its replay key).
    pub id: String,
    /// Where it was stored: its `seq` in the mail bucket.
    pub seq: u64,
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

    /// Seals a version-2 envelope from this device for `recipients`.
    fn seal(
        &self,
        to: &Addressing<'_>,
        recipients: &[Recipient],
        body: &[u8],
    ) -> Result<Envelope, ClientError> {
        Ok(self.identity.seal(to, recipients, body, now_ms())?)
    }

    /// Seals and publishes on `to.subject` (delivered live only); returns
    /// the message's id.
    async fn seal_and_publish(
        &self,
        to: &Addressing<'_>,
        recipients: &[Recipient],
        body: &[u8],
    ) -> Result<String, ClientError> {
        let env = self.seal(to, recipients, body)?;
        let raw = serde_json::to_vec(&env).map_err(|e| ClientError::decode(to.subject, e))?;
        self.publish_checked(to.subject, raw).await?;
        Ok(env.id)
    }

    /// Stores `envelope` with `unibus.mail.send` (unibusd delivers it live
    /// too); returns its `seq`. Sending the same envelope again (a retry
    /// after a lost reply) stores it once and answers the same `seq`.
    ///
    /// # Errors
    /// [`ClientError::Service`]: `bad_request` (not a version-2 envelope
    /// of this device, a bad signature, a `ts` off by more than 5 minutes,
    /// another envelope with the same id), `not_found`, `forbidden`
    /// (revoked or blocking recipient, not a room member),
    /// `stale_devices`, `limit_reached`.
    pub async fn mail_send(&self, envelope: &Envelope) -> Result<u64, ClientError> {
        let req = MailSendRequest { envelope: envelope.clone() };
        Ok(self.request::<ep::MailSend>(&req).await?.seq)
    }

    /// One page of the stored messages of `channel` sealed for this
    /// device, with `seq` greater than `after` (at most `limit`, 1..=100,
    /// default 100). Fetch again from `next` until it is `None`.
    ///
    /// # Errors
    /// [`ClientError::Service`]: `bad_request`, `not_found` (no such
    /// room), `forbidden` (not a member, not an active device).
    pub async fn mail_fetch(
        &self,
        channel: &Channel,
        after: u64,
        limit: Option<u64>,
    ) -> Result<MailFetchReply, ClientError> {
        let req = MailFetchRequest { channel: channel.clone(), after: Some(after), limit };
        self.request::<ep::MailFetch>(&req).await
    }

    /// Seals `body` for `recipients` and stores it; when unibusd answers
    /// `stale_devices` (a device was added or revoked since the lookup),
    /// seals again for what `again` looks up, once.
    async fn seal_and_store<F, Fut>(
        &self,
        to: &Addressing<'_>,
        body: &[u8],
        recipients: Vec<Recipient>,
        again: F,
    ) -> Result<Sent, ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Recipient>, ClientError>>,
    {
        let env = self.seal(to, &recipients, body)?;
        match self.store_envelope(&env).await {
            Ok(seq) => return Ok(Sent { id: env.id, seq }),
            Err(ClientError::Service(Error::StaleDevices(_))) => {}
            Err(e) => return Err(e),
        }
        let env = self.seal(to, &again().await?, body)?;
        Ok(Sent { seq: self.store_envelope(&env).await?, id: env.id })
    }

    /// [`Client::mail_send`], sent again when no answer came (a timeout,
    /// no responders, a dropped connection: unibusd may have stored it
    /// and stopped before answering), up to [`SEND_ATTEMPTS`] times in
    /// all: the same envelope is stored once and every answer carries its
    /// `seq`.
    async fn store_envelope(&self, envelope: &Envelope) -> Result<u64, ClientError> {
        let mut attempt = 1;
        loop {
            match self.mail_send(envelope).await {
                Err(ClientError::Request { .. }) if attempt < SEND_ATTEMPTS => {
                    tokio::time::sleep(SEND_RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Sends an end-to-end encrypted direct message to every active device
    /// of account `to`, then a copy (naming `to`) to this account's other
    /// active devices, each stored with `unibus.mail.send` (so devices
    /// that are offline get it when they connect) and delivered live by
    /// unibusd; returns the message's id and `seq`. Every device's binding
    /// is verified before anything is sealed.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.user.lookup` (`not_found` for
    /// an unknown user, `bad_request` for a malformed key) and from
    /// `unibus.mail.send` (see [`Client::mail_send`]; `stale_devices` only
    /// when the devices changed again between the lookup made after a
    /// first `stale_devices` and the second send); [`ClientError::Inactive`]
    /// for a revoked user (or one without an active device),
    /// [`ClientError::Device`] for a device whose binding does not verify
    /// or whose `kex_pub` changed (nothing is sent), [`ClientError::Seal`]
    /// for a weak key, [`ClientError::PermissionDenied`] (a guest).
    pub async fn send_dm(&self, to: &str, body: &[u8]) -> Result<Sent, ClientError> {
        let to = to.to_ascii_lowercase();
        let theirs =
            || async { self.recipients_of(&to).await?.ok_or_else(|| ClientError::Inactive(to.clone())) };
        // Both sets are checked before anything is stored.
        let recipients = theirs().await?;
        let mine = match to == self.account() {
            true => Vec::new(),
            false => self.own_other_devices().await?,
        };
        let subject = subjects::dm(&to);
        let addr = Addressing { kind: Kind::Dm, subject: &subject, room: None, peer: None };
        let sent = self.seal_and_store(&addr, body, recipients, theirs).await?;
        // Skipped when this is the account's only active device.
        if !mine.is_empty() {
            let own = subjects::dm(self.account());
            let addr = Addressing { kind: Kind::Dm, subject: &own, room: None, peer: Some(&to) };
            self.seal_and_store(&addr, body, mine, || self.own_other_devices()).await?;
        }
        Ok(sent)
    }

    /// [`Client::send_dm`] published on the data plane only: delivered to
    /// the devices online now, never stored (docs/protocol.md section 6).
    ///
    /// # Errors
    /// As [`Client::send_dm`]; [`ClientError::Request`] when a publish
    /// fails.
    pub async fn send_dm_live(&self, to: &str, body: &[u8]) -> Result<String, ClientError> {
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
    /// every active member of a room (this account included), stored with
    /// `unibus.mail.send` and delivered live; returns its id and `seq`.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.get` (`not_found` for an
    /// unknown room, `forbidden` when not a member, `bad_request`),
    /// `unibus.user.lookup` and `unibus.mail.send`;
    /// [`ClientError::Device`] for a refused device (nothing is sent);
    /// [`ClientError::Seal`] for a weak key or no active member.
    pub async fn send_room(&self, room: &str, body: &[u8]) -> Result<Sent, ClientError> {
        let id = self.get_room(room).await?.id;
        let subject = subjects::room_msg(id.as_str());
        let addr = Addressing { kind: Kind::Room, subject: &subject, room: Some(id.as_str()), peer: None };
        let recipients = self.room_recipients(id.as_str()).await?;
        self.seal_and_store(&addr, body, recipients, || self.room_recipients(id.as_str())).await
    }

    /// [`Client::send_room`] published on the data plane only: delivered
    /// to the members' devices online now, never stored.
    ///
    /// # Errors
    /// As [`Client::send_room`]; [`ClientError::PermissionDenied`] when the
    /// room subject is not granted (a member added since this connection
    /// was made), [`ClientError::Request`].
    pub async fn send_room_live(&self, room: &str, body: &[u8]) -> Result<String, ClientError> {
        let id = self.get_room(room).await?.id;
        let recipients = self.room_recipients(id.as_str()).await?;
        let subject = subjects::room_msg(id.as_str());
        let addr = Addressing { kind: Kind::Room, subject: &subject, room: Some(id.as_str()), peer: None };
        self.seal_and_publish(&addr, &recipients, body).await
    }

    /// The checked devices of a room's active members, from a fresh read
    /// of the room.
    async fn room_recipients(&self, room: &str) -> Result<Vec<Recipient>, ClientError> {
        let room = self.get_room(room).await?;
        let mut recipients = Vec::new();
        for m in &room.members {
            recipients.extend(self.recipients_of(&m.to_hex()).await?.unwrap_or_default());
        }
        Ok(recipients)
    }
}
