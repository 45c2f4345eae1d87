//! How much each section measures: the full counts (the published
//! figures) or the quick ones (`--quick` or `UNIBUS_BENCH_QUICK=1`, what
//! CI runs: every section with small counts, the figures meaningless but
//! produced); and the check that every figure of a report was produced.

/// Counts of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Quick mode.
    pub quick: bool,
    /// Connects per measurement (`--n`).
    pub n: usize,
    /// Alternating rounds of the devices and flood sections.
    pub rounds: usize,
    /// Sequential registrations (beside the floor, and staying clients).
    pub register_seq: usize,
    /// Registrations by 64 concurrent clients.
    pub register_par: usize,
    /// Timed leader round trips (after a tenth as many untimed).
    pub trips: usize,
    /// Users of the large scale figure (the small one has 100).
    pub scale_users: usize,
    /// Timed callout decisions per scale figure.
    pub decisions: usize,
    /// Sequential `unibus.mail.send`s per round (64 senders send a quarter
    /// as many each).
    pub mail_sends: usize,
    /// Waiting messages a device catches up on.
    pub mail_waiting: usize,
}

impl Plan {
    /// From the command line (`--quick`, `--n N`) and the environment
    /// (`UNIBUS_BENCH_QUICK=1`).
    pub fn from_args(args: &[String]) -> Plan {
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("UNIBUS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let n = args.iter().position(|a| a == "--n").and_then(|i| args.get(i + 1)?.parse().ok());
        if quick {
            Plan {
                quick,
                n: n.unwrap_or(40),
                rounds: 1,
                register_seq: 50,
                register_par: 128,
                trips: 100,
                scale_users: 1000,
                decisions: 200,
                mail_sends: 40,
                mail_waiting: 640,
            }
        } else {
            Plan {
                quick,
                n: n.unwrap_or(500),
                rounds: 3,
                register_seq: 300,
                register_par: 1280,
                trips: 1000,
                scale_users: 100_000,
                decisions: 2000,
                mail_sends: 500,
                mail_waiting: 10_000,
            }
        }
    }
}

/// Sections every report has.
const SECTIONS: &[&str] =
    &["connects", "devices", "leader_round_trip", "flood", "register", "device_add", "mail", "scale"];

/// Counts that may be zero, what the flooder did: its connects refused
/// (none while its flood stays within what unibusd tolerates) and its
/// requests sent (none when it is still refused from the previous
/// measurement, its penalty not yet over).
const MAY_BE_ZERO: &[&str] = &["refused", "requests"];

/// Every figure that was not produced: a missing or empty section, and any
/// number that is not finite and positive (`NaN` and infinities are `null`
/// in JSON; a rate or quantile with no sample comes out as 0).
pub fn missing(report: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    for s in SECTIONS {
        match report.get(*s) {
            None => out.push(format!("{s}: section missing")),
            Some(v) => walk(s, v, &mut out),
        }
    }
    out
}

fn walk(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let leaf = path.rsplit('.').next().unwrap_or(path);
    match v {
        Value::Null => out.push(format!("{path}: no value (NaN or infinite)")),
        Value::Number(x) => {
            let x = x.as_f64().unwrap_or(f64::NAN);
            let ok = x.is_finite() && (x > 0.0 || (x == 0.0 && MAY_BE_ZERO.contains(&leaf)));
            if !ok {
                out.push(format!("{path}: {x}"));
            }
        }
        Value::Array(items) if items.is_empty() => out.push(format!("{path}: empty")),
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| walk(&format!("{path}[{i}]"), v, out))
        }
        Value::Object(m) if m.is_empty() => out.push(format!("{path}: empty")),
        Value::Object(m) => m.iter().for_each(|(k, v)| walk(&format!("{path}.{k}"), v, out)),
        Value::Bool(_) | Value::String(_) => {}
    }
}
