//! The `unibus` CLI's device commands and `verify` (docs/protocol.md
//! section 8) as a built binary against a real nats-server: request on the
//! new device, add on an old one, list, revoke, recovery, safety numbers.

use std::path::{Path, PathBuf};

use crate::support::Stack;
use crate::support::process::cli;

async fn ok(url: &str, identity: &Path, args: &[&str]) -> serde_json::Value {
    let (code, v, err) = cli(url, identity, args).await;
    assert_eq!(code, 0, "unibus {args:?}: {err}");
    v
}

/// Exit code and error code of a failing command.
async fn fails(url: &str, identity: &Path, args: &[&str]) -> (i32, String) {
    let (code, v, _) = cli(url, identity, args).await;
    (code, v["error"]["code"].as_str().unwrap_or_default().to_string())
}

/// The first admin, registered through the CLI: its identity file.
async fn admin(stack: &Stack, dir: &Path) -> PathBuf {
    let path = dir.join("admin.nk");
    ok(&stack.url, &path, &["keygen"]).await;
    let (_, token) = stack.store().bootstrap_admin_invite(600).await.unwrap();
    ok(&stack.url, &path, &["register", &token.link(), "--name", "root"]).await;
    path
}

/// A member registered through the CLI with an invite from `admin`: its
/// identity file and account id.
async fn member(url: &str, admin: &Path, dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.nk"));
    ok(url, &path, &["keygen"]).await;
    let link =
        ok(url, admin, &["invite", "create", "--note", name]).await["link"].as_str().unwrap().to_string();
    let user = ok(url, &path, &["register", &link, "--name", name]).await;
    (path, user["user"]["sign_pub"].as_str().unwrap().to_string())
}

/// `device request` on a new identity file for `account`: the file and
/// its bundle line.
async fn request(url: &str, dir: &Path, file: &str, account: &str) -> (PathBuf, String, String) {
    let path = dir.join(file);
    let v = ok(url, &path, &["device", "request", "--account", account, "--name", file]).await;
    (path, v["device"].as_str().unwrap().to_string(), v["bundle"].as_str().unwrap().to_string())
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// The next stdout line of a spawned `unibus` within 5 s.
async fn next_line(lines: &mut Lines) -> String {
    let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line()).await;
    line.expect("a line within 5 s").unwrap().expect("stdout open")
}

async fn next_json(lines: &mut Lines) -> serde_json::Value {
    serde_json::from_str(&next_line(lines).await).unwrap()
}

