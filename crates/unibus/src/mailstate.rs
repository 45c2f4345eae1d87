//! What a device remembers of the messages it was handed (docs/protocol.md
//! section 10, "Clients"): per channel the highest `seq` it handled (its
//! cursor for `unibus.mail.fetch`), and the `(from, id)` of every message
//! it accepted for as long as such an envelope is fresh (the retention),
//! so that nothing is shown twice across reconnects and restarts.
//!
//! [`MailState`] lives in memory, or in a file beside the identity
//! ([`MailState::path_for`]): an append-only log of JSON lines, one per
//! change, written before the inbox hands the message over, rewritten
//! without what went stale when it is opened and when it grows. A second
//! process of the same identity gets a copy that it does not write (the
//! file is locked by the first; [`MailState::is_persistent`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;
use unibus_proto::e2e::{Freshness, ReplayGuard};
use unibus_proto::mail::Channel;

/// The log is rewritten once it holds more than this many lines and twice
/// the lines it held after it was last rewritten.
const COMPACT_AFTER: usize = 10_000;

/// Reading or writing a mail state file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailStateError {
    /// The file could not be read or written.
    #[error("mail state {0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A line other than the last (which a crash may have cut short) is
    /// not a mail state line.
    #[error("mail state {path}: line {line} is not a mail state line")]
    Corrupt {
        /// The file.
        path: String,
        /// Its 1-based line number.
        line: usize,
    },
}

/// One line of the log: a cursor moved, a message accepted, or both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
}

/// What the inbox hands over for one item: the cursor it moves and the
/// message it accepted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handled {
    /// A fetched message's channel and `seq`.
    pub cursor: Option<(Channel, u64)>,
    /// An accepted message's `(from, id, ts)`.
    pub accepted: Option<(String, String, i64)>,
}

impl Handled {
    fn is_empty(&self) -> bool {
        self.cursor.is_none() && self.accepted.is_none()
    }
}

/// The file a state is written to, and the lock that keeps a second
/// process from writing it too.
struct Log {
    path: PathBuf,
    file: File,
    /// Held (locked) for as long as this state lives.
    _lock: File,
    lines: usize,
    /// Lines right after the last rewrite.
    compacted: usize,
}

/// A device's cursors and accepted messages (see the module docs).
pub struct MailState {
    cursors: BTreeMap<Channel, u64>,
    accepted: ReplayGuard,
    log: Option<Log>,
}

impl Default for MailState {
    fn default() -> Self {
        MailState::in_memory(Freshness::default())
    }
}

impl std::fmt::Debug for MailState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailState")
            .field("cursors", &self.cursors)
            .field("accepted", &self.accepted.entries().count())
            .field("file", &self.log.as_ref().map(|l| l.path.display().to_string()))
            .finish()
    }
}

impl MailState {
    /// A state kept in memory only, judging envelopes fresh by `freshness`
    /// (its `behind_ms` is the retention; [`Freshness::default`] is 30
    /// days).
    pub fn in_memory(freshness: Freshness) -> MailState {
        MailState { cursors: BTreeMap::new(), accepted: ReplayGuard::new(freshness), log: None }
    }

    /// The mail state file of the identity at `seed`: `<seed>.mail`.
    pub fn path_for(seed: &Path) -> PathBuf {
        let mut name = seed.as_os_str().to_owned();
        name.push(".mail");
        PathBuf::from(name)
    }

