//! The figures of a rollout: how long it took against what N slots allow at best, how long
//! hosts sat drained, and what it cost in ECS calls. Computed the same way for the agent's runs
//! and for the peer models, so the table compares like with like.

use std::time::Duration;

use std::collections::BTreeMap;

use crate::trace::{CallRecord, Interval, Ms, Phases, Trace};

/// Mean, median, 95th percentile and maximum of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// The statistics of `xs` (all zero when empty).
    pub fn of(xs: &[f64]) -> Stats {
        if xs.is_empty() {
            return Stats::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Stats { mean: v.iter().sum::<f64>() / v.len() as f64, p50: at(0.5), p95: at(0.95), max: v[v.len() - 1] }
    }
}

/// One row of the benchmark table.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// What was run ("agent", "ECS Updater model", ...).
    pub label: String,
    /// Hosts in the fleet.
    pub hosts: usize,
    /// How many may update at once.
    pub max_concurrent: u32,
    /// Slots taken (updates carried out, rolled back or not).
    pub updates: usize,
    /// From publication to the last slot's release.
    pub makespan: Duration,
    /// Mean slot time per update.
    pub mean_slot: Duration,
    /// updates / N × mean slot time.
    pub lower_bound: Duration,
    /// Busy slot time over N × makespan.
    pub utilisation: f64,
    /// Minutes each updated host spent drained.
    pub drained_min: Stats,
    /// ECS calls per update, from publication to the makespan.
    pub calls_per_update: f64,
    /// The most ECS calls fleet-wide within any one second.
    pub peak_calls_per_s: u64,
    /// The highest rate over any minute: calls in the busiest 60 s, per second.
    pub sustained_calls_per_s: f64,
    /// Wall-clock time of the simulation.
    pub wall: Duration,
}

impl Figures {
    /// makespan / lower bound.
    pub fn ratio(&self) -> f64 {
        if self.lower_bound.is_zero() {
            return f64::NAN;
        }
        self.makespan.as_secs_f64() / self.lower_bound.as_secs_f64()
    }

    /// The figures of anything that can list its slots, drains and calls.
    /// Times are ms of the run; the rollout starts at `published`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        label: &str,
        hosts: usize,
        n: u32,
        published: Ms,
        slots: &[Interval],
        drains: &[Ms],
        call_times: &[Ms],
        wall: Duration,
    ) -> Figures {
        let last = slots.iter().map(|s| s.end).max().unwrap_or(published);
        let end = last.saturating_sub(published);
        let busy: Ms = slots.iter().map(Interval::len).sum();
        let updates = slots.len();
        let mean_slot = if updates == 0 { 0.0 } else { busy as f64 / updates as f64 };
        let lower = updates as f64 / f64::from(n.max(1)) * mean_slot;
        let minutes: Vec<f64> = drains.iter().map(|&d| d as f64 / 60_000.0).collect();
        let calls = call_times.iter().filter(|&&t| t >= published && t <= last).count();
        Figures {
            label: label.into(),
            hosts,
            max_concurrent: n,
            updates,
            makespan: Duration::from_millis(end),
            mean_slot: Duration::from_millis(mean_slot as u64),
            lower_bound: Duration::from_millis(lower as u64),
            utilisation: if end == 0 { 0.0 } else { busy as f64 / (f64::from(n.max(1)) * end as f64) },
            drained_min: Stats::of(&minutes),
            calls_per_update: if updates == 0 { 0.0 } else { calls as f64 / updates as f64 },
            peak_calls_per_s: peak_within(call_times, 1000),
            sustained_calls_per_s: peak_within(call_times, 60_000) as f64 / 60.0,
            wall,
        }
    }

    /// The figures of an agent run.
    pub fn of_trace(label: &str, trace: &Trace, wall: Duration) -> Figures {
        let phases = trace.phases();
        let slots: Vec<Interval> = phases.iter().flat_map(|p| p.slots.iter().copied()).collect();
        let drains: Vec<Ms> = phases
            .iter()
            .map(|p| p.draining.iter().map(Interval::len).sum::<Ms>())
            .filter(|&d| d > 0)
            .collect();
        let mut times: Vec<Ms> = trace.calls.iter().map(|c| c.at).collect();
        times.sort_unstable();
        Figures::from_parts(label, trace.hosts.len(), trace.max_concurrent, trace.published, &slots, &drains, &times, wall)
    }
}

/// The most events within any window of `window` ms (sorted input).
pub fn peak_within(sorted: &[Ms], window: Ms) -> u64 {
    let (mut best, mut lo) = (0usize, 0usize);
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best as u64
}

