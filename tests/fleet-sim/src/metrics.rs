//! The figures of a rollout: how long it took against what N slots allow at best, how long
//! hosts sat drained, and what it cost in ECS calls. Computed the same way for the agent's runs
//! and for the peer models, so the table compares like with like.

use std::time::Duration;

use crate::trace::{Interval, Ms, Trace};

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

/// Calls per host update counted from the moment each host decides to update (its first look
/// at the failure markers or claims after publication) to the release of its slot: its own
/// calls only, waiting for the slot included, the idle hosts' calls left out. Also those calls
/// by operation, per update.
pub fn calls_per_own_update(trace: &Trace) -> (f64, std::collections::BTreeMap<&'static str, f64>) {
    let phases = trace.phases();
    let mut by_host: Vec<Vec<&crate::trace::CallRecord>> = vec![vec![]; trace.hosts.len()];
    for c in &trace.calls {
        by_host[c.host].push(c);
    }
    let (mut updates, mut total) = (0u64, 0u64);
    let mut ops: std::collections::BTreeMap<&'static str, u64> = std::collections::BTreeMap::new();
    for (host, p) in phases.iter().enumerate() {
        let Some(end) = p.slots.iter().map(|s| s.end).max() else { continue };
        let calls = &by_host[host];
        let Some(start) = calls.iter().find(|c| c.at >= trace.published && c.op == "ListAttributes").map(|c| c.at) else { continue };
        updates += 1;
        for c in calls.iter().filter(|c| c.at >= start && c.at <= end) {
            total += 1;
            *ops.entry(c.op).or_default() += 1;
        }
    }
    let per = |n: u64| if updates == 0 { 0.0 } else { n as f64 / updates as f64 };
    (per(total), ops.into_iter().map(|(op, n)| (op, per(n))).collect())
}

/// The same calls as [`calls_per_own_update`], per update, split by the stage of the host's
/// update they fall in: waiting for the slot, in the slot before the drain, draining, down, and
/// from the boot to the slot's release. Shows where the calls of an update go.
pub fn calls_per_own_update_by_stage(trace: &Trace) -> Vec<(&'static str, f64)> {
    let phases = trace.phases();
    let mut by_host: Vec<Vec<&crate::trace::CallRecord>> = vec![vec![]; trace.hosts.len()];
    for c in &trace.calls {
        by_host[c.host].push(c);
    }
    const STAGES: [&str; 5] = ["waiting", "slot before drain", "draining", "rebooting", "after boot"];
    let (mut updates, mut counts) = (0u64, [0u64; 5]);
    for (host, p) in phases.iter().enumerate() {
        let Some(slot) = p.slots.iter().max_by_key(|s| s.end) else { continue };
        let calls = &by_host[host];
        let Some(start) = calls.iter().find(|c| c.at >= trace.published && c.op == "ListAttributes").map(|c| c.at) else { continue };
        updates += 1;
        let drain_start = p.draining.iter().filter(|i| i.start >= slot.start).map(|i| i.start).min();
        let boot = p.rebooting.iter().filter(|i| i.start >= slot.start).map(|i| i.end).max();
        let down = |t| p.rebooting.iter().any(|i| i.contains(t));
        for c in calls.iter().filter(|c| c.at >= start && c.at <= slot.end) {
            let stage = if c.at < slot.start {
                0
            } else if down(c.at) {
                3
            } else if boot.is_some_and(|b| c.at >= b) {
                4
            } else if drain_start.is_some_and(|d| c.at >= d) {
                2
            } else {
                1
            };
            counts[stage] += 1;
        }
    }
    let per = |n: u64| if updates == 0 { 0.0 } else { n as f64 / updates as f64 };
    STAGES.iter().zip(counts).map(|(s, n)| (*s, per(n))).collect()
}
