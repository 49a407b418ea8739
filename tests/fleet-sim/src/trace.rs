//! What a run recorded, in plain values: times are milliseconds since the run started (t = 0,
//! when the first agents start; the update is published later, at [`Trace::published`]),
//! hosts are indices. The checker, the figures and
//! the picture all read this, never the live fakes.

use std::collections::BTreeMap;

use agent::cluster::InstanceStatus;
use agent::lease::{Claim, ClaimPhase};
use testkit::fake_ecs::{Actor, EcsChange, FaultTally};
use testkit::node::NodeEventKind;

/// Milliseconds since the rollout started.
pub type Ms = u64;

/// A change to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsRecord {
    /// When.
    pub at: Ms,
    /// Which host's instance.
    pub host: usize,
    /// Agent or operator.
    pub by: Actor,
    /// What.
    pub change: EcsChange,
}

/// One ECS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// When.
    pub at: Ms,
    /// Which host made it.
    pub host: usize,
    /// The operation.
    pub op: &'static str,
}

/// A failure that never ends, given to a host on purpose to show the safe failure: the host
/// keeps its slot, the promise holds, and the others wait behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doom {
    /// Its agent is killed (-9) mid-drain and never started again.
    AgentNeverReturns,
    /// After the update's boot its ECS agent never reconnects, so it holds its slot.
    EcsAgentNeverReconnects,
    /// The new version is bad on it: booting it leaves the instance IMPAIRED for good, so its
    /// health gate fails and it holds its slot (`health.on-failure = hold`).
    BadRelease,
}

/// What the scenario planned for a host, besides timings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPlan {
    /// An operator opted it out.
    pub opted_out: bool,
    /// It runs a standalone task that never ends.
    pub standalone: bool,
    /// A failure that never ends, if the scenario gave it one.
    pub doom: Option<Doom>,
}

/// How a host ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndState {
    /// The version it runs.
    pub running: String,
    /// Its instance's status.
    pub status: InstanceStatus,
    /// Who set that status last (`None`: never changed since registration).
    pub status_by: Option<Actor>,
    /// Its claim attribute, if any is left.
    pub claim: Option<String>,
    /// Its drain marker, if any is left.
    pub marker: Option<String>,
    /// Its `<prefix>.status` attribute as the rollout left it: when the run was stopped
    /// ([`Trace::stopped`]), before the agents wrote how they were stopped.
    pub status_attribute: Option<String>,
    /// The journal's `last_result`.
    pub last_result: Option<String>,
    /// Whether the journal still has an update in flight.
    pub in_flight: bool,
    /// Versions the journal quarantines.
    pub quarantined: Vec<String>,
}

/// One host's part of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTrace {
    /// Its name.
    pub name: String,
    /// Its container instance's short id (the last part of its ARN), as the others' status
    /// details name it.
    pub instance: String,
    /// How far its clock is off, in milliseconds.
    pub skew_ms: i64,
    /// What the scenario planned for it.
    pub plan: HostPlan,
    /// Agent starts, crashes, SIGTERMs, reboot requests and boots.
    pub events: Vec<(Ms, NodeEventKind)>,
    /// How it ended.
    pub end: EndState,
}

impl HostTrace {
    /// Whether it booted into `version` at some point (and so received it, good or bad).
    pub fn booted_into(&self, version: &str) -> bool {
        self.events.iter().any(|(_, k)| matches!(k, NodeEventKind::Booted { version: v } if v == version))
    }
}

/// Everything a run recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// N.
    pub max_concurrent: u32,
    /// The version published at t = 0.
    pub target: String,
    /// The claim attribute's name.
    pub lease_name: String,
    /// The opt-out attribute's name.
    pub opt_out_name: String,
    /// How long after an operator's opt-out its host's agent may still write a claim: until it
    /// reads its flags again before claiming, the look's own time, and the slowest write.
    pub opt_out_grace: Ms,
    /// The wall time (ms since the Unix epoch) at t = 0 on a clock without skew.
    pub epoch_ms: i64,
    /// When the update was published (the agents started before, at random instants).
    pub published: Ms,
    /// When the run was told to stop: every host done, parked, or waiting behind a doomed one,
    /// or the time limit.
    pub stopped: Ms,
    /// When the run stopped (the agents have stopped by then).
    pub end: Ms,
    /// The claims' time to live (`cluster.lease-ttl`), to tell outages longer than a claim lives.
    pub lease_ttl: Ms,
    /// How often the cluster's injected faults took effect.
    pub ecs_faults: FaultTally,
    /// The hosts, by index.
    pub hosts: Vec<HostTrace>,
    /// Every change to the cluster, oldest first.
    pub ecs: Vec<EcsRecord>,
    /// Every ECS call, oldest first.
    pub calls: Vec<CallRecord>,
}

