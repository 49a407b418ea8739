//! What one simulated rollout looks like: the fleet, its timings, the faults, and the agent's
//! settings. Every random choice of a run derives from [`Scenario::seed`].

use std::time::Duration;

use agent::config::{Config, OnFailure};
use agent::lease::{LeaseRule, UnsafeOff};
use testkit::fake_ecs::{LocalTaskView, TaskListing};

pub use crate::trace::Doom;

const MIN: Duration = Duration::from_secs(60);

/// A range of durations; each draw is uniform in `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The shortest.
    pub lo: Duration,
    /// The longest.
    pub hi: Duration,
}

impl Span {
    /// `[lo, hi]`.
    pub const fn new(lo: Duration, hi: Duration) -> Span {
        Span { lo, hi }
    }
    /// Always `d`.
    pub const fn exactly(d: Duration) -> Span {
        Span { lo: d, hi: d }
    }
    /// `[lo, hi]` in minutes.
    pub const fn minutes(lo: u64, hi: u64) -> Span {
        Span { lo: Duration::from_secs(lo * 60), hi: Duration::from_secs(hi * 60) }
    }
    /// The mean of a uniform draw.
    pub fn mean(&self) -> Duration {
        (self.lo + self.hi) / 2
    }
}

/// Faults injected into a run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// The chance that a boot into the new version fails and rolls back.
    pub rollback_chance: f64,
    /// Each host's clock is off by a uniform draw in `[-clock_skew, +clock_skew]`.
    pub clock_skew: Duration,
    /// ECS attribute reads may miss writes younger than this.
    pub staleness: Duration,
    /// Every Nth ECS call fleet-wide is throttled (0: never).
    pub throttle_every: u64,
    /// ECS's documented token buckets, of which the agents get this share (the account's
    /// other callers take the rest); 0: no buckets.
    pub bucket_share: f64,
    /// Mean number of agent crashes (future dropped, restart from the journal) per host.
    pub crashes_per_host: f64,
    /// Mean number of SIGTERMs (agent undoes and is restarted) per host.
    pub sigterms_per_host: f64,
    /// Crash and SIGTERM instants are drawn uniformly from `[0, interruption_window)`.
    pub interruption_window: Duration,
    /// How long systemd waits before starting a stopped agent again.
    pub restart_delay: Span,
    /// The fraction of hosts running a standalone task that never ends.
    pub standalone_fraction: f64,
    /// The fraction of hosts an operator opted out.
    pub opted_out_fraction: f64,
    /// The chance that a PutAttributes lands late, by a draw from `slow_write`: longer than a
    /// claim's TTL, a renewal lands after the claim it renews has lapsed.
    pub slow_write_chance: f64,
    /// How long a slow write takes to land.
    pub slow_write: Span,
    /// The chance that a crash keeps the agent down for a draw from `long_restart_delay`
    /// instead of `restart_delay`: down for longer than its claim lives.
    pub long_restart_chance: f64,
    /// How long such a crash keeps the agent down.
    pub long_restart_delay: Span,
    /// The fraction of hosts whose agent crashes the first time its instance is DRAINING (then
    /// restarts as any crash does): crashes that surely fall mid-drain.
    pub crash_mid_drain_fraction: f64,
    /// The fraction of hosts whose agent is stopped (SIGTERM) the first time its instance is
    /// DRAINING: an undo right after DRAINING was set, while describes may still say ACTIVE.
    pub sigterm_mid_drain_fraction: f64,
    /// The chance that a boot's API fails for a draw from `api_errors_after_boot`.
    pub api_errors_chance: f64,
    /// How long the API fails after such a boot.
    pub api_errors_after_boot: Span,
    /// The chance that a boot's ECS agent reconnects only after a draw from `late_reconnect`.
    pub late_reconnect_chance: f64,
    /// How long after such a boot the ECS agent reconnects.
    pub late_reconnect: Span,
    /// Describes report the instance's status as it was this long ago.
    pub status_lag: Duration,
    /// How long a drained service task keeps running after ECS decided to stop it (its load
    /// balancer's deregistration delay): each task draws its own.
    pub stop_time: Span,
    /// How many hosts an operator drains (DRAINING, not by any agent) at a random instant before
    /// the update is published, keeping them DRAINING for a draw from `operator_drain_for` after
    /// publication: slots the agents must count although no agent holds them.
    pub operator_drains: usize,
    /// How long after publication an operator's drain lasts.
    pub operator_drain_for: Span,
    /// How many hosts an operator opts out while the rollout runs, at a random instant of the
    /// first `late_opt_out_within` after publication: a host waiting for its slot by then must
    /// not take it once its agent has had time to read the flag again.
    pub late_opt_outs: usize,
    /// See `late_opt_outs`.
    pub late_opt_out_within: Duration,
    /// Hosts singled out, by index, for a failure that never ends (the safe failures): the
    /// promise must hold all the same and the others wait behind them.
    pub doomed: Vec<(usize, Doom)>,
    /// The fraction of hosts on which the new version is bad: booting it leaves the container
    /// instance IMPAIRED for good ([`Doom::BadRelease`]). Exactly this fraction of the fleet,
    /// rounded, chosen by the seed; 1.0 is a release bad on every host.
    pub bad_release: f64,
    /// The chance that a boot leaves the container instance IMPAIRED for a draw from
    /// `impaired_for`: a health gate that fails, then passes once it clears.
    pub impaired_chance: f64,
    /// How long such an impairment lasts.
    pub impaired_for: Span,
}