/// The busiest `window` of the same events by chance: each event moved to a random time within
/// its own `bucket` (a minute, say), `draws` times; the peaks, sorted. A rollout whose real peak
/// sits at or below these has no moment left that brings calls together within the bucket: only
/// fewer calls per bucket would lower it. Seeded, so a run prints the same figures each time.
pub fn chance_peaks(times: &[Ms], window: Ms, bucket: Ms, draws: u64, seed: u64) -> Vec<u64> {
    let mut peaks: Vec<u64> = (0..draws)
        .map(|d| {
            let mut moved = moved_within_bucket(times, bucket, crate::sim::mix(seed, d));
            moved.sort_unstable();
            peak_within(&moved, window)
        })
        .collect();
    peaks.sort_unstable();
    peaks
}

/// Each of `times` at a random time within its own `bucket`.
fn moved_within_bucket(times: &[Ms], bucket: Ms, seed: u64) -> Vec<Ms> {
    let bucket = bucket.max(1);
    times.iter().enumerate().map(|(i, &t)| t / bucket * bucket + crate::sim::mix(seed, i as u64) % bucket).collect()
}

/// `3d 04:05` style, for the table.
pub fn human(d: Duration) -> String {
    let m = d.as_secs() / 60;
    let (days, h, min) = (m / 1440, m / 60 % 24, m % 60);
    if days > 0 {
        format!("{days}d {h:02}h{min:02}")
    } else {
        format!("{h}h{min:02}")
    }
}

/// One host's update as the call counts see it: its calls from its decision to update
/// ([`testkit::idle_wait::decision`]) to the release of its slot, in order, and its phases.
struct OwnUpdate<'a> {
    calls: Vec<&'a CallRecord>,
    slot: Interval,
    phases: &'a Phases,
    /// Which of `calls` were idle waiting ([`testkit::idle_wait::idle_waiting`]).
    idle: Vec<bool>,
}

/// Every host's update in `trace` (hosts that never held a slot left out).
fn own_updates<'a>(trace: &'a Trace, phases: &'a [Phases]) -> Vec<OwnUpdate<'a>> {
    let mut by_host: Vec<Vec<&CallRecord>> = vec![vec![]; trace.hosts.len()];
    for c in &trace.calls {
        by_host[c.host].push(c);
    }
    let races = trace.lost_races();
    let mut out = vec![];
    for (host, p) in phases.iter().enumerate() {
        let Some(slot) = p.slots.iter().max_by_key(|s| s.end).copied() else { continue };
        let mine = &by_host[host];
        let released: Vec<&CallRecord> = mine.iter().copied().filter(|c| c.at >= trace.published && c.at <= slot.end).collect();
        let ops: Vec<&str> = released.iter().map(|c| c.op).collect();
        let Some(start) = testkit::idle_wait::decision(&ops) else { continue };
        let calls = released[start..].to_vec();
        let before: Vec<&CallRecord> = calls.iter().copied().take_while(|c| c.at < slot.start).collect();
        let ops: Vec<&str> = before.iter().map(|c| c.op).collect();
        let in_race: Vec<bool> = before.iter().map(|c| races[host].iter().any(|r| r.start <= c.at && c.at <= r.end)).collect();
        let mut idle = testkit::idle_wait::idle_waiting(&ops, &in_race);
        idle.resize(calls.len(), false);
        out.push(OwnUpdate { calls, slot, phases: p, idle });
    }
    out
}

/// Every host's update in a trace, worked out once for the call counts below.
pub struct OwnUpdates<'a>(Vec<OwnUpdate<'a>>);

