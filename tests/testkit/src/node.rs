//! One simulated host: the real agent code wired to an in-memory Bottlerocket host, an in-memory
//! ECS cluster, a virtual clock and an in-memory journal, plus the part systemd plays (stop the
//! agent with SIGTERM when the host reboots, boot the host, start the agent again).
//!
//! The host keeps a timestamped history of what happens outside ECS ([`Node::history`]: agent
//! starts, crashes and stops, reboot requests, boots), so a simulation can check afterwards when
//! each host was down. The daemon learns of a reboot request the instant the agent makes it
//! (through [`RecordingHost`]), so a fleet of idle hosts costs no polling.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use agent::backoff::Jitter;
use agent::clock::{Clock, VirtualClock, WallTime};
use agent::cluster::paced::Paced;
use agent::config::Config;
use agent::cycle::{Agent, Outcome};
use agent::journal::{Journal, MemoryJournal, Record};
use agent::lease::{LeaseRule, Names, UnsafeOff};
use agent::notify::{Notifier, Origin};
use agent::os_api::{Action, ActionReply, Commit, OsApi, OsApiError, OsInfo, StatusRead, UpdateSettings, UpdatesPatch};
use agent::shutdown::{Shutdown, Trigger};
use fake_bottlerocket::FakeHost;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fake_ecs::{FakeEcs, FakeEcsHost};

/// The agent type every simulated host runs.
pub type SimAgent = Agent<FakeHost, Paced<FakeEcsHost, VirtualClock>, VirtualClock, MemoryJournal>;

/// The agent type of a host whose reboot requests are recorded ([`Node::recorded_agent`]).
pub type RecordedAgent = Agent<RecordingHost, Paced<FakeEcsHost, VirtualClock>, VirtualClock, MemoryJournal>;

/// What happened to a host, outside its agent's ECS calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEventKind {
    /// systemd started an agent process.
    AgentStarted,
    /// The agent process died without warning (its future was dropped).
    AgentCrashed,
    /// The agent was sent SIGTERM (not for a reboot) and has stopped.
    AgentTerminated,
    /// The agent asked for a reboot and the host accepted.
    RebootRequested,
    /// The host came up, running `version`.
    Booted {
        /// The version it runs after the boot.
        version: String,
    },
    /// The host's API fails for this long from the boot just recorded (the plan's
    /// `api_errors_chance`).
    ApiFailingAfterBoot {
        /// How long.
        lasting: Duration,
    },
    /// The host's ECS agent reconnected after a boot.
    EcsAgentReconnected,
    /// The boot just recorded left the container instance IMPAIRED in ECS's health check, for
    /// this long (`None`: for good, the plan's `bad_release`).
    ImpairedAfterBoot {
        /// How long, if it clears.
        lasting: Option<Duration>,
    },
    /// ECS finds the container instance healthy again.
    HealthRecovered,
}

/// One entry of a host's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// When (tokio time).
    pub at: Instant,
    /// What.
    pub kind: NodeEventKind,
}

/// The host's Bottlerocket API as the agent sees it, noting each accepted reboot request in the
/// host's history and waking the daemon that plays systemd.
#[derive(Clone)]
pub struct RecordingHost {
    host: FakeHost,
    history: Rc<RefCell<Vec<NodeEvent>>>,
    reboots: Rc<watch::Sender<usize>>,
}

impl OsApi for RecordingHost {
    async fn os_info(&self) -> Result<OsInfo, OsApiError> {
        self.host.os_info().await
    }
    async fn update_settings(&self) -> Result<UpdateSettings, OsApiError> {
        self.host.update_settings().await
    }
    async fn update_status(&self) -> Result<StatusRead, OsApiError> {
        self.host.update_status().await
    }
    async fn patch_updates(&self, tx: &str, patch: &UpdatesPatch) -> Result<(), OsApiError> {
        self.host.patch_updates(tx, patch).await
    }
    async fn commit_and_apply(&self, tx: &str) -> Result<Commit, OsApiError> {
        self.host.commit_and_apply(tx).await
    }
    async fn action(&self, action: Action) -> Result<ActionReply, OsApiError> {
        let reply = self.host.action(action).await;
        if action == Action::Reboot && reply == Ok(ActionReply::Started) {
            self.history.borrow_mut().push(NodeEvent { at: Instant::now(), kind: NodeEventKind::RebootRequested });
            self.reboots.send_replace(self.host.reboot_requests());
        }
        reply
    }
}