impl Default for FaultPlan {
    fn default() -> FaultPlan {
        FaultPlan::none()
    }
}

impl FaultPlan {
    /// Nothing goes wrong and every clock is right.
    pub fn none() -> FaultPlan {
        FaultPlan {
            rollback_chance: 0.0,
            clock_skew: Duration::ZERO,
            staleness: Duration::ZERO,
            throttle_every: 0,
            bucket_share: 0.0,
            crashes_per_host: 0.0,
            sigterms_per_host: 0.0,
            interruption_window: Duration::ZERO,
            restart_delay: Span::new(Duration::from_secs(5), Duration::from_secs(60)),
            standalone_fraction: 0.0,
            opted_out_fraction: 0.0,
            slow_write_chance: 0.0,
            slow_write: Span::exactly(Duration::ZERO),
            long_restart_chance: 0.0,
            long_restart_delay: Span::minutes(15, 60),
            crash_mid_drain_fraction: 0.0,
            sigterm_mid_drain_fraction: 0.0,
            api_errors_chance: 0.0,
            api_errors_after_boot: Span::minutes(15, 40),
            late_reconnect_chance: 0.0,
            late_reconnect: Span::minutes(15, 40),
            status_lag: Duration::ZERO,
            stop_time: Span::exactly(Duration::ZERO),
            operator_drains: 0,
            operator_drain_for: Span::minutes(30, 90),
            late_opt_outs: 0,
            late_opt_out_within: 6 * 3600 * Duration::from_secs(1),
            doomed: vec![],
            bad_release: 0.0,
            impaired_chance: 0.0,
            impaired_for: Span::minutes(5, 30),
        }
    }

    /// Every kind of fault at once, at rates that still let a rollout finish: some rolled-back
    /// boots, skewed clocks, stale and throttled reads within what the settings allow, crashes
    /// and SIGTERMs at random instants, standalone tasks, opted-out hosts (from the start, and by
    /// an operator mid-rollout); and the edges of
    /// time: writes landing after a claim's TTL, agents down for longer than it (some crashing
    /// mid-drain), APIs failing and ECS agents reconnecting long after boot, describes lagging
    /// writes, tasks running on after being told to stop, and an operator's drain; and boots
    /// that leave the instance IMPAIRED for a while, so the health gate fails, holds and then
    /// finishes. Nothing permanent: the doomed hosts and bad releases have scenarios of their
    /// own.
    pub fn everything() -> FaultPlan {
        FaultPlan {
            rollback_chance: 0.05,
            clock_skew: Duration::from_secs(12),
            staleness: Duration::from_secs(8),
            throttle_every: 40,
            bucket_share: 0.0,
            crashes_per_host: 0.5,
            sigterms_per_host: 0.3,
            interruption_window: 6 * 3600 * Duration::from_secs(1),
            restart_delay: Span::new(Duration::from_secs(5), Duration::from_secs(90)),
            standalone_fraction: 0.05,
            opted_out_fraction: 0.05,
            slow_write_chance: 0.005,
            slow_write: Span::minutes(11, 12),
            long_restart_chance: 0.2,
            long_restart_delay: Span::minutes(15, 60),
            crash_mid_drain_fraction: 0.02,
            sigterm_mid_drain_fraction: 0.02,
            api_errors_chance: 0.03,
            api_errors_after_boot: Span::minutes(15, 40),
            late_reconnect_chance: 0.03,
            late_reconnect: Span::minutes(15, 40),
            status_lag: Duration::from_secs(8),
            stop_time: Span::minutes(0, 5),
            operator_drains: 1,
            operator_drain_for: Span::minutes(30, 90),
            late_opt_outs: 2,
            late_opt_out_within: 6 * 3600 * Duration::from_secs(1),
            doomed: vec![],
            bad_release: 0.0,
            impaired_chance: 0.03,
            impaired_for: Span::minutes(5, 30),
        }
    }
}

