//! Three nats-servers in one cluster on loopback, with unibusd given their
//! URLs, for the tests of failover, quorum loss and leader reads.

use std::time::Duration;

use unibus::{Client, Identity};
use unibus_devkit::natsserver::{self, NatsServer};
use unibusd::config::Settings;
use unibusd::daemon::{self, Running};
use unibusd::secrets::Secrets;
use unibusd::store::StoreConfig;

use super::denials::{AuthErrors, expect_signed_denial_of};
use super::stack::init_tracing;

/// Three nats-servers in one cluster (loopback only), buckets at R3, and
/// unibusd given all three URLs (it connects to one and fails over).
pub struct Cluster {
    pub urls: Vec<String>,
    pub daemon: Running,
    pub nodes: Vec<Option<NatsServer>>,
    pub secrets: Secrets,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the cluster and unibusd (R3 buckets).
    pub async fn start() -> Cluster {
        Self::start_with(StoreConfig { replicas: 3, ..StoreConfig::default() }, &[0, 1, 2]).await
    }

    /// Starts the cluster and unibusd with `store` settings, giving unibusd
    /// only the URLs of `daemon_nodes` (so a test knows where it is).
    pub async fn start_with(store: StoreConfig, daemon_nodes: &[usize]) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = Secrets::generate();
        let nodes = start_nodes(dir.path(), &secrets).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        let settings = Settings {
            nats_urls: daemon_nodes.iter().map(|i| urls[*i].parse().unwrap()).collect(),
            secrets,
            xkey: true,
            store,
            guest: Default::default(),
            callers: Default::default(),
            mail: Default::default(),
            user_jwt_ttl: Duration::from_secs(3600),
        };
        let secrets = settings.secrets.clone();
        let daemon = tokio::time::timeout(Duration::from_secs(60), daemon::start(&settings))
            .await
            .expect("cluster ready within 60 s")
            .expect("unibusd starts");
        Cluster { urls, daemon, nodes: nodes.into_iter().map(Some).collect(), secrets, _dir: dir }
    }

    /// Every node refuses `id` with a signed denial of its key as revoked
    /// (see [`expect_signed_denial_of`]).
    pub async fn expect_revoked_everywhere(&self, id: &Identity) {
        let seed = self.daemon.service_seed();
        for url in &self.urls {
            let mut errors = AuthErrors::watch(url, seed.clone()).await;
            let reason =
                expect_signed_denial_of(&mut errors, &id.nkey_public(), Client::connect(url, id)).await;
            assert_eq!(reason, format!("user {} is revoked", id.sign_pub_hex()), "{url}");
        }
    }
}

/// Starts the three nodes. n0 gets a route port from `free_port` and routes
/// to itself (JetStream clustering needs a configured route): if another
/// process takes that port first, n0 fails to bind it and exits, and we
/// pick again; once n0 is up, its pid-named ports file proves the port is
/// n0's. Only then do n1 and n2 start, on ports they pick themselves, with
/// a route to n0 alone (they find each other through n0's gossip). So no
/// node ever routes to a port that is not held by one of ours.
async fn start_nodes(dir: &std::path::Path, secrets: &Secrets) -> Vec<NatsServer> {
    let mut nodes: Vec<NatsServer> = Vec::new();
    for i in 0..3 {
        let node_dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        for attempt in 0.. {
            let mut spec =
                natsserver::unibus_spec(&node_dir, secrets, true, natsserver::RANDOM_PORT, &format!("n{i}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            let (listen, seed) = match nodes.first() {
                None => {
                    let p = natsserver::free_port();
                    (p.to_string(), p)
                }
                Some(n0) => ("-1".to_string(), n0.cluster_port.expect("n0 listens for routes")),
            };
            spec.args = vec![
                "--cluster_name".into(),
                "unibus".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{listen}"),
                "--routes".into(),
                format!("nats://127.0.0.1:{seed}"),
            ];
            match NatsServer::start(&spec).await {
                Ok(n) if i > 0 || n.cluster_port == Some(seed) => {
                    nodes.push(n);
                    break;
                }
                Ok(_) => panic!("n0 does not list its route port {seed}"),
                Err(e) if i == 0 && attempt < 5 => eprintln!("n0 did not start ({e}); another route port"),
                Err(e) => panic!("{e}"),
            }
        }
    }
    nodes
}

/// The name of the server leading `stream`.
pub async fn leader_of(cluster: &Cluster, via: &str, stream: &str) -> String {
    let svc =
        async_nats::ConnectOptions::with_nkey(cluster.daemon.service_seed()).connect(via).await.unwrap();
    let js = async_nats::jetstream::new(svc);
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().cluster.as_ref().and_then(|c| c.leader.clone()).expect("a leader")
}
