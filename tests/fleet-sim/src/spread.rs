//! How far a bad release spread in a run: which hosts received it (booted into it), which of
//! those it failed on, which halted and which wait behind a failed host. Read from the trace,
//! as the checker reads it, so the figures do not depend on what the agent says of itself.

use agent::config::Config;
use agent::lease::Names;
use agent::status::Status;
use testkit::fake_ecs::EcsChange;
use testkit::node::NodeEventKind;

use crate::check;
use crate::trace::{Doom, HostTrace, Ms, Trace};

/// How far a release spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Hosts on which the release is bad (the scenario's choice).
    pub bad: usize,
    /// Hosts that booted into the release, good or bad for them.
    pub received: usize,
    /// Hosts on which it is bad that booted into it.
    pub failed: usize,
    /// Hosts whose status says `halted` when the rollout stopped.
    pub halted: usize,
    /// Hosts still waiting for a slot, naming a host stuck on the release.
    pub waiting: usize,
    /// From publication to the last boot into the release.
    pub last_received: Option<Ms>,
    /// From publication to the first failure marker naming the release.
    pub first_failure: Option<Ms>,
    /// From publication to the last host's status turning `halted`.
    pub last_halt: Option<Ms>,
}

impl Spread {
    /// The spread of the target version in `trace`.
    pub fn of(trace: &Trace) -> Spread {
        let target = trace.target.as_str();
        // The scenarios run the agent's default attribute prefix.
        let names = Names::new(&Config::default().cluster.attribute_prefix);
        let bad = |h: &HostTrace| h.plan.doom == Some(Doom::BadRelease);
        let stuck: Vec<_> = trace.hosts.iter().filter(|h| check::is_stuck(h, target)).collect();
        let since = |at: Ms| at.saturating_sub(trace.published);
        let names_target = |v: &str| agent::halt::FailureMarker::parse(v).is_some_and(|m| m.version == target);
        let first_failure = trace
            .ecs
            .iter()
            .find(|e| matches!(&e.change, EcsChange::Put { name, value } if *name == names.failed && names_target(value)))
            .map(|e| since(e.at));
        // When each host first said `halted`.
        let mut halted_at: Vec<Option<Ms>> = vec![None; trace.hosts.len()];
        for e in &trace.ecs {
            if let EcsChange::Put { name, value } = &e.change {
                if halted_at[e.host].is_none() && *name == names.status && Status::parse(value).is_some_and(|s| s.result == "halted") {
                    halted_at[e.host] = Some(since(e.at));
                }
            }
        }
        let ends_halted = |h: &HostTrace| {
            h.end.status_attribute.as_deref().and_then(Status::parse).is_some_and(|s| s.result == "halted")
        };
        Spread {
            bad: trace.hosts.iter().filter(|h| bad(h)).count(),
            received: trace.hosts.iter().filter(|h| h.booted_into(target)).count(),
            failed: trace.hosts.iter().filter(|h| bad(h) && h.booted_into(target)).count(),
            last_received: trace
                .hosts
                .iter()
                .flat_map(|h| &h.events)
                .filter(|(_, k)| matches!(k, NodeEventKind::Booted { version } if version == target))
                .map(|(at, _)| since(*at))
                .max(),
            halted: trace.hosts.iter().filter(|h| ends_halted(h)).count(),
            waiting: trace.hosts.iter().filter(|h| check::waits_behind(&h.end, &stuck).is_some()).count(),
            first_failure,
            last_halt: (0..trace.hosts.len()).filter(|&i| ends_halted(&trace.hosts[i])).filter_map(|i| halted_at[i]).max(),
        }
    }
}