impl<'a> OwnUpdates<'a> {
    /// The updates of `trace`, whose phases are `phases` (`trace.phases()`).
    pub fn of(trace: &'a Trace, phases: &'a [Phases]) -> OwnUpdates<'a> {
        OwnUpdates(own_updates(trace, phases))
    }

    /// `n` per update.
    fn per(&self, n: u64) -> f64 {
        if self.0.is_empty() { 0.0 } else { n as f64 / self.0.len() as f64 }
    }

    /// Calls per host update counted from the moment each host decides to update
    /// ([`testkit::idle_wait::decision`]) to the release of its slot: its own calls only, waiting
    /// for the slot included, the idle hosts' calls left out. Also those calls by operation, per
    /// update.
    pub fn calls(&self) -> (f64, BTreeMap<&'static str, f64>) {
        self.by_op(|_| true)
    }

    /// [`Self::calls`] with the idle wait left out: the looks at a full or paused fleet
    /// ([`testkit::idle_wait`]), which the waiting policy keeps few however large the fleet.
    pub fn calls_without_idle_wait(&self) -> (f64, BTreeMap<&'static str, f64>) {
        self.by_op(|idle| !idle)
    }

    /// The calls for which `keep` (told whether the call was idle waiting) holds, per update, in
    /// all and by operation.
    fn by_op(&self, keep: impl Fn(bool) -> bool) -> (f64, BTreeMap<&'static str, f64>) {
        let mut ops: BTreeMap<&'static str, u64> = BTreeMap::new();
        for u in &self.0 {
            for (c, _) in u.calls.iter().zip(&u.idle).filter(|(_, idle)| keep(**idle)) {
                *ops.entry(c.op).or_default() += 1;
            }
        }
        (self.per(ops.values().sum()), ops.into_iter().map(|(op, n)| (op, self.per(n))).collect())
    }

    /// The idle wait's rate: its calls per day of a host's idle wait (from its first look at a
    /// full or paused fleet to the look that found room), over every host that waited. Flat, or
    /// falling, as the fleet grows: the waiting policy's promise.
    pub fn idle_wait_calls_per_day(&self) -> f64 {
        let (mut calls, mut waited) = (0u64, 0u64);
        for u in &self.0 {
            let Some(first) = u.idle.iter().position(|i| *i) else { continue };
            // The wait ends with the gate read of the look that found room (where the idle calls end).
            let end = u.calls.iter().filter(|c| c.at < u.slot.start && c.op == "DescribeClusters").map(|c| c.at).max().unwrap_or(u.slot.start);
            calls += u.idle.iter().filter(|i| **i).count() as u64;
            waited += end - u.calls[first].at;
        }
        if waited == 0 { 0.0 } else { calls as f64 / (waited as f64 / 86_400_000.0) }
    }

    /// The same calls as [`Self::calls`], per update, split by the stage of the host's update
    /// they fall in: the idle wait for the slot, the rest before it (the decision, the look that
    /// found room, races lost), in the slot before the drain, draining, down, and from the boot
    /// to the slot's release. Shows where the calls of an update go.
    pub fn by_stage(&self) -> Vec<(&'static str, f64)> {
        const STAGES: [&str; 6] = ["idle waiting", "claiming", "slot before drain", "draining", "rebooting", "after boot"];
        let mut counts = [0u64; 6];
        for u in &self.0 {
            for (c, idle) in u.calls.iter().zip(&u.idle) {
                counts[u.stage(c.at, *idle)] += 1;
            }
        }
        STAGES.iter().zip(counts).map(|(s, n)| (*s, self.per(n))).collect()
    }
}

