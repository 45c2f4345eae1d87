//! Block lists on `UNIBUS_blocks` (docs/protocol.md section 5): one record per
//! blocking user, keyed by its `sign_pub`, holding the sorted keys it has
//! blocked. Every change is a read-check-CAS ([`super::cas`]) on that one
//! record, so the cap of
//! [`MAX_BLOCKS_PER_USER`](unibus_proto::wire::MAX_BLOCKS_PER_USER) holds
//! exactly under concurrent requests.

use serde::{Deserialize, Serialize};

use super::Store;
use super::cas::Change;
use unibus_proto::error::Error;
use unibus_proto::model::{SCHEMA_VERSION, fmt_time, now};

/// A record in `UNIBUS_blocks`, keyed by `sign_pub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    /// Schema version.
    pub v: u32,
    /// The blocking user's Ed25519 key, lowercase hex.
    pub sign_pub: String,
    /// Blocked keys, lowercase hex, sorted, no duplicates.
    pub blocked: Vec<String>,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

impl Store {
    /// The keys `owner` has blocked (leader read); empty when it has none.
    ///
    /// # Errors
    /// `unavailable`; `internal` for an undecodable record.
    pub async fn blocked_by(&self, owner: &str) -> Result<Vec<String>, Error> {
        Ok(self.blocks.get::<BlockList>(owner).await?.map(|(b, _)| b.blocked).unwrap_or_default())
    }

    /// True when `owner` has blocked `key` (leader read).
    ///
    /// # Errors
    /// As [`Store::blocked_by`].
    pub async fn has_blocked(&self, owner: &str, key: &str) -> Result<bool, Error> {
        Ok(self.blocked_by(owner).await?.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
    }

    /// Adds `key` to `owner`'s block list unless present; at most `cap`
    /// keys. Returns the list afterwards and whether it changed.
    ///
    /// # Errors
    /// `limit_reached` beyond `cap` (nothing written); `unavailable`.
    pub async fn block(&self, owner: &str, key: &str, cap: usize) -> Result<(Vec<String>, bool), Error> {
        self.change_blocks(owner, |list| {
            let Err(at) = list.binary_search_by(|k| k.as_str().cmp(key)) else { return Ok(false) };
            if list.len() >= cap {
                return Err(Error::LimitReached(format!("a block list holds at most {cap} keys")));
            }
            list.insert(at, key.to_string());
            Ok(true)
        })
        .await
    }

    /// Removes `key` from `owner`'s block list if present. Returns the list
    /// afterwards and whether it changed.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn unblock(&self, owner: &str, key: &str) -> Result<(Vec<String>, bool), Error> {
        self.change_blocks(owner, |list| match list.binary_search_by(|k| k.as_str().cmp(key)) {
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
    pub async fn delete_block_list(&self, owner: &str) -> Result<(), Error> {
        self.blocks.delete_current::<BlockList>(owner).await
    }

    /// Applies `edit` (true = changed) to `owner`'s list with a CAS,
    /// re-judging on a lost race; an unchanged list is not written.
    async fn change_blocks(
        &self,
        owner: &str,
        edit: impl Fn(&mut Vec<String>) -> Result<bool, Error>,
    ) -> Result<(Vec<String>, bool), Error> {
        let judge = |current: Option<BlockList>| {
            let mut list = current.map(|b| b.blocked).unwrap_or_default();
            if !edit(&mut list)? {
                return Ok(Change::Keep((list, false)));
            }
            let record = BlockList {
                v: SCHEMA_VERSION,
                sign_pub: owner.to_string(),
                blocked: list.clone(),
                updated_at: fmt_time(now()),
            };
            Ok(Change::Write(record, (list, true)))
        };
        Ok(self.blocks.modify(owner, |current| std::future::ready(judge(current))).await?.0)
    }
}
