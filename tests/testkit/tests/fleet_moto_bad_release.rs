//! A bad release stops at the first host, end to end: real agent and fake Bottlerocket processes
//! around one patched moto ECS server, the test playing systemd through every reboot (see
//! `testkit::fleet`), and an operator's `br-update-agent fleet` commands run as processes. A
//! monitor reads the cluster all along; every scenario checks that it never saw more instances
//! drained or rebooting, nor more confirmed claims, than the limit allows.
//!
//! Needs the built binaries: `cargo build --workspace --all-targets` first. Timeouts are safety
//! nets far above what a scenario takes; figures are printed (`MEASURE:`), never asserted.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use agent::clock::{Clock, SystemClock};
use agent::lease::{Claim, ClaimPhase};
use agent::status::{short_id, Status};
use fake_bottlerocket::FaultsPatch;
use serde_json::Value;
use testkit::fleet::{live_confirmed, measure, Fleet, FleetSpec, HostView, View, Watch};

/// Safety net for a whole fleet to finish.
const FLEET_DONE: Duration = Duration::from_secs(240);
/// Safety net for one step of a scenario.
const STEP: Duration = Duration::from_secs(120);
/// What ECS says of an instance that booted the unhealthy release.
const IMPAIRED_REASON: &str = "container runtime not responding";

