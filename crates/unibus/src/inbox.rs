//! Receiving: an [`Inbox`] that reads this account's DM subject, its rooms
//! and unibusd's notices, and yields verified, decrypted messages and
//! every rejected envelope.
//!
//! Nothing that arrives is trusted for what it claims to be. A requester
//! chooses its reply subject and nats-server does not check it, so
//! unibusd's replies can be aimed at a DM, room or notice subject
//! (docs/protocol.md section 2). So: traffic on a DM or room subject that
//! is no envelope (a reply, any other JSON) yields nothing and is only
//! counted ([`Inbox::ignored`]); a notice counts only with the
//! `Unibus-Notice` header that replies never carry, and then only as a
//! hint to look a device set up again (the own account's on a devices
//! notice, a contact's on a revoked notice), so that a device revoked a
//! moment ago is not trusted from a cached set. Notices are read before
//! messages that arrived after them. A message's `(from, id)` is recorded
//! against replays only once it was accepted, sender check included, so a
//! forged envelope cannot use up a real message's id.
//!
//! DMs whose verified sender is on this identity's block list (loaded from
//! the service when the inbox opens, after every reconnect, and before a
//! DM when older than [`crate::BLOCKS_MAX_AGE`], see
//! [`Client::set_blocks_max_age`]) are dropped and reported as
//! [`Incoming::Dropped`].

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::stream::SelectAll;
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use crate::events::is_authorization_violation;
use crate::messaging::now_ms;
use crate::notices::{is_notice, is_reply};
use crate::{Client, ClientError, Event};
use unibus_proto::e2e::{self, Kind, Opened, Receiver, Reject, ReplayGuard};
use unibus_proto::subjects;
use unibus_proto::wire::{RevokedNotice, RoomListRequest};

/// What the inbox yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A verified, decrypted message from an active device of the sender's
    /// account. A DM whose [`Opened::sent_to`] is set is this account's
    /// own, sent from another of its devices to that account.
    Message(Opened),
    /// An envelope that was refused, and why. (Traffic that is no envelope
    /// at all is not reported; see [`Inbox::ignored`].)
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
    ignored: Arc<AtomicU64>,
}

impl Inbox {
    /// How many messages this inbox received and ignored without yielding
    /// anything: traffic on the DM or room subjects that is no envelope
    /// (such as a control-plane reply a requester aimed there), and
    /// messages on the notice subjects without the notice header.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
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

impl Client {
    async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, ClientError> {
        let sub = self.nats.subscribe(subject.clone()).await;
        sub.map_err(|e| ClientError::transport(&subject, e))
    }

