//! Signed device lists from the signing side (DESIGN section 11,
//! docs/protocol.md section 11): every device change this client asks for
//! carries the next version of the account's list, signed by this device
//! (`by: "device"` on its own account, `by: "admin"` on another), built on
//! the current version the service shows and signed again when another
//! change landed first (`stale_devices`); an account made before lists
//! gets its first list from its oldest active device
//! ([`Client::sign_device_list`], run by itself when the inbox opens and
//! before a device change); and
//! the history of a contact's list is read page by page
//! ([`Client::lookup_lists`]).
//!
//! A list this client signs on top of must be the one it follows from the
//! version it accepted (the contacts' pin, `contacts`), so that it never
//! signs on top of devices a service made up.

use crate::{Bundle, Client, ClientError};
use unibus_proto::KexSig;
use unibus_proto::devicelist::{By, DeviceList, ListedDevice};
use unibus_proto::endpoint as ep;
use unibus_proto::error::Error;
use unibus_proto::ids::{KexPub, SignPub};
use unibus_proto::records::Device;
use unibus_proto::wire::{
    AdminDeviceAddRequest, DeviceAddRequest, DeviceRevokeReply, DeviceRevokeRequest, DeviceSignRequest,
    Empty, LOOKUP_LISTS_MAX, LookupRequest, PublicUser,
};

/// Attempts at a device change that other changes keep overtaking
/// (`stale_devices`: the list is fetched and signed again), as many as the
/// service's own compare-and-swap makes.
pub const LIST_ATTEMPTS: usize = 16;

/// A locally checked argument; refused as the service would refuse it.
fn arg<T>(checked: Result<T, Error>) -> Result<T, ClientError> {
    checked.map_err(ClientError::Service)
}

/// The device a bundle names, as a list names it.
fn listed(bundle: &Bundle) -> ListedDevice {
    ListedDevice {
        device: bundle.device.to_ascii_lowercase(),
        kex_pub: bundle.kex_pub.to_ascii_lowercase(),
        kex_sig: Some(bundle.kex_sig.clone()),
    }
}

/// `true` when a change refused with this error should be signed again on
/// the current list.
fn is_stale(e: &ClientError) -> bool {
    matches!(e, ClientError::Service(Error::StaleDevices(_)))
}

/// A list the service showed for `account`, checked before anything is
/// signed on top of it: shape, signature, the account's own.
fn checked(account: &str, list: DeviceList) -> Result<DeviceList, ClientError> {
    list.check().map_err(|e| ClientError::BadDeviceList { account: account.into(), why: e.to_string() })?;
    if !list.account.eq_ignore_ascii_case(account) {
        return Err(ClientError::WrongAccount { asked: account.into(), got: list.account });
    }
    Ok(list)
}

impl Client {
    /// This account's current signed device list, checked (shape,
    /// signature, this account's); `None` while it has none (an account
    /// made before lists, until [`Client::sign_device_list`]).
    ///
    /// # Errors
    /// `forbidden` (not an active device); [`ClientError::BadDeviceList`],
    /// [`ClientError::WrongAccount`].
    pub async fn device_list(&self) -> Result<Option<DeviceList>, ClientError> {
        let reply = self.request::<ep::DeviceList>(&Empty {}).await?;
        reply.device_list.map(|l| checked(self.account(), l)).transpose()
    }

    /// This account's current list, which this device must be on to sign
    /// the next version.
    /// (A device no longer on it is refused by the service, `forbidden`.)
    /// An account made before lists gets its first one here when this is
    /// its oldest active device.
    async fn own_list(&self) -> Result<DeviceList, ClientError> {
        if self.device_list().await?.is_none() {
            self.sign_device_list().await?.ok_or_else(|| ClientError::NoDeviceList(self.account().into()))?;
        }
        let account = self.account().to_string();
        self.accepted_list(&account).await?.ok_or(ClientError::NoDeviceList(account))
    }

    /// The current list of another account, for an admin's change.
    async fn their_list(&self, account: &str) -> Result<Option<DeviceList>, ClientError> {
        self.accepted_list(account).await
    }

    /// `account`'s current list, when this client follows it from the one
    /// it accepted before (as for sealing, `contacts`): a device never
    /// signs a next version on top of a list a hostile service made up (a
    /// ghost device in it would then carry this device's signature).
    async fn accepted_list(&self, account: &str) -> Result<Option<DeviceList>, ClientError> {
        let set = self.device_set(account).await?;
        if let Some(hold) = set.hold {
            return Err(crate::DeviceRefused::ListHeld { account: account.into(), hold }.into());
        }
        Ok(self.contacts().accepted(account).cloned())
    }

