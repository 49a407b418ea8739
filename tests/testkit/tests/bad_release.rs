//! A bad release stops at the first host: failure markers halt a version fleet-wide, a new
//! version goes to one canary before it widens to N, and a later version is not blocked by an
//! earlier one's failures. Component tests on paused time.

use std::time::Duration;

use agent::cluster::InstanceStatus;
use agent::cycle::Outcome;
use agent::shutdown::Shutdown;
use agent::status::{short_id, Status};
use fake_bottlerocket::Faults;
use testkit::fake_ecs::{EcsChange, EcsFaults, FakeEcs, LocalTaskView};
use testkit::node::Node;

mod common;
use common::*;

const FAILED: &str = "br-update.failed";
/// `health.on-failure = "hold"` (the default is rollback).
const HOLD: &str = "[health]\non-failure = \"hold\"\n[cluster]";

fn status_of(ecs: &FakeEcs, n: &Node) -> Status {
    let v = ecs.attribute(&n.arn, "br-update.status").unwrap_or_default();
    Status::parse(&v).unwrap_or_else(|| panic!("{}: unreadable status `{v}`", n.name))
}

fn updated() -> Outcome {
    Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }
}

#[tokio::test(start_paused = true)]
async fn a_version_that_rolled_back_on_one_host_halts_it_on_the_others_until_the_marker_is_cleared() {
    let ecs = FakeEcs::new("c", 1);
    let a = Node::new("a", host(Faults { rollback_on_boot: true, ..Faults::default() }), Some(&ecs), clock(), config(""), 3);
    let b = node("b", Some(&ecs), config(""));
    let outcomes = a.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[1], Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    let marker = ecs.attribute(&a.arn, FAILED).expect("a failure marker");
    assert!(marker.starts_with("v1:1.1.0:") && marker.ends_with(":rolled-back"), "{marker}");

    let outcome = b.agent(Shutdown::never()).run(true).await;
    assert!(matches!(&outcome, Outcome::Halted { version, failed_on } if version == "1.1.0" && failed_on == &[a.arn.clone()]), "{outcome:?}");
    assert_eq!(b.host.reboot_requests(), 0, "a halted version is not installed");
    assert!(!b.host.requests().iter().any(|r| r.contains("prepare")), "not even downloaded");
    let st = status_of(&ecs, &b);
    assert_eq!(st.result, "halted");
    assert!(st.detail.contains("version 1.1.0 failed on") && st.detail.contains(short_id(&a.arn)), "{st:?}");

    // The operator resumes the version by clearing the marker.
    ecs.operator_delete(&a.arn, FAILED);
    assert_eq!(b.run_once_through_reboots(REBOOT, 2).await.last(), Some(&updated()));
}

#[tokio::test(start_paused = true)]
async fn a_later_version_is_not_blocked_by_an_earlier_ones_failures() {
    let ecs = FakeEcs::new("c", 1);
    let b = node("b", Some(&ecs), config(""));
    let other = ecs.register("other");
    ecs.operator_put(&other, FAILED, "v1:1.0.5:1800000000:rolled-back");
    let outcomes = b.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&updated()));
}

#[tokio::test(start_paused = true)]
async fn halting_can_be_switched_off_or_wait_for_more_failures() {
    let ecs = FakeEcs::new("c", 1);
    let other = ecs.register("other");
    ecs.operator_put(&other, FAILED, "v1:1.1.0:1800000000:rolled-back");
    let b = node("b", Some(&ecs), config("[cluster]\nhalt-after-failures = 2"));
    assert_eq!(b.run_once_through_reboots(REBOOT, 2).await.last(), Some(&updated()), "one failure of two allowed");
    let c = node("c", Some(&ecs), config("[cluster]\nhalt-after-failures = 0"));
    assert_eq!(c.run_once_through_reboots(REBOOT, 2).await.last(), Some(&updated()), "never halts");
}

