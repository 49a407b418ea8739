//! The at-most-N promise at the edges of time, one test per hole, on paused time against the
//! in-memory host and cluster. Each hole has its negative control: the same scenario with that
//! one fix switched off (`UnsafeOff`) must show the hole, so every test here fails when its fix
//! is taken out.

use std::time::Duration;

use agent::backoff::{Backoff, Jitter};
use agent::clock::WallTime;
use agent::cluster::retry::RetryPolicy;
use agent::cluster::{ClusterStore, InstanceStatus, SetStatus};
use agent::cycle::Outcome;
use agent::lease::{Claim, ClaimPhase, Gate, LeaseClient, LeaseError, LeaseParams, LeaseRule, Names, UnsafeOff};
use agent::shutdown::Shutdown;
use agent::status::{short_id, Status};
use fake_bottlerocket::Faults;
use testkit::fake_ecs::{unstopped_at, Actor, EcsChange, EcsFaults, FakeEcs, LocalTaskView, TaskListing};
use testkit::node::Node;

mod common;
use common::*;

const MIN: Duration = Duration::from_secs(60);

/// The most instances that were DRAINING at one instant, from the cluster's recorded history.
fn most_draining_at_once(ecs: &FakeEcs) -> usize {
    let mut draining = std::collections::BTreeSet::new();
    let mut most = 0;
    for e in ecs.history() {
        if let EcsChange::Status(s) = &e.change {
            if *s == InstanceStatus::Draining {
                draining.insert(e.instance.clone());
            } else {
                draining.remove(&e.instance);
            }
            most = most.max(draining.len());
        }
    }
    most
}

fn status_of(ecs: &FakeEcs, n: &Node) -> Status {
    let v = ecs.attribute(&n.arn, "br-update.status").unwrap_or_default();
    Status::parse(&v).unwrap_or_else(|| panic!("{}: unreadable status `{v}`", n.name))
}

/// Runs `n`'s agent until its instance is DRAINING, then kills it (-9): only ECS and the
/// journal remain.
async fn crash_mid_drain(n: &Node, ecs: &FakeEcs) {
    let agent = n.agent(Shutdown::never());
    let run = agent.run(true);
    tokio::pin!(run);
    loop {
        tokio::select! {
            o = &mut run => panic!("{}: round ended before the crash: {o:?}", n.name),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if ecs.status(&n.arn) == Some(InstanceStatus::Draining) {
            return;
        }
    }
}

// ---------------------------------------------------------------- hole 1: out of service counts

/// Host a's agent dies mid-drain and stays down for an hour, far past its claim's TTL; then b
/// looks for a slot (N = 1). Returns the most instances DRAINING at once.
async fn dead_holder_scenario(b_off: UnsafeOff) -> (FakeEcs, Node, Node, usize) {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    let mut b = node("b", Some(&ecs), config(""));
    b.unsafe_off = b_off;
    ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 2);
    ecs.set_drain_time(30 * MIN, 30 * MIN);
    crash_mid_drain(&a, &ecs).await;
    tokio::time::sleep(60 * MIN).await;
    let _ = tokio::time::timeout(120 * MIN, b.agent(Shutdown::never()).run(true)).await;
    let most = most_draining_at_once(&ecs);
    (ecs, a, b, most)
}

#[tokio::test(start_paused = true)]
async fn hole1_an_instance_drained_by_a_dead_agent_keeps_its_slot_after_its_claim_lapses() {
    let (ecs, a, b, most) = dead_holder_scenario(UnsafeOff::default()).await;
    assert_eq!(most, 1, "b drained while a, drained by its dead agent, was still out of service");
    assert_eq!(ecs.status(&b.arn), Some(InstanceStatus::Active));
    let st = status_of(&ecs, &b);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("waiting", "waiting-for-slot"), "{st:?}");
    assert!(st.detail.contains(short_id(&a.arn)) && st.detail.contains("drained-by-agent"), "b's status must name who holds the slot: {st:?}");
    // a's agent comes back: it undoes its round (and takes the slot again for its own update).
    ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
    let outcomes = a.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    let outcomes = b.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    assert_clean(&ecs, &a);
    assert_clean(&ecs, &b);
    assert_eq!(most_draining_at_once(&ecs), 1);
}

#[tokio::test(start_paused = true)]
async fn hole1_negative_control_counting_live_claims_only_drains_two_at_n1() {
    let (_, _, _, most) = dead_holder_scenario(UnsafeOff { out_of_service_count: true, ..UnsafeOff::default() }).await;
    assert_eq!(most, 2, "without counting out-of-service instances, b takes the dead holder's slot");
}

#[tokio::test(start_paused = true)]
async fn hole1_an_instance_drained_by_someone_else_takes_a_slot_unless_configured_not_to() {
    let ecs = FakeEcs::new("c", 1);
    let other = ecs.register("scaled-in");
    ecs.operator_set_status(&other, InstanceStatus::Draining);
    let a = node("a", Some(&ecs), config(""));
    let waited = tokio::time::timeout(60 * MIN, a.agent(Shutdown::never()).run(true)).await;
    assert!(waited.is_err(), "a must wait while another instance is DRAINING (N = 1)");
    let st = status_of(&ecs, &a);
    assert!(st.detail.contains(short_id(&other)) && st.detail.contains("draining-not-by-agent"), "{st:?}");
    assert_eq!(ecs.attribute(&a.arn, &lease(&a)), None, "no claim left while waiting");

    let b = node("b", Some(&ecs), config("[cluster]\ncount-foreign-draining = false"));
    let outcomes = b.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    assert_eq!(ecs.status(&other), Some(InstanceStatus::Draining), "never touched");
}

