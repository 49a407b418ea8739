//! A fleet of hosts as real processes around one patched moto ECS server: per host a
//! `fake-bottlerocket` on its own socket, a [`FakeIntrospection`] naming the host's container
//! instance, and `br-update-agent` processes with their own config and state directory.
//!
//! [`Fleet::run_until`] plays systemd while a test waits: when a fake host goes down for the
//! reboot its agent asked for (held down by [`Boot::Gated`]), the agent gets SIGTERM and must exit
//! 0, the host boots, and a new agent process starts. A [`Watch`] thread reads the harness state
//! and every fake host all along and keeps the worst it saw: the most instances DRAINING or
//! rebooting at once, the most live confirmed claims, and per host whether it was ever drained or
//! ever claimed a slot. A [`BootHook`] lets a test change the world between a boot and the agent
//! started after it (ECS finding the booted version's instance impaired, say).
//!
//! Every child is killed on drop. Timeouts are safety nets; nothing here asserts a duration.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::clock::{Clock, SystemClock, WallTime};
use agent::lease::{Claim, ClaimPhase, Names};
use fake_bottlerocket::{FaultsPatch, HostSnapshot};
use serde_json::Value;
use tempfile::TempDir;

use crate::introspection::{Answer, FakeIntrospection};
use crate::moto::{Calls, Faults, LoggedCall, MotoServer, Seeded, REGION};
use crate::process::{binary, run_agent_with_env, AgentConfig, Boot, FakeHostProcess, Finished, ProcessError, AGENT_BIN};

/// The attribute prefix every agent of the fleet uses (the default).
pub const PREFIX: &str = "br-update";
/// The clock skew the agents allow for, and the monitor with them.
pub const SKEW: Duration = Duration::from_secs(1);
/// The agents' ECS call spacing, scaled down like the other timings (500 ms by default against a
/// 15 s drain poll; these tests poll every 500 ms).
pub const SPACING: Duration = Duration::from_millis(20);
/// How long an agent may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a released host may take to boot and answer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two supervision rounds, and between two monitor samples.
const TICK: Duration = Duration::from_millis(100);
/// Log lines of each agent shown in a failure.
const TAIL_LINES: usize = 40;
/// How long one `br-update-agent fleet ...` command may take.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(60);

/// What to build: the fleet's size, its limit and its timings.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// The ECS cluster name.
    pub cluster: String,
    /// How many hosts.
    pub hosts: usize,
    /// `[cluster] max-concurrent`.
    pub max_concurrent: u32,
    /// `[cluster] lease-ttl`, as the config writes it.
    pub lease_ttl: String,
    /// How long after DRAINING the service tasks stop.
    pub drain_delay: Duration,
    /// Service tasks (`ecs-svc/...`) started on every instance.
    pub service_tasks: usize,
    /// The version every host runs at start.
    pub from: String,
    /// The version every host's update repository publishes.
    pub to: String,
    /// Extra `fake-bottlerocket` arguments for some hosts, by index (faults such as
    /// `--api-errors-after-boot 25s`).
    pub fake_args: BTreeMap<usize, Vec<String>>,
    /// Agent settings for every host on top of the fleet's own, as `key` (`table.name`) and
    /// TOML literal, e.g. `("health.on-failure", "\"return\"")`.
    pub agent_settings: Vec<(String, String)>,
}

impl FleetSpec {
    /// `hosts` hosts in `cluster`, two at a time, 1.0.0 to 1.1.0, a 1.5 s drain, 30 s claims.
    pub fn new(cluster: &str, hosts: usize) -> FleetSpec {
        FleetSpec {
            cluster: cluster.to_owned(),
            hosts,
            max_concurrent: 2,
            lease_ttl: "30s".into(),
            drain_delay: Duration::from_millis(1500),
            service_tasks: 2,
            from: "1.0.0".into(),
            to: "1.1.0".into(),
            fake_args: BTreeMap::new(),
            agent_settings: Vec::new(),
        }
    }
}

/// One host as the fleet sees it at one moment (ECS side from the harness, host side from the
/// fake host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    /// Its container instance ARN.
    pub arn: String,
    /// ACTIVE, DRAINING, ...
    pub status: String,
    /// `<prefix>.lease`.
    pub lease: Option<String>,
    /// `<prefix>.drained`.
    pub drained: Option<String>,
    /// `<prefix>.status`.
    pub status_attr: Option<String>,
    /// `<prefix>.opt-out`.
    pub opt_out: Option<String>,
    /// `<prefix>.failed`: the version whose update failed here.
    pub failed: Option<String>,
    /// Tasks with desired status RUNNING on the instance.
    pub running_tasks: u64,
    /// `GET /fake/state`; `None` while the host is down.
    pub host: Option<HostSnapshot>,
}