/// One rollout to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Drives every random choice of the run.
    pub seed: u64,
    /// How many hosts.
    pub hosts: usize,
    /// N: how many may update at once (`cluster.max-concurrent`).
    pub max_concurrent: u32,
    /// How long service tasks take to leave a draining instance.
    pub drain_time: Span,
    /// How long the download (prepare) takes, before the host asks for a slot.
    pub prepare_time: Span,
    /// How long a reboot keeps the host down.
    pub reboot_time: Span,
    /// How long after the boot the host's ECS agent reconnects (it is gone while the host is).
    pub ecs_agent_reconnect: Span,
    /// The check interval: the fleet's first checks spread over it by wave seed.
    pub check_interval: Duration,
    /// Every host checks at the same instant (one wave seed, no jitter): maximum contention.
    pub same_instant: bool,
    /// Wait between writing a claim and counting (`cluster.settle-time`).
    pub settle: Duration,
    /// The longest a waiting host sleeps between looks (`cluster.wait-poll-max`).
    pub wait_poll_max: Duration,
    /// How often an idle host looks for the update-now attribute (`maintenance.update-now-poll`).
    pub update_now_poll: Duration,
    /// How long each ECS call takes (sequential calls of one host spread out by it).
    pub ecs_latency: Duration,
    /// The least time between the starts of two of one agent's calls (`cluster.ecs-call-spacing`).
    pub ecs_call_spacing: Duration,
    /// The rule the count after settling applies (the unsafe one only to show it fails).
    pub rule: LeaseRule,
    /// What goes wrong.
    pub faults: FaultPlan,
    /// The run stops here even if hosts are still updating (they are then reported).
    pub time_limit: Duration,
    /// Maintenance windows every host uses (`None`: the agent's default, any time).
    pub maintenance: Option<agent::config::Maintenance>,
    /// `cluster.halt-after-failures`: 0 for a good release, whose random rollbacks and failed
    /// health gates stand for hardware-specific failures that must not stop the whole rollout;
    /// bad-release scenarios (and the sweep's bad-release seeds) set it.
    pub halt_after_failures: u32,
    /// `cluster.canary-hosts`: how many hosts take a new version one at a time before the
    /// limit widens to N (0: no canary).
    pub canary_hosts: u32,
    /// `health.on-failure`: what a host whose health gate or bake failed does.
    pub on_failure: OnFailure,
    /// Negative controls: the safety fixes every agent runs without (none by default).
    pub unsafe_off: UnsafeOff,
    /// Which tasks the cluster lists to the agents (the unsafe listing only to show it fails).
    pub task_listing: TaskListing,
    /// What each host's ECS agent shows of its tasks locally (a faithful view, as on a real
    /// host, lets drains be watched without ECS calls).
    pub local_task_view: LocalTaskView,
    /// Whether agents count DRAINING instances that no agent drained
    /// (`cluster.count-foreign-draining`).
    pub count_foreign_draining: bool,
    /// Check intervals the agents run before the update is published (at least 1): with 2,
    /// every host has checked, and published its status, before the rollout starts.
    pub warmup_intervals: u32,
    /// Per host, how many seconds its previous update held a slot, as its journal keeps it
    /// (empty: the hosts never updated before).
    pub previous_took: Vec<u64>,
}

/// The version every host runs at the start.
pub const FROM_VERSION: &str = "1.26.0";
/// The version published at t = 0.
pub const TARGET_VERSION: &str = "1.27.0";

impl Scenario {
    /// A fleet of `hosts` with realistic timings (drain 2-10 min, reboot 2-4 min, download
    /// 1-5 min before the drain, the ECS agent back 15-60 s after boot), first checks spread
    /// over one hour, the agent's default settings, no faults.
    pub fn realistic(hosts: usize, max_concurrent: u32, seed: u64) -> Scenario {
        let defaults = Config::default();
        Scenario {
            seed,
            hosts,
            max_concurrent,
            drain_time: Span::minutes(2, 10),
            prepare_time: Span::minutes(1, 5),
            reboot_time: Span::minutes(2, 4),
            ecs_agent_reconnect: Span::new(Duration::from_secs(15), Duration::from_secs(60)),
            check_interval: Duration::from_secs(3600),
            same_instant: false,
            settle: defaults.cluster.settle_time,
            wait_poll_max: defaults.cluster.wait_poll_max,
            update_now_poll: defaults.maintenance.update_now_poll,
            ecs_latency: Duration::ZERO,
            ecs_call_spacing: defaults.cluster.ecs_call_spacing,
            rule: LeaseRule::CountOthers,
            faults: FaultPlan::none(),
            time_limit: Duration::ZERO,
            maintenance: None,
            halt_after_failures: 0,
            canary_hosts: defaults.cluster.canary_hosts,
            on_failure: defaults.health.on_failure,
            unsafe_off: UnsafeOff::default(),
            task_listing: TaskListing::default(),
            local_task_view: LocalTaskView::Faithful,
            count_foreign_draining: defaults.cluster.count_foreign_draining,
            warmup_intervals: 1,
            previous_took: vec![],
        }
        .with_time_limit()
    }

