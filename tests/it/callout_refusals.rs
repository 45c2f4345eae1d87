//! The callout's refusals, driven through a real nats-server: requests on
//! `$SYS.REQ.USER.AUTH` that a server did not make (bad signature, wrong
//! audience or issuer, expired, sealing that does not match the config,
//! garbage) get no answer at all, while a well-made request from any server
//! key gets a signed one; and a store that cannot answer in time yields a
//! signed denial inside the 2 s auth timeout (the 1.5 s decision budget).
//! The server itself lets no client publish on the callout subject, so the
//! forged requests come through a test-only account import.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use nkeys::{KeyPair, XKey};
use serde_json::{Value, json};
use unibus::{Client, ClientError, Identity};
use unibus_proto::subjects;
use unibusd::callout::jwt;
use unibusd::store::StoreConfig;

use crate::support::{AuthErrors, Cluster, DENIAL_WITHIN, SIGNED_DENIAL, Stack, Xkey};

/// nkeys prefix byte of account keys (`A...`): the issuer of responses.
const ACCOUNT_PREFIX: u8 = 0;

/// Subject account FORGE publishes on to reach the callout subject.
const FORGE_SUBJECT: &str = "forge.auth";

/// Plays a nats-server of its own: a throwaway server nkey and xkey, and a
/// connection in account FORGE to publish requests from.
struct Forger {
    svc: async_nats::Client,
    replies: async_nats::Subscriber,
    prefix: String,
    sent: usize,
    server: KeyPair,
    xkey: XKey,
    issuer: String,
    service_xkey: Option<String>,
}

impl Forger {
    async fn new(stack: &Stack) -> Forger {
        let svc = async_nats::ConnectOptions::with_user_and_password("forger".into(), "forger".into())
            .connect(&stack.url)
            .await
            .expect("forger connects");
        let prefix = format!("refusals.{}", rand::random::<u64>());
        let replies = svc.subscribe(format!("{prefix}.>")).await.unwrap();
        svc.flush().await.unwrap();
        Forger {
            svc,
            replies,
            prefix,
            sent: 0,
            server: KeyPair::new_server(),
            xkey: XKey::new(),
            issuer: stack.secrets.issuer.public_key(),
            service_xkey: stack.xkey.then(|| stack.secrets.xkey.public_key()),
        }
    }

