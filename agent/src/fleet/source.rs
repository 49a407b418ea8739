//! ECS as the operator's fleet commands use it: whole-cluster reads, and the few writes the
//! one-word controls make, each the same call an operator could make with the `aws` CLI.
//!
//! Unlike the agent's [`crate::cluster::ClusterStore`], this is not bound to one instance: the
//! operator may change any instance of the cluster. Every implementation counts the calls it
//! makes by ECS operation, so `fleet status --verbose` can say what one refresh cost.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;

use aws_config::BehaviorVersion;
use aws_sdk_ecs::config::Region;
use aws_sdk_ecs::types::{Attribute as SdkAttribute, ClusterField, ContainerInstanceStatus, Tag, TargetType};
use aws_sdk_ecs::Client;

use super::FleetError;
use crate::cluster::ecs::{classify, EcsTimeouts};
use crate::cluster::ClusterError;

/// ListContainerInstances returns at most this many per page.
pub const LIST_PAGE: usize = 100;
/// DescribeContainerInstances takes at most this many instances per call.
pub const DESCRIBE_CHUNK: usize = 100;

/// The cluster as DescribeClusters (with its tags) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Its ARN (what TagResource and UntagResource take).
    pub arn: String,
    /// Its name.
    pub name: String,
    /// `ACTIVE`, `INACTIVE`, ...
    pub status: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// One container instance as DescribeContainerInstances reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The container-instance ARN.
    pub arn: String,
    /// The EC2 instance behind it, when ECS reports one.
    pub ec2_instance_id: Option<String>,
    /// `ACTIVE`, `DRAINING`, `REGISTERING`, ...
    pub status: String,
    /// Whether the ECS agent on the host is connected.
    pub agent_connected: bool,
    /// Every attribute by name (built-in `ecs.*` ones included); `None` for a value-less one.
    pub attributes: BTreeMap<String, Option<String>>,
}

impl InstanceRecord {
    /// The attribute's value, if it is present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|v| v.as_deref())
    }

    /// Whether the attribute is present at all (with a value or without).
    pub fn has(&self, name: &str) -> bool {
        self.attributes.contains_key(name)
    }
}

/// ECS calls made, by operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts(pub BTreeMap<String, u64>);

impl CallCounts {
    /// Counts one call of `op`.
    pub fn add(&mut self, op: &str) {
        *self.0.entry(op.to_owned()).or_default() += 1;
    }

    /// Calls of one operation.
    pub fn of(&self, op: &str) -> u64 {
        self.0.get(op).copied().unwrap_or(0)
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl fmt::Display for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (op, n) in &self.0 {
            write!(f, "{op} {n}, ")?;
        }
        write!(f, "{} in all", self.total())
    }
}

/// A counter shared by the methods of one implementation.
#[derive(Debug, Default)]
pub struct CallCounter(Mutex<CallCounts>);

impl CallCounter {
    /// Counts one call of `op`.
    pub fn add(&self, op: &str) {
        // A poisoned lock only means a panic elsewhere; the counts are still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).add(op);
    }

