//! The part of the world the daemon plays around one agent: crashes mid-drain, agents that stay
//! down for long or for good, and boots whose API or ECS agent stays away, each as its plan says
//! and noted in the host's history.

use std::time::Duration;

use agent::backoff::Jitter;
use agent::cluster::InstanceStatus;
use agent::shutdown::Shutdown;
use testkit::fake_ecs::FakeEcs;
use testkit::node::{DaemonPlan, Interruption, Node, NodeEventKind};
use tokio::time::Instant;

mod common;
use common::*;

const MIN: Duration = Duration::from_secs(60);

/// One host with a service task that drains for ten minutes, run as a daemon under `plan` for
/// `run_for`; returns the node, the cluster and when the run started.
async fn daemon(plan: &mut DaemonPlan, run_for: Duration) -> (Node, FakeEcs, Instant) {
    let ecs = FakeEcs::new("c", 1);
    // Held, not rolled back: these are the machine's boot effects, seen through a host that waits
    // them out (the rollback has its own tests).
    let n = node("a", Some(&ecs), config("[health]\non-failure = \"hold\"\n[cluster]"));
    ecs.add_tasks(&n.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(10 * MIN, 10 * MIN);
    let t0 = Instant::now();
    let (trigger, stop) = Shutdown::new();
    let stopper = async {
        tokio::time::sleep(run_for).await;
        trigger.fire();
    };
    tokio::join!(n.run_daemon_with(plan, stop), stopper);
    (n, ecs, t0)
}

fn plan() -> DaemonPlan {
    DaemonPlan {
        restart_delay: (Duration::from_secs(5), Duration::from_secs(5)),
        restart_on_exit: true,
        rng: Jitter::seeded(3),
        ..DaemonPlan::fixed(REBOOT)
    }
}

/// When each event of `kind` happened, after `t0`.
fn times(n: &Node, t0: Instant, kind: &NodeEventKind) -> Vec<Duration> {
    n.history().iter().filter(|e| e.kind == *kind).map(|e| e.at - t0).collect()
}

#[tokio::test(start_paused = true)]
async fn an_agent_killed_mid_drain_and_never_restarted_leaves_its_instance_draining() {
    let mut p = DaemonPlan { on_first_drain: Some(Interruption::Crash), restart_after_crash: false, ..plan() };
    let (n, ecs, t0) = daemon(&mut p, 120 * MIN).await;
    assert_eq!(times(&n, t0, &NodeEventKind::AgentStarted).len(), 1, "{:?}", n.history());
    let crashed = times(&n, t0, &NodeEventKind::AgentCrashed);
    assert_eq!(crashed.len(), 1);
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Draining));
    assert!(ecs.attribute(&n.arn, &drained(&n)).is_some(), "the marker keeps its slot");
    assert_eq!(n.host.reboot_requests(), 0);
    assert!(p.on_first_drain.is_none(), "used up");
}