    /// Claims of a well-made request for a fresh guest key with a valid
    /// nonce signature, as a server would send them.
    fn claims(&self) -> Value {
        let client = Identity::generate();
        let nonce = "c29tZS1ub25jZS1mcm9tLXRoZS1zZXJ2ZXI";
        let kp = KeyPair::from_seed(&client.nkey_seed()).unwrap();
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            kp.sign(nonce.as_bytes()).unwrap(),
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": self.server.public_key(), "sub": self.issuer,
            "aud": "nats-authorization-request", "iat": now, "exp": now + 2,
            "nats": {
                "type": "authorization_request", "version": 2,
                "user_nkey": KeyPair::new_user().public_key(),
                "server_id": {"name": "forger", "host": "127.0.0.1", "id": self.server.public_key(),
                              "xkey": self.service_xkey.as_ref().map(|_| self.xkey.public_key())},
                "client_info": {"id": 7, "host": "127.0.0.1", "kind": "Client", "type": "nats", "nonce": nonce},
                "connect_opts": {"nkey": client.nkey_public(), "sig": sig, "lang": "rust", "protocol": 1}
            }
        })
    }

    /// The message a server would publish: sealed for the service with
    /// `Nats-Server-Xkey` when the stack uses xkey, else the plain token.
    fn wrap(&self, token: &str) -> (Option<HeaderMap>, Bytes) {
        match &self.service_xkey {
            Some(service) => self.sealed(token.as_bytes(), &self.xkey, service),
            None => (None, Bytes::from(token.to_string())),
        }
    }

    /// `data` sealed with `with` for `service`, under `with`'s header.
    fn sealed(&self, data: &[u8], with: &XKey, service: &str) -> (Option<HeaderMap>, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HDR_SERVER_XKEY, with.public_key().as_str());
        let recipient = XKey::from_public_key(service).unwrap();
        (Some(headers), Bytes::from(with.seal(data, &recipient).unwrap()))
    }

    /// Publishes a request and returns its reply subject.
    async fn send(&mut self, (headers, payload): (Option<HeaderMap>, Bytes)) -> String {
        self.sent += 1;
        let reply = format!("{}.{}", self.prefix, self.sent);
        let subject = FORGE_SUBJECT;
        match headers {
            Some(h) => self.svc.publish_with_reply_and_headers(subject, reply.clone(), h, payload).await,
            None => self.svc.publish_with_reply(subject, reply.clone(), payload).await,
        }
        .unwrap();
        self.svc.flush().await.unwrap();
        reply
    }

    /// Waits for the answer on `reply`, collecting every reply subject seen.
    async fn answer(&mut self, reply: &str, seen: &mut Vec<String>) -> Option<Bytes> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.replies.next()).await.ok()??;
            seen.push(msg.subject.to_string());
            if msg.subject.as_str() == reply {
                return Some(msg.payload);
            }
        }
    }

    /// The claims of a signed answer: opened when sealed, signature
    /// verified against the issuer account.
    fn open_answer(&self, payload: &[u8]) -> Value {
        let token = match &self.service_xkey {
            Some(service) => self.xkey.open(payload, &XKey::from_public_key(service).unwrap()).unwrap(),
            None => payload.to_vec(),
        };
        let (claims, iss): (Value, String) =
            jwt::decode_verified(std::str::from_utf8(&token).unwrap(), ACCOUNT_PREFIX)
                .expect("signed answer");
        assert_eq!(iss, self.issuer);
        claims
    }

    /// Sends `msg`, then a well-made request: the latter is answered (the
    /// responder is alive and reading), the former never, not even 300 ms
    /// after the well-made one.
    async fn assert_unanswered(&mut self, case: &str, msg: (Option<HeaderMap>, Bytes)) {
        let refused = self.send(msg).await;
        let token = jwt::encode_signed(&self.claims(), &self.server).unwrap();
        let control = self.send(self.wrap(&token)).await;
        let mut seen = Vec::new();
        let answer = self.answer(&control, &mut seen).await;
        assert!(answer.is_some(), "{case}: the well-made request after it was not answered either");
        let _ = tokio::time::timeout(Duration::from_millis(300), self.answer(&refused, &mut seen)).await;
        assert!(!seen.contains(&refused), "{case}: unibusd answered a request it must refuse");
    }
}

/// A well-made request from a throwaway server key gets a signed answer,
/// sealed for that server's xkey when xkey is on: for the server's
/// one-time user key, addressed to that server, carrying a user JWT.
async fn answers_well_made(f: &mut Forger) {
    let claims = f.claims();
    let reply = f.send(f.wrap(&jwt::encode_signed(&claims, &f.server).unwrap())).await;
    let payload = f.answer(&reply, &mut Vec::new()).await.expect("a well-made request is answered");
    let answer = f.open_answer(&payload);
    assert_eq!(answer["aud"], f.server.public_key());
    assert_eq!(answer["sub"], claims["nats"]["user_nkey"]);
    assert_eq!(answer["nats"]["type"], "authorization_response");
    assert!(answer["nats"]["jwt"].is_string(), "a guest is admitted: {answer}");
}

