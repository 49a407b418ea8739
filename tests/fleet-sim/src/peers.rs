//! Simple models of the peers' strategies, run on the same fleet (the same host count and the
//! same drain, download and reboot timings) so the benchmark compares like with like. They are
//! models of a schedule, not of the peers' code:
//!
//! - **Bottlerocket ECS Updater**: a central task started every 12 hours; it lists the cluster,
//!   checks every instance through SSM, then updates one instance at a time: drain, wait for the
//!   tasks to stop (polled every 15 s), apply (download and write, while drained), reboot, wait
//!   for EC2 status OK (polled every 15 s), set ACTIVE, verify. A run goes on until every
//!   candidate is done; a run started while another is going exits at once.
//! - **kured**: every host looks every hour (its phase random) whether it needs a reboot and,
//!   if so, whether the single fleet-wide lock is free; the holder drains, reboots and releases
//!   the lock when it is back. Waiting hosts notice a free lock only at their next look.
//!
//! Calls to the lock store and to the drain API count as ECS-equivalent calls; sequential calls
//! of one actor are spaced by the scenario's ECS latency.
//!
//! A release bad on some hosts (the scenario's `bad_release`, the same hosts as in the agent's
//! runs) boots, and then ECS finds the instance IMPAIRED. Neither peer's checks after a reboot
//! look at that, so each model goes on to the next host as after a good one, counting the hosts
//! that received the release.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use agent::backoff::Jitter;

use crate::metrics::Figures;
use crate::scenario::Scenario;
use crate::sim::mix;
use crate::trace::{Interval, Ms};

/// Per-host timings of one fleet, drawn from the scenario's ranges.
#[derive(Clone, Debug)]
pub struct FleetTimings {
    /// How long each host's tasks take to leave.
    pub drain: Vec<Duration>,
    /// How long each host's download takes.
    pub prepare: Vec<Duration>,
    /// How long each host's reboot takes.
    pub reboot: Vec<Duration>,
    /// When each host learns of the update, after publication (its check slot).
    pub notice: Vec<Duration>,
}

impl FleetTimings {
    /// Draws a fleet's timings from `sc` (its own stream of the seed).
    pub fn draw(sc: &Scenario) -> FleetTimings {
        let rng = Jitter::seeded(mix(sc.seed, 0x9ee7));
        let mut t = FleetTimings { drain: vec![], prepare: vec![], reboot: vec![], notice: vec![] };
        for _ in 0..sc.hosts {
            t.drain.push(rng.between(sc.drain_time.lo, sc.drain_time.hi));
            t.prepare.push(rng.between(sc.prepare_time.lo, sc.prepare_time.hi));
            t.reboot.push(rng.between(sc.reboot_time.lo, sc.reboot_time.hi));
            t.notice.push(rng.up_to(sc.check_interval));
        }
        t
    }
}

/// How far a release spread under a peer's schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSpread {
    /// Hosts on which the release is bad.
    pub bad: usize,
    /// Hosts that booted into it.
    pub received: usize,
    /// Hosts on which it is bad that booted into it.
    pub failed: usize,
    /// From publication to the last boot into it.
    pub last_received: Ms,
}

/// A peer model's run: its figures and how far the release spread.
#[derive(Clone, Debug)]
pub struct PeerRun {
    /// The benchmark row.
    pub figures: Figures,
    /// The spread.
    pub spread: PeerSpread,
}

/// What a peer model produced, in the shape the figures take.
struct Tally {
    slots: Vec<Interval>,
    drains: Vec<Ms>,
    calls: Vec<Ms>,
    latency: Ms,
    spread: PeerSpread,
}

impl Tally {
    fn new(latency: Duration, bad: usize) -> Tally {
        let spread = PeerSpread { bad, ..PeerSpread::default() };
        Tally { slots: vec![], drains: vec![], calls: vec![], latency: latency.as_millis().max(1) as Ms, spread }
    }
    /// A host booted into the release at `at`; `bad`: it fails there.
    fn booted(&mut self, at: Ms, bad: bool) {
        self.spread.received += 1;
        self.spread.failed += usize::from(bad);
        self.spread.last_received = self.spread.last_received.max(at);
    }
    /// `count` sequential calls starting at `at`; returns when the last one is answered.
    fn calls(&mut self, at: Ms, count: u64) -> Ms {
        for i in 0..count {
            self.calls.push(at + i * self.latency);
        }
        at + count * self.latency
    }
    fn finish(mut self, label: &str, hosts: usize, started: std::time::Instant) -> PeerRun {
        self.calls.sort_unstable();
        let figures = Figures::from_parts(label, hosts, 1, 0, &self.slots, &self.drains, &self.calls, started.elapsed());
        PeerRun { figures, spread: self.spread }
    }
}

const POLL: Ms = 15_000;

fn ms(d: Duration) -> Ms {
    d.as_millis() as Ms
}

/// The next multiple of `step` after `from`, counted from `start`.
fn next_tick(start: Ms, from: Ms, step: Ms) -> Ms {
    if from <= start {
        return start;
    }
    start + (from - start).div_ceil(step) * step
}

