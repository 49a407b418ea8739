//! The fleet benchmark: simulates rollouts of the real agent and of the peers' strategies on the
//! same fleet and prints the figures; `--bad-release` how far a bad release spreads and what the
//! canary costs; `--sweep` runs many seeds with faults through the checker; `--controls` runs
//! the negative controls (each hole's fix off, then on); `--svg` draws a rollout's timeline.
//!
//! ```text
//! cargo run --release -p fleet-sim --bin fleet-bench                      # the table, 1,000 hosts
//! cargo run --release -p fleet-sim --bin fleet-bench -- --bad-release     # 1,000 hosts, N = 10, 50
//! cargo run --release -p fleet-sim --bin fleet-bench -- --sweep --seeds 200 --hosts 200 --n 5
//! cargo run --release -p fleet-sim --bin fleet-bench -- --controls
//! cargo run --release -p fleet-sim --bin fleet-bench -- --forecast     # 100 and 1,000 hosts, N = 1, 10, 50
//! cargo run --release -p fleet-sim --bin fleet-bench -- --svg docs/rollout.svg --hosts 60 --n 5
//! ```

use std::process::ExitCode;
use std::time::Duration;

use agent::config::parse_duration;
use fleet_sim::check::{self, Violation};
use fleet_sim::metrics::{chance_peaks, human, peak_within, Figures, OwnUpdates};
use fleet_sim::peers;
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, Run};
use fleet_sim::spread::Spread;
use fleet_sim::svg;

