//! Messages that wait, through faults: unibusd killed (SIGKILL) while
//! sends are between the store and the live publish, and the nats-server
//! killed and restarted mid-send. Every send acknowledged with a `seq` is
//! fetched afterwards at that `seq`; a retry of an unacknowledged send
//! (the same envelope) stores it once; a device that catches up afterwards
//! gets every message once, in `seq` order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use unibus::{Client, ClientError, Inbox, Incoming};
use unibus_proto::e2e::Envelope;
use unibus_proto::mail::Channel;
use unibus_proto::records::Role;
use unibus_proto::subjects;

use crate::mail::{dm, fetch_all, now_ms};
use crate::support::stack::MAIL_UNLIMITED;
use crate::support::{HEAVY, Stack};

const N: usize = 400;

/// The sends of one storm: which were acknowledged (and at which seq),
/// which failed.
#[derive(Default)]
struct Outcome {
    acked: HashMap<usize, u64>,
    failed: Vec<usize>,
}

/// The envelopes alice sends bob, sealed before the storm so that a retry
/// sends exactly the same bytes.
fn envelopes(alice: &unibus::Identity, bob: &unibus::Identity) -> Vec<Envelope> {
    let to = bob.sign_pub_hex();
    (0..N).map(|i| dm(alice, &to, &[bob.recipient()], format!("m{i}").as_bytes(), now_ms())).collect()
}

/// Every stored message of bob's DM channel: envelope id -> seq (each id
/// once).
async fn stored(bob: &Client) -> HashMap<String, u64> {
    let all = fetch_all(bob, &Channel::Dm, 0).await;
    let map: HashMap<String, u64> = all.iter().map(|(seq, id)| (id.clone(), *seq)).collect();
    assert_eq!(map.len(), all.len(), "an envelope stored twice");
    map
}

