//! The real agent state machine against the in-memory host and cluster, on paused time: every
//! path that could leave an instance DRAINING, a claim held, or an update half-applied.

use std::cell::Cell;
use std::time::Duration;

use agent::clock::{Clock, WallTime};
use agent::cluster::InstanceStatus;
use agent::config::Config;
use agent::cycle::Outcome;
use agent::journal::Journal;
use agent::shutdown::Shutdown;
use fake_bottlerocket::{CommandDurations, FakeHost, Faults, HostConfig};
use testkit::fake_ecs::{CallRecord, FakeEcs};
use testkit::node::Node;

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn standalone_host_updates_through_a_reboot() {
    let n = node("solo", None, config("[cluster]\nenabled = false"));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[0], Outcome::Rebooting { target: "1.1.0".into() });
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    assert_eq!(n.host.running_version(), "1.1.0");
    assert_eq!(n.record().in_flight, None);
    assert_eq!(n.record().last_result.as_deref(), Some("updated"));
}

#[tokio::test(start_paused = true)]
async fn clustered_host_drains_updates_and_returns_to_service() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/123"), 3);
    ecs.set_drain_time(Duration::from_secs(20), Duration::from_secs(40));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert!(matches!(outcomes[0], Outcome::Rebooting { .. }), "{outcomes:?}");
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    assert_clean(&ecs, &n);
    let status = ecs.attribute(&n.arn, "br-update.status").expect("status published");
    assert!(status.contains("1.1.0") && status.contains("updated"), "{status}");
    // The first host of a version is its canary: its ten-minute bake adds a look a minute.
    assert!(ecs.total_calls() < 80, "ECS calls for one update: {}", ecs.total_calls());
}

/// The round after an update finds nothing to do and writes nothing: the status still says
/// `updated` (the news), also for a new process, which reads what it last wrote from ECS.
#[tokio::test(start_paused = true)]
async fn the_round_after_an_update_writes_no_status() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    let before = ecs.call_log().len();
    let again = n.run_once_through_reboots(REBOOT, 1).await;
    assert_eq!(again, vec![Outcome::UpToDate { version: "1.1.0".into() }]);
    let writes: Vec<&str> = ecs.call_log()[before..].iter().map(|c| c.op).filter(|op| *op != "DescribeContainerInstances").collect();
    assert!(writes.is_empty(), "a round that found nothing called {writes:?}");
    let status = ecs.attribute(&n.arn, "br-update.status").expect("status");
    assert!(status.contains(":idle:1.1.0:") && status.contains(":updated:"), "{status}");
}

#[tokio::test(start_paused = true)]
async fn a_host_that_claims_at_once_lists_its_tasks_once_before_the_drain() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/123"), 3);
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(outcomes[0], Outcome::Rebooting { .. }), "{outcomes:?}");
    let log = ecs.call_log();
    let drain = log.iter().position(|c| c.op == "UpdateContainerInstancesState").expect("drained");
    let listed = log[..drain].iter().filter(|c| c.op == "ListTasks").count();
    // Listed once, at the drain's start: not before the claim too.
    assert_eq!(listed, 1, "{:?}", log[..drain].iter().map(|c| c.op).collect::<Vec<_>>());
}

/// The drain starts on what the count after the claim read (the DRAINING instances, this one
/// among them or not, and the claim): no describe between the count and DRAINING. Without the
/// DRAINING listing (`count-foreign-draining = false`), one describe tells the status.
#[tokio::test(start_paused = true)]
async fn the_drain_starts_on_the_counts_listing_without_a_describe() {
    for (cluster, describes) in [("", 0), ("[cluster]\ncount-foreign-draining = false", 1)] {
        let ecs = FakeEcs::new("c", 1);
        let n = node("a", Some(&ecs), config(cluster));
        ecs.add_tasks(&n.arn, Some("ecs-svc/123"), 3);
        let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
        assert!(matches!(outcomes[0], Outcome::Rebooting { .. }), "{outcomes:?}");
        let ops: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
        let claim = ops.iter().position(|op| *op == "PutAttributes").expect("a claim");
        let drain = ops.iter().position(|op| *op == "UpdateContainerInstancesState").expect("drained");
        let seen = ops[claim..drain].iter().filter(|op| **op == "DescribeContainerInstances").count();
        assert_eq!(seen, describes, "`{cluster}`: {:?}", &ops[claim..drain]);
    }
}

#[tokio::test(start_paused = true)]
async fn rolled_back_boot_quarantines_the_version() {
    let ecs = FakeEcs::new("c", 1);
    let n = Node::new("a", host(Faults { rollback_on_boot: true, ..Faults::default() }), Some(&ecs), clock(), config(""), 3);
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[1], Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    assert_clean(&ecs, &n);
    assert!(n.record().is_quarantined("1.1.0", n.now()));
    let again = n.run_once_through_reboots(REBOOT, 1).await;
    assert_eq!(again, vec![Outcome::Quarantined { version: "1.1.0".into() }]);
    assert_eq!(n.host.reboot_requests(), 1, "a quarantined version is not tried again");
}

