//! The safety and end-state checker: reads a [`Trace`] and lists every violation with its time
//! and hosts. It knows nothing of the agent's code, only what the cluster and the hosts went
//! through, so a bug in the agent cannot hide from it.
//!
//! # Safety
//!
//! At no instant may more than N hosts be busy. A host is busy while it is out of service or
//! about to be, whoever caused it:
//! - its claim holds a slot (a live claim whose phase is not `c`);
//! - its instance is DRAINING, by its agent or by anyone else: an operator's drain takes a slot
//!   like any other, so a scenario that drains an instance by operator expects at most N busy
//!   counting that instance, which holds only because the agents count it;
//! - it is down: between a reboot request and the boot.
//!
//! No host may reboot without holding a slot, nor while a task on its instance still runs (its
//! last status not STOPPED: a task ECS has told to stop may serve on through its load balancer's
//! deregistration delay).
//!
//! # End
//!
//! No instance left DRAINING by its agent, no claim and no drain marker left, nothing in flight,
//! and every host on the target version or parked for a recorded reason (opted out, rolled back
//! and quarantined, standalone tasks, ...). Opted-out hosts and hosts with standalone tasks must
//! not have been updated. Statuses are read as the rollout left them: when the run was told to
//! stop, before the agents wrote how they were stopped.
//!
//! A host may also end **stuck**, but only where the scenario injected a failure that never
//! ends ([`Doom`]) and the trace shows it: for [`Doom::AgentNeverReturns`], its last agent
//! crashed and none started again; for [`Doom::EcsAgentNeverReconnects`], its status phase is
//! `held`; for [`Doom::BadRelease`], it booted into the target, the boot left it IMPAIRED for
//! good, and its status says it holds after a failed check ([`HELD_AFTER_CHECK`]). A host the
//! bad release spared, or that halted before it got it, is judged as any other. A stuck host may keep its claim, marker, DRAINING instance and in-flight record: that
//! is how it keeps its slot, and the safety sweep above still counts it. Every other host that
//! did not update and has no recorded reason must be explained as **waiting behind a stuck
//! host**: its status phase `waiting`, its detail naming a stuck host's instance among the
//! holders of the slots. A host held, or waiting, with no doom behind it is a stall and a
//! violation ([`ViolationKind::NotFinished`]), as is a doom the trace does not show.

use std::collections::BTreeSet;
use std::fmt;

use agent::cluster::InstanceStatus;
use agent::lease::{Claim, ClaimPhase};
use testkit::fake_ecs::{Actor, EcsChange};
use testkit::node::NodeEventKind;

use crate::trace::{Doom, EndState, HostTrace, Interval, Ms, Phases, Trace};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// More than N hosts busy at once.
    TooManyBusy,
    /// A host rebooted without holding a slot.
    RebootWithoutSlot,
    /// A host rebooted while a task on its instance had not stopped.
    RebootWithTasksRunning,
    /// An instance was left DRAINING by its agent.
    LeftDraining,
    /// A claim was left on an instance.
    ClaimLeft,
    /// A drain marker was left on an instance.
    MarkerLeft,
    /// A journal still has an update in flight.
    InFlightLeft,
    /// A host is neither on the target version nor parked for a recorded reason, nor stuck by
    /// its doom or waiting behind a stuck host.
    NotFinished,
    /// A host the scenario kept out of updates (opted out, standalone tasks) was updated.
    UpdatedAgainstPlan,
    /// A host's agent claimed a slot after its operator had opted it out, later than its
    /// reading of the flags before a claim allows.
    ClaimedAfterOptOut,
}

/// One violation: when, which hosts, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What kind.
    pub kind: ViolationKind,
    /// When it started (ms since t = 0); the run's end for end-state violations.
    pub at: Ms,
    /// When it stopped, for violations that last.
    pub until: Option<Ms>,
    /// The hosts involved.
    pub hosts: Vec<String>,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at t={}", self.kind, clock(self.at))?;
        if let Some(u) = self.until {
            write!(f, "..{}", clock(u))?;
        }
        write!(f, " [{}]: {}", self.hosts.join(", "), self.detail)
    }
}

