//! Whole fleets end to end: real agent and fake Bottlerocket processes around one patched moto ECS
//! server, the test playing systemd through every reboot (see `testkit::fleet`). A monitor reads
//! the cluster all along; every scenario checks that it never saw more instances drained or
//! rebooting, nor more confirmed claims, than the limit allows.
//!
//! Needs the built binaries: `cargo build --workspace --all-targets` first. Timeouts are safety
//! nets far above what a scenario takes; figures are printed (`MEASURE:`), never asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use agent::clock::{Clock, SystemClock};
use agent::cluster::ecs::EcsStore;
use agent::cluster::ClusterStore;
use agent::lease::{Claim, ClaimPhase};
use agent::status::{short_id, Status};
use testkit::fleet::{live_confirmed, measure, Fleet, FleetSpec, HostApi, HostStages, HostView, View, Watch, SKEW};
use testkit::moto::Faults;

/// Safety net for a whole fleet to finish.
const FLEET_DONE: Duration = Duration::from_secs(240);
/// Safety net for one step of a scenario (a host reaching a phase, a recovery).
const STEP: Duration = Duration::from_secs(120);

fn launch(spec: FleetSpec) -> Fleet {
    Fleet::launch(spec).unwrap_or_else(|e| panic!("launching the fleet: {e}"))
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn phase(h: &HostView) -> Option<ClaimPhase> {
    h.lease.as_deref().and_then(|v| Claim::parse(v).ok()).map(|c| c.phase)
}

/// A host in the middle of its drain: DRAINING, its claim in phase `d`, service tasks still there.
fn draining(h: &HostView) -> bool {
    h.status == "DRAINING" && phase(h) == Some(ClaimPhase::Draining) && h.running_tasks > 0
}

fn first_draining(v: &View) -> Option<usize> {
    v.hosts.iter().position(draining)
}

/// The hosts other than `x`, with their index.
fn others(v: &View, x: usize) -> impl Iterator<Item = (usize, &HostView)> {
    v.hosts.iter().enumerate().filter(move |(i, _)| *i != x)
}

/// While host `x` takes the only slot (a claim, its drained marker, DRAINING or down), any other
/// host with a claim or out of service, described.
fn others_out_of_turn(v: &View, x: usize) -> Vec<String> {
    let h = &v.hosts[x];
    if h.lease.is_none() && h.drained.is_none() && h.status == "ACTIVE" && !h.down() {
        return vec![];
    }
    others(v, x)
        .filter(|(_, o)| o.lease.is_some() || o.drained.is_some() || o.status != "ACTIVE" || o.down())
        .map(|(i, o)| {
            format!("host {i} ({}, claim {:?}, down {}) while host {x} holds the slot", o.status, o.lease, o.down())
        })
        .collect()
}

/// Whether a host's status says it waits for a slot held as `holder` says.
fn waiting_on(h: &HostView, holder: &str) -> bool {
    h.status_attr
        .as_deref()
        .and_then(Status::parse)
        .is_some_and(|s| s.phase == "waiting" && s.result == "waiting-for-slot" && s.detail.contains(holder))
}

/// The end of every rollout: the monitor's verdict, and every host updated once, back in
/// service with neither claim nor marker, its status saying it runs the new version.
fn assert_rollout_complete(fleet: &Fleet, done: &View, n: usize) {
    assert_within_limit(&fleet.watch(), n);
    for (i, h) in done.hosts.iter().enumerate() {
        assert_updated_once(fleet, done, i);
        assert!(h.settled_on(&fleet.spec.to), "host {i}: {h:?}");
        let status = h.status_attr.as_deref().and_then(Status::parse);
        assert!(
            // A round after the update finds nothing newer.
            status.as_ref().is_some_and(|s| s.running == fleet.spec.to && ["updated", "up-to-date"].contains(&&*s.result)),
            "host {i} status: {:?}",
            h.status_attr
        );
    }
}

/// `MEASURE:` lines for a whole run: wall time and ECS calls per host.
fn measure_run(fleet: &Fleet, what: &str, wall: Duration, hosts: usize) {
    let calls = ok(fleet.calls());
    measure(&format!("{what}: wall time to all updated"), format!("{:.1} s", wall.as_secs_f64()));
    let per_host = calls.total as f64 / hosts as f64;
    measure(&format!("{what}: ECS calls"), format!("{} total, {per_host:.1} per host", calls.total));
    let by_op: Vec<String> = calls.by_operation.iter().map(|(op, n)| format!("{op} {n}")).collect();
    measure(&format!("{what}: ECS calls by operation"), by_op.join(", "));
}

/// `MEASURE:` lines for the calls of each host's update by stage, read off moto's call log by
/// the key each host signs with: before its slot (the round's reads, the looks while waiting,
/// races lost), in its slot (claim to release) and after. Every call must be a host's, and
/// every host must have written a claim and released it.
fn measure_stages(fleet: &Fleet, what: &str) {
    let split = ok(fleet.calls_by_stage());
    assert_eq!(split.unattributed, 0, "calls signed by no host of the fleet: {split:?}");
    for (i, h) in split.hosts.iter().enumerate() {
        assert!(h.released && h.in_slot.get("PutAttributes").is_some(), "host {i}: no slot claimed and released: {h:?}");
    }
    let hosts = split.hosts.len() as f64;
    let stage = |pick: fn(&HostStages) -> &BTreeMap<String, u64>| {
        let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
        for h in &split.hosts {
            for (op, n) in pick(h) {
                *by_op.entry(op.as_str()).or_default() += n;
            }
        }
        let total = by_op.values().sum::<u64>() as f64 / hosts;
        let ops: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} {:.1}", *n as f64 / hosts)).collect();
        (total, ops.join(", "))
    };
    let (before, before_ops) = stage(|h| &h.before_slot);
    let (slot, slot_ops) = stage(|h| &h.in_slot);
    let (after, _) = stage(|h| &h.after);
    let (idle, idle_ops) = stage(|h| &h.idle_wait);
    let (starting, _) = stage(|h| &h.before_decision);
    measure(
        &format!("{what}: ECS calls per host update by stage"),
        format!("before the slot {before:.1} (the round's reads, the looks, races lost), in the slot {slot:.1} (claim to release), after it {after:.1}"),
    );
    measure(&format!("{what}: in the slot, by operation"), slot_ops);
    measure(&format!("{what}: before the slot, by operation"), before_ops);
    let own = before + slot - idle - starting;
    measure(
        &format!("{what}: ECS calls per host update, the idle wait left out"),
        format!("{own:.1} (decision to release; the idle wait {idle:.1}: {idle_ops}; the agent's start before the decision {starting:.1})"),
    );
}

