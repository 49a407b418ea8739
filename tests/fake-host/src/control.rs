//! The JSON of the `/fake/*` control endpoints, a prefix the real API never uses.

use serde::{Deserialize, Serialize};

use crate::model::{Faults, HostModel};
use crate::wire::{UpdateCommand, UpdateState};

/// `GET /fake/state`: what a process-level test needs to see of the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The running version.
    pub running_version: String,
    /// The update state; `null` while the status is absent.
    pub update_state: Option<UpdateState>,
    /// The command whose work holds the update lock, if any.
    pub busy_with: Option<UpdateCommand>,
    /// Accepted reboot requests since start.
    pub reboot_requests: usize,
    /// Boots since start.
    pub boots: usize,
    /// Whether the host is down after a reboot request.
    pub down: bool,
    /// The faults in force.
    pub faults: Faults,
    /// The published versions.
    pub published: Vec<String>,
}

impl HostSnapshot {
    /// The snapshot of `model` as it stands (the caller advances it first).
    pub fn of(model: &HostModel) -> HostSnapshot {
        HostSnapshot {
            running_version: model.running_version().to_string(),
            update_state: model.update_state(),
            busy_with: model.busy_with(),
            reboot_requests: model.reboot_requests(),
            boots: model.boots(),
            down: model.is_down(),
            faults: model.faults(),
            published: model.config().published.clone(),
        }
    }
}

/// `POST /fake/faults`: the faults to change; absent fields keep their value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    /// See [`Faults::refresh_fails`].
    pub refresh_fails: Option<bool>,
    /// See [`Faults::prepare_fails`].
    pub prepare_fails: Option<bool>,
    /// See [`Faults::activate_fails`].
    pub activate_fails: Option<bool>,
    /// See [`Faults::reboot_refused`].
    pub reboot_refused: Option<bool>,
    /// See [`Faults::rollback_on_boot`].
    pub rollback_on_boot: Option<bool>,
    /// See [`Faults::malformed_status`].
    pub malformed_status: Option<bool>,
    /// See [`Faults::deactivate_fails`].
    pub deactivate_fails: Option<bool>,
    /// See [`Faults::api_errors`].
    pub api_errors: Option<bool>,
    /// See [`Faults::api_errors_after_boot`], in milliseconds.
    pub api_errors_after_boot_ms: Option<u64>,
}

impl FaultsPatch {
    /// `faults` with the fields this patch names replaced.
    pub fn apply(&self, faults: Faults) -> Faults {
        Faults {
            refresh_fails: self.refresh_fails.unwrap_or(faults.refresh_fails),
            prepare_fails: self.prepare_fails.unwrap_or(faults.prepare_fails),
            activate_fails: self.activate_fails.unwrap_or(faults.activate_fails),
            reboot_refused: self.reboot_refused.unwrap_or(faults.reboot_refused),
            rollback_on_boot: self.rollback_on_boot.unwrap_or(faults.rollback_on_boot),
            malformed_status: self.malformed_status.unwrap_or(faults.malformed_status),
            deactivate_fails: self.deactivate_fails.unwrap_or(faults.deactivate_fails),
            api_errors: self.api_errors.unwrap_or(faults.api_errors),
            api_errors_after_boot: self
                .api_errors_after_boot_ms
                .map_or(faults.api_errors_after_boot, std::time::Duration::from_millis),
        }
    }
}
