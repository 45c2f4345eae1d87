//! unibusd settings: flags and environment parsed once by clap, then
//! validated into typed [`Settings`] (decoded keys, durations) before
//! anything connects or subscribes. Errors name the setting.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::stream::StorageType;

use crate::limits::mail::MailLimits;
use crate::limits::{CallerLimits, GuestLimits};
use crate::secrets::{Secrets, SecretsError, read_env_file};
use crate::store::{MailConfig, StoreConfig};

/// Raw flags (each also read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "UNIBUS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Env file with the key seeds (from `unibusd keygen`); variables set in
    /// the environment take precedence over the file.
    #[arg(long, env = "UNIBUS_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Callout encryption off (only for a nats.conf without `xkey`).
    #[arg(long, env = "UNIBUS_NO_XKEY")]
    pub no_xkey: bool,
    /// KV bucket replicas when creating buckets (1..=5; 3 on a cluster).
    #[arg(long, env = "UNIBUS_KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,
    /// Revisions kept per key (1..=64).
    #[arg(long, env = "UNIBUS_KV_HISTORY", default_value_t = 5)]
    pub kv_history: i64,
    /// KV storage: file or memory.
    #[arg(long, env = "UNIBUS_KV_STORAGE", default_value = "file")]
    pub kv_storage: String,
    /// Timeout of each store request in milliseconds (fail closed after it).
    #[arg(long, env = "UNIBUS_STORE_TIMEOUT_MS", default_value_t = 1000)]
    pub store_timeout_ms: u64,
    /// Lifetime of issued user JWTs in seconds (revocation backstop).
    #[arg(long, env = "UNIBUS_USER_JWT_TTL_SECS", default_value_t = 3600)]
    pub user_jwt_ttl_secs: u64,
    /// `unibus.register` requests one key may send at once (1..=1000).
    #[arg(long, env = "UNIBUS_REGISTER_KEY_BURST", default_value_t = 5)]
    pub register_key_burst: u32,
    /// Then one request per this many milliseconds (1..=3600000).
    #[arg(long, env = "UNIBUS_REGISTER_KEY_INTERVAL_MS", default_value_t = 2000)]
    pub register_key_interval_ms: u64,
    /// `unibus.register` requests per second over all keys (1..=1000000).
    #[arg(long, env = "UNIBUS_REGISTER_RATE", default_value_t = 2000)]
    pub register_rate: u32,
    /// Burst of the global register rate (1..=1000000).
    #[arg(long, env = "UNIBUS_REGISTER_BURST", default_value_t = 4000)]
    pub register_burst: u32,
    /// Guests' `unibus.register` requests handled at once (1..=65536).
    #[arg(long, env = "UNIBUS_REGISTER_IN_FLIGHT", default_value_t = CallerLimits::default().guest_in_flight)]
    pub register_in_flight: usize,
    /// Keys the per-key register limit tracks at most (1024..=10000000).
    #[arg(long, env = "UNIBUS_REGISTER_TRACKED_KEYS", default_value_t = 65_536)]
    pub register_tracked_keys: usize,
    /// Cost units one device may spend per second on the control plane
    /// (a read costs 1, a write 2, a write that sweeps 5; 1..=1000000).
    #[arg(long, env = "UNIBUS_DEVICE_RATE", default_value_t = CallerLimits::default().rate)]
    pub device_rate: u32,
    /// Cost units one device may spend at once (5..=1000000).
    #[arg(long, env = "UNIBUS_DEVICE_BURST", default_value_t = CallerLimits::default().burst)]
    pub device_burst: u32,
    /// Control-plane requests of one device handled at once (1..=1024).
    #[arg(long, env = "UNIBUS_DEVICE_IN_FLIGHT", default_value_t = CallerLimits::default().per_caller_in_flight)]
    pub device_in_flight: u32,
    /// Control-plane requests handled at once, guests' registrations
    /// aside (1..=65536).
    #[arg(long, env = "UNIBUS_CONTROL_IN_FLIGHT", default_value_t = CallerLimits::default().max_in_flight)]
    pub control_in_flight: usize,
    /// How long a stored message waits for its devices, in seconds (the
    /// mail bucket's max_age; 60..=31536000, default 30 days).
    #[arg(long, env = "UNIBUS_MAIL_RETENTION_SECS", default_value_t = unibus_proto::mail::DEFAULT_RETENTION_SECS)]
    pub mail_retention_secs: u64,
    /// Size of the mail bucket in bytes (1048576..=2^50, default 1 GiB);
    /// a send that would pass it is refused (limit_reached).
    #[arg(long, env = "UNIBUS_MAIL_MAX_BYTES", default_value_t = MailConfig::default().max_bytes)]
    pub mail_max_bytes: i64,
    /// Messages per second one account may store (1..=100000).
    #[arg(long, env = "UNIBUS_MAIL_RATE", default_value_t = MailLimits::default().rate)]
    pub mail_rate: u32,
    /// ... beyond this many at once (1..=1000000).
    #[arg(long, env = "UNIBUS_MAIL_BURST", default_value_t = MailLimits::default().burst)]
    pub mail_burst: u32,
    /// Envelope bytes one account may store per UTC day (65536..=2^40,
    /// default 16 MiB).
    #[arg(long, env = "UNIBUS_MAIL_DAILY_BYTES", default_value_t = MailLimits::default().daily_bytes)]
    pub mail_daily_bytes: u64,
}

/// Why settings were refused; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key setting.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Any other setting.
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
}