fn statuses(v: &serde_json::Value) -> Vec<(String, String)> {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Request on the laptop, add on the phone, both list both (each marked as
/// itself), the laptop connects as the account; the laptop cannot revoke
/// the older phone nor the phone itself as the last device; the phone
/// revokes the laptop, which is then refused; adding the same key again is
/// `user_exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_adds_lists_and_revokes_a_device() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = stack.url.as_str();
    let root = admin(&stack, dir.path()).await;
    let (phone, alice) = member(url, &root, dir.path(), "alice").await;
    let (laptop, laptop_key, bundle) = request(url, dir.path(), "laptop", &alice).await;
    let (_listener, mut notices) = crate::support::spawn_stdout_lines(
        tokio::process::Command::new(crate::support::unibus_cli().await)
            .args(["--json", "--url", url, "--identity"])
            .arg(&phone)
            .arg("listen"),
    );
    assert!(next_line(&mut notices).await.contains("listening"));

    let added = ok(url, &phone, &["device", "add", &bundle]).await;
    let notice = next_json(&mut notices).await;
    assert_eq!(
        (notice["device_notice"]["device"].as_str(), notice["device_notice"]["status"].as_str()),
        (Some(&*laptop_key), Some("active")),
        "listen shows the new device"
    );
    assert_eq!(added["device"]["device"], laptop_key.as_str());
    assert_eq!((added["device"]["seq"].as_u64(), added["device"]["via"].as_str()), (Some(2), Some("device")));
    assert_eq!(
        ok(url, &laptop, &["whoami"]).await["user"]["sign_pub"],
        alice.as_str(),
        "the laptop is alice"
    );
    for (who, me) in [(&phone, &alice), (&laptop, &laptop_key)] {
        let list = ok(url, who, &["device", "list"]).await;
        assert_eq!(list["this_device"], me.as_str());
        let want = vec![(alice.clone(), "active".to_string()), (laptop_key.clone(), "active".to_string())];
        assert_eq!(statuses(&list), want);
    }

    assert_eq!(
        fails(url, &laptop, &["device", "revoke", &alice]).await,
        (1, "forbidden".into()),
        "older device"
    );
    let revoked = ok(url, &phone, &["device", "revoke", &laptop_key]).await;
    assert_eq!(revoked["device"]["status"], "revoked");
    let notice = next_json(&mut notices).await;
    assert_eq!(
        (notice["device_notice"]["device"].as_str(), notice["device_notice"]["status"].as_str()),
        (Some(&*laptop_key), Some("revoked"))
    );
    assert_eq!(
        fails(url, &laptop, &["whoami"]).await,
        (3, "not_authorized".into()),
        "a revoked device is refused"
    );
    let list = ok(url, &phone, &["device", "list"]).await;
    assert_eq!(statuses(&list)[1], (laptop_key.clone(), "revoked".to_string()));
    assert_eq!(
        fails(url, &phone, &["device", "revoke", &alice]).await,
        (1, "forbidden".into()),
        "last device"
    );
    assert_eq!(
        fails(url, &phone, &["device", "add", &bundle]).await,
        (1, "user_exists".into()),
        "key used for good"
    );
}

/// Alice about bob and bob about alice see the same 60 digits, from either
/// of alice's devices; every binding verifies; adding a device changes
/// the number on both sides alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_shows_the_same_number_on_both_sides() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = stack.url.as_str();
    let root = admin(&stack, dir.path()).await;
    let (phone, alice) = member(url, &root, dir.path(), "alice").await;
    let (bob_path, bob) = member(url, &root, dir.path(), "bob").await;
    let number = async |id: &Path, account: &str| {
        let v = ok(url, id, &["verify", account]).await;
        let n = v["safety_number"].as_str().unwrap().to_string();
        assert_eq!(n.len(), 60);
        assert_eq!(v["warnings"].as_array().unwrap().len(), 0, "{v}");
        for d in v["devices"].as_array().unwrap() {
            assert_eq!(d["binding"], "verified", "{v}");
        }
        (n, v["devices"].as_array().unwrap().len())
    };
    let before = number(&phone, &bob).await;
    assert_eq!(before, (number(&bob_path, &alice).await.0, 1));

    let (laptop, _, bundle) = request(url, dir.path(), "laptop", &alice).await;
    ok(url, &phone, &["device", "add", &bundle]).await;
    let (alice_side, _) = number(&phone, &bob).await;
    let (bob_side, alice_devices) = number(&bob_path, &alice).await;
    assert_eq!(alice_side, bob_side);
    assert_eq!(alice_devices, 2);
    assert_eq!(number(&laptop, &bob).await.0, alice_side, "the same from alice's laptop");
    assert_eq!(alice_side, before.0, "a device the account added itself does not change the number");
}

/// An admin recovers an account whose every device is revoked: `admin
/// device add` is `forbidden` while it has an active device, then adds a
/// `recovery` device, which connects as the account and which `verify`
/// flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_recovers_an_account_and_verify_flags_it() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = stack.url.as_str();
    let root = admin(&stack, dir.path()).await;
    let (phone, alice) = member(url, &root, dir.path(), "alice").await;
    let (bob_path, bob) = member(url, &root, dir.path(), "bob").await;
    let (spare, spare_key, bundle) = request(url, dir.path(), "spare", &alice).await;
    assert_eq!(fails(url, &root, &["admin", "device", "add", &bundle]).await, (1, "forbidden".into()));
    assert_eq!(fails(url, &phone, &["admin", "device", "add", &bundle]).await.0, 3, "members may not");

    ok(url, &root, &["device", "revoke", &alice, "--account", &alice]).await;
    let added = ok(url, &root, &["admin", "device", "add", &bundle]).await;
    assert_eq!(
        (added["device"]["device"].as_str(), added["device"]["via"].as_str()),
        (Some(&*spare_key), Some("recovery"))
    );
    assert_eq!(ok(url, &spare, &["whoami"]).await["user"]["sign_pub"], alice.as_str());
    let v = ok(url, &bob_path, &["verify", &alice]).await;
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("recovery") && warnings.contains(&spare_key), "{v}");
    assert_eq!(ok(url, &spare, &["verify", &bob]).await["safety_number"], v["safety_number"]);
}

