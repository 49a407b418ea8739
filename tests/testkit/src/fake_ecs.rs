//! An in-memory ECS cluster with ECS's semantics, for component tests and the fleet simulation.
//!
//! Faithful where the protocol depends on it: writes are blind (last writer wins, no condition),
//! a host's handle writes only its own instance, at most ten custom attributes per instance and
//! ten per call, ECS's character rules for names and values, deleting by name only, DRAINING
//! moves service tasks (after a drain time) and leaves standalone ones, a list of attributes
//! costs one call per page of 100. Added on top, because real ECS has them and moto does not:
//! stale reads of attributes (a read may miss writes younger than a bound), throttling, outages
//! and per-call counting.
//!
//! Every change is also kept in a timestamped history ([`FakeEcs::history`]: status changes,
//! attribute writes and deletes, and who made them) and every call in a log
//! ([`FakeEcs::call_log`]), so a fleet simulation can check afterwards what the cluster went
//! through, not only where it ended.
//!
//! Single-threaded (`Rc<RefCell>`): a simulation runs every host on one current-thread runtime.
//! Time is tokio's, so paused time drives it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use agent::backoff::Jitter;
use agent::cluster::{
    valid_attribute_name, valid_attribute_value, Attribute, ClusterError, ClusterStore, InstanceInfo, InstanceStatus,
    SetStatus, TaskInfo,
};
use tokio::time::Instant;

/// The most attributes one ListAttributes page returns.
const LIST_PAGE: usize = 100;

/// Injected misbehaviour.
#[derive(Clone, Debug, Default)]
pub struct EcsFaults {
    /// Attribute reads may miss writes younger than this (uniformly random lag per read).
    pub staleness: Duration,
    /// Every Nth call is throttled (0: never).
    pub throttle_every: u64,
    /// Every call fails as unavailable while set.
    pub unavailable: bool,
    /// Each call takes this long.
    pub latency: Duration,
    /// Every Nth PutAttributes fleet-wide (0: none) takes [`EcsFaults::slow_write`] to land, as a
    /// write retried through throttling or a slow network would.
    pub slow_write_every: u64,
    /// How long a slow write takes before it lands and the call returns.
    pub slow_write: Duration,
    /// DescribeContainerInstances reports the instance's status as it was this long ago
    /// (ECS's reads are eventually consistent; right after DRAINING a describe may say ACTIVE).
    pub status_lag: Duration,
    /// ListAttributes and ListContainerInstances fail as a listing cut short.
    pub incomplete_lists: bool,
}

/// Who changed the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// A host's agent, through its [`FakeEcsHost`] handle.
    Agent,
    /// An operator (the test), through the `operator_*` methods.
    Operator,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EcsChange {
    /// The instance's status was set.
    Status(InstanceStatus),
    /// An attribute was created or replaced.
    Put {
        /// Its name.
        name: String,
        /// Its new value.
        value: String,
    },
    /// An attribute that existed was removed.
    Delete {
        /// Its name.
        name: String,
    },
}

/// One recorded change, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsEvent {
    /// When (tokio time, so virtual under paused time).
    pub at: Instant,
    /// The container instance ARN.
    pub instance: Rc<str>,
    /// Who made it.
    pub by: Actor,
    /// What changed.
    pub change: EcsChange,
}

/// One call, as counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// When it was made.
    pub at: Instant,
    /// The ECS operation.
    pub op: &'static str,
    /// The instance whose handle made it.
    pub instance: Rc<str>,
}

