//! A person's identity (the wallet): one Ed25519 seed from which the X25519
//! key is derived. Saved as a NATS nkey seed file (`SU...`, mode 0600) that
//! the stock `nats` CLI can use as `--nkey`.

use std::io::Write as _;
use std::path::Path;

use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;

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
    /// The seed file is readable or writable by group or others.
    #[error("{0}: seed file is accessible by group or others (mode {1:04o}); run `chmod 600 {0}`")]
    Permissions(String, u32),
}

/// Ed25519 signing key plus the X25519 key derived from it. Has no `Debug`.
#[derive(Clone)]
pub struct Identity {
    pub(crate) signing: ed25519_dalek::SigningKey,
    pub(crate) kex: x25519_dalek::StaticSecret,
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
        }
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
        Ok(Identity::from_seed(raw))
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
            .map_err(|source| IdentityError::Io { path: name, source })
    }

    /// Ed25519 public key, lowercase hex (the user id).
    pub fn sign_pub_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// X25519 public key, lowercase hex.
    pub fn kex_pub_hex(&self) -> String {
        hex::encode(x25519_dalek::PublicKey::from(&self.kex).as_bytes())
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
