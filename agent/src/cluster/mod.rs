//! What the agent needs from ECS, in the agent's own words, bound to its own container instance.
//!
//! The store writes only to the instance it was built for: a host can only ever change its own
//! claim, marker and status, which is what the lease's safety argument needs. Reads of the claims
//! cover the whole cluster. Implementations: [`ecs::EcsStore`] (aws-sdk-ecs) and the in-memory
//! fake of the test kit, which keeps ECS's semantics (blind last-writer-wins writes, at most ten
//! custom attributes per instance, the value character rules) and adds staleness and faults.

pub mod ecs;
pub mod paced;
mod paging;
pub mod retry;

use std::collections::BTreeMap;
use std::future::Future;

/// An attribute of some container instance of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The container instance ARN that carries it.
    pub target: String,
    /// Its name.
    pub name: String,
    /// Its value (ECS allows none).
    pub value: Option<String>,
}

/// What DescribeClusters (with the tags) says of the cluster: the fleet-wide settings and how
/// many instances it has, in one call whatever the fleet's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSummary {
    /// The cluster's tags (fleet-wide settings every host reads alike).
    pub tags: BTreeMap<String, String>,
    /// How many container instances the cluster has registered.
    pub registered_instances: u64,
}

/// The status of a container instance, as ECS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Takes tasks.
    Active,
    /// Being emptied of service tasks.
    Draining,
    /// REGISTERING, DEREGISTERING, INACTIVE, ...: nothing the agent may change.
    Other(String),
}

/// The status the agent may set on its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetStatus {
    /// Back in service.
    Active,
    /// Drain.
    Draining,
}

/// This host's container instance, as `DescribeContainerInstances` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its ARN.
    pub arn: String,
    /// ACTIVE, DRAINING, ...
    pub status: InstanceStatus,
    /// Whether the ECS agent on the host is connected.
    pub agent_connected: bool,
    /// Tasks with desired status RUNNING.
    pub running_tasks: u32,
    /// Its attributes that have a value, by name (built-in `ecs.*` ones included).
    pub attributes: BTreeMap<String, String>,
    /// Its health as ECS judges it (`include = CONTAINER_INSTANCE_HEALTH`); `None` when ECS
    /// gave none.
    pub health: Option<InstanceHealth>,
}

/// A container instance's overall health, as DescribeContainerInstances reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHealth {
    /// `OK`, `IMPAIRED`, `INSUFFICIENT_DATA` or `INITIALIZING`.
    pub overall: String,
    /// The failing checks' types and reasons, for the log.
    pub reasons: Vec<String>,
}

impl InstanceHealth {
    /// Whether ECS found the instance impaired.
    pub fn is_impaired(&self) -> bool {
        self.overall == "IMPAIRED"
    }
    /// Whether ECS has not judged it yet (the gate waits).
    pub fn is_initializing(&self) -> bool {
        self.overall == "INITIALIZING"
    }
}

/// What the ECS agent on this host says of its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalTasks {
    /// This store has no view of the ECS agent.
    NoView,
    /// The ECS agent does not answer: not started yet after a boot, or down.
    Down,
    /// It answered with something that is not its task listing.
    Unreadable,
    /// It runs this many tasks that have not stopped (stopping ones and ones not started yet
    /// included).
    Unstopped(usize),
}

/// A task on this instance that has not stopped yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its ARN.
    pub arn: String,
    /// ECS has decided to stop it (desired status STOPPED) but its last status is not STOPPED
    /// yet: a replaced service task still serving through its load balancer's deregistration
    /// delay and its stop timeout.
    pub stopping: bool,
    /// `startedBy`: `ecs-svc/...` for service (and daemon) tasks, anything else or nothing for
    /// standalone ones.
    pub started_by: Option<String>,
    /// `group`: `service:<name>` or `family:<name>`.
    pub group: Option<String>,
    /// Its task definition's family (from `taskDefinitionArn`), when known.
    pub family: Option<String>,
}

/// Which of an instance's tasks a task listing names, by desired status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// Tasks ECS means to keep running.
    Running,
    /// Tasks ECS has decided to stop (some may still run).
    Stopped,
}

/// A task as ListTasks named it, and whether it was listed under desired status STOPPED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedTask {
    /// Its ARN.
    pub arn: String,
    /// Listed under desired status STOPPED.
    pub desired_stopped: bool,
}

