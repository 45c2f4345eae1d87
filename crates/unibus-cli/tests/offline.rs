//! The `unibus` binary without a server: help, key generation, and the
//! exit code and JSON error of a failed connect. (The flows against a real
//! nats-server are in the service's tests, `tests/it/cli.rs`, which run this
//! same binary.)

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

const UNIBUS: &str = env!("CARGO_BIN_EXE_unibus");

fn unibus(args: &[&str]) -> Output {
    Command::new(UNIBUS).args(args).env_remove("UNIBUS_URL").env_remove("UNIBUS_IDENTITY").output().unwrap()
}

fn last_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_default()
}

#[test]
fn help_names_the_commands() {
    let out = unibus(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["keygen", "register", "whoami", "invite", "room", "send", "listen", "block"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn keygen_writes_a_private_seed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.nk");
    let p = path.to_str().unwrap();
    let out = unibus(&["--json", "--identity", p, "keygen"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    let key = v["sign_pub"].as_str().unwrap_or_else(|| panic!("no sign_pub in {v}"));
    assert_eq!(key.len(), 64);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0, "seed readable by others");
    let before = std::fs::read(&path).unwrap();
    let again = unibus(&["--json", "--identity", p, "keygen"]);
    assert!(!again.status.success(), "keygen must not overwrite");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_failed_connect_exits_4_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.nk");
    let p = path.to_str().unwrap();
    assert!(unibus(&["--identity", p, "keygen"]).status.success());
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = unibus(&["--json", "--url", &url, "--identity", p, "whoami"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["error"]["code"], "connection");
}

/// A reader that went away (`unibus keygen | head -0`) ends the command
/// quietly with status 141, as SIGPIPE would, not with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.nk");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(UNIBUS)
        .args(["--json", "--identity", path.to_str().unwrap(), "keygen"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