// ---------------------------------------------------------------- hole 2: late renewals

fn lease_params() -> LeaseParams {
    LeaseParams {
        max_concurrent: 1,
        ttl: 10 * MIN,
        settle: Duration::from_secs(5),
        skew: Duration::from_secs(30),
        backoff: Backoff::new(Duration::from_secs(5), MIN),
        wait_poll_max: MIN,
        rule: LeaseRule::CountOthers,
        foreign_draining: true,
        stuck_after: None,
    }
}

/// a holds a slot; nine minutes in, its renewal's write takes two minutes to land (past the
/// claim's expiry), while b looks for a slot as soon as a's claim has lapsed for it. Returns
/// whether a's renewal succeeded and whether b took a slot.
async fn late_renewal_scenario(a_off: UnsafeOff) -> (Result<(), LeaseError>, bool) {
    let ecs = FakeEcs::new("c", 1);
    let (arn_a, arn_b) = (ecs.register("a"), ecs.register("b"));
    let (store_a, store_b) = (ecs.host(&arn_a), ecs.host(&arn_b));
    let (clock_a, clock_b) = (clock(), clock());
    let (jitter_a, jitter_b) = (Jitter::seeded(1), Jitter::seeded(2));
    let names_a = Names { unsafe_off: a_off, ..Names::new("br-update") };
    let names_b = Names::new("br-update");
    let retry = RetryPolicy { budget: 2 * MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
    let a = LeaseClient { store: &store_a, clock: &clock_a, jitter: &jitter_a, names: &names_a, retry };
    let b = LeaseClient { store: &store_b, clock: &clock_b, jitter: &jitter_b, names: &names_b, retry };
    let p = lease_params();
    let held = a.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {}).await.expect("a holds");
    tokio::time::sleep(9 * MIN).await;
    ecs.set_faults(EcsFaults { slow_write_every: 1, slow_write: 2 * MIN, ..EcsFaults::default() });
    let renew_a = a.renew(&held, ClaimPhase::Draining, p.ttl, p.margin());
    let take_b = async {
        tokio::time::sleep(MIN + Duration::from_secs(35)).await;
        ecs.set_faults(EcsFaults::default());
        tokio::time::timeout(5 * MIN, b.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {})).await
    };
    let (renewed, taken) = tokio::join!(renew_a, take_b);
    (renewed.map(|_| ()), matches!(taken, Ok(Ok(_))))
}

