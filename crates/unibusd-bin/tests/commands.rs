//! The `unibusd` binary's command surface, which README, the scripts,
//! docker-compose.yml and outside test suites rely on: its subcommands and
//! the flags of `dev` and `demo`. (What each command does is tested
//! against real servers in the service's `tests/it/tooling.rs` and
//! `tests/it/cli.rs`.) Being an integration test of this package, it also
//! makes `cargo test --workspace` build `target/<profile>/unibusd`.

use std::process::Command;

const UNIBUSD: &str = env!("CARGO_BIN_EXE_unibusd");

fn help(args: &[&str]) -> String {
    let out = Command::new(UNIBUSD).args(args).arg("--help").output().expect("unibusd runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 help")
}

#[test]
fn lists_every_subcommand() {
    let text = help(&[]);
    for command in ["run", "keygen", "bootstrap-admin", "dev", "demo"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(command)), "{command} missing: {text}");
    }
}

#[test]
fn dev_and_demo_keep_their_flags() {
    let dev = help(&["dev"]);
    for flag in ["--port", "--data-dir", "--fresh"] {
        assert!(dev.contains(flag), "dev {flag} missing: {dev}");
    }
    assert!(help(&["demo"]).contains("--port"));
}

#[test]
fn unknown_subcommand_fails() {
    let out = Command::new(UNIBUSD).arg("serve").output().expect("unibusd runs");
    assert!(!out.status.success());
}
