//! An in-memory ECS cluster with ECS's semantics, for component tests and the fleet simulation.
//!
//! Faithful where the protocol depends on it: writes are blind (last writer wins, no condition),
//! a host's handle writes only its own instance, at most ten custom attributes per instance and
//! ten per call, ECS's character rules for names and values, deleting by name only, DRAINING
//! moves service tasks and leaves standalone ones, a list costs one call per page of 100.
//!
//! A drained service task stops in two steps, as in ECS: after the drain time its desired status
//! turns STOPPED (it leaves `runningTasksCount`), but it keeps running, and serving, for a further
//! stop time (its load balancer's deregistration delay and its stop timeout) before its last
//! status is STOPPED and it is gone. [`ClusterStore::running_tasks`] lists it, `stopping`, until
//! then, as the real store does; [`TaskListing::DesiredRunningOnly`] brings back the old, unsafe
//! listing for negative controls.
//!
//! Added on top, because real ECS has them and moto does not: stale reads of attributes and of
//! the DRAINING instances (a read may miss changes younger than a bound), throttling, outages
//! and per-call counting.
//!
//! Every change is also kept in a timestamped history ([`FakeEcs::history`]: status changes,
//! attribute writes and deletes, tasks started and stopped, and who made them) and every call in
//! a log ([`FakeEcs::call_log`]), so a fleet simulation can check afterwards what the cluster went
//! through, not only where it ended: [`unstopped_at`] answers, from the history alone, how many
//! tasks on an instance had not stopped at a given instant (a reboot then cuts them off).
//!
//! Single-threaded (`Rc<RefCell>`): a simulation runs every host on one current-thread runtime.
//! Time is tokio's, so paused time drives it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use agent::backoff::Jitter;
use agent::cluster::{
    valid_attribute_name, valid_attribute_value, Attribute, ClusterError, ClusterStore, ClusterSummary, Desired, InstanceInfo, InstanceStatus,
    ListedTask, LocalTasks, SetStatus, TaskInfo,
};
use tokio::time::Instant;

/// The most items one page of ListAttributes, ListTasks or ListContainerInstances returns.
const LIST_PAGE: usize = 100;
/// The most tasks one DescribeTasks call takes.
const DESCRIBE_TASKS: usize = 100;

/// What a host's ECS agent shows of its tasks on its introspection endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalTaskView {
    /// The tasks it runs, stopping ones included, as a real ECS agent shows them.
    #[default]
    Faithful,
    /// No view: the endpoint has no task listing (drains are watched through ECS alone).
    Off,
    /// A wrong view that shows no task at all, to show that ECS still decides the drain's end.
    Empty,
    /// An endpoint that never answers (switched off, or blocked), whatever the ECS agent does.
    Silent,
}

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
    /// Besides: each PutAttributes takes [`EcsFaults::slow_write`] to land with this chance, so
    /// that which writes are slow does not cycle with a host's own pattern of writes.
    pub slow_write_chance: f64,
    /// How long a slow write takes before it lands and the call returns, at least.
    pub slow_write: Duration,
    /// A slow write takes up to this much longer than [`EcsFaults::slow_write`] (uniform).
    pub slow_write_spread: Duration,
    /// DescribeContainerInstances reports the instance's status as it was this long ago
    /// (ECS's reads are eventually consistent; right after DRAINING a describe may say ACTIVE).
    pub status_lag: Duration,
    /// ListAttributes and ListContainerInstances fail as a listing cut short.
    pub incomplete_lists: bool,
    /// ECS's request throttling: the share of each documented token bucket (burst and refill)
    /// left to the agents, the rest taken by the account's other callers (0: no throttling).
    pub bucket_share: f64,
}

/// The documented request-rate bucket of `op` (ECS developer guide, "Request throttling for
/// the Amazon ECS API"): its group, capacity (burst) and refill per second (sustained).
pub fn bucket_of(op: &str) -> (&'static str, f64, f64) {
    match op {
        "PutAttributes" | "DeleteAttributes" | "UpdateContainerInstancesState" => ("cluster resource modify", 100.0, 40.0),
        "DescribeClusters" => ("cluster read", 50.0, 20.0),
        // DescribeContainerInstances, DescribeTasks, ListAttributes, ListContainerInstances, ListTasks.
        _ => ("cluster resource read", 100.0, 20.0),
    }
}

/// One token bucket: tokens left, and when it was last refilled.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How often the injected faults of [`EcsFaults`] and the stop time took effect, so that a run
/// can show they happened and not only that they were set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultTally {
    /// Writes that landed late ([`EcsFaults::slow_write_every`]).
    pub slow_writes: u64,
    /// Describes that answered a status other than the instance's current one
    /// ([`EcsFaults::status_lag`]).
    pub stale_status_reads: u64,
    /// Task listings that included a task still stopping ([`FakeEcs::set_stop_time`]).
    pub stopping_tasks_listed: u64,
    /// Calls refused by an empty token bucket ([`EcsFaults::bucket_share`]).
    pub throttled: u64,
}

/// Who changed the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// A host's agent, through its [`FakeEcsHost`] handle.
    Agent,
    /// An operator (the test), through the `operator_*` methods, [`FakeEcs::add_tasks`] and
    /// [`FakeEcs::stop_all_tasks`].
    Operator,
    /// ECS itself: its scheduler stopping the service tasks of a draining instance.
    Scheduler,
}

