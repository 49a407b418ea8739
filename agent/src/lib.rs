//! The Bottlerocket ECS update agent: one per container instance, no central service.
//!
//! # Layout
//! - [`config`]: the agent's TOML config (the host container's user-data), validated at start.
//! - [`clock`], [`backoff`]: time and randomness, injected so the protocol runs on virtual time.
//! - [`os_api`]: the local Bottlerocket API (trait, HTTP client over the Unix socket, and the
//!   multi-request semantics of update commands).
//! - [`cluster`]: ECS as the agent needs it (trait and the aws-sdk-ecs implementation).
//! - [`discovery`]: cluster and container-instance ARN from the ECS agent's introspection endpoint.
//! - [`local_tasks`]: the ECS agent's own view of this host's tasks, which watches a drain for free.
//! - [`lease`]: the at-most-N claim protocol on container-instance attributes.
//! - [`slot`]: when this host checks for updates (wave seed, jitter, maintenance windows).
//! - [`window`]: weekly maintenance windows in a named time zone.
//! - [`journal`]: the in-flight record that survives reboots.
//! - [`halt`]: failure markers, and the fleet-wide halt of a version that failed.
//! - [`health`]: the health gate after boot and the bake before the slot is given back.
//! - [`keeper`]: keeps a claim alive in the background while the instance is out of service.
//! - [`status`]: the status attribute operators and waiting hosts read.
//! - [`cycle`]: the update state machine that ties the above together.
//! - [`notify`]: webhook messages on the events that matter, sent without ever holding up an
//!   update.
//! - [`shutdown`], [`logging`]: signals and structured logs.
//! - [`fleet`]: the operator's commands (`br-update-agent fleet ...`): the rollout as a table or
//!   JSON, and one-word controls.

pub mod backoff;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cycle;
pub mod discovery;
pub mod fleet;
pub mod halt;
pub mod health;
pub mod journal;
pub mod keeper;
pub mod lease;
pub mod local_tasks;
pub mod logging;
pub mod notify;
pub mod os_api;
pub mod shutdown;
pub mod slot;
pub mod status;
pub mod user_data;
pub mod window;