/// The Bottlerocket ECS Updater's schedule on this fleet.
pub fn ecs_updater(sc: &Scenario, latency: Duration) -> PeerRun {
    let started = std::time::Instant::now();
    let t = FleetTimings::draw(sc);
    let bad = crate::sim::bad_release_hosts(sc);
    let rng = Jitter::seeded(mix(sc.seed, 0xec50dd));
    let mut tally = Tally::new(latency, bad.len());
    const RUN_EVERY: Ms = 12 * 3_600_000;
    // The schedule's phase is unrelated to the release.
    let run_start = ms(rng.up_to(Duration::from_millis(RUN_EVERY)));
    let pages = sc.hosts.div_ceil(100) as u64;
    // ListContainerInstances and DescribeContainerInstances, a page and a batch per 100.
    let mut now = tally.calls(run_start, 2 * pages);
    // SSM update checks in batches of 50, each waited for (about 30 s a batch).
    now += sc.hosts.div_ceil(50) as Ms * 30_000;
    for h in 0..sc.hosts {
        let slot_start = now;
        now = tally.calls(now, 2); // ListTasks + DescribeTasks: eligibility
        now = tally.calls(now, 2); // DRAINING, then the task list taken once
        let drained_at = now;
        let stopped = drained_at + ms(t.drain[h]);
        let mut poll = drained_at;
        while poll < stopped {
            poll += POLL;
            tally.calls(poll, 1); // DescribeTasks
        }
        now = poll;
        now += ms(t.prepare[h]) + 5_000; // update apply through SSM: download, write, activate
        now += 15_000; // reboot sent, then the fixed sleep
        tally.booted(now + ms(t.reboot[h]), bad.contains(&h));
        let status_ok = now + ms(t.reboot[h]) + 60_000;
        now = next_tick(now, status_ok, POLL); // EC2 InstanceStatusOk waiter
        now = tally.calls(now, 1); // ACTIVE
        tally.drains.push(now - drained_at);
        now += 20_000 + 15_000; // the fixed sleep, then the SSM check that verifies
        tally.slots.push(Interval { start: slot_start, end: now });
        // The run aborts only when an instance never reaches EC2 status OK or cannot be set
        // ACTIVE, and the SSM check asks only whether an update is still available. A release
        // that boots and leaves the instance IMPAIRED in ECS passes all three: the run goes on.
    }
    // Each 12-hour start while the run goes on finds it running and exits (one ListTasks).
    let mut tick = run_start + RUN_EVERY;
    while tick < now {
        tally.calls(tick, 1);
        tick += RUN_EVERY;
    }
    tally.finish("ECS Updater model (1 at a time, every 12 h)", sc.hosts, started)
}

/// kured's single fleet-wide lock with hourly looks, on this fleet.
pub fn kured(sc: &Scenario, latency: Duration) -> PeerRun {
    let started = std::time::Instant::now();
    let t = FleetTimings::draw(sc);
    let bad = crate::sim::bad_release_hosts(sc);
    let rng = Jitter::seeded(mix(sc.seed, 0x4b5ed));
    let mut tally = Tally::new(latency, bad.len());
    const PERIOD: Ms = 3_600_000;
    let phase: Vec<Ms> = (0..sc.hosts).map(|_| ms(rng.up_to(Duration::from_millis(PERIOD)))).collect();
    // A host needs a reboot once it has downloaded the update.
    let ready: Vec<Ms> = (0..sc.hosts).map(|h| ms(t.notice[h] + t.prepare[h])).collect();
    let mut lock_free_at: Ms = 0;
    // Looks in time order; the lock goes to the first look after it is free.
    let mut looks: BinaryHeap<Reverse<(Ms, usize)>> =
        (0..sc.hosts).map(|h| Reverse((next_tick(phase[h], ready[h], PERIOD), h))).collect();
    while let Some(Reverse((at, h))) = looks.pop() {
        let after_read = tally.calls(at, 1); // read the lock
        if at < lock_free_at {
            looks.push(Reverse((at + PERIOD, h)));
            continue;
        }
        let mut now = tally.calls(after_read, 2); // take the lock, cordon
        let drained_at = now;
        let stopped = drained_at + ms(t.drain[h]);
        let mut poll = drained_at;
        while poll < stopped {
            poll += POLL;
            tally.calls(poll, 1); // eviction progress
        }
        tally.booted(poll + ms(t.reboot[h]), bad.contains(&h));
        now = poll + ms(t.reboot[h]) + 30_000; // reboot, then kured's pod starts
        // kured releases the lock once its own pod runs again on the node: it looks at no
        // health of the workload, so a host the release failed on hands the lock on like any.
        now = tally.calls(now, 3); // read the lock, uncordon, release
        tally.drains.push(now - drained_at);
        tally.slots.push(Interval { start: at, end: now });
        lock_free_at = now;
    }
    tally.finish("kured model (1 lock, looks every 1 h)", sc.hosts, started)
}