/// Which tasks the listings behind [`ClusterStore::running_tasks`] answer with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskListing {
    /// What the agent's store reads from ECS: every task whose last status is not STOPPED,
    /// those ECS has decided to stop (desired STOPPED) included, marked `stopping`.
    #[default]
    NotStopped,
    /// The old, unsafe listing: desired status RUNNING only, so a task ECS has decided to stop
    /// vanishes from the answer while it still serves. It exists only so a simulation can show,
    /// as a negative control, that counting this way reboots hosts with tasks still stopping.
    DesiredRunningOnly,
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
    /// A task was placed on the instance ([`FakeEcs::add_tasks`]).
    TaskStarted {
        /// Its ARN.
        task: String,
        /// Started by a service (`ecs-svc/...`), so a drain moves it.
        service: bool,
    },
    /// A task's last status turned STOPPED: from this instant on nothing of it runs. Recorded at
    /// that instant (a drained service task: drain time plus stop time after the drain), by the
    /// scheduler or by the operator ([`FakeEcs::stop_all_tasks`]).
    TaskStopped {
        /// Its ARN.
        task: String,
        /// Started by a service.
        service: bool,
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
    /// Its task definition's family.
    family: Option<String>,
    service: bool,
    /// When its desired status turns (or turned) STOPPED; `None`: nothing is stopping it.
    stops_at: Option<Instant>,
    /// How long it keeps running after that.
    stop_time: Duration,
}

impl Task {
    /// Whether ECS has decided to stop it by `now` (desired status STOPPED).
    fn desired_stopped(&self, now: Instant) -> bool {
        self.stops_at.is_some_and(|at| at <= now)
    }
    /// When its last status turns STOPPED, if it is being stopped.
    fn stopped_at(&self) -> Option<Instant> {
        self.stops_at.map(|at| at + self.stop_time)
    }
}

#[derive(Clone, Debug)]
struct Instance {
    arn: Rc<str>,
    status: InstanceStatus,
    /// Every status it had, from its registration, with when it was set (for stale reads).
    status_log: Vec<(Instant, InstanceStatus)>,
    agent_connected: bool,
    /// ECS's overall health verdict (`None`: ECS reports none).
    health: Option<String>,
    /// Each attribute's history of (when, value); `None` is a deletion.
    attrs: BTreeMap<String, Vec<(Instant, Option<String>)>>,
    tasks: Vec<Task>,
}

impl Instance {
    /// The status a read lagging `lag` behind sees (the first one, for a read from before the
    /// registration).
    fn status_seen(&self, lag: Duration) -> InstanceStatus {
        let now = Instant::now();
        let at = now.checked_sub(lag).unwrap_or(now);
        self.status_as_of(at).or(self.status_log.first().map(|(_, s)| s)).unwrap_or(&self.status).clone()
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
    fn set_status(&mut self, at: Instant, status: InstanceStatus) {
        self.status = status.clone();
        self.status_log.push((at, status));
    }
    /// The status a read as of `at` sees; `None` before it was registered.
    fn status_as_of(&self, at: Instant) -> Option<&InstanceStatus> {
        self.status_log.iter().rev().find(|(t, _)| *t <= at).map(|(_, s)| s)
    }
}

struct State {
    cluster_arn: String,
    tags: BTreeMap<String, String>,
    instances: BTreeMap<String, Instance>,
    faults: EcsFaults,
    drain_time: (Duration, Duration),
    stop_time: (Duration, Duration),
    task_listing: TaskListing,
    /// What each host's ECS agent shows of its tasks locally ([`ClusterStore::local_tasks`]).
    local_task_view: LocalTaskView,
    /// When some task of an instance is due to stop; entries of tasks since re-activated stay
    /// and find nothing to stop.
    stop_queue: BTreeSet<(Instant, Rc<str>)>,
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
    tally: FaultTally,
    /// The token buckets, by group (only with [`EcsFaults::bucket_share`]).
    buckets: BTreeMap<&'static str, Bucket>,
    /// Instances ever set DRAINING that a read may still see so: a listing of the DRAINING
    /// instances of a large fleet looks at these only.
    drained_ever: BTreeSet<Rc<str>>,
}

impl State {
    fn count_call(&mut self, op: &'static str, arn: &str) {
        self.total_calls += 1;
        *self.calls.entry(op).or_default() += 1;
        let instance = self.instances.get(arn).map(|i| i.arn.clone()).unwrap_or_else(|| Rc::from(arn));
        self.call_log.push(CallRecord { at: Instant::now(), op, instance });
    }