#[tokio::test(start_paused = true)]
async fn opted_out_host_is_left_alone() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.operator_put(&n.arn, "br-update.opt-out", "true");
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert_eq!(outcomes, vec![Outcome::OptedOut]);
    assert_eq!(n.host.reboot_requests(), 0);
    assert_eq!(ecs.attribute(&n.arn, &lease(&n)), None);
}

/// A host waits behind another's claim; an operator opts it out meanwhile. When the slot frees,
/// the host reads its flags again before claiming and stays out: no claim, no drain, no reboot.
#[tokio::test(start_paused = true)]
async fn a_host_opted_out_while_it_waits_for_a_slot_does_not_claim_it() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    let other = hold_a_slot(&ecs);
    let (arn, name) = (n.arn.clone(), lease(&n));
    let operator = async {
        tokio::time::sleep(15 * 60 * Duration::from_secs(1)).await;
        ecs.operator_put(&arn, "br-update.opt-out", "true");
        tokio::time::sleep(15 * 60 * Duration::from_secs(1)).await;
        ecs.operator_delete(&other, &name);
    };
    let (outcomes, ()) = tokio::join!(n.run_once_through_reboots(REBOOT, 1), operator);
    assert_eq!(outcomes, vec![Outcome::OptedOut]);
    assert_eq!(n.host.reboot_requests(), 0);
    let claims = ecs.history().iter().filter(|e| matches!(&e.change, testkit::fake_ecs::EcsChange::Put { name: put, .. } if &**put == name.as_str())).count();
    assert_eq!(claims, 1, "only the other host's claim was ever written");
    assert_clean(&ecs, &n);
}

/// The flags the round began with serve a claim made within ten minutes of them: no describe
/// between the round's first listing and its claim.
#[tokio::test(start_paused = true)]
async fn a_host_that_claims_at_once_does_not_read_its_flags_again() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(outcomes[0], Outcome::Rebooting { .. }), "{outcomes:?}");
    let ops: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let first = ops.iter().position(|op| *op == "ListAttributes").expect("a listing");
    let claim = ops.iter().position(|op| *op == "PutAttributes").expect("a claim");
    assert!(!ops[first..claim].contains(&"DescribeContainerInstances"), "{:?}", &ops[..=claim]);
}

/// A host waiting behind a canary (N = 2, one holder, the canary's limit of 1) finds no slot it
/// could take at any look: it reads its flags again at none of them, however long it waits.
#[tokio::test(start_paused = true)]
async fn a_waiter_held_back_by_the_canary_does_not_read_its_flags_again() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("b", Some(&ecs), config("[cluster]\nmax-concurrent = 2"));
    hold_a_slot(&ecs);
    still_waiting_after(&n, 40).await;
    let ops: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let first = ops.iter().position(|op| *op == "ListAttributes").expect("a listing");
    let canary_reads = ops[first..].iter().filter(|op| **op == "ListAttributes").count();
    assert!(canary_reads >= 6, "the looks read the claims and the canary count: {ops:?}");
    assert!(!ops[first..].contains(&"DescribeContainerInstances"), "{ops:?}");
}

/// A node whose sleeps may last a day, as with the default `wait-poll-max` (the tests' config caps
/// them at a minute, within a slot time, where the waiting policy does not count competitors).
fn node_with_day_long_sleeps(name: &str, ecs: &FakeEcs, extra: &str) -> Node {
    let mut cfg = config(extra);
    cfg.cluster.wait_poll_max = Duration::from_secs(86_400);
    node(name, Some(ecs), cfg)
}

/// A waiter's count of the hosts competing for the slots (what its waiting policy aims by) comes
/// with its look's read of the cluster tags, one DescribeClusters carrying both: it makes no
/// call of its own. Every DescribeClusters is a look's, followed by its listing of the claims.
#[tokio::test(start_paused = true)]
async fn a_waiter_counts_its_competitors_from_its_looks_read_of_the_tags() {
    let ecs = FakeEcs::new("c", 1);
    let n = node_with_day_long_sleeps("b", &ecs, "[cluster]\ncanary-hosts = 0");
    hold_a_slot(&ecs);
    still_waiting_after(&n, 50).await;
    let ops: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let reads: Vec<usize> = ops.iter().enumerate().filter(|(_, op)| **op == "DescribeClusters").map(|(i, _)| i).collect();
    assert!(reads.len() >= 2, "several looks: {ops:?}");
    // The run may end between a look's two calls.
    for i in reads {
        let next = ops.get(i + 1).copied().unwrap_or("ListAttributes");
        assert_eq!(next, "ListAttributes", "a DescribeClusters that is not a look's, at {i}: {ops:?}");
    }
}

/// The waiting policy aims by that count: a waiter among 300 other instances looks at the
/// cluster far less often than one with a single competitor, so that the fleet's rate of looks,
/// not each host's, stays flat as the fleet grows.
#[tokio::test(start_paused = true)]
async fn a_waiter_among_many_looks_less_often_than_one_alone() {
    async fn looks_in_50_minutes(others: usize) -> u64 {
        let ecs = FakeEcs::new("c", 1);
        for i in 0..others {
            ecs.register(&format!("o{i}"));
        }
        let n = node_with_day_long_sleeps("b", &ecs, "[cluster]\ncanary-hosts = 0");
        hold_a_slot(&ecs);
        still_waiting_after(&n, 50).await;
        ecs.calls().get("DescribeClusters").copied().unwrap_or(0)
    }
    let (alone, among) = (looks_in_50_minutes(0).await, looks_in_50_minutes(300).await);
    assert!(alone >= 3 && among <= 1, "looks: {alone} with one competitor, {among} among 300");
}

