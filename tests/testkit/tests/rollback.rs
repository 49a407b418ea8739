//! `health.on-failure = "rollback"` (the default): a host whose new version fails its gate or its
//! bake goes back to the old version through the updater, still holding its slot, puts the
//! operator's update settings back, and returns to service there. Component tests on paused time.

use std::time::Duration;

use agent::cluster::InstanceStatus;
use agent::cycle::Outcome;
use agent::os_api::OsApi;
use agent::shutdown::Shutdown;
use agent::status::Status;
use fake_bottlerocket::{CommandDurations, FakeHost, Faults, HostConfig};
use testkit::fake_ecs::{EcsChange, FakeEcs};
use testkit::node::Node;

mod common;
use common::*;

const FAILED: &str = "br-update.failed";

fn status_of(ecs: &FakeEcs, n: &Node) -> Status {
    let v = ecs.attribute(&n.arn, "br-update.status").unwrap_or_default();
    Status::parse(&v).unwrap_or_else(|| panic!("{}: unreadable status `{v}`", n.name))
}

/// A host on 1.0.0 whose operator pinned `version-lock` to 1.1.0 (so a restored lock is told
/// apart from the rollback's own), with settings that reach updog `apply_delay` after a commit.
fn pinned_host(published: &[&str], apply_delay: Duration) -> FakeHost {
    FakeHost::new(HostConfig {
        version: "1.0.0".into(),
        published: published.iter().map(|v| v.to_string()).collect(),
        version_lock: "v1.1.0".into(),
        settings_apply_delay: apply_delay,
        durations: CommandDurations::all(Duration::from_secs(2)),
        faults: Faults::default(),
        ..HostConfig::default()
    })
}

/// The live `(version-lock, ignore-waves)`, read through the API as the agent reads them.
async fn settings(n: &Node) -> (String, bool) {
    let s = n.host.update_settings().await.expect("settings");
    (s.version_lock.unwrap_or_default(), s.ignore_waves.unwrap_or_default())
}

/// Runs a's update to its first reboot and boots it into 1.1.0, which ECS finds IMPAIRED.
async fn boot_bad(ecs: &FakeEcs, a: &Node) {
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    ecs.set_health(&a.arn, Some("IMPAIRED"));
    a.host.boot();
}

fn rebooting_into_old() -> Outcome {
    Outcome::Rebooting { target: "1.0.0".into() }
}

#[tokio::test(start_paused = true)]
async fn an_impaired_new_version_is_rolled_back_under_the_slot_and_the_operators_settings_come_back() {
    let ecs = FakeEcs::new("c", 1);
    // updog sees a commit 12 s late: the first refreshes still choose by the operator's lock.
    let a = Node::new("a", pinned_host(&["1.0.0", "1.1.0"], Duration::from_secs(12)), Some(&ecs), clock(), config(""), 7);
    boot_bad(&ecs, &a).await;
    assert_eq!(a.agent(Shutdown::never()).run(true).await, rebooting_into_old());
    assert_eq!(a.host.update_state(), Some(fake_bottlerocket::UpdateState::Ready), "the old version boots next");
    assert_eq!(settings(&a).await, ("v1.1.0".into(), false), "the operator's settings are back before the reboot");
    assert!(ecs.attribute(&a.arn, &drained(&a)).is_some(), "the slot is held through the second reboot");
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Draining));
    let st = status_of(&ecs, &a);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("rebooting", "rolling-back"), "{st:?}");
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.starts_with("v1:1.1.0:") && m.ends_with("instance-impaired")));
    let refreshes = a.host.requests().iter().filter(|r| r.contains("refresh-updates")).count();
    assert!(refreshes >= 3, "refreshed until the lock was applied: {refreshes}");

    ecs.set_health(&a.arn, Some("OK"));
    a.host.boot();
    assert_eq!(a.agent(Shutdown::never()).run(true).await, Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    assert_eq!(a.host.running_version(), "1.0.0");
    assert_clean(&ecs, &a);
    assert!(a.record().is_quarantined("1.1.0", a.now()), "the bad version stays out here");
    assert_eq!(status_of(&ecs, &a).result, "rolled-back");
    // Next round, once updog sees the restored lock: it offers 1.1.0 again, not taken.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let next = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(next, Outcome::Quarantined { .. } | Outcome::Halted { .. }), "{next:?}");
    assert_eq!(a.host.running_version(), "1.0.0");
}