impl HostView {
    /// Whether this host runs `version`, ACTIVE, with neither claim nor drain marker.
    pub fn settled_on(&self, version: &str) -> bool {
        self.status == "ACTIVE"
            && self.lease.is_none()
            && self.drained.is_none()
            && self.host.as_ref().is_some_and(|h| h.running_version == version && !h.down)
    }

    /// Whether the host is down (rebooting).
    pub fn down(&self) -> bool {
        self.host.as_ref().is_none_or(|h| h.down)
    }
}

/// The whole fleet at one moment, hosts in index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// One entry per host.
    pub hosts: Vec<HostView>,
}

impl View {
    /// Whether every host but those in `except` is settled on `version` and its status says so.
    pub fn all_settled_on(&self, version: &str, except: &[usize]) -> bool {
        // The agent publishes its final status just after it gives the slot back: a host counts
        // once its status says it runs `version` too.
        let reported = |h: &HostView| {
            h.status_attr.as_deref().and_then(agent::status::Status::parse).is_some_and(|s| s.running == version && s.phase == "idle")
        };
        self.hosts.iter().enumerate().all(|(i, h)| except.contains(&i) || h.settled_on(version) && reported(h))
    }
}

/// The worst the monitor saw, and per host what ever happened to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Samples taken.
    pub samples: usize,
    /// The most instances DRAINING or down at once, whoever drained them and whether or not
    /// their agent still runs (agents count them all as taking a slot).
    pub most_disrupted: usize,
    /// The hosts DRAINING or down in the first sample that reached `most_disrupted`.
    pub worst: Vec<usize>,
    /// The most confirmed (not `c`), unexpired claims at once; unreadable ones count.
    pub most_live_claims: usize,
    /// Per host: ever seen DRAINING.
    pub ever_draining: Vec<bool>,
    /// Per host: ever seen with a claim (in any phase).
    pub ever_claimed: Vec<bool>,
    /// The last error reading the state, if any.
    pub last_error: Option<String>,
}

/// One host's fake Bottlerocket API, as the agent reaches it.
#[derive(Clone)]
pub struct HostApi {
    fakes: Arc<Vec<FakeHostProcess>>,
    i: usize,
}

impl HostApi {
    /// The status the API answers `GET path` with; [`ProcessError::NoAnswer`] while the host
    /// is down.
    pub fn status_of(&self, path: &str) -> Result<u16, ProcessError> {
        self.fakes[self.i].request("GET", path, None).map(|(status, _)| status)
    }

    /// Replaces the versions the host's update repository publishes.
    pub fn publish(&self, versions: &[&str]) -> Result<(), String> {
        let body = serde_json::to_string(versions).map_err(|e| e.to_string())?;
        self.control("/fake/publish", &body)
    }

    /// Changes the host's faults; fields left `None` keep their value.
    pub fn set_faults(&self, patch: &FaultsPatch) -> Result<(), String> {
        let body = serde_json::to_string(patch).map_err(|e| e.to_string())?;
        self.control("/fake/faults", &body)
    }

    fn control(&self, path: &str, body: &str) -> Result<(), String> {
        match self.fakes[self.i].request("POST", path, Some(body)) {
            Ok((status, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, answer)) => Err(format!("host {}: POST {path}: HTTP {status}: {answer}", self.i)),
            Err(e) => Err(format!("host {}: POST {path}: {e}", self.i)),
        }
    }
}

/// Runs after host `i` has booted and before its next agent starts, with what the host booted
/// into: the test plays what the booted version does to the world the agent then looks at (ECS
/// finding the instance impaired, say), before the agent can look.
pub type BootHook = Box<dyn FnMut(usize, &HostSnapshot, &MotoServer) -> Result<(), String>>;

