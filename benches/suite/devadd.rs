//! `unibus.device.add` with its signed device list (docs/protocol.md
//! section 11) vs a floor, in alternating rounds: sequential adds from one
//! device of a member account, each followed by an untimed revoke of the
//! device just added (so the account stays under the cap), against an echo
//! on a floor server (the same callout, the same APP -> AUTH import) that
//! does the same KV operations as the add: five leader reads (the caller's
//! device and account records, the new key as an account and as a device,
//! the account again), the replaced list kept (a `create` that finds it,
//! and a read) beside the device record's `create`, the account's
//! read-modify-CAS, the device record's CAS and the new list's `create`.

use std::time::Instant;

use futures::StreamExt as _;
use serde_json::json;
use unibus::{Client, Identity};
use unibus_proto::devicelist::{By, DeviceList};
use unibus_proto::endpoint as ep;
use unibus_proto::ids::{KexPub, SignPub};
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibus_proto::wire::{DeviceAddRequest, DeviceRevokeRequest};
use unibusd::daemon::Running;
use unibusd::secrets::Secrets;
use unibusd::store::StoreConfig;

use super::{Lat, floor_callout, unibus_server, user_record};

/// One add request: the bundle of a new device of `phone`'s account with
/// the next version of its list after `current`, signed by `phone`.
fn add_request(phone: &Identity, current: &DeviceList) -> DeviceAddRequest {
    let new = Identity::generate().with_account(&phone.sign_pub_hex()).unwrap();
    let bundle = new.bundle(None);
    let mut devices = current.devices.clone();
    devices.push(new.listed());
    DeviceAddRequest {
        device: SignPub::parse(&bundle.device).unwrap(),
        kex_pub: KexPub::parse(&bundle.kex_pub).unwrap(),
        kex_sig: unibus_proto::KexSig::parse(&bundle.kex_sig).unwrap(),
        name: None,
        device_list: phone.next_device_list(current, devices, By::Device),
    }
}

/// The floor's echo on `unibus.device.add` (see the module doc).
async fn floor_echo(svc: async_nats::Client) {
    let js = async_nats::jetstream::new(svc.clone());
    js.create_stream(unibusd::store::bucket_stream_config("BENCH_devfloor", &StoreConfig::default()))
        .await
        .unwrap();
    let kv = js.get_key_value("BENCH_devfloor").await.unwrap();
    kv.create("list", "{}".into()).await.unwrap();
    kv.create("user", "{}".into()).await.unwrap();
    let mut sub = svc.queue_subscribe(subjects::DEVICE_ADD, "floor".into()).await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let (kv, echo) = (kv.clone(), svc.clone());
            tokio::spawn(async move {
                for key in ["caller_device", "user", "new_user", "new_device", "user"] {
                    let _ = kv.entry(key).await.unwrap();
                }
                let d = format!("d{}", rand::random::<u64>());
                let keep = async {
                    let _ = kv.create("list", msg.payload.clone()).await;
                    kv.entry("list").await.unwrap()
                };
                let (_, claimed) = tokio::join!(keep, kv.create(&d, msg.payload.clone()));
                let claimed = claimed.unwrap();
                // The account's CAS, retried on a lost race like the store's.
                loop {
                    let r = kv.entry("user").await.unwrap().unwrap().revision;
                    if kv.update("user", msg.payload.clone(), r).await.is_ok() {
                        break;
                    }
                }
                kv.update(&d, msg.payload.clone(), claimed).await.unwrap();
                kv.create(format!("l{}", rand::random::<u64>()), msg.payload.clone()).await.unwrap();
                if let Some(reply) = msg.reply {
                    let _ = echo.publish(reply, msg.payload).await;
                }
            });
        }
    });
}

/// Sequential device adds (p50/p99) vs the floor, `n` each.
pub async fn run(url: &str, running: &Running, n: usize) -> serde_json::Value {
    let phone = Identity::generate();
    let mut current = phone.first_device_list();
    running.store.add_account(&user_record(&phone, Role::Member).with_list(current.clone())).await.unwrap();
    let c = Client::connect(url, &phone).await.unwrap();

    let floor_dir = tempfile::tempdir().unwrap();
    let floor_secrets = Secrets::generate();
    let floor_server = unibus_server(floor_dir.path(), &floor_secrets).await;
    let (svc, floor_store) = floor_callout(&floor_server.url, &floor_secrets).await;
    floor_echo(svc.clone()).await;
    svc.flush().await.unwrap();
    let member = Identity::generate();
    floor_store.add_account(&user_record(&member, Role::Member)).await.unwrap();
    let floor_c = Client::connect(&floor_server.url, &member).await.unwrap();
    let floor_body = serde_json::to_vec(&add_request(&phone, &current)).unwrap();
    for _ in 0..20 {
        floor_c.call_raw(subjects::DEVICE_ADD, floor_body.clone()).await.unwrap();
    }

    let (mut adds, mut floor) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let round = 25;
    let mut left = n;
    while left > 0 {
        let this = round.min(left);
        left -= this;
        for _ in 0..this {
            let t = Instant::now();
            floor_c.call_raw(subjects::DEVICE_ADD, floor_body.clone()).await.unwrap();
            floor.push(t.elapsed());
        }
        for _ in 0..this {
            let req = add_request(&phone, &current);
            let t = Instant::now();
            let added = c.request::<ep::DeviceAdd>(&req).await.expect("device add");
            adds.push(t.elapsed());
            let gone = added.device.device.to_hex();
            let devices = req.device_list.devices.iter().filter(|d| d.device != gone).cloned().collect();
            let after = phone.next_device_list(&req.device_list, devices, By::Device);
            let revoke = DeviceRevokeRequest {
                device: SignPub::parse(&gone).unwrap(),
                device_list: Some(after.clone()),
            };
            c.request::<ep::DeviceRevoke>(&revoke).await.expect("device revoke");
            current = after;
        }
    }
    floor_server.stop().await;
    let (mut adds, mut floor) = (Lat(adds), Lat(floor));
    json!({
        "n": n,
        "add_p50_ms": adds.pct(0.5), "add_p99_ms": adds.pct(0.99),
        "floor_p50_ms": floor.pct(0.5), "floor_p99_ms": floor.pct(0.99),
        "ratio_p50": adds.pct(0.5) / floor.pct(0.5),
    })
}