/// a's round, in which the renewal while it drains lands 24 s before the claim's expiry; returns
/// the round's outcome and the reboots asked for.
async fn renewal_inside_the_margin() -> (Outcome, usize, FakeEcs, Node) {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(8 * MIN, 8 * MIN);
    let slow = async {
        for _ in 0..3600 {
            if ecs.status(&a.arn) == Some(InstanceStatus::Draining) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The drain's write renewed the claim for a TTL (10 min); its keeper renews at half of
        // it, 5 minutes on: that write lands 4 min 36 s later, 24 s before the old expiry.
        tokio::time::sleep(MIN).await;
        ecs.set_faults(EcsFaults { slow_write_every: 1, slow_write: 4 * MIN + Duration::from_secs(36), ..EcsFaults::default() });
        tokio::time::sleep(5 * MIN).await;
        ecs.set_faults(EcsFaults::default());
    };
    let agent = a.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(agent.run(true), slow);
    drop(agent);
    let reboots = a.host.reboot_requests();
    (outcome, reboots, ecs, a)
}

/// The same edge through the whole cycle, inside the margin rather than past the expiry: a's
/// renewal while it drains lands 24 s before its claim's expiry, within the settle time (5 s) and
/// clock skew (30 s) in which another host may already count the claim lapsed. The cycle takes
/// the claim as lost: it undoes the drain and never reboots. (With the cycle's margin at zero, a
/// rebooted.)
#[tokio::test(start_paused = true)]
async fn hole2_a_drain_renewal_landing_inside_the_margin_loses_the_claim() {
    let (outcome, reboots, ecs, a) = renewal_inside_the_margin().await;
    assert_eq!(ecs.fault_tally().slow_writes, 1, "one write landed late: {outcome:?}");
    assert!(matches!(&outcome, Outcome::Failed { reason } if reason.contains("claim lost: too late")), "{outcome:?}");
    assert_eq!(reboots, 0, "never rebooted under a claim others may have counted lapsed: {outcome:?}");
    assert_clean(&ecs, &a);
}

/// A look that finds a slot free by the claims claims without listing the instances out of
/// service; the count after the claim always lists them. One found there (an operator's drain)
/// makes the looks read them before claiming, so the host waits instead of claiming and
/// withdrawing at every look; once the instance is back, one claim takes the slot.
#[tokio::test(start_paused = true)]
async fn an_instance_out_of_service_found_by_a_count_is_looked_for_before_the_next_claims() {
    let ecs = FakeEcs::new("c", 1);
    let (arn_a, arn_b) = (ecs.register("a"), ecs.register("b"));
    let store_a = ecs.host(&arn_a);
    let (clock_a, jitter_a, names) = (clock(), Jitter::seeded(1), Names::new("br-update"));
    let retry = RetryPolicy { budget: 2 * MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
    let a = LeaseClient { store: &store_a, clock: &clock_a, jitter: &jitter_a, names: &names, retry };
    ecs.operator_set_status(&arn_b, InstanceStatus::Draining);
    let p = lease_params();
    let back = async {
        tokio::time::sleep(30 * MIN).await;
        ecs.operator_set_status(&arn_b, InstanceStatus::Active);
    };
    let (held, ()) = tokio::join!(tokio::time::timeout(60 * MIN, a.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {})), back);
    assert!(matches!(held, Ok(Ok(_))), "a takes the slot once b is back: {held:?}");
    let ops: Vec<&str> = ecs.call_log().iter().map(|c| c.op).collect();
    let claims = ecs.history().iter().filter(|e| matches!(&e.change, EcsChange::Put { name, .. } if name == "br-update.lease")).count();
    assert_eq!(claims, 2, "one claim withdrawn on finding b DRAINING, one that holds: {ops:?}");
    let first_claim = ops.iter().position(|op| *op == "PutAttributes").expect("a claim");
    assert!(!ops[..first_claim].contains(&"ListContainerInstances"), "the first look lists the claims only: {ops:?}");
    // 30 minutes of looks (wait-poll-max 1 min here) each list the DRAINING instances.
    let listings = ops.iter().filter(|op| **op == "ListContainerInstances").count();
    assert!(listings >= 15, "the looks while b drains list it: {listings} in {ops:?}");
}

/// An operator drained a's instance before a's agent did, and sets it ACTIVE again while a
/// updates; a's renewal before its reboot lands 14 minutes late, after its claim lapsed, and
/// brings the claim back (its new expiry covers the reboot). b looks meanwhile. Returns the
/// cluster's history and the ARNs of a and b.
async fn late_renewal_over_a_foreign_drain(a_off: UnsafeOff) -> (Vec<testkit::fake_ecs::EcsEvent>, String, String) {
    let ecs = FakeEcs::new("c", 1);
    let mut a = node("a", Some(&ecs), config(""));
    a.unsafe_off = a_off;
    let b = node("b", Some(&ecs), config(""));
    ecs.operator_update_state(&a.arn, SetStatus::Draining);
    let agent_a = a.agent(Shutdown::never());
    let run_a = tokio::time::timeout(60 * MIN, agent_a.run(true));
    let script = async {
        while !ecs.attribute(&a.arn, &lease(&a)).is_some_and(|v| v.starts_with("v1:d:")) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ecs.operator_update_state(&a.arn, SetStatus::Active);
        // a's next write, the renewal before its reboot, starts within these 20 s.
        ecs.set_faults(EcsFaults { slow_write_every: 1, slow_write: 14 * MIN, ..EcsFaults::default() });
        tokio::time::sleep(Duration::from_secs(20)).await;
        ecs.set_faults(EcsFaults::default());
        // a's claim has lapsed, skew allowance included, and its late write is still on its way.
        tokio::time::sleep(11 * MIN).await;
        let _ = tokio::time::timeout(30 * MIN, b.agent(Shutdown::never()).run(true)).await;
    };
    let _ = tokio::join!(run_a, script);
    (ecs.history(), a.arn.clone(), b.arn.clone())
}

fn first_put(h: &[testkit::fake_ecs::EcsEvent], arn: &str, name: &str, value_starts: &str) -> Option<tokio::time::Instant> {
    h.iter()
        .find(|e| &*e.instance == arn && matches!(&e.change, EcsChange::Put { name: n, value } if n == name && value.starts_with(value_starts)))
        .map(|e| e.at)
}

/// The marker a host writes over someone else's drain keeps the slot through a lapse of its
/// claim: b waits until a has withdrawn, instead of claiming beside the claim a's late write
/// brings back; a leaves the instance's status to the operator.
#[tokio::test(start_paused = true)]
async fn hole2_a_late_renewal_over_an_operators_drain_finds_the_slot_still_held() {
    let (h, a, b) = late_renewal_over_a_foreign_drain(UnsafeOff::default()).await;
    let marker = first_put(&h, &a, "br-update.drained", "by-other:");
    let late = first_put(&h, &a, "br-update.lease", "v1:r:").expect("a's renewal before its reboot landed");
    let d = first_put(&h, &a, "br-update.lease", "v1:d:").expect("a's drain write");
    assert_eq!(marker, Some(d), "the marker goes in the drain's write, over the operator's drain");
    assert!(late - d > 11 * MIN, "the renewal landed after the claim lapsed");
    let withdrawn = h.iter().find(|e| *e.instance == *a && e.at > late && matches!(&e.change, EcsChange::Delete { name } if name == "br-update.lease"));
    let b_claim = first_put(&h, &b, "br-update.lease", "v1:c:").expect("b claims in the end");
    assert!(withdrawn.is_some_and(|w| w.at <= b_claim), "b claimed while a's claim could still come back: {h:#?}");
    assert!(!h.iter().any(|e| *e.instance == *a && e.by == Actor::Agent && matches!(e.change, EcsChange::Status(_))), "a's agent never sets the operator's instance's status");
}

#[tokio::test(start_paused = true)]
async fn hole2_negative_control_without_the_marker_over_an_operators_drain_b_claims_beside_the_late_claim() {
    let (h, a, b) = late_renewal_over_a_foreign_drain(UnsafeOff { marker_when_drained_by_others: true, ..UnsafeOff::default() }).await;
    let late = first_put(&h, &a, "br-update.lease", "v1:r:").expect("a's late renewal");
    let b_claim = first_put(&h, &b, "br-update.lease", "v1:c:").expect("b claims");
    assert!(b_claim < late, "without the marker, b claims before a's late claim lands beside it");
}

#[tokio::test(start_paused = true)]
async fn hole2_a_renewal_that_lands_after_the_old_expiry_loses_the_claim() {
    let (renewed, b_took) = late_renewal_scenario(UnsafeOff::default()).await;
    assert!(b_took, "b saw a's claim lapse and took the slot");
    assert!(matches!(renewed, Err(LeaseError::Lost(ref why)) if why.contains("too late")), "{renewed:?}");
}

#[tokio::test(start_paused = true)]
async fn hole2_negative_control_accepting_late_renewals_gives_two_holders() {
    let (renewed, b_took) = late_renewal_scenario(UnsafeOff { late_renewal_check: true, ..UnsafeOff::default() }).await;
    assert!(b_took && renewed.is_ok(), "both hold: renewal {renewed:?}, b took {b_took}");
}

#[tokio::test(start_paused = true)]
async fn hole2_a_claim_within_the_margin_of_its_expiry_is_not_renewed() {
    let ecs = FakeEcs::new("c", 1);
    let arn = ecs.register("a");
    let store = ecs.host(&arn);
    let (clk, jitter, names) = (clock(), Jitter::seeded(1), Names::new("br-update"));
    let retry = RetryPolicy { budget: MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
    let a = LeaseClient { store: &store, clock: &clk, jitter: &jitter, names: &names, retry };
    let p = lease_params();
    let held = a.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {}).await.expect("holds");
    // 20 s before expiry: inside the 35 s margin (settle 5 s + skew 30 s).
    tokio::time::sleep(10 * MIN - Duration::from_secs(20)).await;
    let r = a.renew(&held, ClaimPhase::Draining, p.ttl, p.margin()).await;
    assert!(matches!(r, Err(LeaseError::Lost(_))), "{r:?}");
    assert!(a.in_time(&held.claim, p.margin()).is_err());
}

// ---------------------------------------------------------------- hole 3: after boot

/// a updates (N = 1); after the boot, `trouble` keeps it from returning to service for 40
/// minutes (four claim lifetimes). Samples a's claim every minute meanwhile; returns whether it
/// was live at every sample, the status seen at 30 minutes, and the final outcome. `cluster`:
/// more `[cluster]` settings.
async fn after_boot_scenario(off: UnsafeOff, trouble: AfterBoot, cluster: &str) -> (bool, Status, Outcome, FakeEcs, Node) {
    let ecs = FakeEcs::new("c", 1);
    // Held, not rolled back: the subject is a host that keeps its slot while it cannot finish.
    let mut a = node("a", Some(&ecs), config(&format!("[health]\non-failure = \"hold\"\n[cluster]\n{cluster}")));
    a.unsafe_off = off;
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    tokio::time::sleep(REBOOT).await;
    match trouble {
        AfterBoot::EcsAgentAway => ecs.set_agent_connected(&a.arn, false),
        AfterBoot::ApiFails => a.host.set_faults(Faults { api_errors_after_boot: 40 * MIN, ..Faults::default() }),
    }
    a.host.boot();
    let agent = a.agent(Shutdown::never());
    let watcher = async {
        let mut always_live = true;
        let mut at_30 = None;
        for minute in 1..=40 {
            tokio::time::sleep(MIN).await;
            let claim = ecs.attribute(&a.arn, &lease(&a)).and_then(|v| Claim::parse(&v).ok());
            always_live &= claim.is_some_and(|c| WallTime::from_secs(c.expires_at) > a.now());
            if minute == 30 {
                at_30 = Some(status_of(&ecs, &a));
            }
        }
        ecs.set_agent_connected(&a.arn, true);
        (always_live, at_30.expect("sampled"))
    };
    let (outcome, (live, st)) = tokio::join!(agent.run(true), watcher);
    (live, st, outcome, ecs, a)
}

#[derive(Clone, Copy)]
enum AfterBoot {
    EcsAgentAway,
    ApiFails,
}

/// A canary (the default here: the fleet's first host) bakes and renews its claim at once after
/// boot; a host that would return at once (no canary, no bake) leaves the reboot's claim as it
/// is until half a TTL is left. The keeper must keep either alive.
const AS_CANARY_AND_NOT: [&str; 2] = ["", "canary-hosts = 0"];

#[tokio::test(start_paused = true)]
async fn hole3_the_claim_stays_live_while_the_ecs_agent_is_away_longer_than_its_ttl() {
    for cluster in AS_CANARY_AND_NOT {
        let (live, st, outcome, ecs, a) = after_boot_scenario(UnsafeOff::default(), AfterBoot::EcsAgentAway, cluster).await;
        assert!(live, "`{cluster}`: the claim lapsed while the instance was out of service");
        assert_eq!((st.phase.as_str(), st.result.as_str()), ("held", "held-ecs-agent"), "`{cluster}`: {st:?}");
        assert!(st.detail.contains("ECS agent"), "{st:?}");
        assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Active));
        assert_eq!(outcome, Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
        assert_clean(&ecs, &a);
    }
}

