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
use unibus_proto::e2e::{self, Kind, Opened, Recipient, ReplayGuard, SealError};
use unibus_proto::keys;
use unibus_proto::model::UserStatus;
use unibus_proto::subjects;
use unibus_proto::wire::RoomListRequest;

/// What the inbox yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A verified, decrypted message.
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
    /// The recipient `sign_pub` if it is an active user (its `kex_pub` is
    /// checked by [`e2e::seal`]).
    async fn recipient(&self, sign_pub: &str) -> Result<Option<Recipient>, ClientError> {
        let user = self.lookup(sign_pub).await?;
        if user.status != UserStatus::Active {
            return Ok(None);
        }
        let Some(kex_pub) = user.kex_pub.as_deref() else { return Ok(None) };
        let kex_pub = keys::parse_hex32("kex_pub", kex_pub)
            .map_err(|_| SealError::WeakKey(user.sign_pub.clone(), "kex_pub is not 32 bytes of hex"))?;
        Ok(Some(Recipient { sign_pub: user.sign_pub, kex_pub }))
    }

    /// Sends an end-to-end encrypted direct message; returns its id.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.user.lookup`: `not_found` for
    /// an unknown user, `bad_request` for a malformed key;
    /// [`ClientError::Inactive`] for a revoked user, [`ClientError::Seal`]
    /// for a weak key, [`ClientError::PermissionDenied`] (a guest),
    /// [`ClientError::Request`] when the publish fails.
    pub async fn send_dm(&self, to: &str, body: &[u8]) -> Result<String, ClientError> {
        let to = to.to_ascii_lowercase();
        let recipient = self.recipient(&to).await?.ok_or_else(|| ClientError::Inactive(to.clone()))?;
        let subject = subjects::dm(&to);
        let env = e2e::seal(&self.identity.signing, Kind::Dm, &subject, None, &[recipient], body, now_ms())?;
        let raw = serde_json::to_vec(&env).map_err(|e| ClientError::decode(&subject, e))?;
        self.publish_checked(&subject, raw).await?;
        Ok(env.id)
    }

    /// Sends an end-to-end encrypted message to every active member of a
    /// room (this identity included); returns its id.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.get` (`not_found` for an
    /// unknown room, `forbidden` when not a member, `bad_request`) and
    /// `unibus.user.lookup`; [`ClientError::Seal`] for a weak key or no
    /// active member; [`ClientError::PermissionDenied`] when the room
    /// subject is not granted (a guest, or a member added since this
    /// connection was made), [`ClientError::Request`].
    pub async fn send_room(&self, room: &str, body: &[u8]) -> Result<String, ClientError> {
        let room = self.get_room(room).await?;
        let mut recipients = Vec::new();
        for m in &room.members {
            if let Some(r) = self.recipient(m).await? {
                recipients.push(r);
            }
        }
        let subject = subjects::room_msg(&room.id);
        let env = e2e::seal(
            &self.identity.signing,
            Kind::Room,
            &subject,
            Some(&room.id),
            &recipients,
            body,
            now_ms(),
        )?;
        let raw = serde_json::to_vec(&env).map_err(|e| ClientError::decode(&subject, e))?;
        self.publish_checked(&subject, raw).await?;
        Ok(env.id)
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

    /// Subscribes this identity's DM subject and every room it is in (and,
    /// after each reconnect, rooms it joined since).
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.list` or
    /// `unibus.block.list` (`forbidden` for a guest or a revoked user),
    /// [`ClientError::PermissionDenied`], [`ClientError::Request`] when a
    /// subscribe, flush or request fails.
    pub async fn inbox(&self) -> Result<Inbox, ClientError> {
        let mut subs = SelectAll::new();
        subs.push(self.subscribe(subjects::dm(self.sign_pub())).await?);
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
    let me = client.sign_pub().to_string();
    let dm_subject = subjects::dm(&me);
    loop {
        tokio::select! {
            msg = subs.next() => {
                let Some(msg) = msg else { return };
                let subject = msg.subject.to_string();
                if subject == dm_subject && client.blocks_stale() {
                    // On failure the copy loaded before stays in force.
                    let _ = client.block_list().await;
                }
                let item = match e2e::open(&msg.payload, &subject, &me, &client.identity.kex, &mut guard, now_ms()) {
                    Ok(opened) if opened.kind == Kind::Dm && client.is_blocked(&opened.from) => {
                        Incoming::Dropped { subject, from: opened.from }
                    }
                    Ok(opened) => Incoming::Message(opened),
                    Err(reason) => Incoming::Rejected { subject, reason },
                };
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