#[tokio::test(start_paused = true)]
async fn a_host_that_cannot_return_to_service_halts_the_version_for_the_others() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(HOLD));
    let b = node("b", Some(&ecs), config(""));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    ecs.set_agent_connected(&a.arn, false);
    a.host.boot();
    // a holds its slot for good (its ECS agent never reconnects); b looks later.
    let held = tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await;
    assert!(held.is_err(), "a must still hold");
    assert_eq!(status_of(&ecs, &a).phase, "held");
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.contains("ecs-agent-not-connected")));
    let outcome = b.agent(Shutdown::never()).run(true).await;
    assert!(matches!(outcome, Outcome::Halted { .. }), "{outcome:?}");
    assert_eq!(ecs.status(&b.arn), Some(InstanceStatus::Active));
}

/// Four hosts want the new version at once (N = 3) and drain for ten minutes each. Returns the
/// most instances DRAINING at once before the first host finished its update, and overall.
async fn canary_scenario(canaries: u32) -> (usize, usize) {
    let ecs = FakeEcs::new("c", 1);
    let cfg = config(&format!("[cluster]\nmax-concurrent = 3\ncanary-hosts = {canaries}"));
    let nodes: Vec<Node> = (0..4).map(|i| Node::new(&format!("h{i}"), host(Faults::default()), Some(&ecs), clock(), cfg.clone(), i)).collect();
    for n in &nodes {
        ecs.add_tasks(&n.arn, Some("ecs-svc/web"), 1);
    }
    ecs.set_drain_time(Duration::from_secs(600), Duration::from_secs(600));
    let runs = nodes.iter().map(|n| n.run_once_through_reboots(REBOOT, 2));
    let outcomes = futures_util::future::join_all(runs).await;
    assert!(outcomes.iter().all(|o| o.last() == Some(&updated())), "{outcomes:?}");
    let (mut draining, mut before, mut overall, mut first_done) = (std::collections::BTreeSet::new(), 0, 0, false);
    for e in ecs.history() {
        match &e.change {
            EcsChange::Status(InstanceStatus::Draining) => {
                draining.insert(e.instance.clone());
            }
            EcsChange::Status(_) => {
                draining.remove(&e.instance);
            }
            EcsChange::Put { name, value } if name == "br-update.status" => {
                first_done |= Status::parse(value).is_some_and(|s| s.result == "updated");
            }
            _ => {}
        }
        overall = overall.max(draining.len());
        if !first_done {
            before = before.max(draining.len());
        }
    }
    (before, overall)
}

#[tokio::test(start_paused = true)]
async fn a_new_version_goes_to_one_canary_first_then_widens_to_n() {
    let (before, overall) = canary_scenario(1).await;
    assert_eq!(before, 1, "only the canary drains until it has updated");
    assert_eq!(overall, 3, "then the limit widens to N");
}

#[tokio::test(start_paused = true)]
async fn without_a_canary_n_hosts_take_the_new_version_at_once() {
    let (before, _) = canary_scenario(0).await;
    assert_eq!(before, 3);
}

// ---------------------------------------------------------------- health gate and bake

/// Runs a's update up to the reboot, boots it with `impaired` health, and runs its agent for an
/// hour (or until it finishes); returns its outcome, if it finished.
async fn boot_impaired(ecs: &FakeEcs, a: &Node) -> Option<Outcome> {
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    ecs.set_health(&a.arn, Some("IMPAIRED"));
    a.host.boot();
    tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await.ok()
}

#[tokio::test(start_paused = true)]
async fn an_impaired_instance_fails_the_gate_holds_its_slot_and_halts_the_version() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(HOLD));
    let b = node("b", Some(&ecs), config(""));
    assert_eq!(boot_impaired(&ecs, &a).await, None, "a holds while impaired");
    let st = status_of(&ecs, &a);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("held", "held-health"), "{st:?}");
    assert!(st.detail.contains("IMPAIRED"), "{st:?}");
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Draining), "out of service while held");
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.contains("instance-impaired")));
    assert!(matches!(b.agent(Shutdown::never()).run(true).await, Outcome::Halted { .. }));
    // The impairment clears: a finishes its update (the marker stays for the operator).
    ecs.set_health(&a.arn, Some("OK"));
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert_eq!(outcome, updated());
    assert_clean(&ecs, &a);
}