#[derive(Clone, Debug)]
struct Task {
    arn: String,
    started_by: Option<String>,
    stops_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Instance {
    arn: Rc<str>,
    status: InstanceStatus,
    agent_connected: bool,
    /// Each attribute's history of (when, value); `None` is a deletion.
    attrs: BTreeMap<String, Vec<(Instant, Option<String>)>>,
    tasks: Vec<Task>,
    /// Every status change, oldest first (for reads that lag).
    status_log: Vec<(Instant, InstanceStatus)>,
}

impl Instance {
    /// The status a read lagging `lag` behind sees.
    fn status_seen(&self, lag: Duration) -> InstanceStatus {
        let now = Instant::now();
        let at = now.checked_sub(lag).unwrap_or(now);
        match self.status_log.iter().rev().find(|(t, _)| *t <= at) {
            Some((_, st)) => st.clone(),
            None if lag.is_zero() => self.status.clone(),
            None => InstanceStatus::Active,
        }
    }
    fn set_status(&mut self, status: InstanceStatus) {
        self.status_log.push((Instant::now(), status.clone()));
        self.status = status;
    }
    fn current(&self, name: &str) -> Option<&String> {
        self.attrs.get(name)?.last()?.1.as_ref()
    }
    /// The value a read lagging `lag` behind sees.
    fn as_of(&self, name: &str, at: Instant) -> Option<&String> {
        let hist = self.attrs.get(name)?;
        hist.iter().rev().find(|(t, _)| *t <= at).and_then(|(_, v)| v.as_ref())
    }
    fn custom_count(&self) -> usize {
        self.attrs.iter().filter(|(k, h)| !k.starts_with("ecs.") && h.last().is_some_and(|(_, v)| v.is_some())).count()
    }
}

struct State {
    cluster_arn: String,
    tags: BTreeMap<String, String>,
    instances: BTreeMap<String, Instance>,
    faults: EcsFaults,
    drain_time: (Duration, Duration),
    calls: BTreeMap<&'static str, u64>,
    total_calls: u64,
    jitter: Jitter,
    task_seq: u64,
    call_log: Vec<CallRecord>,
    history: Vec<EcsEvent>,
    /// Per attribute name, the instances a read may still see it on: those that carry it, or
    /// dropped it recently enough for a stale read to reach back to it. Keeps a list of a
    /// thousand instances from scanning all of them.
    visible: BTreeMap<String, BTreeSet<Rc<str>>>,
    /// The longest staleness ever set: how far back any read may look.
    max_staleness: Duration,
    /// PutAttributes calls so far (for the slow-write fault).
    puts: u64,
}

impl State {
    fn count_call(&mut self, op: &'static str, arn: &str) {
        self.total_calls += 1;
        *self.calls.entry(op).or_default() += 1;
        let instance = self.instances.get(arn).map(|i| i.arn.clone()).unwrap_or_else(|| Rc::from(arn));
        self.call_log.push(CallRecord { at: Instant::now(), op, instance });
    }

    fn record(&mut self, at: Instant, instance: &Rc<str>, by: Actor, change: EcsChange) {
        if let EcsChange::Put { name, .. } | EcsChange::Delete { name } = &change {
            self.visible.entry(name.clone()).or_default().insert(instance.clone());
        }
        self.history.push(EcsEvent { at, instance: instance.clone(), by, change });
    }
}

/// The cluster; cheap to clone. Hand each host a [`FakeEcs::host`] handle.
#[derive(Clone)]
pub struct FakeEcs(Rc<RefCell<State>>);

/// One host's view: implements [`ClusterStore`] bound to its instance.
#[derive(Clone)]
pub struct FakeEcsHost {
    ecs: FakeEcs,
    arn: String,
}

impl FakeEcs {
    /// An empty cluster called `name`; `seed` drives its random choices.
    pub fn new(name: &str, seed: u64) -> FakeEcs {
        FakeEcs(Rc::new(RefCell::new(State {
            cluster_arn: format!("arn:aws:ecs:us-east-1:123456789012:cluster/{name}"),
            tags: BTreeMap::new(),
            instances: BTreeMap::new(),
            faults: EcsFaults::default(),
            drain_time: (Duration::from_secs(1), Duration::from_secs(1)),
            calls: BTreeMap::new(),
            total_calls: 0,
            jitter: Jitter::seeded(seed),
            task_seq: 0,
            call_log: Vec::new(),
            history: Vec::new(),
            visible: BTreeMap::new(),
            max_staleness: Duration::ZERO,
            puts: 0,
        })))
    }

    /// Registers an ACTIVE, connected instance and returns its ARN.
    pub fn register(&self, id: &str) -> String {
        let mut s = self.0.borrow_mut();
        let cluster = s.cluster_arn.rsplit('/').next().unwrap_or("c").to_string();
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:container-instance/{cluster}/{id}");
        s.instances.insert(
            arn.clone(),
            Instance {
                arn: Rc::from(arn.as_str()),
                status: InstanceStatus::Active,
                agent_connected: true,
                attrs: BTreeMap::new(),
                tasks: vec![],
                status_log: vec![],
            },
        );
        arn
    }

    /// The handle a host's agent uses.
    pub fn host(&self, arn: &str) -> FakeEcsHost {
        FakeEcsHost { ecs: self.clone(), arn: arn.to_string() }
    }

    /// Sets the injected faults.
    pub fn set_faults(&self, f: EcsFaults) {
        let mut s = self.0.borrow_mut();
        s.max_staleness = s.max_staleness.max(f.staleness);
        s.faults = f;
    }