/// Runs `n` to its reboot; returns ECS's call log and where in it the look that claimed starts
/// (its read of the tags) and where the claim is.
async fn run_to_the_claim(ecs: &FakeEcs, n: &Node) -> (Vec<CallRecord>, usize, usize) {
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(outcomes[0], Outcome::Rebooting { .. }), "{outcomes:?}");
    let log = ecs.call_log();
    let tags = log.iter().position(|c| c.op == "DescribeClusters").expect("a look");
    let claim = tags + log[tags..].iter().position(|c| c.op == "PutAttributes").expect("a claim");
    (log, tags, claim)
}

/// The calls from `from` up to, not including, `to`.
fn ops_between(log: &[CallRecord], from: usize, to: usize) -> Vec<&str> {
    log[from..to].iter().map(|c| c.op).collect()
}

/// Runs `n` to its reboot and asserts that its look before the claim read the tags and one
/// listing of the claims, nothing more.
async fn assert_claims_on_one_listing(ecs: &FakeEcs, n: &Node) {
    let (log, tags, claim) = run_to_the_claim(ecs, n).await;
    assert_eq!(ops_between(&log, tags, claim), ["DescribeClusters", "ListAttributes"], "the look before the claim");
}

/// Two other hosts hold confirmed claims for the version: under the canary's limit of one no
/// two could, so the canary passed. A host that sees them claims on the listing of the claims
/// alone, without counting the canaries (and without listing the claims again after it).
#[tokio::test(start_paused = true)]
async fn two_confirmed_claims_for_the_version_show_the_canary_passed() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 3"));
    claim_held(&ecs, "h1", "d", "1.1.0");
    claim_held(&ecs, "h2", "d", "1.1.0");
    assert_claims_on_one_listing(&ecs, &n).await;
}

/// Two other hosts' confirmed claims fill the fleet (N = 2); no instance carries the `updated`
/// marker the canary count lists. The waiter learns from the claims of its full look that the
/// canary passed, so when one holder leaves it claims beside the other. Had it forgotten, the
/// one confirmed claim left would not show it, the count (none) would hold it at the canary's
/// limit of one, and it would wait until the other claim lapsed, an hour in.
#[tokio::test(start_paused = true)]
async fn a_waiter_remembers_the_confirmed_claims_of_a_full_look_and_claims_when_one_leaves() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 2"));
    let first = claim_held(&ecs, "h1", "d", "1.1.0");
    claim_held(&ecs, "h2", "d", "1.1.0");
    let leaves = claim_removed_after(&ecs, &first, "br-update.lease", Duration::from_secs(5 * 60));
    let agent = n.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(30 * 60), agent.run(true)), leaves);
    assert!(matches!(outcome, Ok(Outcome::Rebooting { .. })), "claimed within 25 minutes of the slot freeing: {outcome:?}");
}

/// A waiter at N = 1 whose looks find the fleet full counts the canaries at the gate of every
/// look but its first, and so learns that they passed while it waits. When the slot frees a
/// quarter of an hour in, the look that claims reads the tags, the claims, and (older than ten
/// minutes) the operator's flags: neither the canary count nor the failure markers (the check
/// after the claim reads those), nor the claims again.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_learned_the_canaries_passed_claims_on_the_look_that_finds_the_slot_free() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    canary_passed(&ecs, "1.1.0");
    let holder = hold_a_slot(&ecs);
    let leaves = claim_removed_after(&ecs, &holder, "br-update.lease", Duration::from_secs(15 * 60));
    let (_, ()) = tokio::join!(n.run_once_through_reboots(REBOOT, 1), leaves);
    let log = ecs.call_log();
    let drain = log.iter().position(|c| c.op == "UpdateContainerInstancesState").expect("a drain");
    let look = log[..drain].iter().rposition(|c| c.op == "DescribeClusters").expect("a look");
    let claim = look + log[look..].iter().position(|c| c.op == "PutAttributes").expect("a claim");
    assert_eq!(ops_between(&log, look, claim), ["DescribeClusters", "ListAttributes", "DescribeContainerInstances"], "the look before the claim");
    let counts = log[..look].iter().filter(|c| c.op == "ListAttributes").count();
    assert!(counts >= 3, "the waiting looks listed the claims and counted the canaries: {counts}");
}

