//! Callout connects of a device key of a 3-device account against a
//! one-device account, on the same server and unibusd, in alternating
//! rounds (docs/protocol.md section 8): the device lookup must not make
//! linked devices slower to admit.

use serde_json::json;
use unibus::Identity;
use unibus_proto::devicelist::{By, Change};
use unibus_proto::records::{Device, Role, Via};
use unibusd::daemon::Running;
use unibusd::store::ListChange;

use super::{Lat, connects, median, user_record};

/// Seeds the 3-device account (its third device connects) and measures,
/// in `rounds` rounds per connector count (each measures both accounts).
pub async fn run(
    url: &str,
    running: &Running,
    one_device_seed: [u8; 32],
    n: usize,
    rounds: usize,
) -> serde_json::Value {
    let account = Identity::from_seed([43u8; 32]);
    let account_key = account.sign_pub_hex();
    let mut list = account.first_device_list();
    running.store.add_account(&user_record(&account, Role::Member).with_list(list.clone())).await.unwrap();
    let mut third = [0u8; 32];
    for seed in [44u8, 45] {
        let dev = Identity::from_seed([seed; 32]).with_account(&account_key).unwrap();
        let sig = Some(dev.bind(&account_key).to_string());
        let account_id = unibus_proto::Key::parse(&account_key).unwrap();
        let d = Device::joining(
            account_id,
            dev.sign_key(),
            dev.kex_key(),
            sig,
            Via::Device,
            unibus_proto::Actor::Key(account_id),
        );
        // Each add with the next version of the list, signed by the
        // account's first device.
        let mut devices = list.devices.clone();
        devices.push(d.listed());
        list = account.next_device_list(&list, devices, By::Device);
        let change = ListChange {
            list: list.clone(),
            caller: account.sign_key(),
            by: By::Device,
            change: Change::Added(d.listed()),
        };
        running.store.add_device(d, |_| Ok(()), &change).await.unwrap();
        third = [seed; 32];
    }
    let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let mut rows = Vec::new();
    for parallel in [1usize, 8] {
        let (mut one, mut three) = (Side::default(), Side::default());
        for _ in 0..rounds {
            for (seed, side) in [(one_device_seed, &mut one), (third, &mut three)] {
                running.callout.latency.reset();
                let (rate, lat) = connects(url, seed, n, parallel).await;
                side.rates.push(rate);
                side.lat.0.extend(lat.0);
                side.decisions.push(ms(running.callout.latency.quantile(0.5)));
            }
        }
        rows.push(json!({
            "connectors": parallel, "n": n, "rounds": rounds,
            "one_device": one.summary(), "three_devices": three.summary(),
            "ratio_per_s": median(&three.rates) / median(&one.rates).max(1e-9),
        }));
    }
    json!(rows)
}

#[derive(Default)]
struct Side {
    rates: Vec<f64>,
    lat: Lat,
    decisions: Vec<f64>,
}

impl Side {
    fn summary(&mut self) -> serde_json::Value {
        json!({
            "per_s_median": median(&self.rates), "per_s_min": min(&self.rates), "per_s_max": max(&self.rates),
            "p50_ms": self.lat.pct(0.5), "p99_ms": self.lat.pct(0.99),
            "decision_p50_ms_median": median(&self.decisions),
        })
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Prints the comparison.
pub fn print(rows: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "\nlinked devices: callout connects of the 3rd device of a 3-device account vs a one-device account"
    );
    let rounds = rows[0]["rounds"].as_u64().unwrap_or(0);
    println!(
        "(same server and unibusd, {rounds} alternating rounds each; connects/s median (min-max), latency p50/p99, decision p50)"
    );
    for r in rows.as_array().into_iter().flatten() {
        for (what, s) in [("one device", &r["one_device"]), ("3 devices", &r["three_devices"])] {
            println!(
                "  {} connector(s) {what:<10} {:>7.0}/s ({:.0}-{:.0})  p50/p99 {:.2}/{:.2} ms  decision {:.3} ms",
                r["connectors"].as_u64().unwrap_or(0),
                f(&s["per_s_median"]),
                f(&s["per_s_min"]),
                f(&s["per_s_max"]),
                f(&s["p50_ms"]),
                f(&s["p99_ms"]),
                f(&s["decision_p50_ms_median"]),
            );
        }
        println!("  ratio (3 devices / one device, connects/s medians): {:.2}x", f(&r["ratio_per_s"]));
    }
}
