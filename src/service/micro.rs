//! The NATS micro-service protocol (v1) for the control plane: answers
//! `$SRV.PING|INFO|STATS` (all, by name, by name and id) and keeps the
//! per-endpoint request and error counts. Written here rather than taken
//! from async-nats because its error replies have an empty body, and the
//! unibus contract puts a JSON error body beside the error headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use rand::RngCore as _;
use serde_json::json;

use unibus_proto::ids::Timestamp;

#[derive(Default, Clone)]
struct Counters {
    requests: u64,
    errors: u64,
    processing_ns: u128,
    last_error: String,
}

/// One registered micro service.
pub struct Micro {
    name: String,
    id: String,
    version: String,
    description: String,
    queue_group: String,
    started: String,
    /// endpoint subject -> counters (subjects are the endpoint names too).
    stats: Mutex<BTreeMap<String, Counters>>,
}

impl Micro {
    /// A service with these endpoint subjects.
    pub fn new(name: &str, version: &str, description: &str, subjects: &[&str]) -> Arc<Micro> {
        let mut raw = [0u8; 11];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        Arc::new(Micro {
            name: name.into(),
            id: hex::encode(raw).to_uppercase(),
            version: version.into(),
            description: description.into(),
            queue_group: name.into(),
            started: Timestamp::now().to_string(),
            stats: Mutex::new(subjects.iter().map(|s| (s.to_string(), Counters::default())).collect()),
        })
    }

    /// The queue group of every endpoint.
    pub fn queue_group(&self) -> &str {
        &self.queue_group
    }

    /// Counts one answered request; `error` is `Some("code message")` for
    /// error replies.
    pub fn record(&self, subject: &str, elapsed: Duration, error: Option<String>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let c = stats.entry(subject.to_string()).or_default();
        c.requests += 1;
        c.processing_ns += elapsed.as_nanos();
        if let Some(e) = error {
            c.errors += 1;
            c.last_error = e;
        }
    }

    fn endpoint_name(subject: &str) -> String {
        subject.trim_start_matches("unibus.").replace('.', "_")
    }

    fn base(&self, kind: &str) -> serde_json::Value {
        json!({
            "type": format!("io.nats.micro.v1.{kind}_response"),
            "name": self.name, "id": self.id, "version": self.version, "metadata": {},
        })
    }

    fn info(&self) -> serde_json::Value {
        let mut v = self.base("info");
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        v["description"] = json!(self.description);
        v["endpoints"] = stats
            .keys()
            .map(|s| json!({"name": Self::endpoint_name(s), "subject": s, "queue_group": self.queue_group, "metadata": null}))
            .collect();
        v
    }

    fn stats_json(&self) -> serde_json::Value {
        let mut v = self.base("stats");
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        v["started"] = json!(self.started);
        v["endpoints"] = stats
            .iter()
            .map(|(s, c)| {
                let avg = if c.requests == 0 { 0 } else { c.processing_ns / c.requests as u128 };
                json!({
                    "name": Self::endpoint_name(s), "subject": s, "queue_group": self.queue_group,
                    "num_requests": c.requests, "num_errors": c.errors, "last_error": c.last_error,
                    "processing_time": c.processing_ns as u64, "average_processing_time": avg as u64,
                })
            })
            .collect();
        v
    }

    /// Subscribes the discovery subjects; the returned future answers them.
    /// `live` gives the metadata of each STATS answer (the intake's
    /// counters).
    ///
    /// # Errors
    /// When a subscription fails.
    pub async fn discovery(
        self: Arc<Self>,
        client: async_nats::Client,
        live: impl Fn() -> serde_json::Value + Send + 'static,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, async_nats::SubscribeError> {
        let mut subs = Vec::new();
        for verb in ["PING", "INFO", "STATS"] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{}", self.name),
                format!("$SRV.{verb}.{}.{}", self.name, self.id),
            ] {
                subs.push(client.subscribe(subject).await?);
            }
        }
        let merged = futures::stream::select_all(subs);
        Ok(async move {
            let mut merged = merged;
            while let Some(msg) = merged.next().await {
                let Some(reply) = msg.reply.clone() else { continue };
                let body = match msg.subject.split('.').nth(1) {
                    Some("PING") => self.base("ping"),
                    Some("INFO") => self.info(),
                    _ => {
                        let mut stats = self.stats_json();
                        stats["metadata"] = live();
                        stats
                    }
                };
                let _ = client.publish(reply, body.to_string().into()).await;
            }
        })
    }
}