/// The most tasks one DescribeTasks call takes.
pub const TASKS_PER_DESCRIBE: usize = 100;

/// Both listings as one, each task once; a task in both was stopped between them.
pub fn listed_tasks(running: Vec<String>, stopped: Vec<String>) -> Vec<ListedTask> {
    let mut by_arn: BTreeMap<String, bool> = running.into_iter().map(|arn| (arn, false)).collect();
    by_arn.extend(stopped.into_iter().map(|arn| (arn, true)));
    by_arn.into_iter().map(|(arn, desired_stopped)| ListedTask { arn, desired_stopped }).collect()
}

/// The listed tasks that have not stopped, described a hundred at a time.
async fn described<S: ClusterStore + ?Sized>(store: &S, listed: Vec<ListedTask>) -> Result<Vec<TaskInfo>, ClusterError> {
    let mut tasks = Vec::with_capacity(listed.len());
    for chunk in listed.chunks(TASKS_PER_DESCRIBE) {
        tasks.extend(store.describe_tasks(chunk).await?);
    }
    tracing::debug!(listed = listed.len(), not_stopped = tasks.len(), "listed tasks");
    Ok(tasks)
}

/// The family of a task definition ARN (`...:task-definition/<family>:<revision>`).
pub fn family_of(task_definition_arn: &str) -> Option<&str> {
    let tail = task_definition_arn.rsplit_once("task-definition/")?.1;
    let family = tail.rsplit_once(':').map_or(tail, |(f, _)| f);
    (!family.is_empty()).then_some(family)
}

impl TaskInfo {
    /// Whether ECS moves this task off a draining instance by itself.
    pub fn is_service_task(&self) -> bool {
        self.started_by.as_deref().is_some_and(|s| s.starts_with("ecs-svc/"))
            || self.group.as_deref().is_some_and(|g| g.starts_with("service:"))
    }
}

/// A failed ECS call, typed by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// `ThrottlingException` or another rate limit: retry later, with back-off.
    #[error("{op}: throttled: {message}")]
    Throttled {
        /// The ECS operation.
        op: &'static str,
        /// What ECS said.
        message: String,
    },
    /// A 5xx, a timeout or a connection failure: retry later.
    #[error("{op}: ECS unavailable: {message}")]
    Unavailable {
        /// The ECS operation.
        op: &'static str,
        /// What failed.
        message: String,
    },
    /// A listing could not be read to its end (a page cap, an entry without a target): the
    /// answer would under-count, so callers that count for safety must wait instead.
    #[error("{op}: incomplete answer: {message}")]
    Incomplete {
        /// The ECS operation.
        op: &'static str,
        /// What was missing.
        message: String,
    },
    /// ECS refused the request (invalid parameter, limit, not found, access denied, ...).
    #[error("{op}: {code}: {message}")]
    Rejected {
        /// The ECS operation.
        op: &'static str,
        /// The error code, e.g. `AttributeLimitExceededException`.
        code: String,
        /// What ECS said.
        message: String,
    },
}

impl ClusterError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClusterError::Throttled { .. } | ClusterError::Unavailable { .. })
    }
}