#[tokio::test(start_paused = true)]
async fn a_long_restart_keeps_a_crashed_agent_down_for_its_delay() {
    let mut p = DaemonPlan {
        on_first_drain: Some(Interruption::Crash),
        long_restart_chance: 1.0,
        long_restart_delay: (30 * MIN, 30 * MIN),
        ..plan()
    };
    let (n, ecs, t0) = daemon(&mut p, 240 * MIN).await;
    let crashed = times(&n, t0, &NodeEventKind::AgentCrashed)[0];
    let started = times(&n, t0, &NodeEventKind::AgentStarted);
    assert_eq!(started.get(1).copied(), Some(crashed + 30 * MIN), "{:?}", n.history());
    assert_eq!(n.host.running_version(), "1.1.0", "the returning agent finished the update");
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn a_sigterm_mid_drain_stops_the_agent_and_systemd_restarts_it() {
    let mut p = DaemonPlan { on_first_drain: Some(Interruption::Terminate), ..plan() };
    let (n, ecs, t0) = daemon(&mut p, 240 * MIN).await;
    assert_eq!(times(&n, t0, &NodeEventKind::AgentTerminated).len(), 1, "{:?}", n.history());
    assert!(times(&n, t0, &NodeEventKind::AgentCrashed).is_empty());
    assert_eq!(n.host.running_version(), "1.1.0");
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn a_boot_can_bring_a_failing_api_and_a_late_ecs_agent() {
    let mut p = DaemonPlan {
        ecs_agent_reconnect: (Duration::from_secs(30), Duration::from_secs(30)),
        late_reconnect_chance: 1.0,
        late_reconnect: (25 * MIN, 25 * MIN),
        api_errors_chance: 1.0,
        api_errors_after_boot: (15 * MIN, 15 * MIN),
        ..plan()
    };
    let (n, ecs, t0) = daemon(&mut p, 240 * MIN).await;
    let booted = n.history().iter().find(|e| matches!(e.kind, NodeEventKind::Booted { .. })).map(|e| e.at - t0);
    let booted = booted.expect("booted");
    let api = n.history().into_iter().find_map(|e| match e.kind {
        NodeEventKind::ApiFailingAfterBoot { lasting } => Some((e.at - t0, lasting)),
        _ => None,
    });
    assert_eq!(api, Some((booted, 15 * MIN)));
    assert_eq!(times(&n, t0, &NodeEventKind::EcsAgentReconnected), [booted + 25 * MIN]);
    assert_eq!(n.host.running_version(), "1.1.0");
    assert_clean(&ecs, &n);
}

/// The status attribute's phase and result.
fn phase_and_result(ecs: &FakeEcs, n: &Node) -> (String, String) {
    let v = ecs.attribute(&n.arn, "br-update.status").unwrap_or_default();
    let st = agent::status::Status::parse(&v).unwrap_or_else(|| panic!("unreadable status `{v}`"));
    (st.phase, st.result)
}

#[tokio::test(start_paused = true)]
async fn a_boot_can_leave_the_instance_impaired_for_a_while_and_the_update_finishes_once_it_clears() {
    let mut p = DaemonPlan { impaired_chance: 1.0, impaired_for: (20 * MIN, 20 * MIN), ..plan() };
    let (n, ecs, t0) = daemon(&mut p, 240 * MIN).await;
    let booted = n.history().iter().find(|e| matches!(e.kind, NodeEventKind::Booted { .. })).map(|e| e.at - t0).expect("booted");
    let impaired = times(&n, t0, &NodeEventKind::ImpairedAfterBoot { lasting: Some(20 * MIN) });
    assert_eq!(impaired, [booted], "{:?}", n.history());
    assert_eq!(times(&n, t0, &NodeEventKind::HealthRecovered), [booted + 20 * MIN]);
    assert_eq!(n.host.running_version(), "1.1.0");
    assert_clean(&ecs, &n);
    assert_eq!(n.record().last_result.as_deref(), Some("updated"));
    assert!(ecs.attribute(&n.arn, "br-update.failed").is_some_and(|m| m.contains("instance-impaired")), "the gate failed first");
}

#[tokio::test(start_paused = true)]
async fn a_boot_into_a_release_bad_on_the_host_leaves_it_impaired_for_good() {
    let mut p = DaemonPlan { bad_release: Some("1.1.0".into()), impaired_chance: 1.0, impaired_for: (MIN, MIN), ..plan() };
    let (n, ecs, t0) = daemon(&mut p, 240 * MIN).await;
    assert_eq!(times(&n, t0, &NodeEventKind::ImpairedAfterBoot { lasting: None }).len(), 1, "{:?}", n.history());
    assert!(times(&n, t0, &NodeEventKind::HealthRecovered).is_empty(), "for good, whatever the chance of a passing one");
    assert_eq!(phase_and_result(&ecs, &n), ("held".into(), "held-health".into()));
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Draining), "held out of service");
    assert!(ecs.attribute(&n.arn, &drained(&n)).is_some(), "the slot stays taken");
}