/// Refusals of a request JWT the server did not make, whatever the sealing.
async fn refuses_forged_tokens(f: &mut Forger) {
    let sign = |c: &Value, k: &KeyPair| jwt::encode_signed(c, k).unwrap();
    let mut token = sign(&f.claims(), &f.server);
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    f.assert_unanswered("tampered signature", f.wrap(&token)).await;
    // iss names our server key, the signature is another server's.
    let other = KeyPair::new_server();
    f.assert_unanswered("signed by another key than iss", f.wrap(&sign(&f.claims(), &other))).await;
    let mut c = f.claims();
    c["aud"] = json!("nats-authorization-response");
    f.assert_unanswered("wrong audience", f.wrap(&sign(&c, &f.server))).await;
    let account = KeyPair::new_account();
    let mut c = f.claims();
    c["iss"] = json!(account.public_key());
    c["nats"]["server_id"]["id"] = json!(account.public_key());
    f.assert_unanswered("issuer not a server key", f.wrap(&sign(&c, &account))).await;
    let mut c = f.claims();
    c["nats"]["server_id"]["id"] = json!(KeyPair::new_server().public_key());
    f.assert_unanswered("issuer is not the server it names", f.wrap(&sign(&c, &f.server))).await;
    let mut c = f.claims();
    c["sub"] = json!(KeyPair::new_account().public_key());
    f.assert_unanswered("for another issuer account", f.wrap(&sign(&c, &f.server))).await;
    let mut c = f.claims();
    c["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 60);
    f.assert_unanswered("expired", f.wrap(&sign(&c, &f.server))).await;
    let mut c = f.claims();
    c.as_object_mut().unwrap().remove("exp");
    f.assert_unanswered("without exp", f.wrap(&sign(&c, &f.server))).await;
    f.assert_unanswered("garbage", f.wrap("not a JWT at all")).await;
    f.assert_unanswered("empty", f.wrap("")).await;
}

async fn start_with_forge(xkey: Xkey) -> Stack {
    let mut stack = Stack::start_server_edited(xkey, with_forge_account).await;
    stack.start_daemon().await;
    stack
}

/// The repository's config plus a test-only hole: AUTH exports the callout
/// subject and account FORGE (user `forger`, skips the callout) imports it
/// as `forge.auth`. nats-server refuses a client's direct publish to
/// `$SYS.REQ.USER.AUTH` (see the next test), so this is how a forged
/// request reaches unibusd through a real server.
fn with_forge_account(conf: &str) -> String {
    let export = format!("    exports: [\n      {{ service: \"{}\" }}\n", subjects::AUTH_CALLOUT);
    let conf = conf.replacen("    exports: [\n", &export, 1);
    let conf = conf.replacen("auth_users: [ ", "auth_users: [ forger, ", 1);
    let forge = format!(
        "accounts {{\n  FORGE {{\n    users: [ {{ user: forger, password: forger }} ]\n    \
         imports: [ {{ service: {{ account: AUTH, subject: \"{}\" }}, to: \"{FORGE_SUBJECT}\" }} ]\n  }}\n",
        subjects::AUTH_CALLOUT
    );
    let edited = conf.replacen("accounts {\n", &forge, 1);
    assert!(edited.contains("FORGE") && edited.contains("forger, "), "config layout changed");
    edited
}

/// Without that hole nothing but the server can publish a callout
/// request: the service user's own publish to `$SYS.REQ.USER.AUTH` is a
/// publish violation and reaches no subscriber, while the same bytes sent
/// through FORGE's import do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_server_publishes_callout_requests() {
    let stack = Stack::start_server_edited(Xkey::Plain, with_forge_account).await;
    let spy = stack.service_nats().await;
    let mut requests = spy.subscribe(subjects::AUTH_CALLOUT).await.unwrap();
    spy.flush().await.unwrap();
    let svc = stack.service_nats().await;
    svc.publish_with_reply(subjects::AUTH_CALLOUT, "direct.reply", "direct".into()).await.unwrap();
    svc.flush().await.unwrap();
    let mut f = Forger::new(&stack).await;
    f.send((None, Bytes::from_static(b"forged"))).await;
    let first = tokio::time::timeout(Duration::from_secs(5), requests.next()).await.unwrap().unwrap();
    assert_eq!(&first.payload[..], b"forged", "the direct publish reached the callout subject");
    let more = tokio::time::timeout(Duration::from_millis(300), requests.next()).await;
    assert!(more.is_err(), "a second request arrived: {:?}", more.map(|m| m.map(|m| m.payload)));
}