/// Validated settings.
pub struct Settings {
    /// Server URLs.
    pub nats_urls: Vec<async_nats::ServerAddr>,
    /// Keys.
    pub secrets: Secrets,
    /// Seal callout traffic.
    pub xkey: bool,
    /// Store creation and timeouts.
    pub store: StoreConfig,
    /// Limits on `unibus.register` (guest floods).
    pub guest: GuestLimits,
    /// Per-device budgets and the control plane's cap on requests in
    /// flight.
    pub callers: CallerLimits,
    /// The limits on storing messages.
    pub mail: MailLimits,
    /// User JWT lifetime.
    pub user_jwt_ttl: Duration,
}

impl DaemonArgs {
    /// Validates the flags into settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad or missing setting.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let file = match &self.secrets {
            Some(path) => read_env_file(path)?,
            None => Default::default(),
        };
        let secrets = Secrets::from_lookup(|k| {
            std::env::var(k).ok().filter(|v| !v.is_empty()).or_else(|| file.get(k).cloned())
        })?;
        let nats_urls = self
            .nats_url
            .split(',')
            .map(|u| async_nats::ServerAddr::from_str(u.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid("UNIBUS_NATS_URL", e.to_string()))?;
        if !(1..=5).contains(&self.kv_replicas) {
            return Err(ConfigError::Invalid("UNIBUS_KV_REPLICAS", "must be 1..=5".into()));
        }
        if !(1..=64).contains(&self.kv_history) {
            return Err(ConfigError::Invalid("UNIBUS_KV_HISTORY", "must be 1..=64".into()));
        }
        let storage = match self.kv_storage.as_str() {
            "file" => StorageType::File,
            "memory" => StorageType::Memory,
            other => {
                return Err(ConfigError::Invalid(
                    "UNIBUS_KV_STORAGE",
                    format!("{other:?} is not file|memory"),
                ));
            }
        };
        if !(50..=60_000).contains(&self.store_timeout_ms) {
            return Err(ConfigError::Invalid("UNIBUS_STORE_TIMEOUT_MS", "must be 50..=60000".into()));
        }
        if !(60..=86_400 * 30).contains(&self.user_jwt_ttl_secs) {
            return Err(ConfigError::Invalid("UNIBUS_USER_JWT_TTL_SECS", "must be 60..=2592000".into()));
        }
        Ok(Settings {
            nats_urls,
            secrets,
            xkey: !self.no_xkey,
            store: StoreConfig {
                replicas: self.kv_replicas,
                history: self.kv_history,
                storage,
                timeout: Duration::from_millis(self.store_timeout_ms),
                mail: MailConfig {
                    retention: Duration::from_secs(check(
                        "UNIBUS_MAIL_RETENTION_SECS",
                        self.mail_retention_secs,
                        60,
                        365 * 86_400,
                        "60..=31536000",
                    )?),
                    max_bytes: check(
                        "UNIBUS_MAIL_MAX_BYTES",
                        self.mail_max_bytes,
                        1 << 20,
                        1 << 50,
                        "1048576..=2^50",
                    )?,
                },
            },
            mail: MailLimits {
                rate: check("UNIBUS_MAIL_RATE", self.mail_rate, 1, 100_000, "1..=100000")?,
                burst: check("UNIBUS_MAIL_BURST", self.mail_burst, 1, 1_000_000, "1..=1000000")?,
                daily_bytes: check(
                    "UNIBUS_MAIL_DAILY_BYTES",
                    self.mail_daily_bytes,
                    1 << 16,
                    1 << 40,
                    "65536..=2^40",
                )?,
            },
            guest: self.guest_limits()?,
            callers: self.caller_limits()?,
            user_jwt_ttl: Duration::from_secs(self.user_jwt_ttl_secs),
        })
    }

    /// The per-device control-plane budgets.
    fn caller_limits(&self) -> Result<CallerLimits, ConfigError> {
        Ok(CallerLimits {
            rate: check("UNIBUS_DEVICE_RATE", self.device_rate, 1, 1_000_000, "1..=1000000")?,
            burst: check("UNIBUS_DEVICE_BURST", self.device_burst, 5, 1_000_000, "5..=1000000")?,
            per_caller_in_flight: check(
                "UNIBUS_DEVICE_IN_FLIGHT",
                self.device_in_flight,
                1,
                1024,
                "1..=1024",
            )?,
            max_in_flight: check("UNIBUS_CONTROL_IN_FLIGHT", self.control_in_flight, 1, 65_536, "1..=65536")?,
            guest_in_flight: check(
                "UNIBUS_REGISTER_IN_FLIGHT",
                self.register_in_flight,
                1,
                65_536,
                "1..=65536",
            )?,
            ..CallerLimits::default()
        })
    }

    /// The `unibus.register` flood limits.
    fn guest_limits(&self) -> Result<GuestLimits, ConfigError> {
        Ok(GuestLimits {
            per_key_burst: check("UNIBUS_REGISTER_KEY_BURST", self.register_key_burst, 1, 1000, "1..=1000")?,
            per_key_interval: Duration::from_millis(check(
                "UNIBUS_REGISTER_KEY_INTERVAL_MS",
                self.register_key_interval_ms,
                1,
                3_600_000,
                "1..=3600000",
            )?),
            global_per_sec: check("UNIBUS_REGISTER_RATE", self.register_rate, 1, 1_000_000, "1..=1000000")?,
            global_burst: check("UNIBUS_REGISTER_BURST", self.register_burst, 1, 1_000_000, "1..=1000000")?,
            max_keys: check(
                "UNIBUS_REGISTER_TRACKED_KEYS",
                self.register_tracked_keys,
                1024,
                10_000_000,
                "1024..=10000000",
            )?,
        })
    }
}

/// `v` if it lies in `lo..=hi`, else an error naming the setting and `range`.
fn check<T: PartialOrd + Copy>(
    name: &'static str,
    v: T,
    lo: T,
    hi: T,
    range: &str,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::Invalid(name, format!("must be {range}")));
    }
    Ok(v)
}