    /// The counts so far, and starts again from zero.
    pub fn take(&self) -> CallCounts {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the fleet commands need from ECS.
pub trait FleetApi {
    /// The region calls go to (for messages and the equivalent `aws` lines).
    fn region(&self) -> &str;
    /// DescribeClusters with its tags. An unknown cluster is [`FleetError::ClusterNotFound`].
    fn describe_cluster(&self, cluster: &str) -> impl Future<Output = Result<ClusterInfo, FleetError>>;
    /// One page of ListContainerInstances (every status but INACTIVE): ARNs and the next token.
    fn list_instances(
        &self,
        cluster: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<(Vec<String>, Option<String>), FleetError>>;
    /// DescribeContainerInstances of at most [`DESCRIBE_CHUNK`] instances (ARNs or ids); the
    /// ones ECS does not know are left out.
    fn describe_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> impl Future<Output = Result<Vec<InstanceRecord>, FleetError>>;
    /// TagResource on the cluster ARN.
    fn tag_cluster(&self, cluster_arn: &str, key: &str, value: &str) -> impl Future<Output = Result<(), FleetError>>;
    /// UntagResource on the cluster ARN.
    fn untag_cluster(&self, cluster_arn: &str, key: &str) -> impl Future<Output = Result<(), FleetError>>;
    /// PutAttributes of one attribute on one instance.
    fn put_attribute(
        &self,
        cluster: &str,
        instance_arn: &str,
        name: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), FleetError>>;
    /// DeleteAttributes of some attributes (by name) on one instance, in one call.
    fn delete_attributes(
        &self,
        cluster: &str,
        instance_arn: &str,
        names: &[&str],
    ) -> impl Future<Output = Result<(), FleetError>>;
    /// UpdateContainerInstancesState to ACTIVE for one instance.
    fn set_active(&self, cluster: &str, instance_arn: &str) -> impl Future<Output = Result<(), FleetError>>;
    /// The calls made since the last time this was asked, by operation.
    fn take_calls(&self) -> CallCounts;
}

/// An ECS client with the operator's own credentials: aws-config's default chain, so
/// `AWS_PROFILE`, `AWS_REGION` and `AWS_ENDPOINT_URL_ECS` work as with the `aws` CLI. The SDK's
/// standard retries stay on: an operator's occasional reads are not the fleet's request budget.
pub async fn operator_client(region: Option<String>) -> Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).timeout_config(EcsTimeouts::default().to_timeout_config());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    Client::new(&loader.load().await)
}

/// [`FleetApi`] on the real ECS API.
#[derive(Debug)]
pub struct EcsFleet {
    client: Client,
    region: String,
    calls: CallCounter,
}

impl EcsFleet {
    /// Wraps `client`; fails when no region is configured anywhere (every call would fail).
    pub fn new(client: Client) -> Result<EcsFleet, FleetError> {
        let region = client.config().region().map(|r| r.to_string()).ok_or(FleetError::NoRegion)?;
        Ok(EcsFleet { client, region, calls: CallCounter::default() })
    }

    /// Sorts a failed call, naming a vanished cluster as such.
    fn error(&self, cluster: &str, e: ClusterError) -> FleetError {
        match &e {
            ClusterError::Rejected { code, .. } if code == "ClusterNotFoundException" => {
                FleetError::ClusterNotFound { cluster: cluster.to_owned(), region: self.region.clone() }
            }
            _ => FleetError::Ecs(e),
        }
    }

    fn attribute(op: &'static str, instance_arn: &str, name: &str, value: Option<&str>) -> Result<SdkAttribute, FleetError> {
        SdkAttribute::builder()
            .name(name)
            .set_value(value.map(str::to_owned))
            .target_type(TargetType::ContainerInstance)
            .target_id(instance_arn)
            .build()
            .map_err(|e| FleetError::Ecs(ClusterError::Rejected { op, code: "InvalidAttribute".into(), message: e.to_string() }))
    }
}

/// The cluster named in a cluster ARN, or the name itself.
fn cluster_name(cluster: &str) -> &str {
    cluster.rsplit('/').next().unwrap_or(cluster)
}

impl FleetApi for EcsFleet {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_cluster(&self, cluster: &str) -> Result<ClusterInfo, FleetError> {
        const OP: &str = "DescribeClusters";
        self.calls.add(OP);
        let out = self
            .client
            .describe_clusters()
            .clusters(cluster)
            .include(ClusterField::Tags)
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        // DescribeClusters answers an unknown cluster with a MISSING failure, not an error; a
        // deleted one stays visible as INACTIVE for a while, and takes no calls either.
        let found = out.clusters().iter().find(|c| c.status() != Some("INACTIVE"));
        let Some(c) = found else {
            return Err(FleetError::ClusterNotFound { cluster: cluster.to_owned(), region: self.region.clone() });
        };
        let arn = c.cluster_arn().unwrap_or_default().to_owned();
        if arn.is_empty() {
            return Err(FleetError::Ecs(ClusterError::Rejected {
                op: OP,
                code: "MissingClusterArn".into(),
                message: format!("no ARN for cluster {cluster}"),
            }));
        }
        Ok(ClusterInfo {
            name: c.cluster_name().unwrap_or(cluster_name(cluster)).to_owned(),
            arn,
            status: c.status().unwrap_or("UNKNOWN").to_owned(),
            tags: crate::cluster::ecs::tag_map(c.tags()),
        })
    }

