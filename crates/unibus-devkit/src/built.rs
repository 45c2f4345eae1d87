//! The workspace's own programs (`unibusd`, the `unibus` CLI, the client
//! example) as the integration tests and the benchmark run them: the file
//! Cargo built beside the running test or bench executable, built first
//! when it is missing or older than the workspace's sources.
//!
//! Why not `CARGO_BIN_EXE_*`: Cargo sets it only for binaries of the test's
//! own package, and the `unibusd` binary is its own package (it needs this
//! kit, which needs the service library whose tests run it). Cargo builds
//! another package's binaries only for that package's own tests, so
//! `cargo test --test it` alone would run whatever binary an earlier build
//! left behind; the freshness check here makes it build the current one.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A program of the workspace: where Cargo puts it in a profile directory
/// and how to build it.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Path relative to the profile directory (`target/debug`).
    pub file: &'static str,
    /// `cargo build` arguments selecting it.
    pub select: &'static [&'static str],
}

/// The service binary.
pub const UNIBUSD: Program = Program { file: "unibusd", select: &["-p", "unibusd-bin", "--bin", "unibusd"] };
/// The CLI.
pub const UNIBUS: Program = Program { file: "unibus", select: &["-p", "unibus-cli", "--bin", "unibus"] };
/// The client library's example (`crates/unibus/examples/hello.rs`).
pub const HELLO: Program =
    Program { file: "examples/hello", select: &["-p", "unibus", "--example", "hello"] };

/// Why a program could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum BuiltError {
    /// The running executable is not inside a Cargo target directory.
    #[error("{0} is not in a Cargo target directory (target/<profile>/deps)")]
    NoTargetDir(PathBuf),
    /// `cargo build` could not run or failed.
    #[error("`cargo build {0}` failed: {1}")]
    Build(String, String),
}

/// Programs already checked (and built if needed) by this process: Cargo
/// decided once, so later calls skip the check.
static CHECKED: tokio::sync::Mutex<Vec<&'static str>> = tokio::sync::Mutex::const_new(Vec::new());

/// The path of `program` in the profile directory of the running
/// executable, after building it with Cargo (same profile and target
/// directory, `--locked`) if it is missing or older than any source of the
/// workspace. Checked once per process; concurrent callers wait for one
/// build.
///
/// # Errors
/// [`BuiltError`] when the executable is not under a target directory or
/// the build fails.
pub async fn path(program: Program) -> Result<PathBuf, BuiltError> {
    let exe = std::env::current_exe().map_err(|_| BuiltError::NoTargetDir(PathBuf::new()))?;
    let profile_dir = profile_dir(&exe).ok_or_else(|| BuiltError::NoTargetDir(exe.clone()))?;
    let path = profile_dir.join(program.file);
    let mut checked = CHECKED.lock().await;
    if checked.contains(&program.file) {
        return Ok(path);
    }
    let fresh = match (modified(&path), workspace_root(&profile_dir)) {
        (Some(built), Some(root)) => newest_source(&root).is_none_or(|newest| newest <= built),
        (Some(_), None) => true, // no sources to compare with: a copied tree
        (None, _) => false,
    };
    if !fresh {
        build(program, &profile_dir).await?;
    }
    checked.push(program.file);
    Ok(path)
}

/// `target/<profile>` for an executable in `target/<profile>/deps` (tests,
/// benches) or `target/<profile>` itself.
fn profile_dir(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    Some(if dir.file_name()? == "deps" { dir.parent()?.to_path_buf() } else { dir.to_path_buf() })
}

/// The checkout the target directory belongs to: the nearest ancestor of
/// the package being tested (`CARGO_MANIFEST_DIR`, set by `cargo test`) or
/// of the target directory that has a `Cargo.lock`.
fn workspace_root(profile_dir: &Path) -> Option<PathBuf> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    manifest
        .iter()
        .map(PathBuf::as_path)
        .chain(std::iter::once(profile_dir))
        .flat_map(Path::ancestors)
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time among what the workspace's programs are
/// built from: manifests, the lock file, `nats.conf` (embedded), and the
/// `src/` and `examples/` trees of the root, of `crates/*` and of
/// `patches/*`.
fn newest_source(root: &Path) -> Option<SystemTime> {
    let mut trees = vec![root.to_path_buf()];
    for group in ["crates", "patches"] {
        if let Ok(entries) = std::fs::read_dir(root.join(group)) {
            trees.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    let mut newest = None;
    for tree in &trees {
        for file in ["Cargo.toml", "Cargo.lock", "nats.conf"] {
            newest = newest.max(modified(&tree.join(file)));
        }
        for dir in ["src", "examples"] {
            newest = newest.max(newest_in(&tree.join(dir)));
        }
    }
    newest
}

fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        newest = newest.max(if path.is_dir() { newest_in(&path) } else { modified(&path) });
    }
    newest
}

/// `cargo build --locked` of `program` into the target directory and
/// profile of `profile_dir`; Cargo's own output goes to stderr (a bench
/// prints its report on stdout).
async fn build(program: Program, profile_dir: &Path) -> Result<(), BuiltError> {
    let mut args: Vec<String> = vec!["build".into(), "--locked".into()];
    args.extend(program.select.iter().map(|s| s.to_string()));
    if let (Some(profile), Some(target_dir)) = (profile_dir.file_name(), profile_dir.parent()) {
        // Cargo's `dev` profile builds into `debug`; other profile names
        // are their directory's.
        if profile != "debug" {
            args.extend(["--profile".into(), profile.to_string_lossy().into_owned()]);
        }
        args.extend(["--target-dir".into(), target_dir.display().to_string()]);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building {} (missing or older than the sources)", program.file);
    let status = tokio::process::Command::new(cargo)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .await
        .map_err(|e| BuiltError::Build(args.join(" "), e.to_string()))?;
    if !status.success() {
        return Err(BuiltError::Build(args.join(" "), status.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_of_tests_benches_and_binaries() {
        let p = |s: &str| profile_dir(Path::new(s)).unwrap();
        assert_eq!(p("/w/target/debug/deps/it-0123"), Path::new("/w/target/debug"));
        assert_eq!(p("/w/target/release/deps/suite-0123"), Path::new("/w/target/release"));
        assert_eq!(p("/w/target/debug/unibusd"), Path::new("/w/target/debug"));
    }

    #[test]
    fn newest_source_sees_a_nested_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/a/src/deep")).unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        let before = newest_source(dir.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("crates/a/src/deep/x.rs"), "").unwrap();
        assert!(newest_source(dir.path()).unwrap() > before);
    }
}