/// `h:mm:ss.mmm` of a run time.
pub fn clock(t: Ms) -> String {
    let s = t / 1000;
    format!("{}:{:02}:{:02}.{:03}", s / 3600, s / 60 % 60, s % 60, t % 1000)
}

/// Every violation in `trace`, safety first, in time order.
pub fn check(trace: &Trace) -> Vec<Violation> {
    let phases = trace.phases();
    let mut out = too_many_busy(trace, &phases);
    out.extend(reboots_without_slot(trace, &phases));
    out.extend(reboots_with_tasks_running(trace));
    out.extend(claims_after_opt_out(trace));
    out.extend(end_state(trace));
    out
}

/// Every claim an agent wrote (a new claim, phase `claiming`) more than the trace's grace after
/// an operator opted its host out.
fn claims_after_opt_out(trace: &Trace) -> Vec<Violation> {
    let opted = trace.late_opt_outs();
    let mut out = vec![];
    for e in trace.ecs.iter().filter(|e| e.by == Actor::Agent) {
        let EcsChange::Put { name, value } = &e.change else { continue };
        let claiming = Claim::parse(value).is_ok_and(|c| c.phase == ClaimPhase::Claiming);
        if *name != trace.lease_name || !claiming {
            continue;
        }
        if let Some(&(at, _)) = opted.iter().find(|&&(at, host)| host == e.host && e.at > at + trace.opt_out_grace) {
            out.push(Violation {
                kind: ViolationKind::ClaimedAfterOptOut,
                at: e.at,
                until: None,
                hosts: vec![trace.hosts[e.host].name.clone()],
                detail: format!("claimed {} after the opt-out at t={}", clock(e.at - at), clock(at)),
            });
        }
    }
    out
}

/// The sweep over all hosts' busy intervals: every stretch with more than N busy.
fn too_many_busy(trace: &Trace, phases: &[Phases]) -> Vec<Violation> {
    // (time, +1 start / -1 end, host); ends sort before starts at the same instant (half-open).
    let mut edges: Vec<(Ms, i8, usize)> = vec![];
    for (host, p) in phases.iter().enumerate() {
        for i in busy_union(p) {
            edges.push((i.start, 1, host));
            edges.push((i.end, -1, host));
        }
    }
    edges.sort();
    let n = trace.max_concurrent as usize;
    let mut busy: BTreeSet<usize> = BTreeSet::new();
    let mut out: Vec<Violation> = vec![];
    let mut open: Option<usize> = None;
    let mut peak = 0;
    for (k, &(t, delta, host)) in edges.iter().enumerate() {
        if delta > 0 {
            busy.insert(host);
        } else {
            busy.remove(&host);
        }
        // Judge only once every edge at this instant is applied.
        if edges.get(k + 1).is_some_and(|next| next.0 == t) {
            continue;
        }
        match open {
            None if busy.len() > n => {
                peak = busy.len();
                out.push(Violation {
                    kind: ViolationKind::TooManyBusy,
                    at: t,
                    until: None,
                    hosts: busy.iter().map(|&h| trace.name(h).to_string()).collect(),
                    detail: describe(trace, phases, &busy, t, n),
                });
                open = Some(out.len() - 1);
            }
            Some(v) if busy.len() <= n => {
                out[v].until = Some(t);
                out[v].detail.push_str(&format!("; at most {peak} busy"));
                open = None;
            }
            Some(_) => peak = peak.max(busy.len()),
            None => {}
        }
    }
    out
}

fn describe(trace: &Trace, phases: &[Phases], busy: &BTreeSet<usize>, t: Ms, n: usize) -> String {
    let who: Vec<String> = busy.iter().map(|&h| format!("{} {}", trace.name(h), phases[h].describe_at(t))).collect();
    format!("{} hosts busy, N = {n}: {}", busy.len(), who.join(", "))
}

/// One host's busy time as disjoint intervals.
fn busy_union(p: &Phases) -> Vec<Interval> {
    let mut all: Vec<Interval> = p.busy().copied().filter(|i| !i.is_empty()).collect();
    all.sort();
    let mut out: Vec<Interval> = vec![];
    for i in all {
        match out.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => out.push(i),
        }
    }
    out
}