#[tokio::test(start_paused = true)]
async fn on_failure_return_records_the_failure_and_gives_the_slot_back() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config("[health]\non-failure = \"return\"\n[cluster]"));
    let outcome = boot_impaired(&ecs, &a).await;
    assert_eq!(outcome, Some(Outcome::Finished { result: "failed-health".into(), version: "1.1.0".into() }));
    assert_clean(&ecs, &a);
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.starts_with("v1:1.1.0:")));
}

/// A host that gives its slot back after a failed gate sets its instance ACTIVE on its marker,
/// whatever a read says: after a quick drain and reboot, a describe whose status lags a minute
/// still says ACTIVE, and the instance must not be left DRAINING. Only an instance this host set
/// ACTIVE itself after the boot, and still reads so, skips that call.
#[tokio::test(start_paused = true)]
async fn a_host_that_returns_after_a_failed_gate_sets_active_whatever_a_lagging_read_says() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config("[health]\non-failure = \"return\"\n[cluster]"));
    tokio::time::sleep(Duration::from_secs(600)).await;
    ecs.set_faults(EcsFaults { status_lag: Duration::from_secs(60), ..EcsFaults::default() });
    let outcome = boot_impaired(&ecs, &a).await;
    assert_eq!(outcome, Some(Outcome::Finished { result: "failed-health".into(), version: "1.1.0".into() }));
    assert_clean(&ecs, &a);
}

/// a is the canary (it bakes ten minutes); `fault_after` into the bake its instance turns
/// IMPAIRED, if at all. Returns a's outcome (if it finished within two hours) and how long the
/// slot was kept after the instance was ACTIVE again.
async fn bake_scenario(cfg: &str, fault_after: Option<Duration>) -> (Option<Outcome>, FakeEcs, Node) {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(cfg));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    a.host.boot();
    let agent = a.agent(Shutdown::never());
    let fault = async {
        let Some(after) = fault_after else { return };
        while status_of(&ecs, &a).phase != "baking" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(after).await;
        ecs.set_health(&a.arn, Some("IMPAIRED"));
    };
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(7200), agent.run(true)), fault);
    (outcome.ok(), ecs, a)
}

#[tokio::test(start_paused = true)]
async fn the_canary_keeps_its_slot_through_the_bake_then_gives_it_back() {
    let (outcome, ecs, a) = bake_scenario("", None).await;
    assert_eq!(outcome, Some(updated()));
    assert_clean(&ecs, &a);
    let history = ecs.history();
    let active = history.iter().find(|e| e.change == EcsChange::Status(InstanceStatus::Active)).expect("set ACTIVE").at;
    let released = history.iter().rfind(|e| matches!(&e.change, EcsChange::Delete { name } if name == "br-update.drained")).expect("marker removed").at;
    assert!(released.duration_since(active) >= Duration::from_secs(600), "the slot was kept for the whole canary bake");
}

#[tokio::test(start_paused = true)]
async fn a_slow_burning_fault_during_the_bake_is_caught_and_halts_the_version() {
    let (outcome, ecs, a) = bake_scenario(HOLD, Some(Duration::from_secs(300))).await;
    assert_eq!(outcome, None, "a holds its slot");
    let st = status_of(&ecs, &a);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("held", "held-bake"), "{st:?}");
    assert!(st.detail.contains("IMPAIRED"), "the status says what fails now: {st:?}");
    assert!(ecs.attribute(&a.arn, "br-update.drained").is_some(), "the slot stays held");
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.contains("instance-impaired")));
}

