//! A deterministic simulation of a fleet of update agents on virtual time, with a safety checker
//! that can fail, and the benchmark figures of a rollout.
//!
//! # Layout
//! - [`scenario`]: what to simulate: fleet size, N, timings, faults, agent settings, the seed.
//! - [`sim`]: runs a scenario: every host the real agent (`Agent::run`) on one current-thread
//!   runtime with paused time, against in-memory hosts and one in-memory ECS cluster.
//! - [`trace`]: what a run recorded (ECS changes and calls, reboots and boots, end states) and
//!   each host's phases derived from it.
//! - [`check`]: the checker: never more than N hosts busy, nothing left behind, every host done
//!   or parked for a reason; returns every violation with its time and hosts.
//! - [`controls`]: the negative controls, one per hole: the checker must find the hole with its
//!   fix switched off, and nothing with it on.
//! - [`forecast`]: how far `fleet status --forecast` is from the rollout it forecast.
//! - [`metrics`]: makespan against the lower bound, utilisation, drained time, ECS calls.
//! - [`peers`]: simple models of the peers' strategies on the same fleet, for comparison.
//! - [`spread`]: how far a bad release spread: hosts that received it, failed, halted, waited.
//! - [`svg`]: a timeline picture of a rollout.

pub mod check;
pub mod controls;
#[cfg(test)]
mod fixtures;
pub mod forecast;
pub mod metrics;
pub mod peers;
pub mod scenario;
pub mod sim;
pub mod spread;
pub mod svg;
pub mod trace;