fn reboots_without_slot(trace: &Trace, phases: &[Phases]) -> Vec<Violation> {
    let mut out = vec![];
    for (h, host) in trace.hosts.iter().enumerate() {
        for (at, kind) in &host.events {
            if *kind == NodeEventKind::RebootRequested && !phases[h].holding.iter().any(|i| i.contains(*at)) {
                out.push(Violation {
                    kind: ViolationKind::RebootWithoutSlot,
                    at: *at,
                    until: None,
                    hosts: vec![host.name.clone()],
                    detail: "reboot requested while the host held no live claim".into(),
                });
            }
        }
    }
    out
}

/// Every reboot requested while a task on the host's instance had not stopped, as the
/// cluster's history of task starts and stops tells.
fn reboots_with_tasks_running(trace: &Trace) -> Vec<Violation> {
    let mut out = vec![];
    for (h, host) in trace.hosts.iter().enumerate() {
        for (at, kind) in &host.events {
            if *kind != NodeEventKind::RebootRequested {
                continue;
            }
            let running = trace.unstopped_at(h, *at);
            if running > 0 {
                out.push(Violation {
                    kind: ViolationKind::RebootWithTasksRunning,
                    at: *at,
                    until: None,
                    hosts: vec![host.name.clone()],
                    detail: format!("reboot requested while {running} task(s) on the instance had not stopped"),
                });
            }
        }
    }
    out
}

/// Result tokens of the status attribute that explain why a host is not on the target (and
/// `skipped-<why>` ones).
const PARKED: [&str; 5] = ["opted-out", "quarantined", "rolled-back", "halted", "skipped"];

fn end_state(trace: &Trace) -> Vec<Violation> {
    let stuck: Vec<&HostTrace> = trace.hosts.iter().filter(|h| is_stuck(h, &trace.target)).collect();
    let mut out = vec![];
    for h in &trace.hosts {
        let e = &h.end;
        let mut flag = |kind, detail: String| {
            out.push(Violation { kind, at: trace.end, until: None, hosts: vec![h.name.clone()], detail });
        };
        let updated = e.running == trace.target;
        if updated && (h.plan.opted_out || h.plan.standalone) {
            let why = if h.plan.opted_out { "opted out" } else { "running a standalone task" };
            flag(ViolationKind::UpdatedAgainstPlan, format!("updated although {why}"));
        }
        if is_stuck(h, &trace.target) {
            // Keeping claim, marker and DRAINING is how a stuck host keeps its slot.
            continue;
        }
        if e.status == InstanceStatus::Draining && e.status_by == Some(Actor::Agent) {
            flag(ViolationKind::LeftDraining, "instance left DRAINING by its agent".into());
        }
        if let Some(c) = &e.claim {
            flag(ViolationKind::ClaimLeft, format!("claim `{c}` left"));
        }
        if let Some(m) = &e.marker {
            flag(ViolationKind::MarkerLeft, format!("drain marker `{m}` left"));
        }
        if e.in_flight {
            flag(ViolationKind::InFlightLeft, "journal still has an update in flight".into());
        }
        if !updated && reason(e).is_none() && waits_behind(e, &stuck).is_none() {
            flag(ViolationKind::NotFinished, unfinished(h, &stuck));
        }
    }
    out
}

/// Status results of a host that holds its slot because a check after boot failed: its health
/// gate or bake, or first its ECS agent (the gate looks at that first; the impairment then keeps
/// it failing).
pub const HELD_AFTER_CHECK: [&str; 4] = ["held-health", "held-bake", "held-ecs-agent", "held-rollback-failed"];

/// Whether the scenario doomed `h` and the trace shows it stuck as its doom says.
pub fn is_stuck(h: &HostTrace, target: &str) -> bool {
    match h.plan.doom {
        Some(Doom::AgentNeverReturns) => h
            .events
            .iter()
            .rev()
            .find(|(_, k)| matches!(k, NodeEventKind::AgentStarted | NodeEventKind::AgentCrashed))
            .is_some_and(|(_, k)| *k == NodeEventKind::AgentCrashed),
        Some(Doom::EcsAgentNeverReconnects) => status(&h.end).is_some_and(|s| s.phase == "held"),
        Some(Doom::BadRelease) => {
            let impaired = h.events.iter().any(|(_, k)| *k == NodeEventKind::ImpairedAfterBoot { lasting: None });
            let held = status(&h.end).is_some_and(|s| s.phase == "held" && HELD_AFTER_CHECK.contains(&s.result.as_str()));
            h.end.running == target && impaired && held
        }
        None => false,
    }
}