/// A running agent process; its stderr goes to the host's log file.
struct AgentChild {
    child: Child,
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one host needs besides its processes.
struct HostFiles {
    config: PathBuf,
    log: PathBuf,
    access_key: String,
}

/// The fleet: moto, the fake hosts, the introspection endpoints and the agents.
pub struct Fleet {
    /// What it was built from.
    pub spec: FleetSpec,
    /// What the harness seeded.
    pub seeded: Seeded,
    moto: Arc<MotoServer>,
    fakes: Arc<Vec<FakeHostProcess>>,
    _introspection: Vec<FakeIntrospection>,
    files: Vec<HostFiles>,
    agents: Vec<Option<AgentChild>>,
    starts: Vec<usize>,
    watch: Arc<Mutex<Watch>>,
    stop_watch: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    on_boot: Option<BootHook>,
    // Last: removed after every process that uses it is gone.
    _dir: TempDir,
}

impl Fleet {
    /// Starts moto, seeds the cluster with one instance per host and the service tasks, sets the
    /// drain delay, and starts every fake host and introspection endpoint. No agent runs yet.
    pub fn launch(spec: FleetSpec) -> Result<Fleet, String> {
        binary(AGENT_BIN).map_err(|e| e.to_string())?;
        let moto = MotoServer::start()?;
        let seeded = moto.seed(&spec.cluster, spec.hosts, &[])?;
        for arn in &seeded.instances {
            if spec.service_tasks > 0 {
                moto.add_tasks(&spec.cluster, arn, Some("ecs-svc/fleet"), spec.service_tasks)?;
            }
        }
        moto.set_faults(&Faults { drain_delay_ms: spec.drain_delay.as_millis() as u64, ..Faults::default() })?;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut fakes = Vec::new();
        let mut introspection = Vec::new();
        let mut files = Vec::new();
        for (i, arn) in seeded.instances.iter().enumerate() {
            let host_dir = dir.path().join(format!("h{i}"));
            std::fs::create_dir_all(&host_dir).map_err(|e| format!("{}: {e}", host_dir.display()))?;
            let extra = spec.fake_args.get(&i).map_or(&[][..], Vec::as_slice);
            let fake = start_fake(&host_dir, &spec, extra).map_err(|e| format!("host {i}: {e}"))?;
            let endpoint = FakeIntrospection::start_with_tasks(
                Answer::registered(&spec.cluster, arn),
                Some(moto.introspection_tasks(&spec.cluster, arn)),
            );
            let config = host_dir.join("agent.toml");
            let mut agent = agent_config(&spec, fake.socket(), &host_dir.join("state"), &endpoint.url());
            for (key, literal) in &spec.agent_settings {
                agent.set_raw(key, literal);
            }
            agent.write(&config).map_err(|e| e.to_string())?;
            files.push(HostFiles { log: host_dir.join("agent.log"), config, access_key: access_key(i) });
            fakes.push(fake);
            introspection.push(endpoint);
        }
        let n = spec.hosts;
        let watch = Watch {
            ever_draining: vec![false; n],
            ever_claimed: vec![false; n],
            ..Watch::default()
        };
        Ok(Fleet {
            spec,
            seeded,
            moto: Arc::new(moto),
            fakes: Arc::new(fakes),
            _introspection: introspection,
            files,
            agents: (0..n).map(|_| None).collect(),
            starts: vec![0; n],
            watch: Arc::new(Mutex::new(watch)),
            stop_watch: Arc::new(AtomicBool::new(false)),
            watcher: None,
            on_boot: None,
            _dir: dir,
        })
    }

    /// The moto server.
    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    /// Starts the monitor (once) and an agent on every host that has none.
    pub fn start_agents(&mut self) -> Result<(), String> {
        self.start_watch();
        for i in 0..self.spec.hosts {
            if self.agents[i].is_none() {
                self.start_agent(i)?;
            }
        }
        Ok(())
    }

    /// Starts a new agent process on host `i`, as systemd would after a boot or a crash.
    pub fn start_agent(&mut self, i: usize) -> Result<(), String> {
        self.start_watch();
        self.starts[i] += 1;
        let child = spawn_agent(&self.files[i], self.starts[i], &self.moto.endpoint())?;
        self.agents[i] = Some(AgentChild { child });
        Ok(())
    }

    /// Sets what happens between each boot and the agent started after it (see [`BootHook`]).
    pub fn on_boot(&mut self, hook: impl FnMut(usize, &HostSnapshot, &MotoServer) -> Result<(), String> + 'static) {
        self.on_boot = Some(Box::new(hook));
    }

    /// Runs `br-update-agent fleet <args> --cluster <this fleet's cluster>` to its end, as an
    /// operator's shell pointed at this fleet's ECS would.
    pub fn operator(&self, args: &[&str]) -> Result<Finished, String> {
        let mut all = vec!["fleet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--cluster", &self.spec.cluster]);
        run_agent_with_env(&all, &self.moto.operator_env(), OPERATOR_TIMEOUT).map_err(|e| format!("fleet {args:?}: {e}"))
    }

    /// How many agent processes host `i` has run.
    pub fn starts(&self, i: usize) -> usize {
        self.starts[i]
    }

