//! The local demo fleet: 12 hosts, at most 3 updating at once, each running the real agent
//! against its own fake Bottlerocket API served on a Unix socket (real HTTP client, real journal
//! files, real clock), coordinated through an in-memory ECS cluster. No AWS account and no
//! Bottlerocket host needed. The demo plays systemd: when a host reboots, it stops that host's
//! agent with a shutdown signal, boots the host, and starts a new agent process for it.
//!
//! `demo [--hosts N] [--max-concurrent N] [--log PATH]`
//!
//! `demo --moto [--hosts N] [--max-concurrent N] [--linger SECS]` runs the same kind of fleet
//! with ECS served by the patched moto server and each host's agent as its own process (the
//! built `br-update-agent` and `fake-bottlerocket` binaries), so that `br-update-agent fleet`
//! can read and steer it from another shell: it prints the endpoint and the environment to use,
//! then plays systemd until every host is updated, and keeps the cluster up `--linger` seconds
//! more. It needs the moto venv (`bash tests/moto/ensure-venv.sh`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::backoff::Jitter;
use agent::clock::SystemClock;
use agent::cluster::paced::Paced;
use agent::cluster::InstanceStatus;
use agent::config::Config;
use agent::cycle::{Agent, Outcome};
use agent::journal::FileJournal;
use agent::lease::{Claim, ClaimPhase, Names};
use agent::os_api::http::HttpOsApi;
use agent::shutdown::Shutdown;
use fake_bottlerocket::{serve, CommandDurations, FakeHost, HostConfig, RebootBehavior};
use testkit::fake_ecs::FakeEcs;
use tracing::Instrument;

const FROM: &str = "1.26.0";
const TO: &str = "1.26.1";

struct DemoHost {
    name: String,
    arn: String,
    host: FakeHost,
    socket: PathBuf,
    state_dir: PathBuf,
    seed: u32,
}