#[tokio::test(start_paused = true)]
async fn a_fault_found_during_the_bake_drains_the_host_again_before_the_rollback_reboot() {
    let ecs = FakeEcs::new("c", 1);
    ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(30));
    let a = node("a", Some(&ecs), config(""));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    a.host.boot();
    let agent = a.agent(Shutdown::never());
    let world = async {
        while status_of(&ecs, &a).phase != "baking" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Back in service: the scheduler places a task, then the instance turns IMPAIRED.
        ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 2);
        tokio::time::sleep(Duration::from_secs(300)).await;
        ecs.set_health(&a.arn, Some("IMPAIRED"));
    };
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(7200), agent.run(true)), world);
    assert_eq!(outcome.ok(), Some(rebooting_into_old()), "the rollback reboot, once drained");
    assert_eq!(ecs.unstopped_tasks(&a.arn), 0, "no task runs when the rollback reboot is asked for");
    let statuses: Vec<InstanceStatus> = ecs.history().into_iter()
        .filter(|e| *e.instance == *a.arn)
        .filter_map(|e| match e.change { EcsChange::Status(s) => Some(s), _ => None })
        .collect();
    assert_eq!(statuses, vec![InstanceStatus::Draining, InstanceStatus::Active, InstanceStatus::Draining], "drained again");
    assert!(ecs.attribute(&a.arn, FAILED).is_some_and(|m| m.contains("instance-impaired")));
    ecs.set_health(&a.arn, Some("OK"));
    a.host.boot();
    assert_eq!(a.agent(Shutdown::never()).run(true).await, Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    assert_clean(&ecs, &a);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_cannot_be_done_holds_the_slot_and_says_so() {
    let ecs = FakeEcs::new("c", 1);
    // The repository no longer offers 1.0.0: the updater cannot go back.
    let a = Node::new("a", pinned_host(&["1.1.0"], Duration::from_millis(300)), Some(&ecs), clock(), config(""), 7);
    boot_bad(&ecs, &a).await;
    let outcome = tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await;
    assert!(outcome.is_err(), "a holds: {outcome:?}");
    let st = status_of(&ecs, &a);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("held", "held-rollback-failed"), "{st:?}");
    assert!(st.detail.contains("does not offer 1.0.0"), "{st:?}");
    assert_eq!(settings(&a).await, ("v1.1.0".into(), false), "settings put back even though the rollback failed");
    assert!(ecs.attribute(&a.arn, &drained(&a)).is_some(), "the slot stays held");
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Draining));
    assert_eq!(a.host.reboot_requests(), 1, "no second reboot");
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_the_middle_of_a_rollback_resumes_it_and_restores_the_saved_settings() {
    let ecs = FakeEcs::new("c", 1);
    let a = Node::new("a", pinned_host(&["1.0.0", "1.1.0"], Duration::from_millis(300)), Some(&ecs), clock(), config(""), 7);
    boot_bad(&ecs, &a).await;
    a.host.set_durations(CommandDurations { prepare: Duration::from_secs(600), ..CommandDurations::all(Duration::from_secs(2)) });
    // The agent dies while the old version downloads: the lock is ours at that moment.
    let cut = tokio::time::timeout(Duration::from_secs(120), a.agent(Shutdown::never()).run(true)).await;
    assert!(cut.is_err(), "cut mid-rollback: {cut:?}");
    assert_eq!(settings(&a).await, ("1.0.0".into(), true), "the rollback's lock is in force");
    assert!(a.record().in_flight.and_then(|f| f.rollback).is_some(), "the record says a rollback is under way");
    // The next start resumes the rollback, and restores what the first attempt saved.
    assert_eq!(a.agent(Shutdown::never()).run(true).await, rebooting_into_old());
    assert_eq!(settings(&a).await, ("v1.1.0".into(), false));
    ecs.set_health(&a.arn, Some("OK"));
    a.host.boot();
    assert_eq!(a.agent(Shutdown::never()).run(true).await, Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    assert_clean(&ecs, &a);
    assert_eq!(a.host.reboot_requests(), 2, "one reboot into the new version, one back");
}

#[tokio::test(start_paused = true)]
async fn an_old_version_that_will_not_boot_ends_the_rollback_in_a_hold() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    boot_bad(&ecs, &a).await;
    assert_eq!(a.agent(Shutdown::never()).run(true).await, rebooting_into_old());
    // The old partition set fails its one boot attempt: the host comes back on 1.1.0.
    a.host.set_faults(Faults { rollback_on_boot: true, ..Faults::default() });
    a.host.boot();
    assert_eq!(a.host.running_version(), "1.1.0");
    let outcome = tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await;
    assert!(outcome.is_err(), "a holds: {outcome:?}");
    let st = status_of(&ecs, &a);
    assert_eq!(st.result, "held-rollback-failed", "{st:?}");
    assert!(st.detail.contains("did not boot"), "{st:?}");
    assert_eq!(a.host.reboot_requests(), 2, "no third reboot");
}

