//! 1,000 hosts, the lease, and a daily 4-hour maintenance window: the fleet spreads its drains over
//! the window (not its opening minute), none starts outside it, and the checker finds nothing.


use agent::config::Config;
use fleet_sim::check;
use fleet_sim::scenario::Scenario;
use fleet_sim::sim::{self, EPOCH_SECS};
use testkit::fake_ecs::{Actor, EcsChange};
use agent::cluster::InstanceStatus;

const WINDOW: &str = r#"
[maintenance]
expected-duration = "30m"
[[maintenance.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "09:00"
length = "4h"
"#;

#[test]
fn a_thousand_hosts_spread_over_a_four_hour_window() {
    let maintenance = Config::parse(WINDOW, "window").expect("valid window").maintenance;
    let scenario = Scenario { maintenance: Some(maintenance), ..Scenario::realistic(1000, 60, 7) };
    let run = sim::run(&scenario).expect("simulation runs");
    let violations = check::check(&run.trace);
    assert!(violations.is_empty(), "{violations:?}");
    // Every host reached its end, those whose seed puts them last in the window included.
    assert!(run.finished, "the run hit its time limit: some host never fitted its update into a window");
    // The clock starts Friday 08:00 UTC; the first window is 09:00-13:00 UTC (t = 1 h .. 5 h).
    let day_ms: u64 = 86_400_000;
    let epoch_ms = (EPOCH_SECS * 1000) as u64;
    let starts: Vec<u64> = run
        .trace
        .ecs
        .iter()
        .filter(|r| r.by == Actor::Agent && r.change == EcsChange::Status(InstanceStatus::Draining))
        .map(|r| r.at)
        .collect();
    assert!(starts.len() >= 990, "only {} drains", starts.len());
    let mut buckets = [0usize; 16];
    let mut later_days = 0;
    for &t in &starts {
        let wall = epoch_ms + t;
        let into_day = wall % day_ms;
        let nine = 9 * 3_600_000;
        assert!(
            (nine..nine + 4 * 3_600_000).contains(&into_day),
            "a drain started outside the window at {} UTC into the day",
            check::clock(into_day)
        );
        if t < day_ms {
            buckets[((into_day - nine) / (15 * 60_000)) as usize] += 1;
        } else {
            later_days += 1;
        }
    }
    let first_day: usize = buckets.iter().sum();
    eprintln!("MEASURE: drain starts per 15 minutes of the first 09:00-13:00 UTC window (1,000 hosts, N = 60):");
    for (i, n) in buckets.iter().enumerate() {
        eprintln!("MEASURE:   {:02}:{:02}  {:4}  {}", 9 + i / 4, (i % 4) * 15, n, "#".repeat(n / 4));
    }
    eprintln!("MEASURE:   first window {first_day}, later windows {later_days}, wall {:.1} s", run.wall.as_secs_f64());
    let busiest = *buckets.iter().max().unwrap_or(&0);
    assert!(busiest * 100 <= first_day * 15, "the fleet rushed one quarter hour: {buckets:?}");
    assert!(buckets[..2].iter().sum::<usize>() * 100 <= first_day * 25, "rushed the opening: {buckets:?}");
}
