//! Stored messages in `UNIBUS_mail` (docs/protocol.md section 10): one
//! entry per message under `<channel>.<from>.<id>`, written once with KV
//! `create`, kept for the retention (`max_age`) and within `max_bytes`,
//! both settings.
//!
//! Reads of a channel go through batched direct gets (one request returns
//! up to [`READ_AHEAD`] entries of the channel in stream order, and what a
//! page does not take is kept for the next: [`super::readahead`]), so the
//! bucket allows direct gets, unlike the others. A direct get may be
//! answered by a follower that lags the leader; followers hold a prefix
//! of the stream, so such an answer can only miss the newest entries. A
//! page that seems to reach the end of its channel is therefore confirmed
//! with one leader read (on a replicated bucket): when the leader holds a
//! later entry, the page says so with a `next`, and the device reads on.
//! Writes and the duplicate check are leader operations as everywhere.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;

use super::readahead::{Ahead, READ_AHEAD, ReadAhead};
use super::{Store, StoreConfig};
use unibus_proto::error::Error;
use unibus_proto::ids::Key;
use unibus_proto::mail::{MailChannel, MailKey};
use unibus_proto::subjects::BUCKET_MAIL;

/// Bytes one direct get returns at most (the server stops after the
/// entry that reaches it).
const SCAN_BATCH_BYTES: usize = 4 << 20;
/// Entries one page reads at most, whether or not they are sealed for
/// the caller: a device linked after many messages were stored reads
/// past them in bounded steps.
const SCAN_MAX: usize = 4096;

/// How the mail bucket is made when missing, and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// How long a message waits (the bucket's `max_age`).
    pub retention: Duration,
    /// The bucket's size; a send that would exceed it is `limit_reached`.
    pub max_bytes: i64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            retention: Duration::from_secs(unibus_proto::mail::DEFAULT_RETENTION_SECS),
            max_bytes: 1 << 30,
        }
    }
}

/// The mail bucket, with the connection its batched reads use.
#[derive(Clone)]
pub(crate) struct Mailbox {
    kv: kv::Store,
    client: async_nats::Client,
    /// Replicated: a page that reaches the end asks the leader too.
    replicated: bool,
    timeout: Duration,
    /// What pages read past, for the next page.
    ahead: Arc<ReadAhead>,
}

/// What a send left in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, at this `seq`.
    New(u64),
    /// The same envelope was stored before, at this `seq` (a retry).
    Again(u64),
}

impl Stored {
    /// The message's `seq`.
    pub fn seq(self) -> u64 {
        match self {
            Stored::New(seq) | Stored::Again(seq) => seq,
        }
    }
}

/// One page of a channel read for one device.
#[derive(Debug, Default)]
pub struct MailPage {
    /// `(seq, envelope bytes)` in `seq` order, each sealed for the device.
    pub messages: Vec<(u64, Bytes)>,
    /// Where the next page starts after; `None` when the channel was read
    /// to its end.
    pub next: Option<u64>,
}

/// The part of a stored envelope a page filters on.
#[derive(Deserialize)]
struct Recipients<'a> {
    #[serde(borrow)]
    recipients: Vec<To<'a>>,
}

#[derive(Deserialize)]
struct To<'a> {
    #[serde(borrow)]
    to: &'a str,
}

/// One entry of a batched direct get.
struct Entry {
    seq: u64,
    /// A put (not a delete or purge marker).
    put: bool,
    payload: Bytes,
}

impl Mailbox {
    /// Opens the mail bucket, creating it when missing; one found with
    /// another retention or size is set to the configured ones.
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn open(js: &jetstream::Context, cfg: &StoreConfig) -> Result<Mailbox, Error> {
        let want = mail_stream_config(cfg);
        let unavailable =
            |e: &dyn std::fmt::Display| Error::Unavailable(format!("open bucket {BUCKET_MAIL}: {e}"));
        match js.get_stream(&want.name).await {
            Ok(mut found) => {
                let have = found.info().await.map_err(|e| unavailable(&e))?.config.clone();
                if have.max_age != want.max_age || have.max_bytes != want.max_bytes || !have.allow_direct {
                    let config = stream::Config {
                        max_age: want.max_age,
                        max_bytes: want.max_bytes,
                        allow_direct: true,
                        ..have
                    };
                    js.update_stream(&config).await.map_err(|e| unavailable(&e))?;
                }
            }
            Err(_) => {
                js.create_stream(want).await.map_err(|e| unavailable(&e))?;
            }
        }
        let kv = js.get_key_value(BUCKET_MAIL).await.map_err(|e| unavailable(&e))?;
        let (replicated, timeout) = (cfg.replicas > 1, cfg.timeout);
        Ok(Mailbox { kv, client: js.client(), replicated, timeout, ahead: Arc::default() })
    }