/// The stuck host a waiting host names among the holders of the slots it waits for, if any.
pub fn waits_behind<'a>(e: &EndState, stuck: &[&'a HostTrace]) -> Option<&'a str> {
    let st = status(e).filter(|s| s.phase == "waiting")?;
    stuck.iter().find(|h| crate::trace::names_instance(&st.detail, &h.instance)).map(|h| h.name.as_str())
}

fn status(e: &EndState) -> Option<agent::status::Status> {
    agent::status::Status::parse(e.status_attribute.as_deref()?)
}

/// Why a host that did not finish is not explained, in words.
fn unfinished(h: &HostTrace, stuck: &[&HostTrace]) -> String {
    let e = &h.end;
    let seen = format!("runs {}; status {:?}, last result {:?}", e.running, e.status_attribute, e.last_result);
    match (h.plan.doom, status(e)) {
        (Some(d), _) => format!("doomed ({d:?}) but not stuck as that says: {seen}"),
        (None, Some(s)) if s.phase == "held" => format!("holds its slot with nothing injected that never ends: {seen}"),
        (None, Some(s)) if s.phase == "waiting" && stuck.is_empty() => format!("stalled waiting, and no host is stuck: {seen}"),
        (None, Some(s)) if s.phase == "waiting" => format!("stalled waiting behind hosts that are not stuck: {seen}"),
        _ => format!("no recorded reason: {seen}"),
    }
}