/// `verify` against a tampered store: a device whose `kex_pub` was swapped
/// in the users bucket (its binding no longer verifies) stops it with exit
/// 5 and code `binding`; an account from before bindings is shown with
/// its device flagged `unbound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_swapped_key_and_flags_an_unbound_one() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = stack.url.as_str();
    let root = admin(&stack, dir.path()).await;
    let (alice_path, _) = member(url, &root, dir.path(), "alice").await;
    let (_, bob) = member(url, &root, dir.path(), "bob").await;
    let js = stack.jetstream().await;
    let kv = js.get_key_value(unibus_proto::subjects::BUCKET_USERS).await.unwrap();

    let old = unibus::Identity::generate();
    let legacy = serde_json::json!({
        "v": 1, "sign_pub": old.sign_pub_hex(), "kex_pub": old.kex_pub_hex(), "name": "old", "role": "member",
        "status": "active", "created_at": "2026-01-01T00:00:00Z", "invited_by": "bootstrap",
        "invite_id": "00".repeat(32), "updated_at": "2026-01-01T00:00:00Z"
    });
    kv.create(&old.sign_pub_hex(), legacy.to_string().into()).await.unwrap();
    let v = ok(url, &alice_path, &["verify", &old.sign_pub_hex()]).await;
    assert_eq!(v["devices"][0]["binding"], "unbound", "{v}");
    assert!(v["warnings"].to_string().contains("unbound"), "{v}");
    assert_eq!(v["safety_number"].as_str().map(str::len), Some(60));

    // Whoever can write the bucket swaps in an X25519 key of its own, on
    // the record and on its signed list (whose signature then fails).
    let mut record: serde_json::Value =
        serde_json::from_slice(&kv.get(&bob).await.unwrap().unwrap()).unwrap();
    let swapped = unibus::Identity::generate().kex_pub_hex();
    record["kex_pub"] = swapped.clone().into();
    record["devices"][0]["kex_pub"] = swapped.clone().into();
    record["device_list"]["devices"][0]["kex_pub"] = swapped.into();
    kv.put(&bob, record.to_string().into()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (code, v, err) = loop {
        let (code, v, err) = cli(url, &alice_path, &["verify", &bob]).await;
        if code != 0 || std::time::Instant::now() > deadline {
            break (code, v, err);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!((code, v["error"]["code"].as_str()), (5, Some("binding")), "{v} {err}");
    assert!(v.get("safety_number").is_none(), "no number for a key that fails its binding");
}

/// Every JSON line a command printed, and its exit code.
async fn all_lines(url: &str, identity: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let (code, stdout, _) = crate::support::process::cli_output(url, identity, args).await;
    (code, stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The contact device changes a `send` printed.
async fn changes_on_send(url: &str, identity: &Path, to: &str) -> Vec<serde_json::Value> {
    let (code, lines) = all_lines(url, identity, &["send", "--to", to, "hello"]).await;
    assert_eq!(code, 0, "{lines:?}");
    lines.into_iter().filter_map(|l| l.get("contact_device").cloned()).collect()
}

/// The CLI remembers each contact's devices next to the identity and says
/// when one gains a device, loses one, or gets a recovery device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_remembers_contacts_devices_and_flags_changes() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = &stack.url;
    let root = admin(&stack, dir.path()).await;
    let (alice, _) = member(url, &root, dir.path(), "alice").await;
    let (bob_phone, bob) = member(url, &root, dir.path(), "bob").await;

    assert_eq!(changes_on_send(url, &alice, &bob).await, Vec::<serde_json::Value>::new(), "first sight");
    assert!(dir.path().join("alice.nk.contacts.json").exists(), "contacts saved next to the identity");

    let (_, laptop, bundle) = request(url, dir.path(), "bob-laptop.nk", &bob).await;
    ok(url, &bob_phone, &["device", "add", &bundle]).await;
    let seen = changes_on_send(url, &alice, &bob).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0]["change"].as_str(), seen[0]["device"].as_str()),
        (Some("gained"), Some(laptop.as_str()))
    );
    assert_eq!(seen[0]["via"], "device");

    // Bob loses everything; the admin recovers him with a new phone.
    ok(url, &root, &["device", "revoke", &laptop, "--account", &bob]).await;
    ok(url, &root, &["device", "revoke", &bob, "--account", &bob]).await;
    let (_, new_phone, bundle) = request(url, dir.path(), "bob-new.nk", &bob).await;
    ok(url, &root, &["admin", "device", "add", &bundle]).await;
    // A recovery: alice's client stops sealing to bob and says why, until
    // she accepts bob's new list.
    let (code, lines) = all_lines(url, &alice, &["send", "--to", &bob, "hello"]).await;
    assert_eq!(code, 5, "{lines:?}");
    let held: Vec<_> = lines.iter().filter_map(|l| l.get("contact_device")).collect();
    assert!(
        held.iter().any(|c| c["change"] == "needs_verify"
            && c["reason"] == "recovery"
            && c["device"] == new_phone.as_str()),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["error"]["code"] == "needs_verify"), "{lines:?}");
    let accepted = ok(url, &alice, &["verify", &bob, "--accept"]).await;
    assert_eq!(accepted["accepted"], 5, "{accepted}");
    let seen = changes_on_send(url, &alice, &bob).await;
    let gained: Vec<_> = seen.iter().filter(|c| c["change"] == "gained").collect();
    assert_eq!(gained.len(), 1, "{seen:?}");
    assert_eq!(
        (gained[0]["device"].as_str(), gained[0]["via"].as_str()),
        (Some(new_phone.as_str()), Some("recovery"))
    );
    // The lost devices were told when the send was refused: the list
    // alice had accepted named them, and they are gone.
    let lost = held.iter().copied().chain(seen.iter()).filter(|c| c["change"] == "lost").count();
    assert_eq!(lost, 2, "{held:?} {seen:?}");
}

