//! Judging what arrives, live or waited, and catching up: a [`Reader`]
//! opens an envelope and checks its sender for this device, remembering
//! what it accepted (a replay guard) and how far it read each mail
//! channel (cursors); a [`Walk`] fetches every channel from its cursor
//! with `unibus.mail.fetch` and hands the stored messages over in `seq`
//! order across channels (docs/protocol.md section 10, "Clients").
//! [`Client::waiting`] and [`Client::catch_up`] are a walk without an
//! inbox.
//!
//! A fetch reply is no more trusted than a live message: each envelope is
//! opened and its sender checked exactly like one that arrived live, a
//! page that does not go forward ends that channel's walk, and a `seq` at
//! or below the cursor is skipped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::debug;

use crate::mailstate::Handled;
use crate::messaging::now_ms;
use crate::notices::is_reply;
use crate::{Client, ClientError, Incoming};
use unibus_proto::e2e::{self, Kind, Opened, Receiver, Reject, ReplayGuard};
use unibus_proto::error::Error;
use unibus_proto::ids::RoomId;
use unibus_proto::mail::{Channel, Waiting};
use unibus_proto::subjects;

/// What the inbox task hands the [`crate::Inbox`]: what to yield (nothing
/// for a message skipped as already handed over) and what handing it over
/// records in the mail state.
#[derive(Debug)]
pub(crate) struct Item {
    pub incoming: Option<Incoming>,
    pub handled: Handled,
}

/// How one envelope was judged.
enum Judged {
    /// Not an envelope at all, or this device's own copy coming back.
    Ignored(&'static str),
    /// A genuine envelope whose `(from, id)` was accepted before.
    Duplicate,
    /// Refused, and why.
    Refused(Reject),
    /// Accepted (and recorded against replays).
    Accepted(Opened),
    /// Accepted, from a sender this identity blocks.
    Blocked(Opened),
}

/// Judges messages for one device (see the module docs).
pub(crate) struct Reader {
    pub client: Client,
    /// `(from, id)` of every message accepted.
    pub guard: ReplayGuard,
    /// Per channel, the highest `seq` handed over from a fetch.
    pub cursors: BTreeMap<Channel, u64>,
    pub ignored: Arc<AtomicU64>,
}

impl Reader {
    /// A reader starting from what `client`'s mail state remembers.
    pub fn new(client: &Client) -> Reader {
        let (guard, cursors) = client.with_mail_state(|s| (s.guard(), s.cursors().clone()));
        Reader { client: client.clone(), guard, cursors, ignored: Arc::default() }
    }

    fn cursor(&self, channel: &Channel) -> u64 {
        self.cursors.get(channel).copied().unwrap_or(0)
    }

    /// Counts (and logs at debug) a message that yields nothing.
    pub fn ignore(&self, subject: &str, why: &'static str) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
        debug!(subject, why, "inbox ignored a message");
    }

    /// Opens `raw` as arrived on `subject` and checks its sender.
    async fn judge(&mut self, raw: &[u8], subject: &str) -> Judged {
        let client = &self.client;
        let me = Receiver {
            account: client.account(),
            device: client.sign_pub(),
            kex_secret: &client.identity.kex,
        };
        let opened = match e2e::open_as(raw, subject, &me, &self.guard, now_ms()) {
            Ok(opened) => opened,
            Err(Reject::NotEnvelope) => return Judged::Ignored("not an envelope"),
            Err(Reject::NotForMe) if is_own_copy(raw, client) => return Judged::Ignored("own copy"),
            Err(Reject::Replay) => return Judged::Duplicate,
            Err(reason) => return Judged::Refused(reason),
        };
        if opened.kind == Kind::Dm && client.blocks_stale() {
            // On failure the copy loaded before stays in force.
            let _ = client.block_list().await;
        }
        if let Err(reason) = client.check_sender(&opened.from, &opened.device).await {
            return Judged::Refused(reason);
        }
        // Accepted: only now does its (from, id) count against replays.
        if self.guard.record(&opened, now_ms()).is_err() {
            return Judged::Duplicate;
        }
        if opened.kind == Kind::Dm && opened.peer.is_none() && client.is_blocked(&opened.from) {
            return Judged::Blocked(opened);
        }
        Judged::Accepted(opened)
    }