/// ECS as one host's agent sees it: whole-cluster reads, writes to its own instance only.
pub trait ClusterStore {
    /// This host's container instance ARN.
    fn instance_arn(&self) -> &str;
    /// Every instance's attribute called `name`: ListAttributes filtered by that name, every page.
    fn list_attribute(&self, name: &str) -> impl Future<Output = Result<Vec<Attribute>, ClusterError>>;
    /// The instances whose attribute `name` is exactly `value`, page by page until at least
    /// `enough` were found or the listing ends (ListAttributes filtered by name and value): a
    /// count that only has to reach a threshold need not read a whole fleet's pages.
    fn list_attribute_value(
        &self,
        name: &str,
        value: &str,
        enough: usize,
    ) -> impl Future<Output = Result<Vec<Attribute>, ClusterError>>;
    /// Create or replace attributes on this instance (blind write; at most 10 per call).
    fn put_attributes(&self, attrs: &[(String, String)]) -> impl Future<Output = Result<(), ClusterError>>;
    /// Remove attributes from this instance by name; removing a missing one is not an error.
    fn delete_attributes(&self, names: &[String]) -> impl Future<Output = Result<(), ClusterError>>;
    /// DescribeContainerInstances for this instance.
    fn describe_self(&self) -> impl Future<Output = Result<InstanceInfo, ClusterError>>;
    /// UpdateContainerInstancesState for this instance.
    fn set_status(&self, status: SetStatus) -> impl Future<Output = Result<(), ClusterError>>;
    /// The ARNs of this instance's tasks with one desired status (ListTasks, every page). A
    /// listing cut short is an error.
    fn task_arns(&self, desired: Desired) -> impl Future<Output = Result<Vec<String>, ClusterError>>;
    /// Of at most [`TASKS_PER_DESCRIBE`] listed tasks, those whose last status is not STOPPED
    /// (DescribeTasks).
    fn describe_tasks(&self, listed: &[ListedTask]) -> impl Future<Output = Result<Vec<TaskInfo>, ClusterError>>;
    /// The tasks on this instance that have not stopped: desired status RUNNING, or desired
    /// status STOPPED with a last status that is not STOPPED yet (ListTasks for both desired
    /// statuses, every page, then DescribeTasks). A listing cut short is an error. Made of the
    /// calls above, so that where calls are spaced each of them waits its turn.
    fn running_tasks(&self) -> impl Future<Output = Result<Vec<TaskInfo>, ClusterError>> {
        async move {
            // A replaced service task has desired status STOPPED yet keeps serving through its
            // load balancer's deregistration delay and its stop timeout, so both listings count.
            // RUNNING comes first: ECS only ever moves a desired status from RUNNING to STOPPED,
            // so a task stopped between the two listings is still caught by the second.
            let running = self.task_arns(Desired::Running).await?;
            let stopped = self.task_arns(Desired::Stopped).await?;
            described(self, listed_tasks(running, stopped)).await
        }
    }
    /// The tasks on this instance that ECS means to keep running (ListTasks for desired status
    /// RUNNING, every page, then DescribeTasks): enough to find standalone tasks, one listing
    /// fewer than [`Self::running_tasks`]. A listing cut short is an error.
    fn kept_running_tasks(&self) -> impl Future<Output = Result<Vec<TaskInfo>, ClusterError>> {
        async move { described(self, listed_tasks(self.task_arns(Desired::Running).await?, vec![])).await }
    }
    /// The ARNs of the cluster's instances whose status is DRAINING (ListContainerInstances
    /// with status DRAINING, every page). A listing cut short is an error.
    fn draining_instances(&self) -> impl Future<Output = Result<Vec<String>, ClusterError>>;
    /// The cluster's tags and its count of registered instances (DescribeClusters with the
    /// tags: one call).
    fn describe_cluster(&self) -> impl Future<Output = Result<ClusterSummary, ClusterError>>;
    /// The ECS agent's own view of this host's tasks (no ECS call, see [`crate::local_tasks`]).
    /// Only ever a reason to ask ECS, or to wait before asking, never an answer in its place.
    fn local_tasks(&self) -> impl Future<Output = LocalTasks> {
        std::future::ready(LocalTasks::NoView)
    }
    /// The next call goes out at once, without waiting for its turn where calls are spaced (see
    /// [`paced`]): for a call that must follow the one before as closely as possible (a claim,
    /// after the last listing of the claims).
    fn next_call_at_once(&self) {}
}

