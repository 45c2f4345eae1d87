//! Unit tests of the gate: budgets, slots and waiting, refusals, penalties.

use super::*;

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn verdict(d: &Decision) -> &'static str {
    match d {
        Decision::Run(_) => "run",
        Decision::Wait(_) => "wait",
        Decision::Refuse(e) if e.code() == "bad_request" => "bad_request",
        Decision::Refuse(_) => "refuse",
        Decision::Silent => "silent",
        Decision::Penalize(_) => "penalize",
    }
}

const READ: Class = Class::Member(Cost::Read);

impl Gate {
    /// A small request of `caller` at `now`.
    fn ask(&self, caller: u64, class: Class, now: Instant) -> Decision {
        self.admit_at(&key(caller), class, 2, 200, now)
    }
}

/// A caller spends its burst by cost, is refused with an answer while its
/// refusal budget lasts, then silently; it refills at its rate; other
/// callers are untouched.
#[test]
fn budget_by_cost_then_answered_refusals_then_silence() {
    let cfg = CallerLimits { rate: 4, burst: 10, refusal_rate: 1, refusal_burst: 3, ..Default::default() };
    let gate = Gate::new(cfg);
    let t0 = Instant::now();
    // 10 units: two sweeps (5 each).
    assert_eq!(verdict(&gate.ask(1, Class::Member(Cost::Sweep), t0)), "run");
    assert_eq!(verdict(&gate.ask(1, Class::Member(Cost::Sweep), t0)), "run");
    let seen: Vec<_> = (0..6).map(|_| verdict(&gate.ask(1, READ, t0))).collect();
    assert_eq!(seen, ["refuse", "refuse", "refuse", "silent", "silent", "silent"]);
    assert_eq!(verdict(&gate.ask(2, Class::Member(Cost::Write), t0)), "run", "another caller");
    // 0.5 s later: 2 units back, a write (2) runs, a second does not.
    let t1 = t0 + Duration::from_millis(500);
    let write = Class::Member(Cost::Write);
    assert_eq!(verdict(&gate.ask(1, write, t1)), "run");
    assert_eq!(verdict(&gate.ask(1, write, t1)), "silent", "refusals not yet refilled");
    let t2 = t0 + Duration::from_millis(1100);
    assert_eq!(verdict(&gate.ask(1, Class::Member(Cost::Sweep), t2)), "refuse", "a refusal back");
}

/// Beyond its own slots or the lane's, a request within its budget waits
/// (a bounded number of them); a slot handed back goes to the waiter.
#[tokio::test]
async fn no_free_slot_means_a_bounded_wait() {
    let cfg = CallerLimits {
        per_caller_in_flight: 2,
        max_in_flight: 8,
        per_caller_waiting: 1,
        max_waiting: 2,
        ..Default::default()
    };
    let gate = Gate::new(cfg);
    let t0 = Instant::now();
    let a1 = gate.ask(1, READ, t0);
    let _a2 = gate.ask(1, READ, t0);
    let w = gate.ask(1, READ, t0);
    assert_eq!(verdict(&w), "wait", "its own slots are taken");
    assert_eq!(verdict(&gate.ask(1, READ, t0)), "refuse", "one waiter per caller");
    let Decision::Wait(w) = w else { unreachable!() };
    drop(a1);
    assert!(w.ticket().await.is_ok(), "the slot handed back");
    let _b = gate.ask(2, READ, t0);
    let _b2 = gate.ask(2, READ, t0);
    let w2 = gate.ask(2, READ, t0);
    assert_eq!(verdict(&w2), "wait");
    let _w3 = gate.ask(3, READ, t0);
    let _w3b = gate.ask(3, READ, t0);
    assert_eq!(verdict(&gate.ask(3, READ, t0)), "wait");
    assert_eq!(verdict(&gate.ask(4, READ, t0)), "run", "a caller with free slots runs");
}

/// A waiter that gets no slot within the wait limit is refused.
#[tokio::test(start_paused = true)]
async fn a_wait_is_bounded_in_time() {
    let gate = Gate::new(CallerLimits { per_caller_in_flight: 1, ..Default::default() });
    let t0 = Instant::now();
    let _held = gate.ask(1, READ, t0);
    let Decision::Wait(w) = gate.ask(1, READ, t0) else { panic!("expected a wait") };
    let e = w.ticket().await.unwrap_err();
    assert_eq!(e.code(), "limit_reached");
}

