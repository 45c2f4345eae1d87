//! The one read-modify-write of the store: [`Bucket::modify_with`] reads a
//! record (leader read), asks the caller what to make of it, and writes the
//! answer with a compare-and-swap on the revision read (`create` when the
//! key was absent, `update` or `delete` at that revision when present). A
//! lost race reads again and asks again, so the caller's rule is always
//! judged on the record actually written over; after a bounded number of
//! lost races it gives up (as `unavailable` unless the caller says
//! otherwise).

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Bucket, KvError};
use unibus_proto::error::Error;

/// Attempts at one read-modify-CAS before giving up.
pub(crate) const MAX_CAS_ATTEMPTS: usize = 16;

/// What a read-modify-CAS answers by default after [`MAX_CAS_ATTEMPTS`]
/// lost races.
pub(crate) fn contention() -> Error {
    Error::Unavailable("too many concurrent writers on one record".into())
}

/// What to do with the record just read; `R` is the caller's answer.
pub(crate) enum Change<T, R> {
    /// Write this record (create it when the key was absent), then answer.
    Write(T, R),
    /// Delete the record at the revision read (nothing when absent), then
    /// answer.
    Delete(R),
    /// Change nothing and answer.
    Keep(R),
}

/// How one [`Bucket::modify_with`] starts and gives up.
pub(crate) struct Retry<T> {
    /// A record and revision the caller already holds: judged first,
    /// without a read (one extra attempt on top of [`MAX_CAS_ATTEMPTS`]).
    pub(crate) known: Option<(T, u64)>,
    /// The error after [`MAX_CAS_ATTEMPTS`] lost races.
    pub(crate) exhausted: fn() -> Error,
}

impl<T> Default for Retry<T> {
    fn default() -> Self {
        Retry { known: None, exhausted: contention }
    }
}

impl Bucket {
    /// Applies `decide` to the record at `key` (`None` when absent) with a
    /// CAS, reading again and re-deciding after each lost race, starting
    /// from a record the caller holds and/or giving up with another error
    /// (see [`Retry`]). Answers what `decide` answered and the record's
    /// revision afterwards: the one written, or the one read when kept;
    /// `None` when absent or deleted. Callers go through the typed
    /// [`super::table::Table`].
    ///
    /// # Errors
    /// `decide`'s error (nothing written); `unavailable` when the store
    /// cannot answer; `retry.exhausted` after [`MAX_CAS_ATTEMPTS`] lost
    /// races; `internal` for an undecodable record.
    pub(crate) async fn modify_with<T, R, F, Fut>(
        &self,
        key: &str,
        retry: Retry<T>,
        mut decide: F,
    ) -> Result<(R, Option<u64>), Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Fut,
        Fut: Future<Output = Result<Change<T, R>, Error>>,
    {
        let attempts = MAX_CAS_ATTEMPTS + usize::from(retry.known.is_some());
        let mut known = retry.known;
        for _ in 0..attempts {
            let current = match known.take() {
                Some(k) => Some(k),
                None => self.get::<T>(key).await?,
            };
            let (record, revision) = current.map_or((None, None), |(r, rev)| (Some(r), Some(rev)));
            let written = match decide(record).await? {
                Change::Keep(answer) => return Ok((answer, revision)),
                Change::Write(next, answer) => {
                    self.put(key, &next, revision).await.map(|rev| (answer, Some(rev)))
                }
                Change::Delete(answer) => match revision {
                    Some(rev) => self.delete(key, rev).await.map(|()| (answer, None)),
                    None => return Ok((answer, None)),
                },
            };
            match written {
                Ok(done) => return Ok(done),
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err((retry.exhausted)())
    }

    /// `update` at `revision`, or `create` when there is none.
    async fn put<T: Serialize>(&self, key: &str, value: &T, revision: Option<u64>) -> Result<u64, KvError> {
        match revision {
            Some(rev) => self.update(key, value, rev).await,
            None => self.create(key, value).await,
        }
    }
}
