//! Runs one scenario: a fleet of [`Node`]s, each the real agent (`Agent::run`) against its own
//! in-memory host, all sharing one in-memory ECS cluster, on ONE current-thread tokio runtime
//! with paused time. Every host's future is driven by one `join_all`, so idle hosts cost nothing
//! and virtual days pass in wall-clock seconds.
//!
//! Determinism: one thread, paused time, every random draw from a generator seeded from the
//! scenario's seed (hosts, ECS faults, daemon plans), ordered maps only, `biased` selects. The
//! same seed gives the same trace ([`Trace::digest`]).

use std::collections::VecDeque;
use std::time::Duration;

use agent::backoff::Jitter;
use agent::clock::{VirtualClock, WallTime};
use agent::cluster::{InstanceStatus, SetStatus};
use agent::lease::Names;
use agent::shutdown::Shutdown;
use agent::fleet::source::InstanceRecord;
use agent::journal::{Journal, Record};
use agent::status::{short_id, Status};
use fake_bottlerocket::{CommandDurations, FakeHost, HostConfig, RebootBehavior};
use testkit::fake_ecs::{Actor, EcsChange, EcsFaults, FakeEcs};
use testkit::node::{DaemonPlan, Interruption, Node, NodeEventKind};
use tokio::time::Instant;

use crate::scenario::{Scenario, Span, FROM_VERSION, TARGET_VERSION};
use crate::trace::{names_instance, CallRecord, Doom, EcsRecord, EndState, HostPlan, HostTrace, Ms, Trace};

/// The wall time at t = 0: a whole hour, so check slots fall at their seed's place in the hour.
pub const EPOCH_SECS: i64 = 1_800_000_000;

/// How often the run looks whether every host is done.
const MONITOR_EVERY: Duration = Duration::from_secs(300);

/// How long every host that is not done must have been stuck, or waiting behind a stuck one,
/// before the run takes that as its end: longer than any slot, so a host that merely waits its
/// turn behind a stuck one and a healthy one is not taken for stalled.
const STUCK_SETTLES: Duration = Duration::from_secs(3600);

/// Longer than any run: what "never" means for a doomed host's ECS agent.
const NEVER: Duration = Duration::from_secs(365 * 86_400);

/// Why a run could not be carried out at all (not a finding about the agent).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The tokio runtime could not be built.
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The forecaster gave no forecast for the simulated cluster.
    #[error("the forecaster gave no forecast for the simulated cluster")]
    NoForecast,
}

/// A finished run: the recorded trace and how long it took on the wall clock.
#[derive(Clone, Debug)]
pub struct Run {
    /// The scenario it ran.
    pub scenario: Scenario,
    /// What it recorded.
    pub trace: Trace,
    /// Wall-clock time of the simulation.
    pub wall: Duration,
    /// Whether every host reached its end before the time limit.
    pub finished: bool,
    /// The cluster as `fleet status` would have read it at publication, before any host knew
    /// of the update.
    pub at_publication: Vec<InstanceRecord>,
}

/// Runs `scenario` on a fresh single-threaded runtime with paused time.
pub fn run(scenario: &Scenario) -> Result<Run, SimError> {
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    let (trace, finished, at_publication) = rt.block_on(simulate(scenario));
    Ok(Run { scenario: scenario.clone(), trace, wall: started.elapsed(), finished, at_publication })
}

/// What idle hosts cost: calls by operation over the measured days, and the settings.
#[derive(Clone, Debug)]
pub struct Idle {
    /// Calls over the measured days, by operation (all hosts).
    pub calls: std::collections::BTreeMap<&'static str, u64>,
    /// The most calls fleet-wide within any one second of the measured days.
    pub peak_per_s: u64,
    /// `refresh-updates` requests to the hosts' local API over the measured days (all hosts).
    pub refreshes: u64,
    /// The check interval the hosts used (the default).
    pub check_interval: Duration,
    /// How often they looked for the update-now attribute (the default).
    pub update_now_poll: Duration,
    /// Wall-clock time of the simulation.
    pub wall: Duration,
}

