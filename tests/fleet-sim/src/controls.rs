//! The negative controls, one per hole in the at-most-N promise: a small fleet, the fault that
//! opens the hole, and the fix that closes it. Run with the fix switched off, the checker must
//! find violations on at least one of the seeds; with it on, none on any of them. A checker that
//! cannot tell the two apart proves nothing about the agent.

use std::ops::RangeInclusive;
use std::time::Duration;

use testkit::fake_ecs::{LocalTaskView, TaskListing};

use crate::check::{self, Violation, ViolationKind};
use crate::scenario::{Doom, FaultPlan, Scenario, Span};
use crate::sim::{self, SimError};

/// The seeds every control runs on, with the fix off and on.
pub const SEEDS: RangeInclusive<u64> = 1..=4;

/// One hole, the fault that opens it, and how to switch its fix off.
pub struct Control {
    /// Which hole, as the lease module numbers them.
    pub hole: &'static str,
    /// The fault the scenario injects.
    pub fault: &'static str,
    /// What switching the fix off means.
    pub fix: &'static str,
    /// The kinds of violation the hole shows as (at least one must be found with the fix off).
    pub shows_as: &'static [ViolationKind],
    scenario: fn(u64) -> Scenario,
    switch_off: fn(&mut Scenario),
}

impl Control {
    /// The scenario for `seed`, with the fix on or off.
    pub fn scenario(&self, seed: u64, fix_on: bool) -> Scenario {
        let mut sc = (self.scenario)(seed);
        if !fix_on {
            (self.switch_off)(&mut sc);
        }
        sc
    }
}

/// What a control found on its seeds.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Per seed, the violations with the fix off.
    pub off: Vec<(u64, Vec<Violation>)>,
    /// Per seed, the violations with the fix on, and whether the run ended before its limit.
    pub on: Vec<(u64, Vec<Violation>, bool)>,
}

