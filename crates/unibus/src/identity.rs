//! A device's identity (the wallet): one Ed25519 seed from which the X25519
//! key is derived, and the account the device belongs to. Saved as a NATS
//! nkey seed file (`SU...`, mode 0600) that the stock `nats` CLI can use as
//! `--nkey`; a device that is not its account's first keeps the account id
//! in a sidecar file `<seed file>.account` (docs/protocol.md section 8).

use std::io::Write as _;
use std::path::Path;

use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;
use unibus_proto::devicelist::{By, DeviceList, ListedDevice};

/// Why an identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The identity file could not be read or written.
    #[error("identity file {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a user nkey seed.
    #[error("{0}: not a NATS user nkey seed (SU...)")]
    Format(String),
    /// The account sidecar file does not hold one account id.
    #[error("{0}: expected one account id (64 hex characters)")]
    Account(String),
    /// The seed file is readable or writable by group or others.
    #[error("{0}: seed file is accessible by group or others (mode {1:04o}); run `chmod 600 {0}`")]
    Permissions(String, u32),
}

/// Ed25519 signing key plus the X25519 key derived from it, and the
/// account it is a device of. Has no `Debug`.
#[derive(Clone)]
pub struct Identity {
    pub(crate) signing: ed25519_dalek::SigningKey,
    pub(crate) kex: x25519_dalek::StaticSecret,
    /// The account id when this is not the account's first device.
    account: Option<String>,
}

/// A device's public bundle (docs/protocol.md section 8): what a new device
/// shows (as a QR code or one line) so that a device of the account can add
/// it with `unibus.device.add`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The account it asks to join.
    pub account: String,
    /// The new device's Ed25519 key.
    pub device: String,
    /// Its X25519 key.
    pub kex_pub: String,
    /// Its binding to `account`.
    pub kex_sig: String,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Prefix of a bundle's one-line form.
pub const BUNDLE_PREFIX: &str = "unibus://device/";

impl Bundle {
    /// The one-line form: `unibus://device/` and the JSON in unpadded
    /// base64url.
    pub fn to_line(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::to_vec(self).expect("a bundle always encodes");
        format!("{BUNDLE_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    /// Parses the one-line form (or the bare JSON) and verifies the
    /// binding.
    ///
    /// # Errors
    /// `bad_request` when it does not parse or the binding does not verify.
    pub fn parse(text: &str) -> Result<Bundle, unibus_proto::Error> {
        use base64::Engine as _;
        let text = text.trim();
        let json = match text.strip_prefix(BUNDLE_PREFIX) {
            Some(b64) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| unibus_proto::Error::bad("bundle: not base64url"))?,
            None => text.as_bytes().to_vec(),
        };
        let bundle: Bundle =
            serde_json::from_slice(&json).map_err(|e| unibus_proto::Error::bad(format!("bundle: {e}")))?;
        unibus_proto::binding::verify_binding_str(
            &bundle.account,
            &bundle.device,
            &bundle.kex_pub,
            &bundle.kex_sig,
        )?;
        Ok(bundle)
    }
}

impl Identity {
    /// Fresh keys from the OS CSPRNG.
    pub fn generate() -> Identity {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Identity::from_seed(seed)
    }

    /// The identity of a 32-byte Ed25519 seed. The X25519 secret is
    /// HKDF-SHA256(salt "unibus", ikm seed, info "unibus x25519 v1").
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        let hk = Hkdf::<Sha256>::new(Some(b"unibus"), &seed);
        let mut kex = [0u8; 32];
        hk.expand(b"unibus x25519 v1", &mut kex).expect("32 bytes is a valid HKDF length");
        Identity {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
            kex: x25519_dalek::StaticSecret::from(kex),
            account: None,
        }
    }

    /// The same keys as a device of `account` (a lowercase or uppercase hex
    /// account id). The account's first device is its own account.
    ///
    /// # Errors
    /// `bad_request` when `account` is not a valid key.
    pub fn with_account(mut self, account: &str) -> Result<Identity, unibus_proto::Error> {
        let account = unibus_proto::SignPub::parse_field("account", account)?;
        self.account = (account.as_str() != self.sign_pub_hex()).then(|| account.as_str().to_string());
        Ok(self)
    }

    /// The account id: the account this device was made for, or its own
    /// key for an account's first device.
    pub fn account_hex(&self) -> String {
        self.account.clone().unwrap_or_else(|| self.sign_pub_hex())
    }

    /// Seals a version-2 envelope from this device of its account, dated
    /// `ts_ms` (unix milliseconds), for `recipients` (docs/envelope.md,
    /// "Sealing"). Sending it is the caller's: [`crate::Client::mail_send`]
    /// stores it, a publish on `to.subject` delivers it live only.
    ///
    /// # Errors
    /// [`unibus_proto::e2e::SealError`]: a weak recipient key, no or too
    /// many recipients, addressing that does not fit the kind.
    pub fn seal(
        &self,
        to: &unibus_proto::e2e::Addressing<'_>,
        recipients: &[unibus_proto::e2e::Recipient],
        body: &[u8],
        ts_ms: i64,
    ) -> Result<unibus_proto::e2e::Envelope, unibus_proto::e2e::SealError> {
        let account = self.account_hex();
        let sender = unibus_proto::e2e::Sender { device: &self.signing, account: &account };
        unibus_proto::e2e::seal_v2(&sender, to, recipients, body, ts_ms)
    }

