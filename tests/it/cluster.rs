//! A 3-node nats-server cluster with the buckets at 3 replicas.

use std::time::Duration;

use futures::StreamExt as _;
use unibus::client::{Client, ClientError, Identity};
use unibus::model::Role;
use unibus::proto::InviteCreateRequest;

use crate::harness::{Cluster, connect_watched_to, expect_event_within};

/// The user is connected to node 3, the admin's revoke goes through node 1,
/// and the user is cut off within 1 s; on R3, 20 concurrent redeemers of
/// one invite still have exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_through_node1_cuts_off_user_on_node3() {
    let _heavy = crate::harness::HEAVY.lock().await;
    let cluster = Cluster::start().await;
    let store = &cluster.daemon.store;
    let (_, token) = store.bootstrap_admin_invite(600).await.unwrap();
    let root = Identity::generate();
    Client::connect(&cluster.urls[0], &root).await.unwrap().register(&token.to_hex(), None).await.unwrap();
    let admin = Client::connect(&cluster.urls[0], &root).await.unwrap();

    let inv = admin.create_invite(&InviteCreateRequest::default()).await.unwrap();
    let mut guests = Vec::new();
    for i in 0..20 {
        let id = Identity::generate();
        guests.push((Client::connect(&cluster.urls[i % 3], &id).await.unwrap(), id));
    }
    let results: Vec<_> = futures::stream::iter(guests.iter())
        .map(|(c, _)| c.register(&inv.token, None))
        .buffer_unordered(20)
        .collect()
        .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "one winner on R3");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(r.as_ref().unwrap_err().service_error().map(|e| e.code()), Some("invite_used"));
    }

    let user_inv = admin
        .create_invite(&InviteCreateRequest { role: Some(Role::Member), ..Default::default() })
        .await
        .unwrap();
    let user = Identity::generate();
    Client::connect(&cluster.urls[2], &user).await.unwrap().register(&user_inv.token, None).await.unwrap();
    let (on_node3, mut events) = connect_watched_to(&cluster.urls[2], &user).await;
    assert_eq!(on_node3.whoami().await.unwrap().sign_pub, user.sign_pub_hex());

    let reply = admin.revoke_user(&user.sign_pub_hex()).await.unwrap();
    assert!(reply.kicked >= 1);
    expect_event_within(&mut events, "disconnected", Duration::from_secs(1)).await;
    for url in &cluster.urls {
        assert!(matches!(Client::connect(url, &user).await, Err(ClientError::NotAuthorized)), "{url}");
    }
}