/// How often the hosts of a run went through each fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Agent processes killed mid-step.
    pub crashes: usize,
    /// Agents stopped by SIGTERM (not for a reboot).
    pub sigterms: usize,
    /// Accepted reboot requests.
    pub reboots: usize,
    /// Boots that came back on a version other than the target.
    pub rollbacks: usize,
    /// Crashes after which the agent stayed down longer than a claim lives (or for good).
    pub long_downs: usize,
    /// Crashes while the instance was DRAINING.
    pub crashes_mid_drain: usize,
    /// Crashed agents that had not come back when the run stopped, a claim's life or more later.
    pub never_returned: usize,
    /// Boots whose API then failed for longer than a claim lives.
    pub long_api_outages: usize,
    /// Boots whose ECS agent reconnected more than a claim's life later (or never).
    pub late_reconnects: usize,
    /// Boots that left the instance IMPAIRED for a while.
    pub impaired: usize,
    /// Boots into a release bad on the host: IMPAIRED for good.
    pub impaired_for_good: usize,
    /// Writes that landed late.
    pub slow_writes: u64,
    /// Describes that answered an outdated status.
    pub stale_status_reads: u64,
    /// Task listings that showed a task still stopping after ECS decided to stop it.
    pub stopping_tasks_listed: u64,
    /// Instances set DRAINING by an operator.
    pub operator_drains: usize,
    /// Hosts an operator opted out after publication.
    pub late_opt_outs: usize,
}

impl FaultCounts {
    /// The sum of two runs' counts.
    pub fn add(&mut self, o: &FaultCounts) {
        self.crashes += o.crashes;
        self.sigterms += o.sigterms;
        self.reboots += o.reboots;
        self.rollbacks += o.rollbacks;
        self.long_downs += o.long_downs;
        self.crashes_mid_drain += o.crashes_mid_drain;
        self.never_returned += o.never_returned;
        self.long_api_outages += o.long_api_outages;
        self.late_reconnects += o.late_reconnects;
        self.impaired += o.impaired;
        self.impaired_for_good += o.impaired_for_good;
        self.slow_writes += o.slow_writes;
        self.stale_status_reads += o.stale_status_reads;
        self.stopping_tasks_listed += o.stopping_tasks_listed;
        self.operator_drains += o.operator_drains;
        self.late_opt_outs += o.late_opt_outs;
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crashes {} (mid-drain {}, down > TTL {}, not back by the end {}), SIGTERMs {}, reboots {}, rollbacks {}, \
             API failing > TTL after boot {}, ECS agent back > TTL after boot {}, IMPAIRED after boot {} \
             (for good {}), slow writes {}, \
             stale status reads {}, listings with stopping tasks {}, operator drains {}, opt-outs mid-rollout {}",
            self.crashes,
            self.crashes_mid_drain,
            self.long_downs,
            self.never_returned,
            self.sigterms,
            self.reboots,
            self.rollbacks,
            self.long_api_outages,
            self.late_reconnects,
            self.impaired,
            self.impaired_for_good,
            self.slow_writes,
            self.stale_status_reads,
            self.stopping_tasks_listed,
            self.operator_drains,
            self.late_opt_outs
        )
    }
}

/// A half-open interval `[start, end)` of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// Start.
    pub start: Ms,
    /// End.
    pub end: Ms,
}

