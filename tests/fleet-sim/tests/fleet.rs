//! The fleet simulation end to end: the real agent on hundreds of simulated hosts with faults
//! (failing health gates and, on some seeds, a release bad on some hosts among them) never
//! breaks "at most N" or leaves anything behind but the hosts a bad release holds; the checker does find the violations of
//! a settle time shorter than the staleness and of the unsafe "lowest claim wins" rule; and a
//! seed replays exactly.
//!
//! `SIM_SEED=<n> cargo test -p fleet-sim` runs only seed n of the fault sweep and prints all it
//! finds.

use std::time::Duration;

use agent::lease::LeaseRule;
use fleet_sim::check::{self, Violation, ViolationKind};
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, Run};
use fleet_sim::spread::Spread;

fn run(sc: &Scenario) -> Run {
    sim::run(sc).expect("the simulation runtime starts")
}

/// A readable account of a failed run: the seed to replay, the violations, and what led to the
/// first one.
fn report(seed: u64, run: &Run, violations: &[Violation]) -> String {
    let mut out = format!("SIM_SEED={seed}: {} violation(s), finished: {}\n", violations.len(), run.finished);
    for v in violations.iter().take(20) {
        out.push_str(&format!("  {v}\n"));
    }
    if let Some(first) = violations.first() {
        out.push_str("transitions before the first:\n");
        for line in run.trace.transitions_before(first.at, 25) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn sweep_seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=24).collect(),
    }
}

#[test]
fn no_violation_with_every_fault_over_many_seeds() {
    let mut failures = vec![];
    let mut seen = fleet_sim::trace::FaultCounts::default();
    let mut halted = 0;
    for seed in sweep_seeds() {
        let mut sc = Scenario::sweep(100, 4, seed);
        // Calls take time, so an act between two calls (DRAINING undone by the next call, say)
        // lasts long enough for the checker to see it.
        sc.ecs_latency = Duration::from_millis(50);
        // Half the seeds with a cap long enough for waiters to count their competitors.
        if seed % 2 == 0 {
            sc.wait_poll_max = Duration::from_secs(3600);
        }
        let r = run(&sc);
        let v = check::check(&r.trace);
        seen.add(&r.trace.fault_counts());
        let s = Spread::of(&r.trace);
        if sc.faults.bad_release > 0.0 {
            eprintln!("seed {seed}: a release bad on {} hosts, halt after {}: {s:?}", s.bad, sc.halt_after_failures);
            halted += s.halted;
        }
        if !v.is_empty() || !r.finished {
            failures.push(report(seed, &r, &v));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("faults over the sweep: {seen}");
    // The sweep proves something only if the faults really happened.
    let c = &seen;
    let hosts_side = [
        c.crashes,
        c.sigterms,
        c.rollbacks,
        c.reboots,
        c.long_downs,
        c.crashes_mid_drain,
        c.long_api_outages,
        c.late_reconnects,
        c.impaired,
    ];
    let cluster_side = [c.slow_writes, c.stale_status_reads, c.stopping_tasks_listed, c.operator_drains as u64];
    assert!(hosts_side.iter().all(|&n| n > 0) && cluster_side.iter().all(|&n| n > 0), "{seen:?}");
    if std::env::var("SIM_SEED").is_err() {
        assert!(c.impaired_for_good > 0 && halted > 0, "the bad releases must have failed somewhere and halted the fleet: {seen:?}");
    }
}

#[test]
fn a_settle_time_shorter_than_the_staleness_is_caught() {
    // Forty hosts ask at the same instant (the same check, the same download time: waiters now
    // spread their looks, so only a common start makes them race); reads may lag 30 s, claims
    // are counted after 1 s.
    let scenario = |settle: u64, seed: u64| Scenario {
        same_instant: true,
        prepare_time: fleet_sim::scenario::Span::exactly(Duration::from_secs(60)),
        settle: Duration::from_secs(settle),
        faults: fleet_sim::scenario::FaultPlan { staleness: Duration::from_secs(30), ..Default::default() },
        ..Scenario::realistic(40, 2, seed)
    };
    for seed in 1..=3 {
        let r = run(&scenario(1, seed));
        let v = check::check(&r.trace);
        assert!(
            v.iter().any(|v| v.kind == ViolationKind::TooManyBusy && v.hosts.len() > 2),
            "seed {seed}: a 1 s settle under 30 s staleness must let more than N hosts in: {v:?}"
        );
        // The same contention with a settle time covering the staleness stays within N.
        let r = run(&scenario(31, seed));
        let v = check::check(&r.trace);
        assert!(v.is_empty(), "{}", report(seed, &r, &v));
    }
}

#[test]
fn lowest_claim_wins_is_caught_where_counting_others_is_safe() {
    // Stale reads within the settle time and skewed claim times: hosts see each other's claims
    // differently, which the count rule survives and the tie-break does not.
    let scenario = |rule: LeaseRule, seed: u64| {
        let mut sc = Scenario::realistic(60, 1, seed);
        // A common start (the same check, the same download time): waiters spread their looks,
        // so only hosts that reach the lease together race.
        sc.same_instant = true;
        sc.prepare_time = fleet_sim::scenario::Span::exactly(Duration::from_secs(60));
        sc.rule = rule;
        sc.faults.staleness = Duration::from_secs(9);
        sc.faults.clock_skew = Duration::from_secs(15);
        sc
    };
    let mut unsafe_violations = 0;
    // Waiters spread their looks around the releases they expect, so races are rare: twelve
    // seeds give the unsafe rule a few (seeds 5 and 10 now), the same every time.
    for seed in 1..=12 {
        let r = run(&scenario(LeaseRule::UnsafeLowestClaimWins, seed));
        unsafe_violations += check::check(&r.trace).iter().filter(|v| v.kind == ViolationKind::TooManyBusy).count();
        let r = run(&scenario(LeaseRule::CountOthers, seed));
        let v = check::check(&r.trace);
        assert!(v.is_empty(), "{}", report(seed, &r, &v));
    }
    assert!(unsafe_violations > 0, "lowest-claim-wins must be seen letting a second host in");
}

#[test]
fn a_seed_replays_exactly_and_another_does_not() {
    let sc = Scenario::with_faults(60, 3, 7);
    let (a, b) = (run(&sc), run(&sc));
    assert!(a.trace.calls.len() > 1000, "a run that does something");
    assert_eq!(a.trace.digest(), b.trace.digest(), "same seed, same trace");
    assert_eq!(a.trace, b.trace);
    let c = run(&Scenario::with_faults(60, 3, 8));
    assert_ne!(a.trace.digest(), c.trace.digest(), "another seed, another trace");
}