/// With xkey on: answers the well-made request; refuses every forged
/// token, an unsealed request, a box that does not open, sealed garbage,
/// and a request sealed under another xkey than its server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_with_xkey() {
    let stack = start_with_forge(Xkey::Sealed).await;
    let mut f = Forger::new(&stack).await;
    answers_well_made(&mut f).await;
    refuses_forged_tokens(&mut f).await;
    let service = stack.secrets.xkey.public_key();
    let token = jwt::encode_signed(&f.claims(), &f.server).unwrap();
    f.assert_unanswered("unsealed while xkey is configured", (None, Bytes::from(token.clone()))).await;
    let (headers, _) = f.sealed(token.as_bytes(), &f.xkey, &service);
    f.assert_unanswered("box that does not open", (headers, Bytes::from_static(b"xkv1garbagegarbage"))).await;
    f.assert_unanswered("sealed garbage", f.sealed(b"\xff\x00garbage", &f.xkey, &service)).await;
    let stranger = XKey::new();
    f.assert_unanswered("sealed under another xkey", f.sealed(token.as_bytes(), &stranger, &service)).await;
    let (mut headers, _) = f.sealed(b"", &f.xkey, &service);
    headers.as_mut().unwrap().insert(subjects::HDR_SERVER_XKEY, "not-an-xkey");
    f.assert_unanswered("bad Nats-Server-Xkey header", (headers, Bytes::from_static(b"x"))).await;
}

/// With xkey off: answers the well-made request; refuses every forged
/// token and a sealed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_xkey() {
    let stack = start_with_forge(Xkey::Plain).await;
    let mut f = Forger::new(&stack).await;
    answers_well_made(&mut f).await;
    refuses_forged_tokens(&mut f).await;
    let token = jwt::encode_signed(&f.claims(), &f.server).unwrap();
    let sealed = f.sealed(token.as_bytes(), &f.xkey, &stack.secrets.xkey.public_key());
    f.assert_unanswered("sealed while xkey is not configured", sealed).await;
}

/// The decision budget through a real cluster: unibusd is on n0 only, with
/// a store timeout (10 s) far beyond the server's 2 s auth timeout; the
/// users stream is led elsewhere, and the other two nodes are frozen
/// (SIGSTOP), so the leader probe hangs. A connect to n0 is then refused by
/// a signed denial ("authorization store unavailable") inside the auth
/// timeout: only the 1.5 s budget can have cut the wait short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_budget_denies_before_the_auth_timeout() {
    let _heavy = crate::support::HEAVY.lock().await;
    let store = StoreConfig { replicas: 3, timeout: Duration::from_secs(10), ..StoreConfig::default() };
    let cluster = Cluster::start_with(store, &[0]).await;
    let url = cluster.urls[0].clone();
    // Admitted while the store answers.
    Client::connect(&url, &Identity::generate()).await.expect("admitted while healthy");
    move_leader_off_n0(&cluster, &format!("KV_{}", subjects::BUCKET_USERS)).await;
    let mut errors = AuthErrors::watch(&url, cluster.daemon.service_seed()).await;
    for node in cluster.nodes.iter().skip(1).flatten() {
        node.pause();
    }
    let mut took = Vec::new();
    while took.len() < 3 {
        let started = std::time::Instant::now();
        let probe = Identity::generate();
        let r = Client::connect(&url, &probe).await;
        let elapsed = started.elapsed();
        match r {
            Err(ClientError::NotAuthorized) => {
                let reason = errors.next_reason_about(&probe.nkey_public(), Duration::from_secs(3)).await;
                let reason = reason.expect("an advisory about this connect");
                assert_eq!(
                    reason,
                    format!("{SIGNED_DENIAL}authorization store unavailable"),
                    "after {elapsed:?}"
                );
                assert!(elapsed < DENIAL_WITHIN, "denial took {elapsed:?}");
                took.push(elapsed);
            }
            other => panic!("a connect was not denied with the users leader frozen: {:?}", other.err()),
        }
    }
    for node in cluster.nodes.iter().skip(1).flatten() {
        node.resume();
    }
    println!("decision budget: signed denials after {took:?} with the store frozen");
}

/// Makes sure the leader of `stream` is not n0 (asks it to step down).
async fn move_leader_off_n0(cluster: &Cluster, stream: &str) {
    let svc = async_nats::ConnectOptions::with_nkey(cluster.daemon.service_seed())
        .connect(&cluster.urls[0])
        .await
        .unwrap();
    for _ in 0..40 {
        let leader = crate::support::cluster::leader_of(cluster, &cluster.urls[0], stream).await;
        if leader != "n0" {
            return;
        }
        let _ = svc.request(format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), Bytes::new()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{stream} is still led by n0");
}