/// A way an agent process stops other than a reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// kill -9: the process is gone mid-step; only the journal and ECS remain.
    Crash,
    /// SIGTERM: the agent stops at a safe point and undoes what it started.
    Terminate,
}

/// How systemd and the machine behave around one host's agent in [`Node::run_daemon_with`].
pub struct DaemonPlan {
    /// Each reboot takes a uniformly random time in this range.
    pub reboot_time: (Duration, Duration),
    /// The chance that a boot into a new version fails its one try and rolls back.
    pub rollback_chance: f64,
    /// When to interrupt the agent, oldest first; instants at which no agent runs are skipped.
    pub interruptions: VecDeque<(Instant, Interruption)>,
    /// How long systemd waits before starting the agent again after it stopped (not after boot).
    pub restart_delay: (Duration, Duration),
    /// Whether an agent that ends on its own is started again (systemd `Restart=always`).
    pub restart_on_exit: bool,
    /// The ECS agent on the host disconnects when the host goes down and reconnects this long
    /// after the boot (uniform in the range); zero leaves it connected throughout.
    pub ecs_agent_reconnect: (Duration, Duration),
    /// Draws reboot times, restart delays and rollbacks.
    pub rng: Jitter,
    /// The chance that a crash keeps the agent down for a delay drawn from `long_restart_delay`
    /// instead of `restart_delay`: an agent down for longer than its claim lives.
    pub long_restart_chance: f64,
    /// How long such a crash keeps the agent down (uniform in the range).
    pub long_restart_delay: (Duration, Duration),
    /// Whether systemd starts the agent again after a crash (false: it never comes back).
    pub restart_after_crash: bool,
    /// Interrupts the agent this way the first time its instance is seen DRAINING (looked at
    /// every [`DRAIN_LOOK`]): an agent that dies, or is stopped, mid-drain.
    pub on_first_drain: Option<Interruption>,
    /// The chance that a boot's ECS agent reconnects only after a delay drawn from
    /// `late_reconnect` instead of `ecs_agent_reconnect`.
    pub late_reconnect_chance: f64,
    /// How long after such a boot the ECS agent reconnects (uniform in the range).
    pub late_reconnect: (Duration, Duration),
    /// The chance that a boot's API fails for a while (a new version whose API server is broken
    /// until it recovers).
    pub api_errors_chance: f64,
    /// How long the API fails after such a boot (uniform in the range).
    pub api_errors_after_boot: (Duration, Duration),
    /// A version that is bad on this host: a boot into it leaves the container instance IMPAIRED
    /// for good (the release breaks something ECS's health check sees).
    pub bad_release: Option<String>,
    /// The chance that a boot leaves the container instance IMPAIRED for a while.
    pub impaired_chance: f64,
    /// How long such an impairment lasts (uniform in the range).
    pub impaired_for: (Duration, Duration),
}

/// How often a daemon with [`DaemonPlan::on_first_drain`] looks whether its instance is DRAINING.
pub const DRAIN_LOOK: Duration = Duration::from_secs(5);