#[tokio::test(start_paused = true)]
async fn under_hold_no_rollback_is_tried() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config("[health]\non-failure = \"hold\"\n[cluster]"));
    boot_bad(&ecs, &a).await;
    let outcome = tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await;
    assert!(outcome.is_err());
    assert!(!a.host.requests().iter().any(|r| r.contains("/settings?tx") || r.contains("commit_and_apply")), "no settings written");
    assert_eq!(a.host.reboot_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_whose_claim_was_lost_holds_instead_of_rebooting() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    boot_bad(&ecs, &a).await;
    // While the host was down its claim was replaced (another host may count on that slot now);
    // only its drained marker is left of its own.
    ecs.operator_put(&a.arn, &lease(&a), "v1:d:1800000000:1900000000:0badf00d:1.1.0");
    let outcome = tokio::time::timeout(Duration::from_secs(3600), a.agent(Shutdown::never()).run(true)).await;
    assert!(outcome.is_err(), "a holds: {outcome:?}");
    assert_eq!(a.host.reboot_requests(), 1, "no reboot without a claim");
    let st = status_of(&ecs, &a);
    assert_eq!(st.result, "held-rollback-failed", "{st:?}");
    assert!(st.detail.contains("claim"), "{st:?}");
    assert!(ecs.attribute(&a.arn, &drained(&a)).is_some(), "the marker keeps the slot");
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_failed_after_activating_the_old_version_leaves_no_downgrade_behind() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    boot_bad(&ecs, &a).await;
    // The old version gets staged and activated, then systemd refuses the reboot: the rollback
    // fails and the host holds; later the checks pass and it finishes on 1.1.0.
    a.host.set_faults(Faults { reboot_refused: true, ..Faults::default() });
    let agent = a.agent(Shutdown::never());
    let heal = async {
        while status_of(&ecs, &a).result != "held-rollback-failed" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(a.host.update_state(), Some(fake_bottlerocket::UpdateState::Ready), "the old version was activated");
        ecs.set_health(&a.arn, Some("OK"));
    };
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(7200), agent.run(true)), heal);
    assert!(matches!(&outcome, Ok(Outcome::Finished { version, .. }) if version == "1.1.0"), "{outcome:?}");
    assert_ne!(a.host.update_state(), Some(fake_bottlerocket::UpdateState::Ready), "the old version must not boot next");
    assert_clean(&ecs, &a);
    a.host.set_faults(Faults::default());
    let next = a.agent(Shutdown::never()).run(true).await;
    assert_eq!(next, Outcome::UpToDate { version: "1.1.0".into() }, "an old staged image is not an update");
    assert_eq!((a.host.reboot_requests(), a.host.running_version()), (1, "1.1.0".to_string()));
}