/// The monitor's verdict on the limit, and proof that it looked.
fn assert_within_limit(w: &Watch, n: usize) {
    assert!(w.samples >= 10, "the monitor took only {} samples ({:?})", w.samples, w.last_error);
    assert!(w.most_disrupted >= 1, "the monitor never saw a host drained or rebooting: {w:?}");
    assert!(w.most_disrupted <= n, "{} hosts drained or rebooting at once with N = {n}: {w:?}", w.most_disrupted);
    assert!(w.most_live_claims <= n, "{} live confirmed claims at once with N = {n}: {w:?}", w.most_live_claims);
}

/// Host `i` updated exactly once: one reboot, one boot, on the new version.
fn assert_updated_once(fleet: &Fleet, v: &View, i: usize) {
    let host = v.hosts[i].host.as_ref().expect("host up");
    assert_eq!(host.running_version, fleet.spec.to, "host {i}");
    assert_eq!((host.reboot_requests, host.boots), (1, 1), "host {i}: {host:?}");
}

/// Host `i` never touched: old version, never rebooted or drained, ACTIVE, no marker.
fn assert_untouched(fleet: &Fleet, v: &View, w: &Watch, i: usize) {
    let h = &v.hosts[i];
    let host = h.host.as_ref().expect("host up");
    assert_eq!(host.running_version, fleet.spec.from, "host {i}");
    assert_eq!(host.reboot_requests, 0, "host {i}");
    assert!(!w.ever_draining[i], "host {i} was drained");
    assert_eq!((h.status.as_str(), h.drained.as_deref()), ("ACTIVE", None), "host {i}: {h:?}");
}