impl OwnUpdate<'_> {
    /// The index in [`OwnUpdates::by_stage`]'s stages of a call at `at`.
    fn stage(&self, at: Ms, idle: bool) -> usize {
        let (slot, p) = (self.slot, self.phases);
        let drain_start = p.draining.iter().filter(|i| i.start >= slot.start).map(|i| i.start).min();
        let boot = p.rebooting.iter().filter(|i| i.start >= slot.start).map(|i| i.end).max();
        if idle {
            0
        } else if at < slot.start {
            1
        } else if p.rebooting.iter().any(|i| i.contains(at)) {
            4
        } else if boot.is_some_and(|b| at >= b) {
            5
        } else if drain_start.is_some_and(|d| at >= d) {
            3
        } else {
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{host, put, trace, LEASE};
    use crate::trace::EcsRecord;
    use agent::cluster::InstanceStatus;
    use testkit::fake_ecs::{Actor, EcsChange};
    use testkit::node::NodeEventKind;

    /// Two hosts alike, after the release: an idle poll, then a round that waits through a full
    /// look, loses a race on the next, waits through another and claims on the next; the slot
    /// runs 40.2-60 s (DRAINING from 50 s, down 52-55 s), and a round follows at 70 s.
    fn waited() -> Trace {
        let claim = |phase: &str, token: &str| format!("v1:{phase}:0:600:{token}:2.0.0");
        let record = |at, host, change| EcsRecord { at, host, by: Actor::Agent, change };
        let delete = |at, host| record(at, host, EcsChange::Delete { name: LEASE.into() });
        let mut ecs = vec![];
        for h in 0..2 {
            ecs.extend([
                put(20_100, h, &claim("c", "aaaa1111")),
                delete(21_200, h),
                put(40_200, h, &claim("c", "bbbb2222")),
                put(42_000, h, &claim("h", "bbbb2222")),
                record(50_000, h, EcsChange::Status(InstanceStatus::Draining)),
                record(56_000, h, EcsChange::Status(InstanceStatus::Active)),
                delete(60_000, h),
            ]);
        }
        ecs.sort_by_key(|e| e.at);
        let down = vec![(52_000, NodeEventKind::RebootRequested), (55_000, NodeEventKind::Booted { version: "2.0.0".into() })];
        let mut t = trace(2, vec![host("a", down.clone()), host("b", down)], ecs);
        let calls = [
            (1_000, "DescribeContainerInstances"), // an idle poll
            (10_000, "DescribeContainerInstances"), // the round that found the release
            (10_050, "DescribeClusters"),
            (10_100, "ListAttributes"), // full
            (11_000, "PutAttributes"),  // the waiting status
            (20_000, "DescribeClusters"),
            (20_050, "ListAttributes"), // room
            (20_100, "PutAttributes"),  // a claim that loses
            (21_100, "ListAttributes"),
            (21_200, "DeleteAttributes"),
            (30_000, "DescribeClusters"),
            (30_050, "ListAttributes"), // full
            (40_000, "DescribeClusters"),
            (40_050, "ListAttributes"),             // room
            (40_100, "DescribeContainerInstances"), // the opt-out read again
            (40_150, "ListAttributes"),
            (40_200, "PutAttributes"), // the claim that holds
            (41_200, "ListAttributes"),
            (42_000, "PutAttributes"),
            (50_000, "UpdateContainerInstancesState"),
            (51_000, "ListTasks"),
            (56_000, "UpdateContainerInstancesState"),
            (60_000, "DeleteAttributes"),
            (70_000, "DescribeContainerInstances"), // the next round, after the release
            (70_050, "ListAttributes"),
        ];
        t.calls = (0..2).flat_map(|h| calls.iter().map(move |&(at, op)| CallRecord { at, host: h, op })).collect();
        t.calls.sort_by_key(|c| c.at);
        t
    }

    #[test]
    fn chance_breaks_up_a_burst_and_brings_evenly_spaced_calls_together() {
        // Thirty calls within one second of a minute that is otherwise quiet.
        let burst: Vec<Ms> = (0..30).map(|i| 120_000 + i * 30).collect();
        assert_eq!(peak_within(&burst, 1000), 30);
        let peaks = chance_peaks(&burst, 1000, 60_000, 10, 7);
        assert_eq!(peaks.len(), 10);
        assert!(peaks.iter().all(|&p| (2..10).contains(&p)), "{peaks:?}");
        // One call a second for ten minutes: by chance some seconds get two or more.
        let even: Vec<Ms> = (0..600).map(|i| i * 1000 + 500).collect();
        assert_eq!(peak_within(&even, 1000), 1);
        let peaks = chance_peaks(&even, 1000, 60_000, 10, 7);
        assert!(peaks.iter().all(|&p| p >= 3), "{peaks:?}");
    }

    #[test]
    fn chance_moves_each_call_within_its_own_minute() {
        let edges: Vec<Ms> = (0..200).map(|i| if i % 2 == 0 { 59_999 + i * 60_000 } else { 60_000 + i * 60_000 }).collect();
        let moved = moved_within_bucket(&edges, 60_000, 3);
        assert!(moved.iter().zip(&edges).all(|(m, t)| m / 60_000 == t / 60_000), "a call left its minute");
        assert!(moved.iter().zip(&edges).filter(|(m, t)| m != t).count() > 190, "calls were not moved");
    }

    #[test]
    fn an_update_counts_from_the_rounds_instance_read_to_the_release() {
        let t = waited();
        let phases = t.phases();
        let (total, ops) = OwnUpdates::of(&t, &phases).calls();
        assert_eq!(total, 22.0);
        assert_eq!(ops.get("DescribeContainerInstances"), Some(&2.0));
    }

    #[test]
    fn the_idle_wait_is_the_looks_at_a_full_fleet_and_nothing_of_the_race() {
        let t = waited();
        let phases = t.phases();
        let updates = OwnUpdates::of(&t, &phases);
        let (total, ops) = updates.calls_without_idle_wait();
        assert_eq!(total, 18.0);
        assert_eq!((ops.get("DescribeClusters"), ops.get("ListAttributes")), (Some(&2.0), Some(&5.0)));
        let stages: BTreeMap<&str, f64> = updates.by_stage().into_iter().collect();
        let (before, drain) = ((stages["idle waiting"], stages["claiming"]), (stages["slot before drain"], stages["draining"]));
        assert_eq!((before, drain, stages["rebooting"], stages["after boot"]), ((4.0, 11.0), (3.0, 2.0), 0.0, 2.0));
        // Four calls over the 29.95 s from the first look to the one that found room.
        let per_day = updates.idle_wait_calls_per_day();
        assert!((per_day - 4.0 / (29_950.0 / 86_400_000.0)).abs() < 1e-6, "{per_day}");
    }
}

