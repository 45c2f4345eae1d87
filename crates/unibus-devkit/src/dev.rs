//! The local stack in one command (`unibusd dev`): a nats-server child with
//! the repository's `nats.conf` and keys generated into a data directory,
//! unibusd in-process, and a first-admin invite; then one JSON line on
//! stdout once everything is ready. Stops both on the shutdown signal.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;

use crate::natsserver::{self, NatsServer};
use unibus_proto::error::Error;
use unibus_proto::keys::InviteToken;
use unibus_proto::wire::TTL_DEFAULT_SECS;
use unibusd::config::Settings;
use unibusd::daemon;
use unibusd::secrets::Secrets;

/// Flags of `unibusd dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Client port on 127.0.0.1.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Keys, config, JetStream store and server log live here.
    #[arg(long, default_value = ".unibus-dev")]
    pub data_dir: PathBuf,
    /// Delete the data directory first (new keys, empty store).
    #[arg(long)]
    pub fresh: bool,
}

/// Why the dev stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Data directory or key file problems.
    #[error("{0}")]
    Setup(String),
    /// nats-server problems.
    #[error(transparent)]
    Server(#[from] natsserver::ServerError),
    /// unibusd problems.
    #[error(transparent)]
    Daemon(#[from] daemon::StartError),
    /// Store problems while minting the admin invite.
    #[error("first-admin invite: {0}")]
    Store(Error),
}

/// A running local stack: nats-server child plus in-process unibusd.
pub struct LocalStack {
    /// The nats-server child.
    pub server: NatsServer,
    /// unibusd.
    pub running: daemon::Running,
    /// Canonical data directory.
    pub data_dir: PathBuf,
    /// The key file.
    pub secrets_path: PathBuf,
    /// The first-admin invite, unless an admin already exists.
    pub admin_invite: Option<InviteToken>,
}

impl LocalStack {
    /// Starts nats-server and unibusd in `args.data_dir` and mints the
    /// first-admin invite.
    ///
    /// # Errors
    /// [`DevError`] when any part fails to start.
    pub async fn start(args: &DevArgs) -> Result<LocalStack, DevError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| DevError::Setup(format!("{what}: {e}"));
        if args.fresh && args.data_dir.exists() {
            std::fs::remove_dir_all(&args.data_dir).map_err(|e| setup("remove data dir", &e))?;
        }
        std::fs::create_dir_all(&args.data_dir).map_err(|e| setup("create data dir", &e))?;
        let data_dir = args.data_dir.canonicalize().map_err(|e| setup("data dir", &e))?;
        let secrets_path = data_dir.join("secrets.env");
        let secrets = if secrets_path.exists() {
            Secrets::read_file(&secrets_path).map_err(|e| setup("keys", &e))?
        } else {
            let s = Secrets::generate();
            s.write_new(&secrets_path).map_err(|e| setup("write keys", &e))?;
            s
        };
        let spec = natsserver::unibus_spec(&data_dir, &secrets, true, args.port, "unibus-dev")?;
        let server = NatsServer::start(&spec).await?;
        let settings = Settings {
            nats_urls: vec![server.url.parse().map_err(|e| setup("url", &e))?],
            secrets,
            xkey: true,
            store: Default::default(),
            guest: Default::default(),
            callers: Default::default(),
            mail: Default::default(),
            user_jwt_ttl: std::time::Duration::from_secs(3600),
        };
        let running = daemon::start(&settings).await?;
        let admin_invite = match running.store.bootstrap_admin_invite(TTL_DEFAULT_SECS).await {
            Ok((_, token)) => Some(token),
            Err(Error::Forbidden(_)) => None,
            Err(e) => return Err(DevError::Store(e)),
        };
        Ok(LocalStack { server, running, data_dir, secrets_path, admin_invite })
    }

    /// Stops unibusd, then nats-server (SIGTERM).
    pub async fn stop(self) {
        self.running.stop().await;
        self.server.stop().await;
    }
}

/// Runs the stack until `shutdown` resolves, after printing one JSON line.
///
/// # Errors
/// [`DevError`] when any part fails to start.
pub async fn run(args: DevArgs, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    let stack = LocalStack::start(&args).await?;
    let line = serde_json::json!({
        "url": stack.server.url,
        "admin_invite": stack.admin_invite.as_ref().map(|t| t.to_hex()),
        "admin_link": stack.admin_invite.as_ref().map(|t| t.link()),
        "data_dir": stack.data_dir,
        "secrets": stack.secrets_path,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    shutdown.await;
    stack.stop().await;
    Ok(())
}
