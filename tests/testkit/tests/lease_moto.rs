//! The lease protocol (`LeaseClient`) on the real `EcsStore` against the patched moto ECS server:
//! many contenders at once, each on its own thread and bound to its own container instance, while
//! a monitor reads the claims from the server. Checks at most N holders (counted by the test and
//! by the confirmed claims in the store), that a dead host's lapsed claim does not block, that an
//! unreadable claim takes a slot, and that a holder whose claim is gone or replaced loses it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::backoff::{Backoff, Jitter};
use agent::clock::{Clock, SystemClock};
use agent::cluster::ecs::EcsStore;
use agent::cluster::retry::RetryPolicy;
use agent::cluster::ClusterStore;
use agent::lease::{Claim, ClaimPhase, Gate, Held, LeaseClient, LeaseError, LeaseParams, LeaseRule, Names};
use serde_json::Value;
use testkit::moto::{MotoServer, Seeded};

const TARGET: &str = "1.1.0";
/// The safety net on anything that waits for a condition; never the thing being asserted.
const PATIENCE: Duration = Duration::from_secs(120);

fn names() -> Names {
    Names::new("br-update")
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        budget: Duration::from_secs(30),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
    }
}

/// Short timings: a long TTL (nothing lapses while held), a settle time, quick back-off.
fn params(n: u32) -> LeaseParams {
    LeaseParams {
        max_concurrent: n,
        ttl: Duration::from_secs(60),
        settle: Duration::from_millis(300),
        skew: Duration::from_secs(1),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        wait_poll_max: Duration::from_millis(500),
        rule: LeaseRule::default(),
        foreign_draining: true,
        stuck_after: None,
    }
}

fn start(cluster: &str, instances: usize) -> (MotoServer, Seeded) {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    let seeded = moto.seed(cluster, instances, &[]).unwrap_or_else(|e| panic!("seeding {cluster}: {e}"));
    (moto, seeded)
}