#[test]
fn six_hosts_update_two_at_a_time() {
    let mut fleet = launch(FleetSpec::new("fleet-six", 6));
    ok(fleet.moto().reset_calls());
    let started = Instant::now();
    ok(fleet.start_agents());
    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    let wall = started.elapsed();
    let calls = ok(fleet.calls());
    let watch = fleet.watch();

    assert_within_limit(&watch, 2);
    for i in 0..6 {
        assert_updated_once(&fleet, &done, i);
        assert!(watch.ever_draining[i], "host {i} was updated without a drain");
        assert_eq!(fleet.starts(i), 2, "host {i}: one agent before the reboot, one after");
        assert_eq!(done.hosts[i].running_tasks, 0, "host {i}: the drain moved its service tasks");
        let status = done.hosts[i].status_attr.as_deref().unwrap_or_default();
        assert!(status.contains(":1.1.0:"), "host {i} status attribute: {status}");
    }

    let per_host = calls.total as f64 / 6.0;
    measure("fleet of 6, N=2: wall time to all updated", format!("{:.1} s", wall.as_secs_f64()));
    measure("fleet of 6, N=2: ECS calls", format!("{} total, {per_host:.1} per host update", calls.total));
    let by_op: Vec<String> =
        calls.by_operation.iter().map(|(op, n)| format!("{op} {n} ({:.1}/host)", *n as f64 / 6.0)).collect();
    measure("fleet of 6, N=2: ECS calls by operation", by_op.join(", "));
    measure_stages(&fleet, "fleet of 6, N=2");
    measure("fleet of 6, N=2: most hosts drained or rebooting at once", watch.most_disrupted);
    measure("fleet of 6, N=2: most live confirmed claims at once", watch.most_live_claims);
}

/// What one host update costs in ECS calls with no wait for a slot (N = 6 for 6 hosts, no
/// canary): the claim, the drain, the reboot and the way back into service, each host's share
/// of the calls moto answered. (The run above adds the looks of hosts waiting for a slot, every
/// 3 s there.)
#[test]
fn six_hosts_at_once_count_the_calls_of_one_update() {
    let mut spec = FleetSpec::new("fleet-once", 6);
    spec.max_concurrent = 6;
    spec.agent_settings.push(("cluster.canary-hosts".into(), "0".into()));
    let mut fleet = launch(spec);
    ok(fleet.moto().reset_calls());
    ok(fleet.start_agents());
    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    let calls = ok(fleet.calls());
    assert_within_limit(&fleet.watch(), 6);
    for i in 0..6 {
        assert_updated_once(&fleet, &done, i);
    }
    let per_host = calls.total as f64 / 6.0;
    measure("6 hosts at once (N=6): ECS calls per host update", format!("{per_host:.1}"));
    let by_op: Vec<String> = calls.by_operation.iter().map(|(op, n)| format!("{op} {:.1}", *n as f64 / 6.0)).collect();
    measure("6 hosts at once (N=6): per host update by operation", by_op.join(", "));
    measure_stages(&fleet, "6 hosts at once (N=6)");
    assert!(calls.by_operation.get("DescribeContainerInstances").copied().unwrap_or(0) > 0, "{calls:?}");
}