/// Reads `n` messages that waited and checks they come in seq order, once.
async fn catch_up_all(inbox: &mut Inbox, n: usize) {
    let mut seqs = Vec::new();
    let mut ids = HashSet::new();
    while seqs.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(20), inbox.next()).await.unwrap().unwrap();
        match item {
            Incoming::Waited { seq, message } => {
                assert!(ids.insert(message.id), "handed over twice");
                seqs.push(seq);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
}

/// SIGSTOP, 300 ms for the server to complete the writes unibusd had
/// sent, SIGKILL.
async fn freeze_then_kill(unibusd: &mut tokio::process::Child) {
    let pid = unibusd.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    unibusd.start_kill().unwrap();
}

/// Fetches until unibusd answers.
async fn retry_fetch(c: &Client) {
    for _ in 0..60 {
        if c.mail_fetch(&Channel::Dm, 0, Some(1)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("mail.fetch never answered");
}

/// Retries `env` until unibusd answers (it may be reconnecting).
async fn retry(c: &Client, env: &Envelope) -> u64 {
    for _ in 0..60 {
        match c.mail_send(env).await {
            Ok(seq) => return seq,
            Err(ClientError::Service(e)) => panic!("retry refused: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("no answer to a retried send");
}

/// Rounds of: 400 sends, 32 at a time; once 100 are acknowledged, unibusd
/// is frozen (SIGSTOP), so that the KV writes it had asked for land while
/// it can no longer publish, then SIGKILLed and started again.
/// Until a round cut a send there (stored, never published live, never
/// acknowledged), at most 8 rounds. Each round: every acknowledged send is
/// stored at its seq, a retry of each failed one answers the seq it was
/// stored at (or stores it), all stored once; finally a device catching
/// up gets every message of every round once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unibusd_killed_between_store_and_publish_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let stack = Stack::start_server_only().await;
    let mut unibusd = stack.spawn_unibusd_with(&MAIL_UNLIMITED).await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let mut live = bob_c.nats().subscribe(subjects::dm(&bob.sign_pub_hex())).await.unwrap();
    bob_c.nats().flush().await.unwrap();

    let (mut rounds, mut total, mut cut_unpublished) = (0, 0, 0);
    while cut_unpublished == 0 && rounds < 8 {
        rounds += 1;
        let envelopes = envelopes(&alice, &bob);
        let mut storm = futures::stream::iter(envelopes.iter().enumerate().map(|(i, env)| {
            let c = alice_c.clone();
            async move { (i, c.mail_send(env).await) }
        }))
        .buffer_unordered(32);
        let (mut out, mut killed) = (Outcome::default(), false);
        while let Some((i, r)) = storm.next().await {
            match r {
                Ok(seq) => drop(out.acked.insert(i, seq)),
                Err(_) => out.failed.push(i),
            }
            if out.acked.len() >= 100 && !killed {
                freeze_then_kill(&mut unibusd).await;
                killed = true;
            }
        }
        drop(storm);
        assert!(killed, "round {rounds}: no store seen after 100 acknowledgements");
        let _ = unibusd.wait().await;
        let mut went_live = HashSet::new();
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), live.next()).await {
            went_live.insert(serde_json::from_slice::<Envelope>(&msg.payload).unwrap().id);
        }

        unibusd = stack.spawn_unibusd_with(&MAIL_UNLIMITED).await;
        // Serving once its subscriptions reach bob's account through the import.
        retry_fetch(&bob_c).await;
        let before = stored(&bob_c).await;
        for (i, seq) in &out.acked {
            assert_eq!(
                before.get(&envelopes[*i].id),
                Some(seq),
                "an acknowledged send is not stored at its seq"
            );
        }
        // Stored by the killed unibusd, never acknowledged: how many never
        // went out live either.
        let cut: Vec<&Envelope> =
            out.failed.iter().map(|i| &envelopes[*i]).filter(|e| before.contains_key(&e.id)).collect();
        let unpublished = cut.iter().filter(|e| !went_live.contains(&e.id)).count();
        for i in &out.failed {
            let seq = retry(&alice_c, &envelopes[*i]).await;
            if let Some(first) = before.get(&envelopes[*i].id) {
                assert_eq!(seq, *first, "a retry of a stored send answers its first seq");
            }
        }
        total += N;
        assert_eq!(stored(&bob_c).await.len(), total, "every message stored once");
        println!(
            "unibusd SIGKILL mid-send, round {rounds}: {} of {N} acknowledged, {} failed, {} of those stored before the kill ({unpublished} never published live); all stored once after retries",
            out.acked.len(),
            out.failed.len(),
            cut.len()
        );
        cut_unpublished += unpublished;
    }
    assert!(cut_unpublished > 0, "in {rounds} rounds no kill landed between a store and its publish");
    // A device that catches up now gets each once, in order.
    let fresh = stack.connect(&bob).await.unwrap();
    catch_up_all(&mut fresh.inbox().await.unwrap(), total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted_mid_send_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let mut stack = Stack::start_mail_unlimited().await;
    let (_a, admin) = stack.admin().await;
    let (alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, _b) = stack.user(&admin, Role::Member, "bob").await;
    let envelopes = envelopes(&alice, &bob);
    let port = stack.server.as_ref().unwrap().port;

    let mut storm = futures::stream::iter(envelopes.iter().enumerate().map(|(i, env)| {
        let c = alice_c.clone();
        async move { (i, c.mail_send(env).await) }
    }))
    .buffer_unordered(32);
    let (mut out, mut restarted) = (Outcome::default(), false);
    while let Some((i, r)) = storm.next().await {
        match r {
            Ok(seq) => drop(out.acked.insert(i, seq)),
            Err(_) => out.failed.push(i),
        }
        if out.acked.len() >= 100 && !restarted {
            stack.server.take().unwrap().kill().await;
            stack.restart_server(port).await;
            restarted = true;
        }
    }
    drop(storm);
    assert!(restarted, "100 sends acknowledged before the restart");
    for i in &out.failed {
        retry(&alice_c, &envelopes[*i]).await;
    }
    let bob_c = stack.connect(&bob).await.unwrap();
    let after = stored(&bob_c).await;
    for (i, seq) in &out.acked {
        assert_eq!(after.get(&envelopes[*i].id), Some(seq), "an acknowledged send is not stored at its seq");
    }
    assert_eq!(after.len(), N, "every message stored once");
    catch_up_all(&mut bob_c.inbox().await.unwrap(), N).await;
    println!(
        "nats-server SIGKILL + restart mid-send: {} of {N} acknowledged before or after, {} failed and retried; all stored once",
        out.acked.len(),
        out.failed.len()
    );
    assert!(!out.failed.is_empty(), "the restart cut no send");
}

/// unibusd frozen (SIGSTOP) the moment alice's DM reaches `unibus.mail.send`
/// (seen by a subscriber of the test's own), for longer than a request's
/// timeout: the client sends the same envelope again; once unibusd runs
/// again the DM is stored once and the send answers its seq. (Should
/// unibusd answer before the freeze, the send has no reason to retry: the
/// round is done again, at most 5 times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_an_answer_is_sent_again_and_stored_once() {
    let stack = Stack::start_server_only().await;
    let unibusd = stack.spawn_unibusd().await;
    let (_a, admin) = stack.admin().await;
    let (_alice, alice_c) = stack.user(&admin, Role::Member, "alice").await;
    let (bob, bob_c) = stack.user(&admin, Role::Member, "bob").await;
    let bob_key = bob.sign_pub_hex();
    let pid = unibusd.id().expect("running") as libc::pid_t;
    let service = stack.service_nats().await;
    let mut requests = service.subscribe(subjects::MAIL_SEND).await.unwrap();
    service.flush().await.unwrap();
    for round in 1..=5 {
        let send = tokio::spawn({
            let (c, to) = (alice_c.clone(), bob_key.clone());
            async move { c.send_dm(&to, format!("patience {round}").as_bytes()).await }
        });
        tokio::time::timeout(Duration::from_secs(10), requests.next()).await.unwrap().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        // The first attempt times out (5 s); the second is waiting when
        // unibusd runs again and handles both.
        tokio::time::sleep(Duration::from_secs(6)).await;
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let sent = send.await.unwrap().expect("answered");
        let mut attempts = 1;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), requests.next()).await {
            attempts += 1;
        }
        let all = fetch_all(&bob_c, &Channel::Dm, 0).await;
        assert_eq!(all.len(), round, "stored once");
        assert_eq!(all.last(), Some(&(sent.seq, sent.id)), "at the seq the send answered");
        if attempts >= 2 {
            println!("send retried: {attempts} attempts in round {round}, stored once");
            return;
        }
    }
    panic!("unibusd answered every send before it was frozen");
}