fn store(moto: &MotoServer, cluster: &str, arn: &str) -> EcsStore {
    EcsStore::new(moto.ecs_client(), cluster.to_owned(), arn.to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
}

/// Runs `f` with a lease client bound to `arn`, on the calling thread's own runtime.
fn with_client<T>(
    moto: &MotoServer,
    cluster: &str,
    arn: &str,
    seed: u64,
    f: impl AsyncFnOnce(&LeaseClient<'_, EcsStore, SystemClock>) -> T,
) -> T {
    runtime().block_on(async {
        let store = store(moto, cluster, arn);
        let names = names();
        let jitter = Jitter::seeded(seed);
        let client = LeaseClient { store: &store, clock: &SystemClock, jitter: &jitter, names: &names, retry: retry() };
        f(&client).await
    })
}

async fn acquire(client: &LeaseClient<'_, EcsStore, SystemClock>, params: &LeaseParams) -> Result<Held, LeaseError> {
    let n = params.max_concurrent;
    tokio::time::timeout(PATIENCE, client.acquire(params, TARGET, || async move { Ok(Gate::open(n)) }, |_| async {}))
        .await
        .expect("acquire finished within the safety net")
}

/// Counts holders as the test sees them: in at `enter`, out at `leave`; keeps the most ever.
#[derive(Default)]
struct Tally {
    inside: AtomicUsize,
    most: AtomicUsize,
    entries: AtomicUsize,
}

impl Tally {
    fn enter(&self) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// The lease values on the cluster's instances, by instance ARN, as the server holds them now.
fn claims(moto: &MotoServer, cluster: &str) -> Vec<(String, String)> {
    let state = moto.state(cluster).unwrap_or_else(|e| panic!("harness state: {e}"));
    let lease = names().lease;
    let mut out = vec![];
    for inst in state["instances"].as_array().expect("instances list") {
        if let Some(Value::String(v)) = inst["attributes"].get(&lease) {
            out.push((inst["arn"].as_str().unwrap_or_default().to_owned(), v.clone()));
        }
    }
    out
}

/// A confirmed claim: anything but one still being written and counted (unreadable ones count).
fn confirmed(value: &str) -> bool {
    !matches!(Claim::parse(value), Ok(c) if c.phase == ClaimPhase::Claiming)
}

/// Reads the claims from the server until `stop`; the most confirmed claims seen at once, and
/// how many reads it made.
fn monitor(moto: &MotoServer, cluster: &str, stop: &AtomicBool) -> (usize, usize) {
    let (mut most, mut reads) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let held = claims(moto, cluster).iter().filter(|(_, v)| confirmed(v)).count();
        most = most.max(held);
        reads += 1;
        std::thread::sleep(Duration::from_millis(15));
    }
    (most, reads)
}

/// One contender: `rounds` times acquire, confirm (phase `h`), hold, release.
fn contend(moto: &MotoServer, cluster: &str, arn: &str, seed: u64, n: u32, rounds: usize, tally: &Tally) {
    with_client(moto, cluster, arn, seed, async |client| {
        let p = params(n);
        for _ in 0..rounds {
            let held = acquire(client, &p).await.unwrap_or_else(|e| panic!("{arn}: acquire: {e}"));
            tally.enter();
            let held =
                client.renew(&held, ClaimPhase::Held, p.ttl, params(1).margin()).await.unwrap_or_else(|e| panic!("{arn}: renew: {e}"));
            assert_eq!(held.claim.phase, ClaimPhase::Held);
            SystemClock.sleep(client.jitter.between(Duration::from_millis(150), Duration::from_millis(350))).await;
            tally.leave();
            client.release().await.unwrap_or_else(|e| panic!("{arn}: release: {e}"));
        }
    })
}

/// `contenders` hosts loop acquire → hold → release `rounds` times with N = `n`.
fn at_most_n_hold(n: u32, contenders: usize, rounds: usize) {
    let cluster = format!("lease-n{n}");
    let (moto, seeded) = start(&cluster, contenders);
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (most_claims, reads) = std::thread::scope(|s| {
        let watcher = s.spawn(|| monitor(&moto, &cluster, &stop));
        let workers: Vec<_> = seeded
            .instances
            .iter()
            .enumerate()
            .map(|(i, arn)| {
                let (moto, cluster, tally) = (&moto, &cluster, &tally);
                s.spawn(move || contend(moto, cluster, arn, 1000 * u64::from(n) + i as u64, n, rounds, tally))
            })
            .collect();
        let mut failed = None;
        for w in workers {
            if let Err(e) = w.join() {
                failed.get_or_insert(e);
            }
        }
        stop.store(true, Ordering::SeqCst);
        let seen = watcher.join().expect("monitor thread");
        if let Some(e) = failed {
            std::panic::resume_unwind(e);
        }
        seen
    });
    eprintln!(
        "N={n}: {contenders} contenders x {rounds} rounds in {:.1}s; most holders {}, most confirmed claims {most_claims} ({reads} reads)",
        started.elapsed().as_secs_f64(),
        tally.most()
    );
    assert_eq!(tally.entries.load(Ordering::SeqCst), contenders * rounds, "every contender finished every round");
    assert!(tally.most() >= 1 && tally.most() <= n as usize, "holders at once: {} with N = {n}", tally.most());
    assert!(reads >= 10, "the monitor read the claims only {reads} times");
    assert!(most_claims >= 1, "the monitor never saw a confirmed claim in {reads} reads");
    assert!(most_claims <= n as usize, "{most_claims} confirmed claims at once with N = {n}");
    assert!(claims(&moto, &cluster).is_empty(), "every claim released: {:?}", claims(&moto, &cluster));
}

#[test]
fn one_holder_at_a_time_among_eight_contenders() {
    at_most_n_hold(1, 8, 3);
}

#[test]
fn at_most_two_holders_among_eight_contenders() {
    at_most_n_hold(2, 8, 3);
}

#[test]
fn at_most_three_holders_among_eight_contenders() {
    at_most_n_hold(3, 8, 3);
}

/// The checks above can fire: a host configured with a larger N than the fleet's gets in while
/// the fleet's only slot is held, and both the test's count and the claims show two holders.
#[test]
fn the_checks_fire_when_a_host_counts_against_a_larger_limit() {
    let cluster = "lease-misconfigured";
    let (moto, seeded) = start(cluster, 2);
    let tally = Tally::default();
    let (a, b) = (&seeded.instances[0], &seeded.instances[1]);
    let a_holds = AtomicBool::new(false);
    let b_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            with_client(&moto, cluster, a, 1, async |client| {
                let held = acquire(client, &params(1)).await.expect("a takes the only slot");
                tally.enter();
                client.renew(&held, ClaimPhase::Held, params(1).ttl, params(1).margin()).await.expect("a confirms");
                a_holds.store(true, Ordering::SeqCst);
                while !b_done.load(Ordering::SeqCst) {
                    SystemClock.sleep(Duration::from_millis(20)).await;
                }
                tally.leave();
                client.release().await.expect("a releases");
            })
        });
        wait_for("a holds the slot", || a_holds.load(Ordering::SeqCst));
        with_client(&moto, cluster, b, 2, async |client| {
            let held = acquire(client, &params(2)).await.expect("b counts against N = 2");
            tally.enter();
            client.renew(&held, ClaimPhase::Held, params(2).ttl, params(1).margin()).await.expect("b confirms");
            let confirmed_now = claims(&moto, cluster).iter().filter(|(_, v)| confirmed(v)).count();
            assert_eq!(confirmed_now, 2, "the store shows both confirmed claims");
            tally.leave();
            client.release().await.expect("b releases");
        });
        b_done.store(true, Ordering::SeqCst);
    });
    assert_eq!(tally.most(), 2, "the test's own count saw the breach of N = 1");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A claim in the agent's format for another host, `expires_in_s` from now (negative: past).
