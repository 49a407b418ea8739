//! The safety and end-state checker: reads a [`Trace`] and lists every violation with its time
//! and hosts. It knows nothing of the agent's code, only what the cluster and the hosts went
//! through, so a bug in the agent cannot hide from it.
//!
//! Safety: at no instant may more than N hosts be busy, where a host is busy while its claim
//! holds a slot (a live claim whose phase is not `c`), while its instance is DRAINING by its
//! agent, or between a reboot request and the boot. No host may reboot without holding a slot.
//!
//! End: no instance left DRAINING by its agent, no claim and no drain marker left, nothing in
//! flight, and every host on the target version or parked for a recorded reason (opted out,
//! rolled back and quarantined, standalone tasks, ...). Opted-out hosts and hosts with
//! standalone tasks must not have been updated.

use std::collections::BTreeSet;
use std::fmt;

use agent::cluster::InstanceStatus;
use testkit::fake_ecs::Actor;
use testkit::node::NodeEventKind;

use crate::trace::{Interval, Ms, Phases, Trace};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// More than N hosts busy at once.
    TooManyBusy,
    /// A host rebooted without holding a slot.
    RebootWithoutSlot,
    /// An instance was left DRAINING by its agent.
    LeftDraining,
    /// A claim was left on an instance.
    ClaimLeft,
    /// A drain marker was left on an instance.
    MarkerLeft,
    /// A journal still has an update in flight.
    InFlightLeft,
    /// A host is neither on the target version nor parked for a recorded reason.
    NotFinished,
    /// A host the scenario kept out of updates (opted out, standalone tasks) was updated.
    UpdatedAgainstPlan,
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
    out.extend(end_state(trace));
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
    let mut all: Vec<Interval> =
        p.holding.iter().chain(&p.draining).chain(&p.rebooting).copied().filter(|i| !i.is_empty()).collect();
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

/// Result tokens of the status attribute that explain why a host is not on the target (and
/// `skipped-<why>` ones).
const PARKED: [&str; 5] = ["opted-out", "quarantined", "rolled-back", "halted", "skipped"];

fn end_state(trace: &Trace) -> Vec<Violation> {
    let mut out = vec![];
    for h in &trace.hosts {
        let e = &h.end;
        let mut flag = |kind, detail: String| {
            out.push(Violation { kind, at: trace.end, until: None, hosts: vec![h.name.clone()], detail });
        };
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
        let updated = e.running == trace.target;
        if updated && (h.plan.opted_out || h.plan.standalone) {
            let why = if h.plan.opted_out { "opted out" } else { "running a standalone task" };
            flag(ViolationKind::UpdatedAgainstPlan, format!("updated although {why}"));
        }
        if !updated && reason(e).is_none() {
            flag(
                ViolationKind::NotFinished,
                format!("runs {} with no recorded reason (status {:?}, last result {:?})", e.running, e.status_attribute, e.last_result),
            );
        }
    }
    out
}

/// Why a host is not on the target, as its journal or status attribute records it.
pub fn reason(e: &crate::trace::EndState) -> Option<String> {
    if e.last_result.as_deref() == Some("rolled-back") || !e.quarantined.is_empty() {
        return Some("rolled-back".into());
    }
    let token = agent::status::Status::parse(e.status_attribute.as_deref()?)?.result;
    (PARKED.contains(&token.as_str()) || token.starts_with("skipped-")).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{EcsRecord, EndState, HostPlan, HostTrace};
    use testkit::fake_ecs::EcsChange;

    const LEASE: &str = "br-update.lease";

    fn host(name: &str, events: Vec<(Ms, NodeEventKind)>) -> HostTrace {
        HostTrace {
            name: name.into(),
            skew_ms: 0,
            plan: HostPlan::default(),
            events,
            end: EndState {
                running: "2.0.0".into(),
                status: InstanceStatus::Active,
                status_by: Some(Actor::Agent),
                claim: None,
                marker: None,
                status_attribute: None,
                last_result: Some("updated".into()),
                in_flight: false,
                quarantined: vec![],
            },
        }
    }

    fn trace(n: u32, hosts: Vec<HostTrace>, ecs: Vec<EcsRecord>) -> Trace {
        Trace {
            max_concurrent: n,
            target: "2.0.0".into(),
            lease_name: LEASE.into(),
            epoch_ms: 0,
            published: 0,
            end: 100_000,
            hosts,
            ecs,
            calls: vec![],
        }
    }

    fn put(at: Ms, host: usize, value: &str) -> EcsRecord {
        EcsRecord { at, host, by: Actor::Agent, change: EcsChange::Put { name: LEASE.into(), value: value.into() } }
    }

    fn status(at: Ms, host: usize, s: InstanceStatus) -> EcsRecord {
        EcsRecord { at, host, by: Actor::Agent, change: EcsChange::Status(s) }
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