    /// A message that arrived live on `subject` (with the `Unibus-Seq` of
    /// the channel `channel` when unibusd stored it): what to hand over,
    /// or nothing.
    pub async fn live(&mut self, msg: &async_nats::Message, channel: Option<&Channel>) -> Option<Item> {
        let subject = msg.subject.as_str();
        if is_reply(msg) {
            self.ignore(subject, "a control-plane reply");
            return None;
        }
        let seq: Option<u64> =
            msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_SEQ)).and_then(|v| v.as_str().parse().ok());
        if let (Some(seq), Some(channel)) = (seq, channel) {
            // Handed over by a fetch already.
            if seq <= self.cursor(channel) {
                return None;
            }
        }
        let incoming = match self.judge(&msg.payload, subject).await {
            Judged::Ignored(why) => {
                self.ignore(subject, why);
                return None;
            }
            // A stored message read by a fetch too: not a replay.
            Judged::Duplicate if seq.is_some() => return None,
            Judged::Duplicate => Item::refused(subject, Reject::Replay),
            Judged::Refused(reason) => Item::refused(subject, reason),
            Judged::Accepted(opened) => Item::accepted(Incoming::Message, opened),
            Judged::Blocked(opened) => Item::blocked(subject, opened),
        };
        Some(incoming)
    }

    /// A message fetched from `channel` (whose messages arrive on
    /// `subject`): what to hand over, or nothing for a `seq` at or below
    /// the cursor.
    async fn waited(&mut self, channel: &Channel, subject: &str, waiting: Waiting) -> Option<Item> {
        let seq = waiting.seq;
        if seq <= self.cursor(channel) {
            return None;
        }
        self.cursors.insert(channel.clone(), seq);
        let raw = serde_json::to_vec(&waiting.envelope).expect("an envelope always encodes");
        let mut item = match self.judge(&raw, subject).await {
            Judged::Ignored(why) => {
                self.ignore(subject, why);
                Item { incoming: None, handled: Handled::default() }
            }
            Judged::Duplicate => Item { incoming: None, handled: Handled::default() },
            Judged::Refused(reason) => Item::refused(subject, reason),
            Judged::Accepted(opened) => Item::accepted(|message| Incoming::Waited { seq, message }, opened),
            Judged::Blocked(opened) => Item::blocked(subject, opened),
        };
        item.handled.cursor = Some((channel.clone(), seq));
        Some(item)
    }
}

impl Item {
    fn refused(subject: &str, reason: Reject) -> Item {
        Item {
            incoming: Some(Incoming::Rejected { subject: subject.to_string(), reason }),
            handled: Handled::default(),
        }
    }

    fn accepted(wrap: impl FnOnce(Opened) -> Incoming, opened: Opened) -> Item {
        let handled =
            Handled { cursor: None, accepted: Some((opened.from.clone(), opened.id.clone(), opened.ts)) };
        Item { incoming: Some(wrap(opened)), handled }
    }

    fn blocked(subject: &str, opened: Opened) -> Item {
        let handled = Handled { cursor: None, accepted: Some((opened.from.clone(), opened.id, opened.ts)) };
        Item {
            incoming: Some(Incoming::Dropped { subject: subject.to_string(), from: opened.from }),
            handled,
        }
    }
}

/// One channel of a walk: where its next page starts and what was fetched
/// but not handed over yet.
struct Lane {
    channel: Channel,
    subject: String,
    after: u64,
    queue: VecDeque<Waiting>,
    done: bool,
}

/// A catch-up over several channels, in `seq` order across them.
pub(crate) struct Walk {
    lanes: Vec<Lane>,
}