/// kill -9 of an agent while its instance drains, and the agent kept down past its claim's TTL
/// and the clock skew: the instance is still out of service (DRAINING, drained marker), so it
/// keeps its slot (N = 1) and the others wait, naming it as `drained-by-agent`. Restarted, the
/// agent re-activates its instance and withdraws its claim, and the rollout completes.
///
/// When only live claims were counted, a waiter took the slot as soon as the dead host's claim
/// lapsed and drained a second instance: that breaks the check that nobody else claims or drains
/// while the dead host is out of service (and the monitor's `most_disrupted <= 1`).
#[test]
fn an_agent_killed_while_draining_keeps_its_slot_past_the_ttl_until_restarted() {
    let ttl = Duration::from_secs(10);
    let mut spec = FleetSpec::new("fleet-kill", 3);
    spec.max_concurrent = 1;
    spec.lease_ttl = "10s".into();
    spec.drain_delay = Duration::from_secs(4);
    let mut fleet = launch(spec);
    ok(fleet.moto().reset_calls());
    let started = Instant::now();
    ok(fleet.start_agents());
    let v = ok(fleet.run_until("a host draining", STEP, |v| first_draining(v).is_some()));
    let x = first_draining(&v).expect("a draining host");
    ok(fleet.kill_agent(x));
    let killed = Instant::now();

    let after = ok(fleet.view());
    let h = &after.hosts[x];
    let left = h.lease.clone().expect("the killed agent's claim stays");
    let dead = Claim::parse(&left).expect("a readable claim");
    assert_eq!((h.status.as_str(), dead.phase), ("DRAINING", ClaimPhase::Draining), "{h:?}");
    assert!(h.drained.is_some(), "the drained marker stays: {h:?}");
    // What a waiter's status says of it once its claim has lapsed (before, `<id> claim-d ...`).
    // The rest of the phrase, `claim-lapsed`, does not fit in the attribute after moto's long ids.
    let named = format!("{} drained-by-agent", short_id(&h.arn));

    // Down until its claim has lapsed by the test's clock (past TTL + skew since the kill) and
    // every waiter has looked since and named it as holding the slot.
    let mut intruders = vec![];
    let v = ok(fleet.run_until("the waiters to name the dead host after its claim lapsed", STEP, |v| {
        intruders.extend(others_out_of_turn(v, x));
        let lapsed = !live_confirmed(&left, SystemClock.now()) && killed.elapsed() > ttl + SKEW;
        !intruders.is_empty() || lapsed && others(v, x).all(|(_, h)| waiting_on(h, &named))
    }));
    // A few more looks by every waiter (wait-poll-max is 3 s) with the claim lapsed.
    let lapsed_at = Instant::now();
    let v2 = ok(fleet.run_until("more looks at the lapsed claim", STEP, |v| {
        intruders.extend(others_out_of_turn(v, x));
        !intruders.is_empty() || lapsed_at.elapsed() > Duration::from_secs(6)
    }));
    assert!(intruders.is_empty(), "another host went ahead while host {x}'s agent was dead: {intruders:?}");
    let down_for = killed.elapsed();
    let watch = fleet.watch();
    for v in [&v, &v2] {
        assert_eq!(v.hosts[x].lease.as_deref(), Some(left.as_str()), "nobody but its own host clears a claim");
        assert_eq!(v.hosts[x].status, "DRAINING", "nobody but its own agent re-activates it");
        assert!(others_out_of_turn(v, x).is_empty(), "{v:#?}");
        for (i, h) in others(v, x) {
            assert!(waiting_on(h, &named), "host {i} does not name host {x} as `{named}`: {:?}", h.status_attr);
        }
    }
    assert!(watch.most_disrupted <= 1, "{} hosts out of service at once with N = 1: {watch:?}", watch.most_disrupted);
    // Claims are checked on the test's own views above: the others wrote some while racing
    // for the first slot, before the kill.
    for i in (0..3).filter(|&i| i != x) {
        assert!(!watch.ever_draining[i], "host {i} drained while host {x} was down: {watch:?}");
    }

    ok(fleet.start_agent(x));
    ok(fleet.run_until("the restarted agent to recover its host", STEP, |v| {
        let h = &v.hosts[x];
        h.status == "ACTIVE" && h.drained.is_none() && h.lease.as_deref() != Some(left.as_str())
    }));
    let log = fleet.log(x);
    assert!(log.contains("previous run stopped before the reboot; undoing"), "{}", fleet.log_tail(x));
    assert!(log.contains("instance set to ACTIVE"), "{}", fleet.log_tail(x));

    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    let wall = started.elapsed();
    assert_rollout_complete(&fleet, &done, 1);
    assert_eq!(fleet.starts(x), 3, "host {x}: the killed agent, its restart, the one after the reboot");

    let what = "kill -9 mid-drain, down past the TTL (3 hosts, N=1)";
    measure(&format!("{what}: agent down for"), format!("{:.1} s", down_for.as_secs_f64()));
    measure_run(&fleet, what, wall, 3);
}