impl Interval {
    /// Whether `t` lies inside.
    pub fn contains(&self, t: Ms) -> bool {
        self.start <= t && t < self.end
    }
    /// Its length.
    pub fn len(&self) -> Ms {
        self.end.saturating_sub(self.start)
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// When a host was in each state that counts against N, and when it waited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Its live claim had a phase other than `c` (held, draining, rebooting, verifying).
    pub holding: Vec<Interval>,
    /// Its instance was DRAINING, set by its agent.
    pub draining: Vec<Interval>,
    /// Its instance was DRAINING, set by someone else (an operator, ECS on scale-in).
    pub drained_by_others: Vec<Interval>,
    /// Down: between an accepted reboot request and the boot.
    pub rebooting: Vec<Interval>,
    /// From the claim write that won a slot to the claim's removal (or lapse): the slot time.
    pub slots: Vec<Interval>,
    /// Looking for a slot: from the first look at the claims to the winning claim write.
    pub waiting: Vec<Interval>,
}

impl Phases {
    /// Every stretch during which the host counts against N, in no order and possibly
    /// overlapping: holding, DRAINING by anyone, down.
    pub fn busy(&self) -> impl Iterator<Item = &Interval> {
        self.holding.iter().chain(&self.draining).chain(&self.drained_by_others).chain(&self.rebooting)
    }
    /// Whether the host counts against N at `t`.
    pub fn busy_at(&self, t: Ms) -> bool {
        self.busy().any(|i| i.contains(t))
    }
    /// Which of the busy states it is in at `t`, for reports.
    pub fn describe_at(&self, t: Ms) -> String {
        let mut parts = vec![];
        let states = [
            ("holding", &self.holding),
            ("draining", &self.draining),
            ("drained-by-others", &self.drained_by_others),
            ("down", &self.rebooting),
        ];
        for (name, v) in states {
            if v.iter().any(|i| i.contains(t)) {
                parts.push(name);
            }
        }
        parts.join("+")
    }
}

impl Trace {
    /// Each host's phases, by index.
    pub fn phases(&self) -> Vec<Phases> {
        let mut lease: Vec<Vec<(Ms, Option<&str>)>> = vec![vec![]; self.hosts.len()];
        let mut status: Vec<Vec<(Ms, Actor, &InstanceStatus)>> = vec![vec![]; self.hosts.len()];
        for e in &self.ecs {
            match &e.change {
                EcsChange::Put { name, value } if *name == self.lease_name => lease[e.host].push((e.at, Some(value))),
                EcsChange::Delete { name } if *name == self.lease_name => lease[e.host].push((e.at, None)),
                EcsChange::Status(s) => status[e.host].push((e.at, e.by, s)),
                _ => {}
            }
        }
        let mut looks: Vec<Vec<Ms>> = vec![vec![]; self.hosts.len()];
        for c in self.calls.iter().filter(|c| c.op == "ListAttributes") {
            looks[c.host].push(c.at);
        }
        (0..self.hosts.len())
            .map(|i| {
                let (holding, slots) = self.claim_intervals(i, &lease[i]);
                let (draining, drained_by_others) = draining_intervals(&status[i], self.end);
                Phases {
                    holding,
                    draining,
                    drained_by_others,
                    rebooting: reboot_intervals(&self.hosts[i].events, self.end),
                    waiting: waiting_intervals(&looks[i], &slots),
                    slots,
                }
            })
            .collect()
    }

    /// The claim's lapse on the writer's own clock, as a time of the run.
    fn lapse(&self, host: usize, expires_at_secs: i64) -> Ms {
        let wall = expires_at_secs.saturating_mul(1000) - self.hosts[host].skew_ms;
        wall.saturating_sub(self.epoch_ms).max(0) as Ms
    }