impl Findings {
    /// Violations with the fix off, of the kinds the hole shows as.
    pub fn shown(&self, c: &Control) -> usize {
        self.off.iter().flat_map(|(_, v)| v).filter(|v| c.shows_as.contains(&v.kind)).count()
    }
    /// Every violation with the fix off.
    pub fn off_total(&self) -> usize {
        self.off.iter().map(|(_, v)| v.len()).sum()
    }
    /// Every violation with the fix on, each run that hit its time limit counted as one more.
    pub fn on_total(&self) -> usize {
        self.on.iter().map(|(_, v, finished)| v.len() + usize::from(!finished)).sum()
    }
    /// The kinds found with the fix off, for the table.
    pub fn off_kinds(&self) -> Vec<ViolationKind> {
        let mut kinds: Vec<ViolationKind> = self.off.iter().flat_map(|(_, v)| v.iter().map(|v| v.kind)).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Runs `c` on `seeds`, with the fix off and on.
pub fn run(c: &Control, seeds: RangeInclusive<u64>) -> Result<Findings, SimError> {
    let mut f = Findings::default();
    for seed in seeds {
        let off = sim::run(&c.scenario(seed, false))?;
        f.off.push((seed, check::check(&off.trace)));
        let on = sim::run(&c.scenario(seed, true))?;
        f.on.push((seed, check::check(&on.trace), on.finished));
    }
    Ok(f)
}

/// Every control, in the order of the holes.
pub fn all() -> Vec<Control> {
    vec![
        agent_down_past_ttl(),
        foreign_drain(),
        slow_writes(),
        api_failing_after_boot(),
        ecs_agent_late_after_boot(),
        undo_with_stale_status(),
        tasks_stopping_after_drain(),
        opted_out_while_waiting(),
    ]
}

const MIN: Duration = Duration::from_secs(60);

/// A small fleet at N = 1: every slot contended, so any hole lets a second host in. ECS calls
/// take 50 ms, so that an act between two calls lasts long enough to be seen.
fn small(hosts: usize, seed: u64, faults: FaultPlan) -> Scenario {
    Scenario { faults, ecs_latency: Duration::from_millis(50), ..Scenario::realistic(hosts, 1, seed) }.with_time_limit()
}

/// Hole 1: agents die mid-drain and stay down for longer than their claims live. Only counting
/// out-of-service instances (the drained marker, DRAINING) keeps their slots taken.
pub fn agent_down_past_ttl() -> Control {
    Control {
        hole: "1",
        fault: "agent killed mid-drain, down 20-40 min (TTL 10 min)",
        fix: "UnsafeOff::out_of_service_count",
        shows_as: &[ViolationKind::TooManyBusy],
        scenario: |seed| {
            small(6, seed, FaultPlan {
                crash_mid_drain_fraction: 0.5,
                long_restart_chance: 1.0,
                long_restart_delay: Span::minutes(20, 40),
                ..FaultPlan::none()
            })
        },
        switch_off: |sc| sc.unsafe_off.out_of_service_count = true,
    }
}

/// Hole 1, second half: an operator drains an instance no agent holds a slot for. Only counting
/// DRAINING instances nobody's agent drained keeps the others within N, that one included.
pub fn foreign_drain() -> Control {
    Control {
        hole: "1",
        fault: "operator drains an instance for 60-90 min",
        fix: "cluster.count-foreign-draining = false",
        shows_as: &[ViolationKind::TooManyBusy],
        scenario: |seed| small(6, seed, FaultPlan { operator_drains: 1, operator_drain_for: Span::minutes(60, 90), ..FaultPlan::none() }),
        switch_off: |sc| sc.count_foreign_draining = false,
    }
}

/// Hole 2: writes that land after the claim they renew has lapsed (the drain's write of claim
/// and marker, above all). Only checking when the write landed stops the late holder.
pub fn slow_writes() -> Control {
    Control {
        hole: "2",
        fault: "1 write in 4 lands after 14-16 min (TTL 10 min)",
        fix: "UnsafeOff::late_renewal_check",
        shows_as: &[ViolationKind::TooManyBusy, ViolationKind::RebootWithoutSlot],
        scenario: |seed| {
            let mut sc = small(10, seed, FaultPlan { slow_write_chance: 0.25, slow_write: Span::minutes(14, 16), ..FaultPlan::none() });
            // Waiters look often, so one looks while a late write is still on its way.
            sc.wait_poll_max = 2 * MIN;
            sc
        },
        switch_off: |sc| sc.unsafe_off.late_renewal_check = true,
    }
}

/// Hole 3: the new version's API fails for longer than the reboot allowance. Only keeping the
/// claim alive after boot keeps the slot (the drained marker would mask the lapse, so the
/// out-of-service count is switched off with the keeper).
pub fn api_failing_after_boot() -> Control {
    Control {
        hole: "3",
        fault: "API fails 30-40 min after every boot",
        fix: "UnsafeOff::claim_keeper (+ out_of_service_count)",
        shows_as: &[ViolationKind::TooManyBusy],
        scenario: |seed| {
            small(6, seed, FaultPlan { api_errors_chance: 1.0, api_errors_after_boot: Span::minutes(30, 40), ..FaultPlan::none() })
        },
        switch_off: |sc| {
            // With the out-of-service count on, the marker keeps the slot after the claim lapses:
            // the lapse is there, but hidden. Both off shows what the keeper alone prevents.
            sc.unsafe_off.claim_keeper = true;
            sc.unsafe_off.out_of_service_count = true;
        },
    }
}

/// Hole 3, the other way back: the ECS agent reconnects long after boot.
pub fn ecs_agent_late_after_boot() -> Control {
    Control {
        hole: "3",
        fault: "ECS agent back 30-40 min after every boot",
        fix: "UnsafeOff::claim_keeper (+ out_of_service_count)",
        shows_as: &[ViolationKind::TooManyBusy],
        scenario: |seed| {
            small(6, seed, FaultPlan { late_reconnect_chance: 1.0, late_reconnect: Span::minutes(30, 40), ..FaultPlan::none() })
        },
        switch_off: |sc| {
            // As for the failing API: the marker would hide the lapsed claim.
            sc.unsafe_off.claim_keeper = true;
            sc.unsafe_off.out_of_service_count = true;
        },
    }
}

/// Hole 4: agents are stopped right after setting DRAINING while describes still say ACTIVE.
/// Only trusting the marker over the read sets the instance ACTIVE again.
pub fn undo_with_stale_status() -> Control {
    Control {
        hole: "4",
        fault: "SIGTERM within 5 s of DRAINING; describes lag 60 s",
        fix: "UnsafeOff::undo_sets_active_always",
        shows_as: &[ViolationKind::LeftDraining, ViolationKind::TooManyBusy],
        scenario: |seed| {
            small(6, seed, FaultPlan { sigterm_mid_drain_fraction: 0.5, status_lag: MIN, ..FaultPlan::none() })
        },
        switch_off: |sc| sc.unsafe_off.undo_sets_active_always = true,
    }
}

/// Hole 5: drained tasks keep serving through their load balancer's deregistration delay. Only
/// waiting until every task's last status is STOPPED keeps the reboot from cutting them off.
pub fn tasks_stopping_after_drain() -> Control {
    Control {
        hole: "5",
        fault: "drained tasks run on 2-5 min after told to stop",
        fix: "TaskListing::DesiredRunningOnly",
        shows_as: &[ViolationKind::RebootWithTasksRunning],
        // Without the ECS agent's local view of the tasks, which would often hold the drain's
        // end back until the full listing: the listing is what must get it right.
        scenario: |seed| Scenario {
            local_task_view: LocalTaskView::Off,
            ..small(6, seed, FaultPlan { stop_time: Span::minutes(2, 5), ..FaultPlan::none() })
        },
        switch_off: |sc| sc.task_listing = TaskListing::DesiredRunningOnly,
    }
}

/// Not a hole in the at-most-N promise but in the operator's: hosts opted out while they wait
/// for their slot. Only reading the flags again before a claim keeps them out.
pub fn opted_out_while_waiting() -> Control {
    Control {
        hole: "6",
        fault: "operator opts 3 hosts out in the first hour",
        fix: "UnsafeOff::opt_out_recheck",
        shows_as: &[ViolationKind::ClaimedAfterOptOut],
        scenario: |seed| small(6, seed, FaultPlan { late_opt_outs: 3, late_opt_out_within: 60 * MIN, ..FaultPlan::none() }),
        switch_off: |sc| sc.unsafe_off.opt_out_recheck = true,
    }
}

/// The safe failure: one host's agent dies mid-drain and never returns (N = 1, so every other
/// host not yet updated waits behind it).
pub fn agent_never_returns(seed: u64) -> Scenario {
    small(6, seed, FaultPlan { doomed: vec![(doomed_host(seed, 6), Doom::AgentNeverReturns)], ..FaultPlan::none() })
}

/// The safe failure the other way: one host's ECS agent never reconnects after its update's
/// boot, so it holds its slot for good.
pub fn ecs_agent_never_reconnects(seed: u64) -> Scenario {
    small(6, seed, FaultPlan { doomed: vec![(doomed_host(seed, 6), Doom::EcsAgentNeverReconnects)], ..FaultPlan::none() })
}

/// Which host a seed dooms.
fn doomed_host(seed: u64, hosts: usize) -> usize {
    (sim::mix(seed, 0xd00d) % hosts as u64) as usize
}