/// Runs `hosts` agents with the default configuration and nothing to update for a day of
/// warm-up and then `days` days, and counts their ECS calls and local refreshes over those days.
pub fn idle_cost(hosts: usize, seed: u64, days: u32) -> Result<Idle, SimError> {
    let started = std::time::Instant::now();
    let defaults = agent::config::Config::default();
    let sc = Scenario { check_interval: defaults.check_interval, update_now_poll: defaults.maintenance.update_now_poll, ..Scenario::realistic(hosts, 1, seed) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    let (calls, peak_per_s, refreshes) = rt.block_on(async {
        let t0 = Instant::now();
        let rng = Jitter::seeded(sc.seed);
        let ecs = FakeEcs::new("fleet", mix(sc.seed, 0xec5));
        ecs.set_faults(EcsFaults { latency: sc.ecs_latency, ..EcsFaults::default() });
        let built: Vec<SimHost> = (0..sc.hosts).map(|i| build_host(&sc, &ecs, &rng, i, false)).collect();
        let mut plans: Vec<DaemonPlan> = (0..sc.hosts).map(|i| daemon_plan(&sc, &built[i].plan, t0, i)).collect();
        let (trigger, stop) = Shutdown::new();
        let day = Duration::from_secs(86_400);
        let (from, to) = (t0 + day, t0 + day * (1 + days));
        let daemons = futures_util::future::join_all(built.iter().zip(plans.iter_mut()).map(|(h, plan)| {
            let boot = rng.up_to(sc.check_interval);
            let stop = stop.clone();
            async move {
                tokio::time::sleep(boot).await;
                h.node.run_daemon_with(plan, stop).await;
            }
        }));
        let timer = async {
            tokio::time::sleep_until(from).await;
            built.iter().for_each(|h| h.node.host.clear_requests());
            tokio::time::sleep_until(to).await;
            let refresh = |r: &String| r.as_str() == "POST /actions/refresh-updates";
            let refreshes: usize = built.iter().map(|h| h.node.host.requests().iter().filter(|r| refresh(r)).count()).sum();
            trigger.fire();
            refreshes as u64
        };
        let (_, refreshes) = tokio::join!(daemons, timer);
        let mut calls = std::collections::BTreeMap::new();
        let mut times = vec![];
        for c in ecs.call_log().into_iter().filter(|c| c.at >= from && c.at < to) {
            *calls.entry(c.op).or_default() += 1;
            times.push(c.at.duration_since(t0).as_millis() as Ms);
        }
        times.sort_unstable();
        (calls, crate::metrics::peak_within(&times, 1000), refreshes)
    });
    Ok(Idle { calls, peak_per_s, refreshes, check_interval: sc.check_interval, update_now_poll: sc.update_now_poll, wall: started.elapsed() })
}

/// One host as built for a run.
struct SimHost {
    node: Node,
    plan: HostPlan,
    skew_ms: i64,
}

async fn simulate(sc: &Scenario) -> (Trace, bool, Vec<InstanceRecord>) {
    let t0 = Instant::now();
    let rng = Jitter::seeded(sc.seed);
    let ecs = FakeEcs::new("fleet", mix(sc.seed, 0xec5));
    ecs.set_drain_time(sc.drain_time.lo, sc.drain_time.hi);
    let f = &sc.faults;
    ecs.set_stop_time(f.stop_time.lo, f.stop_time.hi);
    ecs.set_task_listing(sc.task_listing);
    ecs.set_local_task_view(sc.local_task_view);
    ecs.set_faults(EcsFaults {
        staleness: f.staleness,
        throttle_every: f.throttle_every,
        bucket_share: f.bucket_share,
        latency: sc.ecs_latency,
        slow_write_chance: f.slow_write_chance,
        slow_write: f.slow_write.lo,
        slow_write_spread: f.slow_write.hi.saturating_sub(f.slow_write.lo),
        status_lag: f.status_lag,
        ..EcsFaults::default()
    });
    let bad = bad_release_hosts(sc);
    let hosts: Vec<SimHost> = (0..sc.hosts).map(|i| build_host(sc, &ecs, &rng, i, bad.contains(&i))).collect();
    let published = t0 + sc.check_interval * sc.warmup_intervals.max(1);
    let mut plans: Vec<DaemonPlan> = (0..sc.hosts).map(|i| daemon_plan(sc, &hosts[i].plan, published, i)).collect();
    let (trigger, stop) = Shutdown::new();
    // The agents have been running for a while when the update comes out: they start at random
    // instants of the first check interval, and the update is published at its end.
    let daemons = futures_util::future::join_all(hosts.iter().zip(plans.iter_mut()).map(|(h, plan)| {
        let boot = rng.up_to(sc.check_interval);
        let stop = stop.clone();
        async move {
            tokio::time::sleep(boot).await;
            h.node.run_daemon_with(plan, stop).await;
        }
    }));
    let snapshot = std::cell::RefCell::new(vec![]);
    let publisher = async {
        tokio::time::sleep_until(published).await;
        *snapshot.borrow_mut() = hosts.iter().map(|h| describe(&ecs, h)).collect();
        for h in &hosts {
            h.node.host.publish([FROM_VERSION, TARGET_VERSION]);
        }
    };
    let monitor = async {
        publisher.await;
        let finished = monitor(sc, &ecs, &hosts, published).await;
        // How the rollout left each host, before the agents write how they were stopped.
        let left = Left { at: Instant::now(), statuses: hosts.iter().map(|h| status_attribute(&ecs, h)).collect() };
        trigger.fire();
        (finished, left)
    };
    let operators = operator_drains(sc, &ecs, &hosts, t0, published, stop.clone());
    let opt_outs = operator_opt_outs(sc, &ecs, &hosts, published, stop.clone());
    let (_, (finished, left), (), ()) = tokio::join!(daemons, monitor, operators, opt_outs);
    (record(sc, &ecs, &hosts, t0, published, left), finished, snapshot.take())
}

/// One instance as DescribeContainerInstances shows it: status and the agent's attributes.
fn describe(ecs: &FakeEcs, h: &SimHost) -> InstanceRecord {
    let names = Names::new(&h.node.cfg.cluster.attribute_prefix);
    let attributes = [&names.status, &names.lease, &names.drained, &names.opt_out, &names.update_now, &names.failed]
        .into_iter()
        .filter_map(|n| ecs.attribute(&h.node.arn, n).map(|v| (n.clone(), Some(v))))
        .collect();
    let status = match ecs.status(&h.node.arn) {
        Some(InstanceStatus::Active) => "ACTIVE".to_owned(),
        Some(InstanceStatus::Draining) => "DRAINING".to_owned(),
        Some(InstanceStatus::Other(s)) => s,
        None => "MISSING".to_owned(),
    };
    InstanceRecord { arn: h.node.arn.clone(), ec2_instance_id: Some(h.node.name.clone()), status, agent_connected: true, attributes }
}

/// The run as the rollout left it, when the monitor told it to stop.
struct Left {
    /// When.
    at: Instant,
    /// Each host's status attribute then.
    statuses: Vec<Option<String>>,
}

/// An operator drains `operator_drains` instances (no agent's doing) at random instants before
/// publication and sets each ACTIVE again a while after it.
async fn operator_drains(sc: &Scenario, ecs: &FakeEcs, hosts: &[SimHost], t0: Instant, published: Instant, stop: Shutdown) {
    let f = &sc.faults;
    if f.operator_drains == 0 || hosts.is_empty() {
        return;
    }
    let rng = Jitter::seeded(mix(sc.seed, 0x0d7a));
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < f.operator_drains.min(hosts.len()) {
        chosen.insert((rng.next_u64() % hosts.len() as u64) as usize);
    }
    let drains = chosen.into_iter().map(|i| {
        let (from, until) = (t0 + rng.up_to(published - t0), published + draw(&rng, f.operator_drain_for));
        let (arn, stop) = (hosts[i].node.arn.clone(), stop.clone());
        async move {
            tokio::time::sleep_until(from).await;
            ecs.operator_update_state(&arn, SetStatus::Draining);
            tokio::select! {
                biased;
                _ = stop.wait() => {}
                _ = tokio::time::sleep_until(until) => ecs.operator_update_state(&arn, SetStatus::Active),
            }
        }
    });
    futures_util::future::join_all(drains).await;
}

/// An operator opts out `late_opt_outs` hosts at random instants of the rollout's first
/// `late_opt_out_within` (hosts already opted out from the start are not chosen again).
async fn operator_opt_outs(sc: &Scenario, ecs: &FakeEcs, hosts: &[SimHost], published: Instant, stop: Shutdown) {
    let f = &sc.faults;
    let candidates: Vec<usize> = (0..hosts.len()).filter(|&i| !hosts[i].plan.opted_out).collect();
    if f.late_opt_outs == 0 || candidates.is_empty() {
        return;
    }
    let rng = Jitter::seeded(mix(sc.seed, 0x0b70));
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < f.late_opt_outs.min(candidates.len()) {
        chosen.insert(candidates[(rng.next_u64() % candidates.len() as u64) as usize]);
    }
    let opt_outs = chosen.into_iter().map(|i| {
        let at = published + rng.up_to(f.late_opt_out_within);
        let (arn, name, stop) = (hosts[i].node.arn.clone(), Names::new(&hosts[i].node.cfg.cluster.attribute_prefix).opt_out, stop.clone());
        async move {
            tokio::select! {
                biased;
                _ = stop.wait() => {}
                _ = tokio::time::sleep_until(at) => ecs.operator_put(&arn, &name, "true"),
            }
        }
    });
    futures_util::future::join_all(opt_outs).await;
}

/// How long after an opt-out a host may still claim: its agent reads the flags again before a
/// claim once they are [`agent::cycle::FLAGS_RECHECK`] old; a minute for the look that claims
/// (its calls are spaced, its retries back off), and the slowest write the scenario injects.
fn opt_out_grace(sc: &Scenario) -> Ms {
    let slow = if sc.faults.slow_write_chance > 0.0 { sc.faults.slow_write.hi } else { Duration::ZERO };
    (agent::cycle::FLAGS_RECHECK + Duration::from_secs(60) + slow).as_millis() as Ms
}

/// The hosts on which the new version is bad: exactly the scenario's fraction of the fleet,
/// rounded, drawn from a stream of their own so the rest of the run is drawn as without them
/// (the peer models take the same hosts).
pub fn bad_release_hosts(sc: &Scenario) -> std::collections::BTreeSet<usize> {
    let want = ((sc.faults.bad_release.clamp(0.0, 1.0) * sc.hosts as f64).round() as usize).min(sc.hosts);
    if want == sc.hosts {
        return (0..sc.hosts).collect();
    }
    let rng = Jitter::seeded(mix(sc.seed, 0xbad));
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < want {
        chosen.insert((rng.next_u64() % sc.hosts as u64) as usize);
    }
    chosen
}

/// A host, its instance registered with its tasks and attributes, its clock skewed; `bad`: the
/// new version is bad on it.
fn build_host(sc: &Scenario, ecs: &FakeEcs, rng: &Jitter, i: usize, bad: bool) -> SimHost {
    let f = &sc.faults;
    let skew_ms = if f.clock_skew.is_zero() {
        0
    } else {
        rng.between(Duration::ZERO, f.clock_skew * 2).as_millis() as i64 - f.clock_skew.as_millis() as i64
    };
    let doom = f.doomed.iter().find(|(h, _)| *h == i).map(|(_, d)| *d).or(bad.then_some(Doom::BadRelease));
    let plan = HostPlan { opted_out: chance(rng, f.opted_out_fraction), standalone: chance(rng, f.standalone_fraction), doom };
    let wave_seed = if sc.same_instant { 0 } else { (rng.next_u64() % 2048) as u32 };
    let host = FakeHost::new(HostConfig {
        version: FROM_VERSION.into(),
        published: vec![FROM_VERSION.into()],
        seed: wave_seed,
        durations: CommandDurations {
            refresh: Duration::from_secs(3),
            prepare: draw(rng, sc.prepare_time),
            activate: Duration::from_secs(2),
            deactivate: Duration::from_secs(2),
        },
        reboot: RebootBehavior::GoDown,
        wall_clock_start: chrono_start(),
        ..HostConfig::default()
    });
    let clock = VirtualClock::new(WallTime::from_secs(EPOCH_SECS), skew_ms);
    let name = format!("h{i:04}");
    let mut node = Node::new(&name, host, Some(ecs), clock, sc.config(), mix(sc.seed, i as u64 + 1));
    node.lease_rule = Some(sc.rule);
    node.unsafe_off = sc.unsafe_off;
    ecs.add_tasks(&node.arn, Some("ecs-svc/web"), 3);
    if plan.standalone {
        ecs.add_tasks(&node.arn, Some("events-rule/nightly-report"), 1);
    }
    if let Some(&took) = sc.previous_took.get(i) {
        // What the host's last update left in its journal, before this run's agent starts.
        let _ = node.journal.store(&Record { last_took: Some(took), ..Record::default() });
    }
    if plan.opted_out {
        let names = Names::new(&node.cfg.cluster.attribute_prefix);
        ecs.operator_put(&node.arn, &names.opt_out, "true");
    }
    SimHost { node, plan, skew_ms }
}

/// How systemd and the machine treat host `i`: reboot times, rollbacks, crashes, SIGTERMs
/// (at instants after `t0`, or mid-drain), long outages, and its doom if it has one.
fn daemon_plan(sc: &Scenario, host: &HostPlan, t0: Instant, i: usize) -> DaemonPlan {
    let f = &sc.faults;
    let rng = Jitter::seeded(mix(sc.seed, 0xdae0_0000 + i as u64));
    let mut interruptions: Vec<(Instant, Interruption)> = vec![];
    for (mean, kind) in [(f.crashes_per_host, Interruption::Crash), (f.sigterms_per_host, Interruption::Terminate)] {
        for _ in 0..count(&rng, mean) {
            interruptions.push((t0 + rng.up_to(f.interruption_window), kind));
        }
    }
    interruptions.sort_by_key(|(at, _)| *at);
    let on_first_drain = if chance(&rng, f.crash_mid_drain_fraction) {
        Some(Interruption::Crash)
    } else if chance(&rng, f.sigterm_mid_drain_fraction) {
        Some(Interruption::Terminate)
    } else {
        None
    };
    let mut plan = DaemonPlan {
        reboot_time: (sc.reboot_time.lo, sc.reboot_time.hi),
        rollback_chance: f.rollback_chance,
        interruptions: VecDeque::from(interruptions),
        restart_delay: (f.restart_delay.lo, f.restart_delay.hi),
        restart_on_exit: true,
        ecs_agent_reconnect: (sc.ecs_agent_reconnect.lo, sc.ecs_agent_reconnect.hi),
        rng,
        long_restart_chance: f.long_restart_chance,
        long_restart_delay: (f.long_restart_delay.lo, f.long_restart_delay.hi),
        restart_after_crash: true,
        on_first_drain,
        late_reconnect_chance: f.late_reconnect_chance,
        late_reconnect: (f.late_reconnect.lo, f.late_reconnect.hi),
        api_errors_chance: f.api_errors_chance,
        api_errors_after_boot: (f.api_errors_after_boot.lo, f.api_errors_after_boot.hi),
        bad_release: None,
        impaired_chance: f.impaired_chance,
        impaired_for: (f.impaired_for.lo, f.impaired_for.hi),
    };
    match host.doom {
        Some(Doom::AgentNeverReturns) => {
            plan.on_first_drain = Some(Interruption::Crash);
            plan.restart_after_crash = false;
        }
        Some(Doom::EcsAgentNeverReconnects) => {
            plan.late_reconnect_chance = 1.0;
            plan.late_reconnect = (NEVER, NEVER);
        }
        Some(Doom::BadRelease) => plan.bad_release = Some(TARGET_VERSION.into()),
        None => {}
    }
    plan
}

/// Waits until every host is done, or every host not done has been stuck or waiting behind a
/// stuck one for [`STUCK_SETTLES`] (or the time limit after `t0`); true unless the time limit
/// ended it.
async fn monitor(sc: &Scenario, ecs: &FakeEcs, hosts: &[SimHost], t0: Instant) -> bool {
    let mut pending: Vec<usize> = (0..hosts.len()).collect();
    let mut stuck_since: Option<Instant> = None;
    loop {
        pending.retain(|&i| !is_done(ecs, &hosts[i]));
        if pending.is_empty() {
            // A host done earlier may have started another round since (a signal can then leave
            // it undone): look at every host again before calling the rollout over.
            pending = (0..hosts.len()).filter(|&i| !is_done(ecs, &hosts[i])).collect();
            if pending.is_empty() {
                return true;
            }
        }
        let stuck: Vec<&str> = pending.iter().filter(|&&i| is_stuck(ecs, &hosts[i])).map(|&i| short_id(&hosts[i].node.arn)).collect();
        let behind = |i: usize| waits_behind(ecs, &hosts[i], &stuck);
        let settled = !stuck.is_empty() && pending.iter().all(|&i| is_stuck(ecs, &hosts[i]) || behind(i));
        stuck_since = if settled { stuck_since.or(Some(Instant::now())) } else { None };
        if stuck_since.is_some_and(|since| since.elapsed() >= STUCK_SETTLES) {
            let undone: Vec<usize> = (0..hosts.len()).filter(|i| !pending.contains(i) && !is_done(ecs, &hosts[*i])).collect();
            if undone.is_empty() {
                return true;
            }
            pending.extend(undone);
            stuck_since = None;
        }
        if Instant::now().duration_since(t0) >= sc.time_limit {
            return false;
        }
        tokio::time::sleep(MONITOR_EVERY).await;
    }
}

/// Whether a doomed host is stuck as its doom says: its agent gone for good after a crash, or
/// holding its slot after the update's boot (its ECS agent away, or the bad release's
/// impairment failing its health gate).
fn is_stuck(ecs: &FakeEcs, h: &SimHost) -> bool {
    match h.plan.doom {
        Some(Doom::AgentNeverReturns) => {
            h.node.history().iter().rev().find(|e| matches!(e.kind, NodeEventKind::AgentStarted | NodeEventKind::AgentCrashed)).is_some_and(|e| e.kind == NodeEventKind::AgentCrashed)
        }
        Some(Doom::EcsAgentNeverReconnects | Doom::BadRelease) => status_now(ecs, h).is_some_and(|s| s.phase == "held"),
        None => false,
    }
}

/// Whether a host waits for a slot, naming one of the `stuck` instances among the holders.
fn waits_behind(ecs: &FakeEcs, h: &SimHost, stuck: &[&str]) -> bool {
    status_now(ecs, h).is_some_and(|s| s.phase == "waiting" && stuck.iter().any(|id| names_instance(&s.detail, id)))
}

fn status_now(ecs: &FakeEcs, h: &SimHost) -> Option<Status> {
    Status::parse(&status_attribute(ecs, h)?)
}

fn status_attribute(ecs: &FakeEcs, h: &SimHost) -> Option<String> {
    ecs.attribute(&h.node.arn, &Names::new(&h.node.cfg.cluster.attribute_prefix).status)
}

/// Whether a host reached its end: on the target with nothing in flight, or parked for a
/// reason the scenario expects (opted out, rolled back, standalone tasks).
fn is_done(ecs: &FakeEcs, h: &SimHost) -> bool {
    let record = h.node.record();
    if record.in_flight.is_some() {
        return false;
    }
    if h.node.host.running_version() == TARGET_VERSION {
        return true;
    }
    if record.last_result.as_deref() == Some("rolled-back") || record.quarantine.iter().any(|q| q.version == TARGET_VERSION) {
        return true;
    }
    let token = status_now(ecs, h).map(|s| s.result);
    match token.as_deref() {
        // From the start, or by an operator while the rollout ran.
        Some("opted-out") => h.plan.opted_out || ecs.attribute(&h.node.arn, &Names::new(&h.node.cfg.cluster.attribute_prefix).opt_out).is_some(),
        Some("halted") => true,
        Some(t) if t.starts_with("skipped") => h.plan.standalone,
        _ => false,
    }
}

/// Turns the fakes' histories into a trace; the rollout left the hosts as `left` says.
fn record(sc: &Scenario, ecs: &FakeEcs, hosts: &[SimHost], t0: Instant, published: Instant, left: Left) -> Trace {
    let ms = |at: Instant| at.saturating_duration_since(t0).as_millis() as Ms;
    let names = Names::new(&sc.config().cluster.attribute_prefix);
    let history = ecs.history();
    let index: std::collections::BTreeMap<&str, usize> =
        hosts.iter().enumerate().map(|(i, h)| (h.node.arn.as_str(), i)).collect();
    let host_of = |arn: &str| index.get(arn).copied();
    let mut last_status_by: Vec<Option<Actor>> = vec![None; hosts.len()];
    let ecs_records: Vec<EcsRecord> = history
        .into_iter()
        .filter_map(|e| {
            let host = host_of(&e.instance)?;
            if matches!(e.change, EcsChange::Status(_)) {
                last_status_by[host] = Some(e.by);
            }
            Some(EcsRecord { at: ms(e.at), host, by: e.by, change: e.change })
        })
        .collect();
    let calls = ecs
        .call_log()
        .into_iter()
        .filter_map(|c| Some(CallRecord { at: ms(c.at), host: host_of(&c.instance)?, op: c.op }))
        .collect();
    let host_traces = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let record = h.node.record();
            let end = EndState {
                running: h.node.host.running_version(),
                status: ecs.status(&h.node.arn).unwrap_or(InstanceStatus::Other("MISSING".into())),
                status_by: last_status_by[i],
                claim: ecs.attribute(&h.node.arn, &names.lease),
                marker: ecs.attribute(&h.node.arn, &names.drained),
                status_attribute: left.statuses[i].clone(),
                last_result: record.last_result.clone(),
                in_flight: record.in_flight.is_some(),
                quarantined: record.quarantine.iter().map(|q| q.version.clone()).collect(),
            };
            HostTrace {
                name: h.node.name.clone(),
                instance: short_id(&h.node.arn).to_string(),
                skew_ms: h.skew_ms,
                plan: h.plan,
                events: h.node.history().into_iter().map(|e| (ms(e.at), e.kind)).collect(),
                end,
            }
        })
        .collect();
    Trace {
        max_concurrent: sc.max_concurrent,
        target: TARGET_VERSION.into(),
        lease_name: names.lease,
        opt_out_name: names.opt_out,
        opt_out_grace: opt_out_grace(sc),
        epoch_ms: EPOCH_SECS * 1000,
        published: ms(published),
        stopped: ms(left.at),
        end: ms(Instant::now()),
        lease_ttl: sc.config().cluster.lease_ttl.as_millis() as Ms,
        ecs_faults: ecs.fault_tally(),
        hosts: host_traces,
        ecs: ecs_records,
        calls,
    }
}

/// A seed for one part of the run, distinct per `part` and well mixed (SplitMix64).
pub fn mix(seed: u64, part: u64) -> u64 {
    let mut z = seed ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn draw(rng: &Jitter, span: Span) -> Duration {
    rng.between(span.lo, span.hi)
}

/// True with probability `p`.
fn chance(rng: &Jitter, p: f64) -> bool {
    p > 0.0 && ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
}

/// A whole number with mean `mean`: its integer part, plus one with the fractional part's chance.
fn count(rng: &Jitter, mean: f64) -> u64 {
    let whole = mean.floor();
    whole as u64 + u64::from(chance(rng, mean - whole))
}

/// The fake hosts' wall clock at t = 0 (command timestamps), fixed so runs replay exactly.
fn chrono_start() -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(EPOCH_SECS, 0)
}