    /// Opens an envelope as this device (docs/envelope.md, "Opening",
    /// steps 1 to 7): it arrived on `subject`, is checked against `guard`
    /// (read only) and must be fresh at `now_ms`. The sender's device is
    /// NOT checked (step 8 needs a lookup): [`crate::Inbox`] and
    /// [`crate::Client::waiting`] do that too.
    ///
    /// # Errors
    /// [`unibus_proto::e2e::Reject`]: why it was refused.
    pub fn open(
        &self,
        raw: &[u8],
        subject: &str,
        guard: &unibus_proto::e2e::ReplayGuard,
        now_ms: i64,
    ) -> Result<unibus_proto::e2e::Opened, unibus_proto::e2e::Reject> {
        let (account, device) = (self.account_hex(), self.sign_pub_hex());
        let me = unibus_proto::e2e::Receiver { account: &account, device: &device, kex_secret: &self.kex };
        unibus_proto::e2e::open_as(raw, subject, &me, guard, now_ms)
    }

    /// This device as a recipient of envelopes: its key and X25519 key.
    pub fn recipient(&self) -> unibus_proto::e2e::Recipient {
        let kex_pub = x25519_dalek::PublicKey::from(&self.kex).to_bytes();
        unibus_proto::e2e::Recipient { sign_pub: self.sign_pub_hex(), kex_pub }
    }

    /// This device's binding of its X25519 key to `account`.
    pub fn bind(&self, account: &str) -> unibus_proto::KexSig {
        unibus_proto::binding::sign_binding(&self.signing, account, &self.kex_pub_hex())
    }

    /// Version 1 of the device list of the account this key registers:
    /// itself alone, signed by itself (what `unibus.register` carries).
    pub fn first_device_list(&self) -> DeviceList {
        let me = self.sign_pub_hex();
        DeviceList::first(&self.signing, &self.kex_pub_hex(), &self.bind(&me).to_string())
    }

    /// The version after `current` holding `devices`, signed by this key
    /// for `by`.
    pub fn next_device_list(&self, current: &DeviceList, devices: Vec<ListedDevice>, by: By) -> DeviceList {
        current.next(devices, &self.signing, by)
    }

    /// Any list, signed by this key: `account`, `version`, `prev`,
    /// `devices` and `by` as given (tools and tests that build lists the
    /// service must refuse).
    pub fn sign_device_list(
        &self,
        account: &str,
        version: u64,
        prev: String,
        devices: Vec<ListedDevice>,
        by: By,
    ) -> DeviceList {
        DeviceList::sign(account, version, prev, devices, &self.signing, by)
    }

    /// This device as a signed list names it, bound to its account.
    pub fn listed(&self) -> ListedDevice {
        ListedDevice {
            device: self.sign_pub_hex(),
            kex_pub: self.kex_pub_hex(),
            kex_sig: Some(self.bind(&self.account_hex()).to_string()),
        }
    }

    /// The public bundle that asks to join this identity's account.
    pub fn bundle(&self, name: Option<&str>) -> Bundle {
        let account = self.account_hex();
        Bundle {
            kex_sig: self.bind(&account).to_string(),
            account,
            device: self.sign_pub_hex(),
            kex_pub: self.kex_pub_hex(),
            name: name.map(str::to_string),
        }
    }

