//! Block lists on `UNIBUS_blocks` (docs/protocol.md section 5): one record per
//! blocking user, keyed by its `sign_pub`, holding the sorted keys it has
//! blocked. Every change is a read-check-CAS ([`super::cas`]) on that one
//! record, so the cap of
//! [`MAX_BLOCKS_PER_USER`](unibus_proto::wire::MAX_BLOCKS_PER_USER) holds
//! exactly under concurrent requests.

use serde::{Deserialize, Serialize};

use super::Store;
use super::cas::Change;
use super::index::Fresh;
use unibus_proto::error::Error;
use unibus_proto::ids::{Key, Timestamp};
use unibus_proto::records::SCHEMA_VERSION;

/// A record in `UNIBUS_blocks`, keyed by `sign_pub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    /// Schema version.
    pub v: u32,
    /// The blocking account.
    pub sign_pub: Key,
    /// Blocked accounts, sorted, no duplicates.
    pub blocked: Vec<Key>,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Store {
    /// The keys `owner` has blocked (leader read); empty when it has none.
    ///
    /// # Errors
    /// `unavailable`; `internal` for an undecodable record.
    pub async fn blocked_by(&self, owner: Key) -> Result<Vec<Key>, Error> {
        Ok(self.blocks.get(&owner).await?.map(|(b, _)| b.blocked).unwrap_or_default())
    }

    /// True when `owner` has blocked `key` (leader read).
    ///
    /// # Errors
    /// As [`Store::blocked_by`].
    pub async fn has_blocked(&self, owner: Key, key: Key) -> Result<bool, Error> {
        Ok(self.blocked_by(owner).await?.binary_search(&key).is_ok())
    }

    /// [`Store::has_blocked`] for an account that the blocks index, at
    /// freshness `fresh`, shows with no list: false without a read.
    ///
    /// # Errors
    /// As [`Store::blocked_by`]; `unavailable` when the index cannot be
    /// proven current.
    pub async fn has_blocked_at(&self, owner: Key, key: Key, fresh: Fresh) -> Result<bool, Error> {
        let may = self.blocks_ix.read_fresh(fresh, self.sync_limit(), |ix| ix.may_block(owner)).await?;
        if !may {
            return Ok(false);
        }
        self.has_blocked(owner, key).await
    }

    /// Adds `key` to `owner`'s block list unless present; at most `cap`
    /// keys. Returns the list afterwards and whether it changed.
    ///
    /// # Errors
    /// `limit_reached` beyond `cap` (nothing written); `unavailable`.
    pub async fn block(&self, owner: Key, key: Key, cap: usize) -> Result<(Vec<Key>, bool), Error> {
        self.change_blocks(owner, |list| {
            let Err(at) = list.binary_search(&key) else { return Ok(false) };
            if list.len() >= cap {
                return Err(Error::LimitReached(format!("a block list holds at most {cap} keys")));
            }
            list.insert(at, key);
            Ok(true)
        })
        .await
    }

    /// Removes `key` from `owner`'s block list if present. Returns the list
    /// afterwards and whether it changed.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn unblock(&self, owner: Key, key: Key) -> Result<(Vec<Key>, bool), Error> {
        self.change_blocks(owner, |list| match list.binary_search(&key) {
            Ok(at) => {
                list.remove(at);
                Ok(true)
            }
            Err(_) => Ok(false),
        })
        .await
    }

    /// Deletes `owner`'s block list (when its user is deleted).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn delete_block_list(&self, owner: Key) -> Result<(), Error> {
        self.blocks.delete_current(&owner).await
    }

    /// Applies `edit` (true = changed) to `owner`'s list with a CAS,
    /// re-judging on a lost race; an unchanged list is not written.
    async fn change_blocks(
        &self,
        owner: Key,
        edit: impl Fn(&mut Vec<Key>) -> Result<bool, Error>,
    ) -> Result<(Vec<Key>, bool), Error> {
        let judge = |current: Option<BlockList>| {
            let mut list = current.map(|b| b.blocked).unwrap_or_default();
            if !edit(&mut list)? {
                return Ok(Change::Keep((list, false)));
            }
            let record = BlockList {
                v: SCHEMA_VERSION,
                sign_pub: owner,
                blocked: list.clone(),
                updated_at: Timestamp::now(),
            };
            Ok(Change::Write(record, (list, true)))
        };
        Ok(self.blocks.modify(&owner, judge).await?.0)
    }
}