#[tokio::test(start_paused = true)]
async fn a_version_is_taken_only_once_the_host_has_known_of_it_for_min_release_age() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config("min-release-age = \"1d\""));
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(&outcome, Outcome::Skipped { reason } if reason.contains("soaking")), "{outcome:?}");
    assert_eq!(status_of(&ecs, &a).result, "skipped-soaking");
    let first = a.record().first_seen.get("1.1.0").copied().expect("first sighting kept");
    // Half a day later, after a restart: still soaking, from the same first sighting.
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Skipped { .. }));
    assert_eq!(a.record().first_seen.get("1.1.0"), Some(&first));
    tokio::time::sleep(Duration::from_secs(12 * 3600 + 60)).await;
    assert_eq!(a.run_once_through_reboots(REBOOT, 2).await.last(), Some(&updated()));
}

#[tokio::test(start_paused = true)]
async fn a_daemon_task_family_that_does_not_come_back_fails_the_gate() {
    let cfg = "[health]\ntask-families = [\"log-router\"]\ntask-timeout = \"5m\"\non-failure = \"return\"\n[cluster]";
    // Comes back: the scheduler places the log router a minute after the instance is ACTIVE.
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(cfg));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    a.host.boot();
    let agent = a.agent(Shutdown::never());
    let scheduler = async {
        while ecs.status(&a.arn) != Some(InstanceStatus::Active) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        ecs.add_family_tasks(&a.arn, Some("ecs-svc/daemon"), Some("log-router"), 1);
    };
    let (outcome, ()) = tokio::join!(agent.run(true), scheduler);
    assert_eq!(outcome, updated());

    // Never comes back: the gate fails, the version is marked failed.
    let ecs = FakeEcs::new("c", 1);
    let b = node("b", Some(&ecs), config(cfg));
    let outcomes = b.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "failed-health".into(), version: "1.1.0".into() }));
    assert!(ecs.attribute(&b.arn, FAILED).is_some_and(|m| m.contains("task-family-missing")));
    assert_clean(&ecs, &b);
}

#[tokio::test(start_paused = true)]
async fn a_download_of_a_halted_version_does_not_hold_a_host_back_from_a_newer_release() {
    let ecs = FakeEcs::new("c", 1);
    let b = node("b", Some(&ecs), config(""));
    let other = ecs.register("other");
    // b downloads 1.1.0 (prepare takes 2 s); another host's failure on 1.1.0 lands just after
    // b's check before the download (its first listing), so b finds the version halted once it
    // holds the slot.
    let failure = async {
        while !ecs.call_log().iter().any(|c| c.op == "ListAttributes") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ecs.operator_put(&other, FAILED, "v1:1.1.0:1800000000:rolled-back");
    };
    let agent = b.agent(Shutdown::never());
    let (first, ()) = tokio::join!(agent.run(true), failure);
    assert!(matches!(first, Outcome::Halted { .. }), "{first:?}");
    assert_eq!(b.host.update_state(), Some(fake_bottlerocket::UpdateState::Staged), "1.1.0 stays downloaded");
    // 1.2.0 comes out: b takes it, not the halted download.
    b.host.publish(["1.0.0", "1.1.0", "1.2.0"]);
    let outcomes = b.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.2.0".into() }), "{outcomes:?}");
}