    /// Runs `attempt` until it is not refused as `stale_devices`, at most
    /// [`LIST_ATTEMPTS`] times.
    async fn signing_again<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(e) if is_stale(&e) && tries < LIST_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    /// Adds a new device to this account from its public bundle
    /// ([`Bundle::parse`] verifies it first), with the next version of the
    /// account's list signed by this device.
    ///
    /// # Errors
    /// `bad_request` (a bundle for another account, a binding that does not
    /// verify), `user_exists` (the key is a device or account already),
    /// `limit_reached` (8 active devices), `forbidden`, `stale_devices`
    /// (other changes kept landing first); [`ClientError::NoDeviceList`].
    pub async fn add_device(&self, bundle: &Bundle) -> Result<Device, ClientError> {
        let me = &self.identity.signing;
        self.signing_again(|| async {
            let current = self.own_list().await?;
            let mut devices = current.devices.clone();
            devices.push(listed(bundle));
            let req = DeviceAddRequest {
                device: arg(SignPub::parse_field("device", &bundle.device))?,
                kex_pub: arg(KexPub::parse(&bundle.kex_pub))?,
                kex_sig: arg(KexSig::parse(&bundle.kex_sig))?,
                name: bundle.name.clone(),
                device_list: current.next(devices, me, By::Device),
            };
            Ok(self.request::<ep::DeviceAdd>(&req).await?.device)
        })
        .await
    }

    /// Revokes a device of this account (itself or a newer one; an admin:
    /// any of its own) and closes its connections, with the next version
    /// of the account's list signed by this device. An admin revokes
    /// another account's device with [`Client::admin_revoke_device`]
    /// (which signs that account's list); a device that is not on this
    /// account's list is asked about without a list, so the service's
    /// refusal says why.
    ///
    /// # Errors
    /// `bad_request` (malformed key; another account's device that needs
    /// [`Client::admin_revoke_device`]), `not_found` (no such device),
    /// `forbidden` (an older device, the last active one, another
    /// account's device for a non-admin), `stale_devices`;
    /// [`ClientError::NoDeviceList`].
    pub async fn revoke_device(&self, device: &str) -> Result<DeviceRevokeReply, ClientError> {
        let key = arg(SignPub::parse_field("device", device))?;
        let me = &self.identity.signing;
        self.signing_again(|| async {
            let current = self.own_list().await?;
            let devices: Vec<ListedDevice> =
                current.devices.iter().filter(|d| d.device != key.as_str()).cloned().collect();
            // Not on this account's list: asked without one, so that the
            // service says why (`not_found`, `forbidden`; an admin's revoke
            // in an account that has no list yet goes through).
            let device_list =
                (devices.len() < current.devices.len()).then(|| current.next(devices, me, By::Device));
            let req = DeviceRevokeRequest { device: key.clone(), device_list };
            self.request::<ep::DeviceRevoke>(&req).await
        })
        .await
    }

    /// Revokes device `device` of another account `account` (admin), with
    /// the next version of that account's list signed by this device,
    /// `by: "admin"` (none when that account has no list yet); of this
    /// account, as [`Client::revoke_device`].
    ///
    /// # Errors
    /// As [`Client::revoke_device`]; `forbidden` (not an admin, the last
    /// active device of the last active admin).
    pub async fn admin_revoke_device(
        &self,
        account: &str,
        device: &str,
    ) -> Result<DeviceRevokeReply, ClientError> {
        let key = arg(SignPub::parse_field("device", device))?;
        arg(SignPub::parse_field("account", account))?;
        if account.eq_ignore_ascii_case(self.account()) {
            return self.revoke_device(device).await;
        }
        let me = &self.identity.signing;
        self.signing_again(|| async {
            let device_list = match self.their_list(account).await? {
                Some(current) => {
                    let devices =
                        current.devices.iter().filter(|d| d.device != key.as_str()).cloned().collect();
                    Some(current.next(devices, me, By::Admin))
                }
                None => None,
            };
            let req = DeviceRevokeRequest { device: key.clone(), device_list };
            self.request::<ep::DeviceRevoke>(&req).await
        })
        .await
    }

