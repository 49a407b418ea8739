//! Hand-made traces for the unit tests of the checker and of the figures.

use agent::cluster::InstanceStatus;
use testkit::fake_ecs::{Actor, EcsChange};
use testkit::node::NodeEventKind;

use crate::trace::{EcsRecord, EndState, HostPlan, HostTrace, Ms, Trace};

/// The lease attribute's name in these traces.
pub const LEASE: &str = "br-update.lease";

/// A host that ended updated and ACTIVE, with `events`.
pub fn host(name: &str, events: Vec<(Ms, NodeEventKind)>) -> HostTrace {
    HostTrace {
        name: name.into(),
        instance: name.into(),
        skew_ms: 0,
        plan: HostPlan::default(),
        events,
        end: EndState {
            running: "2.0.0".into(),
            status: InstanceStatus::Active,
            status_by: Some(Actor::Agent),
            claim: None,
            marker: None,
            status_attribute: None,
            last_result: Some("updated".into()),
            in_flight: false,
            quarantined: vec![],
        },
    }
}

/// A rollout to 2.0.0 at N = `n`, published at 0, ended at 100 s, with no calls recorded.
pub fn trace(n: u32, hosts: Vec<HostTrace>, ecs: Vec<EcsRecord>) -> Trace {
    Trace {
        max_concurrent: n,
        target: "2.0.0".into(),
        lease_name: LEASE.into(),
        opt_out_name: "br-update.opt-out".into(),
        opt_out_grace: 660_000,
        epoch_ms: 0,
        published: 0,
        stopped: 100_000,
        end: 100_000,
        lease_ttl: 600_000,
        ecs_faults: Default::default(),
        hosts,
        ecs,
        calls: vec![],
    }
}

/// `host`'s agent writes the lease attribute `value` at `at`.
pub fn put(at: Ms, host: usize, value: &str) -> EcsRecord {
    EcsRecord { at, host, by: Actor::Agent, change: EcsChange::Put { name: LEASE.into(), value: value.into() } }
}