    /// SIGKILL for host `i`'s agent (no cleanup possible); waits for it to be gone.
    pub fn kill_agent(&mut self, i: usize) -> Result<ExitStatus, String> {
        let mut agent = self.agents[i].take().ok_or_else(|| format!("host {i} runs no agent"))?;
        agent.child.kill().map_err(|e| format!("kill -9 host {i}'s agent: {e}"))?;
        agent.child.wait().map_err(|e| format!("waiting for host {i}'s agent: {e}"))
    }

    /// SIGTERM for host `i`'s agent, as systemd stops a host container; waits for the exit.
    pub fn terminate_agent(&mut self, i: usize) -> Result<ExitStatus, String> {
        let mut agent = self.agents[i].take().ok_or_else(|| format!("host {i} runs no agent"))?;
        terminate(&mut agent.child).map_err(|e| format!("host {i}: {e}\n{}", self.log_tail(i)))
    }

    /// What the monitor has seen so far.
    pub fn watch(&self) -> Watch {
        lock(&self.watch).clone()
    }

    /// ECS calls answered since the harness last reset its counts.
    pub fn calls(&self) -> Result<Calls, String> {
        self.moto.calls()
    }

    /// The ECS calls answered since the harness last reset its counts, split by the host that
    /// made them (the access key it signed with) and by the stage of its update.
    pub fn calls_by_stage(&self) -> Result<StageSplit, String> {
        Ok(split_by_stage(&self.moto.call_log()?, self.spec.hosts))
    }

    /// Everything host `i`'s agents have logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.files[i].log).unwrap_or_default()
    }

    /// A handle on host `i`'s fake Bottlerocket API that needs no borrow of the fleet, so a
    /// [`Fleet::run_until`] condition can use it.
    pub fn api(&self, i: usize) -> HostApi {
        HostApi { fakes: self.fakes.clone(), i }
    }

    /// The fleet now.
    pub fn view(&self) -> Result<View, String> {
        read_view(&self.moto, &self.spec.cluster, &self.fakes)
    }

    /// Plays systemd for every host and returns the first view for which `done` holds; fails
    /// when an agent exits by itself, a reboot cannot be played, or `timeout` passes.
    pub fn run_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&View) -> bool,
    ) -> Result<View, String> {
        let start = Instant::now();
        let mut last = None;
        loop {
            for i in 0..self.spec.hosts {
                self.supervise(i)?;
            }
            match self.view() {
                Ok(v) if done(&v) => return Ok(v),
                Ok(v) => last = Some(v),
                // A read can fail while a host restarts; the next round reads again.
                Err(e) => eprintln!("reading the fleet: {e}"),
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "gave up after {timeout:?} waiting for {what}\nlast view: {last:#?}\n{}",
                    self.tails()
                ));
            }
            std::thread::sleep(TICK);
        }
    }

    /// Plays systemd for every host for `period`, whatever happens meanwhile.
    pub fn run_for(&mut self, period: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < period {
            for i in 0..self.spec.hosts {
                self.supervise(i)?;
            }
            std::thread::sleep(TICK);
        }
        Ok(())
    }

    /// One host's part of systemd: a host held down for a reboot gets its agent stopped, then
    /// boots, then gets a new agent; an agent that exited by itself is an error.
    fn supervise(&mut self, i: usize) -> Result<(), String> {
        let Some(agent) = self.agents[i].as_mut() else { return Ok(()) };
        if let Some(status) = agent.child.try_wait().map_err(|e| format!("host {i}: {e}"))? {
            self.agents[i] = None;
            return Err(format!("host {i}'s agent exited by itself ({status})\n{}", self.log_tail(i)));
        }
        if self.fakes[i].wait_reboot_held(Duration::ZERO).is_err() {
            return Ok(());
        }
        let status = self.terminate_agent(i)?;
        if !status.success() {
            return Err(format!(
                "host {i}'s agent exited {status} after SIGTERM during the reboot\n{}",
                self.log_tail(i)
            ));
        }
        let booted = self.fakes[i].release_boot(BOOT_TIMEOUT).map_err(|e| format!("host {i} does not boot: {e}"))?;
        if let Some(hook) = self.on_boot.as_mut() {
            hook(i, &booted, &self.moto).map_err(|e| format!("after host {i} booted: {e}"))?;
        }
        self.start_agent(i)
    }

    /// Host `i`'s agent log, last lines.
    pub fn log_tail(&self, i: usize) -> String {
        let log = self.log(i);
        let lines: Vec<&str> = log.lines().collect();
        format!("--- host {i} agent log ---\n{}", lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"))
    }

    fn tails(&self) -> String {
        (0..self.spec.hosts).map(|i| self.log_tail(i)).collect::<Vec<_>>().join("\n")
    }

    fn start_watch(&mut self) {
        if self.watcher.is_some() {
            return;
        }
        let (moto, fakes, watch, stop) =
            (self.moto.clone(), self.fakes.clone(), self.watch.clone(), self.stop_watch.clone());
        let cluster = self.spec.cluster.clone();
        self.watcher = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match read_view(&moto, &cluster, &fakes) {
                    Ok(view) => record(&mut lock(&watch), &view, SystemClock.now()),
                    Err(e) => lock(&watch).last_error = Some(e),
                }
                std::thread::sleep(TICK);
            }
        }));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_watch.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.tails());
        }
        self.agents.clear();
    }
}