impl DaemonPlan {
    /// Reboots of exactly `reboot_time`, no rollback, no interruption, no restart after an exit.
    pub fn fixed(reboot_time: Duration) -> DaemonPlan {
        DaemonPlan {
            reboot_time: (reboot_time, reboot_time),
            rollback_chance: 0.0,
            interruptions: VecDeque::new(),
            restart_delay: (Duration::ZERO, Duration::ZERO),
            restart_on_exit: false,
            ecs_agent_reconnect: (Duration::ZERO, Duration::ZERO),
            rng: Jitter::seeded(0),
            long_restart_chance: 0.0,
            long_restart_delay: (Duration::ZERO, Duration::ZERO),
            restart_after_crash: true,
            on_first_drain: None,
            late_reconnect_chance: 0.0,
            late_reconnect: (Duration::ZERO, Duration::ZERO),
            api_errors_chance: 0.0,
            api_errors_after_boot: (Duration::ZERO, Duration::ZERO),
            bad_release: None,
            impaired_chance: 0.0,
            impaired_for: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// The next interruption still ahead of `now`, dropping those already past.
    fn next_interruption(&mut self, now: Instant) -> Option<(Instant, Interruption)> {
        while self.interruptions.front().is_some_and(|(at, _)| *at < now) {
            self.interruptions.pop_front();
        }
        self.interruptions.front().copied()
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A simulated host and everything that survives its agent's restarts.
pub struct Node {
    /// A short name for logs.
    pub name: String,
    /// The Bottlerocket side.
    pub host: FakeHost,
    /// The ECS side (`None`: the agent runs standalone).
    pub ecs: Option<FakeEcsHost>,
    /// The container instance ARN (empty when standalone).
    pub arn: String,
    /// What survives reboots.
    pub journal: MemoryJournal,
    /// This host's clock (shared timeline, own skew).
    pub clock: VirtualClock,
    /// The agent's config.
    pub cfg: Config,
    /// Seed of this host's randomness; each agent start derives its own.
    pub seed: u64,
    /// Simulations only: the lease rule this host's agents apply instead of the configured one
    /// (to show that an unsafe rule fails); `None` runs the agent as configured.
    pub lease_rule: Option<LeaseRule>,
    /// Negative controls: the safety fixes this host's agents run without (none by default).
    pub unsafe_off: UnsafeOff,
    starts: std::cell::Cell<u64>,
    history: Rc<RefCell<Vec<NodeEvent>>>,
    reboots: Rc<watch::Sender<usize>>,
}

impl Node {
    /// A host `name` registered in `ecs` (or standalone), running `cfg`.
    pub fn new(name: &str, host: FakeHost, ecs: Option<&FakeEcs>, clock: VirtualClock, cfg: Config, seed: u64) -> Node {
        let (ecs, arn) = match ecs {
            Some(e) => {
                let arn = e.register(name);
                (Some(e.host(&arn)), arn)
            }
            None => (None, String::new()),
        };
        let reboots = Rc::new(watch::Sender::new(host.reboot_requests()));
        Node {
            name: name.into(),
            host,
            ecs,
            arn,
            journal: MemoryJournal::default(),
            clock,
            cfg,
            seed,
            lease_rule: None,
            unsafe_off: UnsafeOff::default(),
            starts: 0.into(),
            history: Rc::default(),
            reboots,
        }
    }

    /// A fresh agent process for this host, as systemd would start it.
    pub fn agent(&self, shutdown: Shutdown) -> SimAgent {
        self.agent_on(self.host.clone(), shutdown)
    }

    /// A fresh agent process whose reboot requests go into [`Node::history`] and wake
    /// [`Node::run_daemon_with`]; otherwise the same as [`Node::agent`].
    pub fn recorded_agent(&self, shutdown: Shutdown) -> RecordedAgent {
        let os = RecordingHost { host: self.host.clone(), history: self.history.clone(), reboots: self.reboots.clone() };
        self.agent_on(os, shutdown)
    }

    fn agent_on<O: OsApi>(&self, os: O, shutdown: Shutdown) -> Agent<O, Paced<FakeEcsHost, VirtualClock>, VirtualClock, MemoryJournal> {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        Agent {
            os,
            cluster: self.ecs.clone().map(|e| Paced::new(e, self.clock.clone(), self.cfg.cluster.ecs_call_spacing)),
            clock: self.clock.clone(),
            journal: self.journal.clone(),
            jitter: Jitter::seeded(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(n)),
            names: Names {
                rule_override: self.lease_rule,
                unsafe_off: self.unsafe_off,
                ..Names::new(&self.cfg.cluster.attribute_prefix)
            },
            cfg: self.cfg.clone(),
            shutdown,
            memory: Default::default(),
            notifier: Notifier::start(&self.cfg.notify, self.origin()),
        }
    }

    /// Who this host's webhook messages are about.
    fn origin(&self) -> Origin {
        match &self.ecs {
            Some(e) => Origin { cluster: Some(e.cluster().name()), instance: Some(self.arn.clone()) },
            None => Origin::default(),
        }
    }

    /// What happened to this host so far, oldest first.
    pub fn history(&self) -> Vec<NodeEvent> {
        self.history.borrow().clone()
    }

    fn note(&self, kind: NodeEventKind) {
        self.history.borrow_mut().push(NodeEvent { at: Instant::now(), kind });
    }

    /// How many times an agent was started on this host.
    pub fn starts(&self) -> u64 {
        self.starts.get()
    }

    /// The journal as stored.
    pub fn record(&self) -> Record {
        self.journal.load().unwrap_or_default()
    }

    /// Runs `--once` rounds, rebooting the host when the agent asks (after `reboot_time`), until
    /// a round ends without a reboot; returns every outcome in order.
    pub async fn run_once_through_reboots(&self, reboot_time: Duration, max_reboots: usize) -> Vec<Outcome> {
        let mut outcomes = vec![];
        for _ in 0..=max_reboots {
            let before = self.host.reboot_requests();
            let outcome = self.agent(Shutdown::never()).run(true).await;
            let rebooting = matches!(outcome, Outcome::Rebooting { .. });
            outcomes.push(outcome);
            if !rebooting || self.host.reboot_requests() == before {
                return outcomes;
            }
            self.clock.sleep(reboot_time).await;
            self.host.boot();
        }
        outcomes
    }

    /// Runs the agent as a daemon until `stop` fires, playing systemd: when the host is asked to
    /// reboot, SIGTERM the agent, wait `reboot_time`, boot the host and start a new agent.
    pub async fn run_daemon(&self, reboot_time: Duration, stop: Shutdown) {
        self.run_daemon_with(&mut DaemonPlan::fixed(reboot_time), stop).await;
    }

    /// Runs the agent as a daemon until `stop` fires, playing systemd and the machine as `plan`
    /// says: reboots when the agent asks (SIGTERM, down for a while, boot, new agent), crashes
    /// and SIGTERMs at the planned instants (then a new agent after the restart delay).
    pub async fn run_daemon_with(&self, plan: &mut DaemonPlan, stop: Shutdown) {
        let mut reboots = self.reboots.subscribe();
        let mut due = Due::default();
        while !stop.requested() {
            let before = *reboots.borrow_and_update();
            let next = self.supervise(plan, &stop, &mut reboots, &mut due).await;
            // However the agent ended, a reboot it asked for on the way out still happens.
            if *reboots.borrow() != before {
                self.reboot(plan, &mut due).await;
                continue;
            }
            let delay = match next {
                Next::Stop => return,
                Next::Ended if !plan.restart_on_exit => return,
                Next::Interrupted(Interruption::Crash) if !plan.restart_after_crash => {
                    // Never started again; only the stop of the whole run ends the wait.
                    self.wait_out(None, &stop, &mut due).await;
                    return;
                }
                Next::Interrupted(Interruption::Crash) if plan.chance(plan.long_restart_chance) => {
                    plan.rng.between(plan.long_restart_delay.0, plan.long_restart_delay.1)
                }
                Next::Ended | Next::Interrupted(_) => plan.rng.between(plan.restart_delay.0, plan.restart_delay.1),
                Next::Reboot => continue,
            };
            if !self.wait_out(Some(delay), &stop, &mut due).await {
                return;
            }
        }
    }

    /// Waits `delay` (forever: `None`) while no agent runs, doing what the machine does on its
    /// own when it is due; false when the run was stopped meanwhile.
    async fn wait_out(&self, delay: Option<Duration>, stop: &Shutdown, due: &mut Due) -> bool {
        let until = sleep_until_or_never(delay.map(|d| Instant::now() + d));
        tokio::pin!(until);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait() => return false,
                _ = &mut until => return true,
                _ = sleep_until_or_never(due.next()) => self.fire_due(due),
            }
        }
    }

    /// Does what is due by now: the ECS agent reconnects, an impairment clears.
    fn fire_due(&self, due: &mut Due) {
        let now = Instant::now();
        if due.reconnect.is_some_and(|at| at <= now) {
            self.set_ecs_agent_connected(true);
            self.note(NodeEventKind::EcsAgentReconnected);
            due.reconnect = None;
        }
        if due.heal.is_some_and(|at| at <= now) {
            self.set_health(Some("OK"));
            self.note(NodeEventKind::HealthRecovered);
            due.heal = None;
        }
    }

    /// Starts one agent process and waits for whatever ends it; meanwhile the machine does what
    /// is `due`.
    async fn supervise(
        &self,
        plan: &mut DaemonPlan,
        stop: &Shutdown,
        reboots: &mut watch::Receiver<usize>,
        due: &mut Due,
    ) -> Next {
        let (trigger, shutdown) = Shutdown::new();
        let agent = self.recorded_agent(shutdown);
        self.note(NodeEventKind::AgentStarted);
        let run = agent.run(false);
        tokio::pin!(run);
        let upcoming = plan.next_interruption(Instant::now());
        let interrupt_at = sleep_until_or_never(upcoming.map(|(at, _)| at));
        tokio::pin!(interrupt_at);
        let drain_seen = self.first_drain(plan.on_first_drain.is_some());
        tokio::pin!(drain_seen);
        let next = loop {
            let due_at = sleep_until_or_never(due.next());
            tokio::select! {
                biased;
                _ = stop.wait() => break Next::Stop,
                _ = reboots.changed() => break Next::Reboot,
                _ = &mut interrupt_at => {
                    plan.interruptions.pop_front();
                    break Next::Interrupted(upcoming.map_or(Interruption::Terminate, |(_, kind)| kind));
                }
                _ = &mut drain_seen => {
                    if let Some(kind) = plan.on_first_drain.take() {
                        break Next::Interrupted(kind);
                    }
                }
                _ = due_at => self.fire_due(due),
                _ = &mut run => return Next::Ended,
            }
        };
        match next {
            Next::Interrupted(Interruption::Crash) => self.note(NodeEventKind::AgentCrashed),
            Next::Interrupted(Interruption::Terminate) => {
                stop_agent(trigger, run).await;
                self.note(NodeEventKind::AgentTerminated);
            }
            _ => stop_agent(trigger, run).await,
        }
        next
    }

    /// Returns once this host's instance is DRAINING (looked at every [`DRAIN_LOOK`]); never
    /// when `watch` is false or the host runs without a cluster.
    async fn first_drain(&self, watch: bool) {
        let Some(ecs) = self.ecs.as_ref().filter(|_| watch) else { return std::future::pending().await };
        while ecs.cluster().status(&self.arn) != Some(agent::cluster::InstanceStatus::Draining) {
            tokio::time::sleep(DRAIN_LOOK).await;
        }
    }

    /// The host goes down (the agent has already stopped), stays down for the reboot time and
    /// boots, rolling back by the plan's chance; sets in `due` when its ECS agent will reconnect
    /// and when an impairment the boot brought clears.
    async fn reboot(&self, plan: &mut DaemonPlan, due: &mut Due) {
        let down = plan.rng.between(plan.reboot_time.0, plan.reboot_time.1);
        let rollback = plan.chance(plan.rollback_chance);
        let (lo, hi) = plan.ecs_agent_reconnect;
        let disconnects = !hi.is_zero();
        if disconnects {
            self.set_ecs_agent_connected(false);
        }
        self.clock.sleep(down).await;
        let api_errors = if plan.chance(plan.api_errors_chance) {
            plan.rng.between(plan.api_errors_after_boot.0, plan.api_errors_after_boot.1)
        } else {
            Duration::ZERO
        };
        if plan.rollback_chance > 0.0 || plan.api_errors_chance > 0.0 {
            let faults = fake_bottlerocket::Faults { rollback_on_boot: rollback, api_errors_after_boot: api_errors, ..self.host.faults() };
            self.host.set_faults(faults);
        }
        self.host.boot();
        self.note(NodeEventKind::Booted { version: self.host.running_version() });
        if !api_errors.is_zero() {
            self.note(NodeEventKind::ApiFailingAfterBoot { lasting: api_errors });
        }
        let (lo, hi) = if disconnects && plan.chance(plan.late_reconnect_chance) { plan.late_reconnect } else { (lo, hi) };
        due.reconnect = disconnects.then(|| Instant::now() + plan.rng.between(lo, hi));
        self.impair_after_boot(plan, due);
    }

    /// A boot into the plan's bad release leaves the instance IMPAIRED for good; any boot may,
    /// by the plan's chance, leave it IMPAIRED for a while. An impairment already under way
    /// runs on.
    fn impair_after_boot(&self, plan: &mut DaemonPlan, due: &mut Due) {
        let on_bad = plan.bad_release.as_deref() == Some(self.host.running_version().as_str());
        if due.forever && !on_bad {
            // The bad release's impairment goes with it: a boot back into a good version (a
            // rollback) comes up healthy.
            due.forever = false;
            self.set_health(Some("OK"));
            self.note(NodeEventKind::HealthRecovered);
        }
        let lasting = if on_bad {
            None
        } else if plan.chance(plan.impaired_chance) {
            Some(plan.rng.between(plan.impaired_for.0, plan.impaired_for.1))
        } else {
            return;
        };
        self.set_health(Some("IMPAIRED"));
        self.note(NodeEventKind::ImpairedAfterBoot { lasting });
        due.forever |= lasting.is_none();
        due.heal = match lasting {
            Some(d) if !due.forever => Some(due.heal.map_or(Instant::now() + d, |at| at.max(Instant::now() + d))),
            _ => None,
        };
    }

    fn set_ecs_agent_connected(&self, connected: bool) {
        if let Some(e) = &self.ecs {
            e.cluster().set_agent_connected(&self.arn, connected);
        }
    }

    fn set_health(&self, overall: Option<&str>) {
        if let Some(e) = &self.ecs {
            e.cluster().set_health(&self.arn, overall);
        }
    }

    /// The wall time on this host.
    pub fn now(&self) -> WallTime {
        self.clock.now()
    }
}

/// What the machine does on its own after a boot, and when.
#[derive(Clone, Copy, Debug, Default)]
struct Due {
    /// The ECS agent reconnects.
    reconnect: Option<Instant>,
    /// The instance's impairment clears.
    heal: Option<Instant>,
    /// An impairment for good came: none clears.
    forever: bool,
}

impl Due {
    /// The earliest of them.
    fn next(&self) -> Option<Instant> {
        match (self.reconnect, self.heal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What ended one agent process under [`Node::run_daemon_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// The daemon was told to stop.
    Stop,
    /// The agent asked for a reboot.
    Reboot,
    /// A planned crash or SIGTERM.
    Interrupted(Interruption),
    /// The agent returned on its own.
    Ended,
}

async fn stop_agent(trigger: Trigger, run: impl std::future::Future<Output = Outcome>) {
    trigger.fire();
    run.await;
}