/// Why a host is not on the target, as its journal or status attribute records it.
pub fn reason(e: &EndState) -> Option<String> {
    if e.last_result.as_deref() == Some("rolled-back") || !e.quarantined.is_empty() {
        return Some("rolled-back".into());
    }
    let token = status(e)?.result;
    (PARKED.contains(&token.as_str()) || token.starts_with("skipped-")).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{host, put, trace, LEASE};
    use crate::trace::EcsRecord;
    use testkit::fake_ecs::EcsChange;

    fn status(at: Ms, host: usize, s: InstanceStatus) -> EcsRecord {
        EcsRecord { at, host, by: Actor::Agent, change: EcsChange::Status(s) }
    }

    /// An operator opts host 0 out at 1 min; its agent claims at 5 min (within the grace: it
    /// read its flags before the opt-out) and again at 30 min (past it), and renews at 40 min.
    #[test]
    fn a_new_claim_past_the_grace_after_an_opt_out_is_found() {
        let claim = |phase: &str| format!("v1:{phase}:0:600:abcd1234:2.0.0");
        let ecs = vec![
            EcsRecord { at: 60_000, host: 0, by: Actor::Operator, change: EcsChange::Put { name: "br-update.opt-out".into(), value: "true".into() } },
            put(300_000, 0, &claim("c")),
            put(1_800_000, 0, &claim("c")),
            put(2_400_000, 0, &claim("d")),
            put(2_400_000, 1, &claim("c")),
        ];
        let v = claims_after_opt_out(&trace(1, vec![host("a", vec![]), host("b", vec![])], ecs));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].kind, v[0].at, v[0].hosts.clone()), (ViolationKind::ClaimedAfterOptOut, 1_800_000, vec!["a".to_string()]));
    }

    /// Three hosts drain over [10 s, 20 s), [15 s, 25 s) and [18 s, 30 s).
    fn three_drains(n: u32) -> Trace {
        let hosts = vec![host("a", vec![]), host("b", vec![]), host("c", vec![])];
        let mut ecs = vec![];
        for (h, (from, to)) in [(10_000, 20_000), (15_000, 25_000), (18_000, 30_000)].into_iter().enumerate() {
            ecs.push(status(from, h, InstanceStatus::Draining));
            ecs.push(status(to, h, InstanceStatus::Active));
        }
        ecs.sort_by_key(|e| e.at);
        trace(n, hosts, ecs)
    }

    #[test]
    fn overlapping_drains_beyond_n_are_found_with_their_time_and_hosts() {
        let v = check(&three_drains(2));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::TooManyBusy);
        assert_eq!((v[0].at, v[0].until), (18_000, Some(20_000)));
        assert_eq!(v[0].hosts, ["a", "b", "c"]);
        assert!(check(&three_drains(3)).is_empty());
    }

    #[test]
    fn one_host_ending_as_another_starts_is_not_an_overlap() {
        let hosts = vec![host("a", vec![]), host("b", vec![])];
        let ecs = vec![
            status(1_000, 0, InstanceStatus::Draining),
            status(5_000, 0, InstanceStatus::Active),
            status(5_000, 1, InstanceStatus::Draining),
            status(9_000, 1, InstanceStatus::Active),
        ];
        assert!(check(&trace(1, hosts, ecs)).is_empty());
    }

    #[test]
    fn holding_claims_count_but_claiming_ones_do_not() {
        // Host a holds (phase d) from 1 s until it deletes at 50 s; host b only claims (phase c).
        let hosts = vec![host("a", vec![]), host("b", vec![])];
        let mut ecs = vec![
            put(1_000, 0, "v1:d:1:600:0badf00d:2.0.0"),
            put(2_000, 1, "v1:c:2:600:0ddba11a:2.0.0"),
            EcsRecord { at: 50_000, host: 0, by: Actor::Agent, change: EcsChange::Delete { name: LEASE.into() } },
        ];
        assert!(check(&trace(1, hosts.clone(), ecs.clone())).is_empty());
        ecs.insert(2, put(3_000, 1, "v1:d:2:600:0ddba11a:2.0.0"));
        let v = check(&trace(1, hosts, ecs));
        assert_eq!(v.iter().filter(|v| v.kind == ViolationKind::TooManyBusy).count(), 1, "{v:?}");
    }

    #[test]
    fn a_lapsed_claim_stops_counting_at_its_expiry() {
        // Host a's claim lapses at 10 s (expires-at 10, epoch 0); host b holds from 20 s.
        let hosts = vec![host("a", vec![]), host("b", vec![])];
        let ecs = vec![put(1_000, 0, "v1:d:1:10:0badf00d:2.0.0"), put(20_000, 1, "v1:d:20:600:0ddba11a:2.0.0")];
        let v = check(&trace(1, hosts, ecs));
        assert!(v.iter().all(|v| v.kind != ViolationKind::TooManyBusy), "{v:?}");
    }

    #[test]
    fn a_reboot_without_a_live_claim_is_found() {
        let hosts = vec![host(
            "a",
            vec![(5_000, NodeEventKind::RebootRequested), (9_000, NodeEventKind::Booted { version: "2.0.0".into() })],
        )];
        let v = check(&trace(1, hosts, vec![]));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].kind, v[0].at), (ViolationKind::RebootWithoutSlot, 5_000));
    }

    #[test]
    fn an_operators_drain_counts_against_n_like_any_other() {
        // b is DRAINING by an operator over [5 s, 50 s); a holds a slot from 10 s (N = 1).
        let hosts = vec![host("a", vec![]), host("b", vec![])];
        let ecs = vec![
            EcsRecord { at: 5_000, host: 1, by: Actor::Operator, change: EcsChange::Status(InstanceStatus::Draining) },
            put(10_000, 0, "v1:d:10:600:0badf00d:2.0.0"),
            EcsRecord { at: 50_000, host: 1, by: Actor::Operator, change: EcsChange::Status(InstanceStatus::Active) },
        ];
        let v = check(&trace(1, hosts.clone(), ecs.clone()));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].kind, v[0].at, v[0].until), (ViolationKind::TooManyBusy, 10_000, Some(50_000)));
        assert!(v[0].detail.contains("b drained-by-others"), "{}", v[0].detail);
        // An operator's drain ending as the claim is written is no overlap.
        let mut ecs = ecs;
        ecs[2].at = 10_000;
        assert!(check(&trace(1, hosts, ecs)).is_empty());
    }

    fn task(at: Ms, host: usize, task: &str, started: bool) -> EcsRecord {
        let change = if started {
            EcsChange::TaskStarted { task: task.into(), service: true }
        } else {
            EcsChange::TaskStopped { task: task.into(), service: true }
        };
        EcsRecord { at, host, by: Actor::Scheduler, change }
    }

    #[test]
    fn a_reboot_while_a_task_has_not_stopped_is_found() {
        let events = vec![(5_000, NodeEventKind::RebootRequested), (9_000, NodeEventKind::Booted { version: "2.0.0".into() })];
        let claim = put(1_000, 0, "v1:d:1:600:0badf00d:2.0.0");
        let started = task(0, 0, "t1", true);
        // Stopped after the reboot request: cut off.
        let late = vec![claim.clone(), started.clone(), task(5_001, 0, "t1", false)];
        let v = check(&trace(1, vec![host("a", events.clone())], late));
        assert_eq!(v.iter().map(|v| (v.kind, v.at)).collect::<Vec<_>>(), [(ViolationKind::RebootWithTasksRunning, 5_000)]);
        // Stopped at the instant of the request: nothing left to cut off.
        let in_time = vec![claim, started, task(5_000, 0, "t1", false)];
        assert!(check(&trace(1, vec![host("a", events)], in_time)).is_empty());
    }

    /// `a` stuck by `doom` with its leftovers; `b` waiting with `detail`.
    fn stuck_and_waiting(doom: Option<Doom>, detail: &str) -> Trace {
        let mut a = host("a", vec![(1_000, NodeEventKind::AgentStarted), (2_000, NodeEventKind::AgentCrashed)]);
        a.plan.doom = doom;
        a.end.running = "1.0.0".into();
        a.end.status = InstanceStatus::Draining;
        a.end.claim = Some("v1:d:1:600:0badf00d:2.0.0".into());
        a.end.marker = Some("by-agent:0badf00d".into());
        a.end.in_flight = true;
        a.end.last_result = None;
        let mut b = host("b", vec![]);
        b.end.running = "1.0.0".into();
        b.end.last_result = None;
        b.end.status_attribute = Some(format!("v2:waiting:1.0.0:2.0.0:waiting-for-slot:1:{detail}"));
        trace(1, vec![a, b], vec![])
    }

    #[test]
    fn a_doomed_host_may_end_stuck_and_the_others_waiting_behind_it() {
        let t = stuck_and_waiting(Some(Doom::AgentNeverReturns), "slots held by a drained-by-agent claim-lapsed");
        assert!(check(&t).is_empty(), "{:?}", check(&t));
        assert_eq!(waits_behind(&t.hosts[1].end, &[&t.hosts[0]]), Some("a"));
    }

    #[test]
    fn stuck_or_waiting_ends_without_a_doom_that_shows_are_stalls() {
        let kinds = |t: &Trace| check(t).into_iter().map(|v| (v.hosts[0].clone(), v.kind)).collect::<Vec<_>>();
        use ViolationKind::*;
        let a_left = vec![("a".to_string(), LeftDraining), ("a".into(), ClaimLeft), ("a".into(), MarkerLeft), ("a".into(), InFlightLeft)];
        // No doom: a's leftovers and b's wait are violations.
        let t = stuck_and_waiting(None, "slots held by a drained-by-agent claim-lapsed");
        let mut want = a_left.clone();
        want.extend([("a".into(), NotFinished), ("b".into(), NotFinished)]);
        assert_eq!(kinds(&t), want);
        // Doomed, but its agent came back after the crash: not stuck as its doom says.
        let mut t = stuck_and_waiting(Some(Doom::AgentNeverReturns), "slots held by a drained-by-agent claim-lapsed");
        t.hosts[0].events.push((3_000, NodeEventKind::AgentStarted));
        assert_eq!(kinds(&t), want);
        // Stuck, but b waits behind someone else (a name containing a's is not a's).
        let t = stuck_and_waiting(Some(Doom::AgentNeverReturns), "slots held by ab claim-d 30s-left");
        assert_eq!(kinds(&t), [("b".into(), NotFinished)]);
        // Held, with no doom behind it.
        let mut t = stuck_and_waiting(Some(Doom::EcsAgentNeverReconnects), "slots held by a claim-v 300s-left");
        t.hosts[0].end.status_attribute = Some("v2:verifying:2.0.0:-:in-progress:1:".into());
        assert!(kinds(&t).contains(&("b".into(), NotFinished)), "{:?}", kinds(&t));
        t.hosts[0].end.status_attribute = Some("v2:held:2.0.0:2.0.0:held-ecs-agent:1:ECS agent not connected".into());
        assert!(check(&t).is_empty(), "{:?}", check(&t));
    }

    /// `a` booted into a release bad on it (IMPAIRED for good) and holds with `status`; `b` waits
    /// naming it.
    fn held_by_a_bad_release(doom: Option<Doom>, status: &str) -> Trace {
        let mut t = stuck_and_waiting(doom, "slots held by a claim-v 300s-left");
        let a = &mut t.hosts[0];
        a.events = vec![
            (1_000, NodeEventKind::AgentStarted),
            (2_000, NodeEventKind::RebootRequested),
            (3_000, NodeEventKind::Booted { version: "2.0.0".into() }),
            (3_000, NodeEventKind::ImpairedAfterBoot { lasting: None }),
            (3_000, NodeEventKind::AgentStarted),
        ];
        a.end.running = "2.0.0".into();
        a.end.status_attribute = Some(status.into());
        // It rebooted holding its slot, which it keeps.
        t.ecs.push(put(1_500, 0, "v1:d:1:600:0badf00d:2.0.0"));
        t
    }

    #[test]
    fn a_host_a_bad_release_doomed_may_hold_after_its_gate_failed_and_nothing_else() {
        let held = "v2:held:2.0.0:2.0.0:held-health:1:container instance IMPAIRED";
        let t = held_by_a_bad_release(Some(Doom::BadRelease), held);
        assert!(check(&t).is_empty(), "{:?}", check(&t));
        // The hosts with a violation: a's leftovers (it runs the target) or its stall, b's wait.
        let flagged = |t: &Trace| {
            let mut hosts: Vec<String> = check(t).into_iter().map(|v| v.hosts[0].clone()).collect();
            hosts.dedup();
            hosts
        };
        // Not doomed: a stall.
        assert_eq!(flagged(&held_by_a_bad_release(None, held)), ["a", "b"]);
        // Doomed, but its boot did not leave it impaired for good (an impairment that clears).
        let mut t = held_by_a_bad_release(Some(Doom::BadRelease), held);
        t.hosts[0].events[3].1 = NodeEventKind::ImpairedAfterBoot { lasting: Some(std::time::Duration::from_secs(600)) };
        assert_eq!(flagged(&t), ["a", "b"]);
        // Doomed, but held for another reason (its API failing after boot).
        let t = held_by_a_bad_release(Some(Doom::BadRelease), "v2:held:2.0.0:2.0.0:held-after-boot:1:cannot read /os");
        assert_eq!(flagged(&t), ["a", "b"]);
        // Doomed, but it never booted into the release (it rolled back).
        let mut t = held_by_a_bad_release(Some(Doom::BadRelease), held);
        t.hosts[0].end.running = "1.0.0".into();
        assert_eq!(flagged(&t), ["a", "b"]);
    }

    #[test]
    fn leftovers_and_unexplained_or_forbidden_end_states_are_found() {
        let mut a = host("a", vec![]);
        a.end.status = InstanceStatus::Draining;
        a.end.claim = Some("v1:d:1:600:0badf00d:2.0.0".into());
        a.end.marker = Some("by-agent:0badf00d".into());
        a.end.in_flight = true;
        let mut b = host("b", vec![]);
        b.end.running = "1.0.0".into();
        b.end.last_result = None;
        let mut c = host("c", vec![]);
        c.plan.opted_out = true;
        let mut d = host("d", vec![]);
        d.end.running = "1.0.0".into();
        d.end.status_attribute = Some("v1:idle:1.0.0:-:skipped-standalone-tasks".into());
        let kinds: Vec<(String, ViolationKind)> =
            check(&trace(1, vec![a, b, c, d], vec![])).into_iter().map(|v| (v.hosts[0].clone(), v.kind)).collect();
        use ViolationKind::*;
        let a = |k| ("a".to_string(), k);
        assert_eq!(
            kinds,
            [a(LeftDraining), a(ClaimLeft), a(MarkerLeft), a(InFlightLeft), ("b".into(), NotFinished), ("c".into(), UpdatedAgainstPlan)]
        );
    }
}
