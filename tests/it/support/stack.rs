//! The stack every test gets: its own real nats-server (on a loopback
//! port it picks itself, own store dir, the repository's nats.conf with
//! fresh keys) and its own unibusd running in-process (or as processes),
//! plus the helpers that make identities, users and rooms on it.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use unibus::{Client, ClientError, Identity};
use unibus_devkit::natsserver::{self, NatsServer, ServerSpec};
use unibus_proto::records::{Role, Room, User};
use unibus_proto::wire::InviteCreateRequest;
use unibusd::config::Settings;
use unibusd::daemon::{self, Running};
use unibusd::secrets::Secrets;
use unibusd::store::{Store, StoreConfig};

use super::denials::AuthErrors;
use super::events::connect_watched_to;
use super::evidence::{KvSnapshot, Watch};
use super::process::unibusd_bin;

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
    /// The callout is sealed with the xkey ([`Xkey::Sealed`]).
    pub xkey: bool,
    pub spec: ServerSpec,
    pub dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xkey {
    /// Requests and replies sealed (the deployed configuration).
    Sealed,
    /// Plain callout traffic.
    Plain,
}

/// The environment of a spawned unibusd with the per-account mail limits
/// out of the way (as [`Stack::start_mail_unlimited`]).
pub const MAIL_UNLIMITED: [(&str, &str); 2] =
    [("UNIBUS_MAIL_RATE", "100000"), ("UNIBUS_MAIL_BURST", "1000000")];

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
        self.spawn_unibusd_with(&[]).await
    }

    /// [`Stack::spawn_unibusd`] with extra environment (its settings).
    pub async fn spawn_unibusd_with(&self, env: &[(&str, &str)]) -> tokio::process::Child {
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
        cmd.envs(env.iter().copied());
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
            mail: Default::default(),
            user_jwt_ttl: Duration::from_secs(3600),
        }
    }

    /// (Re)starts the in-process unibusd.
    pub async fn start_daemon(&mut self) {
        self.start_daemon_with(|_| {}).await;
    }

    /// (Re)starts the in-process unibusd with [`Stack::settings`] changed
    /// by `edit` (smaller limits, a smaller mail bucket).
    pub async fn start_daemon_with(&mut self, edit: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings();
        edit(&mut settings);
        let running = daemon::start(&settings).await.expect("unibusd starts");
        self.daemon = Some(running);
    }

    /// A server and an in-process unibusd whose per-account mail limits
    /// are out of the way ([`MAIL_UNLIMITED`]): for tests that send many
    /// messages and test something else than those limits.
    pub async fn start_mail_unlimited() -> Stack {
        let mut stack = Stack::start_server_only().await;
        stack
            .start_daemon_with(|s| {
                s.mail.rate = 100_000;
                s.mail.burst = 1_000_000;
            })
            .await;
        stack
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
        // The in-process unibusd's store, or (unibusd spawned) one of our own.
        let own;
        let store = match &self.daemon {
            Some(d) => &d.store,
            None => {
                own = self.open_store().await;
                &own
            }
        };
        let (_, token) = store.bootstrap_admin_invite(600).await.expect("bootstrap invite");
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
            let key = id.sign_pub_hex();
            let u = User::new_active(
                unibus_proto::records::Device::first(id.sign_key(), id.kex_key(), None),
                &format!("u{i}"),
                Role::Member,
                unibus_proto::Actor::Bootstrap,
                unibus_proto::InviteId::parse(&"7e".repeat(32)).unwrap(),
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