#[tokio::test(start_paused = true)]
async fn hole3_the_claim_stays_live_while_the_new_versions_api_fails() {
    for cluster in AS_CANARY_AND_NOT {
        let (live, st, outcome, ecs, a) = after_boot_scenario(UnsafeOff::default(), AfterBoot::ApiFails, cluster).await;
        assert!(live, "`{cluster}`: the claim lapsed while the API failed after boot");
        assert_eq!((st.phase.as_str(), st.result.as_str()), ("held", "held-after-boot"), "`{cluster}`: {st:?}");
        assert_eq!(outcome, Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
        assert_clean(&ecs, &a);
    }
}

#[tokio::test(start_paused = true)]
async fn hole3_negative_control_without_the_keeper_the_claim_lapses_after_boot() {
    let off = UnsafeOff { claim_keeper: true, ..UnsafeOff::default() };
    let (live, ..) = after_boot_scenario(off, AfterBoot::ApiFails, "").await;
    assert!(!live, "without the keeper the claim must be seen lapsed while the API fails");
}

#[tokio::test(start_paused = true)]
async fn hole3_a_claim_replaced_while_the_host_was_down_is_not_taken_over_after_boot() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    // While a is down, an operator writes another claim (another token) on its instance.
    let foreign = "v1:h:1800000000:1900000000:deadbeef:9.9.9";
    ecs.operator_put(&a.arn, &lease(&a), foreign);
    a.host.boot();
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert_eq!(outcome, Outcome::Finished { result: "updated".into(), version: "1.1.0".into() });
    let rewrote = ecs.history().iter().any(|e| {
        e.by == testkit::fake_ecs::Actor::Agent && matches!(&e.change, EcsChange::Put { value, .. } if value.contains("deadbeef"))
    });
    assert!(!rewrote, "the agent renewed a claim that was not its own");
}