    /// Stores `envelope` under `key` with `create`. The same bytes stored
    /// before under that key (a retry) answer that entry's `seq`.
    ///
    /// # Errors
    /// `bad_request` when another envelope is stored under `key` (the same
    /// `(from, id)` in the same channel); `limit_reached` when the bucket
    /// is full (nothing stored); `unavailable`.
    pub(crate) async fn store(&self, key: &MailKey, envelope: Bytes) -> Result<Stored, Error> {
        match self.kv.create(key.as_str(), envelope.clone()).await {
            Ok(seq) => return Ok(Stored::New(seq)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || super::is_race(&e) => {}
            Err(e) if is_full(&e) => {
                return Err(Error::LimitReached("the mail store is full; try again later".into()));
            }
            Err(e) => return Err(Error::Unavailable(format!("create in {BUCKET_MAIL}: {e}"))),
        }
        let subject = format!("$KV.{BUCKET_MAIL}.{key}");
        let held = self.kv.stream.get_last_raw_message_by_subject(&subject).await;
        match held {
            Ok(msg) if msg.payload == envelope => Ok(Stored::Again(msg.sequence)),
            Ok(_) => Err(Error::bad("another envelope with this (from, id) is stored in this channel")),
            Err(e) => Err(Error::Unavailable(format!("get {key} in {BUCKET_MAIL}: {e}"))),
        }
    }

    /// One page of `channel` after `after` for `device`: at most `limit`
    /// envelopes sealed for it, at most `max_bytes` of them (at least one).
    /// It starts with what the device's previous page read past
    /// ([`super::readahead`]), then reads [`READ_AHEAD`] entries at a time;
    /// what a read returns beyond the page is kept for the next one.
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn page(
        &self,
        channel: &MailChannel,
        after: u64,
        device: Key,
        limit: usize,
        max_bytes: usize,
    ) -> Result<MailPage, Error> {
        let filter = format!("$KV.{BUCKET_MAIL}.{channel}.>");
        let me = device.to_hex();
        let mut page = MailPage::default();
        let (mut done, mut bytes, mut scanned) = (after, 0, 0);
        let full = |page: &MailPage, bytes: usize, len: usize| {
            page.messages.len() >= limit || (!page.messages.is_empty() && bytes + len > max_bytes)
        };
        if let Some(mut ahead) = self.ahead.take(device, channel, after) {
            while let Some((seq, envelope)) = ahead.entries.pop_front() {
                if full(&page, bytes, envelope.len()) {
                    ahead.entries.push_front((seq, envelope));
                    self.ahead.keep(device, channel, Ahead::new(done, ahead.scanned_to, ahead.entries));
                    page.next = Some(done);
                    return Ok(page);
                }
                bytes += envelope.len();
                page.messages.push((seq, envelope));
                (done, scanned) = (seq, scanned + 1);
            }
            done = ahead.scanned_to;
        }
        let end = 'scan: loop {
            let Some(from) = done.checked_add(1) else { break 'scan true };
            let (entries, pending) = self.direct_batch(&filter, from, READ_AHEAD).await?;
            let read = entries.len();
            // Once the page is full, what else the read holds for the device.
            let (mut rest, mut covered) = (None::<VecDeque<(u64, Bytes)>>, done);
            for entry in entries {
                scanned += 1;
                covered = entry.seq;
                let mine = entry.put && sealed_for(&entry.payload, &me);
                match &mut rest {
                    Some(rest) if mine => rest.push_back((entry.seq, entry.payload)),
                    Some(_) => {}
                    None if mine && full(&page, bytes, entry.payload.len()) => {
                        rest = Some(VecDeque::from([(entry.seq, entry.payload)]));
                    }
                    None if mine => {
                        bytes += entry.payload.len();
                        page.messages.push((entry.seq, entry.payload));
                        done = entry.seq;
                    }
                    None => done = entry.seq,
                }
            }
            if let Some(rest) = rest {
                self.ahead.keep(device, channel, Ahead::new(done, covered, rest));
                break 'scan false;
            }
            if read == 0 || pending == 0 {
                break 'scan true;
            }
            if scanned >= SCAN_MAX {
                break 'scan false;
            }
        };
        page.next = match end {
            true if self.replicated && self.leader_has_after(&filter, done).await? => Some(done),
            true => None,
            false => Some(done),
        };
        Ok(page)
    }

    /// Deletes every message of `channel` (an account's DMs, when the
    /// account is deleted).
    ///
    /// # Errors
    /// `unavailable`.
    pub(crate) async fn purge(&self, channel: &MailChannel) -> Result<(), Error> {
        let filter = format!("$KV.{BUCKET_MAIL}.{channel}.>");
        self.kv
            .stream
            .purge()
            .filter(filter)
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("purge {channel} in {BUCKET_MAIL}: {e}")))
    }

    /// Up to `batch` entries of `filter` from `seq` on, in stream order,
    /// and how many more the answering server holds after them.
    async fn direct_batch(&self, filter: &str, seq: u64, batch: usize) -> Result<(Vec<Entry>, u64), Error> {
        let unavailable = |e: &dyn std::fmt::Display| Error::Unavailable(format!("read {BUCKET_MAIL}: {e}"));
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.map_err(|e| unavailable(&e))?;
        let request = serde_json::json!({
            "seq": seq, "next_by_subj": filter, "batch": batch, "max_bytes": SCAN_BATCH_BYTES,
        });
        let subject = format!("$JS.API.DIRECT.GET.KV_{BUCKET_MAIL}");
        self.client
            .publish_with_reply(subject, inbox, request.to_string().into())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut entries = Vec::new();
        loop {
            let msg = match tokio::time::timeout(self.timeout, replies.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Err(unavailable(&"reply subscription closed")),
                Err(_) => return Err(unavailable(&"direct get timed out")),
            };
            let header =
                |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
            match msg.status.map(|s| s.as_u16()) {
                // End of batch: how many more the server holds.
                Some(204) => {
                    let pending = header("Nats-Num-Pending").and_then(|p| p.parse().ok()).unwrap_or(0);
                    return Ok((entries, pending));
                }
                // Nothing at or after `seq`.
                Some(404) => return Ok((entries, 0)),
                Some(code) => {
                    return Err(unavailable(&format!("direct get answered {code} {:?}", msg.description)));
                }
                None => {
                    let seq = header("Nats-Sequence").and_then(|s| s.parse().ok());
                    let seq = seq.ok_or_else(|| unavailable(&"direct get entry without a sequence"))?;
                    let put = header("KV-Operation").is_none_or(|op| op == "PUT");
                    entries.push(Entry { seq, put, payload: msg.payload });
                }
            }
        }
    }

    /// Whether the stream leader holds an entry of `filter` after `seq`.
    async fn leader_has_after(&self, filter: &str, seq: u64) -> Result<bool, Error> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let get =
            self.kv.stream.raw_message_builder().sequence(seq.saturating_add(1)).next_by_subject(filter);
        match get.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(Error::Unavailable(format!("read {BUCKET_MAIL}: {e}"))),
        }
    }
}