/// A version halted while a host waits for the slot: the look that finds the slot free claims
/// without reading the failure markers, and the check after the claim finds the halt, withdraws
/// the claim and ends the round halted, before any drain.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_claims_a_version_halted_meanwhile_withdraws_before_any_drain() {
    let ecs = FakeEcs::new("c", 1);
    let b = node("b", Some(&ecs), config("[cluster]\ncanary-hosts = 0"));
    let holder = hold_a_slot(&ecs);
    let other = ecs.register("other");
    let name = lease(&b);
    let halt_then_free = async {
        tokio::time::sleep(Duration::from_secs(12 * 60)).await;
        ecs.operator_put(&other, FAILED, "v1:1.1.0:1800000720:rolled-back");
        tokio::time::sleep(Duration::from_secs(3 * 60)).await;
        ecs.operator_delete(&holder, &name);
    };
    let agent = b.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(agent.run(true), halt_then_free);
    assert!(matches!(outcome, Outcome::Halted { .. }), "{outcome:?}");
    let claimed = ecs.history().iter().any(|e| &*e.instance == b.arn.as_str() && matches!(&e.change, EcsChange::Put { name: put, .. } if *put == name));
    assert!(claimed, "the look that found the slot free claimed it");
    assert_eq!(b.host.reboot_requests(), 0);
    assert!(!ecs.history().iter().any(|e| &*e.instance == b.arn.as_str() && e.change == EcsChange::Status(InstanceStatus::Draining)), "b was drained");
    assert_clean(&ecs, &b);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_behind_a_holder_within_the_expected_duration_reads_no_failure_markers_on_its_looks() {
    // Without a canary, and with one that has not passed: every look but the first then also
    // counts the canaries at its gate (the limit those looks would apply).
    for (cfg, canary) in [("[cluster]\ncanary-hosts = 0", false), ("", true)] {
        let ecs = FakeEcs::new("c", 1);
        let b = node("b", Some(&ecs), config(cfg));
        // Another host drains for the whole test, well within the expected duration (45 min).
        hold_a_slot(&ecs);
        still_waiting_after(&b, 40).await;
        let calls = ecs.calls();
        let looks = calls.get("DescribeClusters").copied().unwrap_or(0);
        assert!(looks >= 3, "several looks in 40 minutes: {calls:?}");
        // One listing of the claims per look, and the failure markers once, at the round's start.
        let counts = if canary { looks - 1 } else { 0 };
        assert_eq!(calls.get("ListAttributes").copied().unwrap_or(0), looks + counts + 1, "{cfg:?}: {calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_host_waiting_for_the_slot_learns_of_the_halt_while_it_waits() {
    let ecs = FakeEcs::new("c", 1);
    let b = node("b", Some(&ecs), config(""));
    // The canary holds the only slot for good (it holds after failing), and fails meanwhile.
    let canary = ecs.register("canary");
    ecs.operator_put(&canary, "br-update.lease", "v1:h:1800000000:1900000000:0badf00d:1.1.0");
    let failure = async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        ecs.operator_put(&canary, FAILED, "v1:1.1.0:1800000600:instance-impaired");
    };
    let agent = b.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(4 * 3600), agent.run(true)), failure);
    assert!(matches!(outcome, Ok(Outcome::Halted { .. })), "{outcome:?}");
    assert_eq!(status_of(&ecs, &b).result, "halted");
    assert_clean(&ecs, &b);
}

/// One update of `a` (with the `extra` settings) whose ECS agent is away `away` after the boot,
/// the ECS agent's local endpoint as `view` shows it; the cluster, and how many calls it had
/// answered at the boot.
async fn update_with_the_ecs_agent_away(away: Duration, view: LocalTaskView, extra: &str) -> (FakeEcs, usize) {
    let ecs = FakeEcs::new("c", 1);
    ecs.set_local_task_view(view);
    let a = node("a", Some(&ecs), config(extra));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    tokio::time::sleep(REBOOT).await;
    ecs.set_agent_connected(&a.arn, false);
    a.host.boot();
    let booted = ecs.call_log().len();
    let back = async {
        tokio::time::sleep(away).await;
        ecs.set_agent_connected(&a.arn, true);
    };
    let agent = a.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(agent.run(true), back);
    assert_eq!(outcome, updated(), "ECS agent away {away:?}");
    (ecs, booted)
}

