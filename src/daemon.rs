//! Running unibusd: connect as the service user, open the store (retrying
//! until JetStream answers), then answer the auth callout and the control
//! plane until stopped.
//!
//! Each role has its own NATS connection, so that bytes a client shapes
//! never reach the connection that admits everyone, and no control-plane
//! load queues ahead of an admission: `unibusd-callout` receives only the
//! servers' callout requests, `unibusd-index` carries the index watches
//! and leader probes that admissions read, `unibusd-control` the
//! control-plane requests (client-shaped headers and bodies),
//! `unibusd-store` the control plane's KV reads and writes, `unibusd-sys`
//! CONNZ and KICK answers. A watchdog checks every connection's task each
//! second; if one is gone for good, serving stops and the binary exits
//! non-zero, so a supervisor restarts it instead of it staying up unable
//! to admit anyone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::callout::sealing::Sealer;
use crate::callout::{self, Callout};
use crate::config::Settings;
use crate::kick::Kicker;
use crate::limits::{Gate, Limiter, Penalties};
use crate::metrics::LogEvery;
use crate::service::cursor::Cursors;
use crate::service::{self, Ctx};
use crate::store::Store;

/// Why unibusd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The NATS connection could not be set up.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A subscription failed.
    #[error("cannot subscribe: {0}")]
    Subscribe(String),
    /// The xkey cannot be used for sealing (it has no seed).
    #[error("unusable xkey: {0}")]
    Xkey(String),
}

/// At most one `store unavailable` line per this period (with a count).
const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the watchdog checks that every connection's task is alive.
const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

/// A running unibusd; stops when [`Running::stop`] is called or dropped.
pub struct Running {
    tasks: tokio::task::JoinSet<()>,
    connections: Vec<(&'static str, async_nats::Client)>,
    /// The store the daemon uses.
    pub store: Store,
    /// The callout responder (its latency histogram, for benchmarks).
    pub callout: Arc<Callout>,
    service_seed: String,
}

impl Running {
    /// Stops answering and closes the connection.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for (_, client) in &self.connections {
            let _ = client.drain().await;
        }
    }

    /// unibusd's NATS connections by role (`callout`, `control`, `store`,
    /// `index`, `sys`), for their statistics (reconnects, dropped malformed
    /// messages) in tests and benchmarks.
    pub fn connections(&self) -> &[(&'static str, async_nats::Client)] {
        &self.connections
    }

    /// The service user's seed (for tools and tests that share its account).
    pub fn service_seed(&self) -> String {
        self.service_seed.clone()
    }

    /// Waits until a serving task ends (a connection closed or died for
    /// good); the caller should then exit non-zero.
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

/// Connects as the service user (the connection retries forever).
///
/// # Errors
/// [`StartError::Connect`] when the options are unusable.
pub async fn connect_service(settings: &Settings, name: &str) -> Result<async_nats::Client, StartError> {
    connect_service_with(settings, name, None).await
}

/// Messages a subscription of unibusd's connections holds before more are
/// dropped (async-nats' default is 65,536). The control plane's intake
/// reads its subscriptions as fast as they fill; this is the slack for a
/// flood of small requests until the gate cuts its sender off. Large
/// bodies never pile up here: the intake drops each after a size check,
/// and a sender of more than 4 MiB is cut off.
const SUBSCRIPTION_CAPACITY: usize = 4096;

/// [`connect_service`], counting messages dropped because a subscription's
/// buffer was full in `lost`.
async fn connect_service_with(
    settings: &Settings,
    name: &str,
    lost: Option<Arc<service::intake::Counters>>,
) -> Result<async_nats::Client, StartError> {
    let seed = settings.secrets.service.seed().map_err(|e| StartError::Connect(e.to_string()))?;
    let role = name.to_string();
    let log = Arc::new(LogEvery::new(UNAVAILABLE_LOG_EVERY));
    async_nats::ConnectOptions::with_nkey(seed)
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let (lost, role, log) = (lost.clone(), role.clone(), log.clone());
            async move {
                match event {
                    async_nats::Event::SlowConsumer(sid) => {
                        if let Some(counters) = &lost {
                            counters.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(n) = log.note() {
                            warn!(connection = %role, sid, since_last = n, "subscription buffer full: messages dropped");
                        }
                    }
                    other => info!(connection = %role, event = %other, "NATS connection event"),
                }
            }
        })
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(settings.nats_urls.clone())
        .await
        .map_err(|e| StartError::Connect(e.to_string()))
}

