//! User operations on `UNIBUS_users`: add, get, list, revoke, restore,
//! delete, is-authorized and has-admin. Each change is one CAS on the
//! revision just read.

use super::{KvError, MAX_CAS_ATTEMPTS, Store};
use crate::error::Error;
use crate::model::{Role, User, UserStatus, fmt_time, now};

/// What the store says about a key, for the callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No record: may connect as guest (register only).
    Unknown,
    /// A record in good standing.
    Active(Role),
    /// A revoked record: denied.
    Revoked,
}

impl Store {
    /// Reads a user and its revision.
    ///
    /// # Errors
    /// `unavailable` when the store cannot answer.
    pub async fn get_user(&self, sign_pub: &str) -> Result<Option<(User, u64)>, Error> {
        Ok(self.users.get(sign_pub).await?)
    }

    /// Is this key authorized, and as what? Fails closed: an error here must
    /// deny.
    ///
    /// # Errors
    /// `unavailable` when the store cannot answer.
    pub async fn standing(&self, sign_pub: &str) -> Result<Standing, Error> {
        Ok(match self.get_user(sign_pub).await? {
            None => Standing::Unknown,
            Some((u, _)) if u.status == UserStatus::Active => Standing::Active(u.role),
            Some(_) => Standing::Revoked,
        })
    }

    /// Adds a user record; `user_exists` when the key is taken.
    ///
    /// # Errors
    /// `user_exists`, or `unavailable`.
    pub async fn add_user(&self, user: &User) -> Result<u64, Error> {
        match self.users.create(&user.sign_pub, user).await {
            Err(KvError::Conflict) => Err(Error::UserExists),
            other => Ok(other?),
        }
    }

    /// Every user record (a scan of the bucket's keys).
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        let mut out = Vec::new();
        for key in self.users.keys().await? {
            if let Some((u, _)) = self.get_user(&key).await? {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// True when any admin record exists, active or revoked.
    ///
    /// # Errors
    /// `unavailable`.
    pub async fn has_admin(&self) -> Result<bool, Error> {
        Ok(self.list_users().await?.iter().any(|u| u.role == Role::Admin))
    }

    /// Sets a user's status with a CAS, retrying on a lost race. Setting
    /// the status it already has changes nothing (idempotent).
    ///
    /// # Errors
    /// `not_found`, or `unavailable`.
    pub async fn set_user_status(&self, sign_pub: &str, status: UserStatus, by: &str) -> Result<User, Error> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut user, rev) =
                self.get_user(sign_pub).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
            if user.status == status {
                return Ok(user);
            }
            let t = fmt_time(now());
            user.status = status;
            (user.revoked_at, user.revoked_by) = match status {
                UserStatus::Revoked => (Some(t.clone()), Some(by.to_string())),
                UserStatus::Active => (None, None),
            };
            user.updated_at = t;
            match self.users.update(sign_pub, &user, rev).await {
                Ok(_) => return Ok(user),
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable("too many concurrent writers on one record".into()))
    }

    /// Deletes a user record (hard delete), CAS on the revision read.
    ///
    /// # Errors
    /// `not_found`, or `unavailable`.
    pub async fn delete_user(&self, sign_pub: &str) -> Result<User, Error> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (user, rev) =
                self.get_user(sign_pub).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
            match self.users.delete(sign_pub, rev).await {
                Ok(()) => return Ok(user),
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable("too many concurrent writers on one record".into()))
    }
}