/// After its reboot, one host's new version answers 500 to every API request for 2.5 times the
/// claim TTL. Its agent renews the claim first thing after boot and keeps it alive while it
/// cannot verify, holding the slot (`held`, `held-after-boot`); the others wait behind that
/// claim (N = 1). Once the API answers, the host finishes and the rollout completes.
///
/// When the claim was renewed only once, after the version check, it stayed in phase `r` with
/// the reboot's expiry (the 20 min reboot allowance) all through the outage: that breaks the
/// check that the claim was seen in phase `v`, renewed, while the API failed. A keeper that
/// renewed first thing but not after would break the check that the claim stays live: the first
/// renewal shortens its expiry to one TTL, less than the outage.
#[test]
fn a_new_version_whose_api_fails_after_boot_holds_the_slot_with_its_claim_kept_alive() {
    let mut spec = FleetSpec::new("fleet-api-down", 3);
    spec.max_concurrent = 1;
    spec.lease_ttl = "10s".into();
    spec.fake_args.insert(0, vec!["--api-errors-after-boot".into(), "25s".into()]);
    // A waiter names a holder once it has held its slot past the expected duration: here, well
    // before the outage ends.
    spec.agent_settings.push(("maintenance.expected-duration".into(), "\"15s\"".into()));
    let mut fleet = launch(spec);
    ok(fleet.moto().reset_calls());
    let started = Instant::now();
    // Host 0 first, so that the others wait behind it all through its outage.
    ok(fleet.start_agent(0));
    let v = ok(fleet.run_until("host 0 to hold a slot", STEP, |v| {
        phase(&v.hosts[0]).is_some_and(|p| p != ClaimPhase::Claiming)
    }));
    let token = Claim::parse(v.hosts[0].lease.as_deref().unwrap_or_default()).expect("host 0's claim").token;
    let id = short_id(&v.hosts[0].arn).to_owned();
    ok(fleet.start_agents());

    let api = fleet.api(0);
    let mut seen = OutageSamples::default();
    let back = ok(fleet.run_until("host 0 back in service", FLEET_DONE, |v| {
        seen.take(v, &api, &token, &id);
        !seen.problems.is_empty() || v.hosts[0].settled_on("1.1.0")
    }));
    assert!(seen.problems.is_empty(), "{:#?}", seen.problems);
    assert!(seen.samples >= 10, "only {} samples while host 0's API failed after boot", seen.samples);
    assert!(seen.held, "host 0 never published held-after-boot while its API failed");
    assert!(
        seen.verifying_expiries.len() >= 2,
        "the claim was not kept alive while the API failed: phase-v expiries {:?} over {} samples",
        seen.verifying_expiries,
        seen.samples
    );
    assert!(seen.waiter_saw_claim, "no waiter named host 0's kept claim (`{id} claim-v`) while its API failed");
    assert_eq!(back.hosts[0].host.as_ref().map(|h| h.running_version.as_str()), Some("1.1.0"));
    assert!(fleet.log(0).contains("claim renewed first thing after boot"), "{}", fleet.log_tail(0));

    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    let wall = started.elapsed();
    assert_rollout_complete(&fleet, &done, 1);

    let what = "API failing 25 s after boot, TTL 10 s (3 hosts, N=1)";
    measure(&format!("{what}: samples while the API failed"), seen.samples);
    measure(&format!("{what}: claim renewals seen while the API failed"), seen.verifying_expiries.len());
    measure_run(&fleet, what, wall, 3);
}