/// A caller with another request in flight takes at most three quarters
/// of the members' slots; the last quarter stays for the rest.
#[test]
fn busy_callers_leave_room_for_the_rest() {
    let gate = Gate::new(CallerLimits { per_caller_in_flight: 16, max_in_flight: 8, ..Default::default() });
    let t0 = Instant::now();
    let busy: Vec<_> = (0..7).map(|_| gate.ask(1, READ, t0)).collect();
    let runs = busy.iter().filter(|d| verdict(d) == "run").count();
    assert_eq!(runs, 7, "its first, then 6 of the busy share");
    assert_eq!(verdict(&gate.ask(1, READ, t0)), "wait", "the busy share is taken");
    let other = gate.ask(2, READ, t0);
    assert_eq!(verdict(&other), "run", "a caller with nothing in flight");
    assert_eq!(verdict(&gate.ask(3, READ, t0)), "wait", "full");
}

/// Guests have slots of their own: members' load does not take them.
#[test]
fn guests_have_their_own_lane() {
    let gate = Gate::new(CallerLimits { max_in_flight: 1, guest_in_flight: 1, ..Default::default() });
    let t0 = Instant::now();
    let _m = gate.ask(1, READ, t0);
    assert_eq!(verdict(&gate.ask(2, READ, t0)), "wait", "members' lane full");
    let g = gate.ask(3, Class::Guest, t0);
    assert_eq!(verdict(&g), "run", "the guests' lane is not");
}

/// Fresh callers never grow the table past its cap; idle entries make
/// room again.
#[test]
fn table_stays_bounded() {
    let gate = Gate::new(CallerLimits { max_callers: 50, ..Default::default() });
    let t0 = Instant::now();
    let mut refused = 0;
    for i in 0..1_000u64 {
        if !matches!(gate.ask(i, READ, t0), Decision::Run(_)) {
            refused += 1;
        }
        assert!(gate.tracked_callers() <= 50);
    }
    assert_eq!(refused, 950);
    let later = t0 + Duration::from_secs(60);
    assert_eq!(verdict(&gate.ask(5_000, READ, later)), "run");
    assert!(gate.tracked_callers() <= 50);
}

/// An oversized body is refused as `bad_request`; a byte flood and a
/// request flood far past the budget are penalized.
#[test]
fn oversized_bodies_are_bad_requests_floods_are_penalized() {
    let cfg = CallerLimits {
        rate: 10,
        burst: 10,
        refusal_burst: 1,
        abuse_per_sec: 10,
        abuse_burst: 100,
        bytes_per_sec: 1_000,
        bytes_burst: 100_000,
        ..Default::default()
    };
    let gate = Gate::new(cfg);
    let t0 = Instant::now();
    let big = MAX_REQUEST_BYTES + 1;
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, big, big, t0)), "bad_request");
    // Bytes: the burst takes 5 more such bodies (unanswered: the refusal
    // budget is spent), then no more.
    for i in 0..5 {
        assert_eq!(verdict(&gate.admit_at(&key(1), READ, big, big, t0)), "silent", "body {i}");
    }
    assert_eq!(verdict(&gate.admit_at(&key(1), READ, big, big, t0)), "penalize");
    // Requests: 10 run, 1 refused, 100 dropped, then penalized.
    let seen: Vec<_> = (0..112).map(|_| verdict(&gate.ask(3, READ, t0))).collect();
    assert_eq!(seen.iter().filter(|v| **v == "run").count(), 10);
    assert_eq!(seen.iter().filter(|v| **v == "silent").count(), 100);
    assert_eq!(seen.last(), Some(&"penalize"));
}

/// A guest key's budget is small: one registration to make (malformed
/// retries included), not a member's.
#[test]
fn a_guest_budget_is_small() {
    let gate = Gate::new(CallerLimits { guest_burst: 3, refusal_burst: 1, ..Default::default() });
    let t0 = Instant::now();
    let seen: Vec<_> = (0..5).map(|_| verdict(&gate.ask(1, Class::Guest, t0))).collect();
    assert_eq!(seen, ["run", "run", "run", "refuse", "silent"]);
    assert_eq!(verdict(&gate.ask(2, READ, t0)), "run", "a member's budget is its own");
}

/// A key that spent its guest budget (registering) starts as a member
/// with a member's budget.
#[test]
fn a_registered_guest_gets_a_members_budget() {
    let gate = Gate::new(CallerLimits { guest_burst: 2, ..Default::default() });
    let t0 = Instant::now();
    assert_eq!(verdict(&gate.ask(1, Class::Guest, t0)), "run");
    assert_eq!(verdict(&gate.ask(1, Class::Guest, t0)), "run");
    let seen: Vec<_> = (0..12).map(|_| verdict(&gate.ask(1, Class::Member(Cost::Sweep), t0))).collect();
    assert!(seen.iter().all(|v| *v == "run" || *v == "wait"), "{seen:?}");
}