/// DescribeContainerInstances calls from the boot until the instance is set ACTIVE.
async fn gate_describes(away: Duration, view: LocalTaskView, extra: &str) -> usize {
    let (ecs, booted) = update_with_the_ecs_agent_away(away, view, extra).await;
    let after_boot: Vec<&str> = ecs.call_log()[booted..].iter().map(|c| c.op).collect();
    let back_in_service = after_boot.iter().position(|op| *op == "UpdateContainerInstancesState").expect("set ACTIVE");
    after_boot[..back_in_service].iter().filter(|op| **op == "DescribeContainerInstances").count()
}

/// While the ECS agent does not answer on the host, ECS cannot report it connected: the first
/// renewal after boot waits up to a minute for it to answer, so that the renewal's read is the
/// gate's first look; the gate then asks ECS at most once a minute while it is silent, and at
/// every 15 s poll once it answers (or when the endpoint gives no task view at all).
#[tokio::test(start_paused = true)]
async fn the_gate_asks_ecs_about_the_ecs_agent_once_it_answers_on_the_host() {
    // Back in 50 s: the renewal, once it answers, reads the instance the gate passes.
    assert_eq!(gate_describes(Duration::from_secs(50), LocalTaskView::Faithful, "").await, 1);
    // 100 s away: the renewal after a minute, then one look once it answers.
    assert_eq!(gate_describes(Duration::from_secs(100), LocalTaskView::Faithful, "").await, 2);
    // No local view: no wait before the renewal, then a look every poll (15 s), as when the ECS
    // agent answers but is not connected.
    assert_eq!(gate_describes(Duration::from_secs(50), LocalTaskView::Off, "").await, 5);
    // An endpoint that never answers: the renewal after a minute, then a look once a minute
    // (polls every 25 s here: at 60 s, then 135 s): the agent, back at 110 s, is found then.
    let polls = "[health]\npoll-interval = \"25s\"\n[cluster]";
    assert_eq!(gate_describes(Duration::from_secs(110), LocalTaskView::Silent, polls).await, 2);
}

/// The first renewal after boot waits for the ECS agent only while the claim written before the
/// reboot keeps over half a TTL, the keeper's own rule: a host down for 16 of the 20 minutes
/// that claim covers renews at once, whatever its ECS agent does.
#[tokio::test(start_paused = true)]
async fn a_host_back_late_renews_its_claim_at_once_after_boot() {
    for (down, waits) in [(REBOOT, true), (Duration::from_secs(16 * 60), false)] {
        let ecs = FakeEcs::new("c", 1);
        ecs.set_local_task_view(LocalTaskView::Faithful);
        let a = node("a", Some(&ecs), config(""));
        assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
        tokio::time::sleep(down).await;
        ecs.set_agent_connected(&a.arn, false);
        a.host.boot();
        let (booted, boot_at) = (ecs.call_log().len(), tokio::time::Instant::now());
        let back = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            ecs.set_agent_connected(&a.arn, true);
        };
        let agent = a.agent(Shutdown::never());
        let (outcome, ()) = tokio::join!(agent.run(true), back);
        assert_eq!(outcome, updated(), "down {down:?}");
        let renewal = ecs.call_log()[booted..].iter().find(|c| c.op == "PutAttributes").map(|c| c.at - boot_at).expect("renewed");
        match waits {
            true => assert!((Duration::from_secs(59)..=Duration::from_secs(62)).contains(&renewal), "down {down:?}: renewed after {renewal:?}"),
            false => assert!(renewal < Duration::from_secs(5), "down {down:?}: renewed after {renewal:?}"),
        }
    }
}