    /// How long service tasks take to leave a draining instance (uniform in the range).
    pub fn set_drain_time(&self, min: Duration, max: Duration) {
        self.0.borrow_mut().drain_time = (min, max.max(min));
    }

    /// Sets or removes (`None`) a cluster tag.
    pub fn set_tag(&self, key: &str, value: Option<&str>) {
        let mut s = self.0.borrow_mut();
        match value {
            Some(v) => s.tags.insert(key.into(), v.into()),
            None => s.tags.remove(key),
        };
    }

    /// Starts `count` tasks on `arn`; `started_by` `ecs-svc/...` makes them service tasks.
    pub fn add_tasks(&self, arn: &str, started_by: Option<&str>, count: usize) {
        let mut s = self.0.borrow_mut();
        for _ in 0..count {
            s.task_seq += 1;
            let task = Task { arn: format!("arn:aws:ecs:us-east-1:123456789012:task/t{}", s.task_seq), started_by: started_by.map(Into::into), stops_at: None };
            if let Some(i) = s.instances.get_mut(arn) {
                i.tasks.push(task);
            }
        }
    }

    /// Stops every task on `arn` (what an operator or the task itself would do).
    pub fn stop_all_tasks(&self, arn: &str) {
        if let Some(i) = self.0.borrow_mut().instances.get_mut(arn) {
            i.tasks.clear();
        }
    }

    /// Writes an attribute as an operator would (`aws ecs put-attributes`).
    pub fn operator_put(&self, arn: &str, name: &str, value: &str) {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        let Some(i) = s.instances.get_mut(arn) else { return };
        i.attrs.entry(name.into()).or_default().push((now, Some(value.into())));
        let target = i.arn.clone();
        s.record(now, &target, Actor::Operator, EcsChange::Put { name: name.into(), value: value.into() });
    }

    /// Sets an instance's status as an operator would.
    pub fn operator_set_status(&self, arn: &str, status: InstanceStatus) {
        let mut s = self.0.borrow_mut();
        let Some(i) = s.instances.get_mut(arn) else { return };
        i.set_status(status.clone());
        let target = i.arn.clone();
        s.record(Instant::now(), &target, Actor::Operator, EcsChange::Status(status));
    }

    /// Marks the ECS agent on `arn` connected or not.
    pub fn set_agent_connected(&self, arn: &str, connected: bool) {
        if let Some(i) = self.0.borrow_mut().instances.get_mut(arn) {
            i.agent_connected = connected;
        }
    }

    /// An instance's status now.
    pub fn status(&self, arn: &str) -> Option<InstanceStatus> {
        self.0.borrow().instances.get(arn).map(|i| i.status.clone())
    }

    /// An instance's attribute now (no staleness).
    pub fn attribute(&self, arn: &str, name: &str) -> Option<String> {
        self.0.borrow().instances.get(arn)?.current(name).cloned()
    }

    /// Instances whose status is DRAINING now.
    pub fn draining(&self) -> Vec<String> {
        self.0.borrow().instances.iter().filter(|(_, i)| i.status == InstanceStatus::Draining).map(|(a, _)| a.clone()).collect()
    }

    /// Instances carrying attribute `name` now.
    pub fn carrying(&self, name: &str) -> Vec<String> {
        self.0.borrow().instances.iter().filter(|(_, i)| i.current(name).is_some()).map(|(a, _)| a.clone()).collect()
    }

    /// Calls per operation so far.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.0.borrow().calls.clone()
    }

    /// Calls so far.
    pub fn total_calls(&self) -> u64 {
        self.0.borrow().total_calls
    }

    /// Every status change and attribute write or delete so far, oldest first.
    pub fn history(&self) -> Vec<EcsEvent> {
        self.0.borrow().history.clone()
    }