fn lock(watch: &Mutex<Watch>) -> MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Folds one view into what the monitor keeps.
fn record(w: &mut Watch, view: &View, now: WallTime) {
    w.samples += 1;
    let mut disrupted = vec![];
    let mut live = 0;
    for (i, h) in view.hosts.iter().enumerate() {
        let draining = h.status == "DRAINING";
        if draining || h.down() {
            disrupted.push(i);
        }
        w.ever_draining[i] |= draining;
        w.ever_claimed[i] |= h.lease.is_some();
        if h.lease.as_deref().is_some_and(|v| live_confirmed(v, now)) {
            live += 1;
        }
    }
    if disrupted.len() > w.most_disrupted {
        w.most_disrupted = disrupted.len();
        w.worst = disrupted;
    }
    w.most_live_claims = w.most_live_claims.max(live);
}

/// Whether a claim value takes a confirmed slot at `now`: unreadable ones do; ones still being
/// counted (`c`) and lapsed ones do not.
pub fn live_confirmed(value: &str, now: WallTime) -> bool {
    match Claim::parse(value) {
        Ok(c) => c.phase != ClaimPhase::Claiming && c.is_live(now, SKEW),
        Err(_) => true,
    }
}

fn read_view(moto: &MotoServer, cluster: &str, fakes: &[FakeHostProcess]) -> Result<View, String> {
    let state = moto.state(cluster)?;
    let names = Names::new(PREFIX);
    let instances = state["instances"].as_array().ok_or_else(|| format!("no instances in {state}"))?;
    if instances.len() != fakes.len() {
        return Err(format!("{} instances for {} hosts", instances.len(), fakes.len()));
    }
    let text = |attrs: &Value, name: &str| attrs.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut hosts = Vec::with_capacity(fakes.len());
    for (inst, fake) in instances.iter().zip(fakes) {
        let attrs = &inst["attributes"];
        let host = match fake.state() {
            Ok(s) => Some(s),
            Err(ProcessError::NoAnswer { .. }) => None,
            Err(e) => return Err(e.to_string()),
        };
        hosts.push(HostView {
            arn: inst["arn"].as_str().unwrap_or_default().to_owned(),
            status: inst["status"].as_str().unwrap_or_default().to_owned(),
            lease: text(attrs, &names.lease),
            drained: text(attrs, &names.drained),
            status_attr: text(attrs, &names.status),
            opt_out: text(attrs, &names.opt_out),
            failed: text(attrs, &names.failed),
            running_tasks: inst["running_tasks"].as_u64().unwrap_or_default(),
            host,
        });
    }
    Ok(View { hosts })
}

fn start_fake(dir: &Path, spec: &FleetSpec, extra: &[String]) -> Result<FakeHostProcess, ProcessError> {
    let mut args = vec![
        "--version",
        &spec.from,
        "--publish",
        &spec.to,
        "--refresh-time",
        "50ms",
        "--prepare-time",
        "300ms",
        "--activate-time",
        "50ms",
        "--deactivate-time",
        "50ms",
    ];
    args.extend(extra.iter().map(String::as_str));
    FakeHostProcess::start(dir, &args, Boot::Gated)
}

