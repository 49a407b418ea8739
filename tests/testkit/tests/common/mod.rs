//! What the component tests of the update cycle share: a test config, an in-memory host that
//! offers one update, a clock, and the check that nothing of ours is left on an instance.
#![allow(dead_code)]

use std::time::Duration;

use agent::clock::{VirtualClock, WallTime};
use agent::cluster::InstanceStatus;
use agent::config::Config;
use fake_bottlerocket::{CommandDurations, FakeHost, Faults, HostConfig};
use testkit::fake_ecs::FakeEcs;
use testkit::node::Node;
use agent::shutdown::Shutdown;

pub const REBOOT: Duration = Duration::from_secs(120);

/// The test config; `extra` holds top-level keys, then optionally `[cluster]` keys after a line
/// `[cluster]` (merged into the cluster table).
pub fn config(extra: &str) -> Config {
    let (top, cluster) = match extra.split_once("[cluster]") {
        Some((t, c)) => (t, c),
        None => (extra, ""),
    };
    let text = format!(
        r#"
check-interval = "1h"
check-jitter = "0s"
{top}
[commands]
poll-interval = "1s"
[cluster]
{cluster}
settle-time = "5s"
lease-ttl = "10m"
drain-poll-interval = "5s"
drain-timeout = "10m"
lease-backoff-min = "5s"
lease-backoff-max = "1m"
wait-poll-max = "1m"
agent-connect-timeout = "2m"
"#
    );
    Config::parse(&text, "test").expect("test config is valid")
}

pub fn host(faults: Faults) -> FakeHost {
    FakeHost::new(HostConfig {
        version: "1.0.0".into(),
        published: vec!["1.0.0".into(), "1.1.0".into()],
        durations: CommandDurations::all(Duration::from_secs(2)),
        faults,
        ..HostConfig::default()
    })
}

pub fn clock() -> VirtualClock {
    VirtualClock::new(WallTime::from_secs(1_800_000_000), 0)
}

pub fn node(name: &str, ecs: Option<&FakeEcs>, cfg: Config) -> Node {
    Node::new(name, host(Faults::default()), ecs, clock(), cfg, 7)
}

pub fn lease(n: &Node) -> String {
    format!("{}.lease", n.cfg.cluster.attribute_prefix)
}

pub fn drained(n: &Node) -> String {
    format!("{}.drained", n.cfg.cluster.attribute_prefix)
}

/// Nothing of ours is left on the instance and nothing is in flight.
pub fn assert_clean(ecs: &FakeEcs, n: &Node) {
    assert_eq!(ecs.status(&n.arn), Some(InstanceStatus::Active), "{}: instance must be ACTIVE", n.name);
    assert_eq!(ecs.attribute(&n.arn, &lease(n)), None, "{}: claim left behind", n.name);
    assert_eq!(ecs.attribute(&n.arn, &drained(n)), None, "{}: drain marker left behind", n.name);
    assert_eq!(n.record().in_flight, None, "{}: in-flight record left behind", n.name);
}


/// Another instance, `holder`, holding a slot (draining) for the test clock's first hour.
pub fn hold_a_slot(ecs: &FakeEcs) -> String {
    claim_held(ecs, "holder", "d", "1.1.0")
}

/// Registers `name` holding a live claim for `target` in `phase` (`c` claiming, `d` draining)
/// through the test clock's first hour; returns its ARN.
pub fn claim_held(ecs: &FakeEcs, name: &str, phase: &str, target: &str) -> String {
    let arn = ecs.register(name);
    ecs.operator_put(&arn, "br-update.lease", &format!("v1:{phase}:1800000000:1800003600:0badf00d:{target}"));
    arn
}

/// Runs one round of `n`'s agent for `minutes` and asserts it is still waiting then.
pub async fn still_waiting_after(n: &Node, minutes: u64) {
    let agent = n.agent(Shutdown::never());
    let waited = tokio::time::timeout(Duration::from_secs(minutes * 60), agent.run(true)).await;
    assert!(waited.is_err(), "still waiting: {waited:?}");
}

/// Registers an instance that finished its update to `version` (its `updated` marker, which the
/// canary count lists): a canary of one has passed.
pub fn canary_passed(ecs: &FakeEcs, version: &str) -> String {
    let arn = ecs.register("canary");
    ecs.operator_put(&arn, "br-update.updated", version);
    arn
}

/// After `after`, removes the claim `name` of instance `arn`: its slot frees.
pub async fn claim_removed_after(ecs: &FakeEcs, arn: &str, name: &str, after: Duration) {
    tokio::time::sleep(after).await;
    ecs.operator_delete(arn, name);
}
