//! Typed access to one bucket: a [`Table`] knows its key type (an account
//! [`Key`], a [`RoomId`], an [`InviteId`]) and its record type, so that no
//! caller builds a KV key from text or decodes a record by hand. Its
//! read-modify-write is [`Bucket::modify_with`] (see [`super::cas`]), with the
//! decision a plain function of the record read: a decision that needs I/O
//! does it before, not inside, so retrying it after a lost race has no side
//! effect.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cas::{Change, Retry};
use super::{Bucket, KvError};
use unibus_proto::error::Error;
use unibus_proto::ids::{InviteId, Key, RoomId};

/// What a table is keyed by: its KV key is this text.
pub(crate) trait TableKey {
    /// The KV key.
    fn kv_key(&self) -> String;
}

impl TableKey for Key {
    fn kv_key(&self) -> String {
        self.to_hex()
    }
}

impl TableKey for RoomId {
    fn kv_key(&self) -> String {
        self.as_str().to_string()
    }
}

impl TableKey for InviteId {
    fn kv_key(&self) -> String {
        self.as_str().to_string()
    }
}

/// One bucket holding records `T` under keys `K`.
pub(crate) struct Table<K, T> {
    bucket: Bucket,
    _types: PhantomData<fn(K) -> T>,
}

impl<K, T> Clone for Table<K, T> {
    fn clone(&self) -> Self {
        Table { bucket: self.bucket.clone(), _types: PhantomData }
    }
}

impl<K: TableKey, T: Serialize + DeserializeOwned> Table<K, T> {
    /// The table over `bucket`.
    pub(crate) fn new(bucket: Bucket) -> Self {
        Table { bucket, _types: PhantomData }
    }

    /// The record at `key` and its revision (leader read); `None` when
    /// absent or deleted.
    ///
    /// # Errors
    /// [`KvError::Unavailable`]; [`KvError::Corrupt`] for a record that
    /// does not decode.
    pub(crate) async fn get(&self, key: &K) -> Result<Option<(T, u64)>, KvError> {
        self.bucket.get(&key.kv_key()).await
    }

    /// Creates `key`; [`KvError::Conflict`] when it exists.
    pub(crate) async fn create(&self, key: &K, value: &T) -> Result<u64, KvError> {
        self.bucket.create(&key.kv_key(), value).await
    }

    /// Replaces `key` if it is still at `revision`.
    pub(crate) async fn update(&self, key: &K, value: &T, revision: u64) -> Result<u64, KvError> {
        self.bucket.update(&key.kv_key(), value, revision).await
    }

    /// Deletes `key` if it is still at `revision`.
    pub(crate) async fn delete(&self, key: &K, revision: u64) -> Result<(), KvError> {
        self.bucket.delete(&key.kv_key(), revision).await
    }

    /// Deletes `key` at whatever revision it has now (a CAS, read again
    /// after a lost race); nothing when absent.
    ///
    /// # Errors
    /// As [`Table::modify`].
    pub(crate) async fn delete_current(&self, key: &K) -> Result<(), Error> {
        self.modify(key, |_| Ok(Change::<T, ()>::Delete(()))).await.map(|_| ())
    }

    /// Read, decide, compare-and-swap (see [`Bucket::modify_with`]): `decide`
    /// is judged again on the record actually written over after every
    /// lost race, so it must be a function of that record alone.
    ///
    /// # Errors
    /// `decide`'s error (nothing written); `unavailable` when the store
    /// cannot answer or after too many lost races; `internal` for an
    /// undecodable record.
    pub(crate) async fn modify<R>(
        &self,
        key: &K,
        decide: impl FnMut(Option<T>) -> Result<Change<T, R>, Error>,
    ) -> Result<(R, Option<u64>), Error> {
        self.modify_with(key, Retry::default(), decide).await
    }

    /// [`Table::modify`] starting from a record the caller holds and/or
    /// giving up with another error (see [`Retry`]).
    ///
    /// # Errors
    /// As [`Table::modify`].
    pub(crate) async fn modify_with<R>(
        &self,
        key: &K,
        retry: Retry<T>,
        mut decide: impl FnMut(Option<T>) -> Result<Change<T, R>, Error>,
    ) -> Result<(R, Option<u64>), Error> {
        self.bucket.modify_with(&key.kv_key(), retry, |current| std::future::ready(decide(current))).await
    }

    /// [`Table::modify`] with a decision that reads other records first
    /// (never writes: it runs again after every lost race).
    ///
    /// # Errors
    /// As [`Table::modify`].
    pub(crate) async fn modify_reading<R, F, Fut>(
        &self,
        key: &K,
        decide: F,
    ) -> Result<(R, Option<u64>), Error>
    where
        F: FnMut(Option<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<T, R>, Error>>,
    {
        self.bucket.modify_with(&key.kv_key(), Retry::default(), decide).await
    }

    /// Reads many records concurrently (leader reads), keeping key order
    /// and skipping keys that vanished meanwhile.
    ///
    /// # Errors
    /// As [`Table::get`].
    pub(crate) async fn get_many(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<(T, u64)>, KvError>
    where
        T: Send + 'static,
    {
        super::get_many(&self.bucket, keys.into_iter().map(|k| k.kv_key()).collect()).await
    }

    /// The bucket underneath (for the indexes, which fold raw entries).
    pub(crate) fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}