/// What the API-outage test saw of host 0 (out of service after its reboot, its API failing)
/// and of the others meanwhile.
#[derive(Default)]
struct OutageSamples {
    /// Views read while host 0's API failed after boot (the API still failed after the read).
    samples: usize,
    /// The expiries of the phase-`v` claims in those views.
    verifying_expiries: BTreeSet<i64>,
    /// Whether host 0's status said `held`, `held-after-boot` in one of them.
    held: bool,
    /// Whether a waiter's status named host 0's claim in phase `v` in one of them.
    waiter_saw_claim: bool,
    /// Anything unsafe seen, in any view.
    problems: Vec<String>,
}

impl OutageSamples {
    fn take(&mut self, v: &View, api: &HostApi, token: &str, id: &str) {
        let now = SystemClock.now();
        let h = &v.hosts[0];
        self.problems.extend(others_out_of_turn(v, 0));
        let booted = h.host.as_ref().is_some_and(|s| s.boots >= 1 && !s.down);
        if !booted || h.status != "DRAINING" {
            return;
        }
        let claim = match h.lease.as_deref().map(Claim::parse) {
            Some(Ok(c)) if c.token == token && c.is_live(now, SKEW) => c,
            other => {
                let why = format!("host 0 out of service after boot without its live claim at {now}: {other:?}");
                self.problems.push(why);
                return;
            }
        };
        // The outage is one stretch after the boot: a failure answered after the view was read
        // means the view was read during it.
        if api.status_of("/os").ok() != Some(500) {
            return;
        }
        self.samples += 1;
        if claim.phase == ClaimPhase::Verifying {
            self.verifying_expiries.insert(claim.expires_at);
        }
        let status = h.status_attr.as_deref().and_then(Status::parse);
        self.held |= status.is_some_and(|s| s.phase == "held" && s.result == "held-after-boot");
        let kept = format!("{id} claim-v");
        self.waiter_saw_claim |= others(v, 0).any(|(_, h)| waiting_on(h, &kept));
    }
}

/// SIGTERM while the instance drains: the agent re-activates it and withdraws its claim before
/// it exits (0); started again, it updates later like the others.
#[test]
fn sigterm_during_a_drain_reactivates_and_releases_before_exit() {
    let mut spec = FleetSpec::new("fleet-term", 3);
    spec.max_concurrent = 1;
    spec.drain_delay = Duration::from_secs(4);
    let mut fleet = launch(spec);
    ok(fleet.start_agents());
    let v = ok(fleet.run_until("a host draining", STEP, |v| first_draining(v).is_some()));
    let x = first_draining(&v).expect("a draining host");

    let status = ok(fleet.terminate_agent(x));
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", fleet.log_tail(x));
    let after = ok(fleet.view());
    let h = &after.hosts[x];
    assert_eq!((h.status.as_str(), h.lease.as_deref(), h.drained.as_deref()), ("ACTIVE", None, None), "{h:?}");
    assert!(fleet.log(x).contains("stopped by signal"), "{}", fleet.log_tail(x));

    ok(fleet.start_agent(x));
    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    for i in 0..3 {
        assert_updated_once(&fleet, &done, i);
    }
    assert_within_limit(&fleet.watch(), 1);
}

