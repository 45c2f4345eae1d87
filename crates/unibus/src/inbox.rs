//! Receiving: an [`Inbox`] that reads this account's DM subject, its rooms
//! and unibusd's notices, and yields verified, decrypted messages and
//! every rejected envelope: first what waited in the mail store while
//! this device was away ([`Incoming::Waited`], in `seq` order), then what
//! arrives live, without a gap or a duplicate (docs/protocol.md section
//! 10). It catches up when it opens, after every reconnect (it reads
//! nothing live from the moment it sees the connection drop until it has
//! caught up, for at most [`LIVE_HOLD_MAX`]), and every
//! [`CATCH_UP_EVERY`] (a message unibusd stored but could not publish, for
//! example when it stopped in between). What it hands over is recorded in
//! the client's mail state ([`Client::set_mail_state`]) as it is handed
//! over, so a restarted device does not see it again.
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

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::SelectAll;
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::events::is_authorization_violation;
use crate::messaging::now_ms;
use crate::notices::is_notice;
use crate::reader::{Item, Reader, Walk};
use crate::{Client, ClientError, Event};
use unibus_proto::e2e::{self, Opened};
use unibus_proto::ids::RoomId;
use unibus_proto::mail::Channel;
use unibus_proto::subjects;
use unibus_proto::wire::{RevokedNotice, RoomListRequest};

/// How often an open inbox catches up although its connection stayed up.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(300);

/// The longest an inbox holds live messages back after a reconnect while
/// its catch-up keeps failing (unibusd unreachable): after that it hands
/// them over anyway, and what waited follows once a catch-up succeeds.
pub const LIVE_HOLD_MAX: Duration = Duration::from_secs(30);

