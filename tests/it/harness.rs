//! Test harness: every test gets its own real nats-server (free loopback
//! port, own store dir, the repository's nats.conf with fresh keys) and its
//! own unibusd running in-process, plus helpers for identities and clients.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use unibus::client::{Client, ClientError, Identity};
use unibus::config::Settings;
use unibus::daemon::{self, Running};
use unibus::model::Role;
use unibus::natsserver::{self, NatsServer, ServerSpec};
use unibus::proto::InviteCreateRequest;
use unibus::secrets::Secrets;
use unibus::store::{Store, StoreConfig};

/// Held by the heavy tests (cluster, 100k users, reconnect storm) so that
/// they do not compete with each other for the machine's two cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// One nats-server and one unibusd.
pub struct Stack {
    pub server: Option<NatsServer>,
    pub daemon: Option<Running>,
    pub secrets: Secrets,
    pub url: String,
    pub xkey: bool,
    pub spec: ServerSpec,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a server (callout encryption on or off) and unibusd.
    pub async fn start(xkey: bool) -> Stack {
        let mut stack = Self::start_server_only(xkey).await;
        stack.start_daemon().await;
        stack
    }

    /// Starts only the server: unibusd runs as separate processes
    /// ([`Stack::spawn_unibusd`]).
    pub async fn start_server_only(xkey: bool) -> Stack {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = Secrets::generate();
        let spec =
            natsserver::unibus_spec(dir.path(), &secrets, xkey, natsserver::free_port(), "unibus-test")
                .unwrap_or_else(|e| panic!("{e}"));
        let server = NatsServer::start(&spec).await.unwrap_or_else(|e| panic!("{e}"));
        let url = server.url.clone();
        Stack { server: Some(server), daemon: None, secrets, url, xkey, spec, dir }
    }

    /// Starts `unibusd run` as a child process and waits until it is ready.
    pub async fn spawn_unibusd(&self) -> tokio::process::Child {
        use tokio::io::AsyncBufReadExt as _;
        let keys = self.dir.path().join("keys.env");
        if !keys.exists() {
            self.secrets.write_new(&keys).unwrap();
        }
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_unibusd"));
        cmd.args(["run", "--nats-url", &self.url, "--secrets"]).arg(&keys);
        if !self.xkey {
            cmd.arg("--no-xkey");
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("unibusd starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("unibusd ready") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "unibusd did not become ready");
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        child
    }

    /// A store handle of this test's own (not unibusd's).
    pub async fn open_store(&self) -> Store {
        Store::open(self.service_nats().await, &StoreConfig::default()).await.expect("store")
    }

    /// Starts the server again on the same port and store.
    pub async fn restart_server(&mut self, port: u16) {
        let mut spec = self.spec.clone();
        spec.port = port;
        spec.log_file = Some(self.dir.path().join("nats-server-2.log"));
        self.server = Some(NatsServer::start(&spec).await.unwrap_or_else(|e| panic!("{e}")));
    }

    /// unibusd settings for this stack.
    pub fn settings(&self) -> Settings {
        Settings {
            nats_urls: vec![self.url.parse().unwrap()],
            secrets: self.secrets.clone(),
            xkey: self.xkey,
            store: StoreConfig::default(),
            user_jwt_ttl: Duration::from_secs(3600),
        }
    }

    /// (Re)starts the in-process unibusd.
    pub async fn start_daemon(&mut self) {
        let running = daemon::start(&self.settings()).await.expect("unibusd starts");
        self.daemon = Some(running);
    }

    /// The store unibusd uses.
    pub fn store(&self) -> &Store {
        &self.daemon.as_ref().expect("daemon running").store
    }

    /// A connection as the service user (account AUTH, no callout).
    pub async fn service_nats(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_nkey(self.secrets.service.seed().unwrap())
            .connect(&self.url)
            .await
            .expect("service user connects")
    }

    /// JetStream in account AUTH.
    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.service_nats().await)
    }

    /// Connects `id` through the callout.
    pub async fn connect(&self, id: &Identity) -> Result<Client, ClientError> {
        Client::connect(&self.url, id).await
    }

