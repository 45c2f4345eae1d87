//! The `unibus` binary without a server: help, key generation, device
//! requests and bundle errors, and the exit code and JSON error of a failed
//! connect. (The flows against a real
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
    for cmd in [
        "keygen", "register", "whoami", "invite", "room", "send", "listen", "block", "device", "admin",
        "verify",
    ] {
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

/// A port nothing listens on: a command that got as far as connecting
/// would fail with `connection` (exit 4), not with the code under test.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("nats://127.0.0.1:{port}")
}

/// `device request` writes a private seed and the account sidecar, and
/// prints a bundle whose binding verifies for that account; run again for
/// the same account it shows the same device; for another account, or
/// over the account's own key, it refuses and leaves the file alone.
#[test]
fn device_request_makes_a_key_for_the_account_and_a_verifying_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (first, laptop) = (dir.path().join("first.nk"), dir.path().join("laptop.nk"));
    let (f, l) = (first.to_str().unwrap(), laptop.to_str().unwrap());
    let account =
        last_json(&unibus(&["--json", "--identity", f, "keygen"]))["sign_pub"].as_str().unwrap().to_string();
    let out =
        unibus(&["--json", "--identity", l, "device", "request", "--account", &account, "--name", "laptop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    let bundle = unibus::Bundle::parse(v["bundle"].as_str().unwrap()).unwrap();
    assert_eq!((bundle.account.as_str(), bundle.name.as_deref()), (account.as_str(), Some("laptop")));
    assert_eq!(v["device"], bundle.device.as_str());
    assert_ne!(bundle.device, account);
    assert_eq!(
        std::fs::metadata(&laptop).unwrap().permissions().mode() & 0o077,
        0,
        "seed readable by others"
    );
    let id = unibus::Identity::load(&laptop).unwrap();
    assert_eq!((id.account_hex(), id.sign_pub_hex()), (account.clone(), bundle.device.clone()));
    let seed = std::fs::read(&laptop).unwrap();

    let again = last_json(&unibus(&["--json", "--identity", l, "device", "request", "--account", &account]));
    assert_eq!(again["device"], bundle.device.as_str(), "the same key is shown again");
    let other = unibus::Identity::generate().sign_pub_hex();
    let out = unibus(&["--json", "--identity", l, "device", "request", "--account", &other]);
    assert_eq!((out.status.code(), last_json(&out)["error"]["code"].as_str()), (Some(5), Some("local")));
    let out = unibus(&["--json", "--identity", f, "device", "request", "--account", &account]);
    assert_eq!(out.status.code(), Some(5), "the account's first key is not a new device");
    assert_eq!(std::fs::read(&laptop).unwrap(), seed);
}

/// A malformed account id is `bad_request` (exit 1) and writes no key.
#[test]
fn device_request_refuses_a_malformed_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.nk");
    for account in ["00", &"AB".repeat(31), &"zz".repeat(32)] {
        let out = unibus(&[
            "--json",
            "--identity",
            path.to_str().unwrap(),
            "device",
            "request",
            "--account",
            account,
        ]);
        assert_eq!(
            (out.status.code(), last_json(&out)["error"]["code"].as_str()),
            (Some(1), Some("bad_request"))
        );
        assert!(!path.exists(), "no key written for {account}");
    }
}

/// `device add`, `admin device add` and `verify` refuse malformed input
/// with `bad_request` before they connect: garbage, a bundle whose binding
/// was made for another account, a bundle with an unknown field.
#[test]
fn bundle_and_account_errors_are_bad_request_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.nk");
    let p = path.to_str().unwrap();
    let account =
        last_json(&unibus(&["--json", "--identity", p, "keygen"]))["sign_pub"].as_str().unwrap().to_string();
    let new = unibus::Identity::generate().with_account(&account).unwrap();
    let good = new.bundle(None);
    let forged = unibus::Bundle { account: unibus::Identity::generate().sign_pub_hex(), ..good.clone() };
    let mut extra = serde_json::to_value(&good).unwrap();
    extra["role"] = "admin".into();
    let bad = [
        "unibus://device/!!".to_string(),
        "{}".to_string(),
        forged.to_line(),
        extra.to_string(),
        good.to_line().replace("unibus://device/", "unibus://device/x"),
    ];
    let url = dead_url();
    for bundle in &bad {
        for cmd in [&["device", "add"][..], &["admin", "device", "add"][..]] {
            let mut args = vec!["--json", "--url", &url, "--identity", p];
            args.extend_from_slice(cmd);
            args.push(bundle);
            let out = unibus(&args);
            let v = last_json(&out);
            assert_eq!(
                (out.status.code(), v["error"]["code"].as_str()),
                (Some(1), Some("bad_request")),
                "{cmd:?} {bundle}: {v}"
            );
        }
    }
    // The good bundle gets as far as connecting.
    let out = unibus(&["--json", "--url", &url, "--identity", p, "device", "add", &good.to_line()]);
    assert_eq!(out.status.code(), Some(4));
    let out = unibus(&["--json", "--url", &url, "--identity", p, "verify", "0x"]);
    assert_eq!(
        (out.status.code(), last_json(&out)["error"]["code"].as_str()),
        (Some(1), Some("bad_request"))
    );
}
