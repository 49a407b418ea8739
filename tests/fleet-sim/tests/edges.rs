//! The holes in the at-most-N promise, in the simulator: for each, a small fleet with the fault
//! that opens it, run with its fix switched off (the checker must find the hole on at least one
//! seed) and on (nothing on any seed), the same seeds both ways. Then the safe failures: a host
//! whose agent never returns, or whose ECS agent never reconnects, keeps its slot for good; the
//! promise holds and the others wait, naming it.

use fleet_sim::check::{self, ViolationKind};
use fleet_sim::controls::{self, Control, SEEDS};
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, Run};
use fleet_sim::trace::HostTrace;

fn run(sc: &Scenario) -> Run {
    sim::run(sc).expect("the simulation runtime starts")
}

/// With the fix on, nothing on any seed; with it off, the hole on at least one.
fn assert_control(c: &Control) {
    let f = controls::run(c, SEEDS).expect("the simulation runtime starts");
    for (seed, v, finished) in &f.on {
        let lines: Vec<String> = v.iter().take(5).map(|v| format!("  {v}")).collect();
        assert!(v.is_empty() && *finished, "hole {} with its fix on, seed {seed} (finished: {finished}):\n{}", c.hole, lines.join("\n"));
    }
    assert!(
        f.shown(c) > 0,
        "hole {}: with `{}` switched off the checker must find {:?} on one of seeds {SEEDS:?}; it found {:?}",
        c.hole,
        c.fix,
        c.shows_as,
        f.off_kinds()
    );
}

#[test]
fn hole1_an_instance_drained_by_an_agent_down_past_its_ttl_keeps_its_slot() {
    assert_control(&controls::agent_down_past_ttl());
}

#[test]
fn hole1_an_instance_an_operator_drains_takes_a_slot() {
    assert_control(&controls::foreign_drain());
}

#[test]
fn hole2_a_write_that_lands_after_its_claim_lapsed_stops_the_holder() {
    assert_control(&controls::slow_writes());
}

#[test]
fn hole3_the_claim_is_kept_while_the_api_fails_after_boot() {
    assert_control(&controls::api_failing_after_boot());
}

#[test]
fn hole3_the_claim_is_kept_while_the_ecs_agent_is_late_after_boot() {
    assert_control(&controls::ecs_agent_late_after_boot());
}

#[test]
fn hole4_an_undo_right_after_draining_sets_active_whatever_a_stale_read_says() {
    assert_control(&controls::undo_with_stale_status());
}

#[test]
fn hole5_no_reboot_while_drained_tasks_are_still_stopping() {
    assert_control(&controls::tasks_stopping_after_drain());
}

#[test]
fn hole6_a_host_opted_out_while_it_waits_takes_no_slot() {
    assert_control(&controls::opted_out_while_waiting());
}

/// The doomed host of a run.
fn doomed(r: &Run) -> &HostTrace {
    r.trace.hosts.iter().find(|h| h.plan.doom.is_some()).expect("the scenario dooms a host")
}

/// The hosts neither updated nor doomed.
fn left_behind(r: &Run) -> Vec<&HostTrace> {
    r.trace.hosts.iter().filter(|h| h.plan.doom.is_none() && h.end.running != r.trace.target).collect()
}

/// The doomed host keeps its slot for good: no violation, the run ends (everyone updated, or
/// waiting behind it), and every host left behind waits naming it. Over the seeds, some host
/// must have been left behind, or the scenario shows nothing.
fn assert_safe_failure(scenario: fn(u64) -> Scenario) {
    let mut waited = 0;
    for seed in SEEDS {
        let r = run(&scenario(seed));
        let v = check::check(&r.trace);
        let lines: Vec<String> = v.iter().take(8).map(|v| format!("  {v}")).collect();
        assert!(v.is_empty() && r.finished, "seed {seed} (finished: {}):\n{}", r.finished, lines.join("\n"));
        let d = doomed(&r);
        assert!(check::is_stuck(d, &r.trace.target), "seed {seed}: {} is not stuck: {:?}", d.name, d.end);
        for h in left_behind(&r) {
            assert_eq!(check::waits_behind(&h.end, &[d]), Some(d.name.as_str()), "seed {seed}: {} does not wait naming {}", h.name, d.name);
            waited += 1;
        }
        // Its allowance comes from the scenario's doom alone: without it the same end is a stall.
        let mut undoomed = r.trace.clone();
        undoomed.hosts.iter_mut().for_each(|h| h.plan.doom = None);
        let v = check::check(&undoomed);
        assert!(v.iter().any(|v| v.hosts == [d.name.clone()]), "seed {seed}: {v:?}");
    }
    assert!(waited > 0, "no host was left waiting behind the doomed one on any seed");
}

#[test]
fn an_agent_that_dies_mid_drain_and_never_returns_keeps_its_slot_and_the_others_wait_naming_it() {
    assert_safe_failure(controls::agent_never_returns);
}

#[test]
fn an_ecs_agent_that_never_reconnects_holds_the_slot_and_the_others_wait_naming_it() {
    assert_safe_failure(controls::ecs_agent_never_reconnects);
}

#[test]
fn without_counting_out_of_service_instances_the_others_take_a_dead_agents_slot() {
    // The same dead agent; the others' count of live claims alone sees its slot free once its
    // claim lapses, while its instance is still DRAINING.
    let caught = SEEDS.filter(|&seed| {
        let mut sc = controls::agent_never_returns(seed);
        sc.unsafe_off.out_of_service_count = true;
        check::check(&run(&sc).trace).iter().any(|v| v.kind == ViolationKind::TooManyBusy)
    });
    assert!(caught.count() > 0, "the others must be seen taking the dead agent's slot");
}