    /// Signs a NATS server nonce, only if it is shaped like nats-server's
    /// (docs/protocol.md section 8, signing hygiene): a hostile server must
    /// not obtain this key's signature over a binding or an envelope.
    ///
    /// # Errors
    /// A reason when the nonce is refused.
    pub fn sign_nonce(&self, nonce: &[u8]) -> Result<Vec<u8>, &'static str> {
        use ed25519_dalek::Signer as _;
        let nonce = std::str::from_utf8(nonce).map_err(|_| "nonce is not text")?;
        if !unibus_proto::binding::nonce_is_signable(nonce) {
            return Err(
                "nonce is not shaped like nats-server's (1..=64 of [A-Za-z0-9_-]); refusing to sign it",
            );
        }
        Ok(self.signing.sign(nonce.as_bytes()).to_bytes().to_vec())
    }

    /// Reads an nkey seed file, only if nobody but its owner may read or
    /// write it (mode `& 0o077 == 0`, checked on the opened file).
    ///
    /// # Errors
    /// [`IdentityError`] when unreadable, accessible by group or others
    /// ([`IdentityError::Permissions`]), or not a user seed.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let name = path.display().to_string();
        let io = |source| IdentityError::Io { path: name.clone(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions(name.clone(), mode));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SU"))
            .ok_or(IdentityError::Format(name.clone()))?;
        let kp = nkeys::KeyPair::from_seed(seed).map_err(|_| IdentityError::Format(name.clone()))?;
        let (_, raw) = nkeys::decode_seed(seed).map_err(|_| IdentityError::Format(name.clone()))?;
        if !kp.public_key().starts_with('U') {
            return Err(IdentityError::Format(name));
        }
        let identity = Identity::from_seed(raw);
        let sidecar = account_path(path);
        match std::fs::read_to_string(&sidecar) {
            Ok(text) => {
                let bad = || IdentityError::Account(sidecar.display().to_string());
                identity.with_account(text.trim()).map_err(|_| bad())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(identity),
            Err(source) => Err(IdentityError::Io { path: sidecar.display().to_string(), source }),
        }
    }

    /// Writes the nkey seed file with mode 0600, refusing to overwrite.
    ///
    /// # Errors
    /// [`IdentityError::Io`] when it exists or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| IdentityError::Io { path: name.clone(), source })?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| IdentityError::Io { path: name.clone(), source })?;
        f.write_all(format!("{}\n", self.nkey_seed()).as_bytes())
            .map_err(|source| IdentityError::Io { path: name, source })?;
        if let Some(account) = &self.account {
            let sidecar = account_path(path);
            std::fs::write(&sidecar, format!("{account}\n"))
                .map_err(|source| IdentityError::Io { path: sidecar.display().to_string(), source })?;
        }
        Ok(())
    }

    /// Ed25519 public key, lowercase hex (the user id).
    pub fn sign_pub_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// X25519 public key, lowercase hex.
    pub fn kex_pub_hex(&self) -> String {
        hex::encode(x25519_dalek::PublicKey::from(&self.kex).as_bytes())
    }

    /// Ed25519 public key, as records hold it (this device's key).
    pub fn sign_key(&self) -> unibus_proto::Key {
        unibus_proto::Key::from_bytes(self.signing.verifying_key().to_bytes())
    }

    /// X25519 public key, as records hold it.
    pub fn kex_key(&self) -> unibus_proto::Key {
        unibus_proto::Key::from_bytes(*x25519_dalek::PublicKey::from(&self.kex).as_bytes())
    }

    fn keypair(&self) -> nkeys::KeyPair {
        nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, self.signing.to_bytes())
            .expect("a 32-byte Ed25519 seed always encodes")
    }

    /// The NATS user nkey seed (`SU...`) of the signing key.
    pub fn nkey_seed(&self) -> String {
        self.keypair().seed().expect("a seeded key pair has a seed")
    }

    /// The NATS user public nkey (`U...`).
    pub fn nkey_public(&self) -> String {
        self.keypair().public_key()
    }
}

/// The sidecar file holding a device's account id.
fn account_path(seed: &Path) -> std::path::PathBuf {
    let mut name = seed.as_os_str().to_owned();
    name.push(".account");
    std::path::PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_round_trip() {
        let dir = tempfile_dir();
        let path = dir.join("id.seed");
        let id = Identity::generate();
        id.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(id.save(&path).is_err(), "never overwrites");
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.sign_pub_hex(), id.sign_pub_hex());
        assert_eq!(back.kex_pub_hex(), id.kex_pub_hex());
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("SU"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_device_remembers_its_account_and_its_bundle_verifies() {
        let dir = tempfile_dir();
        let path = dir.join("laptop.seed");
        let phone = Identity::generate();
        let laptop = Identity::generate().with_account(&phone.sign_pub_hex()).unwrap();
        laptop.save(&path).unwrap();
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.account_hex(), phone.sign_pub_hex());
        let line = back.bundle(Some("laptop")).to_line();
        let bundle = Bundle::parse(&line).unwrap();
        assert_eq!(bundle.device, laptop.sign_pub_hex());
        assert_eq!(bundle.account, phone.sign_pub_hex());
        // A bundle edited to name another account no longer verifies.
        let forged = Bundle { account: Identity::generate().sign_pub_hex(), ..bundle };
        assert!(Bundle::parse(&serde_json::to_string(&forged).unwrap()).is_err());
        // The first device is its own account: no sidecar.
        assert_eq!(phone.clone().with_account(&phone.sign_pub_hex()).unwrap().account, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_server_shaped_nonces_are_signed() {
        let id = Identity::generate();
        assert!(id.sign_nonce(b"c2VydmVyLW5vbmNl_-x").is_ok());
        assert!(id.sign_nonce(b"").is_err());
        assert!(id.sign_nonce(&[0, 0, 0, 12]).is_err());
        assert!(id.sign_nonce("a".repeat(65).as_bytes()).is_err());
        assert!(id.sign_nonce(b"abc=").is_err());
    }

    /// A seed file that group or others may read or write is refused with
    /// an error naming the path and `chmod 600`; 0600 and 0400 load.
    #[test]
    fn load_refuses_seed_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile_dir();
        let path = dir.join("id.seed");
        Identity::generate().save(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Identity::load(&path).err().expect("refused");
            assert!(matches!(err, IdentityError::Permissions(_, m) if m == mode), "{mode:o}: {err}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()) && text.contains("chmod 600"), "{text}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(Identity::load(&path).is_ok(), "{mode:o}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("unibus-id-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