fn main() -> std::process::ExitCode {
    let mut hosts = 12usize;
    let mut n = 3u32;
    let mut log: Option<PathBuf> = None;
    let (mut moto, mut linger) = (false, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--moto" {
            moto = true;
            continue;
        }
        let v = args.next();
        match (a.as_str(), v) {
            ("--linger", Some(v)) => linger = v.parse().unwrap_or(0).min(3600),
            ("--hosts", Some(v)) => hosts = v.parse().unwrap_or(hosts).clamp(1, 40),
            ("--max-concurrent", Some(v)) => n = v.parse().unwrap_or(n).clamp(1, 40),
            ("--log", Some(v)) => log = Some(v.into()),
            _ => {
                eprintln!("usage: demo [--hosts N] [--max-concurrent N] [--log PATH] | demo --moto [--hosts N] [--max-concurrent N] [--linger SECS]");
                return std::process::ExitCode::from(64);
            }
        }
    }
    if moto {
        return match moto_demo(hosts, n, Duration::from_secs(linger)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let log = log.unwrap_or_else(|| dir.path().join("agents.log"));
    if let Err(e) = init_log(&log) {
        eprintln!("error: cannot write the log {}: {e}", log.display());
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(demo(dir.path(), hosts, n));
    println!("Agent logs (one line per decision, per host): {}", log.display());
    if log.starts_with(dir.path()) {
        // Keep the log readable after the temporary directory goes away.
        let kept = std::env::temp_dir().join("br-update-agent-demo.log");
        if std::fs::copy(&log, &kept).is_ok() {
            println!("  (copied to {})", kept.display());
        }
    }
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// The fleet as processes around moto, reachable by `br-update-agent fleet`.
fn moto_demo(count: usize, n: u32, linger: Duration) -> Result<(), String> {
    let mut spec = testkit::fleet::FleetSpec::new("demo", count);
    spec.max_concurrent = n;
    spec.from = FROM.into();
    spec.to = TO.into();
    let mut fleet = testkit::fleet::Fleet::launch(spec)?;
    let endpoint = fleet.moto().endpoint();
    println!("Demo fleet: {count} hosts on {FROM}, update {TO} published; at most {n} update at once.");
    println!("ECS (the patched moto server): {endpoint}");
    println!("Read or steer it from another shell:");
    println!(
        "  AWS_ENDPOINT_URL_ECS={endpoint} AWS_REGION={} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\\n    br-update-agent fleet status --cluster demo --watch",
        testkit::moto::REGION
    );
    let start = Instant::now();
    fleet.start_agents()?;
    fleet.run_until("every host updated", Duration::from_secs(600), |v| v.all_settled_on(TO, &[]))?;
    let w = fleet.watch();
    println!(
        "All {count} hosts on {TO} in {:.1} s; most instances out of service at once: {} (limit {n}).",
        start.elapsed().as_secs_f64(),
        w.most_disrupted
    );
    if !linger.is_zero() {
        println!("Keeping the cluster up for {} s.", linger.as_secs());
        fleet.run_for(linger)?;
    }
    Ok(())
}

fn init_log(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

fn config(n: u32, h: &DemoHost) -> Config {
    let text = format!(
        r#"
api-socket = "{socket}"
state-dir = "{state}"
check-interval = "20s"
check-jitter = "0s"
seed = {seed}
request-timeout = "5s"
reboot-wait = "60s"
[commands]
poll-interval = "200ms"
busy-backoff-min = "200ms"
busy-backoff-max = "1s"
[cluster]
max-concurrent = {n}
settle-time = "1s"
lease-ttl = "30s"
clock-skew = "1s"
drain-poll-interval = "500ms"
drain-timeout = "30s"
lease-backoff-min = "500ms"
lease-backoff-max = "3s"
wait-poll-max = "2s"
reboot-allowance = "1m"
agent-connect-timeout = "10s"
ecs-retry-budget = "8s"
ecs-backoff-min = "200ms"
ecs-backoff-max = "1s"
ecs-call-spacing = "50ms"
[health]
poll-interval = "1s"
canary-bake-time = "5s"
"#,
        socket = h.socket.display(),
        state = h.state_dir.display(),
        seed = h.seed,
    );
    Config::parse(&text, "demo").unwrap_or_else(|e| panic!("the demo's own config is invalid: {e}"))
}

async fn demo(dir: &Path, count: usize, n: u32) -> bool {
    let ecs = FakeEcs::new("demo", 42);
    ecs.set_drain_time(Duration::from_secs(2), Duration::from_secs(5));
    let mut hosts = vec![];
    let mut served = vec![];
    for i in 0..count {
        let name = format!("host-{:02}", i + 1);
        let host = FakeHost::new(HostConfig {
            version: FROM.into(),
            published: vec![FROM.into(), TO.into()],
            durations: CommandDurations {
                refresh: Duration::from_millis(300),
                prepare: Duration::from_millis(1500 + 150 * i as u64),
                activate: Duration::from_millis(300),
                deactivate: Duration::from_millis(300),
            },
            reboot: RebootBehavior::GoDown,
            ..HostConfig::default()
        });
        let socket = dir.join(format!("{name}.sock"));
        match serve(host.clone(), &socket) {
            Ok(s) => served.push(s),
            Err(e) => {
                eprintln!("error: cannot serve the fake API for {name}: {e}");
                return false;
            }
        }
        let arn = ecs.register(&name);
        ecs.add_tasks(&arn, Some("ecs-svc/web"), 2);
        let state_dir = dir.join(&name);
        // Seeds spread the hosts' first checks over the 20 s interval.
        let seed = (i as u32 * 2048 / count as u32) % 2048;
        hosts.push(DemoHost { name, arn, host, socket, state_dir, seed });
    }
    println!("Demo fleet: {count} Bottlerocket hosts on {FROM}, update {TO} published; at most {n} update at once.");
    println!("Each host runs the real agent against its own API socket; ECS is simulated in memory.\n");
    let start = Instant::now();
    let board = Board::new(&hosts);
    let runs = futures_util::future::join_all(hosts.iter().map(|h| run_host(h, &ecs, n, &board)));
    let view = board.show(&hosts, &ecs, start);
    tokio::select! {
        _ = runs => {}
        _ = view => {}
        _ = tokio::time::sleep(Duration::from_secs(170)) => println!("\n(demo stopped after 170 s)"),
    }
    board.render(&hosts, &ecs, start, true);
    let updated = hosts.iter().filter(|h| h.host.running_version() == TO).count();
    let left_draining = ecs.draining().len();
    let claims = ecs.carrying("br-update.lease").len();
    println!(
        "\nSummary: {updated}/{count} hosts on {TO} in {:.1} s; most hosts out of service at once: {} (limit {n}); \
         instances left DRAINING: {left_draining}; claims left: {claims}; ECS calls: {} ({:.1} per host)",
        start.elapsed().as_secs_f64(),
        board.peak.borrow(),
        ecs.total_calls(),
        ecs.total_calls() as f64 / count as f64
    );
    for s in served {
        s.shutdown().await;
    }
    updated == count && left_draining == 0 && claims == 0 && *board.peak.borrow() <= n as usize
}

/// Runs one host's agent until its update is done, restarting it across the reboot like systemd.
async fn run_host(h: &DemoHost, ecs: &FakeEcs, n: u32, board: &Board) {
    let mut starts = 0u64;
    loop {
        starts += 1;
        let (trigger, shutdown) = Shutdown::new();
        let cfg = config(n, h);
        let agent = Agent {
            os: HttpOsApi::new(h.socket.clone(), cfg.request_timeout),
            cluster: Some(Paced::new(ecs.host(&h.arn), SystemClock, cfg.cluster.ecs_call_spacing)),
            clock: SystemClock,
            journal: FileJournal::new(cfg.journal_path()),
            jitter: Jitter::seeded(u64::from(h.seed) * 1000 + starts),
            names: Names::new(&cfg.cluster.attribute_prefix),
            cfg,
            shutdown,
            memory: Default::default(),
            notifier: Default::default(),
        };
        let before = h.host.reboot_requests();
        let span = tracing::info_span!("agent", host = %h.name, start = starts);
        let run = agent.run(starts > 1).instrument(span);
        tokio::pin!(run);
        let rebooting = tokio::select! {
            outcome = &mut run => {
                board.note(&h.name, &outcome);
                false
            }
            _ = async { while h.host.reboot_requests() == before { tokio::time::sleep(Duration::from_millis(100)).await } } => true,
        };
        if !rebooting {
            return;
        }
        // The host goes down: systemd stops the agent, the machine reboots, the agent starts again.
        trigger.fire();
        let _ = run.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.host.boot();
    }
}

/// The live view: one line per host.
struct Board {
    outcomes: RefCell<BTreeMap<String, String>>,
    peak: RefCell<usize>,
    tty: bool,
    last: RefCell<BTreeMap<String, String>>,
}

impl Board {
    fn new(_hosts: &[DemoHost]) -> Board {
        Board {
            outcomes: RefCell::new(BTreeMap::new()),
            peak: RefCell::new(0),
            tty: std::io::stdout().is_terminal(),
            last: RefCell::new(BTreeMap::new()),
        }
    }

    fn note(&self, host: &str, outcome: &Outcome) {
        let text = match outcome {
            Outcome::Finished { result, version } => format!("{result} -> {version}"),
            other => other.token().to_string(),
        };
        self.outcomes.borrow_mut().insert(host.to_string(), text);
    }

    async fn show(&self, hosts: &[DemoHost], ecs: &FakeEcs, start: Instant) {
        loop {
            self.render(hosts, ecs, start, false);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn phase(&self, h: &DemoHost, ecs: &FakeEcs) -> String {
        if let Some(done) = self.outcomes.borrow().get(&h.name) {
            return format!("done      {done}");
        }
        if h.host.is_down() {
            return "rebooting".into();
        }
        let claim = ecs.attribute(&h.arn, "br-update.lease").and_then(|v| Claim::parse(&v).ok());
        let draining = ecs.status(&h.arn) == Some(InstanceStatus::Draining);
        match claim.map(|c| c.phase) {
            Some(ClaimPhase::Claiming) => "claiming a slot".into(),
            Some(ClaimPhase::Draining | ClaimPhase::Held) if draining => "draining".into(),
            Some(ClaimPhase::Rebooting) => "rebooting".into(),
            Some(ClaimPhase::Verifying) => "verifying".into(),
            Some(_) => "holding a slot".into(),
            None if draining => "returning to service".into(),
            None if h.host.running_version() == TO => format!("on {TO}, finishing"),
            None => match h.host.update_state() {
                Some(fake_bottlerocket::UpdateState::Staged) => "prepared; waiting for a slot".into(),
                Some(_) => "checking / downloading".into(),
                None => "waiting for its slot".into(),
            },
        }
    }

    fn render(&self, hosts: &[DemoHost], ecs: &FakeEcs, start: Instant, last: bool) {
        let busy = hosts
            .iter()
            .filter(|h| h.host.is_down() || ecs.status(&h.arn) == Some(InstanceStatus::Draining))
            .count();
        let mut peak = self.peak.borrow_mut();
        *peak = (*peak).max(busy);
        let t = start.elapsed().as_secs_f64();
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\x1b[2J\x1b[H");
            let _ = writeln!(out, "t = {t:5.1} s   out of service now: {busy}   (peak {peak})\n");
            for h in hosts {
                let _ = writeln!(out, "  {}  {:>7}  {}", h.name, h.host.running_version(), self.phase(h, ecs));
            }
            let _ = out.flush();
            return;
        }
        // Not a terminal: print each host's changes as lines.
        let mut seen = self.last.borrow_mut();
        for h in hosts {
            let phase = self.phase(h, ecs);
            if seen.get(&h.name) != Some(&phase) || last {
                if !last {
                    let _ = writeln!(out, "t = {t:5.1} s  {}  {:>7}  {phase}", h.name, h.host.running_version());
                }
                seen.insert(h.name.clone(), phase);
            }
        }
    }
}
