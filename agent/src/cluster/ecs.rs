//! [`ClusterStore`] on the real ECS API, through aws-sdk-ecs, for one container instance.
//!
//! Every method makes plain, unretried calls: the SDK's own retries are switched off because the
//! agent retries above this layer with its own jittered budget, and the ECS request rate of a
//! whole fleet is what the lease protocol budgets for. Errors are sorted once, in [`classify`],
//! into what the caller can do about them.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::timeout::TimeoutConfig;
use aws_sdk_ecs::config::Region;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{ClusterField, ContainerInstanceField, ContainerInstanceStatus, DesiredStatus, Failure, TargetType};
use aws_sdk_ecs::Client;
use tracing::{debug, info, warn};

use super::paging::{read_all, Page};
use super::{
    Attribute, ClusterError, ClusterStore, ClusterSummary, Desired, InstanceHealth, InstanceInfo, InstanceStatus, ListedTask, LocalTasks, SetStatus,
    TaskInfo,
};

/// PutAttributes and DeleteAttributes take at most this many attributes per call.
const ATTRIBUTES_PER_CALL: usize = 10;
/// The largest page ListAttributes, ListTasks and ListContainerInstances return.
const MAX_PAGE_SIZE: i32 = 100;
/// Pages read before a listing is given up as incomplete: far above any real cluster, low
/// enough that a service handing out tokens forever cannot keep the agent (and the account's
/// rate budget) busy.
const DEFAULT_MAX_PAGES: usize = 100;
/// A task's status once it has stopped, desired or last.
const STOPPED: &str = "STOPPED";

/// Error codes that mean "slow down" rather than "no". ECS's own `LimitExceededException` is a
/// resource quota, not a rate, so unlike the SDK's generic list it is left out.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Error codes that mean the service, not the request, failed.
const UNAVAILABLE_CODES: &[&str] = &[
    "ServerException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// How long one ECS call may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcsTimeouts {
    /// Establishing the TCP/TLS connection.
    pub connect: Duration,
    /// The whole call, from sending the request to the parsed response.
    pub operation: Duration,
}

impl Default for EcsTimeouts {
    fn default() -> Self {
        EcsTimeouts { connect: Duration::from_secs(5), operation: Duration::from_secs(20) }
    }
}

impl EcsTimeouts {
    /// The SDK form of these timeouts.
    pub fn to_timeout_config(self) -> TimeoutConfig {
        TimeoutConfig::builder().connect_timeout(self.connect).operation_timeout(self.operation).build()
    }
}

/// An ECS client from aws-config's default chain (region, endpoint and credentials from the
/// environment or the instance role), with SDK retries off and the default timeouts.
pub async fn client_from_env(region: Option<String>) -> Client {
    client_from_env_with(region, EcsTimeouts::default()).await
}

/// As [`client_from_env`], with explicit timeouts.
pub async fn client_from_env_with(region: Option<String>, timeouts: EcsTimeouts) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.to_timeout_config());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    Client::new(&loader.load().await)
}

/// ECS as seen by one container instance: the cluster's attributes, this instance's own
/// attributes, status and tasks, and the cluster's tags.
#[derive(Debug)]
pub struct EcsStore {
    client: Client,
    cluster: String,
    instance_arn: String,
    page_size: i32,
    max_pages: usize,
    local_tasks: Option<hyper::Uri>,
    /// Whether the last read of the local task view failed (logged once per change).
    local_failed: std::sync::atomic::AtomicBool,
}

