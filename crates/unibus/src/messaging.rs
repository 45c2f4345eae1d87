//! End-to-end encrypted messaging on the data plane: direct messages and
//! room messages sealed with [`unibus_proto::e2e`], and an [`Inbox`] that yields
//! verified, decrypted messages and reports every rejected one. DMs whose
//! verified sender is on this identity's block list (loaded from the
//! service when the inbox opens, after every reconnect, and before a DM
//! when older than [`super::BLOCKS_MAX_AGE`], see
//! [`Client::set_blocks_max_age`]) are dropped and reported as
//! [`Incoming::Dropped`].

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::SelectAll;
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc};

use crate::events::is_authorization_violation;
use crate::{Client, ClientError, Event};
use unibus_proto::e2e::{self, Addressing, Kind, Opened, Receiver, Recipient, Reject, ReplayGuard, Sender};
use unibus_proto::subjects;
use unibus_proto::wire::RoomListRequest;

/// What the inbox yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A verified, decrypted message from an active device of the sender's
    /// account. A DM whose [`Opened::sent_to`] is set is this account's
    /// own, sent from another of its devices to that account.
    Message(Opened),
    /// A message that was dropped, and why.
    Rejected {
        /// Where it arrived.
        subject: String,
        /// Why it was refused.
        reason: e2e::Reject,
    },
    /// A verified DM from a key this identity has blocked: dropped, its
    /// body not delivered. Not an error.
    Dropped {
        /// Where it arrived.
        subject: String,
        /// The blocked sender's `sign_pub` hex.
        from: String,
    },
    /// The connection is gone for good (for example: revoked).
    Closed(ClientError),
}

/// A [`Stream`] of incoming messages, rejections and finally the closure
/// ([`Incoming::Closed`]), after which it ends; read it with
/// [`StreamExt::next`](futures::StreamExt::next). Stops its task when
/// dropped.
pub struct Inbox {
    rx: mpsc::Receiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for Inbox {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
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
            recipients.extend(self.recipients_of(m).await?.unwrap_or_default());
        }
        let subject = subjects::room_msg(&room.id);
        let addr = Addressing { kind: Kind::Room, subject: &subject, room: Some(&room.id), peer: None };
        self.seal_and_publish(&addr, &recipients, body).await
    }

    async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, ClientError> {
        let sub = self.nats.subscribe(subject.clone()).await;
        sub.map_err(|e| ClientError::transport(&subject, e))
    }

    async fn all_rooms(&self) -> Result<Vec<String>, ClientError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_rooms(&RoomListRequest { limit: Some(1000), cursor }).await?;
            out.extend(page.rooms.into_iter().map(|r| r.id));
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Subscribes this account's DM subject and every room it is in (and,
    /// after each reconnect, rooms it joined since). A message is yielded
    /// only when its sending device is an active device of the sender's
    /// active account with a verifying binding (looked up, see
    /// [`Client::set_devices_max_age`]); copies of what this account sent
    /// from its other devices arrive as messages from this account with
    /// [`Opened::sent_to`] naming the peer.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.list` or
    /// `unibus.block.list` (`forbidden` for a guest or a revoked user),
    /// [`ClientError::PermissionDenied`], [`ClientError::Request`] when a
    /// subscribe, flush or request fails.
    pub async fn inbox(&self) -> Result<Inbox, ClientError> {
        let mut subs = SelectAll::new();
        subs.push(self.subscribe(subjects::dm(self.account())).await?);
        // unibusd's notices of this account's devices (trusted: only it may
        // publish there): a sibling added a moment ago must not be refused.
        subs.push(self.subscribe(subjects::device_notice(self.account())).await?);
        let mut joined = HashSet::new();
        for room in self.all_rooms().await? {
            subs.push(self.subscribe(subjects::room_msg(&room)).await?);
            joined.insert(room);
        }
        self.nats.flush().await.map_err(|e| ClientError::transport("flush", e))?;
        self.block_list().await?;
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(pump(self.clone(), subs, joined, self.events(), tx));
        Ok(Inbox { rx, task })
    }
}

async fn pump(
    client: Client,
    mut subs: SelectAll<async_nats::Subscriber>,
    mut joined: HashSet<String>,
    mut events: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Incoming>,
) {
    let mut guard = ReplayGuard::default();
    let dm_subject = subjects::dm(client.account());
    let notice_subject = subjects::device_notice(client.account());
    loop {
        tokio::select! {
            msg = subs.next() => {
                let Some(msg) = msg else { return };
                let subject = msg.subject.to_string();
                if subject == notice_subject {
                    client.forget_device_set(client.account());
                    continue;
                }
                if subject == dm_subject && client.blocks_stale() {
                    // On failure the copy loaded before stays in force.
                    let _ = client.block_list().await;
                }
                let Some(item) = judge(&client, &msg.payload, subject, &mut guard).await else { continue };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            event = events.recv() => match event {
                Ok(e) if is_authorization_violation(&e) => {
                    let _ = tx.send(Incoming::Closed(ClientError::NotAuthorized)).await;
                    return;
                }
                Ok(Event::Connected) => {
                    // The block list may have changed elsewhere; on failure
                    // the copy loaded before stays in force.
                    let _ = client.block_list().await;
                    // Membership may have changed (that is why we were kicked).
                    if let Ok(rooms) = client.all_rooms().await {
                        for room in rooms {
                            if joined.contains(&room) {
                                continue;
                            }
                            if let Ok(sub) = client.nats.subscribe(subjects::room_msg(&room)).await {
                                subs.push(sub);
                                joined.insert(room);
                            }
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Opens one message and checks its sender's device; what the inbox
/// yields for it, or nothing for this device's own DM copy coming back.
async fn judge(client: &Client, raw: &[u8], subject: String, guard: &mut ReplayGuard) -> Option<Incoming> {
    let me =
        Receiver { account: client.account(), device: client.sign_pub(), kex_secret: &client.identity.kex };
    let opened = match e2e::open_as(raw, &subject, &me, guard, now_ms()) {
        Ok(opened) => opened,
        Err(Reject::NotForMe) if is_own_copy(raw, client) => return None,
        Err(reason) => return Some(Incoming::Rejected { subject, reason }),
    };
    if let Err(reason) = client.check_sender(&opened.from, &opened.device).await {
        return Some(Incoming::Rejected { subject, reason });
    }
    if opened.kind == Kind::Dm && opened.peer.is_none() && client.is_blocked(&opened.from) {
        return Some(Incoming::Dropped { subject, from: opened.from });
    }
    Some(Incoming::Message(opened))
}

/// A copy this very device sealed for its account's other devices (it
/// arrives on the account's DM subject, which this device reads too). Only
/// asked after the signature verified, so `device` is really this one.
fn is_own_copy(raw: &[u8], client: &Client) -> bool {
    let Ok(env) = serde_json::from_slice::<e2e::Envelope>(raw) else { return false };
    env.peer.is_some() && env.device.as_deref() == Some(client.sign_pub())
}