    /// Adds a recovery device to an account that has no active device
    /// (admin), with the next version of its list signed by this device,
    /// `by: "admin"` (version 1 when it has none). Its contacts stop
    /// sealing to it until they accept the new list.
    ///
    /// # Errors
    /// `bad_request` (binding does not verify for that account),
    /// `not_found` (no such account), `forbidden` (not admin, or the account
    /// still has an active device), `user_exists`, `limit_reached`,
    /// `stale_devices`.
    pub async fn admin_add_device(&self, bundle: &Bundle) -> Result<Device, ClientError> {
        let account = arg(SignPub::parse_field("account", &bundle.account))?;
        let me = &self.identity.signing;
        self.signing_again(|| async {
            let device_list = match self.their_list(account.as_str()).await? {
                Some(current) => {
                    let mut devices = current.devices.clone();
                    devices.push(listed(bundle));
                    current.next(devices, me, By::Admin)
                }
                None => {
                    DeviceList::sign(account.as_str(), 1, String::new(), vec![listed(bundle)], me, By::Admin)
                }
            };
            let req = AdminDeviceAddRequest {
                account: account.clone(),
                device: arg(SignPub::parse_field("device", &bundle.device))?,
                kex_pub: arg(KexPub::parse(&bundle.kex_pub))?,
                kex_sig: arg(KexSig::parse(&bundle.kex_sig))?,
                name: bundle.name.clone(),
                device_list,
            };
            Ok(self.request::<ep::AdminDeviceAdd>(&req).await?.device)
        })
        .await
    }

    /// Signs the first list of an account made before lists when this is
    /// its oldest active device (`unibus.device.sign`), and answers the
    /// account's list: the one it has, the one just signed, or `None` when
    /// it has none and another device must sign it.
    ///
    /// # Errors
    /// `forbidden` (not an active device), `bad_request` (the service
    /// refused the list); [`ClientError::BadDeviceList`].
    pub async fn sign_device_list(&self) -> Result<Option<DeviceList>, ClientError> {
        let reply = self.request::<ep::DeviceList>(&Empty {}).await?;
        if let Some(list) = reply.device_list {
            return checked(self.account(), list).map(Some);
        }
        let mut active: Vec<&Device> = reply
            .devices
            .iter()
            .filter(|d| d.status == unibus_proto::records::DeviceStatus::Active)
            .collect();
        active.sort_by_key(|d| d.seq);
        if active.first().is_none_or(|d| d.device != self.sign_pub()) {
            return Ok(None);
        }
        let devices = active.iter().map(|d| d.listed()).collect();
        let list =
            DeviceList::sign(self.account(), 1, String::new(), devices, &self.identity.signing, By::Device);
        match self.request::<ep::DeviceSign>(&DeviceSignRequest { device_list: list }).await {
            Ok(reply) => checked(self.account(), reply.device_list).map(Some),
            // Another device's change landed first: the list exists now.
            Err(ClientError::Service(Error::BadRequest(_))) => self.device_list().await,
            Err(e) => Err(e),
        }
    }

    /// Account `account`'s public record and every version of its list
    /// after `since`, oldest first (asked for page by page until the
    /// current version; each version's signature is checked, the steps
    /// between them are the caller's to judge, see
    /// [`judge`](crate::contacts::judge)).
    ///
    /// # Errors
    /// As [`Client::lookup`]; [`ClientError::BadDeviceList`] for a version
    /// out of order or that does not verify.
    pub async fn lookup_lists(
        &self,
        account: &str,
        since: u64,
    ) -> Result<(PublicUser, Vec<DeviceList>), ClientError> {
        let (user, lists) = self.lookup_history(account, since).await?;
        let mut after = since;
        for list in &lists {
            let list = checked(account, list.clone())?;
            if list.version != after + 1 {
                return Err(ClientError::BadDeviceList {
                    account: account.into(),
                    why: format!("version {} where version {} was due", list.version, after + 1),
                });
            }
            after = list.version;
        }
        Ok((user, lists))
    }

    /// [`Client::lookup_lists`] without the checks: the versions as the
    /// service sent them, asked for again from the last one while a page
    /// comes back full and short of the current version.
    pub(crate) async fn lookup_history(
        &self,
        account: &str,
        since: u64,
    ) -> Result<(PublicUser, Vec<DeviceList>), ClientError> {
        let sign_pub = arg(SignPub::parse(account))?;
        let mut lists: Vec<DeviceList> = Vec::new();
        let mut after = since;
        loop {
            let req = LookupRequest { sign_pub: sign_pub.clone(), since: Some(after) };
            let user = self.request::<ep::UserLookup>(&req).await?.user;
            if !account.eq_ignore_ascii_case(&user.sign_pub.to_hex()) {
                return Err(ClientError::WrongAccount {
                    asked: account.into(),
                    got: user.sign_pub.to_string(),
                });
            }
            let page = user.device_lists.clone().unwrap_or_default();
            let full = page.len() >= LOOKUP_LISTS_MAX;
            let last = page.last().map(|l| l.version);
            lists.extend(page);
            let current = user.device_list.as_ref().map_or(0, |l| l.version);
            match last {
                // Only forward: a page that does not advance ends the walk.
                Some(last) if full && last > after && last < current => after = last,
                _ => return Ok((user, lists)),
            }
        }
    }
}