/// What the inbox yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A verified, decrypted message from an active device of the sender's
    /// account, as it arrived live. A DM whose [`Opened::sent_to`] is set
    /// is this account's own, sent from another of its devices to that
    /// account.
    Message(Opened),
    /// A message that waited in the mail store and was fetched when this
    /// device caught up, verified and decrypted like a live one; these
    /// come in `seq` order (across channels) before the live ones that
    /// follow them. [`Opened::ts`] is when it was sent.
    Waited {
        /// Its position in the mail bucket.
        seq: u64,
        /// The message.
        message: Opened,
    },
    /// An envelope that was refused, and why. (Traffic that is no envelope
    /// at all is not reported; see [`Inbox::ignored`].)
    Rejected {
        /// Where it arrived (for a stored one: its channel's subject).
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
/// dropped; a message is recorded in the mail state as the stream yields
/// it, so what it had fetched but not yielded yet comes again.
pub struct Inbox {
    rx: mpsc::Receiver<Item>,
    task: tokio::task::JoinHandle<()>,
    ignored: Arc<AtomicU64>,
    client: Client,
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
        loop {
            let Some(item) = std::task::ready!(self.rx.poll_recv(cx)) else { return Poll::Ready(None) };
            self.client.with_mail_state(|s| s.record(&item.handled, now_ms()));
            if let Some(incoming) = item.incoming {
                return Poll::Ready(Some(incoming));
            }
        }
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

    /// The ids of every room this account is in.
    pub(crate) async fn all_rooms(&self) -> Result<Vec<String>, ClientError> {
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
    /// revoked devices; then catches up (see the module docs). A message
    /// is yielded only when its sending device is an active device of the
    /// sender's active account with a verifying binding (looked up, see
    /// [`Client::set_devices_max_age`]; a device revoked since is refused
    /// at once, whatever that age, and so is a device revoked after it
    /// sent a message that waited); copies of what this account sent from
    /// its other devices arrive as messages from this account with
    /// [`Opened::sent_to`] naming the peer. An account made before signed
    /// device lists gets its first list here when this is its oldest
    /// active device ([`Client::sign_device_list`]).
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.list` or
    /// `unibus.block.list` (`forbidden` for a guest or a revoked user),
    /// [`ClientError::PermissionDenied`], [`ClientError::Request`] when a
    /// subscribe, flush or request fails. (A catch-up that fails is tried
    /// again in the background.)
    pub async fn inbox(&self) -> Result<Inbox, ClientError> {
        // An account made before lists gets its first one from its oldest
        // device as soon as that device listens (DESIGN section 11); best
        // effort: the account works without it, and a later inbox tries
        // again.
        if let Err(e) = self.sign_device_list().await {
            tracing::debug!(error = %e, "device list not signed on connect");
        }
        let mut subs = SelectAll::new();
        subs.push(self.subscribe(subjects::dm(self.account())).await?);
        let mut notices = SelectAll::new();
        notices.push(self.subscribe(subjects::device_notice(self.account())).await?);
        notices.push(self.subscribe(subjects::REVOKED_NOTICE_ALL.to_string()).await?);
        let mut channels = HashMap::from([(subjects::dm(self.account()), Channel::Dm)]);
        for room in self.all_rooms().await? {
            subs.push(self.subscribe(subjects::room_msg(&room)).await?);
            if let Ok(id) = RoomId::parse(&room) {
                channels.insert(subjects::room_msg(&room), Channel::Room(id));
            }
        }
        self.nats.flush().await.map_err(|e| ClientError::transport("flush", e))?;
        self.block_list().await?;
        let (tx, rx) = mpsc::channel(256);
        let reader = Reader::new(self);
        let ignored = reader.ignored.clone();
        let pump = Pump { reader, channels, tx, behind: Some(Instant::now()), retry: Duration::ZERO };
        let task = tokio::spawn(pump.run(subs, notices, self.events()));
        Ok(Inbox { rx, task, ignored, client: self.clone() })
    }
}

/// The inbox's task and what it keeps.
struct Pump {
    reader: Reader,
    /// The subjects subscribed for messages, and their mail channels.
    channels: HashMap<String, Channel>,
    tx: mpsc::Sender<Item>,
    /// Since when live messages are held back until a catch-up succeeds.
    behind: Option<Instant>,
    /// The wait before the next catch-up after one failed.
    retry: Duration,
}

/// Why the inbox task ends.
struct Gone;

impl Pump {
    async fn run(
        mut self,
        mut subs: SelectAll<async_nats::Subscriber>,
        mut notices: SelectAll<async_nats::Subscriber>,
        mut events: broadcast::Receiver<Event>,
    ) {
        let mut next_catch_up = Instant::now();
        loop {
            let hold = self.behind.is_some_and(|since| since.elapsed() < LIVE_HOLD_MAX);
            // Biased: a notice that arrived before a message (unibusd
            // publishes it before its reply, so before anything the
            // requester does next) is read before that message.
            tokio::select! {
                biased;
                Some(msg) = notices.next() => self.notice(&msg),
                event = events.recv() => match event {
                    Ok(e) if is_authorization_violation(&e) => {
                        let _ = self.tx.send(closed(ClientError::NotAuthorized)).await;
                        return;
                    }
                    Ok(Event::Disconnected) => {
                        self.behind.get_or_insert_with(Instant::now);
                    }
                    Ok(Event::Connected) => {
                        self.behind.get_or_insert_with(Instant::now);
                        self.reconnected(&mut subs).await;
                        next_catch_up = Instant::now();
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(next_catch_up) => {
                    if self.catch_up().await.is_err() {
                        return;
                    }
                    next_catch_up = Instant::now() + match self.behind {
                        Some(_) => self.retry,
                        None => CATCH_UP_EVERY,
                    };
                }
                msg = subs.next(), if !hold => {
                    let Some(msg) = msg else { return };
                    let channel = self.channels.get(msg.subject.as_str());
                    let Some(item) = self.reader.live(&msg, channel).await else { continue };
                    if self.tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Fetches what waited and hands it over; on a failed fetch stays
    /// behind and waits longer before the next try. `Err` when the inbox
    /// was dropped.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        let rooms: Vec<String> = self
            .channels
            .values()
            .filter_map(|c| match c {
                Channel::Room(id) => Some(id.to_string()),
                Channel::Dm => None,
            })
            .collect();
        let mut walk = Walk::new(&self.reader, &rooms);
        loop {
            match walk.next(&mut self.reader).await {
                Ok(Some(item)) => self.tx.send(item).await.map_err(|_| Gone)?,
                Ok(None) => break,
                Err(e) => {
                    self.retry = (self.retry * 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
                    match self.behind {
                        Some(since) => {
                            debug!(error = %e, behind = ?since.elapsed(), "catch-up failed; trying again")
                        }
                        None => warn!(error = %e, "periodic catch-up failed; trying again"),
                    }
                    self.behind.get_or_insert_with(Instant::now);
                    return Ok(());
                }
            }
        }
        self.behind = None;
        self.retry = Duration::ZERO;
        Ok(())
    }

    /// After a reconnect: the block list and the rooms may have changed
    /// (a membership change is why we were kicked). On failure what was
    /// loaded before stays in force.
    async fn reconnected(&mut self, subs: &mut SelectAll<async_nats::Subscriber>) {
        let client = self.reader.client.clone();
        let _ = client.block_list().await;
        let Ok(rooms) = client.all_rooms().await else { return };
        for room in rooms {
            let subject = subjects::room_msg(&room);
            let Ok(id) = RoomId::parse(&room) else { continue };
            if self.channels.contains_key(&subject) {
                continue;
            }
            if let Ok(sub) = client.nats.subscribe(subject.clone()).await {
                subs.push(sub);
                self.channels.insert(subject, Channel::Room(id));
            }
        }
    }

    /// A message on a notice subject: with the header, forget the device
    /// set it names (the next message from that account is judged on a
    /// fresh lookup); without, it is no notice (a reply aimed there).
    fn notice(&self, msg: &async_nats::Message) {
        let client = &self.reader.client;
        let subject = msg.subject.as_str();
        let ignore = |why: &'static str| self.reader.ignore(subject, why);
        if subject == subjects::device_notice(client.account()) {
            match is_notice(msg, subjects::NOTICE_DEVICES) {
                true => client.forget_device_set(client.account()),
                false => ignore("no devices notice header"),
            }
            return;
        }
        if !is_notice(msg, subjects::NOTICE_REVOKED) {
            return ignore("no revoked notice header");
        }
        // The body names the account; should it not decode, the subject
        // does (forgetting too much only costs a lookup).
        match serde_json::from_slice::<RevokedNotice>(&msg.payload) {
            Ok(notice) => client.forget_device_set(&notice.account.to_hex()),
            Err(_) => {
                let account = subject.rsplit('.').next().unwrap_or_default();
                client.forget_device_set(account);
            }
        }
    }
}

/// The item that ends the stream.
fn closed(e: ClientError) -> Item {
    Item { incoming: Some(Incoming::Closed(e)), handled: Default::default() }
}
