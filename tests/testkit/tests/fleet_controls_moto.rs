//! The operator's controls against a running fleet: real agent processes around the patched
//! moto server (see `testkit::fleet`), steered with `br-update-agent fleet pause|resume|limit`
//! and `update-now`. The agents look at the cluster tags before each attempt at a slot, at most
//! one `wait-poll-max` (3 s here) apart, so within one poll plus the settle time (1 s) a pause
//! stops new claims and a limit applies. The bounds below leave seconds of slack on top of that.
//!
//! Needs the moto venv (`bash tests/moto/ensure-venv.sh`) and the built binaries; without them
//! the launch fails and says so.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent::clock::{Clock, SystemClock};
use agent::lease::Claim;
use agent::status::Status;
use testkit::fleet::{live_confirmed, measure, Fleet, FleetSpec, View};

/// One poll (`wait-poll-max` 3 s) plus the settle time (1 s) plus slack for ECS calls and the
/// harness's sampling.
const ONE_POLL: Duration = Duration::from_secs(8);
/// How long the fleet stays paused while the test looks for new claims.
const PAUSED_FOR: Duration = Duration::from_secs(20);
/// Safety net for the fleet to finish.
const FLEET_DONE: Duration = Duration::from_secs(150);

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn tokens(v: &View) -> BTreeSet<String> {
    v.hosts.iter().filter_map(|h| h.lease.as_deref()).filter_map(|l| Claim::parse(l).ok()).map(|c| c.token).collect()
}

fn result_of(attr: Option<&str>) -> Option<String> {
    attr.and_then(Status::parse).map(|s| s.result)
}

/// Instances taking a slot in this view: a confirmed live claim, the drained marker, DRAINING,
/// or down for the reboot.
fn occupied(v: &View) -> usize {
    let now = SystemClock.now();
    v.hosts
        .iter()
        .filter(|h| h.lease.as_deref().is_some_and(|l| live_confirmed(l, now)) || h.drained.is_some() || h.status != "ACTIVE" || h.down())
        .count()
}

fn operator(fleet: &Fleet, args: &[&str]) {
    let done = ok(fleet.operator(args));
    assert!(done.status.success(), "fleet {args:?}: {}\n{}", done.stdout, done.stderr);
}

#[test]
fn agents_follow_pause_resume_and_limit_within_one_poll() {
    let started = Instant::now();
    let mut spec = FleetSpec::new("controls", 5);
    spec.max_concurrent = 3;
    spec.agent_settings.push(("cluster.canary-hosts".into(), "0".into()));
    let mut fleet = ok(Fleet::launch(spec));
    ok(fleet.start_agents());
    ok(fleet.run_until("a first claim", FLEET_DONE, |v| !tokens(v).is_empty()));

    // Pause: claims written after one poll are new claims the pause failed to stop.
    operator(&fleet, &["pause"]);
    let paused_at = Instant::now();
    let mut before: BTreeSet<String> = BTreeSet::new();
    let mut late: BTreeSet<String> = BTreeSet::new();
    let last = ok(fleet.run_until("the pause window to pass", PAUSED_FOR * 3, |v| {
        if paused_at.elapsed() < ONE_POLL {
            before.extend(tokens(v));
        } else {
            late.extend(tokens(v).difference(&before).cloned());
        }
        paused_at.elapsed() >= PAUSED_FOR
    }));
    assert!(late.is_empty(), "claims written more than {ONE_POLL:?} after the pause: {late:?}\n{last:#?}");
    let paused: Vec<usize> = (0..last.hosts.len())
        .filter(|&i| result_of(last.hosts[i].status_attr.as_deref()).as_deref() == Some("paused"))
        .collect();
    let behind: Vec<usize> = (0..last.hosts.len()).filter(|&i| !last.hosts[i].settled_on(&fleet.spec.to)).collect();
    assert!(!behind.is_empty(), "the pause came too late to test: every host updated\n{last:#?}");
    assert_eq!(paused, behind, "every host still behind says it is paused:\n{last:#?}");

    // Limit 1, then resume: claims come again, one slot at a time.
    operator(&fleet, &["limit", "1"]);
    operator(&fleet, &["resume"]);
    let resumed_at = Instant::now();
    let mut after_resume: BTreeSet<String> = BTreeSet::new();
    let mut most = 0usize;
    let to = fleet.spec.to.clone();
    let done = ok(fleet.run_until("every host on the new version", FLEET_DONE, |v| {
        after_resume.extend(tokens(v).difference(&before).cloned());
        if resumed_at.elapsed() >= ONE_POLL {
            most = most.max(occupied(v));
        }
        v.all_settled_on(&to, &[])
    }));
    assert!(!after_resume.is_empty(), "no claim after the resume:\n{done:#?}");
    assert!(most <= 1, "{most} instances took a slot at once after `limit 1`");
    assert!(fleet.watch().most_live_claims <= 3, "never more than the configured 3: {:?}", fleet.watch());
    measure("fleet_controls_moto wall time", format!("{:.1} s", started.elapsed().as_secs_f64()));
}