/// Whether a stored envelope names `me` as a recipient.
fn sealed_for(envelope: &[u8], me: &str) -> bool {
    serde_json::from_slice::<Recipients<'_>>(envelope).is_ok_and(|r| r.recipients.iter().any(|t| t.to == me))
}

/// True when a write was refused because the bucket is full (`max_bytes`
/// with discard `new`).
fn is_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            let text = js.to_string();
            if text.contains("maximum bytes exceeded") || text.contains("maximum messages exceeded") {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The mail bucket's stream: the KV layout, one revision per key (a
/// message is written once), the retention as `max_age`, the size as
/// `max_bytes` with new writes refused when full, and direct gets on for
/// the batched reads of fetch (see the module doc).
pub fn mail_stream_config(cfg: &StoreConfig) -> stream::Config {
    stream::Config {
        max_messages_per_subject: 1,
        max_age: cfg.mail.retention,
        max_bytes: cfg.mail.max_bytes,
        allow_direct: true,
        ..super::bucket_stream_config(BUCKET_MAIL, cfg)
    }
}

impl Store {
    /// Stores a message's envelope under its mail key (see [`Mailbox`]).
    ///
    /// # Errors
    /// As [`Mailbox::store`].
    pub async fn store_mail(&self, key: &MailKey, envelope: Bytes) -> Result<Stored, Error> {
        self.mail.store(key, envelope).await
    }

    /// One page of a mail channel for `device` (see [`MailPage`]).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn mail_page(
        &self,
        channel: &MailChannel,
        after: u64,
        device: Key,
        limit: usize,
        max_bytes: usize,
    ) -> Result<MailPage, Error> {
        self.mail.page(channel, after, device, limit, max_bytes).await
    }
}
