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

/// Result tokens of the status attribute that explain why a host is not on the target.
const PARKED: [&str; 4] = ["opted-out", "quarantined", "rolled-back", "skipped"];

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
    let token = e.status_attribute.as_deref()?.rsplit(':').next()?;
    PARKED.contains(&token).then(|| token.to_string())
}
