//! The workspace's programs run as processes by the tests: `unibusd`, the
//! `unibus` CLI and the client example (built when stale, see
//! `unibus_devkit::built`), the CLI runner with `--json`, and a child whose
//! stdout is read line by line. Every run is a `tokio::process` one: the
//! tests' runtime also drives the in-process unibusd, which a blocking wait
//! would starve.

use std::path::Path;

use unibus_devkit::built;

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

/// Runs the `unibus` binary with `--json` against `url` as `identity`:
/// exit code, the last stdout line as JSON, stderr.
pub async fn cli(url: &str, identity: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let (code, stdout, stderr) = cli_output(url, identity, args).await;
    let value = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    (code, value, stderr)
}

/// Runs the `unibus` binary with `--json`: exit code, stdout, stderr.
pub async fn cli_output(url: &str, identity: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(crate::support::unibus_cli().await)
        .args(["--json", "--url", url, "--identity"])
        .arg(identity)
        .args(args)
        .env_remove("UNIBUS_URL")
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}