    /// Connects `id` and reports its connection events (`connected`,
    /// `disconnected`, `server error: Permissions Violation ...`) on the
    /// returned channel.
    pub async fn connect_watched(&self, id: &Identity) -> (Client, mpsc::UnboundedReceiver<String>) {
        connect_watched_to(&self.url, id).await
    }

    /// Bootstraps the first admin and returns it connected as admin.
    pub async fn admin(&self) -> (Identity, Client) {
        let (_, token) = self.store().bootstrap_admin_invite(600).await.expect("bootstrap invite");
        let id = Identity::generate();
        let guest = self.connect(&id).await.expect("guest connects");
        let user = guest.register(&token.to_hex(), Some("root")).await.expect("admin registers");
        assert_eq!(user.role, Role::Admin);
        drop(guest);
        let admin = self.connect(&id).await.expect("admin reconnects");
        (id, admin)
    }

    /// Invites and registers a new user with `role`, connected as that user.
    pub async fn user(&self, admin: &Client, role: Role, name: &str) -> (Identity, Client) {
        let inv = admin
            .create_invite(&InviteCreateRequest { role: Some(role), ..Default::default() })
            .await
            .expect("invite");
        let id = Identity::generate();
        let guest = self.connect(&id).await.expect("guest connects");
        guest.register(&inv.link, Some(name)).await.expect("registers");
        drop(guest);
        let c = self.connect(&id).await.expect("user reconnects");
        (id, c)
    }

    /// (messages, last sequence) of every bucket: equal before and after
    /// means KV did not change.
    pub async fn kv_fingerprint(&self) -> Vec<(u64, u64)> {
        let js = self.jetstream().await;
        let mut out = Vec::new();
        for name in ["KV_UNIBUS_users", "KV_UNIBUS_invites", "KV_UNIBUS_rooms"] {
            let mut s = js.get_stream(name).await.expect("stream");
            let info = s.info().await.expect("info");
            out.push((info.state.messages, info.state.last_sequence));
        }
        out
    }
}

/// Connects `id` to `url`, reporting connection events on the channel.
pub async fn connect_watched_to(url: &str, id: &Identity) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let c = Client::connect(url, id).await.expect("connects");
    let mut events = c.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    (c, rx)
}

/// Waits (bounded) for an async server error containing `needle`.
pub async fn expect_server_error(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    expect_event_within(rx, needle, Duration::from_secs(3)).await
}

/// Waits at most `limit` for an event containing `needle`.
pub async fn expect_event_within(
    rx: &mut mpsc::UnboundedReceiver<String>,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.contains(needle) => return e,
            Ok(Some(_)) => continue,
            _ => panic!("no event containing {needle:?} within {limit:?}"),
        }
    }
}

/// The wire error code of a failed call.
pub fn code(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Service(e)) => e.code().to_string(),
        other => panic!("expected a service error, got {other:?}"),
    }
}

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
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = Secrets::generate();
        let cluster_ports: Vec<u16> = (0..3).map(|_| natsserver::free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut spec =
                natsserver::unibus_spec(&node_dir, &secrets, true, natsserver::free_port(), &format!("n{i}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            spec.args = vec![
                "--cluster_name".into(),
                "unibus".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]),
                "--routes".into(),
                routes.join(","),
            ];
            nodes.push(NatsServer::start(&spec).await.unwrap_or_else(|e| panic!("{e}")));
        }
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        let settings = Settings {
            nats_urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
            secrets,
            xkey: true,
            store: StoreConfig { replicas: 3, ..StoreConfig::default() },
            user_jwt_ttl: Duration::from_secs(3600),
        };
        let secrets = settings.secrets.clone();
        let daemon = tokio::time::timeout(Duration::from_secs(60), daemon::start(&settings))
            .await
            .expect("cluster ready within 60 s")
            .expect("unibusd starts");
        Cluster { urls, daemon, nodes: nodes.into_iter().map(Some).collect(), secrets, _dir: dir }
    }
}
