//! The operator's side: `br-update-agent fleet ...`, run from a workstation with the operator's
//! own AWS credentials, to read the rollout and steer it with one-word controls.
//!
//! - [`source`]: ECS as these commands use it, counting every call.
//! - [`model`]: the cluster read into a typed view; slots counted by the agent's own rule.
//! - [`tags`]: the cluster tags that pause the fleet and set N, read as every agent reads them.
//! - [`forecast`]: when each host behind the newest target updates, and when the rollout ends.
//! - [`render`]: the view as a table and as JSON.
//! - [`watch`]: `fleet status`, once or refreshing until Ctrl-C.
//! - [`controls`]: pause, resume, limit, opt-out, opt-in, update-now, release.
//! - [`cli`]: the command line.
//!
//! # `fleet status --json`
//!
//! One object (with `--watch`, one such object per line per refresh). Every key is always
//! present; a value that does not apply is `null`. Times are whole seconds since the epoch;
//! `*_ago_s` and `expires_in_s` are relative to `observed_at` (negative `expires_in_s`: expired).
//!
//! ```text
//! {
//!   "cluster": "prod",                      name
//!   "cluster_arn": "arn:aws:ecs:...",
//!   "observed_at": 1764403200,
//!   "limit": 3,                             N in force
//!   "limit_source": "tag",                  "tag" | "default" (no tag: each host's configured
//!                                           cluster.max-concurrent, default 1) | "invalid-tag"
//!                                           (tag present but not a number >= 1: the default)
//!   "limit_tag": "3",                       the raw <prefix>.max-concurrent tag, or null
//!   "paused": false,                        <prefix>.paused=true on the cluster
//!   "slots_held": 2,                        instances taking a slot now, by the agent's rule
//!   "versions": {"1.26.0": 8, "unknown": 1},  hosts by running version ("unknown": no
//!                                           readable status)
//!   "newest_target": "1.27.0",              newest version any status or claim names, or null
//!   "behind": 8,                            hosts whose running version is older than it
//!   "failures": {"1.27.0": ["i-0abc..."]},  versions that failed, with the hosts whose failure
//!                                           marker (<prefix>.failed) names them
//!   "instances": [{
//!     "instance_id": "i-0abc...",           EC2 instance id, or null
//!     "container_instance_arn": "arn:...",
//!     "availability_zone": "us-east-1a",    from ecs.availability-zone, or null
//!     "ecs_status": "DRAINING",             ACTIVE | DRAINING | REGISTERING | ...
//!     "drained_by": "agent",                when DRAINING: "agent" (its agent's marker) | "other"
//!     "agent_connected": true,              the ECS agent
//!     "report": "v3",                       the status attribute: "v3" | "v2" | "v1" | "none" (no
//!                                           agent, or one too old) | "unreadable"
//!     "status_raw": "v2:draining:...",      as stored, or null
//!     "running": "1.26.0", "phase": "draining", "target": "1.27.0", "result": "in-progress",
//!     "since": 1764403100, "since_ago_s": 100, "detail": null,   all from the status, or null
//!     "claim": {                            the <prefix>.lease attribute, or null
//!       "readable": true, "raw": "v1:d:...", "phase": "draining", "target": "1.27.0",
//!       "claimed_at": 1764403000, "expires_at": 1764403600, "expires_in_s": 400,
//!       "live": true                        others count it now (an unreadable claim is live)
//!     },
//!     "drained_marker": true,               <prefix>.drained present
//!     "opted_out": false,                   <prefix>.opt-out=true
//!     "update_now": false,                  <prefix>.update-now present
//!     "slot": "claim",                      why it takes a slot: "claim" | "unreadable-claim" |
//!                                           "drained-by-agent" | "draining-not-by-agent", or null
//!     "waiting_for": null,                  the status detail while its phase is "waiting"
//!     "seed": 1500, "last_update_s": 540,   from a v3 status, or null
//!     "eta": 1764406800, "eta_in_s": 3600,  with --forecast: back in service on the target,
//!     "eta_state": "queued"                 and where it stands (see forecast::EtaState); else null
//!   }],
//!   "forecast": null                        with --forecast: {target, finishes_at, finishes_in_s,
//!                                           error_s, hosts_to_go, slot_time_s, slot_time_source,
//!                                           slot_times_recorded, blocked}
//! }
//! ```
//!
//! # ECS calls
//!
//! One read makes DescribeClusters (with tags) once, ListContainerInstances once per 100
//! instances, and DescribeContainerInstances once per 100: 3 calls for 100 instances, 101 for
//! 5,000. A control adds one or two writes to the DescribeClusters (and, for an instance given
//! by EC2 id, the listing; for one given by ARN or id, one describe).

pub mod cli;
pub mod controls;
pub mod forecast;
pub mod model;
pub mod render;
pub mod source;
pub mod tags;
pub mod watch;

use crate::cluster::ClusterError;

/// Why a fleet command failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// DescribeClusters does not know the cluster, or a call answered ClusterNotFoundException.
    #[error("cluster {cluster} not found in {region}")]
    ClusterNotFound {
        /// The cluster as given.
        cluster: String,
        /// The region asked.
        region: String,
    },
    /// No instance of the cluster matches what the operator gave.
    #[error("no container instance `{query}` in cluster {cluster} (give an EC2 instance id i-..., a container-instance ARN, or a container-instance id)")]
    UnknownInstance {
        /// What the operator gave.
        query: String,
        /// The cluster.
        cluster: String,
    },
    /// A release that would free a slot its agent may still use, or that is no agent's.
    #[error("refusing to release {instance}: {why}; pass --force to release it anyway")]
    ReleaseRefused {
        /// The instance.
        instance: String,
        /// Why.
        why: String,
    },
    /// `resume-version` for a version no failure marker names.
    #[error("no failure marker in cluster {cluster} names version {version}: nothing to resume")]
    NothingToResume {
        /// The version given.
        version: String,
        /// The cluster.
        cluster: String,
    },
    /// The agent config given for the forecast cannot be used.
    #[error("forecast config: {0}")]
    Config(String),
    /// No region in the flags, the environment or the profile.
    #[error("no AWS region: pass --region, set AWS_REGION, or set a region in the AWS profile")]
    NoRegion,
    /// ECS failed or refused a call.
    #[error("ECS: {0}")]
    Ecs(#[from] ClusterError),
    /// The output (or the signal handler of a watch) could not be set up or written.
    #[error("output: {0}")]
    Output(std::io::Error),
}