fn claim_value(phase: ClaimPhase, expires_in_s: i64, token: &str) -> String {
    let now = SystemClock.now().as_secs();
    Claim { phase, claimed_at: now - 600, expires_at: now + expires_in_s, token: token.into(), target: TARGET.into() }
        .encode()
}

async fn put(moto: &MotoServer, cluster: &str, arn: &str, value: &str) {
    store(moto, cluster, arn).put_attributes(&[(names().lease, value.to_owned())]).await.expect("put a claim by hand");
}

async fn delete(moto: &MotoServer, cluster: &str, arn: &str) {
    store(moto, cluster, arn).delete_attributes(&[names().lease]).await.expect("delete a claim by hand");
}

#[test]
fn a_dead_hosts_lapsed_claim_does_not_block_and_is_left_alone() {
    let cluster = "lease-dead";
    let (moto, seeded) = start(cluster, 2);
    let (dead, live) = (&seeded.instances[0], &seeded.instances[1]);
    let stale = claim_value(ClaimPhase::Draining, -60, "deadbeef");
    runtime().block_on(put(&moto, cluster, dead, &stale));
    with_client(&moto, cluster, live, 7, async |client| {
        let census = client.census(params(1).scope()).await.expect("census");
        assert_eq!((census.occupied.len(), census.lapsed), (0, 1), "{census:?}");
        moto.reset_calls().expect("reset calls");
        let held = acquire(client, &params(1)).await.expect("the lapsed claim does not block");
        // A free slot is taken on the first try: one look, one write, one count. The look lists
        // the claims, then (a slot being free and a claim lapsed: its instance may be out of
        // service) the drained markers, the DRAINING instances and the claims again, right before
        // the write; the count lists claims, markers and DRAINING.
        let calls = moto.calls().expect("calls");
        assert_eq!(
            (calls.of("ListAttributes"), calls.of("ListContainerInstances"), calls.of("PutAttributes")),
            (5, 2, 1),
            "{calls:?}"
        );
        assert_eq!(held.claim.phase, ClaimPhase::Claiming);
        client.release().await.expect("release");
    });
    assert_eq!(claims(&moto, cluster), vec![(dead.clone(), stale)], "only its own host may clear a claim");
}