#[tokio::test(start_paused = true)]
async fn hole3_a_reboot_that_never_happened_is_asked_again_under_the_kept_claim() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    // The agent is restarted but the host never went down: the update is still Ready.
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert_eq!(outcome, Outcome::Rebooting { target: "1.1.0".into() }, "asked again, holding its slot");
    assert_eq!(a.host.reboot_requests(), 2);
    let claim = ecs.attribute(&a.arn, &lease(&a)).and_then(|v| Claim::parse(&v).ok()).expect("the claim is kept");
    assert_eq!(claim.phase, ClaimPhase::Rebooting);
}

// ---------------------------------------------------------------- hole 4: undo and stale reads

/// a drains; five seconds after DRAINING is set it is stopped (SIGTERM) while describes lag a
/// minute behind (they still say ACTIVE). Returns a's instance status after the undo.
async fn stale_undo_scenario(off: UnsafeOff) -> (FakeEcs, Node) {
    let ecs = FakeEcs::new("c", 1);
    let mut a = node("a", Some(&ecs), config(""));
    a.unsafe_off = off;
    ecs.add_tasks(&a.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(60 * MIN, 60 * MIN);
    ecs.set_faults(EcsFaults { status_lag: MIN, ..EcsFaults::default() });
    let (trigger, shutdown) = Shutdown::new();
    let agent = a.agent(shutdown);
    let killer = async {
        while ecs.status(&a.arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.fire();
    };
    let (outcome, ()) = tokio::join!(agent.run(true), killer);
    assert_eq!(outcome, Outcome::Interrupted);
    (ecs, a)
}

#[tokio::test(start_paused = true)]
async fn hole4_undo_sets_active_even_when_a_stale_read_still_says_active() {
    let (ecs, a) = stale_undo_scenario(UnsafeOff::default()).await;
    assert_clean(&ecs, &a);
}

#[tokio::test(start_paused = true)]
async fn hole4_negative_control_trusting_the_stale_read_leaves_the_instance_draining() {
    let (ecs, a) = stale_undo_scenario(UnsafeOff { undo_sets_active_always: true, ..UnsafeOff::default() }).await;
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Draining));
    assert_eq!(ecs.attribute(&a.arn, &drained(&a)), None, "marker deleted: nothing would ever repair it");
}

#[tokio::test(start_paused = true)]
async fn hole4_a_failed_deactivate_still_returns_the_instance_and_releases_the_slot() {
    let ecs = FakeEcs::new("c", 1);
    let faults = Faults { reboot_refused: true, deactivate_fails: true, ..Faults::default() };
    let a = Node::new("a", host(faults), Some(&ecs), clock(), config(""), 5);
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(&outcome, Outcome::Failed { reason } if reason.contains("reboot")), "{outcome:?}");
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Active), "returned to service");
    assert_eq!(ecs.attribute(&a.arn, &lease(&a)), None, "slot released");
    assert_eq!(ecs.attribute(&a.arn, &drained(&a)), None);
    assert!(a.record().in_flight.is_some(), "the record is kept, so the deactivation is tried again");
    assert_eq!(status_of(&ecs, &a).result, "failed");
    // The deactivation works next time: the record goes, and the update is no longer active.
    a.host.set_faults(Faults::default());
    assert_eq!(a.agent(Shutdown::never()).recover().await, Ok(None));
    assert_eq!(a.record().in_flight, None);
    assert_ne!(a.host.update_state(), Some(fake_bottlerocket::UpdateState::Ready));
}

// ---------------------------------------------------------------- hole 5: tasks still stopping

