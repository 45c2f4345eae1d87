//! The deployment's key material: issuer account nkey, callout xkey,
//! service user nkey and system-account user nkey. Generated fresh by
//! `unibusd keygen` into an env file (mode 0600) whose `*_PUB` lines are
//! what `nats.conf` reads and whose `*_SEED` lines only unibusd reads.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

/// Env names, shared by keygen, `nats.conf`, the dev stack and settings.
pub mod env {
    /// Issuer account public key (A...).
    pub const ISSUER_PUB: &str = "UNIBUS_ISSUER_PUB";
    /// Issuer account seed (SA...).
    pub const ISSUER_SEED: &str = "UNIBUS_ISSUER_SEED";
    /// Callout xkey public key (X...).
    pub const XKEY_PUB: &str = "UNIBUS_XKEY_PUB";
    /// Callout xkey seed (SX...).
    pub const XKEY_SEED: &str = "UNIBUS_XKEY_SEED";
    /// Service user public key (U...).
    pub const SERVICE_PUB: &str = "UNIBUS_SERVICE_PUB";
    /// Service user seed (SU...).
    pub const SERVICE_SEED: &str = "UNIBUS_SERVICE_SEED";
    /// System-account user public key (U...).
    pub const SYS_PUB: &str = "UNIBUS_SYS_PUB";
    /// System-account user seed (SU...).
    pub const SYS_SEED: &str = "UNIBUS_SYS_SEED";
    /// JetStream store directory (read by `nats.conf`).
    pub const STORE_DIR: &str = "UNIBUS_STORE_DIR";
}

/// Why key material could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A setting is absent.
    #[error("missing setting {0}")]
    Missing(&'static str),
    /// A setting does not decode as the expected key type.
    #[error("malformed setting {0}: {1}")]
    Malformed(&'static str, String),
    /// File I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// All keys of one deployment.
pub struct Secrets {
    /// Signs callout responses and user JWTs.
    pub issuer: nkeys::KeyPair,
    /// Seals callout traffic.
    pub xkey: nkeys::XKey,
    /// unibusd's own NATS user (AUTH account, bypasses the callout).
    pub service: nkeys::KeyPair,
    /// A system-account user (SYS, bypasses the callout).
    pub sys: nkeys::KeyPair,
}

impl Clone for Secrets {
    fn clone(&self) -> Self {
        // Secrets are only ever built from seeds, so every seed exists.
        let kp = |k: &nkeys::KeyPair| {
            nkeys::KeyPair::from_seed(&k.seed().expect("seeded key")).expect("own seed parses")
        };
        let xkey = nkeys::XKey::from_seed(&self.xkey.seed().expect("seeded xkey")).expect("own seed parses");
        Secrets { issuer: kp(&self.issuer), xkey, service: kp(&self.service), sys: kp(&self.sys) }
    }
}

impl Secrets {
    /// Fresh keys from the OS CSPRNG.
    pub fn generate() -> Secrets {
        Secrets {
            issuer: nkeys::KeyPair::new_account(),
            xkey: nkeys::XKey::new(),
            service: nkeys::KeyPair::new_user(),
            sys: nkeys::KeyPair::new_user(),
        }
    }

    /// The public keys, as `nats.conf` reads them from the environment.
    pub fn public_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (env::ISSUER_PUB, self.issuer.public_key()),
            (env::XKEY_PUB, self.xkey.public_key()),
            (env::SERVICE_PUB, self.service.public_key()),
            (env::SYS_PUB, self.sys.public_key()),
        ]
    }

    /// Public keys and seeds, as `KEY=VALUE` lines.
    pub fn to_env_file(&self) -> String {
        let seed = |r: nkeys::error::Error| r.to_string();
        let seeds = [
            (env::ISSUER_SEED, self.issuer.seed().map_err(seed)),
            (env::XKEY_SEED, self.xkey.seed().map_err(seed)),
            (env::SERVICE_SEED, self.service.seed().map_err(seed)),
            (env::SYS_SEED, self.sys.seed().map_err(seed)),
        ];
        let mut out = String::from("# unibus keys: keep secret (mode 0600). Made by `unibusd keygen`.\n");
        for (k, v) in self.public_env() {
            out.push_str(&format!("{k}={v}\n"));
        }
        for (k, v) in seeds {
            out.push_str(&format!("{k}={}\n", v.unwrap_or_default()));
        }
        out
    }

    /// Writes the env file with mode 0600, refusing to overwrite.
    ///
    /// # Errors
    /// [`SecretsError::Io`] when the file exists or cannot be written.
    pub fn write_new(&self, path: &Path) -> Result<(), SecretsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |e| SecretsError::Io(path.display().to_string(), e);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        f.write_all(self.to_env_file().as_bytes()).map_err(io)
    }

    /// Loads the seeds from a lookup (environment, env file, or both).
    ///
    /// # Errors
    /// Names the missing or malformed setting.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
        let need = |k: &'static str| get(k).filter(|v| !v.is_empty()).ok_or(SecretsError::Missing(k));
        let kp = |k: &'static str, prefix: char| -> Result<nkeys::KeyPair, SecretsError> {
            let v = need(k)?;
            let kp = nkeys::KeyPair::from_seed(&v).map_err(|e| SecretsError::Malformed(k, e.to_string()))?;
            if !kp.public_key().starts_with(prefix) {
                return Err(SecretsError::Malformed(k, format!("expected a seed of a {prefix}... key")));
            }
            Ok(kp)
        };
        let xkey = nkeys::XKey::from_seed(&need(env::XKEY_SEED)?)
            .map_err(|e| SecretsError::Malformed(env::XKEY_SEED, e.to_string()))?;
        Ok(Secrets {
            issuer: kp(env::ISSUER_SEED, 'A')?,
            xkey,
            service: kp(env::SERVICE_SEED, 'U')?,
            sys: kp(env::SYS_SEED, 'U')?,
        })
    }
}

impl Secrets {
    /// Loads every seed from an env file written by [`Secrets::write_new`].
    ///
    /// # Errors
    /// [`SecretsError`] when unreadable or a seed is missing or malformed.
    pub fn read_file(path: &Path) -> Result<Secrets, SecretsError> {
        let map = read_env_file(path)?;
        Secrets::from_lookup(|k| map.get(k).cloned())
    }
}

/// Reads `KEY=VALUE` lines (comments and blank lines skipped).
///
/// # Errors
/// [`SecretsError::Io`] when the file cannot be read.
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>, SecretsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretsError::Io(path.display().to_string(), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_round_trip() {
        let s = Secrets::generate();
        let dir = std::env::temp_dir().join(format!("unibus-secrets-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        s.write_new(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(s.write_new(&dir).is_err(), "never overwrites");
        let map = read_env_file(&dir).unwrap();
        let back = Secrets::from_lookup(|k| map.get(k).cloned()).unwrap();
        assert_eq!(back.issuer.public_key(), s.issuer.public_key());
        assert_eq!(back.xkey.public_key(), s.xkey.public_key());
        std::fs::remove_file(&dir).unwrap();
        let err = Secrets::from_lookup(|_| None).err().unwrap();
        assert!(err.to_string().contains("UNIBUS_XKEY_SEED"));
    }
}