#[test]
fn an_unreadable_claim_takes_the_only_slot_until_it_is_removed() {
    let cluster = "lease-garbage";
    let (moto, seeded) = start(cluster, 2);
    let (odd, live) = (&seeded.instances[0], &seeded.instances[1]);
    runtime().block_on(put(&moto, cluster, odd, "not a claim at all"));
    moto.reset_calls().expect("reset calls");
    let got_in = AtomicBool::new(false);
    std::thread::scope(|s| {
        let contender = s.spawn(|| {
            with_client(&moto, cluster, live, 9, async |client| {
                let census = client.census(params(1).scope()).await.expect("census");
                assert_eq!(census.occupied.len(), 1, "the unreadable claim occupies: {census:?}");
                assert!(census.occupied[0].claim.is_err(), "{census:?}");
                let held = acquire(client, &params(1)).await.expect("acquire once the slot is free");
                got_in.store(true, Ordering::SeqCst);
                client.release().await.expect("release");
                held
            })
        });
        // While it waits, it keeps looking and never writes a claim of its own.
        let start = Instant::now();
        loop {
            let looks = moto.calls().expect("calls").of("ListAttributes");
            let current = claims(&moto, cluster);
            assert!(!got_in.load(Ordering::SeqCst), "got in past an unreadable claim");
            assert!(
                current.iter().all(|(arn, _)| arn != live),
                "wrote a claim while the cluster was full: {current:?}"
            );
            if looks >= 5 {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "the contender stopped looking ({looks} looks)");
            std::thread::sleep(Duration::from_millis(50));
        }
        runtime().block_on(delete(&moto, cluster, odd));
        let held = contender.join().expect("contender thread");
        assert_eq!(held.claim.target, TARGET);
    });
    assert!(got_in.load(Ordering::SeqCst));
}

#[test]
fn a_holder_whose_claim_is_gone_replaced_or_lapsed_loses_it() {
    let cluster = "lease-lost";
    let (moto, seeded) = start(cluster, 1);
    let me = &seeded.instances[0];
    with_client(&moto, cluster, me, 11, async |client| {
        let p = params(1);
        let held = acquire(client, &p).await.expect("acquire");
        let held = client.renew(&held, ClaimPhase::Draining, p.ttl, params(1).margin()).await.expect("an intact claim renews");
        assert_eq!(Claim::parse(&claims(&moto, cluster)[0].1).map(|c| c.phase), Ok(ClaimPhase::Draining));

        delete(&moto, cluster, me).await;
        assert_lost(client.renew(&held, ClaimPhase::Draining, p.ttl, params(1).margin()).await, "gone");
        assert!(claims(&moto, cluster).is_empty(), "a lost renewal writes nothing");

        let held = acquire(client, &p).await.expect("acquire again");
        put(&moto, cluster, me, &claim_value(ClaimPhase::Held, 300, "0ddba11")).await;
        assert_lost(client.renew(&held, ClaimPhase::Draining, p.ttl, params(1).margin()).await, "replaced");
        assert_eq!(Claim::parse(&claims(&moto, cluster)[0].1).map(|c| c.token), Ok("0ddba11".to_owned()));

        let held = {
            delete(&moto, cluster, me).await;
            acquire(client, &p).await.expect("acquire a third time")
        };
        put(&moto, cluster, me, "garbage").await;
        assert_lost(client.renew(&held, ClaimPhase::Draining, p.ttl, params(1).margin()).await, "unreadable");

        delete(&moto, cluster, me).await;
        let held = acquire(client, &p).await.expect("acquire a fourth time");
        let lapsed = Claim { expires_at: SystemClock.now().as_secs() - 5, ..held.claim.clone() };
        put(&moto, cluster, me, &lapsed.encode()).await;
        assert_lost(client.renew(&held, ClaimPhase::Draining, p.ttl, params(1).margin()).await, "too late");
    });
}

fn assert_lost(result: Result<Held, LeaseError>, why: &str) {
    match result {
        Err(LeaseError::Lost(reason)) => assert!(reason.contains(why), "lost, but `{reason}` does not say {why}"),
        other => panic!("expected the claim to be lost ({why}), got {other:?}"),
    }
}
