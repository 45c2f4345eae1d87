//! Test harness: every test gets its own real nats-server (on a loopback
//! port it picks itself, own store dir, the repository's nats.conf with fresh keys) and its
//! own unibusd running in-process, plus helpers for identities and clients.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use unibus::{Client, ClientError, Identity};
use unibus_devkit::built;
use unibus_devkit::natsserver::{self, NatsServer, ServerSpec};
use unibus_proto::model::{Role, Room, User};
use unibus_proto::subjects;
use unibus_proto::wire::InviteCreateRequest;
use unibusd::config::Settings;
use unibusd::daemon::{self, Running};
use unibusd::secrets::Secrets;
use unibusd::store::{Store, StoreConfig};

use crate::evidence::{KvSnapshot, Watch};

/// Held by the heavy tests (cluster, 100k users, reconnect storm) so that
/// they do not compete with each other for the machine's two cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A program of the workspace (`unibusd`, the `unibus` CLI, the client
/// example), built first when it is missing or older than the sources
/// (see `unibus_devkit::built`).
pub async fn program(program: built::Program) -> std::path::PathBuf {
    built::path(program).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The `unibusd` binary.
pub async fn unibusd_bin() -> std::path::PathBuf {
    program(built::UNIBUSD).await
}

/// The `unibus` CLI binary.
pub async fn unibus_cli() -> std::path::PathBuf {
    program(built::UNIBUS).await
}

/// Spawns `cmd` (killed on drop) with stdout piped and stderr dropped:
/// the child and the lines of its stdout.
pub fn spawn_stdout_lines(
    cmd: &mut tokio::process::Command,
) -> (tokio::process::Child, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

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
    /// The callout is sealed with the xkey ([`Xkey::Sealed`]).
    pub xkey: bool,
    pub spec: ServerSpec,
    pub dir: tempfile::TempDir,
}

/// Whether the auth callout's traffic is sealed with the xkey (the
/// `xkey:` line of nats.conf, unibusd without `--no-xkey`): production runs
/// sealed; tests that hold for both run both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xkey {
    /// Requests and replies sealed (the deployed configuration).
    Sealed,
    /// Plain callout traffic.
    Plain,
}

impl Stack {
    /// Starts a server and unibusd, callout sealed with the xkey.
    pub async fn start() -> Stack {
        Self::start_with(Xkey::Sealed).await
    }

    /// Starts a server and unibusd, callout traffic not sealed.
    pub async fn start_without_xkey() -> Stack {
        Self::start_with(Xkey::Plain).await
    }

    /// Starts a server and unibusd with the callout sealed or not.
    pub async fn start_with(xkey: Xkey) -> Stack {
        let mut stack = Self::start_server_edited(xkey, str::to_string).await;
        stack.start_daemon().await;
        stack
    }

    /// Starts only the server (callout sealed): unibusd runs as separate
    /// processes ([`Stack::spawn_unibusd`]) or is started later
    /// ([`Stack::start_daemon`]).
    pub async fn start_server_only() -> Stack {
        Self::start_server_edited(Xkey::Sealed, str::to_string).await
    }

    /// [`Stack::start_server_only`] with the callout traffic not sealed.
    pub async fn start_server_only_without_xkey() -> Stack {
        Self::start_server_edited(Xkey::Plain, str::to_string).await
    }

    /// Starts only the server, with the repository's config passed
    /// through `edit` first (for tests that need a test-only addition).
    pub async fn start_server_edited(xkey: Xkey, edit: impl FnOnce(&str) -> String) -> Stack {
        let xkey = xkey == Xkey::Sealed;
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = Secrets::generate();
        let spec =
            natsserver::unibus_spec(dir.path(), &secrets, xkey, natsserver::RANDOM_PORT, "unibus-test")
                .unwrap_or_else(|e| panic!("{e}"));
        let config = std::fs::read_to_string(&spec.config).expect("config");
        std::fs::write(&spec.config, edit(&config)).expect("edited config");
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
        let mut cmd = tokio::process::Command::new(unibusd_bin().await);
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

    /// Starts the server again on the same port and store (unibusd knows
    /// only that URL). Should another process take the port meanwhile, the
    /// server fails to start and so does the test: it never talks to a
    /// stranger (see `NatsServer::start`).
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
            guest: Default::default(),
            callers: Default::default(),
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

    /// The server's auth-error advisories, watched from now on.
    pub async fn auth_errors(&self) -> AuthErrors {
        AuthErrors::watch(&self.url, self.secrets.service.seed().unwrap()).await
    }

    /// The write attempts on KV `buckets` (e.g. `UNIBUS_invites`) and the
    /// requests on `requests`, watched from now on (see [`Watch`]).
    pub async fn watch(&self, buckets: &[&str], requests: &[&str]) -> Watch {
        Watch::start(&self.url, self.secrets.service.seed().unwrap(), buckets, requests).await
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

    /// A member who owns a new room `room`, connected again after creating
    /// it (creating a room kicks the creator so that it comes back with the
    /// room's grants).
    pub async fn room_owner(&self, admin: &Client, name: &str, room: &str) -> (Identity, Client, Room) {
        let (id, c) = self.user(admin, Role::Member, name).await;
        let room = c.create_room(room).await.expect("creates the room");
        let c = self.connect(&id).await.expect("owner reconnects");
        (id, c, room)
    }

    /// `n` active members written straight into the store (no connection,
    /// no invite); their keys, in creation order.
    pub async fn seed_members(&self, n: usize) -> Vec<String> {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let id = Identity::generate();
            let (key, kex) = (id.sign_pub_hex(), id.kex_pub_hex());
            let u = User::new_active(
                unibus_proto::model::Device::first(&key, &kex, None),
                &format!("u{i}"),
                Role::Member,
                "test",
                "test",
            );
            self.store().add_user(&u).await.expect("seeds a member");
            keys.push(key);
        }
        keys
    }

    /// Every KV bucket's stream position and keys (see [`KvSnapshot`]):
    /// equal before and after means KV did not change.
    pub async fn kv_snapshot(&self) -> KvSnapshot {
        KvSnapshot::read(&self.jetstream().await).await
    }
}

/// The auth-error advisories of one server (`$SYS.ACCOUNT.CLIENT.AUTH.ERR`,
/// published in account AUTH), watched with the service user.
pub struct AuthErrors {
    _conn: async_nats::Client,
    sub: async_nats::Subscriber,
}

impl AuthErrors {
    /// Subscribes (and flushes) before returning, so no later refusal is missed.
    pub async fn watch(url: &str, service_seed: String) -> AuthErrors {
        let conn =
            async_nats::ConnectOptions::with_nkey(service_seed).connect(url).await.expect("service user");
        let sub = conn.subscribe(subjects::AUTH_ERROR_ADVISORY).await.expect("advisory subscription");
        conn.flush().await.expect("flush");
        AuthErrors { _conn: conn, sub }
    }