impl Walk {
    /// This account's DM channel and the rooms `rooms`, each from the
    /// reader's cursor.
    pub fn new<'a>(reader: &Reader, rooms: impl IntoIterator<Item = &'a String>) -> Walk {
        let account = reader.client.account().to_string();
        let mut lanes = vec![Lane::new(Channel::Dm, subjects::dm(&account), reader)];
        for room in rooms {
            let Ok(id) = RoomId::parse(room) else { continue };
            lanes.push(Lane::new(Channel::Room(id), subjects::room_msg(room), reader));
        }
        Walk { lanes }
    }

    /// The next item to hand over, `None` once caught up.
    ///
    /// # Errors
    /// A fetch that failed (a room that is gone or that this account left
    /// meanwhile only ends that room's walk).
    pub async fn next(&mut self, reader: &mut Reader) -> Result<Option<Item>, ClientError> {
        loop {
            for lane in self.lanes.iter_mut() {
                lane.fill(&reader.client).await?;
            }
            let next = self.lanes.iter_mut().filter(|l| !l.queue.is_empty()).min_by_key(|l| l.queue[0].seq);
            let Some(lane) = next else { return Ok(None) };
            let waiting = lane.queue.pop_front().expect("not empty");
            if let Some(item) = reader.waited(&lane.channel, &lane.subject, waiting).await {
                return Ok(Some(item));
            }
        }
    }
}

impl Lane {
    fn new(channel: Channel, subject: String, reader: &Reader) -> Lane {
        let after = reader.cursor(&channel);
        Lane { channel, subject, after, queue: VecDeque::new(), done: false }
    }

    /// Fetches pages until one holds a message or the channel is read to
    /// its end.
    async fn fill(&mut self, client: &Client) -> Result<(), ClientError> {
        while self.queue.is_empty() && !self.done {
            let page = match client.mail_fetch(&self.channel, self.after, None).await {
                Ok(page) => page,
                Err(ClientError::Service(Error::Forbidden(_) | Error::NotFound(_)))
                    if matches!(self.channel, Channel::Room(_)) =>
                {
                    self.done = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let mut last = self.after;
            for waiting in page.messages {
                if waiting.seq > last {
                    last = waiting.seq;
                    self.queue.push_back(waiting);
                }
            }
            match page.next {
                Some(next) if next > self.after && next >= last => self.after = next,
                // Caught up, or a page that does not go forward.
                _ => self.done = true,
            }
        }
        Ok(())
    }
}

/// A copy this very device sealed for its account's other devices (it
/// arrives on the account's DM subject, which this device reads too). Only
/// asked after the signature verified, so `device` is really this one.
fn is_own_copy(raw: &[u8], client: &Client) -> bool {
    let Ok(env) = serde_json::from_slice::<e2e::Envelope>(raw) else { return false };
    env.peer.is_some() && env.device.as_deref() == Some(client.sign_pub())
}

impl Client {
    /// What waited for this device since it last caught up: the stored
    /// messages of its DM channel and of every room its account is in,
    /// opened and checked like live ones ([`Incoming::Waited`],
    /// [`Incoming::Rejected`], [`Incoming::Dropped`]), in `seq` order,
    /// without a live subscription and without marking them handled (see
    /// [`Client::catch_up`]).
    ///
    /// # Errors
    /// [`ClientError::Service`] from `unibus.room.list` or
    /// `unibus.mail.fetch` (`forbidden` for a guest or a revoked device),
    /// [`ClientError::Request`].
    pub async fn waiting(&self) -> Result<Vec<Incoming>, ClientError> {
        self.walk_all(false).await
    }

    /// [`Client::waiting`], marking what it returns as handled in the mail
    /// state ([`Client::set_mail_state`]): the next catch-up, or inbox,
    /// does not hand it over again.
    ///
    /// # Errors
    /// As [`Client::waiting`].
    pub async fn catch_up(&self) -> Result<Vec<Incoming>, ClientError> {
        self.walk_all(true).await
    }

    async fn walk_all(&self, record: bool) -> Result<Vec<Incoming>, ClientError> {
        let rooms = self.all_rooms().await?;
        self.block_list().await?;
        let mut reader = Reader::new(self);
        let mut walk = Walk::new(&reader, &rooms);
        let mut out = Vec::new();
        while let Some(item) = walk.next(&mut reader).await? {
            if record {
                self.with_mail_state(|s| s.record(&item.handled, now_ms()));
            }
            out.extend(item.incoming);
        }
        Ok(out)
    }
}