/// a drains two service tasks that ECS stops after 2 minutes but that keep running for 5 more
/// (a load balancer's deregistration delay). Returns the tasks still running when a asked to
/// reboot.
/// Tasks left running when the host accepted its reboot, with ECS listing `listing` and each
/// ECS agent showing `view` of its tasks; also the ECS calls the drain made.
async fn stopping_tasks_scenario(listing: TaskListing, view: LocalTaskView) -> (usize, std::collections::BTreeMap<&'static str, u64>) {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 2);
    ecs.set_drain_time(2 * MIN, 2 * MIN);
    ecs.set_stop_time(5 * MIN, 5 * MIN);
    ecs.set_task_listing(listing);
    ecs.set_local_task_view(view);
    let agent = a.agent(Shutdown::never());
    let mut drain_calls = std::collections::BTreeMap::new();
    let watch = async {
        while ecs.status(&a.arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = ecs.calls();
        while a.host.reboot_requests() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (op, n) in ecs.calls() {
            drain_calls.insert(op, n - before.get(op).copied().unwrap_or(0));
        }
    };
    let (outcome, ()) = tokio::join!(agent.run(true), watch);
    assert!(matches!(outcome, Outcome::Rebooting { .. }), "{outcome:?}");
    // The round ends the instant the host accepts the reboot: judge the tasks then.
    (unstopped_at(&ecs.history(), &a.arn, tokio::time::Instant::now()), drain_calls)
}

#[tokio::test(start_paused = true)]
async fn hole5_the_drain_waits_until_stopping_tasks_have_stopped() {
    for view in [LocalTaskView::Faithful, LocalTaskView::Off] {
        assert_eq!(stopping_tasks_scenario(TaskListing::NotStopped, view).await.0, 0, "{view:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn hole5_negative_control_counting_desired_running_tasks_reboots_with_tasks_still_serving() {
    // Without the ECS agent's view, which would hold the end back until the tasks stop (up to
    // the next full listing): the listing is what must get it right.
    assert_eq!(stopping_tasks_scenario(TaskListing::DesiredRunningOnly, LocalTaskView::Off).await.0, 2);
}

#[tokio::test(start_paused = true)]
async fn the_ecs_agents_view_of_the_tasks_saves_the_drains_looks_but_ecs_decides_its_end() {
    let (left, faithful) = stopping_tasks_scenario(TaskListing::NotStopped, LocalTaskView::Faithful).await;
    assert_eq!(left, 0);
    let (_, off) = stopping_tasks_scenario(TaskListing::NotStopped, LocalTaskView::Off).await;
    let describes = |c: &std::collections::BTreeMap<&str, u64>| c.get("DescribeContainerInstances").copied().unwrap_or(0);
    let total = |c: &std::collections::BTreeMap<&str, u64>| c.values().sum::<u64>();
    println!("MEASURE: a 7-minute drain: ECS calls {} with the ECS agent's view ({faithful:?}), {} without ({off:?})", total(&faithful), total(&off));
    assert!(describes(&faithful) < describes(&off) && total(&faithful) < total(&off), "{faithful:?} vs {off:?}");
    // The renewal's read, then the listings: at most one renewal in seven minutes (TTL 10 min).
    assert!(describes(&faithful) <= 2, "{faithful:?}");
    // A view that wrongly shows nothing left only brings ECS's listing forward: it still waits.
    assert_eq!(stopping_tasks_scenario(TaskListing::NotStopped, LocalTaskView::Empty).await.0, 0);
}

#[tokio::test(start_paused = true)]
async fn hole5_a_standalone_task_started_during_the_drain_falls_under_the_skip_policy() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(10 * MIN, 10 * MIN);
    let starter = async {
        while ecs.status(&a.arn) != Some(InstanceStatus::Draining) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ecs.add_tasks(&a.arn, Some("events-rule/nightly"), 1);
    };
    let agent = a.agent(Shutdown::never());
    let (outcome, ()) = tokio::join!(agent.run(true), starter);
    assert!(matches!(&outcome, Outcome::Skipped { reason } if reason.contains("started during the drain")), "{outcome:?}");
    assert_eq!(a.host.reboot_requests(), 0);
    assert_clean(&ecs, &a);
}

#[tokio::test(start_paused = true)]
async fn hole5_a_standalone_task_started_while_waiting_for_the_slot_skips_before_any_drain() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    // Another host holds the only slot for a while; a standalone task starts meanwhile.
    let other = ecs.register("other");
    let claim = |expires: i64| format!("v1:d:1800000000:{expires}:0badf00d:1.1.0");
    ecs.operator_put(&other, "br-update.lease", &claim(1_800_000_000 + 1200));
    let agent = a.agent(Shutdown::never());
    let world = async {
        tokio::time::sleep(5 * MIN).await;
        ecs.add_tasks(&a.arn, Some("events-rule/nightly"), 1);
        tokio::time::sleep(5 * MIN).await;
        ecs.operator_delete(&other, "br-update.lease");
    };
    let (outcome, ()) = tokio::join!(agent.run(true), world);
    assert!(matches!(&outcome, Outcome::Skipped { reason } if reason.contains("standalone")), "{outcome:?}");
    let drained = ecs.history().iter().any(|e| &*e.instance == a.arn.as_str() && e.change == EcsChange::Status(InstanceStatus::Draining));
    assert!(!drained, "the instance was drained although a standalone task would have stayed");
    assert_clean(&ecs, &a);
}

#[tokio::test(start_paused = true)]
async fn hole5_tasks_that_never_finish_stopping_time_the_drain_out_at_the_drain_timeout() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&a.arn, Some("ecs-svc/web"), 1);
    ecs.set_drain_time(MIN, MIN);
    ecs.set_stop_time(24 * 60 * MIN, 24 * 60 * MIN);
    let started = tokio::time::Instant::now();
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(&outcome, Outcome::Skipped { reason } if reason.contains("1 stopping")), "{outcome:?}");
    // The test config's drain-timeout is 10 minutes; a stopping task must not get the hour
    // that standalone tasks get.
    assert!(started.elapsed() < 20 * MIN, "gave up after {:?}", started.elapsed());
    assert_clean(&ecs, &a);
}