    /// The whole next advisory within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<serde_json::Value> {
        let msg = tokio::time::timeout(limit, futures::StreamExt::next(&mut self.sub)).await.ok()??;
        Some(serde_json::from_slice(&msg.payload).expect("advisory is JSON"))
    }

    /// The `reason` of the next advisory within `limit`.
    pub async fn next_reason(&mut self, limit: Duration) -> Option<String> {
        self.next(limit).await.map(|a| a["reason"].as_str().unwrap_or_default().to_string())
    }

    /// The next advisory within `limit` about the connection `who`: the
    /// nkey it presented (`client.user`) or the name it set (`client.name`).
    /// Advisories about other connections (say, a revoked client's
    /// automatic reconnects) are skipped.
    pub async fn next_about(&mut self, who: &str, limit: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let advisory = self.next(left).await?;
            if advisory["client"]["user"] == who || advisory["client"]["name"] == who {
                return Some(advisory);
            }
        }
    }

    /// The `reason` of the next advisory about `who` within `limit` (see
    /// [`AuthErrors::next_about`]).
    pub async fn next_reason_about(&mut self, who: &str, limit: Duration) -> Option<String> {
        self.next_about(who, limit).await.map(|a| a["reason"].as_str().unwrap_or_default().to_string())
    }
}

/// The text nats-server puts before a callout's own denial reason; a
/// timed-out or unanswered callout reads differently.
pub const SIGNED_DENIAL: &str = "Auth callout service returned an error: ";
/// Well inside the server's 2 s auth timeout: a dropped callout cannot
/// be refused this fast, a signed denial (even after the 1.5 s decision
/// budget) is.
pub const DENIAL_WITHIN: Duration = Duration::from_millis(1900);

/// Runs `connect` (a connect as `who`: the nkey it presents, or the
/// connection name it sets) and asserts unibusd refused it with a signed
/// denial: `NotAuthorized` within [`DENIAL_WITHIN`], and the server's
/// advisory about that connection (not any other refused meanwhile)
/// carries unibus's reason, not a timeout. Returns that reason.
pub async fn expect_signed_denial_of<T>(
    errors: &mut AuthErrors,
    who: &str,
    connect: impl std::future::Future<Output = Result<T, ClientError>>,
) -> String {
    let started = tokio::time::Instant::now();
    let r = connect.await.map(|_| "admitted");
    let took = started.elapsed();
    assert!(matches!(r, Err(ClientError::NotAuthorized)), "{who}: expected a denial, got {r:?}");
    let reason = errors.next_reason_about(who, Duration::from_secs(3)).await;
    let reason = reason.unwrap_or_else(|| panic!("no auth error advisory about {who}"));
    assert!(reason.contains(SIGNED_DENIAL), "not a signed denial: {reason:?} after {took:?}");
    assert!(took < DENIAL_WITHIN, "denial took {took:?} ({reason})");
    reason[reason.find(SIGNED_DENIAL).unwrap() + SIGNED_DENIAL.len()..].to_string()
}

/// Connects `id` to `url`, reporting connection events on the channel.
pub async fn connect_watched_to(url: &str, id: &Identity) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let c = Client::connect(url, id).await.expect("connects");
    let mut events = c.events();
    tokio::spawn(async move {
        // As text (`connected`, `server error: nats: Permissions Violation
        // ...`) for the tests' needles.
        while let Ok(e) = events.recv().await {
            if tx.send(e.to_string()).is_err() {
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