/// ECS answers 503 to everything for 10 s while hosts drain: nothing unsafe meanwhile, and
/// every host still ends updated and ACTIVE.
#[test]
fn an_ecs_outage_mid_update_is_ridden_out() {
    let spec = FleetSpec::new("fleet-outage", 4);
    let drain_delay_ms = spec.drain_delay.as_millis() as u64;
    let mut fleet = launch(spec);
    ok(fleet.start_agents());
    ok(fleet.run_until("a host draining", STEP, |v| first_draining(v).is_some()));

    ok(fleet.moto().set_faults(&Faults { unavailable: true, drain_delay_ms, ..Faults::default() }));
    let before = ok(fleet.calls()).total;
    ok(fleet.run_for(Duration::from_secs(10)));
    let during = ok(fleet.calls()).total - before;
    ok(fleet.moto().set_faults(&Faults { unavailable: false, drain_delay_ms, ..Faults::default() }));
    assert!(during >= 4, "only {during} ECS calls met the outage");

    let done = ok(fleet.run_until("every host updated", FLEET_DONE, |v| v.all_settled_on("1.1.0", &[])));
    for i in 0..4 {
        assert_updated_once(&fleet, &done, i);
    }
    assert!((0..4).any(|i| fleet.log(i).contains("ECS unavailable")), "no agent met the outage");
    assert_within_limit(&fleet.watch(), 2);
    measure("ECS outage of 10 s: calls answered 503", during);
}

/// A standalone task that never ends keeps its host out: skipped, with the reason in its log
/// and its status attribute, never drained, while the others update.
#[test]
fn a_host_with_a_standalone_task_is_skipped_and_never_drained() {
    let fleet_spec = FleetSpec::new("fleet-standalone", 3);
    let mut fleet = launch(fleet_spec);
    let arn = fleet.seeded.instances[0].clone();
    let cluster = fleet.spec.cluster.clone();
    ok(fleet.moto().add_tasks(&cluster, &arn, Some("batch/nightly"), 1));
    ok(fleet.start_agents());
    let done = ok(fleet.run_until("the others updated and host 0 skipped", FLEET_DONE, |v| {
        v.all_settled_on("1.1.0", &[0]) && v.hosts[0].status_attr.as_deref().and_then(Status::parse).is_some_and(|s| s.result.starts_with("skipped"))
    }));
    let status = done.hosts[0].status_attr.clone().unwrap_or_default();
    assert!(status.contains("standalone"), "the status attribute gives no reason: {status}");
    let watch = fleet.watch();
    for i in 1..3 {
        assert_updated_once(&fleet, &done, i);
    }
    assert_untouched(&fleet, &done, &watch, 0);
    assert!(fleet.log(0).contains("standalone task(s) would not be moved by ECS"), "{}", fleet.log_tail(0));
    assert_within_limit(&watch, 2);
}

/// An opted-out host is left alone: no claim ever, never drained, never rebooted.
#[test]
fn an_opted_out_host_is_untouched() {
    let mut fleet = launch(FleetSpec::new("fleet-optout", 3));
    let store = EcsStore::new(fleet.moto().ecs_client(), fleet.spec.cluster.clone(), fleet.seeded.instances[0].clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime
        .block_on(store.put_attributes(&[("br-update.opt-out".into(), "true".into())]))
        .expect("opt host 0 out through ECS");
    ok(fleet.start_agents());
    let done = ok(fleet.run_until("the others updated and host 0 opted out", FLEET_DONE, |v| {
        v.all_settled_on("1.1.0", &[0]) && v.hosts[0].status_attr.as_deref().and_then(Status::parse).is_some_and(|s| s.result == "opted-out")
    }));
    let watch = fleet.watch();
    for i in 1..3 {
        assert_updated_once(&fleet, &done, i);
    }
    assert_untouched(&fleet, &done, &watch, 0);
    assert!(!watch.ever_claimed[0], "the opted-out host claimed a slot");
    assert_eq!(done.hosts[0].opt_out.as_deref(), Some("true"));
    assert_within_limit(&watch, 2);
}