impl EcsStore {
    /// A store for `instance_arn` in `cluster` (a name or an ARN).
    pub fn new(client: Client, cluster: String, instance_arn: String) -> EcsStore {
        EcsStore {
            client,
            cluster,
            instance_arn,
            page_size: MAX_PAGE_SIZE,
            max_pages: DEFAULT_MAX_PAGES,
            local_tasks: None,
            local_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Read the ECS agent's task listing at `url` (see [`crate::local_tasks`]) to watch drains.
    pub fn with_local_tasks(mut self, url: Option<hyper::Uri>) -> EcsStore {
        self.local_tasks = url;
        self
    }

    /// Ask for pages of `size` items (clamped to ECS's 1-100) from the listing calls.
    pub fn with_page_size(mut self, size: i32) -> EcsStore {
        self.page_size = size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// Give up any listing longer than `pages` pages with [`ClusterError::Incomplete`].
    pub fn with_max_pages(mut self, pages: usize) -> EcsStore {
        self.max_pages = pages.max(1);
        self
    }

    /// The cluster as it was given (a name or an ARN).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// One page of ListAttributes for attribute `name` on this cluster's container instances.
    fn attributes_page(&self, name: &str) -> aws_sdk_ecs::operation::list_attributes::builders::ListAttributesFluentBuilder {
        self.client
            .list_attributes()
            .cluster(&self.cluster)
            .target_type(TargetType::ContainerInstance)
            .attribute_name(name)
            .max_results(self.page_size)
    }

    async fn list_attribute_pages(&self, name: &str) -> Result<Vec<Attribute>, ClusterError> {
        const OP: &str = "ListAttributes";
        let found = read_all(OP, &format!("attribute {name}"), self.max_pages, |token| async move {
            let out = self
                .attributes_page(name)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
            let items = out.attributes().iter().map(|a| attribute_from_sdk(name, a)).collect::<Result<_, _>>()?;
            Ok(Page { items, next: out.next_token().map(str::to_owned) })
        })
        .await?;
        debug!(attribute = name, found = found.len(), "listed attribute");
        Ok(found)
    }

    /// ListAttributes filtered by name and value, page by page until `enough` were found.
    async fn list_attribute_value_pages(&self, name: &str, value: &str, enough: usize) -> Result<Vec<Attribute>, ClusterError> {
        const OP: &str = "ListAttributes";
        let mut found: Vec<Attribute> = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..self.max_pages {
            let out = self
                .attributes_page(name)
                .attribute_value(value)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
            for a in out.attributes() {
                found.push(attribute_from_sdk(name, a)?);
            }
            match out.next_token() {
                Some(next) if !next.is_empty() && found.len() < enough => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
        Err(ClusterError::Incomplete { op: OP, message: format!("attribute {name}={value}: still more after {} page(s)", self.max_pages) })
    }

    /// DescribeClusters with the tags: the fleet-wide settings and the count of registered
    /// container instances.
    async fn summary(&self) -> Result<ClusterSummary, ClusterError> {
        const OP: &str = "DescribeClusters";
        let out = self
            .client
            .describe_clusters()
            .clusters(&self.cluster)
            .include(ClusterField::Tags)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        if let Some(failure) = out.failures().first() {
            return Err(rejected_by_failure(OP, failure));
        }
        let c = out.clusters().first().ok_or_else(|| ClusterError::Rejected {
            op: OP,
            code: "MissingCluster".into(),
            message: format!("no cluster {} in the answer", self.cluster),
        })?;
        let registered_instances = u64::try_from(c.registered_container_instances_count()).unwrap_or(0);
        Ok(ClusterSummary { tags: tag_map(c.tags()), registered_instances })
    }

    /// ListTasks for this instance and one desired status, every page.
    async fn list_task_arns(&self, desired: DesiredStatus) -> Result<Vec<String>, ClusterError> {
        const OP: &str = "ListTasks";
        let what = format!("tasks with desired status {}", desired.as_str());
        read_all(OP, &what, self.max_pages, |token| {
            let desired = desired.clone();
            async move {
                let out = self
                    .client
                    .list_tasks()
                    .cluster(&self.cluster)
                    .container_instance(&self.instance_arn)
                    .desired_status(desired)
                    .max_results(self.page_size)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| classify(OP, e))?;
                Ok(Page { items: out.task_arns().to_vec(), next: out.next_token().map(str::to_owned) })
            }
        })
        .await
    }
}

impl ClusterStore for EcsStore {
    fn instance_arn(&self) -> &str {
        &self.instance_arn
    }

    async fn list_attribute(&self, name: &str) -> Result<Vec<Attribute>, ClusterError> {
        self.list_attribute_pages(name).await
    }

    async fn list_attribute_value(&self, name: &str, value: &str, enough: usize) -> Result<Vec<Attribute>, ClusterError> {
        self.list_attribute_value_pages(name, value, enough).await
    }

    async fn put_attributes(&self, attrs: &[(String, String)]) -> Result<(), ClusterError> {
        const OP: &str = "PutAttributes";
        for chunk in attrs.chunks(ATTRIBUTES_PER_CALL) {
            let sdk_attrs = chunk
                .iter()
                .map(|(name, value)| self.own_attribute(OP, name, Some(value)))
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .put_attributes()
                .cluster(&self.cluster)
                .set_attributes(Some(sdk_attrs))
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
        }
        Ok(())
    }

    async fn delete_attributes(&self, names: &[String]) -> Result<(), ClusterError> {
        const OP: &str = "DeleteAttributes";
        for chunk in names.chunks(ATTRIBUTES_PER_CALL) {
            // Custom attributes are deleted by name alone: a value would not make it conditional.
            let sdk_attrs =
                chunk.iter().map(|name| self.own_attribute(OP, name, None)).collect::<Result<Vec<_>, _>>()?;
            self.client
                .delete_attributes()
                .cluster(&self.cluster)
                .set_attributes(Some(sdk_attrs))
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
        }
        Ok(())
    }

    async fn describe_self(&self) -> Result<InstanceInfo, ClusterError> {
        const OP: &str = "DescribeContainerInstances";
        let out = self
            .client
            .describe_container_instances()
            .cluster(&self.cluster)
            .container_instances(&self.instance_arn)
            .include(ContainerInstanceField::ContainerInstanceHealth)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        if let Some(failure) = out.failures().first() {
            return Err(rejected_by_failure(OP, failure));
        }
        let ci = out.container_instances().first().ok_or_else(|| ClusterError::Rejected {
            op: OP,
            code: "MISSING".into(),
            message: format!("{} not in the response", self.instance_arn),
        })?;
        let attributes =
            ci.attributes().iter().filter_map(|a| Some((a.name().to_owned(), a.value()?.to_owned()))).collect();
        Ok(InstanceInfo {
            arn: ci.container_instance_arn().unwrap_or(&self.instance_arn).to_owned(),
            status: instance_status(ci.status()),
            agent_connected: ci.agent_connected(),
            running_tasks: u32::try_from(ci.running_tasks_count()).unwrap_or(0),
            attributes,
            health: ci.health_status().map(instance_health),
        })
    }

    async fn set_status(&self, status: SetStatus) -> Result<(), ClusterError> {
        const OP: &str = "UpdateContainerInstancesState";
        let sdk_status = match status {
            SetStatus::Active => ContainerInstanceStatus::Active,
            SetStatus::Draining => ContainerInstanceStatus::Draining,
        };
        let out = self
            .client
            .update_container_instances_state()
            .cluster(&self.cluster)
            .container_instances(&self.instance_arn)
            .status(sdk_status.clone())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        if let Some(failure) = out.failures().first() {
            return Err(rejected_by_failure(OP, failure));
        }
        info!(instance = %self.instance_arn, status = sdk_status.as_str(), "set container instance status");
        Ok(())
    }

    async fn task_arns(&self, desired: Desired) -> Result<Vec<String>, ClusterError> {
        self.list_task_arns(match desired {
            Desired::Running => DesiredStatus::Running,
            Desired::Stopped => DesiredStatus::Stopped,
        })
        .await
    }

    async fn describe_tasks(&self, listed: &[ListedTask]) -> Result<Vec<TaskInfo>, ClusterError> {
        const OP: &str = "DescribeTasks";
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .set_tasks(Some(listed.iter().map(|t| t.arn.clone()).collect()))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(not_stopped(listed, out.tasks(), out.failures()))
    }

    async fn draining_instances(&self) -> Result<Vec<String>, ClusterError> {
        const OP: &str = "ListContainerInstances";
        read_all(OP, "DRAINING instances", self.max_pages, |token| async move {
            let out = self
                .client
                .list_container_instances()
                .cluster(&self.cluster)
                .status(ContainerInstanceStatus::Draining)
                .max_results(self.page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
            Ok(Page { items: out.container_instance_arns().to_vec(), next: out.next_token().map(str::to_owned) })
        })
        .await
    }

    async fn local_tasks(&self) -> LocalTasks {
        use crate::local_tasks::LocalTasksError;
        use std::sync::atomic::Ordering;
        let Some(url) = self.local_tasks.as_ref() else { return LocalTasks::NoView };
        let (seen, error) = match crate::local_tasks::unstopped(url).await {
            Ok(n) => (LocalTasks::Unstopped(n), None),
            Err(e @ LocalTasksError::Unreachable(_)) => (LocalTasks::Down, Some(e)),
            Err(e @ LocalTasksError::Malformed(_)) => (LocalTasks::Unreadable, Some(e)),
        };
        let failed_before = self.local_failed.swap(error.is_some(), Ordering::Relaxed);
        match error {
            Some(e) if !failed_before => warn!(error = %e, "cannot read the ECS agent's task listing; ECS is asked instead meanwhile"),
            None if failed_before => info!("the ECS agent's task listing answers again"),
            _ => {}
        }
        seen
    }

    async fn describe_cluster(&self) -> Result<ClusterSummary, ClusterError> {
        self.summary().await
    }
}

impl EcsStore {
    /// An SDK attribute on this instance; `value` is `None` for deletes.
    fn own_attribute(
        &self,
        op: &'static str,
        name: &str,
        value: Option<&String>,
    ) -> Result<aws_sdk_ecs::types::Attribute, ClusterError> {
        aws_sdk_ecs::types::Attribute::builder()
            .name(name)
            .set_value(value.cloned())
            .target_type(TargetType::ContainerInstance)
            .target_id(&self.instance_arn)
            .build()
            .map_err(|e| ClusterError::Rejected { op, code: "InvalidAttribute".into(), message: e.to_string() })
    }
}

/// The agent's form of one ListAttributes entry. An entry without a target cannot be counted
/// against any instance, and dropping it could under-count the claims: the listing as a whole is
/// then incomplete.
fn attribute_from_sdk(asked: &str, a: &aws_sdk_ecs::types::Attribute) -> Result<Attribute, ClusterError> {
    match a.target_id() {
        Some(target) if !target.is_empty() => {
            Ok(Attribute { target: target.to_owned(), name: a.name().to_owned(), value: a.value().map(str::to_owned) })
        }
        _ => Err(ClusterError::Incomplete {
            op: "ListAttributes",
            message: format!("an entry {:?} listed for attribute {asked} has no target", a.name()),
        }),
    }
}

/// The listed tasks whose last status is not STOPPED, by DescribeTasks's answer for them.
///
/// A task reported MISSING is gone. A task the answer leaves out, or names in any other failure,
/// is kept as not stopped (with what the listing said of it): dropping it could end a drain
/// while it still serves.
fn not_stopped(
    listed: &[ListedTask],
    described: &[aws_sdk_ecs::types::Task],
    failures: &[Failure],
) -> Vec<TaskInfo> {
    let mut tasks = Vec::with_capacity(listed.len());
    for l in listed {
        if let Some(task) = described.iter().find(|t| t.task_arn() == Some(l.arn.as_str())) {
            if task.last_status() == Some(STOPPED) {
                debug!(task = %l.arn, "task has stopped");
                continue;
            }
            tasks.push(TaskInfo {
                arn: l.arn.clone(),
                stopping: task.desired_status().map_or(l.desired_stopped, |s| s == STOPPED),
                started_by: task.started_by().map(str::to_owned),
                group: task.group().map(str::to_owned),
                family: task.task_definition_arn().and_then(super::family_of).map(str::to_owned),
            });
            continue;
        }
        match failures.iter().find(|f| f.arn() == Some(l.arn.as_str())) {
            Some(f) if f.reason() == Some("MISSING") => {
                debug!(task = %l.arn, "task vanished before it was described");
                continue;
            }
            Some(f) => warn!(
                task = %l.arn,
                reason = f.reason().unwrap_or(""),
                detail = f.detail().unwrap_or(""),
                "task could not be described; counting it as not stopped"
            ),
            None => warn!(task = %l.arn, "listed task neither described nor reported missing; counting it as not stopped"),
        }
        tasks.push(TaskInfo { arn: l.arn.clone(), stopping: l.desired_stopped, started_by: None, group: None, family: None });
    }
    tasks
}

/// The agent's form of ECS's health report: the overall state and each failing check.
fn instance_health(h: &aws_sdk_ecs::types::ContainerInstanceHealthStatus) -> InstanceHealth {
    let reasons = h
        .details()
        .iter()
        .filter(|d| d.status().is_some_and(|s| s.as_str() != "OK"))
        .map(|d| {
            let kind = d.r#type().map_or("check", |t| t.as_str());
            let state = d.status().map_or("?", |s| s.as_str());
            match d.status_reason().filter(|r| !r.is_empty()) {
                Some(reason) => format!("{kind} {state}: {reason}"),
                None => format!("{kind} {state}"),
            }
        })
        .collect();
    InstanceHealth { overall: h.overall_status().map_or("INSUFFICIENT_DATA", |s| s.as_str()).to_owned(), reasons }
}

fn instance_status(status: Option<&str>) -> InstanceStatus {
    match status {
        Some("ACTIVE") => InstanceStatus::Active,
        Some("DRAINING") => InstanceStatus::Draining,
        Some(other) => InstanceStatus::Other(other.to_owned()),
        None => InstanceStatus::Other("UNKNOWN".to_owned()),
    }
}

/// ECS tags as a map (a tag without a key is left out; one without a value reads as empty).
pub(crate) fn tag_map(tags: &[aws_sdk_ecs::types::Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

/// A per-resource `failures` entry of a successful call, as a refusal.
fn rejected_by_failure(op: &'static str, failure: &Failure) -> ClusterError {
    ClusterError::Rejected {
        op,
        code: failure.reason().unwrap_or("Failure").to_owned(),
        message: format!("{}: {}", failure.arn().unwrap_or("?"), failure.detail().unwrap_or("")),
    }
}

/// Sort any failed ECS call into throttled, unavailable or rejected.
pub fn classify<E>(op: &'static str, err: SdkError<E>) -> ClusterError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = aws_sdk_ecs::error::DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) => ClusterError::Unavailable { op, message },
        SdkError::DispatchFailure(f) if f.is_user() => {
            ClusterError::Rejected { op, code: "InvalidRequest".into(), message }
        }
        SdkError::DispatchFailure(_) => ClusterError::Unavailable { op, message },
        SdkError::ConstructionFailure(_) => ClusterError::Rejected { op, code: "InvalidRequest".into(), message },
        SdkError::ResponseError(r) => by_status(op, r.raw().status().as_u16(), "InvalidResponse", message),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let meta_message = s.err().message().map(str::to_owned).unwrap_or(message);
            match s.err().code() {
                Some(code) if THROTTLING_CODES.contains(&code) => ClusterError::Throttled { op, message: meta_message },
                Some(code) if UNAVAILABLE_CODES.contains(&code) => {
                    ClusterError::Unavailable { op, message: format!("{code}: {meta_message}") }
                }
                Some(code) => by_status(op, status, code, meta_message),
                None => by_status(op, status, &format!("HTTP{status}"), meta_message),
            }
        }
        // SdkError is non-exhaustive: anything new is treated as a transient failure.
        _ => ClusterError::Unavailable { op, message },
    }
}

/// The HTTP status decides when the error code does not.
fn by_status(op: &'static str, status: u16, code: &str, message: String) -> ClusterError {
    match status {
        429 => ClusterError::Throttled { op, message },
        500..=599 => ClusterError::Unavailable { op, message: format!("HTTP {status}: {message}") },
        _ => ClusterError::Rejected { op, code: code.to_owned(), message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_without_a_target_makes_the_listing_incomplete() {
        let attr = |target: Option<&str>| {
            aws_sdk_ecs::types::Attribute::builder()
                .name("br-update.lease")
                .value("v1:a")
                .set_target_id(target.map(str::to_owned))
                .build()
                .expect("an attribute with a name")
        };
        assert_eq!(
            attribute_from_sdk("br-update.lease", &attr(Some("arn:ci/1"))),
            Ok(Attribute { target: "arn:ci/1".into(), name: "br-update.lease".into(), value: Some("v1:a".into()) })
        );
        for target in [None, Some("")] {
            match attribute_from_sdk("br-update.lease", &attr(target)) {
                Err(e @ ClusterError::Incomplete { op: "ListAttributes", .. }) => assert!(!e.is_retryable()),
                other => panic!("target {target:?}: expected Incomplete, got {other:?}"),
            }
        }
    }

    #[test]
    fn only_tasks_whose_last_status_is_stopped_or_that_are_missing_are_gone() {
        let task = |arn: &str, desired: &str, last: &str| {
            aws_sdk_ecs::types::Task::builder()
                .task_arn(arn)
                .desired_status(desired)
                .last_status(last)
                .started_by("ecs-svc/1")
                .group("service:web")
                .build()
        };
        let failure = |arn: &str, reason: &str| Failure::builder().arn(arn).reason(reason).build();
        let listed: Vec<ListedTask> = [
            ("running", false),
            ("stopping", true),
            ("deprovisioning", true),
            ("stopped", true),
            ("stopped-since-listed", false),
            ("missing", true),
            ("refused", false),
            ("unanswered", true),
        ]
        .iter()
        .map(|(arn, desired_stopped)| ListedTask { arn: (*arn).into(), desired_stopped: *desired_stopped })
        .collect();
        let described = [
            task("running", "RUNNING", "RUNNING"),
            task("stopping", "STOPPED", "RUNNING"),
            task("deprovisioning", "STOPPED", "DEPROVISIONING"),
            task("stopped", "STOPPED", "STOPPED"),
            task("stopped-since-listed", "STOPPED", "STOPPED"),
        ];
        let failures = [failure("missing", "MISSING"), failure("refused", "ACCESS_DENIED")];
        let got = not_stopped(&listed, &described, &failures);
        let summary: Vec<(&str, bool, bool)> =
            got.iter().map(|t| (t.arn.as_str(), t.stopping, t.is_service_task())).collect();
        assert_eq!(
            summary,
            vec![
                ("running", false, true),
                ("stopping", true, true),
                ("deprovisioning", true, true),
                // Not described: kept, with what the listing knew, and not assumed to be a service task.
                ("refused", false, false),
                ("unanswered", true, false),
            ]
        );
    }

    #[test]
    fn statuses_map_to_the_agents_words() {
        assert_eq!(instance_status(Some("ACTIVE")), InstanceStatus::Active);
        assert_eq!(instance_status(Some("DRAINING")), InstanceStatus::Draining);
        assert_eq!(instance_status(Some("REGISTERING")), InstanceStatus::Other("REGISTERING".into()));
        assert_eq!(instance_status(None), InstanceStatus::Other("UNKNOWN".into()));
    }

    #[test]
    fn the_status_decides_when_the_code_does_not() {
        assert!(matches!(by_status("op", 429, "X", String::new()), ClusterError::Throttled { .. }));
        assert!(matches!(by_status("op", 503, "X", String::new()), ClusterError::Unavailable { .. }));
        assert_eq!(
            by_status("op", 400, "InvalidParameterException", "bad".into()),
            ClusterError::Rejected { op: "op", code: "InvalidParameterException".into(), message: "bad".into() }
        );
    }
}