/// Connects as the system-account user (for CONNZ and KICK).
///
/// # Errors
/// [`StartError::Connect`] when the options are unusable.
pub async fn connect_sys(settings: &Settings) -> Result<async_nats::Client, StartError> {
    let seed = settings.secrets.sys.seed().map_err(|e| StartError::Connect(e.to_string()))?;
    async_nats::ConnectOptions::with_nkey(seed)
        .name("unibusd-sys")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(settings.nats_urls.clone())
        .await
        .map_err(|e| StartError::Connect(e.to_string()))
}

/// Secret material every instance of a deployment shares (the issuer
/// seed), from which list-cursor keys are derived.
fn secrets_seed(settings: &Settings) -> String {
    settings.secrets.issuer.seed().unwrap_or_default()
}

/// Opens the store (its indexes on `index`), retrying with backoff while
/// JetStream cannot answer.
pub async fn open_store(
    client: &async_nats::Client,
    index: &async_nats::Client,
    settings: &Settings,
) -> Store {
    let mut delay = Duration::from_millis(100);
    loop {
        match Store::open_split(client.clone(), index.clone(), &settings.store).await {
            Ok(store) => return store,
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "store not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Starts the callout responder and the control-plane service.
///
/// # Errors
/// [`StartError`] when connecting or subscribing fails.
pub async fn start(settings: &Settings) -> Result<Running, StartError> {
    let store_client = connect_service(settings, "unibusd-store").await?;
    let index_client = connect_service(settings, "unibusd-index").await?;
    let store = open_store(&store_client, &index_client, settings).await;
    let secrets = settings.secrets.clone();
    let xkey = match settings.xkey {
        true => Some(Sealer::new(&secrets.xkey).map_err(|e| StartError::Xkey(e.to_string()))?),
        false => None,
    };
    let penalties = Arc::new(Penalties::default());
    let callout = Arc::new(Callout {
        issuer: secrets.issuer,
        penalties: penalties.clone(),
        xkey,
        store: store.clone(),
        user_jwt_ttl: settings.user_jwt_ttl,
        latency: Default::default(),
        revoked_denials: Default::default(),
    });
    let callout_client = connect_service(settings, "unibusd-callout").await?;
    let auth_sub =
        callout::subscribe(&callout_client).await.map_err(|e| StartError::Subscribe(e.to_string()))?;
    let sys = connect_sys(settings).await?;
    let counters = Arc::new(service::intake::Counters::default());
    let control_client = connect_service_with(settings, "unibusd-control", Some(counters.clone())).await?;
    let ctx = Ctx {
        store: store.clone(),
        kicker: Kicker::new(sys.clone()),
        cursors: Cursors::new(secrets_seed(settings).as_bytes()),
        gate: Gate::new(settings.callers.clone()),
        guests: Limiter::new(settings.guest.clone()),
        penalties: penalties.clone(),
        counters: counters.clone(),
        notices: service::Notices::new(control_client.clone()),
        delivery: service::Delivery::new(control_client.clone()),
        mail: crate::limits::mail::MailGate::new(settings.mail.clone()),
        unavailable_log: LogEvery::new(UNAVAILABLE_LOG_EVERY),
    };
    let control = service::start(control_client.clone(), Arc::new(ctx))
        .await
        .map_err(|e| StartError::Subscribe(e.to_string()))?;
    let connections = vec![
        ("callout", callout_client.clone()),
        ("control", control_client.clone()),
        ("store", store_client),
        ("index", index_client),
        ("sys", sys),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(callout::run(callout_client.clone(), auth_sub, callout.clone()));
    tasks.spawn(control);
    tasks.spawn(watchdog(connections.clone()));
    // Both subscriptions are registered with the server before "ready".
    for client in [&callout_client, &control_client] {
        client.flush().await.map_err(|e| StartError::Subscribe(e.to_string()))?;
    }
    info!(xkey = settings.xkey, "unibusd ready");
    let service_seed = settings.secrets.service.seed().unwrap_or_default();
    Ok(Running { tasks, connections, store, callout, service_seed })
}

/// Returns once a connection's task is gone for good: its command channel
/// is closed, so nothing sent on it can ever go out. A connection that is
/// merely disconnected (a server restart) is not gone: its flush waits.
async fn watchdog(connections: Vec<(&'static str, async_nats::Client)>) {
    loop {
        tokio::time::sleep(WATCHDOG_PERIOD).await;
        for (role, client) in &connections {
            let flushed = tokio::time::timeout(WATCHDOG_PERIOD, client.flush()).await;
            if let Ok(Err(e)) = flushed
                && e.kind() == async_nats::client::FlushErrorKind::SendError
            {
                error!(connection = role, error = %e, "NATS connection task is gone; stopping");
                return;
            }
        }
    }
}