/// A waiter counts the canaries at its look's gate, a call before it lists the claims. When the
/// canary finishes in between (its `updated` marker, then its release), the listing finds the
/// slot free while the count says none passed: the waiter counts again before it claims, and
/// claims as an ordinary host, not as a second canary with a bake of its own. A look that finds
/// the canary's slot taken heeds its gate's count and counts no more.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_finds_the_canarys_slot_free_counts_again_before_claiming_as_a_canary() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 2"));
    let canary = claim_held(&ecs, "canary", "v", "1.1.0");
    // The canary finishes right after the count at the third look's gate (its tags, then the count).
    let finishes = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let log = ecs.call_log();
            let Some(gate) = log.iter().enumerate().filter(|(_, c)| c.op == "DescribeClusters").nth(2).map(|(i, _)| i) else { continue };
            if log.len() == gate + 2 {
                assert_eq!(log[gate + 1].op, "ListAttributes", "the count at the gate");
                ecs.operator_put(&canary, "br-update.updated", "1.1.0");
                ecs.operator_delete(&canary, "br-update.lease");
                return;
            }
            assert!(log.len() < gate + 2, "missed the moment after the gate's count");
        }
    };
    let agent = n.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(30 * 60), agent.run(true)), finishes);
    assert!(matches!(outcome, Ok(Outcome::Rebooting { .. })), "{outcome:?}");
    let flight = n.journal.load().expect("record").in_flight.expect("an update in flight");
    assert!(!flight.canary, "claimed as a second canary");
    // A look that finds the canary's slot taken heeds its gate's count: it counts no more.
    let log = ecs.call_log();
    let gates: Vec<usize> = log.iter().enumerate().filter(|(_, c)| c.op == "DescribeClusters").map(|(i, _)| i).collect();
    assert_eq!(ops_between(&log, gates[1], gates[2]), ["DescribeClusters", "ListAttributes", "ListAttributes"], "a full look");
}

/// A host's first look may be one of many made at once (hosts find a release, or a window
/// opens, together): when it counts the canaries between its listing of the claims and its
/// claim, it lists the claims again right before the claim.
#[tokio::test(start_paused = true)]
async fn a_first_look_that_counts_the_canaries_lists_the_claims_again_before_claiming() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 2"));
    canary_passed(&ecs, "1.1.0");
    claim_held(&ecs, "h1", "d", "1.1.0");
    let (log, tags, claim) = run_to_the_claim(&ecs, &n).await;
    let again = ["DescribeClusters", "ListAttributes", "ListAttributes", "ListAttributes"];
    assert_eq!(ops_between(&log, tags, claim), again, "the claims, the canary count, the claims again");
}

/// Without a canary (`canary-hosts = 0`) a look never counts canaries: a host beside one holder at
/// N = 2 claims on its listing of the claims.
#[tokio::test(start_paused = true)]
async fn a_fleet_without_a_canary_never_counts_canaries() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 2\ncanary-hosts = 0"));
    claim_held(&ecs, "h1", "d", "1.1.0");
    assert_claims_on_one_listing(&ecs, &n).await;
}

/// Claims that do not show the canary passed: one confirmed claim, one still `claiming`, and one
/// for another version. The host counts the canaries (none yet), and waits at a limit of one.
#[tokio::test(start_paused = true)]
async fn claims_that_do_not_show_the_canary_passed_leave_the_host_waiting() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 4"));
    claim_held(&ecs, "h1", "d", "1.1.0");
    claim_held(&ecs, "h2", "c", "1.1.0");
    claim_held(&ecs, "h3", "d", "1.0.5");
    still_waiting_after(&n, 20).await;
    assert_eq!(ecs.attribute(&n.arn, &lease(&n)), None, "no claim at the canary's limit");
}

/// A look that finds a slot free beside another host's claim written this second (still
/// `claiming`) holds its own back a moment: claims that would reach ECS in the same second, each
/// a listing and a write, go out apart. With few slots left free (N = 3: two) it lists the claims
/// again before it claims; with room (N = 4: three, N = 5) it claims on its look. Once only: this claim's
/// host's clock runs ahead, so it still looks fresh at the second look.
#[tokio::test(start_paused = true)]
async fn a_claim_written_this_second_holds_the_next_claim_back_once() {
    let relisted: [&str; 3] = ["DescribeClusters", "ListAttributes", "ListAttributes"];
    let on_its_look: [&str; 2] = ["DescribeClusters", "ListAttributes"];
    for (max, look) in [(3, &relisted[..]), (4, &on_its_look[..]), (5, &on_its_look[..])] {
        let ecs = FakeEcs::new("c", 1);
        let n = node("a", Some(&ecs), config(&format!("[cluster]\nmax-concurrent = {max}\ncanary-hosts = 0")));
        let other = ecs.register("h1");
        ecs.operator_put(&other, "br-update.lease", "v1:c:1800000600:1800004200:0badf00d:1.1.0");
        let (log, tags, claim) = run_to_the_claim(&ecs, &n).await;
        assert_eq!(ops_between(&log, tags, claim), look, "N = {max}: the look before the claim");
        // The settle time is 5 s: held back 0.5-2 s after the first listing.
        let held = log[tags + 2].at - log[tags + 1].at;
        assert!(held >= Duration::from_millis(500) && held <= Duration::from_secs(3), "N = {max}: held back {held:?}");
    }
}

