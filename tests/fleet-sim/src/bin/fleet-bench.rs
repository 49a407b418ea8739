//! The fleet benchmark: simulates rollouts of the real agent and of the peers' strategies on the
//! same fleet and prints the figures; `--sweep` runs many seeds with faults through the checker;
//! `--controls` runs the negative controls (each hole's fix off, then on); `--svg` draws a
//! rollout's timeline.
//!
//! ```text
//! cargo run --release -p fleet-sim --bin fleet-bench                      # the table, 1,000 hosts
//! cargo run --release -p fleet-sim --bin fleet-bench -- --sweep --seeds 200 --hosts 200 --n 5
//! cargo run --release -p fleet-sim --bin fleet-bench -- --controls
//! cargo run --release -p fleet-sim --bin fleet-bench -- --svg docs/rollout.svg --hosts 60 --n 5
//! ```

use std::process::ExitCode;
use std::time::Duration;

use agent::config::parse_duration;
use fleet_sim::check::{self, Violation};
use fleet_sim::metrics::{human, Figures};
use fleet_sim::peers;
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, Run};
use fleet_sim::svg;

const USAGE: &str = "usage: fleet-bench [--hosts H] [--n 1,10,50] [--seed S] [--no-peers] [--faults]
                   [--wait-poll-max D] [--update-now-poll D] [--ecs-latency D] [--agent-defaults]
                   [--svg PATH] [--sweep [--seeds K] [--first-seed S]] [--controls] [--explain]
  D is a duration such as 90s, 15m, 1h. Without --svg, --sweep or --controls: the benchmark
  table, then the negative controls.";

/// The command line.
#[derive(Debug)]
struct Args {
    hosts: Option<usize>,
    n: Vec<u32>,
    seed: u64,
    peers: bool,
    faults: bool,
    wait_poll_max: Option<Duration>,
    update_now_poll: Option<Duration>,
    ecs_latency: Duration,
    agent_defaults: bool,
    svg: Option<String>,
    sweep: bool,
    seeds: u64,
    controls: bool,
    explain: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        hosts: None,
        n: vec![],
        seed: 1,
        peers: true,
        faults: false,
        wait_poll_max: None,
        update_now_poll: None,
        ecs_latency: Duration::from_millis(50),
        agent_defaults: false,
        svg: None,
        sweep: false,
        seeds: 200,
        controls: false,
        explain: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--hosts" => a.hosts = Some(number(&value()?)?),
            "--n" => a.n = value()?.split(',').map(number).collect::<Result<_, _>>()?,
            "--seed" | "--first-seed" => a.seed = number(&value()?)?,
            "--seeds" => a.seeds = number(&value()?)?,
            "--no-peers" => a.peers = false,
            "--faults" => a.faults = true,
            "--wait-poll-max" => a.wait_poll_max = Some(parse_duration(&value()?)?),
            "--update-now-poll" => a.update_now_poll = Some(parse_duration(&value()?)?),
            "--ecs-latency" => a.ecs_latency = parse_duration(&value()?)?,
            "--agent-defaults" => a.agent_defaults = true,
            "--svg" => a.svg = Some(value()?),
            "--sweep" => a.sweep = true,
            "--controls" => a.controls = true,
            "--explain" => a.explain = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("`{s}` is not a number"))
}