    /// Sets the time limit to three times the expected makespan plus a day.
    pub fn with_time_limit(mut self) -> Scenario {
        self.time_limit = self.expected_makespan() * 3 + Duration::from_secs(86_400);
        self
    }

    /// The same fleet with every fault of [`FaultPlan::everything`]; by turns, the ECS agents
    /// show their tasks faithfully, show nothing (drains watched through ECS alone), or wrongly
    /// show no task at all (ECS's listing must still decide every drain's end).
    pub fn with_faults(hosts: usize, max_concurrent: u32, seed: u64) -> Scenario {
        let local_task_view = [LocalTaskView::Faithful, LocalTaskView::Off, LocalTaskView::Empty][(seed % 3) as usize];
        Scenario { faults: FaultPlan::everything(), local_task_view, ..Scenario::realistic(hosts, max_concurrent, seed) }
            .with_time_limit()
    }

    /// One run of the fault sweep: every fault of [`FaultPlan::everything`]; and one seed in
    /// four ships a release bad on 5% of the hosts under the agent's halt, after the first
    /// failure or the third by turns (a rolled-back boot counts as a failure too).
    pub fn sweep(hosts: usize, max_concurrent: u32, seed: u64) -> Scenario {
        let mut sc = Scenario::with_faults(hosts, max_concurrent, seed);
        if seed % 4 == 3 {
            sc.faults.bad_release = 0.05;
            sc.halt_after_failures = if seed % 8 == 3 { 1 } else { 3 };
        }
        sc
    }

    /// The same fleet with a new version that is bad on `fraction` of the hosts (1.0: on every
    /// host), and the agent's default halt: the first failure halts the version.
    pub fn bad_release(hosts: usize, max_concurrent: u32, seed: u64, fraction: f64) -> Scenario {
        let defaults = Config::default();
        let faults = FaultPlan { bad_release: fraction, ..FaultPlan::none() };
        Scenario { faults, halt_after_failures: defaults.cluster.halt_after_failures, ..Scenario::realistic(hosts, max_concurrent, seed) }
    }

    /// A rough upper estimate of the rollout's length, for sizing fault windows and limits.
    pub fn expected_makespan(&self) -> Duration {
        let slot = self.drain_time.mean() + self.reboot_time.mean() + 2 * MIN;
        let waves = self.hosts.div_ceil(self.max_concurrent.max(1) as usize) as u32;
        self.check_interval * self.warmup_intervals.max(1) + self.prepare_time.hi + slot * waves
    }

    /// The agent's configuration on every host of this scenario: the defaults, except what the
    /// scenario sets.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        let check_jitter = if self.same_instant { Duration::ZERO } else { defaults.check_jitter };
        let mut cfg = Config { check_interval: self.check_interval, check_jitter, ..defaults };
        if let Some(m) = &self.maintenance {
            cfg.maintenance = m.clone();
        }
        cfg.maintenance.update_now_poll = self.update_now_poll;
        let c = &mut cfg.cluster;
        c.max_concurrent = self.max_concurrent;
        c.halt_after_failures = self.halt_after_failures;
        c.canary_hosts = self.canary_hosts;
        c.settle_time = self.settle;
        c.wait_poll_max = self.wait_poll_max;
        c.ecs_call_spacing = self.ecs_call_spacing;
        c.count_foreign_draining = self.count_foreign_draining;
        // The allowance must cover the largest disagreement between two hosts' clocks.
        c.clock_skew = c.clock_skew.max(self.faults.clock_skew * 2);
        cfg.health.on_failure = self.on_failure;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_configs_follow_the_agents_config_rules() {
        // The doubled skew of the fault plans must still fit the renewal margin.
        for faults in [FaultPlan::none(), FaultPlan::everything(), FaultPlan { clock_skew: Duration::from_secs(15), ..FaultPlan::none() }] {
            let sc = Scenario { faults, ..Scenario::realistic(10, 2, 1) };
            let cfg = sc.config();
            assert!(cfg.cluster.clock_skew >= sc.faults.clock_skew * 2);
            if let Err(e) = cfg.validate() {
                panic!("{e}");
            }
        }
    }
}