    /// Takes a token from `op`'s bucket; false (and tallied) when it is empty.
    fn take_token(&mut self, op: &str) -> bool {
        let share = self.faults.bucket_share;
        if share <= 0.0 {
            return true;
        }
        let (group, capacity, refill) = bucket_of(op);
        let (capacity, refill) = (capacity * share, refill * share);
        let now = Instant::now();
        let b = self.buckets.entry(group).or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * refill).min(capacity);
        b.at = now;
        if b.tokens < 1.0 {
            self.tally.throttled += 1;
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    fn record(&mut self, at: Instant, instance: &Rc<str>, by: Actor, change: EcsChange) {
        if change == EcsChange::Status(InstanceStatus::Draining) {
            self.drained_ever.insert(instance.clone());
        }
        self.settle(at);
        if let EcsChange::Put { name, .. } | EcsChange::Delete { name } = &change {
            self.visible.entry(name.clone()).or_default().insert(instance.clone());
        }
        self.history.push(EcsEvent { at, instance: instance.clone(), by, change });
    }

    /// UpdateContainerInstancesState on `arn` by `by`: DRAINING moves the service tasks (each
    /// after the drain time, then its stop time), ACTIVE calls off a drain whose time has not run
    /// out.
    fn update_state(&mut self, arn: &str, status: SetStatus, by: Actor) -> Result<(), ClusterError> {
        const OP: &str = "UpdateContainerInstancesState";
        let (lo, hi) = self.drain_time;
        let drain = self.jitter.between(lo, hi);
        let (stop_lo, stop_hi) = self.stop_time;
        let State { instances, jitter, stop_queue, .. } = self;
        let inst = instances.get_mut(arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
        let now = Instant::now();
        match (status, &inst.status) {
            (SetStatus::Draining, InstanceStatus::Active | InstanceStatus::Draining) => {
                inst.set_status(now, InstanceStatus::Draining);
                for t in inst.tasks.iter_mut().filter(|t| t.service && t.stops_at.is_none()) {
                    t.stops_at = Some(now + drain);
                    t.stop_time = jitter.between(stop_lo, stop_hi);
                    stop_queue.insert((now + drain + t.stop_time, inst.arn.clone()));
                }
            }
            (SetStatus::Active, InstanceStatus::Active | InstanceStatus::Draining) => {
                inst.set_status(now, InstanceStatus::Active);
                // A task ECS has already decided to stop goes on stopping; only a drain whose
                // time has not run out is called off.
                for t in inst.tasks.iter_mut().filter(|t| !t.desired_stopped(now)) {
                    t.stops_at = None;
                }
            }
            (_, other) => return Err(rejected(OP, "InvalidParameterException", format!("instance is {other:?}"))),
        }
        let (target, new_status) = (inst.arn.clone(), inst.status.clone());
        self.record(now, &target, by, EcsChange::Status(new_status));
        Ok(())
    }

    /// Ends the tasks whose stop time has run out by `now`, each recorded at the instant it
    /// stopped. Runs before anything is recorded or read, so the history stays in time order
    /// however long nobody looked.
    fn settle(&mut self, now: Instant) {
        let mut due = BTreeSet::new();
        while self.stop_queue.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, arn)) = self.stop_queue.pop_first() {
                due.insert(arn);
            }
        }
        let mut stopped = Vec::new();
        for arn in due {
            let Some(inst) = self.instances.get_mut(&*arn) else { continue };
            inst.tasks.retain(|t| match t.stopped_at() {
                Some(at) if at <= now => {
                    stopped.push((at, arn.clone(), t.arn.clone(), t.service));
                    false
                }
                _ => true,
            });
        }
        // Stable: tasks that stopped at the same instant keep their instance and task order.
        stopped.sort_by_key(|(at, ..)| *at);
        for (at, instance, task, service) in stopped {
            self.history.push(EcsEvent { at, instance, by: Actor::Scheduler, change: EcsChange::TaskStopped { task, service } });
        }
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
            stop_time: (Duration::ZERO, Duration::ZERO),
            task_listing: TaskListing::default(),
            local_task_view: LocalTaskView::Faithful,
            stop_queue: BTreeSet::new(),
            calls: BTreeMap::new(),
            total_calls: 0,
            jitter: Jitter::seeded(seed),
            task_seq: 0,
            call_log: Vec::new(),
            history: Vec::new(),
            visible: BTreeMap::new(),
            max_staleness: Duration::ZERO,
            puts: 0,
            tally: FaultTally::default(),
            buckets: BTreeMap::new(),
            drained_ever: BTreeSet::new(),
        })))
    }

    /// The cluster's name.
    pub fn name(&self) -> String {
        self.0.borrow().cluster_arn.rsplit('/').next().unwrap_or_default().to_string()
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
                status_log: vec![(Instant::now(), InstanceStatus::Active)],
                agent_connected: true,
                health: None,
                attrs: BTreeMap::new(),
                tasks: vec![],
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

    /// How long after DRAINING a service task's desired status turns STOPPED (uniform in the
    /// range, one draw per drain).
    pub fn set_drain_time(&self, min: Duration, max: Duration) {
        self.0.borrow_mut().drain_time = (min, max.max(min));
    }

    /// How long a service task keeps running after its desired status turned STOPPED, before its
    /// last status is STOPPED (uniform in the range, one draw per task; default zero: at once).
    /// In ECS: the load balancer's deregistration delay (300 s by default) plus the stop timeout.
    pub fn set_stop_time(&self, min: Duration, max: Duration) {
        self.0.borrow_mut().stop_time = (min, max.max(min));
    }

    /// Which tasks [`ClusterStore::running_tasks`] answers with (default [`TaskListing::NotStopped`]).
    pub fn set_task_listing(&self, listing: TaskListing) {
        self.0.borrow_mut().task_listing = listing;
    }

    /// What the hosts' ECS agents show of their tasks locally (default
    /// [`LocalTaskView::Faithful`], as on a real host).
    pub fn set_local_task_view(&self, view: LocalTaskView) {
        self.0.borrow_mut().local_task_view = view;
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
        self.add_family_tasks(arn, started_by, None, count);
    }

    /// As [`FakeEcs::add_tasks`], of task definition family `family`.
    pub fn add_family_tasks(&self, arn: &str, started_by: Option<&str>, family: Option<&str>, count: usize) {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        let service = started_by.is_some_and(|b| b.starts_with("ecs-svc/"));
        for _ in 0..count {
            s.task_seq += 1;
            let task = Task {
                arn: format!("arn:aws:ecs:us-east-1:123456789012:task/t{}", s.task_seq),
                started_by: started_by.map(Into::into),
                family: family.map(Into::into),
                service,
                stops_at: None,
                stop_time: Duration::ZERO,
            };
            let Some(i) = s.instances.get_mut(arn) else { continue };
            let (target, started) = (i.arn.clone(), task.arn.clone());
            i.tasks.push(task);
            s.record(now, &target, Actor::Operator, EcsChange::TaskStarted { task: started, service });
        }
    }

    /// Stops every task on `arn` at once, stopping ones included (what an operator or the tasks
    /// themselves would do).
    pub fn stop_all_tasks(&self, arn: &str) {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        s.settle(now);
        let Some(i) = s.instances.get_mut(arn) else { return };
        let (target, gone) = (i.arn.clone(), std::mem::take(&mut i.tasks));
        for t in gone {
            s.record(now, &target, Actor::Operator, EcsChange::TaskStopped { task: t.arn, service: t.service });
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

    /// Deletes an attribute as an operator would (`aws ecs delete-attributes`).
    pub fn operator_delete(&self, arn: &str, name: &str) {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        let Some(i) = s.instances.get_mut(arn) else { return };
        if i.current(name).is_none() {
            return;
        }
        i.attrs.entry(name.into()).or_default().push((now, None));
        let target = i.arn.clone();
        s.record(now, &target, Actor::Operator, EcsChange::Delete { name: name.into() });
    }

    /// Sets an instance's status as an operator would.
    pub fn operator_set_status(&self, arn: &str, status: InstanceStatus) {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        let Some(i) = s.instances.get_mut(arn) else { return };
        i.set_status(now, status.clone());
        let target = i.arn.clone();
        s.record(now, &target, Actor::Operator, EcsChange::Status(status));
    }

    /// Sets the overall health ECS reports for `arn` (`OK`, `IMPAIRED`, `INITIALIZING`, ...).
    pub fn set_health(&self, arn: &str, overall: Option<&str>) {
        if let Some(i) = self.0.borrow_mut().instances.get_mut(arn) {
            i.health = overall.map(str::to_string);
        }
    }

    /// What an operator's `aws ecs update-container-instances-state` does (or ECS's managed
    /// draining on scale-in): the same as the agent's call, service tasks moving off a DRAINING
    /// instance, recorded as the operator's. A call ECS would refuse changes nothing.
    pub fn operator_update_state(&self, arn: &str, status: SetStatus) {
        let mut s = self.0.borrow_mut();
        s.settle(Instant::now());
        if let Err(e) = s.update_state(arn, status, Actor::Operator) {
            tracing::debug!(error = %e, "operator state change refused");
        }
    }

    /// How often the injected faults took effect so far.
    pub fn fault_tally(&self) -> FaultTally {
        self.0.borrow().tally
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

    /// Tasks on `arn` whose last status is not STOPPED now, stopping ones included.
    pub fn unstopped_tasks(&self, arn: &str) -> usize {
        let mut s = self.0.borrow_mut();
        s.settle(Instant::now());
        s.instances.get(arn).map_or(0, |i| i.tasks.len())
    }

    /// Tasks on `arn` that ECS has decided to stop (desired STOPPED) but that still run now.
    pub fn stopping_tasks(&self, arn: &str) -> usize {
        let now = Instant::now();
        let mut s = self.0.borrow_mut();
        s.settle(now);
        s.instances.get(arn).map_or(0, |i| i.tasks.iter().filter(|t| t.desired_stopped(now)).count())
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

    /// Every status change, attribute write or delete, and task start or stop so far, oldest
    /// first.
    pub fn history(&self) -> Vec<EcsEvent> {
        let mut s = self.0.borrow_mut();
        s.settle(Instant::now());
        s.history.clone()
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

    /// A listing cut short (the `incomplete_lists` fault) fails as the real store's would.
    fn complete_or_fail(&self, op: &'static str) -> Result<(), ClusterError> {
        if self.0.borrow().faults.incomplete_lists {
            return Err(ClusterError::Incomplete { op, message: "page cap reached (injected)".into() });
        }
        Ok(())
    }

    /// Counts `arn`'s call and applies faults; `Err` when the call fails.
    async fn enter(&self, op: &'static str, arn: &str) -> Result<(), ClusterError> {
        let latency = self.0.borrow().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut s = self.0.borrow_mut();
        // ECS moves on whether or not anyone calls: tasks due to stop have stopped.
        s.settle(Instant::now());
        s.count_call(op, arn);
        if s.faults.unavailable {
            return Err(ClusterError::Unavailable { op, message: "Service unavailable".into() });
        }
        let every = s.faults.throttle_every;
        if (every > 0 && s.total_calls.is_multiple_of(every)) || !s.take_token(op) {
            return Err(ClusterError::Throttled { op, message: "Rate exceeded".into() });
        }
        Ok(())
    }

    /// Counts `extra` further calls of `op` by `arn`, each taking the injected latency: the
    /// further pages and batches one [`ClusterStore`] method costs.
    /// A further page refused by its bucket fails the whole listing, as in the real store.
    async fn extra_calls(&self, op: &'static str, arn: &str, extra: usize) -> Result<(), ClusterError> {
        for _ in 0..extra {
            let latency = self.0.borrow().faults.latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut s = self.0.borrow_mut();
            s.count_call(op, arn);
            if !s.take_token(op) {
                return Err(ClusterError::Throttled { op, message: "Rate exceeded".into() });
            }
        }
        Ok(())
    }
}

/// How many tasks on `instance` had not stopped at `at`, from a [`FakeEcs::history`] alone:
/// started by then and not yet stopped (a task that stops at `at` itself no longer counts).
pub fn unstopped_at(history: &[EcsEvent], instance: &str, at: Instant) -> usize {
    unstopped(history.iter().take_while(|e| e.at <= at).filter(|e| &*e.instance == instance).map(|e| &e.change))
}

/// How many tasks one instance's changes, oldest first, leave started and not stopped.
pub fn unstopped<'a>(changes: impl Iterator<Item = &'a EcsChange>) -> usize {
    let mut running = BTreeSet::new();
    for change in changes {
        match change {
            EcsChange::TaskStarted { task, .. } => {
                running.insert(task.as_str());
            }
            EcsChange::TaskStopped { task, .. } => {
                running.remove(task.as_str());
            }
            _ => {}
        }
    }
    running.len()
}

/// True with probability `p`.
fn chance(rng: &Jitter, p: f64) -> bool {
    ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
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
        self.ecs.complete_or_fail("ListAttributes")?;
        let (found, pages) = {
            let mut s = self.ecs.0.borrow_mut();
            let staleness = s.faults.staleness;
            let lag = s.jitter.up_to(staleness);
            let now = Instant::now();
            let at = now.checked_sub(lag).unwrap_or(now);
            let horizon = now.checked_sub(s.max_staleness).unwrap_or(now);
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
            (found, pages)
        };
        // ECS answers at most 100 attributes per page; every further page is another request.
        self.ecs.extra_calls("ListAttributes", &self.arn, pages.saturating_sub(1)).await?;
        Ok(found)
    }

    async fn list_attribute_value(&self, name: &str, value: &str, enough: usize) -> Result<Vec<Attribute>, ClusterError> {
        self.ecs.enter("ListAttributes", &self.arn).await?;
        self.ecs.complete_or_fail("ListAttributes")?;
        let found: Vec<Attribute> = {
            let mut s = self.ecs.0.borrow_mut();
            let lag = s.jitter.up_to(s.faults.staleness);
            let now = Instant::now();
            let at = now.checked_sub(lag).unwrap_or(now);
            let State { visible, instances, .. } = &mut *s;
            let Some(candidates) = visible.get(name) else { return Ok(vec![]) };
            candidates
                .iter()
                .filter(|arn| instances.get(&***arn).and_then(|i| i.as_of(name, at)).is_some_and(|v| v == value))
                .map(|arn| Attribute { target: arn.to_string(), name: name.into(), value: Some(value.into()) })
                .collect()
        };
        // Pages of 100 until `enough` were seen: the real store stops there too.
        let pages = found.len().min(enough.max(1)).div_ceil(LIST_PAGE).max(1);
        self.ecs.extra_calls("ListAttributes", &self.arn, pages - 1).await?;
        Ok(found.into_iter().take(pages * LIST_PAGE).collect())
    }

    async fn put_attributes(&self, attrs: &[(String, String)]) -> Result<(), ClusterError> {
        const OP: &str = "PutAttributes";
        self.ecs.enter(OP, &self.arn).await?;
        let slow = {
            let mut s = self.ecs.0.borrow_mut();
            s.puts += 1;
            let f = s.faults.clone();
            let every = f.slow_write_every > 0 && s.puts.is_multiple_of(f.slow_write_every);
            let slow = every || (f.slow_write_chance > 0.0 && chance(&s.jitter, f.slow_write_chance));
            slow.then(|| f.slow_write + s.jitter.up_to(f.slow_write_spread))
        };
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
            self.ecs.0.borrow_mut().tally.slow_writes += 1;
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
        let now = Instant::now();
        let mut s = self.ecs.0.borrow_mut();
        let lag = s.faults.status_lag;
        let inst = s.instances.get(&self.arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
        let status = inst.status_seen(lag);
        let stale = status != inst.status;
        let info = InstanceInfo {
            arn: self.arn.clone(),
            status,
            agent_connected: inst.agent_connected,
            // runningTasksCount counts desired RUNNING: a task still stopping is not in it.
            running_tasks: inst.tasks.iter().filter(|t| !t.desired_stopped(now)).count() as u32,
            attributes: inst.attrs.keys().filter_map(|k| inst.current(k).map(|v| (k.clone(), v.clone()))).collect(),
            health: inst.health.as_ref().map(|h| agent::cluster::InstanceHealth { overall: h.clone(), reasons: vec![] }),
        };
        s.tally.stale_status_reads += u64::from(stale);
        Ok(info)
    }

    async fn set_status(&self, status: SetStatus) -> Result<(), ClusterError> {
        const OP: &str = "UpdateContainerInstancesState";
        self.ecs.enter(OP, &self.arn).await?;
        self.ecs.0.borrow_mut().update_state(&self.arn, status, Actor::Agent)
    }

    /// The ECS agent's own view: the tasks it still runs, the stopping ones included (it runs
    /// them until they stop). No ECS call; no answer while the ECS agent is not connected (it is
    /// not running, or has not started yet after a boot).
    async fn local_tasks(&self) -> LocalTasks {
        let mut s = self.ecs.0.borrow_mut();
        let view = s.local_task_view;
        match view {
            LocalTaskView::Off => return LocalTasks::NoView,
            LocalTaskView::Silent => return LocalTasks::Down,
            _ => {}
        }
        s.settle(Instant::now());
        match s.instances.get(&self.arn) {
            Some(inst) if inst.agent_connected && view == LocalTaskView::Empty => LocalTasks::Unstopped(0),
            Some(inst) if inst.agent_connected => LocalTasks::Unstopped(inst.tasks.len()),
            _ => LocalTasks::Down,
        }
    }

    async fn task_arns(&self, desired: Desired) -> Result<Vec<String>, ClusterError> {
        const OP: &str = "ListTasks";
        self.ecs.enter(OP, &self.arn).await?;
        let arns: Vec<String> = {
            let now = Instant::now();
            let s = self.ecs.0.borrow();
            let inst = s.instances.get(&self.arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
            // The unsafe control's listing of the tasks being stopped comes back empty.
            let listed = desired == Desired::Running || s.task_listing == TaskListing::NotStopped;
            let want_stopped = desired == Desired::Stopped;
            inst.tasks.iter().filter(|t| listed && t.desired_stopped(now) == want_stopped).map(|t| t.arn.clone()).collect()
        };
        // What the real store pays: a page per hundred, at least one.
        self.ecs.extra_calls(OP, &self.arn, arns.len().div_ceil(LIST_PAGE).max(1) - 1).await?;
        Ok(arns)
    }

    async fn describe_tasks(&self, listed: &[ListedTask]) -> Result<Vec<TaskInfo>, ClusterError> {
        const OP: &str = "DescribeTasks";
        self.ecs.enter(OP, &self.arn).await?;
        if listed.len() > DESCRIBE_TASKS {
            return Err(rejected(OP, "InvalidParameterException", "more than 100 tasks"));
        }
        let tasks: Vec<TaskInfo> = {
            let now = Instant::now();
            let s = self.ecs.0.borrow();
            let inst = s.instances.get(&self.arn).ok_or_else(|| rejected(OP, "ClientException", "MISSING"))?;
            // A task that stopped since it was listed is gone from the instance: described as
            // STOPPED, it is left out.
            let not_stopped = listed.iter().filter_map(|l| inst.tasks.iter().find(|t| t.arn == l.arn));
            not_stopped
                .map(|t| TaskInfo {
                    arn: t.arn.clone(),
                    stopping: t.desired_stopped(now),
                    started_by: t.started_by.clone(),
                    group: None,
                    family: t.family.clone(),
                })
                .collect()
        };
        if tasks.iter().any(|t| t.stopping) {
            self.ecs.0.borrow_mut().tally.stopping_tasks_listed += 1;
        }
        Ok(tasks)
    }

    async fn draining_instances(&self) -> Result<Vec<String>, ClusterError> {
        const OP: &str = "ListContainerInstances";
        self.ecs.enter(OP, &self.arn).await?;
        self.ecs.complete_or_fail(OP)?;
        let found: Vec<String> = {
            let mut s = self.ecs.0.borrow_mut();
            // As stale as attribute reads: a status change younger than the lag may be missed.
            let lag = s.jitter.up_to(s.faults.staleness);
            let now = Instant::now();
            let at = now.checked_sub(lag).unwrap_or(now);
            let horizon = now.checked_sub(s.max_staleness).unwrap_or(now);
            let State { drained_ever, instances, .. } = &mut *s;
            // An instance no longer DRAINING since before any read can reach back is gone for good.
            drained_ever.retain(|arn| {
                instances.get(&**arn).is_some_and(|i| i.status == InstanceStatus::Draining || i.status_log.last().is_some_and(|(t, _)| *t >= horizon))
            });
            drained_ever
                .iter()
                .filter_map(|arn| instances.get(&**arn).map(|i| (arn, i)))
                .filter(|(_, i)| i.status_as_of(at) == Some(&InstanceStatus::Draining))
                .map(|(arn, _)| arn.to_string())
                .collect()
        };
        self.ecs.extra_calls(OP, &self.arn, found.len().div_ceil(LIST_PAGE).saturating_sub(1)).await?;
        Ok(found)
    }

    async fn describe_cluster(&self) -> Result<ClusterSummary, ClusterError> {
        self.ecs.enter("DescribeClusters", &self.arn).await?;
        let s = self.ecs.0.borrow();
        Ok(ClusterSummary { tags: s.tags.clone(), registered_instances: s.instances.len() as u64 })
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

    /// The task stops in `history`: (when, by whom, instance, service task).
    fn stops(history: &[EcsEvent]) -> Vec<(Instant, Actor, String, bool)> {
        history
            .iter()
            .filter_map(|e| match &e.change {
                EcsChange::TaskStopped { service, .. } => Some((e.at, e.by, e.instance.to_string(), *service)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_drained_service_task_keeps_running_through_its_stop_time() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            let h = ecs.host(&a);
            ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(30));
            ecs.set_stop_time(Duration::from_secs(60), Duration::from_secs(60));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 2);
            ecs.add_tasks(&a, Some("events-rule/x"), 1);
            let drained_at = Instant::now();
            h.set_status(SetStatus::Draining).await.expect("drain");

            tokio::time::sleep(Duration::from_secs(31)).await;
            let tasks = h.running_tasks().await.expect("tasks");
            assert_eq!(tasks.len(), 3, "desired STOPPED, still running: {tasks:?}");
            assert!(tasks.iter().all(|t| t.stopping == t.is_service_task()), "{tasks:?}");
            assert_eq!(h.describe_self().await.expect("describe").running_tasks, 1, "desired RUNNING only");
            assert_eq!((ecs.unstopped_tasks(&a), ecs.stopping_tasks(&a)), (3, 2));

            tokio::time::sleep(Duration::from_secs(60)).await;
            let left = h.running_tasks().await.expect("tasks");
            assert_eq!(left.len(), 1);
            assert!(!left[0].stopping && !left[0].is_service_task());
            assert_eq!((ecs.unstopped_tasks(&a), ecs.stopping_tasks(&a)), (1, 0));
            let stopped_at = drained_at + Duration::from_secs(90);
            assert_eq!(stops(&ecs.history()), vec![(stopped_at, Actor::Scheduler, a.clone(), true); 2]);
        });
    }

    #[test]
    fn tasks_stop_in_the_history_at_their_own_instant_and_in_order() {
        run(async {
            let ecs = FakeEcs::new("c", 7);
            let (a, b) = (ecs.register("a"), ecs.register("b"));
            ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
            ecs.set_stop_time(Duration::from_secs(5), Duration::from_secs(50));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 3);
            ecs.add_tasks(&b, Some("ecs-svc/1"), 3);
            let t0 = Instant::now();
            ecs.host(&a).set_status(SetStatus::Draining).await.expect("drain a");
            tokio::time::sleep(Duration::from_secs(20)).await;
            ecs.host(&b).set_status(SetStatus::Draining).await.expect("drain b");
            // Nobody looks for a long while; the stops are still recorded when they happened.
            tokio::time::sleep(Duration::from_secs(200)).await;
            ecs.operator_put(&a, "note", "x");

            let history = ecs.history();
            assert!(history.windows(2).all(|w| w[0].at <= w[1].at), "history out of order");
            let stops = stops(&history);
            assert_eq!(stops.len(), 6);
            for (at, by, instance, _) in &stops {
                let drained = if *instance == a { t0 } else { t0 + Duration::from_secs(20) };
                let after = at.duration_since(drained);
                assert!((Duration::from_secs(15)..=Duration::from_secs(60)).contains(&after), "{after:?}");
                assert_eq!(*by, Actor::Scheduler);
            }
            assert!(stops.iter().map(|s| s.0).collect::<BTreeSet<_>>().len() > 1, "stop times are drawn per task");
            assert_eq!(unstopped_at(&history, &a, t0 + Duration::from_secs(1)), 3);
            assert_eq!(unstopped_at(&history, &b, t0 + Duration::from_secs(29)), 3);
            assert_eq!(unstopped_at(&history, &a, Instant::now()), 0);
            let first_stop = stops[0].0;
            let instance = &stops[0].2;
            assert_eq!(unstopped_at(&history, instance, first_stop - Duration::from_millis(1)), 3);
            assert!(unstopped_at(&history, instance, first_stop) < 3, "a task that stops at the instant no longer counts");
        });
    }

    #[test]
    fn the_old_listing_drops_tasks_that_are_still_stopping() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            let h = ecs.host(&a);
            ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
            ecs.set_stop_time(Duration::from_secs(300), Duration::from_secs(300));
            ecs.set_task_listing(TaskListing::DesiredRunningOnly);
            ecs.add_tasks(&a, Some("ecs-svc/1"), 2);
            h.set_status(SetStatus::Draining).await.expect("drain");
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert!(h.running_tasks().await.expect("tasks").is_empty(), "the old listing says drained");
            // ... while both tasks still serve, as the history shows afterwards.
            let looked = Instant::now();
            assert_eq!(ecs.unstopped_tasks(&a), 2);
            tokio::time::sleep(Duration::from_secs(300)).await;
            assert_eq!(unstopped_at(&ecs.history(), &a, looked), 2);
            assert_eq!(unstopped_at(&ecs.history(), &a, Instant::now()), 0);
            ecs.set_task_listing(TaskListing::NotStopped);
            assert!(h.running_tasks().await.expect("tasks").is_empty());
        });
    }

    #[test]
    fn reactivating_calls_off_a_pending_drain_but_not_a_stop_under_way() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let (a, b) = (ecs.register("a"), ecs.register("b"));
            ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(30));
            ecs.set_stop_time(Duration::from_secs(60), Duration::from_secs(60));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 1);
            ecs.add_tasks(&b, Some("ecs-svc/1"), 1);
            let (ha, hb) = (ecs.host(&a), ecs.host(&b));
            ha.set_status(SetStatus::Draining).await.expect("drain a");
            hb.set_status(SetStatus::Draining).await.expect("drain b");
            tokio::time::sleep(Duration::from_secs(10)).await;
            ha.set_status(SetStatus::Active).await.expect("a back before its drain time ran out");
            tokio::time::sleep(Duration::from_secs(30)).await;
            hb.set_status(SetStatus::Active).await.expect("b back while its task is stopping");
            let on_b = hb.running_tasks().await.expect("tasks on b");
            assert!(on_b.len() == 1 && on_b[0].stopping, "{on_b:?}");
            tokio::time::sleep(Duration::from_secs(200)).await;
            let on_a = ha.running_tasks().await.expect("tasks on a");
            assert!(on_a.len() == 1 && !on_a[0].stopping, "{on_a:?}");
            assert!(hb.running_tasks().await.expect("tasks on b").is_empty());
            assert_eq!(stops(&ecs.history()).len(), 1);
        });
    }

    #[test]
    fn stopping_all_tasks_records_each_by_the_operator() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            ecs.set_drain_time(Duration::ZERO, Duration::ZERO);
            ecs.set_stop_time(Duration::from_secs(60), Duration::from_secs(60));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 1);
            ecs.add_tasks(&a, None, 1);
            ecs.host(&a).set_status(SetStatus::Draining).await.expect("drain");
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(ecs.stopping_tasks(&a), 1);
            ecs.stop_all_tasks(&a);
            let now = Instant::now();
            assert_eq!(ecs.unstopped_tasks(&a), 0);
            assert_eq!(
                stops(&ecs.history()),
                vec![(now, Actor::Operator, a.clone(), true), (now, Actor::Operator, a.clone(), false)]
            );
            tokio::time::sleep(Duration::from_secs(120)).await;
            assert_eq!(stops(&ecs.history()).len(), 2, "a task stops once");
        });
    }

    #[test]
    fn running_tasks_costs_the_calls_the_real_store_makes() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            let h = ecs.host(&a);
            ecs.set_drain_time(Duration::from_secs(10), Duration::from_secs(10));
            ecs.set_stop_time(Duration::from_secs(100), Duration::from_secs(100));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 150);
            ecs.add_tasks(&a, None, 1);
            let cost = |ecs: &FakeEcs| {
                let calls = ecs.calls();
                (calls.get("ListTasks").copied().unwrap_or(0), calls.get("DescribeTasks").copied().unwrap_or(0))
            };
            h.running_tasks().await.expect("tasks");
            assert_eq!(cost(&ecs), (3, 2), "RUNNING: 2 pages, STOPPED: 1 empty page; 151 described");
            h.set_status(SetStatus::Draining).await.expect("drain");
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert_eq!(h.running_tasks().await.expect("tasks").len(), 151);
            assert_eq!(cost(&ecs), (6, 4), "RUNNING: 1 page, STOPPED: 2 pages; 151 described");
            ecs.set_task_listing(TaskListing::DesiredRunningOnly);
            assert_eq!(h.running_tasks().await.expect("tasks").len(), 1);
            assert_eq!(cost(&ecs), (8, 5), "RUNNING: 1 page, STOPPED: an empty page; 1 described");
        });
    }

    #[test]
    fn draining_instances_may_miss_young_status_changes_only() {
        run(async {
            let ecs = FakeEcs::new("c", 5);
            let (a, b) = (ecs.register("a"), ecs.register("b"));
            let hb = ecs.host(&b);
            ecs.host(&a).set_status(SetStatus::Draining).await.expect("drain");
            assert_eq!(hb.draining_instances().await.expect("list"), vec![a.clone()], "no staleness: seen at once");

            tokio::time::sleep(Duration::from_secs(10)).await;
            ecs.set_faults(EcsFaults { staleness: Duration::from_secs(5), ..Default::default() });
            ecs.host(&a).set_status(SetStatus::Active).await.expect("reactivate");
            ecs.operator_set_status(&b, InstanceStatus::Draining);
            let mut stale = 0;
            for _ in 0..50 {
                let seen = hb.draining_instances().await.expect("list");
                assert!(seen == vec![b.clone()] || seen == vec![a.clone()], "{seen:?}");
                stale += usize::from(seen == vec![a.clone()]);
            }
            assert!(stale > 0, "a fresh status change must sometimes be missed");
            tokio::time::sleep(Duration::from_secs(6)).await;
            for _ in 0..50 {
                assert_eq!(hb.draining_instances().await.expect("list"), vec![b.clone()]);
            }
        });
    }

    #[test]
    fn an_operators_drain_moves_service_tasks_as_the_agents_does() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            ecs.set_drain_time(Duration::from_secs(30), Duration::from_secs(30));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 2);
            ecs.add_tasks(&a, Some("events-rule/x"), 1);
            ecs.operator_update_state(&a, SetStatus::Draining);
            tokio::time::sleep(Duration::from_secs(31)).await;
            assert_eq!(ecs.unstopped_tasks(&a), 1, "service tasks moved, the standalone one kept");
            ecs.operator_update_state(&a, SetStatus::Active);
            let by: Vec<Actor> = ecs.history().iter().filter(|e| matches!(e.change, EcsChange::Status(_))).map(|e| e.by).collect();
            assert_eq!(by, [Actor::Operator, Actor::Operator]);
            assert_eq!(ecs.status(&a), Some(InstanceStatus::Active));
        });
    }

    #[test]
    fn slow_writes_stale_describes_and_stopping_listings_are_tallied() {
        run(async {
            let ecs = FakeEcs::new("c", 1);
            let a = ecs.register("a");
            let h = ecs.host(&a);
            ecs.set_drain_time(Duration::ZERO, Duration::ZERO);
            ecs.set_stop_time(Duration::from_secs(60), Duration::from_secs(60));
            ecs.add_tasks(&a, Some("ecs-svc/1"), 1);
            let faults = EcsFaults {
                slow_write_every: 2,
                slow_write: Duration::from_secs(100),
                slow_write_spread: Duration::from_secs(10),
                status_lag: Duration::from_secs(5),
                ..Default::default()
            };
            ecs.set_faults(faults);
            let t0 = Instant::now();
            h.put_attributes(&[("x".into(), "1".into())]).await.expect("fast");
            assert_eq!(Instant::now(), t0);
            h.put_attributes(&[("x".into(), "2".into())]).await.expect("slow");
            let took = Instant::now() - t0;
            assert!((Duration::from_secs(100)..=Duration::from_secs(110)).contains(&took), "{took:?}");
            h.set_status(SetStatus::Draining).await.expect("drain");
            assert_eq!(h.describe_self().await.expect("describe").status, InstanceStatus::Active, "lags the drain");
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert_eq!(h.describe_self().await.expect("describe").status, InstanceStatus::Draining);
            assert!(h.running_tasks().await.expect("tasks")[0].stopping);
            let tally = ecs.fault_tally();
            assert_eq!((tally.slow_writes, tally.stale_status_reads, tally.stopping_tasks_listed), (1, 1, 1));
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
            assert!(matches!(h.describe_cluster().await, Err(ClusterError::Unavailable { .. })));
            assert_eq!(ecs.total_calls(), 3);
        });
    }
}