/// The agent config of one host: the test defaults of [`AgentConfig::for_tests`] (a check every
/// 10 s at seed 0, no jitter) with coordination on and short cluster timings.
fn agent_config(spec: &FleetSpec, socket: &Path, state_dir: &Path, introspection: &str) -> AgentConfig {
    let mut c = AgentConfig::for_tests(socket, state_dir);
    // The renewal margin: retry budget + settle (1 s) + skew + drain poll (500 ms) + two call
    // spacings <= TTL / 2. The largest budget it allows (about 12.5 s for 30 s claims), so an ECS outage of a few seconds is
    // ridden out by retries. A TTL that does not parse is left for the agent to refuse.
    let others = Duration::from_millis(1500) + SPACING * agent::cluster::paced::MAX_WAIT_SPACINGS + SKEW;
    if let Ok(ttl) = agent::config::parse_duration(&spec.lease_ttl) {
        let budget = (ttl / 2).saturating_sub(others).min(Duration::from_secs(20));
        c.set_str("cluster.ecs-retry-budget", &agent::config::format_duration(budget));
    }
    c.set_str("log-level", "info")
        .set_str("reboot-wait", "5m")
        .set_raw("cluster.enabled", "true")
        .set_str("cluster.introspection-url", introspection)
        .set_raw("cluster.max-concurrent", &spec.max_concurrent.to_string())
        .set_str("cluster.lease-ttl", &spec.lease_ttl)
        .set_str("cluster.settle-time", "1s")
        .set_str("cluster.clock-skew", &format!("{}s", SKEW.as_secs()))
        .set_str("cluster.lease-backoff-min", "1s")
        .set_str("cluster.lease-backoff-max", "5s")
        .set_str("cluster.wait-poll-max", "3s")
        .set_str("cluster.drain-timeout", "2m")
        .set_str("cluster.drain-poll-interval", "500ms")
        .set_str("cluster.ecs-backoff-min", "500ms")
        .set_str("cluster.ecs-backoff-max", "2s")
        .set_str("cluster.ecs-call-spacing", &agent::config::format_duration(SPACING))
        .set_str("cluster.agent-connect-timeout", "10s")
        .set_str("health.poll-interval", "1s")
        .set_str("health.canary-bake-time", "2s");
    c
}

/// The access key host `i`'s agents sign their ECS calls with: moto takes any, and its call log
/// then tells the hosts apart.
pub fn access_key(i: usize) -> String {
    format!("fleet-host-{i}")
}

/// One host's ECS calls by operation, split at its slot.
#[derive(Clone, Debug, Default)]
pub struct HostStages {
    /// Before the claim that held: the round's reads, the looks while waiting, races lost.
    pub before_slot: BTreeMap<String, u64>,
    /// The part of `before_slot` that was idle waiting ([`crate::idle_wait::idle_waiting`]).
    pub idle_wait: BTreeMap<String, u64>,
    /// The part of `before_slot` before the host decided to update
    /// ([`crate::idle_wait::decision`]): its agent's reads on starting.
    pub before_decision: BTreeMap<String, u64>,
    /// From that claim's write to the slot's release (the deletion of the claim), both included.
    pub in_slot: BTreeMap<String, u64>,
    /// After the release (a round that finds the host up to date).
    pub after: BTreeMap<String, u64>,
    /// Whether a claim was written and its deletion seen after it.
    pub released: bool,
}

/// A call log split by host and stage (see [`Fleet::calls_by_stage`]).
#[derive(Clone, Debug, Default)]
pub struct StageSplit {
    /// By host index.
    pub hosts: Vec<HostStages>,
    /// Calls signed by no host of the fleet.
    pub unattributed: u64,
}

/// Splits `log` by the host that signed each call and, per host, at the last claim it wrote
/// in phase `claiming` (earlier ones were races it lost and withdrew) and the deletion of that
/// claim after it.
fn split_by_stage(log: &[LoggedCall], hosts: usize) -> StageSplit {
    let lease = Names::new(PREFIX).lease;
    let keys: Vec<String> = (0..hosts).map(access_key).collect();
    let mut split = StageSplit { hosts: vec![HostStages::default(); hosts], unattributed: 0 };
    for (i, key) in keys.iter().enumerate() {
        let mine: Vec<&LoggedCall> = log.iter().filter(|c| c.key.as_deref() == Some(key.as_str())).collect();
        let writes = |c: &&LoggedCall, op: &str| c.operation == op && c.attributes.iter().any(|(name, _)| *name == lease);
        let claim = mine.iter().rposition(|c| {
            writes(c, "PutAttributes")
                && c.attributes.iter().any(|(name, v)| {
                    *name == lease && v.as_deref().and_then(|v| Claim::parse(v).ok()).is_some_and(|c| c.phase == ClaimPhase::Claiming)
                })
        });
        let release = claim.and_then(|at| mine[at..].iter().position(|c| writes(c, "DeleteAttributes")).map(|k| at + k));
        let before = &mine[..claim.unwrap_or(mine.len())];
        let ops: Vec<&str> = before.iter().map(|c| c.operation.as_str()).collect();
        let idle = crate::idle_wait::idle_waiting(&ops, &in_lost_races(before, |c, op| writes(c, op)));
        let stages = &mut split.hosts[i];
        stages.released = release.is_some();
        for (c, _) in before.iter().zip(&idle).filter(|(_, idle)| **idle) {
            *stages.idle_wait.entry(c.operation.clone()).or_default() += 1;
        }
        for c in &before[..crate::idle_wait::decision(&ops).unwrap_or(before.len())] {
            *stages.before_decision.entry(c.operation.clone()).or_default() += 1;
        }
        for (k, c) in mine.iter().enumerate() {
            let stage = match (claim, release) {
                (Some(at), _) if k < at => &mut stages.before_slot,
                (None, _) => &mut stages.before_slot,
                (Some(_), Some(end)) if k > end => &mut stages.after,
                _ => &mut stages.in_slot,
            };
            *stage.entry(c.operation.clone()).or_default() += 1;
        }
    }
    split.unattributed = log.iter().filter(|c| !c.key.as_ref().is_some_and(|k| keys.contains(k))).count() as u64;
    split
}