    async fn list_instances(&self, cluster: &str, token: Option<String>) -> Result<(Vec<String>, Option<String>), FleetError> {
        const OP: &str = "ListContainerInstances";
        self.calls.add(OP);
        let out = self
            .client
            .list_container_instances()
            .cluster(cluster)
            .max_results(LIST_PAGE as i32)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        let next = out.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        Ok((out.container_instance_arns().to_vec(), next))
    }

    async fn describe_instances(&self, cluster: &str, instances: &[String]) -> Result<Vec<InstanceRecord>, FleetError> {
        const OP: &str = "DescribeContainerInstances";
        self.calls.add(OP);
        let out = self
            .client
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(instances.to_vec()))
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        Ok(out
            .container_instances()
            .iter()
            .filter_map(|ci| {
                Some(InstanceRecord {
                    arn: ci.container_instance_arn()?.to_owned(),
                    ec2_instance_id: ci.ec2_instance_id().map(str::to_owned),
                    status: ci.status().unwrap_or("UNKNOWN").to_owned(),
                    agent_connected: ci.agent_connected(),
                    attributes: ci.attributes().iter().map(|a| (a.name().to_owned(), a.value().map(str::to_owned))).collect(),
                })
            })
            .collect())
    }

    async fn tag_cluster(&self, cluster_arn: &str, key: &str, value: &str) -> Result<(), FleetError> {
        const OP: &str = "TagResource";
        self.calls.add(OP);
        self.client
            .tag_resource()
            .resource_arn(cluster_arn)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map_err(|e| self.error(cluster_arn, classify(OP, e)))?;
        Ok(())
    }

    async fn untag_cluster(&self, cluster_arn: &str, key: &str) -> Result<(), FleetError> {
        const OP: &str = "UntagResource";
        self.calls.add(OP);
        self.client
            .untag_resource()
            .resource_arn(cluster_arn)
            .tag_keys(key)
            .send()
            .await
            .map_err(|e| self.error(cluster_arn, classify(OP, e)))?;
        Ok(())
    }

    async fn put_attribute(&self, cluster: &str, instance_arn: &str, name: &str, value: &str) -> Result<(), FleetError> {
        const OP: &str = "PutAttributes";
        self.calls.add(OP);
        self.client
            .put_attributes()
            .cluster(cluster)
            .attributes(Self::attribute(OP, instance_arn, name, Some(value))?)
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        Ok(())
    }

    async fn delete_attributes(&self, cluster: &str, instance_arn: &str, names: &[&str]) -> Result<(), FleetError> {
        const OP: &str = "DeleteAttributes";
        self.calls.add(OP);
        // By name alone: ECS deletes custom attributes whatever their value.
        let attrs = names.iter().map(|n| Self::attribute(OP, instance_arn, n, None)).collect::<Result<Vec<_>, _>>()?;
        self.client
            .delete_attributes()
            .cluster(cluster)
            .set_attributes(Some(attrs))
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        Ok(())
    }

    async fn set_active(&self, cluster: &str, instance_arn: &str) -> Result<(), FleetError> {
        const OP: &str = "UpdateContainerInstancesState";
        self.calls.add(OP);
        let out = self
            .client
            .update_container_instances_state()
            .cluster(cluster)
            .container_instances(instance_arn)
            .status(ContainerInstanceStatus::Active)
            .send()
            .await
            .map_err(|e| self.error(cluster, classify(OP, e)))?;
        if let Some(f) = out.failures().first() {
            return Err(FleetError::Ecs(ClusterError::Rejected {
                op: OP,
                code: f.reason().unwrap_or("Failure").to_owned(),
                message: format!("{}: {}", f.arn().unwrap_or(instance_arn), f.detail().unwrap_or("")),
            }));
        }
        Ok(())
    }

    fn take_calls(&self) -> CallCounts {
        self.calls.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_add_up_by_operation_and_start_again_when_taken() {
        let c = CallCounter::default();
        c.add("ListContainerInstances");
        c.add("ListContainerInstances");
        c.add("DescribeClusters");
        let taken = c.take();
        assert_eq!((taken.of("ListContainerInstances"), taken.of("DescribeClusters"), taken.total()), (2, 1, 3));
        assert_eq!(taken.to_string(), "DescribeClusters 1, ListContainerInstances 2, 3 in all");
        assert_eq!(c.take().total(), 0);
    }

    #[test]
    fn a_cluster_arn_names_its_cluster() {
        assert_eq!(cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/prod"), "prod");
        assert_eq!(cluster_name("prod"), "prod");
    }
}