// ---------------------------------------------------------------- hole 6: partial listings

#[tokio::test(start_paused = true)]
async fn hole6_an_incomplete_listing_makes_the_host_wait_instead_of_claiming() {
    let ecs = FakeEcs::new("c", 1);
    let a = node("a", Some(&ecs), config(""));
    ecs.set_faults(EcsFaults { incomplete_lists: true, ..EcsFaults::default() });
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(&outcome, Outcome::Failed { reason } if reason.contains("incomplete")), "{outcome:?}");
    let claimed = ecs.history().iter().any(|e| matches!(&e.change, EcsChange::Put { name, .. } if *name == lease(&a)));
    assert!(!claimed, "a claim was written on an incomplete count");
    assert_eq!(most_draining_at_once(&ecs), 0);
    assert_clean(&ecs, &a);
}

// ---------------------------------------------------------------- hole 7: dry run

#[tokio::test(start_paused = true)]
async fn hole7_dry_run_writes_nothing_even_with_an_undo_pending() {
    let ecs = FakeEcs::new("c", 1);
    let mut a = node("a", Some(&ecs), config(""));
    ecs.add_tasks(&a.arn, Some("ecs-svc/slow"), 1);
    ecs.set_drain_time(60 * MIN, 60 * MIN);
    crash_mid_drain(&a, &ecs).await;
    let (writes, record) = (ecs.history().len(), a.record());
    a.host.clear_requests();
    a.cfg.dry_run = true;
    let outcome = a.agent(Shutdown::never()).run(true).await;
    assert!(matches!(outcome, Outcome::DryRun { .. }), "{outcome:?}");
    assert_eq!(ecs.history().len(), writes, "dry run changed ECS: {:?}", &ecs.history()[writes..]);
    assert_eq!(a.record(), record, "dry run changed the journal");
    assert!(!a.host.requests().iter().any(|r| r.starts_with("POST")), "dry run posted: {:?}", a.host.requests());
    assert_eq!(ecs.status(&a.arn), Some(InstanceStatus::Draining));
}

#[tokio::test(start_paused = true)]
async fn hole7_dry_run_writes_nothing_after_a_reboot_either() {
    let ecs = FakeEcs::new("c", 1);
    let mut a = node("a", Some(&ecs), config(""));
    assert!(matches!(a.agent(Shutdown::never()).run(true).await, Outcome::Rebooting { .. }));
    a.host.boot();
    let (writes, record) = (ecs.history().len(), a.record());
    a.cfg.dry_run = true;
    let _ = a.agent(Shutdown::never()).run(true).await;
    assert_eq!(ecs.history().len(), writes, "dry run changed ECS: {:?}", &ecs.history()[writes..]);
    assert_eq!(a.record(), record, "dry run changed the journal");
}

// ---------------------------------------------------------------- hole 9: status after undo

#[tokio::test(start_paused = true)]
async fn hole9_the_status_attribute_tells_the_real_state_after_an_undo() {
    let (ecs, a) = stale_undo_scenario(UnsafeOff::default()).await;
    let st = status_of(&ecs, &a);
    assert_eq!((st.phase.as_str(), st.result.as_str()), ("idle", "undone"), "{st:?}");
    assert!(st.detail.contains("signal"), "{st:?}");
}

// ---------------------------------------------------------------- claims never left behind

fn client_parts(ecs: &FakeEcs, id: &str, seed: u64) -> (testkit::fake_ecs::FakeEcsHost, agent::clock::VirtualClock, Jitter, Names) {
    (ecs.host(&ecs.register(id)), clock(), Jitter::seeded(seed), Names::new("br-update"))
}