/// The seed that puts a host's check of a `day`-long interval half a day from now, so that no
/// round falls within a test.
fn seed_half_a_day_away() -> u32 {
    let day: i64 = 86_400_000;
    let place = (SystemClock.now().0 + day / 2).rem_euclid(day);
    u32::try_from(place * 2048 / day).unwrap_or(0)
}

/// An idle host reads its instance for `update-now` only once a refresh shows a version to
/// install: an `update-now` set while there is none stays pending (no look reads it, none clears
/// it), and acts at the first look after the release is out, half a day before the round.
#[test]
fn update_now_on_a_host_with_nothing_to_install_waits_for_the_release_and_then_acts() {
    let started = Instant::now();
    let mut spec = FleetSpec::new("update-now", 1);
    spec.to = spec.from.clone();
    spec.agent_settings.extend([
        ("check-interval".to_string(), "\"1d\"".to_string()),
        ("maintenance.update-now-poll".to_string(), "\"10s\"".to_string()),
        ("seed".to_string(), seed_half_a_day_away().to_string()),
    ]);
    let mut fleet = ok(Fleet::launch(spec));
    ok(fleet.start_agents());
    ok(fleet.run_for(Duration::from_secs(3)));
    let arn = fleet.seeded.instances[0].clone();
    operator(&fleet, &["update-now", &arn]);
    ok(fleet.moto().reset_calls());
    let host = testkit::fleet::access_key(0);
    let own = |fleet: &Fleet| -> Vec<testkit::moto::LoggedCall> {
        ok(fleet.moto().call_log()).into_iter().filter(|c| c.key.as_deref() == Some(host.as_str())).collect()
    };
    let logged = fleet.log(0).len();
    ok(fleet.run_for(Duration::from_secs(35)));
    let calls = own(&fleet);
    assert!(calls.is_empty(), "three looks with nothing to install read nothing: {calls:?}\n{}", fleet.log_tail(0));
    let lines = fleet.log(0)[logged..].to_string();
    assert!(!lines.contains("command"), "a look's refresh logs its steps at debug (info here):\n{lines}");
    ok(fleet.api(0).publish(&["1.0.0", "1.1.0"]));
    let published = Instant::now();
    ok(fleet.run_until("host 0 on 1.1.0 through update-now", Duration::from_secs(90), |v| v.hosts[0].settled_on("1.1.0")));
    measure("update-now after the release reached an idle host: updated within", format!("{:.1} s", published.elapsed().as_secs_f64()));
    let cleared = own(&fleet)
        .iter()
        .any(|c| c.operation == "DeleteAttributes" && c.attributes.iter().any(|(name, _)| name == "br-update.update-now"));
    assert!(cleared, "the host acted on update-now and cleared it");
    measure("fleet_controls_moto update-now wall time", format!("{:.1} s", started.elapsed().as_secs_f64()));
}
