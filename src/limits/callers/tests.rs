//! Unit tests of the gate: budgets, caps, refusals, penalties.

use super::*;
use crate::limits::GuestLimits;

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn gate(cfg: CallerLimits) -> Gate {
    Gate::new(cfg, Limiter::new(GuestLimits::default()))
}

fn verdict(d: &Decision) -> &'static str {
    match d {
        Decision::Run(_) => "run",
        Decision::Refuse(_) => "refuse",
        Decision::Silent => "silent",
        Decision::Penalize(_) => "penalize",
    }
}

const READ: Class = Class::Member(Cost::Read);

/// A caller spends its burst by cost, is refused with an answer while its
/// refusal budget lasts, then silently; it refills at its rate; other
/// callers are untouched.
#[test]
fn budget_by_cost_then_answered_refusals_then_silence() {
    let cfg = CallerLimits { rate: 10, burst: 20, refusal_rate: 1, refusal_burst: 3, ..Default::default() };
    let gate = gate(cfg);
    let t0 = Instant::now();
    // 20 units: one sweep (20) fits once.
    assert_eq!(verdict(&gate.admit_at(&key(1), Class::Member(Cost::Sweep), 2, t0)), "run");
    let seen: Vec<_> = (0..6).map(|_| verdict(&gate.admit_at(&key(1), READ, 2, t0))).collect();
    assert_eq!(seen, ["refuse", "refuse", "refuse", "silent", "silent", "silent"]);
    assert_eq!(verdict(&gate.admit_at(&key(2), Class::Member(Cost::Write), 2, t0)), "run", "another caller");
    // 0.5 s later: 5 units back, a write (4) runs, a second does not.
    let t1 = t0 + Duration::from_millis(500);
    let write = Class::Member(Cost::Write);
    assert_eq!(verdict(&gate.admit_at(&key(1), write, 2, t1)), "run");
    assert_eq!(verdict(&gate.admit_at(&key(1), write, 2, t1)), "silent", "refusals not yet refilled");
    let t2 = t0 + Duration::from_millis(1100);
    assert_eq!(verdict(&gate.admit_at(&key(1), Class::Member(Cost::Sweep), 2, t2)), "refuse", "a refusal back");
}

/// The last quarter of the slots is kept for callers with nothing in
/// flight.
#[test]
fn busy_callers_leave_room_for_the_rest() {
    let gate = gate(CallerLimits { per_caller_in_flight: 8, max_in_flight: 8, ..Default::default() });
    let t0 = Instant::now();
    let busy: Vec<_> = (0..6).map(|_| gate.admit_at(&key(1), READ, 2, t0)).collect();
    assert!(busy.iter().all(|d| verdict(d) == "run"));
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, 2, t0)), "refuse", "2 slots left: kept for others");
    let other = gate.admit_at(&key(2), READ, 2, t0);
    assert_eq!(verdict(&other), "run", "a caller with nothing in flight");
    let third = gate.admit_at(&key(3), READ, 2, t0);
    assert_eq!(verdict(&third), "run");
    assert_eq!(verdict(&gate.admit_at(&key(4), READ, 2, t0)), "refuse", "full");
}

/// At most `per_caller_in_flight` of one caller and `max_in_flight` of
/// all run at once; slots come back when tickets drop.
#[test]
fn in_flight_caps() {
    let gate = gate(CallerLimits { per_caller_in_flight: 2, max_in_flight: 3, ..Default::default() });
    let t0 = Instant::now();
    let a1 = gate.admit_at(&key(1), READ, 2, t0);
    let _a2 = gate.admit_at(&key(1), READ, 2, t0);
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, 2, t0)), "refuse", "per caller");
    let _b1 = gate.admit_at(&key(2), READ, 2, t0);
    assert_eq!(verdict(&gate.admit_at(&key(3), READ, 2, t0)), "refuse", "instance full");
    drop(a1);
    let c1 = gate.admit_at(&key(3), READ, 2, t0);
    assert_eq!(verdict(&c1), "run", "a slot came back");
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, 2, t0)), "refuse", "instance full again");
}

/// Fresh callers never grow the table past its cap; idle entries make
/// room again.
#[test]
fn table_stays_bounded() {
    let gate = gate(CallerLimits { max_callers: 50, ..Default::default() });
    let t0 = Instant::now();
    let mut refused = 0;
    for i in 0..1_000u64 {
        if !matches!(gate.admit_at(&key(i), READ, 2, t0), Decision::Run(_)) {
            refused += 1;
        }
        assert!(gate.tracked_callers() <= 50);
    }
    assert_eq!(refused, 950);
    let later = t0 + Duration::from_secs(60);
    assert_eq!(verdict(&gate.admit_at(&key(5_000), READ, 2, later)), "run");
    assert!(gate.tracked_callers() <= 50);
}

/// A body over the size limit, a byte flood, and a request flood far past
/// the budget are each penalized; a flood just past it is not.
#[test]
fn far_past_the_limit_is_penalized() {
    let cfg = CallerLimits {
        rate: 10,
        burst: 10,
        refusal_burst: 1,
        abuse_per_sec: 10,
        abuse_burst: 100,
        bytes_per_sec: 1_000,
        bytes_burst: 10_000,
        ..Default::default()
    };
    let gate = gate(cfg);
    let t0 = Instant::now();
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, MAX_REQUEST_BYTES + 1, t0)), "penalize");
    // Bytes: 10 requests of 1,000 fit the burst, the 11th does not.
    for i in 0..10 {
        assert_ne!(verdict(&gate.admit_at(&key(2), READ, 1_000, t0)), "penalize", "request {i}");
    }
    assert_eq!(verdict(&gate.admit_at(&key(2), READ, 1_000, t0)), "penalize");
    // Requests: 10 run, 1 refused, 100 dropped, then penalized.
    let seen: Vec<_> = (0..112).map(|_| verdict(&gate.admit_at(&key(3), READ, 2, t0))).collect();
    assert_eq!(seen.iter().filter(|v| **v == "run").count(), 10);
    assert_eq!(seen.iter().filter(|v| **v == "silent").count(), 100);
    assert_eq!(seen.last(), Some(&"penalize"));
}

/// A guest's registration is judged by the guest limits, and its bytes by
/// the gate.
#[test]
fn guests_take_the_guest_limits() {
    let gate = gate(CallerLimits::default());
    let t0 = Instant::now();
    let seen: Vec<_> = (0..7).map(|_| verdict(&gate.admit_at(&key(9), Class::Guest, 300, t0))).collect();
    assert_eq!(seen, ["run", "run", "run", "run", "run", "refuse", "refuse"], "a burst of 5");
    assert_eq!(verdict(&gate.admit_at(&key(9), Class::Guest, MAX_REQUEST_BYTES + 1, t0)), "penalize");
}