impl Args {
    /// The scenario for `hosts` and `n` with this command line's settings.
    fn scenario(&self, hosts: usize, n: u32, seed: u64) -> Scenario {
        let mut sc = if self.faults { Scenario::with_faults(hosts, n, seed) } else { Scenario::realistic(hosts, n, seed) };
        sc.ecs_latency = self.ecs_latency;
        if !self.agent_defaults {
            // For a fleet this size: waiters may sleep long (the waiting policy bounds the tail by
            // the count of hosts behind, not by this cap), and idle hosts need not look for the
            // operator's update-now more than once per check.
            sc.wait_poll_max = Duration::from_secs(3600);
            sc.update_now_poll = Duration::from_secs(3600);
        }
        sc.wait_poll_max = self.wait_poll_max.unwrap_or(sc.wait_poll_max);
        sc.update_now_poll = self.update_now_poll.unwrap_or(sc.update_now_poll);
        sc
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fleet-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if args.sweep {
        sweep(&args)
    } else if args.controls {
        controls()
    } else if let Some(path) = &args.svg {
        picture(&args, path)
    } else {
        table(&args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(sc: &Scenario) -> Result<Run, String> {
    sim::run(sc).map_err(|e| e.to_string())
}

/// The benchmark table: the agent at each N, then the peers' models on the same fleet.
fn table(args: &Args) -> Result<ExitCode, String> {
    let hosts = args.hosts.unwrap_or(1000);
    let ns = if args.n.is_empty() { vec![1, 10, 50] } else { args.n.clone() };
    let first = args.scenario(hosts, ns[0], args.seed);
    println!(
        "{hosts} hosts, seed {}: drain {}-{} min, download {}-{} min (before the drain), reboot {}-{} min; first checks spread over {} min; ECS latency {} ms{}",
        args.seed,
        first.drain_time.lo.as_secs() / 60,
        first.drain_time.hi.as_secs() / 60,
        first.prepare_time.lo.as_secs() / 60,
        first.prepare_time.hi.as_secs() / 60,
        first.reboot_time.lo.as_secs() / 60,
        first.reboot_time.hi.as_secs() / 60,
        first.check_interval.as_secs() / 60,
        first.ecs_latency.as_millis(),
        if args.faults { "; with faults" } else { "" },
    );
    println!(
        "agent settings: defaults, except wait-poll-max {} and update-now-poll {}",
        agent::config::format_duration(first.wait_poll_max),
        agent::config::format_duration(first.update_now_poll)
    );
    println!();
    header();
    let mut violations = 0;
    let mut breakdowns = vec![];
    for &n in &ns {
        let sc = args.scenario(hosts, n, args.seed);
        let r = run(&sc)?;
        let v = check::check(&r.trace);
        violations += v.len();
        let f = Figures::of_trace(&format!("agent, N = {n}"), &r.trace, r.wall);
        row(&f, Some(v.len()));
        breakdowns.push((n, f.updates, r.trace.calls_by_op(), busiest(&r, 1000), busiest(&r, 60_000)));
    }
    if args.peers {
        let sc = args.scenario(hosts, 1, args.seed);
        row(&peers::ecs_updater(&sc, args.ecs_latency), None);
        row(&peers::kured(&sc, args.ecs_latency), None);
    }
    println!();
    legend();
    println!();
    let controls_code = controls()?;
    if args.explain {
        for (n, updates, ops, second, minute) in breakdowns {
            let per: Vec<String> = ops.iter().map(|(op, c)| format!("{op} {:.1}", *c as f64 / updates.max(1) as f64)).collect();
            println!("\nN = {n}: calls per update over the whole run: {}", per.join(", "));
            println!("  busiest second: {second}");
            println!("  busiest minute: {minute}");
        }
    }
    Ok(if violations == 0 { controls_code } else { ExitCode::FAILURE })
}

/// The negative controls: for each hole, the violations the checker finds with its fix off and
/// with it on, over the same seeds. Fails unless every hole shows with its fix off and nothing
/// shows with it on.
fn controls() -> Result<ExitCode, String> {
    let seeds = fleet_sim::controls::SEEDS;
    println!("negative controls: seeds {}-{}, each with the fix off, then on", seeds.start(), seeds.end());
    println!(
        "| {:<4} | {:<53} | {:<48} | {:>7} | {:>6} | {:<40} |",
        "hole", "fault", "fix switched off", "off", "on", "found with the fix off"
    );
    println!("|{:-<6}|{:-<55}|{:-<50}|{:-<9}|{:-<8}|{:-<42}|", "", "", "", "", "", "");
    let mut good = true;
    let started = std::time::Instant::now();
    for c in fleet_sim::controls::all() {
        let f = fleet_sim::controls::run(&c, seeds.clone()).map_err(|e| e.to_string())?;
        let kinds: Vec<String> = f.off_kinds().iter().map(|k| format!("{k:?}")).collect();
        println!(
            "| {:<4} | {:<53} | {:<48} | {:>7} | {:>6} | {:<40} |",
            c.hole,
            c.fault,
            c.fix,
            f.off_total(),
            f.on_total(),
            kinds.join(" ")
        );
        good &= f.shown(&c) > 0 && f.on_total() == 0;
    }
    println!("off/on: violations over all seeds (a run that hit its time limit counts one more)");
    for (what, scenario) in [
        ("an agent dies mid-drain and never returns", fleet_sim::controls::agent_never_returns as fn(u64) -> Scenario),
        ("an ECS agent never reconnects after boot", fleet_sim::controls::ecs_agent_never_reconnects),
    ] {
        let (mut violations, mut unfinished, mut waiting) = (0, 0, 0);
        for seed in seeds.clone() {
            let r = run(&scenario(seed))?;
            violations += check::check(&r.trace).len();
            unfinished += usize::from(!r.finished);
            let stuck: Vec<&fleet_sim::trace::HostTrace> = r.trace.hosts.iter().filter(|h| check::is_stuck(h, &r.trace.target)).collect();
            waiting += r.trace.hosts.iter().filter(|h| check::waits_behind(&h.end, &stuck).is_some()).count();
        }
        println!("safe failure, {what} (N = 1): {violations} violations, {unfinished} unfinished, {waiting} hosts left waiting, naming it");
        good &= violations == 0 && unfinished == 0 && waiting > 0;
    }
    println!("{:.1}s", started.elapsed().as_secs_f64());
    Ok(if good { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn header() {
    println!(
        "| {:<43} | {:>3} | {:>10} | {:>10} | {:>5} | {:>5} | {:>23} | {:>6} | {:>5} | {:>6} | {:>6} | {:>4} |",
        "strategy", "N", "makespan", "bound", "ratio", "util", "drained min mean/p50/p95/max", "calls", "peak", "peak60", "wall", "viol"
    );
    println!("|{:-<45}|{:-<5}|{:-<12}|{:-<12}|{:-<7}|{:-<7}|{:-<30}|{:-<8}|{:-<7}|{:-<8}|{:-<8}|{:-<6}|", "", "", "", "", "", "", "", "", "", "", "", "");
}

fn row(f: &Figures, violations: Option<usize>) {
    let d = &f.drained_min;
    println!(
        "| {:<43} | {:>3} | {:>10} | {:>10} | {:>5.3} | {:>5.3} | {:>28} | {:>6.1} | {:>5} | {:>6.2} | {:>5.2}s | {:>4} |",
        f.label,
        f.max_concurrent,
        human(f.makespan),
        human(f.lower_bound),
        f.ratio(),
        f.utilisation,
        format!("{:.1}/{:.1}/{:.1}/{:.1}", d.mean, d.p50, d.p95, d.max),
        f.calls_per_update,
        f.peak_calls_per_s,
        f.sustained_calls_per_s,
        f.wall.as_secs_f64(),
        violations.map_or("-".to_string(), |v| v.to_string()),
    );
}

fn legend() {
    println!("makespan: publication to the last slot's release; bound: updates / N x mean slot time (claim to release);");
    println!("ratio: makespan / bound; util: busy slot time / (N x makespan); calls: ECS calls per update (publication to makespan);");
    println!("peak: most ECS calls fleet-wide in any 1 s; peak60: calls in the busiest minute, per second; wall: simulation time;");
    println!("viol: checker violations. Peer rows are models of a schedule (see fleet_sim::peers), not the peers' code.");
}

/// What the calls of the busiest `window` ms were, by operation.
fn busiest(r: &Run, window: u64) -> String {
    let mut calls = r.trace.calls.clone();
    calls.sort_by_key(|c| c.at);
    let (mut best, mut lo, mut at) = (0, 0, 0);
    for hi in 0..calls.len() {
        while calls[hi].at - calls[lo].at >= window {
            lo += 1;
        }
        if hi + 1 - lo > best {
            (best, at) = (hi + 1 - lo, lo);
        }
    }
    let mut ops: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut hosts = std::collections::BTreeSet::new();
    for c in &calls[at..at + best] {
        *ops.entry(c.op).or_default() += 1;
        hosts.insert(c.host);
    }
    let since = calls.get(at).map_or(0, |c| c.at.saturating_sub(r.trace.published));
    format!("{best} calls from {} hosts at +{}s: {ops:?}", hosts.len(), since / 1000)
}

/// Many seeds with every fault, each through the checker; fails if any run has a violation.
fn sweep(args: &Args) -> Result<ExitCode, String> {
    let hosts = args.hosts.unwrap_or(200);
    let n = args.n.first().copied().unwrap_or(5);
    let settings = args.scenario(hosts, n, args.seed);
    println!(
        "sweep: {} seeds from {}, {hosts} hosts, N = {n}, every fault; wait-poll-max {}, update-now-poll {}",
        args.seeds,
        args.seed,
        agent::config::format_duration(settings.wait_poll_max),
        agent::config::format_duration(settings.update_now_poll)
    );
    let started = std::time::Instant::now();
    let mut failed: Vec<(u64, Vec<Violation>, Vec<String>)> = vec![];
    let mut seen = fleet_sim::trace::FaultCounts::default();
    for seed in args.seed..args.seed + args.seeds {
        let sc = Scenario { faults: fleet_sim::scenario::FaultPlan::everything(), ..args.scenario(hosts, n, seed) };
        let r = run(&sc)?;
        let v = check::check(&r.trace);
        seen.add(&r.trace.fault_counts());
        let f = Figures::of_trace("", &r.trace, r.wall);
        println!(
            "seed {seed:>5}: {:>3} violations, {} updates, makespan {}, ratio {:.3}, digest {:016x}, {:.2}s",
            v.len(),
            f.updates,
            human(f.makespan),
            f.ratio(),
            r.trace.digest(),
            r.wall.as_secs_f64()
        );
        if !v.is_empty() || !r.finished {
            let before = v.first().map_or(r.trace.end, |x| x.at);
            let lead = r.trace.transitions_before(before, 30);
            if !r.finished {
                println!("seed {seed}: hit its time limit");
            }
            failed.push((seed, v, lead));
        }
    }
    println!("{} seeds in {:.1}s; {} with violations or unfinished", args.seeds, started.elapsed().as_secs_f64(), failed.len());
    println!("faults over the sweep: {seen}");
    for (seed, v, lead) in &failed {
        println!("SIM_SEED={seed}:");
        for x in v.iter().take(10) {
            println!("  {x}");
        }
        println!("  transitions before the first:");
        for line in lead {
            println!("    {line}");
        }
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One rollout drawn as an SVG timeline.
fn picture(args: &Args, path: &str) -> Result<ExitCode, String> {
    let hosts = args.hosts.unwrap_or(60);
    let n = args.n.first().copied().unwrap_or(5);
    let sc = args.scenario(hosts, n, args.seed);
    let r = run(&sc)?;
    let f = Figures::of_trace(&format!("agent, N = {n}"), &r.trace, r.wall);
    let title = format!(
        "Rollout of {hosts} hosts, at most {n} at once (seed {}): makespan {}, {:.2} x the lower bound",
        args.seed,
        human(f.makespan),
        f.ratio()
    );
    std::fs::write(path, svg::timeline(&r.trace, &title)).map_err(|e| format!("cannot write {path}: {e}"))?;
    header();
    row(&f, Some(check::check(&r.trace).len()));
    println!("wrote {path}");
    Ok(ExitCode::SUCCESS)
}