/// No claim is held back by a claim still `claiming` but written seconds before the look, nor
/// by one past `claiming` whose claimed-at looks fresh (its host's clock runs ahead).
#[tokio::test(start_paused = true)]
async fn claims_settled_or_seconds_old_hold_no_claim_back() {
    for value in ["v1:c:1799999995:1800003600:0badf00d:1.1.0", "v1:d:1800000600:1800004200:0badf00d:1.1.0"] {
        let ecs = FakeEcs::new("c", 1);
        let n = node("a", Some(&ecs), config("[cluster]\nmax-concurrent = 3\ncanary-hosts = 0"));
        let other = ecs.register("h1");
        ecs.operator_put(&other, "br-update.lease", value);
        assert_claims_on_one_listing(&ecs, &n).await;
    }
}

#[tokio::test(start_paused = true)]
async fn standalone_tasks_skip_the_round_under_the_skip_policy() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("events-rule/nightly"), 1);
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(&outcomes[0], Outcome::Skipped { reason } if reason.contains("standalone")), "{outcomes:?}");
    assert_clean(&ecs, &n);
    assert_eq!(n.host.reboot_requests(), 0);
    // The tasks are listed once a slot is held, before the drain: the slot is given back and
    // the instance never leaves service.
    assert_eq!(ecs.calls().get("UpdateContainerInstancesState"), None, "never drained: {:?}", ecs.calls());
    let log: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let claimed = log.iter().position(|op| *op == "PutAttributes").expect("a claim");
    let listed = log.iter().position(|op| *op == "ListTasks").expect("a task listing");
    let released = log.iter().position(|op| *op == "DeleteAttributes").expect("the claim withdrawn");
    assert!(claimed < listed && listed < released, "claim, listing, release: {log:?}");
    assert_eq!(log.iter().filter(|op| **op == "ListTasks").count(), 1, "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn standalone_tasks_are_waited_for_under_the_wait_policy() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("[cluster]\nstandalone-tasks = \"wait\"\nstandalone-task-timeout = \"30m\""));
    ecs.add_tasks(&n.arn, Some("events-rule/nightly"), 1);
    let arn = n.arn.clone();
    let ecs2 = ecs.clone();
    let finisher = async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        ecs2.stop_all_tasks(&arn);
    };
    let (outcomes, ()) = tokio::join!(n.run_once_through_reboots(REBOOT, 2), finisher);
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    assert_clean(&ecs, &n);
    // Nothing is decided on the tasks before the drain: they are listed only to see it end.
    let log: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let drained = log.iter().position(|op| *op == "UpdateContainerInstancesState").expect("a drain");
    assert!(!log[..drained].iter().any(|op| *op == "ListTasks" || *op == "DescribeTasks"), "tasks listed before the drain: {log:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_reactivates_and_releases() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/stuck"), 2);
    ecs.set_drain_time(Duration::from_secs(86_400), Duration::from_secs(86_400));
    let started = tokio::time::Instant::now();
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(&outcomes[0], Outcome::Skipped { reason } if reason.contains("drain timed out")), "{outcomes:?}");
    // drain-timeout (10 minutes here) applies to service tasks, not the standalone-task hour.
    assert!(started.elapsed() < Duration::from_secs(1200), "gave up after {:?}", started.elapsed());
    assert_clean(&ecs, &n);
    assert_eq!(n.host.reboot_requests(), 0);
    assert_eq!(n.host.running_version(), "1.0.0");
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_the_drain_undoes_everything() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(Duration::from_secs(3600), Duration::from_secs(3600));
    let (trigger, shutdown) = Shutdown::new();
    let agent = n.agent(shutdown);
    let arn = n.arn.clone();
    let ecs2 = ecs.clone();
    let killer = async move {
        while ecs2.status(&arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        trigger.fire();
    };
    let (outcome, ()) = tokio::join!(agent.run(true), killer);
    assert_eq!(outcome, Outcome::Interrupted);
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_draining_is_recovered_on_restart() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(Duration::from_secs(3600), Duration::from_secs(3600));
    {
        // kill -9: the agent's future is dropped mid-drain; only the journal and ECS remain.
        let agent = n.agent(Shutdown::never());
        let run = agent.run(true);
        let _ = tokio::time::timeout(Duration::from_secs(120), run).await;
    }
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Draining));
    assert!(ecs.attribute(&n.arn, &lease(&n)).is_some());
    ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn a_lost_journal_still_leaves_nothing_behind() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(Duration::from_secs(3600), Duration::from_secs(3600));
    {
        let agent = n.agent(Shutdown::never());
        let _ = tokio::time::timeout(Duration::from_secs(120), agent.run(true)).await;
    }
    n.journal.set_aside().expect("lose the record");
    ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
    let _ = n.run_once_through_reboots(REBOOT, 2).await;
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn an_instance_drained_by_an_operator_is_not_reactivated() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.operator_set_status(&n.arn, InstanceStatus::Draining);
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Draining), "operator's drain is kept");
    assert_eq!(ecs.attribute(&n.arn, &lease(&n)), None);
}

