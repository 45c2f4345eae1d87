//! The `unibus` CLI as a built binary, walking the whole flow, and the
//! narrated demo.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::Stack;
use crate::support::process::cli;

async fn ok(url: &str, identity: &Path, args: &[&str]) -> serde_json::Value {
    let (code, v, err) = cli(url, identity, args).await;
    assert_eq!(code, 0, "unibus {args:?}: {err}");
    v
}

/// keygen, first admin, invite, two users register, room, DM and room
/// message sent and received, revoke: the revoked user's `listen` ends
/// with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_walks_the_whole_flow() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, alice, bob) =
        (dir.path().join("admin.nk"), dir.path().join("alice.nk"), dir.path().join("bob.nk"));
    let url = stack.url.as_str();
    for id in [&admin, &alice, &bob] {
        ok(url, id, &["keygen"]).await;
    }
    assert_ne!(cli(url, &admin, &["keygen"]).await.0, 0, "keygen must not overwrite");

    let (_, token) = stack.store().bootstrap_admin_invite(600).await.unwrap();
    let me = ok(url, &admin, &["register", &token.link(), "--name", "root"]).await;
    assert_eq!(me["user"]["role"], "admin");
    let mut keys = Vec::new();
    for (id, name) in [(&alice, "alice"), (&bob, "bob")] {
        let inv = ok(url, &admin, &["invite", "create", "--note", name]).await;
        let link = inv["link"].as_str().unwrap().to_string();
        let user = ok(url, id, &["register", &link, "--name", name]).await;
        keys.push(user["user"]["sign_pub"].as_str().unwrap().to_string());
    }
    let (alice_key, bob_key) = (keys[0].clone(), keys[1].clone());
    assert_eq!(ok(url, &bob, &["whoami"]).await["user"]["name"], "bob");
    let list = ok(url, &admin, &["invite", "list", "--status", "used"]).await;
    assert_eq!(list["invites"].as_array().unwrap().len(), 3);

    // Errors: wire code and non-zero exit.
    let (code, v, _) = cli(url, &bob, &["invite", "create"]).await;
    assert_eq!((code, v["error"]["code"].as_str()), (3, Some("permission_denied")));
    let (code, v, _) = cli(url, &admin, &["user", "show", "00"]).await;
    assert_eq!((code, v["error"]["code"].as_str()), (1, Some("bad_request")));

    let room = ok(url, &alice, &["room", "create", "plans"]).await;
    let room_id = room["room"]["id"].as_str().unwrap().to_string();
    ok(url, &alice, &["room", "add", &room_id, &bob_key]).await;
    assert_eq!(ok(url, &bob, &["room", "list"]).await["rooms"].as_array().unwrap().len(), 1);
    // A plain NATS subscriber (bob's key, no decryption) on both data-plane
    // subjects: what it receives is what travels on the wire.
    let bob_id = unibus::Identity::load(&bob).unwrap();
    let raw = unibus::connect_options(&bob_id).connect(url).await.unwrap();
    let mut wire = futures::stream::select(
        raw.subscribe(unibus_proto::subjects::dm(&bob_key)).await.unwrap(),
        raw.subscribe(unibus_proto::subjects::room_msg(&room_id)).await.unwrap(),
    );
    raw.flush().await.unwrap();

    // bob listens for two messages; alice sends a DM and a room message.
    let (mut listener, mut lines) = crate::support::spawn_stdout_lines(
        tokio::process::Command::new(crate::support::unibus_cli().await)
            .args(["--json", "--url", url, "--identity"])
            .arg(&bob)
            .args(["listen"]),
    );
    let ready =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(ready.contains("listening"), "{ready}");
    ok(url, &alice, &["send", "--to", &bob_key, "hello", "bob"]).await;
    ok(url, &alice, &["send", "--room", &room_id, "hello", "room"]).await;
    // chat: typed lines are sent; end of input ends it.
    let mut chat = tokio::process::Command::new(crate::support::unibus_cli().await)
        .args(["--url", url, "--identity"])
        .arg(&alice)
        .args(["chat", "--to", &bob_key])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = chat.stdin.take().unwrap();
        stdin.write_all(b"typed in chat\n").await.unwrap();
        // Dropped here: end of input ends the chat.
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let line =
            tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["from"], alice_key);
        assert_eq!(v["from_name"], "alice");
        got.push(v["text"].as_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, vec!["hello bob", "hello room", "typed in chat"]);
    // The wire carried the three messages, none of them readable.
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut wire))
            .await
            .expect("the plain subscriber received the message")
            .unwrap();
        assert!(!msg.payload.is_empty(), "empty message on the wire");
        for plain in &got {
            assert!(!contains(&msg.payload, plain.as_bytes()), "plaintext {plain:?} on the wire");
        }
    }
    assert!(chat.wait().await.unwrap().success());

    // Revoke bob: his listen ends with an error exit.
    let r = ok(url, &admin, &["user", "revoke", &bob_key]).await;
    assert!(r["kicked"].as_u64().unwrap() >= 1);
    let status = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(3), "revoked listen exits with not_authorized");
    let (code, _, err) = cli(url, &bob, &["whoami"]).await;
    assert_eq!(code, 3, "{err}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The demo runs start to finish on its own stack (a port nats-server
/// picks), and its plain subscriber received ciphertext: every "wire" line
/// reports a non-empty message checked for the plaintext (the demo itself
/// fails when a received message contains it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrated_demo_runs() {
    let out = tokio::process::Command::new(crate::support::unibusd_bin().await)
        .args(["demo", "--port", "0"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("decrypted and verified"));
    assert!(text.contains("cut off after"));
    // The linked-devices scene: both of alice's devices get bob's DM, the
    // phone sees the laptop's reply, the laptop may not revoke the phone,
    // and chats on after the admin did.
    assert!(text.contains("laptop added as device #2"), "{text}");
    // The offline scene: bob reads the DM and the room message that waited,
    // once each.
    assert_eq!(text.matches("waited (seq").count(), 2, "{text}");
    assert_eq!(text.matches("call me when you land").count(), 2, "sent, then read once: {text}");
    assert!(text.contains("nothing else waiting"), "{text}");
    assert_eq!(text.matches("are you both on?").count(), 3, "sent once, opened on both devices: {text}");
    assert!(text.contains("my other device"), "{text}");
    assert!(text.contains("refused (forbidden)"), "{text}");
    assert!(
        text.contains("laptop only for now\"") && text.matches("laptop only for now").count() == 2,
        "{text}"
    );
    let wire: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("wire |")).collect();
    assert_eq!(wire.len(), 2, "one wire line per tapped message: {text}");
    for line in wire {
        let bytes: usize =
            line.split("| ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!(bytes > 0, "{line}");
        assert!(line.contains("plaintext absent"), "{line}");
        assert!(!line.contains("blue pot") && !line.contains("meeting moved"), "{line}");
    }
}

/// `unibus listen` shows what waited while bob was not listening, marked
/// (`waited`, its `seq`; in text: the time it was sent), once: a second
/// run shows only what came since (the mail state beside the identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_shows_what_waited_once() {
    let stack = Stack::start().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, unibus_proto::records::Role::Member, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let bob = dir.path().join("bob.nk");
    let url = stack.url.as_str();
    ok(url, &bob, &["keygen"]).await;
    let inv = admin.create_invite(&Default::default()).await.unwrap();
    let bob_key = ok(url, &bob, &["register", &inv.link, "--name", "bob"]).await["user"]["sign_pub"]
        .as_str()
        .unwrap()
        .to_string();
    let one = alice_c.send_dm(&bob_key, b"one").await.unwrap();
    let two = alice_c.send_dm(&bob_key, b"two").await.unwrap();

    let (code, out, err) = crate::support::process::cli_output(url, &bob, &["listen", "--count", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Vec<serde_json::Value> =
        out.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(&str, bool, u64)> = shown
        .iter()
        .map(|v| (v["text"].as_str().unwrap(), v["waited"].as_bool().unwrap(), v["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, vec![("one", true, one.seq), ("two", true, two.seq)]);

    alice_c.send_dm(&bob_key, b"three").await.unwrap();
    let out = tokio::process::Command::new(crate::support::unibus_cli().await)
        .args(["--url", url, "--identity"])
        .arg(&bob)
        .args(["listen", "--count", "1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("(waited, sent ") && line.contains(" UTC) [dm] alice: three"), "{text}");
    assert!(!text.contains("one") && !text.contains("two"), "shown again: {text}");
}
