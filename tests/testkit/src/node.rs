//! One simulated host: the real agent code wired to an in-memory Bottlerocket host, an in-memory
//! ECS cluster, a virtual clock and an in-memory journal, plus the part systemd plays (stop the
//! agent with SIGTERM when the host reboots, boot the host, start the agent again).

use std::time::Duration;

use agent::backoff::Jitter;
use agent::clock::{Clock, VirtualClock, WallTime};
use agent::config::Config;
use agent::cycle::{Agent, Outcome};
use agent::journal::{Journal, MemoryJournal, Record};
use agent::lease::Names;
use agent::shutdown::{Shutdown, Trigger};
use fake_bottlerocket::FakeHost;

use crate::fake_ecs::{FakeEcs, FakeEcsHost};

/// The agent type every simulated host runs.
pub type SimAgent = Agent<FakeHost, FakeEcsHost, VirtualClock, MemoryJournal>;

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
    starts: std::cell::Cell<u64>,
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
        Node { name: name.into(), host, ecs, arn, journal: MemoryJournal::default(), clock, cfg, seed, starts: 0.into() }
    }

    /// A fresh agent process for this host, as systemd would start it.
    pub fn agent(&self, shutdown: Shutdown) -> SimAgent {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        Agent {
            os: self.host.clone(),
            cluster: self.ecs.clone(),
            clock: self.clock.clone(),
            journal: self.journal.clone(),
            jitter: Jitter::seeded(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(n)),
            names: Names::new(&self.cfg.cluster.attribute_prefix),
            cfg: self.cfg.clone(),
            shutdown,
        }
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
        loop {
            let (trigger, shutdown) = Shutdown::new();
            let before = self.host.reboot_requests();
            let agent = self.agent(shutdown);
            let run = agent.run(false);
            tokio::pin!(run);
            enum Next {
                Stop,
                Reboot,
                Ended,
            }
            let next = tokio::select! {
                biased;
                _ = stop.wait() => Next::Stop,
                _ = watch_reboot(&self.host, before, &self.clock) => Next::Reboot,
                _ = &mut run => Next::Ended,
            };
            match next {
                Next::Stop => {
                    trigger.fire();
                    run.await;
                    return;
                }
                // The agent ended on its own (it only does on shutdown); nothing left to do.
                Next::Ended => return,
                Next::Reboot => {}
            }
            stop_agent(trigger, run).await;
            self.clock.sleep(reboot_time).await;
            self.host.boot();
        }
    }

    /// The wall time on this host.
    pub fn now(&self) -> WallTime {
        self.clock.now()
    }
}

async fn watch_reboot(host: &FakeHost, before: usize, clock: &VirtualClock) {
    while host.reboot_requests() == before {
        clock.sleep(Duration::from_millis(500)).await;
    }
}

async fn stop_agent(trigger: Trigger, run: impl std::future::Future<Output = Outcome>) {
    trigger.fire();
    run.await;
}