#[tokio::test(start_paused = true)]
async fn refused_reboot_deactivates_and_returns_to_service() {
    let ecs = FakeEcs::new("c", 1);
    let n = Node::new("a", host(Faults { reboot_refused: true, ..Faults::default() }), Some(&ecs), clock(), config(""), 5);
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(&outcomes[0], Outcome::Failed { reason } if reason.contains("reboot")), "{outcomes:?}");
    assert_clean(&ecs, &n);
    assert_ne!(n.host.update_state(), Some(fake_bottlerocket::UpdateState::Ready), "update must not stay active");
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_claim_disappears_stops_before_rebooting() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(Duration::from_secs(900), Duration::from_secs(900));
    let (arn, ecs2, name) = (n.arn.clone(), ecs.clone(), lease(&n));
    let thief = async move {
        while ecs2.status(&arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // An operator replaces the claim: live, but not ours; only its token tells.
        ecs2.operator_put(&arn, &name, "v1:h:1800000000:1900000000:deadbeef:9.9.9");
    };
    let (outcomes, ()) = tokio::join!(n.run_once_through_reboots(REBOOT, 1), thief);
    assert!(matches!(&outcomes[0], Outcome::Failed { reason } if reason.contains("slot")), "{outcomes:?}");
    assert_eq!(n.host.reboot_requests(), 0);
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Active));
}

#[tokio::test(start_paused = true)]
async fn dry_run_changes_nothing() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config("dry-run = true"));
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(outcomes[0], Outcome::DryRun { .. }) || matches!(outcomes[0], Outcome::UpToDate { .. }), "{outcomes:?}");
    assert_eq!(n.host.reboot_requests(), 0);
    assert!(!n.host.requests().iter().any(|r| r.starts_with("POST")), "dry run posted: {:?}", n.host.requests());
    assert_eq!(ecs.calls().get("PutAttributes"), None);
    assert_eq!(ecs.calls().get("UpdateContainerInstancesState"), None);
}

#[tokio::test(start_paused = true)]
async fn paused_fleet_takes_no_slot_until_unpaused() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.set_tag("br-update.paused", Some("true"));
    let (arn, ecs2, name) = (n.arn.clone(), ecs.clone(), lease(&n));
    let watcher = async move {
        for _ in 0..600 {
            assert_eq!(ecs2.attribute(&arn, &name), None, "claimed while paused");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ecs2.set_tag("br-update.paused", None);
    };
    let (outcomes, ()) = tokio::join!(n.run_once_through_reboots(REBOOT, 2), watcher);
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
}

/// A paused fleet is looked at every 30 to 60 minutes, however long `wait-poll-max` allows a
/// sleep to be: an operator who resumes it is seen within the hour.
#[tokio::test(start_paused = true)]
async fn a_paused_fleet_is_looked_at_within_the_hour() {
    let ecs = FakeEcs::new("c", 1);
    let n = node_with_day_long_sleeps("a", &ecs, "");
    ecs.set_tag("br-update.paused", Some("true"));
    still_waiting_after(&n, 240).await;
    let looks = ecs.calls().get("DescribeClusters").copied().unwrap_or(0);
    assert!((4..=9).contains(&looks), "{looks} looks in 4 hours of a paused fleet");
}

/// Several hosts at once, with stale reads: never more than N drained, all end updated.
async fn contend(hosts: usize, n_max: u32, staleness: Duration, seed: u64) -> (usize, FakeEcs, Vec<Node>) {
    let ecs = FakeEcs::new("c", seed);
    ecs.set_faults(testkit::fake_ecs::EcsFaults { staleness, ..Default::default() });
    ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(90));
    let cfg = config(&format!("[cluster]\nmax-concurrent = {n_max}"));
    let nodes: Vec<Node> = (0..hosts)
        .map(|i| Node::new(&format!("h{i}"), host(Faults::default()), Some(&ecs), clock(), cfg.clone(), seed * 100 + i as u64))
        .collect();
    for n in &nodes {
        ecs.add_tasks(&n.arn, Some("ecs-svc/web"), 2);
    }
    let peak = Cell::new(0usize);
    let done = Cell::new(false);
    let monitor = async {
        while !done.get() {
            let busy = nodes.iter().filter(|n| ecs.status(&n.arn) == Some(InstanceStatus::Draining) || n.host.is_down()).count();
            peak.set(peak.get().max(busy));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let all = async {
        futures_util::future::join_all(nodes.iter().map(|n| n.run_once_through_reboots(REBOOT, 3))).await;
        done.set(true);
    };
    tokio::join!(all, monitor);
    (peak.get(), ecs, nodes)
}

#[tokio::test(start_paused = true)]
async fn at_most_n_hosts_drain_at_once_and_all_finish() {
    for (hosts, n_max) in [(5, 1), (6, 2), (7, 3)] {
        let (peak, ecs, nodes) = contend(hosts, n_max, Duration::from_secs(2), 11).await;
        assert!(peak <= n_max as usize, "{hosts} hosts, N={n_max}: {peak} drained at once");
        assert!(peak >= 1);
        for n in &nodes {
            assert_eq!(n.host.running_version(), "1.1.0", "{} not updated", n.name);
            assert_clean(&ecs, n);
        }
    }
}

/// A daily window in UTC, starting at `start` for `length`.
fn window(start: &str, length: &str, expected: &str) -> String {
    format!(
        "[maintenance]\nexpected-duration = \"{expected}\"\nupdate-now-poll = \"2m\"\n[[maintenance.windows]]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"{start}\"\nlength = \"{length}\"\n"
    )
}

fn config_with_window(win: &str, cluster: &str) -> Config {
    // `config` takes cluster keys after a `[cluster]` marker; windows go at the end of the file.
    let base = config(&format!("[cluster]\n{cluster}"));
    let printed = base.to_toml();
    let mut text = printed.split("[maintenance]").next().unwrap_or_default().to_string();
    text.push_str(win);
    Config::parse(&text, "test").expect("valid config with window")
}

#[tokio::test(start_paused = true)]
async fn an_update_that_does_not_fit_the_window_is_not_started() {
    // The clock starts Friday 08:00 UTC; the window 07:00-08:30 leaves 30 minutes, the update needs 45.
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config_with_window(&window("07:00", "90m", "45m"), ""));
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(&outcomes[0], Outcome::Skipped { reason } if reason.contains("no longer fits")), "{outcomes:?}");
    assert_eq!(n.host.reboot_requests(), 0);
    assert_clean(&ecs, &n);
    assert_eq!(ecs.calls().get("PutAttributes"), Some(&1), "only the status attribute: {:?}", ecs.calls());
}