    /// Holding intervals (claim phase not `c`, until removed, re-claimed or lapsed) and slot
    /// intervals (from the `c` write of the token that went on to hold).
    /// Per host, the races it lost: from each claim it wrote in phase `claiming` to the claim's
    /// withdrawal, when no renewal came between (the claim never held).
    pub fn lost_races(&self) -> Vec<Vec<Interval>> {
        let mut out: Vec<Vec<Interval>> = vec![vec![]; self.hosts.len()];
        let mut claimed: Vec<Option<Ms>> = vec![None; self.hosts.len()];
        for e in &self.ecs {
            match &e.change {
                EcsChange::Put { name, value } if *name == self.lease_name => {
                    let claiming = Claim::parse(value).is_ok_and(|c| c.phase == ClaimPhase::Claiming);
                    claimed[e.host] = claiming.then_some(e.at);
                }
                EcsChange::Delete { name } if *name == self.lease_name => {
                    if let Some(start) = claimed[e.host].take() {
                        out[e.host].push(Interval { start, end: e.at });
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn claim_intervals(&self, host: usize, writes: &[(Ms, Option<&str>)]) -> (Vec<Interval>, Vec<Interval>) {
        let (mut holding, mut slots) = (vec![], vec![]);
        // (hold start, slot start, lapse) of the claim being held.
        let mut open: Option<(Ms, Ms, Ms)> = None;
        let mut claimed: Option<(Ms, String)> = None;
        for &(at, value) in writes {
            let claim = value.and_then(|v| Claim::parse(v).ok());
            if let Some((start, slot, lapse)) = open {
                let continues = claim.as_ref().is_some_and(|c| c.phase != ClaimPhase::Claiming) && lapse > at;
                if !continues {
                    holding.push(Interval { start, end: at.min(lapse) });
                    slots.push(Interval { start: slot, end: at.min(lapse) });
                    open = None;
                }
            }
            match claim {
                Some(c) if c.phase == ClaimPhase::Claiming => claimed = Some((at, c.token)),
                Some(c) => {
                    let lapse = self.lapse(host, c.expires_at);
                    let slot = match &claimed {
                        Some((t, token)) if *token == c.token => *t,
                        _ => at,
                    };
                    open = Some(match open {
                        Some((start, slot, _)) => (start, slot, lapse),
                        None => (at, slot, lapse),
                    });
                }
                None => claimed = None,
            }
        }
        if let Some((start, slot, lapse)) = open {
            holding.push(Interval { start, end: self.end.min(lapse) });
            slots.push(Interval { start: slot, end: self.end.min(lapse) });
        }
        (holding, slots)
    }

    /// How many tasks on `host`'s instance had not stopped at `at`: started by then and not yet
    /// stopped (a task that stops at `at` itself no longer counts), as the cluster's history
    /// tells (the same rule as `testkit::fake_ecs::unstopped_at`).
    pub fn unstopped_at(&self, host: usize, at: Ms) -> usize {
        testkit::fake_ecs::unstopped(self.ecs.iter().take_while(|e| e.at <= at).filter(|e| e.host == host).map(|e| &e.change))
    }

    /// The hosts' names, for reports.
    pub fn name(&self, host: usize) -> &str {
        &self.hosts[host].name
    }

    /// A stable 64-bit digest of everything recorded: equal for two runs with the same seed.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        for e in &self.ecs {
            h.write(&format!("{}|{}|{:?}|{:?}\n", e.at, e.host, e.by, e.change));
        }
        for c in &self.calls {
            h.write(&format!("{}|{}|{}\n", c.at, c.host, c.op));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            for (at, kind) in &host.events {
                h.write(&format!("{i}|{at}|{kind:?}\n"));
            }
            h.write(&format!("{i}|{:?}\n", host.end));
        }
        h.finish()
    }

    /// The last `k` recorded transitions (cluster changes, reboots, boots, agent starts and
    /// stops) at or before `at`, one per line, for failure reports.
    pub fn transitions_before(&self, at: Ms, k: usize) -> Vec<String> {
        let mut all: Vec<(Ms, String)> = self
            .ecs
            .iter()
            .filter(|e| e.at <= at)
            .map(|e| (e.at, format!("{} {:?} {:?}", self.name(e.host), e.by, e.change)))
            .collect();
        for (i, h) in self.hosts.iter().enumerate() {
            all.extend(h.events.iter().filter(|(t, _)| *t <= at).map(|(t, kind)| (*t, format!("{} {kind:?}", self.name(i)))));
        }
        all.sort();
        let from = all.len().saturating_sub(k);
        all[from..].iter().map(|(t, line)| format!("{} {line}", crate::check::clock(*t))).collect()
    }

    /// How many events of each kind the run went through: agent crashes (and how many of those
    /// kept the agent down past a claim's life, or for good), SIGTERMs, reboots, boots that came
    /// back on the old version, long API outages and late ECS agents after boot, the cluster's
    /// slow writes, stale describes and stopping tasks, and operators' drains.
    pub fn fault_counts(&self) -> FaultCounts {
        let phases = self.phases();
        let mut c = FaultCounts {
            slow_writes: self.ecs_faults.slow_writes,
            stale_status_reads: self.ecs_faults.stale_status_reads,
            stopping_tasks_listed: self.ecs_faults.stopping_tasks_listed,
            ..FaultCounts::default()
        };
        for (h, host) in self.hosts.iter().enumerate() {
            let mut booted = None;
            for (k, (at, kind)) in host.events.iter().enumerate() {
                match kind {
                    NodeEventKind::AgentCrashed => {
                        c.crashes += 1;
                        let mid_drain = phases[h].draining.iter().chain(&phases[h].drained_by_others).any(|i| i.contains(*at));
                        c.crashes_mid_drain += usize::from(mid_drain);
                        let back = host.events[k..].iter().find(|(_, e)| *e == NodeEventKind::AgentStarted).map(|(t, _)| *t);
                        c.never_returned += usize::from(back.is_none() && self.stopped.saturating_sub(*at) > self.lease_ttl);
                        c.long_downs += usize::from(back.unwrap_or(self.stopped).saturating_sub(*at) > self.lease_ttl);
                    }
                    NodeEventKind::AgentTerminated => c.sigterms += 1,
                    NodeEventKind::RebootRequested => c.reboots += 1,
                    NodeEventKind::Booted { version } => {
                        c.rollbacks += usize::from(*version != self.target);
                        booted = Some(*at);
                        let back = host.events[k..].iter().find(|(_, e)| *e == NodeEventKind::EcsAgentReconnected).map(|(t, _)| *t);
                        c.late_reconnects += usize::from(back.unwrap_or(self.stopped).saturating_sub(*at) > self.lease_ttl);
                    }
                    NodeEventKind::ApiFailingAfterBoot { lasting } if booted.is_some() => {
                        c.long_api_outages += usize::from(lasting.as_millis() as Ms > self.lease_ttl);
                    }
                    NodeEventKind::ImpairedAfterBoot { lasting: Some(_) } => c.impaired += 1,
                    NodeEventKind::ImpairedAfterBoot { lasting: None } => c.impaired_for_good += 1,
                    _ => {}
                }
            }
        }
        c.operator_drains = self
            .ecs
            .iter()
            .filter(|e| e.by == Actor::Operator && e.change == EcsChange::Status(InstanceStatus::Draining))
            .count();
        c.late_opt_outs = self.late_opt_outs().len();
        c
    }

    /// Every opt-out an operator set after publication: when, and on which host.
    pub fn late_opt_outs(&self) -> Vec<(Ms, usize)> {
        self.ecs
            .iter()
            .filter(|e| e.by == Actor::Operator && e.at >= self.published)
            .filter(|e| matches!(&e.change, EcsChange::Put { name, .. } if *name == self.opt_out_name))
            .map(|e| (e.at, e.host))
            .collect()
    }

    /// Calls per operation.
    pub fn calls_by_op(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for c in &self.calls {
            *m.entry(c.op).or_default() += 1;
        }
        m
    }
}

/// Whether a status detail names the instance `id` as a whole word (`h1` is not named by
/// `h10`).
pub fn names_instance(detail: &str, id: &str) -> bool {
    detail.split_whitespace().any(|w| w == id)
}

/// Each stretch of DRAINING until set ACTIVE (or the run's end): those its agent began, and
/// those someone else began.
fn draining_intervals(changes: &[(Ms, Actor, &InstanceStatus)], end: Ms) -> (Vec<Interval>, Vec<Interval>) {
    let (mut by_agent, mut by_others) = (vec![], vec![]);
    let mut since: Option<(Ms, Actor)> = None;
    let mut close = |start: Ms, who: Actor, at: Ms| {
        let out = if who == Actor::Agent { &mut by_agent } else { &mut by_others };
        out.push(Interval { start, end: at });
    };
    for &(at, by, status) in changes {
        match (status, since) {
            (InstanceStatus::Draining, None) => since = Some((at, by)),
            (InstanceStatus::Draining, _) => {}
            (_, Some((start, who))) => {
                close(start, who, at);
                since = None;
            }
            (_, None) => {}
        }
    }
    if let Some((start, who)) = since {
        close(start, who, end);
    }
    (by_agent, by_others)
}

/// From each accepted reboot request to the next boot (or the run's end).
fn reboot_intervals(events: &[(Ms, NodeEventKind)], end: Ms) -> Vec<Interval> {
    let mut out = vec![];
    let mut since = None;
    for (at, kind) in events {
        match kind {
            NodeEventKind::RebootRequested if since.is_none() => since = Some(*at),
            NodeEventKind::Booted { .. } => {
                if let Some(start) = since.take() {
                    out.push(Interval { start, end: *at });
                }
            }
            _ => {}
        }
    }
    if let Some(start) = since {
        out.push(Interval { start, end });
    }
    out
}

/// For each slot, from the first look at the claims after the previous slot to the slot's start.
fn waiting_intervals(looks: &[Ms], slots: &[Interval]) -> Vec<Interval> {
    let mut out = vec![];
    let mut after = 0;
    for s in slots {
        if let Some(&first) = looks.iter().find(|&&t| t >= after && t <= s.start) {
            out.push(Interval { start: first, end: s.start });
        }
        after = s.end;
    }
    out
}

/// FNV-1a, 64 bit: stable across builds and platforms, unlike the standard hasher.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, s: &str) {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