/// Which of `calls` (a host's, before the claim that held) fell in a race it lost: from a claim
/// it wrote to that claim's deletion, both included.
fn in_lost_races(calls: &[&LoggedCall], writes: impl Fn(&&LoggedCall, &str) -> bool) -> Vec<bool> {
    let mut racing = false;
    calls
        .iter()
        .map(|c| {
            let deleted = racing && writes(c, "DeleteAttributes");
            racing |= writes(c, "PutAttributes");
            let inside = racing;
            racing &= !deleted;
            inside
        })
        .collect()
}

/// Starts `br-update-agent run` for one host, with only the test's AWS settings in its
/// environment (endpoint, region, static keys, [`access_key`]) and its stderr appended to the
/// host's log.
fn spawn_agent(files: &HostFiles, start: usize, endpoint: &str) -> Result<Child, String> {
    let bin = binary(AGENT_BIN).map_err(|e| e.to_string())?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log)
        .map_err(|e| format!("{}: {e}", files.log.display()))?;
    let _ = writeln!(log, "===== agent start {start} =====");
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(&files.config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .env("AWS_ENDPOINT_URL_ECS", endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", &files.access_key)
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::try_clone(&log).map_err(|e| e.to_string())?));
    cmd.spawn().map_err(|e| format!("starting {AGENT_BIN}: {e}"))
}