    async fn all_rooms(&self) -> Result<Vec<String>, ClientError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_rooms(&RoomListRequest { limit: Some(1000), cursor }).await?;
            out.extend(page.rooms.into_iter().map(|r| r.id.to_string()));
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Subscribes this account's DM subject and every room it is in (and,
    /// after each reconnect, rooms it joined since), and the notices of
    /// revoked devices. A message is yielded only when its sending device
    /// is an active device of the sender's active account with a verifying
    /// binding (looked up, see [`Client::set_devices_max_age`]; a device
    /// revoked since is refused at once, whatever that age); copies of
    /// what this account sent from its other devices arrive as messages
    /// from this account with [`Opened::sent_to`] naming the peer.
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.list` or
    /// `unibus.block.list` (`forbidden` for a guest or a revoked user),
    /// [`ClientError::PermissionDenied`], [`ClientError::Request`] when a
    /// subscribe, flush or request fails.
    pub async fn inbox(&self) -> Result<Inbox, ClientError> {
        let mut subs = SelectAll::new();
        subs.push(self.subscribe(subjects::dm(self.account())).await?);
        let mut notices = SelectAll::new();
        notices.push(self.subscribe(subjects::device_notice(self.account())).await?);
        notices.push(self.subscribe(subjects::REVOKED_NOTICE_ALL.to_string()).await?);
        let mut joined = HashSet::new();
        for room in self.all_rooms().await? {
            subs.push(self.subscribe(subjects::room_msg(&room)).await?);
            joined.insert(room);
        }
        self.nats.flush().await.map_err(|e| ClientError::transport("flush", e))?;
        self.block_list().await?;
        let (tx, rx) = mpsc::channel(256);
        let ignored = Arc::new(AtomicU64::new(0));
        let pump = Pump {
            client: self.clone(),
            joined,
            guard: ReplayGuard::default(),
            ignored: ignored.clone(),
            tx,
        };
        let task = tokio::spawn(pump.run(subs, notices, self.events()));
        Ok(Inbox { rx, task, ignored })
    }
}

/// The inbox's task and what it keeps.
struct Pump {
    client: Client,
    /// Rooms subscribed.
    joined: HashSet<String>,
    /// `(from, id)` of the messages accepted.
    guard: ReplayGuard,
    ignored: Arc<AtomicU64>,
    tx: mpsc::Sender<Incoming>,
}

impl Pump {
    async fn run(
        mut self,
        mut subs: SelectAll<async_nats::Subscriber>,
        mut notices: SelectAll<async_nats::Subscriber>,
        mut events: broadcast::Receiver<Event>,
    ) {
        let dm_subject = subjects::dm(self.client.account());
        loop {
            // Biased: a notice that arrived before a message (unibusd
            // publishes it before its reply, so before anything the
            // requester does next) is read before that message.
            tokio::select! {
                biased;
                Some(msg) = notices.next() => self.notice(&msg),
                event = events.recv() => match event {
                    Ok(e) if is_authorization_violation(&e) => {
                        let _ = self.tx.send(Incoming::Closed(ClientError::NotAuthorized)).await;
                        return;
                    }
                    Ok(Event::Connected) => self.reconnected(&mut subs).await,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                msg = subs.next() => {
                    let Some(msg) = msg else { return };
                    let subject = msg.subject.to_string();
                    if subject == dm_subject && self.client.blocks_stale() {
                        // On failure the copy loaded before stays in force.
                        let _ = self.client.block_list().await;
                    }
                    let Some(item) = self.judge(&msg, subject).await else { continue };
                    if self.tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// After a reconnect: the block list and the rooms may have changed
    /// (a membership change is why we were kicked). On failure what was
    /// loaded before stays in force.
    async fn reconnected(&mut self, subs: &mut SelectAll<async_nats::Subscriber>) {
        let _ = self.client.block_list().await;
        let Ok(rooms) = self.client.all_rooms().await else { return };
        for room in rooms {
            if self.joined.contains(&room) {
                continue;
            }
            if let Ok(sub) = self.client.nats.subscribe(subjects::room_msg(&room)).await {
                subs.push(sub);
                self.joined.insert(room);
            }
        }
    }

    fn ignore(&self, subject: &str, why: &'static str) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
        debug!(subject, why, "inbox ignored a message");
    }

    /// A message on a notice subject: with the header, forget the device
    /// set it names (the next message from that account is judged on a
    /// fresh lookup); without, it is no notice (a reply aimed there).
    fn notice(&self, msg: &async_nats::Message) {
        let subject = msg.subject.as_str();
        if subject == subjects::device_notice(self.client.account()) {
            match is_notice(msg, subjects::NOTICE_DEVICES) {
                true => self.client.forget_device_set(self.client.account()),
                false => self.ignore(subject, "no devices notice header"),
            }
            return;
        }
        if !is_notice(msg, subjects::NOTICE_REVOKED) {
            return self.ignore(subject, "no revoked notice header");
        }
        // The body names the account; should it not decode, the subject
        // does (forgetting too much only costs a lookup).
        match serde_json::from_slice::<RevokedNotice>(&msg.payload) {
            Ok(notice) => self.client.forget_device_set(&notice.account.to_hex()),
            Err(_) => {
                let account = subject.rsplit('.').next().unwrap_or_default();
                self.client.forget_device_set(account);
            }
        }
    }

    /// Opens one message and checks its sender's device; what the inbox
    /// yields for it, or nothing for traffic that is no envelope and for
    /// this device's own DM copy coming back.
    async fn judge(&mut self, msg: &async_nats::Message, subject: String) -> Option<Incoming> {
        if is_reply(msg) {
            self.ignore(&subject, "a control-plane reply");
            return None;
        }
        let client = &self.client;
        let me = Receiver {
            account: client.account(),
            device: client.sign_pub(),
            kex_secret: &client.identity.kex,
        };
        let raw = &msg.payload;
        let opened = match e2e::open_as(raw, &subject, &me, &self.guard, now_ms()) {
            Ok(opened) => opened,
            Err(Reject::NotEnvelope) => {
                self.ignore(&subject, "not an envelope");
                return None;
            }
            Err(Reject::NotForMe) if is_own_copy(raw, client) => return None,
            Err(reason) => return Some(Incoming::Rejected { subject, reason }),
        };
        if let Err(reason) = client.check_sender(&opened.from, &opened.device).await {
            return Some(Incoming::Rejected { subject, reason });
        }
        // Accepted: only now does its (from, id) count against replays.
        if let Err(reason) = self.guard.record(&opened, now_ms()) {
            return Some(Incoming::Rejected { subject, reason });
        }
        if opened.kind == Kind::Dm && opened.peer.is_none() && client.is_blocked(&opened.from) {
            return Some(Incoming::Dropped { subject, from: opened.from });
        }
        Some(Incoming::Message(opened))
    }
}

/// A copy this very device sealed for its account's other devices (it
/// arrives on the account's DM subject, which this device reads too). Only
/// asked after the signature verified, so `device` is really this one.
fn is_own_copy(raw: &[u8], client: &Client) -> bool {
    let Ok(env) = serde_json::from_slice::<e2e::Envelope>(raw) else { return false };
    env.peer.is_some() && env.device.as_deref() == Some(client.sign_pub())
}
