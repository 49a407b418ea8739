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
use agent::config::Config;
use agent::cycle::{Agent, Outcome};
use agent::journal::{Journal, MemoryJournal, Record};
use agent::lease::{LeaseRule, Names, UnsafeOff};
use agent::os_api::{Action, ActionReply, OsApi, OsApiError, OsInfo, StatusRead, UpdateSettings};
use agent::shutdown::{Shutdown, Trigger};
use fake_bottlerocket::FakeHost;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fake_ecs::{FakeEcs, FakeEcsHost};

/// The agent type every simulated host runs.
pub type SimAgent = Agent<FakeHost, FakeEcsHost, VirtualClock, MemoryJournal>;

/// The agent type of a host whose reboot requests are recorded ([`Node::recorded_agent`]).
pub type RecordedAgent = Agent<RecordingHost, FakeEcsHost, VirtualClock, MemoryJournal>;

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
}

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

    fn agent_on<O: OsApi>(&self, os: O, shutdown: Shutdown) -> Agent<O, FakeEcsHost, VirtualClock, MemoryJournal> {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        Agent {
            os,
            cluster: self.ecs.clone(),
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
        let mut reconnect = None;
        while !stop.requested() {
            let before = *reboots.borrow_and_update();
            let next = self.supervise(plan, &stop, &mut reboots, &mut reconnect).await;
            // However the agent ended, a reboot it asked for on the way out still happens.
            if *reboots.borrow() != before {
                reconnect = self.reboot(plan).await;
                continue;
            }
            match next {
                Next::Stop => return,
                Next::Ended if !plan.restart_on_exit => return,
                Next::Ended | Next::Interrupted => {
                    let delay = plan.rng.between(plan.restart_delay.0, plan.restart_delay.1);
                    tokio::select! {
                        biased;
                        _ = stop.wait() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Next::Reboot => {}
            }
        }
    }

    /// Starts one agent process and waits for whatever ends it; meanwhile the host's ECS agent
    /// reconnects at `reconnect`, if it is due to.
    async fn supervise(
        &self,
        plan: &mut DaemonPlan,
        stop: &Shutdown,
        reboots: &mut watch::Receiver<usize>,
        reconnect: &mut Option<Instant>,
    ) -> Next {
        let (trigger, shutdown) = Shutdown::new();
        let agent = self.recorded_agent(shutdown);
        self.note(NodeEventKind::AgentStarted);
        let run = agent.run(false);
        tokio::pin!(run);
        let upcoming = plan.next_interruption(Instant::now());
        let interrupt_at = sleep_until_or_never(upcoming.map(|(at, _)| at));
        tokio::pin!(interrupt_at);
        let next = loop {
            let reconnect_at = sleep_until_or_never(*reconnect);
            tokio::select! {
                biased;
                _ = stop.wait() => break Next::Stop,
                _ = reboots.changed() => break Next::Reboot,
                _ = &mut interrupt_at => break Next::Interrupted,
                _ = reconnect_at => {
                    self.set_ecs_agent_connected(true);
                    *reconnect = None;
                }
                _ = &mut run => return Next::Ended,
            }
        };
        match (next, upcoming) {
            (Next::Interrupted, Some((_, Interruption::Crash))) => {
                plan.interruptions.pop_front();
                self.note(NodeEventKind::AgentCrashed);
            }
            (Next::Interrupted, _) => {
                plan.interruptions.pop_front();
                stop_agent(trigger, run).await;
                self.note(NodeEventKind::AgentTerminated);
            }
            _ => stop_agent(trigger, run).await,
        }
        next
    }

    /// The host goes down (the agent has already stopped), stays down for the reboot time and
    /// boots, rolling back by the plan's chance; returns when its ECS agent will reconnect.
    async fn reboot(&self, plan: &mut DaemonPlan) -> Option<Instant> {
        let down = plan.rng.between(plan.reboot_time.0, plan.reboot_time.1);
        let rollback = plan.chance(plan.rollback_chance);
        let (lo, hi) = plan.ecs_agent_reconnect;
        let disconnects = !hi.is_zero();
        if disconnects {
            self.set_ecs_agent_connected(false);
        }
        self.clock.sleep(down).await;
        if plan.rollback_chance > 0.0 {
            self.host.set_faults(fake_bottlerocket::Faults { rollback_on_boot: rollback, ..self.host.faults() });
        }
        self.host.boot();
        self.note(NodeEventKind::Booted { version: self.host.running_version() });
        disconnects.then(|| Instant::now() + plan.rng.between(lo, hi))
    }

    fn set_ecs_agent_connected(&self, connected: bool) {
        if let Some(e) = &self.ecs {
            e.cluster().set_agent_connected(&self.arn, connected);
        }
    }

    /// The wall time on this host.
    pub fn now(&self) -> WallTime {
        self.clock.now()
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
    Interrupted,
    /// The agent returned on its own.
    Ended,
}

async fn stop_agent(trigger: Trigger, run: impl std::future::Future<Output = Outcome>) {
    trigger.fire();
    run.await;
}