    /// Every call so far, oldest first (throttled and failed ones included).
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.0.borrow().call_log.clone()
    }

    /// The most calls made within any one-second window.
    pub fn peak_calls_per_second(&self) -> u64 {
        let s = self.0.borrow();
        let times: Vec<Instant> = s.call_log.iter().map(|c| c.at).collect();
        let (mut best, mut lo) = (0usize, 0usize);
        for hi in 0..times.len() {
            while times[hi].duration_since(times[lo]) >= Duration::from_secs(1) {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best as u64
    }

    /// Counts `arn`'s call and applies faults; `Err` when the call fails.
    async fn enter(&self, op: &'static str, arn: &str) -> Result<(), ClusterError> {
        let latency = self.0.borrow().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut s = self.0.borrow_mut();
        s.count_call(op, arn);
        if s.faults.unavailable {
            return Err(ClusterError::Unavailable { op, message: "Service unavailable".into() });
        }
        let every = s.faults.throttle_every;
        if every > 0 && s.total_calls.is_multiple_of(every) {
            return Err(ClusterError::Throttled { op, message: "Rate exceeded".into() });
        }
        Ok(())
    }

    /// Moves service tasks whose drain time has passed off their instances.
    fn settle_tasks(s: &mut State) {
        let now = Instant::now();
        for i in s.instances.values_mut() {
            i.tasks.retain(|t| t.stops_at.is_none_or(|at| at > now));
        }
    }
}

fn rejected(op: &'static str, code: &str, message: impl Into<String>) -> ClusterError {
    ClusterError::Rejected { op, code: code.into(), message: message.into() }
}

impl FakeEcsHost {
    /// The cluster this handle belongs to (for the part of the world around the agent).
    pub fn cluster(&self) -> &FakeEcs {
        &self.ecs
    }
}

impl ClusterStore for FakeEcsHost {
    fn instance_arn(&self) -> &str {
        &self.arn
    }

    async fn list_attribute(&self, name: &str) -> Result<Vec<Attribute>, ClusterError> {
        self.ecs.enter("ListAttributes", &self.arn).await?;
        if self.ecs.0.borrow().faults.incomplete_lists {
            return Err(ClusterError::Incomplete { op: "ListAttributes", message: "page cap reached (injected)".into() });
        }
        let (found, pages, latency) = {
            let mut s = self.ecs.0.borrow_mut();
            let staleness = s.faults.staleness;
            let lag = s.jitter.up_to(staleness);
            let now = Instant::now();
            let at = now.checked_sub(lag).unwrap_or(now);
            let horizon = now.checked_sub(s.max_staleness).unwrap_or(now);
            let latency = s.faults.latency;
            let State { visible, instances, .. } = &mut *s;
            let Some(candidates) = visible.get_mut(name) else { return Ok(vec![]) };
            // An instance that dropped the attribute before any read can reach back to is gone for good.
            candidates.retain(|arn| {
                instances.get(&**arn).and_then(|i| i.attrs.get(name)).and_then(|h| h.last()).is_some_and(|(t, v)| v.is_some() || *t >= horizon)
            });
            let found: Vec<Attribute> = candidates
                .iter()
                .filter_map(|arn| {
                    let i = instances.get(&**arn)?;
                    i.as_of(name, at).map(|v| Attribute { target: arn.to_string(), name: name.into(), value: Some(v.clone()) })
                })
                .collect();
            let pages = found.len().div_ceil(LIST_PAGE);
            (found, pages, latency)
        };
        // ECS answers at most 100 attributes per page; every further page is another request.
        for _ in 1..pages {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.ecs.0.borrow_mut().count_call("ListAttributes", &self.arn);
        }
        Ok(found)
    }

    async fn put_attributes(&self, attrs: &[(String, String)]) -> Result<(), ClusterError> {
        const OP: &str = "PutAttributes";
        self.ecs.enter(OP, &self.arn).await?;
        let slow = {
            let mut s = self.ecs.0.borrow_mut();
            s.puts += 1;
            let f = &s.faults;
            (f.slow_write_every > 0 && s.puts.is_multiple_of(f.slow_write_every)).then_some(f.slow_write)
        };
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        if attrs.len() > 10 {
            return Err(rejected(OP, "InvalidParameterException", "at most 10 attributes per call"));
        }
        for (n, v) in attrs {
            if !valid_attribute_name(n) || !valid_attribute_value(v) {
                return Err(rejected(OP, "InvalidParameterException", format!("invalid attribute {n}={v}")));
            }
        }
        let mut s = self.ecs.0.borrow_mut();
        let now = Instant::now();
        let inst = s.instances.get_mut(&self.arn).ok_or_else(|| rejected(OP, "TargetNotFoundException", "no such instance"))?;
        let new = attrs.iter().filter(|(n, _)| !n.starts_with("ecs.") && inst.current(n).is_none()).count();
        if inst.custom_count() + new > 10 {
            return Err(rejected(OP, "AttributeLimitExceededException", "You can apply up to 10 custom attributes for each resource."));
        }
        for (n, v) in attrs {
            inst.attrs.entry(n.clone()).or_default().push((now, Some(v.clone())));
        }
        let target = inst.arn.clone();
        for (n, v) in attrs {
            s.record(now, &target, Actor::Agent, EcsChange::Put { name: n.clone(), value: v.clone() });
        }
        Ok(())
    }

    async fn delete_attributes(&self, names: &[String]) -> Result<(), ClusterError> {
        const OP: &str = "DeleteAttributes";
        self.ecs.enter(OP, &self.arn).await?;
        let mut s = self.ecs.0.borrow_mut();
        let now = Instant::now();
        let inst = s.instances.get_mut(&self.arn).ok_or_else(|| rejected(OP, "TargetNotFoundException", "no such instance"))?;
        let mut removed = vec![];
        for n in names {
            if inst.current(n).is_some() {
                inst.attrs.entry(n.clone()).or_default().push((now, None));
                removed.push(n.clone());
            }
        }
        let target = inst.arn.clone();
        for name in removed {
            s.record(now, &target, Actor::Agent, EcsChange::Delete { name });
        }
        Ok(())
    }

    async fn describe_self(&self) -> Result<InstanceInfo, ClusterError> {
        const OP: &str = "DescribeContainerInstances";
        self.ecs.enter(OP, &self.arn).await?;
        let mut s = self.ecs.0.borrow_mut();
        FakeEcs::settle_tasks(&mut s);
        let inst = s.instances.get(&self.arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
        let status = inst.status_seen(s.faults.status_lag);
        Ok(InstanceInfo {
            arn: self.arn.clone(),
            status,
            agent_connected: inst.agent_connected,
            running_tasks: inst.tasks.len() as u32,
            attributes: inst.attrs.keys().filter_map(|k| inst.current(k).map(|v| (k.clone(), v.clone()))).collect(),
        })
    }

    async fn set_status(&self, status: SetStatus) -> Result<(), ClusterError> {
        const OP: &str = "UpdateContainerInstancesState";
        self.ecs.enter(OP, &self.arn).await?;
        let mut s = self.ecs.0.borrow_mut();
        let (lo, hi) = s.drain_time;
        let drain = s.jitter.between(lo, hi);
        let inst = s.instances.get_mut(&self.arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
        let now = Instant::now();
        match (status, &inst.status) {
            (SetStatus::Draining, InstanceStatus::Active | InstanceStatus::Draining) => {
                inst.set_status(InstanceStatus::Draining);
                for t in inst.tasks.iter_mut().filter(|t| t.started_by.as_deref().is_some_and(|b| b.starts_with("ecs-svc/"))) {
                    t.stops_at.get_or_insert(now + drain);
                }
            }
            (SetStatus::Active, InstanceStatus::Active | InstanceStatus::Draining) => {
                inst.set_status(InstanceStatus::Active);
                for t in &mut inst.tasks {
                    t.stops_at = None;
                }
            }
            (_, other) => return Err(rejected(OP, "InvalidParameterException", format!("instance is {other:?}"))),
        }
        let (target, new_status) = (inst.arn.clone(), inst.status.clone());
        s.record(now, &target, Actor::Agent, EcsChange::Status(new_status));
        Ok(())
    }

    async fn running_tasks(&self) -> Result<Vec<TaskInfo>, ClusterError> {
        self.ecs.enter("ListTasks", &self.arn).await?;
        let mut s = self.ecs.0.borrow_mut();
        FakeEcs::settle_tasks(&mut s);
        let inst = s.instances.get(&self.arn).ok_or_else(|| rejected("ListTasks", "ClientException", "MISSING"))?;
        Ok(inst
            .tasks
            .iter()
            .map(|t| TaskInfo { arn: t.arn.clone(), started_by: t.started_by.clone(), group: None, stopping: false })
            .collect())
    }

    async fn draining_instances(&self) -> Result<Vec<String>, ClusterError> {
        self.ecs.enter("ListContainerInstances", &self.arn).await?;
        if self.ecs.0.borrow().faults.incomplete_lists {
            return Err(ClusterError::Incomplete { op: "ListContainerInstances", message: "page cap reached (injected)".into() });
        }
        let s = self.ecs.0.borrow_mut();
        // Status reads lag like attribute reads: a change younger than the lag is not seen yet.
        let lag = { let staleness = s.faults.staleness; s.jitter.up_to(staleness) };
        let found: Vec<String> = s
            .instances
            .iter()
            .filter(|(_, i)| i.status_seen(lag) == InstanceStatus::Draining)
            .map(|(a, _)| a.clone())
            .collect();
        let pages = found.len().div_ceil(LIST_PAGE);
        drop(s);
        for _ in 1..pages {
            self.ecs.0.borrow_mut().count_call("ListContainerInstances", &self.arn);
        }
        Ok(found)
    }

    async fn cluster_tags(&self) -> Result<BTreeMap<String, String>, ClusterError> {
        self.ecs.enter("ListTagsForResource", &self.arn).await?;
        Ok(self.ecs.0.borrow().tags.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime").block_on(f)
    }

    #[test]
    fn writes_are_blind_and_bound_to_the_own_instance() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let (a, b) = (ecs.register("a"), ecs.register("b"));
            let (ha, hb) = (ecs.host(&a), ecs.host(&b));
            ha.put_attributes(&[("x.lease".into(), "one".into())]).await.expect("put");
            ha.put_attributes(&[("x.lease".into(), "two".into())]).await.expect("overwrite");
            hb.put_attributes(&[("x.lease".into(), "three".into())]).await.expect("put");
            let mut seen = ha.list_attribute("x.lease").await.expect("list");
            seen.sort_by(|x, y| x.target.cmp(&y.target));
            assert_eq!(seen.iter().map(|x| x.value.clone().unwrap_or_default()).collect::<Vec<_>>(), ["two", "three"]);
            hb.delete_attributes(&["x.lease".into()]).await.expect("delete");
            hb.delete_attributes(&["x.lease".into()]).await.expect("deleting twice is fine");
            assert_eq!(ha.list_attribute("x.lease").await.expect("list").len(), 1);
        });
    }

    #[test]
    fn limits_and_character_rules_are_enforced() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let h = ecs.host(&ecs.register("a"));
            let ten: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), "v".to_string())).collect();
            h.put_attributes(&ten).await.expect("ten fit");
            h.put_attributes(&[("k0".into(), "w".into())]).await.expect("overwrite at the limit");
            let e = h.put_attributes(&[("k10".into(), "v".into())]).await.expect_err("eleventh");
            assert!(matches!(e, ClusterError::Rejected { ref code, .. } if code == "AttributeLimitExceededException"));
            let e = h.put_attributes(&[("k0".into(), "{\"a\":1}".into())]).await.expect_err("bad value");
            assert!(matches!(e, ClusterError::Rejected { ref code, .. } if code == "InvalidParameterException"));
        });
    }

    #[test]
    fn stale_reads_miss_young_writes_only() {
        run(async {
            let ecs = FakeEcs::new("c", 3);
            let h = ecs.host(&ecs.register("a"));
            ecs.set_faults(EcsFaults { staleness: Duration::from_secs(5), ..Default::default() });
            h.put_attributes(&[("x".into(), "v".into())]).await.expect("put");
            let mut missed = 0;
            for _ in 0..50 {
                if h.list_attribute("x").await.expect("list").is_empty() {
                    missed += 1;
                }
            }
            assert!(missed > 0, "a fresh write must sometimes be missed");
            tokio::time::sleep(Duration::from_secs(6)).await;
            for _ in 0..50 {
                assert_eq!(h.list_attribute("x").await.expect("list").len(), 1);
            }
        });
    }

    #[test]
    fn draining_moves_service_tasks_after_the_drain_time_and_keeps_standalone_ones() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            let h = ecs.host(&a);
            ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(30));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 2);
            ecs.add_tasks(&a, Some("events-rule/x"), 1);
            h.set_status(SetStatus::Draining).await.expect("drain");
            assert_eq!(h.running_tasks().await.expect("tasks").len(), 3);
            tokio::time::sleep(Duration::from_secs(31)).await;
            let left = h.running_tasks().await.expect("tasks");
            assert_eq!(left.len(), 1);
            assert!(!left[0].is_service_task());
        });
    }

    #[test]
    fn throttling_and_outage_are_injected_and_counted() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let h = ecs.host(&ecs.register("a"));
            ecs.set_faults(EcsFaults { throttle_every: 2, ..Default::default() });
            assert!(h.describe_self().await.is_ok());
            assert!(matches!(h.describe_self().await, Err(ClusterError::Throttled { .. })));
            ecs.set_faults(EcsFaults { unavailable: true, ..Default::default() });
            assert!(matches!(h.cluster_tags().await, Err(ClusterError::Unavailable { .. })));
            assert_eq!(ecs.total_calls(), 3);
        });
    }
}
