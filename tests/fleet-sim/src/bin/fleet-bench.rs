use fleet_sim::{check, metrics::Figures, scenario::Scenario, sim};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let faults = args.get(3).is_some_and(|s| s == "faults");
    let mut sc = if faults { Scenario::with_faults(hosts, n, 1) } else { Scenario::realistic(hosts, n, 1) };
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok()).map(std::time::Duration::from_secs);
    if let Some(d) = env("WPM") { sc.wait_poll_max = d; }
    if let Some(d) = env("UNP") { sc.update_now_poll = d; }
    let run = sim::run(&sc).expect("run");
    let f = Figures::of_trace("agent", &run.trace, run.wall);
    println!("{f:#?}\nratio {:.3} finished {}", f.ratio(), run.finished);
    println!("{:?}", run.trace.calls_by_op());
    let mut calls = run.trace.calls.clone();
    calls.sort_by_key(|c| c.at);
    let (mut best, mut lo, mut at) = (0usize, 0usize, 0usize);
    for hi in 0..calls.len() {
        while calls[hi].at - calls[lo].at >= 1000 { lo += 1; }
        if hi - lo + 1 > best { best = hi - lo + 1; at = lo; }
    }
    println!("peak window at {} (published {}):", calls[at].at, run.trace.published);
    for c in &calls[at..at + best] { println!("   {} h{} {}", c.at, c.host, c.op); }
    if let Ok(list) = std::env::var("SHOW") {
        let ph = run.trace.phases();
        for h in list.split(',') {
            let i: usize = h.trim_start_matches('h').parse().unwrap();
            println!("{h}: {:?}\n  events {:?}", ph[i], run.trace.hosts[i].events);
            for e in run.trace.ecs.iter().filter(|e| e.host == i) { println!("    {} {:?} {:?}", e.at, e.by, e.change); }
        }
    }
    if std::env::var("RB").is_ok() {
        let mut boots = vec![];
        for h in &run.trace.hosts {
            let mut req = None;
            for (at, k) in &h.events {
                match k {
                    testkit::node::NodeEventKind::RebootRequested => req = Some(*at),
                    testkit::node::NodeEventKind::Booted { .. } => { if let Some(r) = req.take() { boots.push((*at, *at - r)); } }
                    _ => {}
                }
            }
        }
        boots.sort();
        for b in boots.iter().take(200) { print!("{}/{} ", b.0 / 1000, b.1 / 1000); }
        println!();
    }
    let v = check::check(&run.trace);
    println!("{} violations", v.len());
    for x in v.iter().take(10) { println!("  {x}"); }
}