    /// Opens (or creates, mode 0600) the state at `path`, forgetting the
    /// messages that are no longer fresh at `now_ms`. When another process
    /// has it open, the state is read but not written
    /// ([`MailState::is_persistent`] is false).
    ///
    /// # Errors
    /// [`MailStateError::Io`] when it cannot be read or created,
    /// [`MailStateError::Corrupt`] for a line that is not a state line
    /// (but the last, which a crash may have cut short).
    pub fn open(path: &Path, freshness: Freshness, now_ms: i64) -> Result<MailState, MailStateError> {
        let io = |e: std::io::Error| MailStateError::Io(path.display().to_string(), e);
        let lock = open_0600(&lock_path(path), false).map_err(io)?;
        let owned = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        };
        let mut state = MailState::in_memory(freshness);
        let read = state.read(path)?;
        state.accepted.prune(now_ms);
        if owned {
            let file = open_0600(path, true).map_err(io)?;
            state.log = Some(Log { path: path.to_path_buf(), file, _lock: lock, lines: read, compacted: 0 });
            state.compact().map_err(io)?;
        }
        Ok(state)
    }

    /// Applies the lines of `path` (none when it does not exist); how many
    /// there were.
    fn read(&mut self, path: &Path) -> Result<usize, MailStateError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(MailStateError::Io(path.display().to_string(), e)),
        };
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| MailStateError::Io(path.display().to_string(), e))?;
        let count = lines.len();
        for (n, text) in lines.iter().enumerate() {
            match serde_json::from_str::<Line>(text) {
                Ok(line) => self.apply(&line),
                // Cut short by a crash while it was appended.
                Err(_) if n + 1 == count => {}
                Err(_) => {
                    return Err(MailStateError::Corrupt { path: path.display().to_string(), line: n + 1 });
                }
            }
        }
        Ok(count)
    }

    fn apply(&mut self, line: &Line) {
        if let (Some(channel), Some(seq)) = (&line.channel, line.seq) {
            let cursor = self.cursors.entry(channel.clone()).or_default();
            *cursor = (*cursor).max(seq);
        }
        if let (Some(from), Some(id), Some(ts)) = (&line.from, &line.id, line.ts) {
            self.accepted.insert(from, id, ts);
        }
    }

    /// Whether changes are written to a file (false in memory, and for a
    /// copy opened while another process had the file).
    pub fn is_persistent(&self) -> bool {
        self.log.is_some()
    }

    /// The window envelopes are judged fresh in.
    pub fn freshness(&self) -> Freshness {
        self.accepted.freshness()
    }

    /// The highest `seq` handled in `channel` (0: none).
    pub fn cursor(&self, channel: &Channel) -> u64 {
        self.cursors.get(channel).copied().unwrap_or(0)
    }

    /// Every channel's cursor.
    pub fn cursors(&self) -> &BTreeMap<Channel, u64> {
        &self.cursors
    }

    /// Whether a message `(from, id)` was accepted.
    pub fn accepted(&self, from: &str, id: &str) -> bool {
        self.accepted.contains(from, id)
    }

    /// A replay guard holding every accepted pair (the inbox's starting
    /// point).
    pub(crate) fn guard(&self) -> ReplayGuard {
        self.accepted.clone()
    }

    /// Records what the inbox handed over, in memory and (first) in the
    /// file. A write that fails is logged and the change kept in memory:
    /// the message may then be shown again after a restart, never lost.
    pub(crate) fn record(&mut self, handled: &Handled, now_ms: i64) {
        if handled.is_empty() {
            return;
        }
        let line = Line {
            channel: handled.cursor.as_ref().map(|(c, _)| c.clone()),
            seq: handled.cursor.as_ref().map(|(_, s)| *s),
            from: handled.accepted.as_ref().map(|(f, _, _)| f.clone()),
            id: handled.accepted.as_ref().map(|(_, i, _)| i.clone()),
            ts: handled.accepted.as_ref().map(|(_, _, t)| *t),
        };
        self.apply(&line);
        let Some(log) = &mut self.log else { return };
        let mut text = serde_json::to_vec(&line).expect("a state line always encodes");
        text.push(b'\n');
        if let Err(e) = log.file.write_all(&text) {
            warn!(path = %log.path.display(), error = %e, "cannot append to the mail state");
            return;
        }
        log.lines += 1;
        if log.lines > COMPACT_AFTER.max(2 * log.compacted) {
            self.accepted.prune(now_ms);
            if let Err(e) = self.compact() {
                warn!(error = %e, "cannot rewrite the mail state");
            }
        }
    }

    /// Rewrites the file with the current state alone (a temporary file,
    /// then renamed over it).
    fn compact(&mut self) -> std::io::Result<()> {
        let Some(log) = &mut self.log else { return Ok(()) };
        let mut tmp = log.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = std::io::BufWriter::new(open_0600(&tmp, false)?);
        let mut lines = 0;
        for (channel, seq) in &self.cursors {
            let line =
                Line { channel: Some(channel.clone()), seq: Some(*seq), from: None, id: None, ts: None };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        for (from, id, ts) in self.accepted.entries() {
            let line = Line {
                channel: None,
                seq: None,
                from: Some(from.to_string()),
                id: Some(id.to_string()),
                ts: Some(ts),
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &log.path)?;
        log.file = open_0600(&log.path, true)?;
        log.lines = lines;
        log.compacted = lines;
        Ok(())
    }
}

/// `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens `path` for writing (appending or truncating), created with mode
/// 0600.
fn open_0600(path: &Path, append: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).mode(0o600);
    match append {
        true => options.append(true),
        false => options.write(true).truncate(true),
    };
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus_proto::ids::RoomId;

    const NOW: i64 = 1_800_000_000_000;
    const DAY: i64 = 24 * 3600 * 1000;

    fn accepted(from: &str, id: &str, ts: i64) -> Handled {
        Handled { cursor: None, accepted: Some((from.into(), id.into(), ts)) }
    }

    #[test]
    fn survives_a_restart_and_forgets_what_went_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = MailState::path_for(&dir.path().join("me.seed"));
        let room = Channel::Room(RoomId::parse("00112233445566778899aabbccddeeff").unwrap());
        {
            let mut s = MailState::open(&path, Freshness::stored(7 * DAY), NOW).unwrap();
            assert!(s.is_persistent());
            s.record(
                &Handled { cursor: Some((Channel::Dm, 5)), accepted: Some(("a".into(), "1".into(), NOW)) },
                NOW,
            );
            s.record(&Handled { cursor: Some((Channel::Dm, 3)), accepted: None }, NOW);
            s.record(&Handled { cursor: Some((room.clone(), 9)), accepted: None }, NOW);
            s.record(&accepted("b", "2", NOW - 6 * DAY), NOW);
        }
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let s = MailState::open(&path, Freshness::stored(7 * DAY), NOW + 2 * DAY).unwrap();
        assert_eq!((s.cursor(&Channel::Dm), s.cursor(&room)), (5, 9), "a cursor never goes back");
        assert!(s.accepted("a", "1"));
        assert!(!s.accepted("b", "2"), "older than the retention by now");
        // Opened again: rewritten to what it holds.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn a_cut_last_line_is_skipped_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mail");
        std::fs::write(&path, "{\"channel\":\"dm\",\"seq\":4}\n{\"channel\":\"dm\",\"se").unwrap();
        let s = MailState::open(&path, Freshness::default(), NOW).unwrap();
        assert_eq!(s.cursor(&Channel::Dm), 4);
        drop(s);
        std::fs::write(&path, "{\"channel\":\"dm\",\"seq\":4}\nnot json\n{\"channel\":\"dm\",\"seq\":5}\n")
            .unwrap();
        match MailState::open(&path, Freshness::default(), NOW) {
            Err(MailStateError::Corrupt { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_opener_reads_but_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mail");
        let mut first = MailState::open(&path, Freshness::default(), NOW).unwrap();
        first.record(&accepted("a", "1", NOW), NOW);
        let mut second = MailState::open(&path, Freshness::default(), NOW).unwrap();
        assert!(!second.is_persistent() && second.accepted("a", "1"));
        second.record(&accepted("b", "2", NOW), NOW);
        drop((first, second));
        let again = MailState::open(&path, Freshness::default(), NOW).unwrap();
        assert!(again.accepted("a", "1") && !again.accepted("b", "2"));
    }

    #[test]
    fn grows_then_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mail");
        let mut s = MailState::open(&path, Freshness::stored(DAY), NOW).unwrap();
        // Old pairs (fresh when recorded, stale at the rewrite), then new ones.
        for i in 0..COMPACT_AFTER {
            s.record(&accepted("a", &i.to_string(), NOW - DAY + 10), NOW);
        }
        s.record(&accepted("a", "last", NOW), NOW + 20);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "only the fresh pair is left");
        assert!(s.accepted("a", "last") && !s.accepted("a", "0"));
    }
}