fn launch(spec: FleetSpec) -> Fleet {
    Fleet::launch(spec).unwrap_or_else(|e| panic!("launching the fleet: {e}"))
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn status(h: &HostView) -> Option<Status> {
    h.status_attr.as_deref().and_then(Status::parse)
}

fn claim(h: &HostView) -> Option<Claim> {
    h.lease.as_deref().and_then(|v| Claim::parse(v).ok())
}

/// The hosts other than `x`, with their index.
fn others(v: &View, x: usize) -> impl Iterator<Item = (usize, &HostView)> {
    v.hosts.iter().enumerate().filter(move |(i, _)| *i != x)
}

/// Whether a host's status says it halted `version` because of the failure on instance `id`.
fn halted_by(h: &HostView, version: &str, id: &str) -> bool {
    status(h).is_some_and(|s| {
        s.result == "halted" && s.detail.contains(&format!("halted: version {version} failed on")) && s.detail.contains(id)
    })
}

/// The monitor's verdict on the limit, and proof that it looked.
fn assert_within_limit(w: &Watch, n: usize) {
    assert!(w.samples >= 10, "the monitor took only {} samples ({:?})", w.samples, w.last_error);
    assert!(w.most_disrupted >= 1, "the monitor never saw a host drained or rebooting: {w:?}");
    assert!(w.most_disrupted <= n, "{} hosts drained or rebooting at once with N = {n}: {w:?}", w.most_disrupted);
    assert!(w.most_live_claims <= n, "{} live confirmed claims at once with N = {n}: {w:?}", w.most_live_claims);
}

/// Host `i` never touched: still on `from`, never asked to reboot, never drained, ACTIVE.
fn assert_untouched(v: &View, w: &Watch, i: usize, from: &str) {
    let h = &v.hosts[i];
    let host = h.host.as_ref().expect("host up");
    assert_eq!((host.running_version.as_str(), host.reboot_requests), (from, 0), "host {i}: {host:?}");
    assert!(!w.ever_draining[i], "host {i} was drained");
    assert_eq!((h.status.as_str(), h.drained.as_deref()), ("ACTIVE", None), "host {i}: {h:?}");
}

/// `br-update-agent fleet status --json` for the fleet's cluster.
fn fleet_status(fleet: &Fleet) -> Value {
    let out = ok(fleet.operator(&["status", "--json"]));
    assert!(out.status.success(), "fleet status failed ({:?}):\n{}", out.status, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("fleet status --json: {e}:\n{}", out.stdout))
}

/// The EC2 id `fleet status --json` shows for a container instance (the label in `failures`).
fn ec2_id(status: &Value, arn: &str) -> String {
    let instances = status["instances"].as_array().expect("instances");
    let row = instances.iter().find(|r| r["container_instance_arn"] == arn).expect("a row for the instance");
    row["instance_id"].as_str().expect("an EC2 id").to_owned()
}

/// Every boot of the fleet, in order: the host and the version it came up on.
type Boots = Rc<RefCell<Vec<(usize, String)>>>;

/// Six hosts (N = 2) whose repositories offer 1.1.0, which rolls back at boot on every one of
/// them (the new partition set does not come up), all agents started at once. Returns the fleet,
/// its boots as they happen, and when the agents started.
fn rollback_fleet(cluster: &str) -> (Fleet, Boots, Instant) {
    let mut spec = FleetSpec::new(cluster, 6);
    for i in 0..spec.hosts {
        spec.fake_args.insert(i, vec!["--fail".into(), "rollback".into()]);
    }
    let mut fleet = launch(spec);
    let boots: Boots = Rc::default();
    let seen = boots.clone();
    fleet.on_boot(move |i, booted, _| {
        seen.borrow_mut().push((i, booted.running_version.clone()));
        Ok(())
    });
    ok(fleet.moto().reset_calls());
    let started = Instant::now();
    ok(fleet.start_agents());
    (fleet, boots, started)
}

/// Runs the fleet until exactly one host has a failure marker and is back in service on 1.0.0,
/// and every other host halted 1.1.0 because of it; returns that view and the host.
fn one_failed_the_rest_halted(fleet: &mut Fleet) -> (View, usize) {
    let v = ok(fleet.run_until("the canary to roll back and every other host to halt 1.1.0", STEP, |v| {
        let failed: Vec<usize> = (0..v.hosts.len()).filter(|&i| v.hosts[i].failed.is_some()).collect();
        let [c] = failed[..] else { return false };
        let id = short_id(&v.hosts[c].arn);
        v.hosts[c].settled_on("1.0.0") && others(v, c).all(|(_, h)| halted_by(h, "1.1.0", id))
    }));
    let c = v.hosts.iter().position(|h| h.failed.is_some()).expect("the canary");
    (v, c)
}

/// Runs the fleet until one host, the canary, has rolled 1.1.0 back and every other host has
/// halted 1.1.0 because of it twice (two looks, a check every 10 s), and checks that nobody but
/// the canary ever went out of service or booted. Returns the canary.
fn halt_at_the_canary(fleet: &mut Fleet, boots: &Boots) -> usize {
    let (v, c) = one_failed_the_rest_halted(fleet);
    let again = Instant::now();
    while others(&v, c).any(|(i, _)| fleet.log(i).matches("halted: version 1.1.0 failed on").count() < 2) {
        assert!(again.elapsed() < STEP, "the halted hosts did not look again\n{}", fleet.log_tail((c + 1) % 6));
        ok(fleet.run_for(Duration::from_millis(500)));
    }
    let v = ok(fleet.view());
    let w = fleet.watch();
    let marker = v.hosts[c].failed.clone().expect("the canary's failure marker");
    assert!(marker.starts_with("v1:1.1.0:") && marker.ends_with(":rolled-back"), "{marker}");
    assert_eq!(*boots.borrow(), [(c, "1.0.0".to_owned())], "one boot, the canary's, and it came back on 1.0.0");
    assert!(fleet.log(c).contains("new version did not boot (rolled back)"), "{}", fleet.log_tail(c));
    assert!(v.hosts[c].settled_on("1.0.0"), "the canary is back in service: {:?}", v.hosts[c]);
    for (i, h) in others(&v, c) {
        assert_untouched(&v, &w, i, "1.0.0");
        assert!(halted_by(h, "1.1.0", short_id(&v.hosts[c].arn)), "host {i}: {:?}", h.status_attr);
        assert!(h.failed.is_none(), "host {i} never tried 1.1.0, yet has a marker: {:?}", h.failed);
    }
    assert_eq!(w.most_disrupted, 1, "only the canary was ever out of service: {w:?}");
    let status = fleet_status(fleet);
    let canary = ec2_id(&status, &v.hosts[c].arn);
    assert_eq!(status["failures"], serde_json::json!({"1.1.0": [canary]}), "fleet status names the failure");
    c
}

/// `fleet resume-version 1.1.0` deletes the canary's marker; the marker gone, `fleet status`
/// names no failure.
fn resume(fleet: &Fleet, c: usize) {
    let arn = ok(fleet.view()).hosts[c].arn.clone();
    let resumed = ok(fleet.operator(&["resume-version", "1.1.0"]));
    assert!(resumed.status.success(), "resume-version failed ({:?}):\n{}", resumed.status, resumed.stderr);
    assert!(resumed.stdout.contains("cleared br-update.failed"), "{}", resumed.stdout);
    let after = ok(fleet.view());
    assert!(after.hosts[c].failed.is_none(), "resume-version left the marker on {arn}: {:?}", after.hosts[c]);
    assert_eq!(fleet_status(fleet)["failures"], serde_json::json!({}));
}

/// A release that rolls back on every host stops at the canary: it rolls back, writes its
/// failure marker and returns to service on 1.0.0; the five others halt 1.1.0 look after look,
/// never drained or rebooted. The operator resumes 1.1.0 (`fleet resume-version`), so the hosts
/// take it again: the next one to get the slot, alone, rolls back in turn and halts it again.
///
/// Without the halt, the others would take 1.1.0 one after another (more boots, more markers).
/// Without the canary limit, two hosts would drain for 1.1.0 at once (N = 2).
#[test]
fn a_release_that_rolls_back_everywhere_stops_at_the_canary_and_again_after_a_resume() {
    let (mut fleet, boots, started) = rollback_fleet("fleet-rollback");
    let c = halt_at_the_canary(&mut fleet, &boots);
    let halted_in = started.elapsed();

    resume(&fleet, c);
    let v = ok(fleet.run_until("a second canary to roll back and the others to halt 1.1.0 again", STEP, |v| {
        let failed: Vec<usize> = (0..v.hosts.len()).filter(|&i| v.hosts[i].failed.is_some()).collect();
        let [d] = failed[..] else { return false };
        let id = short_id(&v.hosts[d].arn);
        v.hosts[d].settled_on("1.0.0") && others(v, d).filter(|(i, _)| *i != c).all(|(_, h)| halted_by(h, "1.1.0", id))
    }));
    let wall = started.elapsed();
    let d = v.hosts.iter().position(|h| h.failed.is_some()).expect("the second canary");
    assert_ne!(c, d, "the first canary does not retry a version that failed to boot on it (quarantine)");
    assert_eq!(*boots.borrow(), [(c, "1.0.0".to_owned()), (d, "1.0.0".to_owned())], "one more boot, the second canary's");
    let w = fleet.watch();
    assert_within_limit(&w, 1);
    for (i, h) in v.hosts.iter().enumerate() {
        let tried = i == c || i == d;
        assert_eq!(h.host.as_ref().map(|s| (s.running_version.as_str(), s.reboot_requests)), Some(("1.0.0", usize::from(tried))), "host {i}");
        assert_eq!(w.ever_draining[i], tried, "host {i}");
    }

    let what = "release rolling back everywhere (6 hosts, N=2)";
    measure(&format!("{what}: canary rolled back and 5 hosts halted twice after"), format!("{:.1} s", halted_in.as_secs_f64()));
    measure(&format!("{what}: wall time to halted again after the resume"), format!("{:.1} s", wall.as_secs_f64()));
}

/// After the halt, the fix: every repository offers a good 1.2.0 instead of 1.1.0, and the
/// operator clears the marker with `fleet resume-version 1.1.0`. Every host updates to 1.2.0, two
/// at a time, and none but the canary ever booted for 1.1.0.
///
/// Ignored: the agent fails it. The five halted hosts downloaded 1.1.0 while they raced for the
/// canary slot, before the canary failed; with 1.1.0 staged, the agent's choice of target
/// (`Agent::choose`: in state Staged, the staged version before the chosen one) keeps 1.1.0 even
/// after the repository offers only 1.2.0. So after the resume they install 1.1.0 first, and
/// without the resume they stay halted on 1.1.0 and never take 1.2.0.
#[test]
fn a_release_that_rolls_back_everywhere_stops_at_the_canary_and_the_next_good_one_reaches_all() {
    let (mut fleet, boots, started) = rollback_fleet("fleet-rollback-fix");
    let c = halt_at_the_canary(&mut fleet, &boots);
    let halted_in = started.elapsed();

    // The fix first: were the marker cleared while 1.1.0 is still offered, the next host to
    // look would take it (and roll back) again.
    for i in 0..fleet.spec.hosts {
        let api = fleet.api(i);
        ok(api.set_faults(&FaultsPatch { rollback_on_boot: Some(false), ..FaultsPatch::default() }));
        ok(api.publish(&["1.2.0"]));
    }
    resume(&fleet, c);

    // The status is published just after the slot is given back: wait for it too.
    let reported = |h: &HostView| status(h).is_some_and(|st| st.running == "1.2.0" && ["updated", "up-to-date"].contains(&st.result.as_str()));
    let done = ok(fleet.run_until("every host on 1.2.0", FLEET_DONE, |v| v.all_settled_on("1.2.0", &[]) && v.hosts.iter().all(reported)));
    let wall = started.elapsed();
    assert_within_limit(&fleet.watch(), 2);
    let boots = boots.borrow();
    assert_eq!(boots.iter().filter(|(_, version)| version != "1.2.0").count(), 1, "{boots:?}");
    for (i, h) in done.hosts.iter().enumerate() {
        let host = h.host.as_ref().expect("host up");
        let tries = if i == c { 2 } else { 1 };
        assert_eq!((host.reboot_requests, host.boots), (tries, tries), "host {i}: {host:?}");
        assert_eq!(boots.iter().filter(|(b, version)| *b == i && version == "1.2.0").count(), 1, "host {i}: {boots:?}");
        let st = status(h).unwrap_or_else(|| panic!("host {i}: {:?}", h.status_attr));
        assert!(st.running == "1.2.0" && ["updated", "up-to-date"].contains(&st.result.as_str()), "host {i}: {st:?}");
        assert!(h.failed.is_none(), "host {i}: {:?}", h.failed);
    }

    let what = "release rolling back everywhere, then a good one (6 hosts, N=2)";
    measure(&format!("{what}: canary rolled back and 5 hosts halted twice after"), format!("{:.1} s", halted_in.as_secs_f64()));
    measure(&format!("{what}: wall time to all on 1.2.0"), format!("{:.1} s", wall.as_secs_f64()));
    let calls = ok(fleet.calls());
    measure(&format!("{what}: ECS calls"), format!("{} total", calls.total));
}

/// Three hosts (N = 2) with `health.on-failure = on_failure`; ECS finds an instance IMPAIRED as
/// soon as it boots 1.1.0, before its agent starts. Host 0 starts first, so it is the canary;
/// the others start once it holds the slot. Returns the fleet and when it started.
fn impaired_canary(cluster: &str, on_failure: &str) -> (Fleet, Instant) {
    let mut spec = FleetSpec::new(cluster, 3);
    spec.agent_settings.push(("health.on-failure".into(), format!("\"{on_failure}\"")));
    let mut fleet = launch(spec);
    let (cluster, instances) = (fleet.spec.cluster.clone(), fleet.seeded.instances.clone());
    fleet.on_boot(move |i, booted, moto| {
        if booted.running_version != "1.1.0" {
            return Ok(());
        }
        moto.set_instance_health(&cluster, &instances[i], "IMPAIRED", "CONTAINER_RUNTIME", Some(IMPAIRED_REASON))
    });
    ok(fleet.moto().reset_calls());
    let started = Instant::now();
    ok(fleet.start_agent(0));
    ok(fleet.run_until("host 0 to hold the slot", STEP, |v| {
        claim(&v.hosts[0]).is_some_and(|c| c.phase != ClaimPhase::Claiming)
    }));
    ok(fleet.start_agents());
    (fleet, started)
}

/// `on-failure = "return"`: the canary fails its health gate, writes its failure marker, and
/// gives its slot back at once, ACTIVE on 1.1.0, its round's result `failed-health`. The others
/// halt 1.1.0.
#[test]
fn an_impaired_canary_under_on_failure_return_records_the_failure_and_returns_to_service() {
    let (mut fleet, started) = impaired_canary("fleet-impaired-return", "return");
    let v = ok(fleet.run_until("host 0 to finish with failed-health", STEP, |v| {
        status(&v.hosts[0]).is_some_and(|s| s.result == "failed-health")
    }));
    let h = &v.hosts[0];
    assert_eq!(h.host.as_ref().map(|s| s.running_version.as_str()), Some("1.1.0"), "{h:?}");
    assert!(h.settled_on("1.1.0"), "back in service with its slot given back: {h:?}");
    let marker = h.failed.clone().expect("the failure marker");
    assert!(marker.starts_with("v1:1.1.0:") && marker.ends_with(":instance-impaired"), "{marker}");
    let log = fleet.log(0);
    assert!(log.contains("health check failed") && log.contains(IMPAIRED_REASON), "{}", fleet.log_tail(0));

    let id = short_id(&h.arn).to_owned();
    let v = ok(fleet.run_until("the others to halt 1.1.0", STEP, |v| others(v, 0).all(|(_, h)| halted_by(h, "1.1.0", &id))));
    let wall = started.elapsed();
    let w = fleet.watch();
    for i in 1..3 {
        assert_untouched(&v, &w, i, "1.0.0");
    }
    assert_within_limit(&w, 1);
    assert_eq!(v.hosts[0].failed.as_deref(), Some(marker.as_str()), "the marker stays for the operator");

    let what = "impaired canary, on-failure = return (3 hosts, N=2)";
    measure(&format!("{what}: wall time to the others halted"), format!("{:.1} s", wall.as_secs_f64()));
}

/// `on-failure = "hold"`: the canary fails its health gate, writes its failure
/// marker and keeps its slot, out of service with its claim kept alive (`held`, `held-health`),
/// while the others halt 1.1.0. Once ECS finds the instance healthy again, it finishes its update;
/// the marker stays, so the others stay halted until the operator resumes the version.
#[test]
fn an_impaired_canary_under_on_failure_hold_keeps_its_slot_until_the_impairment_clears() {
    let (mut fleet, started) = impaired_canary("fleet-impaired-hold", "hold");
    let v = ok(fleet.run_until("host 0 held and the others halted", STEP, |v| {
        let id = short_id(&v.hosts[0].arn);
        status(&v.hosts[0]).is_some_and(|s| s.phase == "held" && s.result == "held-health")
            && others(v, 0).all(|(_, h)| halted_by(h, "1.1.0", id))
    }));
    let held_after = started.elapsed();
    let h = &v.hosts[0];
    let st = status(h).expect("a status");
    // The detail is cut to fit ECS's 128 characters; the log has the whole reason.
    assert!(st.detail.contains("IMPAIRED") && st.detail.contains("CONTAINER_RUNTIME"), "{st:?}");
    assert!(fleet.log(0).contains(IMPAIRED_REASON), "{}", fleet.log_tail(0));
    let marker = h.failed.clone().expect("the failure marker");
    assert!(marker.starts_with("v1:1.1.0:") && marker.ends_with(":instance-impaired"), "{marker}");
    let slot = fleet_status(&fleet);
    assert_eq!(slot["slots_held"], 1, "{slot:#}");

    // Held for a few of its looks (one every 4 s): out of service, its claim kept alive.
    let mut problems = vec![];
    let holding = Instant::now();
    ok(fleet.run_until("host 0 to stay held a while", STEP, |v| {
        let h = &v.hosts[0];
        let now = SystemClock.now();
        let live = h.lease.as_deref().is_some_and(|c| live_confirmed(c, now));
        let held = status(h).is_some_and(|s| s.phase == "held");
        if !(h.status == "DRAINING" && h.drained.is_some() && live && held) {
            problems.push(format!("host 0 let go of its slot while impaired: {h:?}"));
        }
        !problems.is_empty() || holding.elapsed() > Duration::from_secs(10)
    }));
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(fleet.watch().ever_draining[1..], [false, false], "nobody else went out of service");

    let (cluster, arn) = (fleet.spec.cluster.clone(), h.arn.clone());
    ok(fleet.moto().set_instance_health(&cluster, &arn, "OK", "CONTAINER_RUNTIME", None));
    let v = ok(fleet.run_until("host 0 to finish its update", STEP, |v| {
        v.hosts[0].settled_on("1.1.0") && status(&v.hosts[0]).is_some_and(|s| s.result == "updated")
    }));
    let wall = started.elapsed();
    assert!(fleet.log(0).contains("the checks pass again; finishing the update"), "{}", fleet.log_tail(0));
    assert_eq!(v.hosts[0].failed.as_deref(), Some(marker.as_str()), "the marker stays for the operator");
    let w = fleet.watch();
    for i in 1..3 {
        assert_untouched(&v, &w, i, "1.0.0");
        assert!(halted_by(&v.hosts[i], "1.1.0", short_id(&arn)), "host {i}: {:?}", v.hosts[i].status_attr);
    }
    assert_within_limit(&w, 1);

    let what = "impaired canary, on-failure = hold (3 hosts, N=2)";
    measure(&format!("{what}: held and the others halted after"), format!("{:.1} s", held_after.as_secs_f64()));
    measure(&format!("{what}: wall time to the canary updated after the impairment cleared"), format!("{:.1} s", wall.as_secs_f64()));
}

/// Six hosts (N = 2), every one offered 1.1.0 (and still 1.0.0, as a real repository keeps its
/// older releases), `health.on-failure` left at its default (rollback). ECS finds an instance
/// IMPAIRED when it boots 1.1.0 (`at_boot`) or once its canary bake is under way (not
/// `at_boot`), and healthy again when it boots anything else. Returns the fleet and its boots.
fn unhealthy_release_fleet(cluster: &str, at_boot: bool) -> (Fleet, Boots) {
    let mut spec = FleetSpec::new(cluster, 6);
    for i in 0..spec.hosts {
        spec.fake_args.insert(i, vec!["--publish".into(), "1.0.0".into()]);
    }
    spec.agent_settings.push(("health.canary-bake-time".into(), "\"20s\"".into()));
    spec.agent_settings.push(("health.poll-interval".into(), "\"1s\"".into()));
    let mut fleet = launch(spec);
    let (cluster, instances) = (fleet.spec.cluster.clone(), fleet.seeded.instances.clone());
    let boots: Boots = Rc::default();
    let seen = boots.clone();
    fleet.on_boot(move |i, booted, moto| {
        seen.borrow_mut().push((i, booted.running_version.clone()));
        let health = if booted.running_version == "1.1.0" && at_boot { "IMPAIRED" } else { "OK" };
        let reason = (health == "IMPAIRED").then_some(IMPAIRED_REASON);
        moto.set_instance_health(&cluster, &instances[i], health, "CONTAINER_RUNTIME", reason)
    });
    ok(fleet.moto().reset_calls());
    ok(fleet.start_agents());
    (fleet, boots)
}

/// Runs until one host, the canary, has rolled 1.1.0 back (on 1.0.0, in service, its marker
/// naming `token`) and every other host halted 1.1.0 because of it; checks that nobody else
/// was touched. Returns the canary.
fn rolled_back_at_the_canary(fleet: &mut Fleet, boots: &Boots, token: &str) -> usize {
    let (v, c) = one_failed_the_rest_halted(fleet);
    let marker = v.hosts[c].failed.clone().expect("the canary's failure marker");
    assert!(marker.starts_with("v1:1.1.0:") && marker.ends_with(token), "{marker}");
    assert_eq!(*boots.borrow(), [(c, "1.1.0".to_owned()), (c, "1.0.0".to_owned())], "the canary booted 1.1.0, then back into 1.0.0");
    let log = fleet.log(c);
    for line in ["rolling back: staging the old version", "the operator's update settings are back", "rolled back to the old version"] {
        assert!(log.contains(line), "canary log lacks `{line}`:\n{}", fleet.log_tail(c));
    }
    let w = fleet.watch();
    for (i, _) in others(&v, c) {
        assert_untouched(&v, &w, i, "1.0.0");
    }
    assert_within_limit(&w, 1);
    let host = v.hosts[c].host.as_ref().expect("canary up");
    assert_eq!((host.running_version.as_str(), host.reboot_requests), ("1.0.0", 2), "{host:?}");
    c
}

/// (a) A release unhealthy on every host: exactly one host gets it, rolls itself back to 1.0.0
/// through the updater (a second reboot, under its slot), writes its marker; the others stay on
/// 1.0.0 and report halted. After the fix (a good 1.2.0) and `fleet resume-version`, every host
/// updates to 1.2.0.
#[test]
fn an_unhealthy_release_is_rolled_back_by_the_canary_and_the_next_good_one_reaches_all() {
    let started = Instant::now();
    let (mut fleet, boots) = unhealthy_release_fleet("fleet-unhealthy-rollback", true);
    let c = rolled_back_at_the_canary(&mut fleet, &boots, ":instance-impaired");
    let halted_in = started.elapsed();
    for i in 0..fleet.spec.hosts {
        ok(fleet.api(i).publish(&["1.0.0", "1.2.0"]));
    }
    resume(&fleet, c);
    // The status is published just after the slot is given back: wait for it too.
    let reported = |h: &HostView| status(h).is_some_and(|st| st.running == "1.2.0" && ["updated", "up-to-date"].contains(&st.result.as_str()));
    let done = ok(fleet.run_until("every host on 1.2.0", FLEET_DONE, |v| v.all_settled_on("1.2.0", &[]) && v.hosts.iter().all(reported)));
    assert_within_limit(&fleet.watch(), 2);
    for (i, _) in done.hosts.iter().enumerate() {
        assert_eq!(boots.borrow().iter().filter(|(b, v)| *b == i && v == "1.1.0").count(), usize::from(i == c), "host {i}");
    }
    let what = "release unhealthy everywhere, on-failure = rollback (6 hosts, N=2)";
    measure(&format!("{what}: canary rolled back and 5 hosts halted after"), format!("{:.1} s", halted_in.as_secs_f64()));
    measure(&format!("{what}: wall time to all on 1.2.0"), format!("{:.1} s", started.elapsed().as_secs_f64()));
}

/// (b) A slow-burning fault: 1.1.0 boots healthy and passes the gate, the canary goes back into
/// service and bakes; a few seconds in, ECS finds it IMPAIRED. The canary drains again, rolls
/// back, and the version halts everywhere else before any other host took it.
#[test]
fn a_fault_that_appears_during_the_canary_bake_is_rolled_back_before_it_spreads() {
    let started = Instant::now();
    let (mut fleet, boots) = unhealthy_release_fleet("fleet-slow-burn", false);
    let v = ok(fleet.run_until("a canary baking 1.1.0", STEP, |v| {
        v.hosts.iter().any(|h| status(h).is_some_and(|s| s.phase == "baking"))
    }));
    let c = v.hosts.iter().position(|h| status(h).is_some_and(|s| s.phase == "baking")).expect("the baking canary");
    assert_eq!(v.hosts[c].status, "ACTIVE", "baking in service: {:?}", v.hosts[c]);
    ok(fleet.run_for(Duration::from_secs(3)));
    let (cluster, arn) = (fleet.spec.cluster.clone(), v.hosts[c].arn.clone());
    ok(fleet.moto().set_instance_health(&cluster, &arn, "IMPAIRED", "CONTAINER_RUNTIME", Some(IMPAIRED_REASON)));
    assert_eq!(rolled_back_at_the_canary(&mut fleet, &boots, ":instance-impaired"), c);
    assert!(fleet.log(c).contains("during the bake"), "{}", fleet.log_tail(c));
    assert!(fleet.log(c).contains("rollback: instance set to DRAINING again"), "{}", fleet.log_tail(c));
    measure("slow-burning fault in the canary bake, rollback (6 hosts, N=2): rolled back and halted after",
        format!("{:.1} s", started.elapsed().as_secs_f64()));
}