/// `unibus listen --json` shows nothing for replies aimed at the
/// listener's DM, room and notice subjects (a member's `register {}` and
/// her revoke of her own revoked device, whose reply a client trusting it
/// would print as "[device] revoked from your account" for a device the
/// attacker names): no line on stdout, no "dropped" on stderr; the real DM
/// and the real device notice right after them are the next lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_shows_nothing_for_reflected_replies() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cast = crate::support::reflection::Cast::new(&stack).await;
    let bob = dir.path().join("bob.nk");
    cast.bob_id.save(&bob).unwrap();
    let errors = dir.path().join("listen.stderr");
    let mut child = tokio::process::Command::new(crate::support::unibus_cli().await)
        .args(["--json", "--url", &stack.url, "--identity"])
        .arg(&bob)
        .arg("listen")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(next_line(&mut lines).await.contains("listening"));
    let mut wire = cast.wire(&stack).await;

    cast.reflect_all(&stack).await;
    crate::support::reflection::expect_reflections_on_the_wire(&mut wire, &cast).await;
    cast.alice.send_dm(cast.bob.account(), b"a real dm").await.unwrap();
    let line = next_json(&mut lines).await;
    assert_eq!(
        (line["from"].as_str(), line["text"].as_str()),
        (Some(cast.alice.account()), Some("a real dm")),
        "{line}"
    );
    let laptop = unibus::Identity::generate().with_account(cast.bob.account()).unwrap();
    cast.bob.add_device(&laptop.bundle(Some("laptop"))).await.unwrap();
    let line = next_json(&mut lines).await;
    let notice = &line["device_notice"];
    assert_eq!(
        (notice["device"].as_str(), notice["status"].as_str()),
        (Some(&*laptop.sign_pub_hex()), Some("active")),
        "{line}"
    );
    let stderr = std::fs::read_to_string(&errors).unwrap();
    assert!(!stderr.contains("dropped"), "nothing reported for the replies: {stderr}");
}
