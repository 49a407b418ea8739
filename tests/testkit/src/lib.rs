//! Test doubles and harnesses shared by the integration tests, the demo and the fleet simulation.

pub mod fake_ecs;
pub mod node;

pub mod introspection;
pub mod moto;
pub mod process;
pub mod fleet;
pub mod idle_wait;