impl<T: ClusterStore> ClusterStore for &T {
    fn instance_arn(&self) -> &str {
        (**self).instance_arn()
    }
    fn list_attribute(&self, name: &str) -> impl Future<Output = Result<Vec<Attribute>, ClusterError>> {
        (**self).list_attribute(name)
    }
    fn list_attribute_value(
        &self,
        name: &str,
        value: &str,
        enough: usize,
    ) -> impl Future<Output = Result<Vec<Attribute>, ClusterError>> {
        (**self).list_attribute_value(name, value, enough)
    }
    fn put_attributes(&self, attrs: &[(String, String)]) -> impl Future<Output = Result<(), ClusterError>> {
        (**self).put_attributes(attrs)
    }
    fn delete_attributes(&self, names: &[String]) -> impl Future<Output = Result<(), ClusterError>> {
        (**self).delete_attributes(names)
    }
    fn describe_self(&self) -> impl Future<Output = Result<InstanceInfo, ClusterError>> {
        (**self).describe_self()
    }
    fn set_status(&self, status: SetStatus) -> impl Future<Output = Result<(), ClusterError>> {
        (**self).set_status(status)
    }
    fn task_arns(&self, desired: Desired) -> impl Future<Output = Result<Vec<String>, ClusterError>> {
        (**self).task_arns(desired)
    }
    fn describe_tasks(&self, listed: &[ListedTask]) -> impl Future<Output = Result<Vec<TaskInfo>, ClusterError>> {
        (**self).describe_tasks(listed)
    }
    fn draining_instances(&self) -> impl Future<Output = Result<Vec<String>, ClusterError>> {
        (**self).draining_instances()
    }
    fn describe_cluster(&self) -> impl Future<Output = Result<ClusterSummary, ClusterError>> {
        (**self).describe_cluster()
    }
    fn local_tasks(&self) -> impl Future<Output = LocalTasks> {
        (**self).local_tasks()
    }
    fn next_call_at_once(&self) {
        (**self).next_call_at_once()
    }
}

/// ECS's rule for attribute names: 1-128 of letters, digits, `-`, `_`, `/`, `\`, `.`.
pub fn valid_attribute_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_/\\.".contains(c))
}

/// ECS's rule for attribute values: 1-128 of letters, digits, `-_.@/\:` and inner spaces.
pub fn valid_attribute_value(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@/\\: ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_task_listings_count_once_and_stopped_wins() {
        let listed = listed_tasks(vec!["a".into(), "b".into(), "a".into()], vec!["b".into(), "c".into()]);
        let l = |arn: &str, desired_stopped| ListedTask { arn: arn.into(), desired_stopped };
        assert_eq!(listed, vec![l("a", false), l("b", true), l("c", true)]);
    }

    #[test]
    fn attribute_rules_follow_the_ecs_reference() {
        assert!(valid_attribute_name("br-update.lease"));
        assert!(!valid_attribute_name(""));
        assert!(!valid_attribute_name(&"a".repeat(129)));
        assert!(!valid_attribute_name("a=b"));
        assert!(valid_attribute_value("v1:h:1700000000:1700000600:ab12:1.26.1"));
        assert!(valid_attribute_value("a b"));
        assert!(!valid_attribute_value(" a"));
        assert!(!valid_attribute_value("a "));
        assert!(!valid_attribute_value("{\"json\":1}"));
        assert!(!valid_attribute_value("a=b,c"));
        assert!(!valid_attribute_value(""));
    }

    #[test]
    fn only_throttling_and_outages_are_retryable() {
        let m = || "m".to_owned();
        assert!(ClusterError::Throttled { op: "X", message: m() }.is_retryable());
        assert!(ClusterError::Unavailable { op: "X", message: m() }.is_retryable());
        // A listing cut short would be cut short again: waiting it out is the caller's choice.
        assert!(!ClusterError::Incomplete { op: "X", message: m() }.is_retryable());
        assert!(!ClusterError::Rejected { op: "X", code: "C".into(), message: m() }.is_retryable());
    }

    #[test]
    fn families_come_from_task_definition_arns() {
        assert_eq!(family_of("arn:aws:ecs:us-east-1:123456789012:task-definition/log-router:7"), Some("log-router"));
        assert_eq!(family_of("arn:aws:ecs:us-east-1:123456789012:task-definition/web"), Some("web"));
        assert_eq!(family_of("arn:aws:ecs:us-east-1:123456789012:task/c/abc"), None);
        assert_eq!(family_of("arn:aws:ecs:us-east-1:1:task-definition/:3"), None);
    }

    #[test]
    fn service_tasks_are_told_from_standalone_ones() {
        let t = |sb: Option<&str>, g: Option<&str>| TaskInfo {
            arn: "t".into(),
            family: None,
            stopping: false,
            started_by: sb.map(Into::into),
            group: g.map(Into::into),
        };
        assert!(t(Some("ecs-svc/123"), None).is_service_task());
        assert!(t(None, Some("service:web")).is_service_task());
        assert!(!t(Some("events-rule/nightly"), Some("family:batch")).is_service_task());
        assert!(!t(None, None).is_service_task());
    }
}
