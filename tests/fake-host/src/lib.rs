//! A faithful fake of a Bottlerocket host's API server, for tests of the update agent.
//!
//! Written from the API reference (apiserver, thar-be-updates, updog), not from what any client
//! expects, so it can catch a client that misreads the API.
//!
//! # Layout
//! - [`model`]: the host without I/O: update state machine, update lock, partitions, reboots.
//! - [`wire`]: the JSON the API answers with, spelled as the real server spells it.
//! - [`routes`]: HTTP semantics (status codes, bodies, content types) in one place.
//! - [`settings`]: settings transactions, and the lag before updog sees a commit.
//! - [`waves`]: when a release is offered to a host, by its seed.
//! - [`host`]: [`FakeHost`], the shareable handle with the control API tests use.
//! - [`adapter`]: the agent's `OsApi` over a `FakeHost` in memory (no sockets).
//! - [`server`]: the host served on a Unix socket with hyper (`serve`).
//! - [`control`]: the JSON of the `/fake/*` control endpoints.
//! - [`cli`]: arguments of the `fake-bottlerocket` binary.

pub mod adapter;
pub mod cli;
pub mod control;
pub mod host;
pub mod model;
pub mod routes;
pub mod server;
pub mod settings;
pub mod version;
pub mod waves;
pub mod wire;

pub use control::{FaultsPatch, HostSnapshot};
pub use host::FakeHost;
pub use model::{CommandDurations, Faults, HostConfig, HostModel, RebootBehavior};
pub use routes::FakeResponse;
pub use server::{serve, serve_with, ServeOptions, ServedHost};
pub use wire::{UpdateCommand, UpdateState, UpdateStatus};
