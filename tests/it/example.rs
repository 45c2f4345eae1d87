//! The client library's example (`crates/unibus/examples/hello.rs`) as a
//! built binary against a real stack.

use std::time::Duration;

use unibus_proto::records::{Role, UserStatus};
use unibus_proto::wire::InviteCreateRequest;

use crate::support::Stack;

/// Given a URL and a member's invite link, the example registers a new
/// key, sends itself an encrypted DM and prints it decrypted; the key is
/// then an active member.
#[tokio::test]
async fn hello_example_registers_sends_and_receives() {
    let stack = Stack::start().await;
    let (_, admin) = stack.admin().await;
    let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let run = tokio::process::Command::new(crate::support::program(unibus_devkit::built::HELLO).await)
        .args([&stack.url, &inv.link])
        .env_remove("UNIBUS_URL")
        .env_remove("UNIBUS_INVITE")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.expect("ends").expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("registered ")?.split_once(' ').map(|(k, _)| k.to_string()))
        .unwrap_or_else(|| panic!("no registration line: {stdout}"));
    let received = format!("received from {key}: hello from the unibus example");
    assert!(stdout.lines().any(|l| l == received), "{stdout}");
    let user = admin.get_user(&key).await.unwrap();
    assert_eq!((user.role, user.status), (Role::Member, UserStatus::Active));
}