#[tokio::test(start_paused = true)]
async fn outside_every_window_nothing_starts() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config_with_window(&window("22:00", "2h", "30m"), ""));
    let outcomes = n.run_once_through_reboots(REBOOT, 1).await;
    assert!(matches!(&outcomes[0], Outcome::Skipped { reason } if reason.contains("outside")), "{outcomes:?}");
    assert_eq!(n.host.reboot_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_holder_finishes_even_when_the_window_closes_mid_update() {
    // Window 07:00-08:05: the update fits by the estimate (3 min) but the drain takes 8 min.
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config_with_window(&window("07:00", "65m", "3m"), ""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(Duration::from_secs(480), Duration::from_secs(480));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[1], Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    assert!(n.now() > WallTime::from_secs(1_800_000_000 + 300), "the update ran past the window's end");
    assert_clean(&ecs, &n);
}

#[tokio::test(start_paused = true)]
async fn update_now_skips_the_window_wait_but_not_the_lease() {
    // The window is 14 hours away. An operator asks host b to update now while host a holds the
    // only slot (a's instance carries a live claim): b must wait for it, then go, and clear the ask.
    let ecs = FakeEcs::new("c", 1);
    let cfg = config_with_window(&window("22:00", "2h", "30m"), "");
    let b = node("b", Some(&ecs), cfg.clone());
    let a_arn = ecs.register("a");
    let expiry = 1_800_000_000 + 1800;
    ecs.operator_put(&a_arn, "br-update.lease", &format!("v1:d:1800000000:{expiry}:0badf00d:1.1.0"));
    let (stop_trigger, stop) = Shutdown::new();
    let (ecs2, b_arn) = (ecs.clone(), b.arn.clone());
    let operator = async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        ecs2.operator_put(&b_arn, "br-update.update-now", "true");
        // Long enough for the claim of a to lapse and b to finish; far less than the 14 h wait.
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        stop_trigger.fire();
    };
    let first_drain = Cell::new(None);
    let watch = async {
        let clock = clock();
        while first_drain.get().is_none() {
            if ecs.status(&b.arn) == Some(InstanceStatus::Draining) {
                first_drain.set(Some(clock.now()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(b.run_daemon(REBOOT, stop), operator, watch);
    assert_eq!(b.host.running_version(), "1.1.0", "update-now must have started the update");
    assert_eq!(ecs.attribute(&b.arn, "br-update.update-now"), None, "acted on and cleared");
    let drained_at = first_drain.get().expect("b drained");
    assert!(drained_at >= WallTime::from_secs(expiry), "b drained at {drained_at} while a's claim was live");
    assert_clean(&ecs, &b);
}

/// An idle host on 1.0.0 with 6-hour rounds (up to 5 minutes' jitter each) and an hourly
/// update-now poll, on a fake host that publishes `published`.
fn idle_node(ecs: &FakeEcs, published: &[&str], min_release_age: Duration) -> Node {
    let mut cfg = config("");
    cfg.check_interval = Duration::from_secs(6 * 3600);
    cfg.maintenance.update_now_poll = Duration::from_secs(3600);
    cfg.check_jitter = Duration::from_secs(300);
    cfg.min_release_age = min_release_age;
    let host = FakeHost::new(HostConfig {
        version: "1.0.0".into(),
        published: published.iter().map(|v| v.to_string()).collect(),
        durations: CommandDurations::all(Duration::from_secs(2)),
        ..HostConfig::default()
    });
    Node::new("a", host, Some(ecs), clock(), cfg, 7)
}

/// [`idle_node`] run for three days: the last two days' reads of its instance, its other ECS
/// calls and its refreshes.
async fn idle_host_for_three_days(published: &[&str], min_release_age: Duration) -> (Vec<tokio::time::Instant>, Vec<&'static str>, usize) {
    let ecs = FakeEcs::new("c", 1);
    let n = idle_node(&ecs, published, min_release_age);
    let start = tokio::time::Instant::now();
    let (trigger, stop) = Shutdown::new();
    let day = Duration::from_secs(86_400);
    let (ecs2, host2) = (ecs.clone(), n.host.clone());
    let stopper = async move {
        tokio::time::sleep(day).await;
        host2.clear_requests();
        tokio::time::sleep(2 * day).await;
        let refreshes = host2.requests().iter().filter(|r| r.as_str() == "POST /actions/refresh-updates").count();
        trigger.fire();
        refreshes
    };
    let ((), refreshes) = tokio::join!(n.run_daemon(REBOOT, stop), stopper);
    let log: Vec<CallRecord> = ecs2.call_log().into_iter().filter(|c| c.at >= start + day && c.at < start + 3 * day).collect();
    let reads = log.iter().filter(|c| c.op == "DescribeContainerInstances").map(|c| c.at).collect();
    let others = log.iter().filter(|c| c.op != "DescribeContainerInstances").map(|c| c.op).collect();
    (reads, others, refreshes)
}

/// An idle host with nothing to install refreshes (a local call) every hour and reads its
/// instance only at its rounds: an update-now look could only start a round that finds nothing.
#[tokio::test(start_paused = true)]
async fn an_idle_host_with_nothing_to_install_reads_its_instance_once_a_round() {
    let (reads, others, refreshes) = idle_host_for_three_days(&["1.0.0"], Duration::ZERO).await;
    assert!((7..=9).contains(&reads.len()), "two days, four rounds a day, one read each: {}", reads.len());
    assert!(others.is_empty(), "an idle host only reads: {others:?}");
    assert!((46..=50).contains(&refreshes), "a refresh an hour, the rounds' own among them: {refreshes}");
}

/// An idle host that has a version to install (one its rounds leave to soak) looks for
/// update-now every hour, its rounds' reads among them, never much over an hour apart.
#[tokio::test(start_paused = true)]
async fn an_idle_host_with_a_version_to_install_reads_its_instance_once_an_hour() {
    let week = Duration::from_secs(7 * 86_400);
    let (reads, others, _) = idle_host_for_three_days(&["1.0.0", "1.1.0"], week).await;
    assert!((47..=49).contains(&reads.len()), "two days, six reads a round: {}", reads.len());
    let longest = reads.windows(2).map(|w| w[1] - w[0]).max().expect("reads");
    assert!(longest <= Duration::from_secs(3600 * 11 / 10), "longest gap between two reads: {longest:?}");
    assert!(others.is_empty(), "the soaking status was written on the first day: {others:?}");
}

/// A refresh that fails says nothing about what there is to install: the host looks anyway.
/// The refreshes fail for three hours from just after a round, the next one being six away.
#[tokio::test(start_paused = true)]
async fn an_idle_host_whose_refresh_fails_looks_for_update_now_anyway() {
    let ecs = FakeEcs::new("c", 1);
    let n = idle_node(&ecs, &["1.0.0"], Duration::ZERO);
    let (trigger, stop) = Shutdown::new();
    let (ecs2, host2) = (ecs.clone(), n.host.clone());
    let failing = async move {
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        let before = ecs2.call_log().len();
        while !ecs2.call_log()[before..].iter().any(|c| c.op == "DescribeContainerInstances") {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
        let from = tokio::time::Instant::now();
        host2.set_faults(Faults { refresh_fails: true, ..Faults::default() });
        tokio::time::sleep(Duration::from_secs(3 * 3600 + 600)).await;
        trigger.fire();
        from
    };
    let ((), from) = tokio::join!(n.run_daemon(REBOOT, stop), failing);
    let log: Vec<CallRecord> = ecs.call_log().into_iter().filter(|c| c.at >= from).collect();
    let reads = log.iter().filter(|c| c.op == "DescribeContainerInstances").count();
    assert!((3..=4).contains(&reads), "an hourly look while the refreshes fail: {reads} in {log:?}");
}

#[tokio::test(start_paused = true)]
async fn ecs_down_for_minutes_mid_drain_never_reboots_and_recovers_afterwards() {
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&n.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(Duration::from_secs(600), Duration::from_secs(600));
    let (arn, ecs2) = (n.arn.clone(), ecs.clone());
    let outage = async move {
        while ecs2.status(&arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ecs2.set_faults(testkit::fake_ecs::EcsFaults { unavailable: true, ..Default::default() });
    };
    let agent = n.agent(Shutdown::never());
    let (first, ()) = tokio::join!(agent.run(true), outage);
    assert!(matches!(&first, Outcome::Failed { .. }), "{first:?}");
    assert_eq!(n.host.reboot_requests(), 0, "no reboot without a verified lease");
    assert!(n.record().in_flight.is_some(), "the undo could not reach ECS, so the record is kept");
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Draining));
    // Minutes later ECS is back; the next start finishes the undo, then updates normally.
    tokio::time::sleep(Duration::from_secs(600)).await;
    ecs.set_faults(testkit::fake_ecs::EcsFaults::default());
    ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    assert_clean(&ecs, &n);
}
