//! A bad release stops at the first host, in the simulator: a new version that leaves every
//! instance IMPAIRED after boot reaches one host with the canary (at most N without), the host it
//! failed on holds its slot, and every other host halts or waits behind it; the checker finds
//! nothing. With `health.on-failure = return` the failed hosts give their slots back, so only the
//! halt keeps the others from taking the release one after another: without it, every host does.

use agent::config::OnFailure;
use fleet_sim::check;
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, Run};
use fleet_sim::spread::Spread;

const HOSTS: usize = 60;
const N: u32 = 5;
const SEEDS: [u64; 2] = [1, 2];

fn run(sc: &Scenario) -> Run {
    sim::run(sc).expect("the simulation runtime starts")
}

/// Runs `sc`, asserts that it ended before its limit with no violation, and returns the spread.
fn spread(sc: &Scenario) -> (Run, Spread) {
    let r = run(sc);
    let v = check::check(&r.trace);
    let lines: Vec<String> = v.iter().take(8).map(|v| format!("  {v}")).collect();
    assert!(v.is_empty() && r.finished, "seed {} (finished: {}):\n{}", sc.seed, r.finished, lines.join("\n"));
    let s = Spread::of(&r.trace);
    eprintln!("MEASURE: seed {}, canary {}, on-failure {:?}: {s:?}", sc.seed, sc.canary_hosts, sc.on_failure);
    (r, s)
}

/// Every host that did not receive the release halted, or waits behind a host it failed on.
fn assert_the_rest_halted_or_wait(r: &Run, s: &Spread) {
    assert_eq!(s.received + s.halted + s.waiting, r.trace.hosts.len(), "{s:?}");
    assert!(s.halted > 0, "the version halted on no host: {s:?}");
}

#[test]
fn a_release_bad_on_every_host_reaches_only_the_canary() {
    for seed in SEEDS {
        let (r, s) = spread(&Scenario::bad_release(HOSTS, N, seed, 1.0));
        assert_eq!((s.received, s.failed), (1, 1), "seed {seed}: {s:?}");
        assert_the_rest_halted_or_wait(&r, &s);
    }
}

#[test]
fn without_the_canary_a_release_bad_on_every_host_reaches_at_most_n() {
    for seed in SEEDS {
        let sc = Scenario { canary_hosts: 0, ..Scenario::bad_release(HOSTS, N, seed, 1.0) };
        let (r, s) = spread(&sc);
        assert!((1..=N as usize).contains(&s.received), "seed {seed}: {s:?}");
        assert_eq!(s.failed, s.received);
        assert_the_rest_halted_or_wait(&r, &s);
    }
}

#[test]
fn hosts_that_give_their_slot_back_after_failing_still_stop_the_release() {
    // The failed hosts return to service on the bad version: slots come free, and only the
    // failure markers keep the next hosts from taking it. Nobody is left waiting.
    for seed in SEEDS {
        for canary_hosts in [1, 0] {
            let sc = Scenario { canary_hosts, on_failure: OnFailure::Return, ..Scenario::bad_release(HOSTS, N, seed, 1.0) };
            let (r, s) = spread(&sc);
            let most = if canary_hosts > 0 { 1 } else { N as usize };
            assert!((1..=most).contains(&s.received), "seed {seed}, canary {canary_hosts}: {s:?}");
            assert_eq!((s.received + s.halted, s.waiting), (r.trace.hosts.len(), 0), "seed {seed}, canary {canary_hosts}: {s:?}");
        }
    }
}

#[test]
fn without_the_halt_the_same_release_reaches_every_host_one_canary_at_a_time() {
    // The control for the figures above: the failure markers are written but nobody counts
    // them. Failed hosts that give their slot back hand it to the next, which fails in turn (no
    // host passes as a canary, so the limit stays 1); failed hosts that hold leave the others
    // waiting, none halted.
    let sc = Scenario { halt_after_failures: 0, on_failure: OnFailure::Return, ..Scenario::bad_release(HOSTS, N, 1, 1.0) };
    let (_, s) = spread(&sc);
    assert_eq!((s.received, s.halted), (HOSTS, 0), "{s:?}");
    let sc = Scenario { halt_after_failures: 0, on_failure: OnFailure::Hold, ..Scenario::bad_release(HOSTS, N, 1, 1.0) };
    let (_, s) = spread(&sc);
    assert_eq!((s.received, s.halted, s.waiting), (1, 0, HOSTS - 1), "{s:?}");
    // Rolling back frees the slot too: every host takes the release in turn, and every one
    // ends on the version it came from.
    let sc = Scenario { halt_after_failures: 0, on_failure: OnFailure::Rollback, ..Scenario::bad_release(HOSTS, N, 1, 1.0) };
    let (r, s) = spread(&sc);
    assert_eq!((s.received, s.halted), (HOSTS, 0), "{s:?}");
    assert!(r.trace.hosts.iter().all(|h| h.end.running == fleet_sim::scenario::FROM_VERSION), "every host rolled back");
}

#[test]
fn a_canary_that_rolls_back_ends_on_the_old_version_and_halts_the_rest() {
    for seed in SEEDS {
        let sc = Scenario { on_failure: OnFailure::Rollback, ..Scenario::bad_release(HOSTS, N, seed, 1.0) };
        let (r, s) = spread(&sc);
        assert_eq!((s.received, s.halted), (1, HOSTS - 1), "seed {seed}: {s:?}");
        assert!(r.trace.hosts.iter().all(|h| h.end.running == fleet_sim::scenario::FROM_VERSION), "seed {seed}: nobody is left on the bad version");
    }
}