/// SIGTERM, then wait (bounded) for the exit; SIGKILL past the bound.
fn terminate(child: &mut Child) -> Result<ExitStatus, String> {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-s", "TERM", &pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !sent.is_ok_and(|s| s.success()) {
        return Err(format!("cannot send SIGTERM to {pid}"));
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if start.elapsed() >= EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("agent did not exit within {EXIT_TIMEOUT:?} of SIGTERM"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Prints a figure on the process's own stderr (libtest captures `eprintln!`, not the handle),
/// so `MEASURE:` lines show with or without `--nocapture`.
pub fn measure(what: &str, value: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "MEASURE: {what}: {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(key: &str, operation: &str, lease: Option<Option<&str>>) -> LoggedCall {
        let attributes = lease.map(|v| vec![(Names::new(PREFIX).lease, v.map(String::from))]).unwrap_or_default();
        LoggedCall { key: Some(key.into()), operation: operation.into(), attributes }
    }

    /// Host 0 starts, waits through one look, loses a race on the next, claims on the third; a
    /// call signed by no host of the fleet is told apart.
    #[test]
    fn a_hosts_calls_split_at_its_slot_with_the_idle_wait_and_the_start_apart() {
        let k = access_key(0);
        let log = vec![
            call(&k, "DescribeContainerInstances", None), // the agent's start
            call(&k, "DescribeContainerInstances", None), // the round
            call(&k, "ListAttributes", None),
            call(&k, "DescribeClusters", None), // a look at a full fleet
            call(&k, "ListAttributes", None),
            call(&k, "PutAttributes", None),    // the waiting status
            call(&k, "DescribeClusters", None), // the look that leads to a race
            call(&k, "ListAttributes", None),
            call(&k, "PutAttributes", Some(Some("v1:c:0:600:aaaa1111:1.1.0"))),
            call(&k, "ListAttributes", None),
            call(&k, "DeleteAttributes", Some(None)),
            call("someone-else", "ListAttributes", None),
            call(&k, "DescribeClusters", None), // the look that finds room
            call(&k, "ListAttributes", None),
            call(&k, "PutAttributes", Some(Some("v1:c:0:600:bbbb2222:1.1.0"))),
            call(&k, "PutAttributes", Some(Some("v1:h:0:600:bbbb2222:1.1.0"))),
            call(&k, "DeleteAttributes", Some(None)),
            call(&k, "DescribeContainerInstances", None), // after the release
        ];
        let split = split_by_stage(&log, 1);
        let h = &split.hosts[0];
        let ops = |m: &BTreeMap<String, u64>| m.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ");
        assert!(h.released);
        assert_eq!(split.unattributed, 1);
        assert_eq!(ops(&h.before_decision), "DescribeContainerInstances 1");
        assert_eq!(ops(&h.idle_wait), "DescribeClusters 1, ListAttributes 1");
        assert_eq!(h.before_slot.values().sum::<u64>(), 13);
        assert_eq!(ops(&h.in_slot), "DeleteAttributes 1, PutAttributes 2");
        assert_eq!(ops(&h.after), "DescribeContainerInstances 1");
    }

    fn host(status: &str, lease: Option<String>, down: bool) -> HostView {
        let snapshot = HostSnapshot {
            running_version: "1.0.0".into(),
            update_state: None,
            busy_with: None,
            reboot_requests: 0,
            boots: 0,
            down: false,
            faults: fake_bottlerocket::Faults::default(),
            published: vec![],
        };
        HostView {
            arn: "arn".into(),
            status: status.into(),
            lease,
            drained: None,
            status_attr: None,
            opt_out: None,
            failed: None,
            running_tasks: 0,
            host: (!down).then_some(snapshot),
        }
    }

    fn claim(phase: ClaimPhase, expires_at: i64) -> Option<String> {
        Some(Claim { phase, claimed_at: 0, expires_at, token: "abcd1234".into(), target: "1.1.0".into() }.encode())
    }

    fn watch(n: usize) -> Watch {
        Watch {
            ever_draining: vec![false; n],
            ever_claimed: vec![false; n],
            ..Watch::default()
        }
    }

    #[test]
    fn the_monitor_counts_draining_and_rebooting_hosts_and_confirmed_live_claims() {
        let now = WallTime::from_secs(1_000);
        let view = View {
            hosts: vec![
                host("DRAINING", claim(ClaimPhase::Draining, 1_100), false),
                host("DRAINING", claim(ClaimPhase::Rebooting, 1_100), true),
                host("ACTIVE", claim(ClaimPhase::Claiming, 1_100), false),
                host("ACTIVE", claim(ClaimPhase::Held, 990), false),
                host("ACTIVE", Some("garbage".into()), false),
            ],
        };
        let mut w = watch(5);
        record(&mut w, &view, now);
        assert_eq!((w.most_disrupted, w.most_live_claims, w.samples), (2, 3, 1));
        assert_eq!(w.worst, [0, 1]);
        assert_eq!(w.ever_draining, [true, true, false, false, false]);
        assert_eq!(w.ever_claimed, [true; 5]);
        let calm = View { hosts: (0..5).map(|_| host("ACTIVE", None, false)).collect() };
        record(&mut w, &calm, now);
        assert_eq!((w.most_disrupted, w.most_live_claims, w.samples), (2, 3, 2), "maxima are kept");
    }

    #[test]
    fn a_host_counts_while_draining_or_down_whatever_its_claim_says() {
        let now = WallTime::from_secs(1_000);
        let mut w = watch(3);
        // A dead agent's instance: DRAINING with its claim lapsed; a rebooting host without one.
        let view = View {
            hosts: vec![
                host("DRAINING", claim(ClaimPhase::Draining, 900), false),
                host("ACTIVE", None, true),
                host("ACTIVE", None, false),
            ],
        };
        record(&mut w, &view, now);
        assert_eq!((w.most_disrupted, w.most_live_claims), (2, 0));
        assert_eq!(w.worst, [0, 1]);
    }

    #[test]
    fn a_claim_lapses_only_after_its_expiry_plus_the_skew() {
        let value = claim(ClaimPhase::Draining, 1_000).expect("a claim");
        assert!(live_confirmed(&value, WallTime::from_secs(1_000)));
        assert!(live_confirmed(&value, WallTime(1_000_999)));
        assert!(!live_confirmed(&value, WallTime::from_secs(1_001)));
        assert!(!live_confirmed(&claim(ClaimPhase::Claiming, 2_000).expect("a claim"), WallTime::from_secs(1_000)));
    }
}