#[tokio::test(start_paused = true)]
async fn a_host_that_loses_the_race_withdraws_its_claim() {
    let ecs = FakeEcs::new("c", 1);
    let (sa, ca, ja, na) = client_parts(&ecs, "a", 1);
    let (sb, cb, jb, nb) = client_parts(&ecs, "b", 2);
    let retry = RetryPolicy { budget: MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
    let a = LeaseClient { store: &sa, clock: &ca, jitter: &ja, names: &na, retry };
    let b = LeaseClient { store: &sb, clock: &cb, jitter: &jb, names: &nb, retry };
    let p = lease_params();
    // Reads lag up to 3 s (within the 5 s settle): b's first look misses a's fresh claim.
    ecs.set_faults(EcsFaults { staleness: Duration::from_secs(3), ..EcsFaults::default() });
    // Both claim in the same instant: each counts the other and withdraws, then one wins later.
    let race = async {
        tokio::join!(
            a.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {}),
            tokio::time::timeout(15 * MIN, b.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {})),
        )
    };
    let _ = tokio::time::timeout(30 * MIN, race).await;
    let withdrawn = ecs.history().iter().filter(|e| matches!(&e.change, EcsChange::Delete { name } if name == "br-update.lease")).count();
    assert!(withdrawn >= 2, "both losers of the first race withdraw their claims ({withdrawn} withdrawn)");
    // Each count after the first claims saw the other claim fill the one slot: the drained
    // markers and the DRAINING instances could only have added to it, and are not read.
    for store in [&sa, &sb] {
        let own: Vec<&str> = ecs.call_log().iter().filter(|c| *c.instance == *store.instance_arn()).map(|c| c.op).collect();
        let claim = own.iter().position(|op| *op == "PutAttributes").expect("a claim");
        let withdrawal = own[claim..].iter().position(|op| *op == "DeleteAttributes").expect("a withdrawal") + claim;
        assert_eq!(own[claim + 1..withdrawal], ["ListAttributes"], "{}: calls between the claim and its withdrawal", store.instance_arn());
    }
}

/// With calls spaced a second apart, a claim on a look that left the last slot free follows
/// its listing at once (a host looking in the same second would see that slot free too, and
/// the two would both withdraw); with more slots free it waits its turn like any call (two
/// claims made together both hold).
#[tokio::test(start_paused = true)]
async fn a_claim_follows_its_listing_at_once_only_for_the_last_free_slot() {
    for (others, at_once) in [(2, true), (1, false), (0, false)] {
        let ecs = FakeEcs::new("c", 1);
        let now = agent::clock::Clock::now(&clock()).as_secs();
        for i in 0..others {
            let other = ecs.register(&format!("other{i}"));
            ecs.operator_put(&other, "br-update.lease", &format!("v1:d:{}:{}:aaaa000{i}:1.1.0", now - 60, now + 540));
        }
        let (s, c, j, n) = client_parts(&ecs, "a", 1);
        let paced = agent::cluster::paced::Paced::new(s, c.clone(), Duration::from_secs(1));
        let retry = RetryPolicy { budget: MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
        let a = LeaseClient { store: &paced, clock: &c, jitter: &j, names: &n, retry };
        let p = LeaseParams { max_concurrent: 3, ..lease_params() };
        a.acquire(&p, "1.1.0", || async { Ok(Gate::open(3)) }, |_| async {}).await.expect("a slot is free");
        let log = ecs.call_log();
        let own: Vec<_> = log.iter().filter(|c| *c.instance == *paced.instance_arn()).collect();
        let claim = own.iter().position(|c| c.op == "PutAttributes").expect("a claim");
        let gap = own[claim].at - own[claim - 1].at;
        assert_eq!(own[claim - 1].op, "ListAttributes");
        assert_eq!(gap.is_zero(), at_once, "{others} other claims of 3 slots: the claim came {gap:?} after its listing");
    }
}

/// Six hosts that find a slot free at the same instant (a release found together, agents
/// started together), N = 1, reads up to 200 ms stale: their first looks are spread over the
/// settle time, so that few claim within one stale read of another and withdraw. With the first
/// look paced like the others (a quarter of the settle time at most) 20 such starts cost 34
/// withdrawals; spread, 8.
#[tokio::test(start_paused = true)]
async fn hosts_that_look_together_first_spread_their_looks_and_seldom_withdraw() {
    let mut withdrawn = 0;
    for trial in 0..20u64 {
        let ecs = FakeEcs::new("c", 1);
        ecs.set_faults(EcsFaults { staleness: Duration::from_millis(200), ..EcsFaults::default() });
        let parts: Vec<_> = (0..6).map(|i| client_parts(&ecs, &format!("h{i}"), trial * 10 + i)).collect();
        let retry = RetryPolicy { budget: MIN, backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)) };
        let clients: Vec<_> = parts.iter().map(|(s, c, j, n)| LeaseClient { store: s, clock: c, jitter: j, names: n, retry }).collect();
        let p = lease_params();
        let looks = clients.iter().map(|c| tokio::time::timeout(MIN, c.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {})));
        let held = futures_util::future::join_all(looks).await.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(held, 1, "trial {trial}: one host holds the one slot");
        withdrawn += ecs.history().iter().filter(|e| matches!(&e.change, EcsChange::Delete { name } if name == "br-update.lease")).count();
    }
    assert!(withdrawn <= 16, "{withdrawn} claims withdrawn over 20 starts of six hosts together");
}

#[tokio::test(start_paused = true)]
async fn an_acquire_whose_count_fails_withdraws_its_claim() {
    let ecs = FakeEcs::new("c", 1);
    let (s, c, j, n) = client_parts(&ecs, "a", 1);
    let retry = RetryPolicy { budget: Duration::from_secs(5), backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(2)) };
    let a = LeaseClient { store: &s, clock: &c, jitter: &j, names: &n, retry };
    let p = lease_params();
    // The listings break during the settle time: the count after it cannot be made.
    let breaker = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ecs.set_faults(EcsFaults { incomplete_lists: true, ..EcsFaults::default() });
    };
    let (held, ()) = tokio::join!(a.acquire(&p, "1.1.0", || async { Ok(Gate::open(1)) }, |_| async {}), breaker);
    assert!(held.is_err(), "{held:?}");
    assert_eq!(ecs.attribute(s.instance_arn(), "br-update.lease"), None, "the claim was left behind");
}