const USAGE: &str = "usage: fleet-bench [--hosts H] [--n 1,10,50] [--seed S] [--no-peers] [--faults]
                   [--wait-poll-max D] [--update-now-poll D] [--ecs-call-spacing D] [--ecs-latency D]
                   [--check-interval D] [--halt-after-failures K]
                   [--throttle] [--svg PATH] [--sweep [--seeds K] [--first-seed S]] [--controls]
                   [--bad-release] [--idle [--days D]] [--explain] [--forecast]
  D is a duration such as 90s, 15m, 1h. --throttle gives the in-memory ECS the documented token
  buckets, half of each taken by the account's other callers. --check-interval: the hosts'
  check interval, over which their first checks spread (1h unless given; the agent's default is 6h).
  --halt-after-failures: the agents' halt (0 unless given, for a good release; the agent's default
  is 1). --idle: calls per host per day while
  nothing is to be updated. Without --svg, --sweep, --controls or --bad-release:
  the benchmark table, then the negative controls.";

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
    ecs_call_spacing: Option<Duration>,
    ecs_latency: Duration,
    check_interval: Option<Duration>,
    svg: Option<String>,
    sweep: bool,
    seeds: u64,
    controls: bool,
    bad_release: bool,
    explain: bool,
    forecast: bool,
    throttle: bool,
    idle: bool,
    days: u32,
    halt_after_failures: Option<u32>,
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
        ecs_call_spacing: None,
        ecs_latency: Duration::from_millis(50),
        check_interval: None,
        svg: None,
        sweep: false,
        seeds: 200,
        controls: false,
        bad_release: false,
        explain: false,
        forecast: false,
        throttle: false,
        idle: false,
        days: 2,
        halt_after_failures: None,
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
            "--ecs-call-spacing" => a.ecs_call_spacing = Some(parse_duration(&value()?)?),
            "--ecs-latency" => a.ecs_latency = parse_duration(&value()?)?,
            "--check-interval" => a.check_interval = Some(parse_duration(&value()?)?),
            "--svg" => a.svg = Some(value()?),
            "--sweep" => a.sweep = true,
            "--controls" => a.controls = true,
            "--bad-release" => a.bad_release = true,
            "--explain" => a.explain = true,
            "--forecast" => a.forecast = true,
            "--throttle" => a.throttle = true,
            "--idle" => a.idle = true,
            "--days" => a.days = number(&value()?)?,
            "--halt-after-failures" => a.halt_after_failures = Some(number(&value()?)?),
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
        if self.throttle {
            sc.faults.bucket_share = 0.5;
        }
        sc.wait_poll_max = self.wait_poll_max.unwrap_or(sc.wait_poll_max);
        sc.update_now_poll = self.update_now_poll.unwrap_or(sc.update_now_poll);
        sc.ecs_call_spacing = self.ecs_call_spacing.unwrap_or(sc.ecs_call_spacing);
        sc.halt_after_failures = self.halt_after_failures.unwrap_or(sc.halt_after_failures);
        if let Some(every) = self.check_interval {
            sc.check_interval = every;
            sc = sc.with_time_limit();
        }
        sc
    }

    /// The same, with a new version bad on `fraction` of the hosts and the agent's default halt.
    fn bad_release(&self, hosts: usize, n: u32, seed: u64, fraction: f64) -> Scenario {
        let bad = Scenario::bad_release(hosts, n, seed, fraction);
        let mut sc = self.scenario(hosts, n, seed);
        sc.faults.bad_release = fraction;
        sc.halt_after_failures = bad.halt_after_failures;
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
    } else if args.bad_release {
        bad_release(&args)
    } else if args.controls {
        controls()
    } else if args.forecast {
        forecast(&args)
    } else if args.idle {
        idle(&args)
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

/// The forecast at publication against the simulated rollout, per fleet size and N.
fn forecast(args: &Args) -> Result<ExitCode, String> {
    let sizes = args.hosts.map_or(vec![100, 1000], |h| vec![h]);
    let ns = if args.n.is_empty() { vec![1, 10, 50] } else { args.n.clone() };
    println!("| hosts | N | forecast makespan | actual | makespan error | quoted ± | per-host error mean | p90 | max | hosts compared | wall |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &hosts in &sizes {
        for &n in ns.iter().filter(|&&n| (n as usize) < hosts) {
            let a = fleet_sim::forecast::measure(hosts, n, args.seed).map_err(|e| e.to_string())?;
            let min = |s: f64| format!("{:.0} min", s / 60.0);
            println!(
                "| {hosts} | {n} | {} | {} | {:+.1}% | {} | {} | {} | {} | {} | {:.0} s |",
                human(a.forecast_makespan),
                human(a.actual_makespan),
                a.makespan_error() * 100.0,
                human(a.quoted_error),
                min(a.per_host.mean),
                min(a.per_host_p90),
                min(a.per_host.max),
                a.compared,
                a.wall.as_secs_f64()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
        "agent settings: the defaults (wait-poll-max {}, update-now-poll {}, ecs-call-spacing {})",
        agent::config::format_duration(first.wait_poll_max),
        agent::config::format_duration(first.update_now_poll),
        agent::config::format_duration(first.ecs_call_spacing)
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
        // The same fleet with a release bad on every host: how many hosts it reaches.
        let bad = run(&args.bad_release(hosts, n, args.seed, 1.0))?;
        let bad_violations = check::check(&bad.trace).len();
        violations += bad_violations;
        row(&f, Some(v.len() + bad_violations), Some(Spread::of(&bad.trace).received));
        let window = (r.trace.published, r.trace.published + f.makespan.as_millis() as u64);
        let phases = r.trace.phases();
        let own = OwnUpdates::of(&r.trace, &phases);
        breakdowns.push((n, f.updates, by_op_within(&r, window), (busiest(&r, 1000), by_chance(&r)), busiest(&r, 60_000), r.trace.ecs_faults.throttled, own.calls(), own.by_stage(), (own.calls_without_idle_wait(), own.idle_wait_calls_per_day())));
    }
    if args.peers {
        // The peers' timings do not depend on the release being bad: one model run gives both.
        let sc = args.bad_release(hosts, 1, args.seed, 1.0);
        for p in [peers::ecs_updater(&sc, args.ecs_latency), peers::kured(&sc, args.ecs_latency)] {
            row(&p.figures, None, Some(p.spread.received));
        }
    }
    println!();
    legend();
    println!();
    let controls_code = controls()?;
    for (n, updates, ops, (second, chance), minute, throttled, (own, own_ops), stages, ((active, active_ops), idle_rate)) in breakdowns {
        let list = |ops: &std::collections::BTreeMap<&str, f64>| ops.iter().map(|(op, c)| format!("{op} {c:.1}")).collect::<Vec<String>>().join(", ");
        println!("\nN = {n}: calls per host update, from its decision to its slot's release: {own:.1} ({})", list(&own_ops));
        let stages: Vec<String> = stages.iter().map(|(s, c)| format!("{s} {c:.1}")).collect();
        println!("  the same calls by stage: {}", stages.join(", "));
        println!("  the same calls with the idle wait left out: {active:.1} ({})", list(&active_ops));
        println!("  the idle wait: {idle_rate:.1} calls per day of a host's wait");
        let per: Vec<String> = ops.iter().map(|(op, c)| format!("{op} {:.1}", *c as f64 / updates.max(1) as f64)).collect();
        println!("  all calls of the fleet, publication to the last release, per update: {}", per.join(", "));
        if args.throttle {
            println!("  calls refused by ECS's token buckets (half of each left to the agents): {throttled}");
        }
        if args.explain {
            println!("  busiest second: {second}");
            println!("  busiest second by chance: {chance}");
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
        "| {:<43} | {:>3} | {:>10} | {:>10} | {:>5} | {:>5} | {:>23} | {:>6} | {:>5} | {:>6} | {:>6} | {:>4} | {:>5} |",
        "strategy", "N", "makespan", "bound", "ratio", "util", "drained min mean/p50/p95/max", "calls", "peak", "peak60", "wall", "viol", "bad"
    );
    println!(
        "|{:-<45}|{:-<5}|{:-<12}|{:-<12}|{:-<7}|{:-<7}|{:-<30}|{:-<8}|{:-<7}|{:-<8}|{:-<8}|{:-<6}|{:-<7}|",
        "", "", "", "", "", "", "", "", "", "", "", "", ""
    );
}

/// A row of the table; `bad`: how many hosts a release bad on every host reached, if measured.
fn row(f: &Figures, violations: Option<usize>, bad: Option<usize>) {
    let d = &f.drained_min;
    println!(
        "| {:<43} | {:>3} | {:>10} | {:>10} | {:>5.3} | {:>5.3} | {:>28} | {:>6.1} | {:>5} | {:>6.2} | {:>5.2}s | {:>4} | {:>5} |",
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
        bad.map_or("-".to_string(), |b| b.to_string()),
    );
}

fn legend() {
    println!("makespan: publication to the last slot's release; bound: updates / N x mean slot time (claim to release);");
    println!("ratio: makespan / bound; util: busy slot time / (N x makespan); calls: ECS calls per update (publication to makespan);");
    println!("peak: most ECS calls fleet-wide in any 1 s; peak60: calls in the busiest minute, per second; wall: simulation time;");
    println!("viol: checker violations (of the rollout and of its bad-release run); bad: hosts that booted into a release bad on");
    println!("every host (IMPAIRED after boot; the agent halts after 1 failure, canary on). Peer rows are models of a schedule");
    println!("(see fleet_sim::peers), not the peers' code.");
}

/// The calls made within `window` (ms of the run, both ends included), by operation.
fn by_op_within(r: &Run, window: (u64, u64)) -> std::collections::BTreeMap<&'static str, u64> {
    let mut m = std::collections::BTreeMap::new();
    for c in r.trace.calls.iter().filter(|c| c.at >= window.0 && c.at <= window.1) {
        *m.entry(c.op).or_default() += 1;
    }
    m
}

/// Calls per host per day while nothing is to be updated, with the agent's defaults.
fn idle(args: &Args) -> Result<ExitCode, String> {
    let hosts = args.hosts.unwrap_or(1000);
    let idle = sim::idle_cost(hosts, args.seed, args.days).map_err(|e| e.to_string())?;
    let per_day = |c: u64| c as f64 / hosts as f64 / f64::from(args.days.max(1));
    let ops: Vec<String> = idle.calls.iter().map(|(op, c)| format!("{op} {:.1}", per_day(*c))).collect();
    println!(
        "idle: {hosts} hosts, nothing to update, the agent's defaults (check-interval {}, update-now-poll {}), {} day(s) after a day's warm-up",
        agent::config::format_duration(idle.check_interval),
        agent::config::format_duration(idle.update_now_poll),
        args.days
    );
    println!("calls per host per day: {:.1} ({}); busiest second fleet-wide: {}; wall {:.1}s", per_day(idle.calls.values().sum()), ops.join(", "), idle.peak_per_s, idle.wall.as_secs_f64());
    println!("local refresh-updates per host per day (the hourly update-now looks' and the rounds'; no ECS call): {:.1}", per_day(idle.refreshes));
    Ok(ExitCode::SUCCESS)
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

/// Draws of [`by_chance`].
const CHANCE_DRAWS: u64 = 20;

/// The busiest second the run's calls would make by chance alone, each moved to a random time
/// within its own minute: when the real one is no higher, nothing brings calls together within
/// a minute, and only the busiest minutes' rate can lower it.
fn by_chance(r: &Run) -> String {
    let mut times: Vec<u64> = r.trace.calls.iter().map(|c| c.at).collect();
    times.sort_unstable();
    let peaks = chance_peaks(&times, 1000, 60_000, CHANCE_DRAWS, r.scenario.seed);
    let real = peak_within(&times, 1000);
    let median = peaks[peaks.len() / 2];
    let below = peaks.iter().filter(|&&p| p < real).count();
    format!(
        "median {median} ({}-{}) over {CHANCE_DRAWS} draws of the same calls, each at a random time within its own minute ({below} draws below the real one)",
        peaks[0],
        peaks[peaks.len() - 1]
    )
}

/// Seeds the canary's cost is averaged over.
const CANARY_SEEDS: u64 = 5;

/// How far a bad release spreads and what the canary costs: a release bad on every host (each
/// N, canary on and off, each `health.on-failure`), then one bad on 5% of the hosts (halting after
/// 1 failure and after 3), then a good release with and without the canary. Fails if any run has
/// a violation or hits its time limit.
fn bad_release(args: &Args) -> Result<ExitCode, String> {
    use agent::config::OnFailure;
    let hosts = args.hosts.unwrap_or(1000);
    let ns = if args.n.is_empty() { vec![10, 50] } else { args.n.clone() };
    let mut failures = 0;
    let mut checked = |r: &Run| {
        let v = check::check(&r.trace);
        failures += v.len() + usize::from(!r.finished);
        for x in v.iter().take(5) {
            println!("  seed {}: {x}", r.scenario.seed);
        }
        v.len()
    };
    println!("A release bad on every host: booting it leaves the instance IMPAIRED; {hosts} hosts, seed {}, halt-after-failures 1", args.seed);
    println!();
    spread_header("canary");
    for on_failure in [OnFailure::Rollback, OnFailure::Hold, OnFailure::Return] {
        for &n in &ns {
            for canary_hosts in [1, 0] {
                let sc = Scenario { canary_hosts, on_failure, ..args.bad_release(hosts, n, args.seed, 1.0) };
                let r = run(&sc)?;
                let v = checked(&r);
                let policy = match on_failure {
                    OnFailure::Rollback => "rollback",
                    OnFailure::Hold => "hold",
                    OnFailure::Return => "return",
                };
                let label = format!("this agent, on-failure {policy}");
                spread_row(&label, n, &canary_hosts.to_string(), &Spread::of(&r.trace), Some(v));
            }
        }
    }
    let sc = args.bad_release(hosts, 1, args.seed, 1.0);
    peer_rows(&sc, args.ecs_latency);
    println!();
    println!("A release bad on 5% of the hosts ({} of {hosts}): the same, canary on, on-failure rollback (the default)", (hosts as f64 * 0.05).round());
    println!();
    spread_header("halt after");
    for &n in &ns {
        for halt in [1, 3] {
            let sc = Scenario { halt_after_failures: halt, ..args.bad_release(hosts, n, args.seed, 0.05) };
            let r = run(&sc)?;
            let v = checked(&r);
            spread_row("this agent", n, &halt.to_string(), &Spread::of(&r.trace), Some(v));
        }
    }
    peer_rows(&args.bad_release(hosts, 1, args.seed, 0.05), args.ecs_latency);
    println!();
    spread_legend();
    println!();
    // One seed's makespans differ by more than the canary costs: the mean over a few seeds.
    let seeds = args.seed..args.seed + CANARY_SEEDS;
    println!(
        "What the canary costs: a good release, {hosts} hosts, seeds {}-{}; the canary bakes {} back in service before N widens",
        seeds.start,
        seeds.end - 1,
        agent::config::format_duration(agent::config::Config::default().health.canary_bake_time)
    );
    println!();
    println!(
        "| {:<11} | {:>3} | {:>6} | {:>15} | {:>10} | {:>5} | {:>26} | {:>6} | {:>4} |",
        "strategy", "N", "canary", "makespan (mean)", "bound", "ratio", "canary costs: mean (range)", "wall", "viol"
    );
    println!("|{:-<13}|{:-<5}|{:-<8}|{:-<17}|{:-<12}|{:-<7}|{:-<28}|{:-<8}|{:-<6}|", "", "", "", "", "", "", "", "", "");
    for &n in &ns {
        let mut without: Vec<f64> = vec![];
        for canary_hosts in [0, 1] {
            let (mut makespans, mut bounds, mut wall, mut v) = (vec![], vec![], 0.0, 0);
            for seed in seeds.clone() {
                let r = run(&Scenario { canary_hosts, ..args.scenario(hosts, n, seed) })?;
                v += checked(&r);
                let f = Figures::of_trace("", &r.trace, r.wall);
                makespans.push(f.makespan.as_secs_f64());
                bounds.push(f.lower_bound.as_secs_f64());
                wall += r.wall.as_secs_f64();
            }
            let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
            let cost = if canary_hosts > 0 && without.len() == makespans.len() {
                let minutes: Vec<f64> = makespans.iter().zip(&without).map(|(with, w)| (with - w) / 60.0).collect();
                let (lo, hi) = minutes.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &m| (lo.min(m), hi.max(m)));
                format!("{:+.0} min ({:+.0}..{:+.0})", mean(&minutes), lo, hi)
            } else {
                "-".to_string()
            };
            if canary_hosts == 0 {
                without = makespans.clone();
            }
            println!(
                "| {:<11} | {:>3} | {:>6} | {:>15} | {:>10} | {:>5.3} | {:>26} | {:>5.1}s | {:>4} |",
                "this agent",
                n,
                canary_hosts,
                human(Duration::from_secs_f64(mean(&makespans))),
                human(Duration::from_secs_f64(mean(&bounds))),
                mean(&makespans) / mean(&bounds),
                cost,
                wall,
                v
            );
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn spread_header(setting: &str) {
    println!(
        "| {:<30} | {:>3} | {:>10} | {:>8} | {:>6} | {:>6} | {:>7} | {:>13} | {:>13} | {:>10} | {:>4} |",
        "strategy", "N", setting, "received", "failed", "halted", "waiting", "first failure", "last received", "last halt", "viol"
    );
    println!("|{:-<32}|{:-<5}|{:-<12}|{:-<10}|{:-<8}|{:-<8}|{:-<9}|{:-<15}|{:-<15}|{:-<12}|{:-<6}|", "", "", "", "", "", "", "", "", "", "", "");
}

fn spread_row(label: &str, n: u32, setting: &str, s: &Spread, violations: Option<usize>) {
    let at = |t: Option<u64>| t.map_or("-".to_string(), |ms| human(Duration::from_millis(ms)));
    println!(
        "| {:<30} | {:>3} | {:>10} | {:>8} | {:>6} | {:>6} | {:>7} | {:>13} | {:>13} | {:>10} | {:>4} |",
        label,
        n,
        setting,
        s.received,
        s.failed,
        s.halted,
        s.waiting,
        at(s.first_failure),
        at(s.last_received),
        at(s.last_halt),
        violations.map_or("-".to_string(), |v| v.to_string())
    );
}

/// The peers' models on the scenario's fleet and bad hosts: neither halts.
fn peer_rows(sc: &Scenario, latency: Duration) {
    for (label, p) in [("ECS Updater model", peers::ecs_updater(sc, latency)), ("kured model", peers::kured(sc, latency))] {
        let s = Spread {
            bad: p.spread.bad,
            received: p.spread.received,
            failed: p.spread.failed,
            last_received: Some(p.spread.last_received),
            ..Spread::default()
        };
        spread_row(label, 1, "-", &s, None);
    }
}

fn spread_legend() {
    println!("received: hosts that booted into the release; failed: of those, hosts it is bad on (they go back to the old");
    println!("version under `rollback`, hold their slot under `hold`, return to service on it under `return`); halted: hosts");
    println!("whose status says `halted`; waiting: hosts still");
    println!("waiting for a slot held by a host the release failed on (they would halt once they got it); times from publication.");
}

/// Many seeds with every fault (one in four with a release bad on 5% of the hosts, see
/// [`Scenario::sweep`]), each through the checker; fails if any run has a violation.
fn sweep(args: &Args) -> Result<ExitCode, String> {
    let hosts = args.hosts.unwrap_or(200);
    let n = args.n.first().copied().unwrap_or(5);
    let settings = args.scenario(hosts, n, args.seed);
    println!(
        "sweep: {} seeds from {}, {hosts} hosts, N = {n}, every fault, one seed in four a release bad on 5% of the hosts; wait-poll-max {}, update-now-poll {}",
        args.seeds,
        args.seed,
        agent::config::format_duration(settings.wait_poll_max),
        agent::config::format_duration(settings.update_now_poll)
    );
    let started = std::time::Instant::now();
    let mut failed: Vec<(u64, Vec<Violation>, Vec<String>)> = vec![];
    let mut seen = fleet_sim::trace::FaultCounts::default();
    // Over the bad-release seeds: runs, hosts that received it, failed, halted, waited, and hosts
    // left out of service (each held by a host the release failed on, or the checker says so).
    let (mut bad_runs, mut received, mut failed_on, mut halted, mut waiting, mut out) = (0, 0, 0, 0, 0, 0);
    for seed in args.seed..args.seed + args.seeds {
        let sweep = Scenario::sweep(hosts, n, seed);
        let sc = Scenario {
            faults: sweep.faults,
            halt_after_failures: sweep.halt_after_failures,
            local_task_view: sweep.local_task_view,
            ..args.scenario(hosts, n, seed)
        };
        let r = run(&sc)?;
        let v = check::check(&r.trace);
        seen.add(&r.trace.fault_counts());
        let f = Figures::of_trace("", &r.trace, r.wall);
        let bad = if sc.faults.bad_release > 0.0 {
            let s = Spread::of(&r.trace);
            bad_runs += 1;
            (received, failed_on, halted, waiting) = (received + s.received, failed_on + s.failed, halted + s.halted, waiting + s.waiting);
            let draining = r.trace.hosts.iter().filter(|h| h.end.status == agent::cluster::InstanceStatus::Draining).count();
            out += draining;
            format!(
                ", bad on {} (halt after {}): {} received, {} failed, {} halted, {} waiting, {draining} left DRAINING",
                s.bad, sc.halt_after_failures, s.received, s.failed, s.halted, s.waiting
            )
        } else {
            String::new()
        };
        println!(
            "seed {seed:>5}: {:>3} violations, {} updates, makespan {}, ratio {:.3}, digest {:016x}, {:.2}s{bad}",
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
    println!(
        "bad releases: {bad_runs} runs; {received} hosts received one, {failed_on} failed on it, {halted} halted, {waiting} waiting behind a failed host, \
         {out} left DRAINING at the end"
    );
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
    row(&f, Some(check::check(&r.trace).len()), None);
    println!("wrote {path}");
    Ok(ExitCode::SUCCESS)
}