/// A host that gives its slot back as soon as its checks pass (no canary, no bake) does not
/// rewrite the claim after boot while the reboot's claim keeps over half a TTL: the write would
/// say "verifying" for the second before the claim is removed. Back late (16 of the 20 minutes
/// that claim covers), it renews at once, as a canary (which bakes) always does.
#[tokio::test(start_paused = true)]
async fn a_host_that_returns_at_once_rewrites_its_claim_after_boot_only_when_back_late() {
    // The canary renews again through its 10-minute bake.
    let cases = [("canary-hosts = 0", REBOOT, 0..=0), ("canary-hosts = 0", Duration::from_secs(16 * 60), 1..=1), ("", REBOOT, 1..=3)];
    for (cluster, down, writes) in cases {
        let ecs = FakeEcs::new("c", 1);
        let a = node("a", Some(&ecs), config(&format!("[cluster]\n{cluster}")));
        assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
        tokio::time::sleep(down).await;
        a.host.boot();
        let booted = ecs.history().len();
        assert_eq!(a.agent(Shutdown::never()).run(true).await, updated(), "`{cluster}`, down {down:?}");
        let claim_writes = ecs.history()[booted..]
            .iter()
            .filter(|e| matches!(&e.change, EcsChange::Put { name, .. } if *name == lease(&a)))
            .count();
        assert!(writes.contains(&claim_writes), "`{cluster}`, down {down:?}: {claim_writes} claim writes after boot");
        assert_eq!(ecs.attribute(&a.arn, &lease(&a)), None, "`{cluster}`: the claim is released");
    }
}

/// A canary says "updated" (with the marker the canary count lists) before it gives its slot
/// back, after its bake or at once without one: whoever finds the slot free finds the canary
/// through, and does not claim as a second canary with a bake of its own.
#[tokio::test(start_paused = true)]
async fn a_canary_is_counted_through_before_its_slot_is_free() {
    for cfg in ["[cluster]", "[health]\ncanary-bake-time = \"0s\"\n[cluster]"] {
        let ecs = FakeEcs::new("c", 1);
        let a = node("a", Some(&ecs), config(cfg));
        assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
        tokio::time::sleep(REBOOT).await;
        a.host.boot();
        assert_eq!(a.agent(Shutdown::never()).run(true).await, updated(), "{cfg:?}");
        let history = ecs.history();
        let marker = history.iter().position(|e| matches!(&e.change, EcsChange::Put { name, value } if name == "br-update.updated" && *value == a.host.running_version()));
        let released = history.iter().position(|e| matches!(&e.change, EcsChange::Delete { name } if *name == lease(&a)));
        let (Some(marker), Some(released)) = (marker, released) else { panic!("{cfg:?}: no marker or no release in {history:?}") };
        assert!(marker < released, "{cfg:?}: the slot was free before the update was counted finished");
        // The status written with the marker is the round's last: no second write after the release.
        let later = history[released..].iter().filter(|e| matches!(&e.change, EcsChange::Put { name, .. } if name == "br-update.status")).count();
        assert_eq!(later, 0, "{cfg:?}: status written again after the release");
        let st = status_of(&ecs, &a);
        assert_eq!((st.phase.as_str(), st.result.as_str()), ("idle", "updated"), "{cfg:?}");
        // Drained once and set ACTIVE once, before the bake: the read after it finds it so.
        assert_eq!(ecs.calls().get("UpdateContainerInstancesState"), Some(&2), "{cfg:?}");
        assert!(st.took.is_some_and(|t| t >= REBOOT.as_secs()), "{cfg:?}: the status carries the slot time: {st:?}");
    }
}

/// The health gate's wait is in the status only once it has lasted a minute (after the minute
/// the first renewal may wait): a boot's first seconds without the ECS agent are the norm, and
/// a status write for them would be one more call in every update.
#[tokio::test(start_paused = true)]
async fn the_gate_says_what_it_waits_for_only_once_it_has_waited_a_minute() {
    for (away, said) in [(Duration::from_secs(90), false), (Duration::from_secs(150), true)] {
        let (ecs, _) = update_with_the_ecs_agent_away(away, LocalTaskView::Faithful, "").await;
        let gate_said = ecs.history().iter().any(|e| {
            matches!(&e.change, EcsChange::Put { name, value } if name == "br-update.status" && value.contains(":health-gate:"))
        });
        assert_eq!(gate_said, said, "ECS agent away {away:?}");
    }
}
