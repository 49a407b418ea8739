//! The JSON the host answers with, spelled as apiserver and thar-be-updates serialise it.
//!
//! These types are the fake's own, written from the API reference rather than borrowed from the
//! agent, so a wrong field name in a client cannot be mirrored here and pass unnoticed. Field
//! order is the serialisation order of the real structs (snake_case, no renames).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// `update_state`: the update state machine's state (no serde rename upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateState {
    /// No update chosen.
    Idle,
    /// An update is chosen and may be prepared.
    Available,
    /// An update is written to the staging partition set.
    Staged,
    /// The staged update boots next.
    Ready,
}

/// An update image: what `chosen_update` and each partition name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateImage {
    /// The architecture, e.g. `x86_64`.
    pub arch: String,
    /// The version, without a leading `v`.
    pub version: String,
    /// The variant, e.g. `aws-ecs-2`.
    pub variant: String,
}

/// One partition set: its image and whether it boots next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImage {
    /// What the set holds.
    pub image: Option<UpdateImage>,
    /// Whether the bootloader picks this set next.
    pub next_to_boot: bool,
}

/// `cmd_type`: the update command (kebab-case upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateCommand {
    /// `POST /actions/refresh-updates`.
    Refresh,
    /// `POST /actions/prepare-update`.
    Prepare,
    /// `POST /actions/activate-update`.
    Activate,
    /// `POST /actions/deactivate-update`.
    Deactivate,
}

/// `cmd_status`: how a command ended (`Unknown` exists upstream but is never set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// updog exited 0.
    Success,
    /// updog failed; `stderr` says why.
    Failed,
}

/// `most_recent_command`: the last command whose work ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Which command.
    pub cmd_type: UpdateCommand,
    /// How it ended.
    pub cmd_status: CommandStatus,
    /// When it ended, RFC 3339 with chrono's fraction (trailing zero groups dropped).
    #[serde(serialize_with = "rfc3339_auto")]
    pub timestamp: DateTime<Utc>,
    /// updog's exit status.
    pub exit_status: Option<i32>,
    /// updog's stderr.
    pub stderr: Option<String>,
}

/// `GET /updates/status` (200): thar-be-updates' status file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The state machine's state.
    pub update_state: UpdateState,
    /// Every published version, newest first (may include older ones than the running one).
    pub available_updates: Vec<String>,
    /// The update `prepare` would stage.
    pub chosen_update: Option<UpdateImage>,
    /// The running partition set.
    pub active_partition: Option<StagedImage>,
    /// The other partition set, once something was staged there.
    pub staging_partition: Option<StagedImage>,
    /// The last command that ended; `null` when a refused command initialised the status.
    pub most_recent_command: Option<CommandResult>,
}

/// `GET /os`: the running release (snake_case, no wrapper).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// Human-readable name with version and variant.
    pub pretty_name: String,
    /// The variant, e.g. `aws-ecs-2`.
    pub variant_id: String,
    /// The running version.
    pub version_id: String,
    /// The build hash.
    pub build_id: String,
    /// The architecture.
    pub arch: String,
}

fn rfc3339_auto<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_nanoseconds_and_drop_zero_groups_like_chrono() {
        let at = |nanos| DateTime::from_timestamp(1_594_363_372, nanos).expect("valid instant");
        let text = |nanos| {
            let cmd = CommandResult {
                cmd_type: UpdateCommand::Deactivate,
                cmd_status: CommandStatus::Success,
                timestamp: at(nanos),
                exit_status: Some(0),
                stderr: Some(String::new()),
            };
            serde_json::to_value(cmd).expect("serialises")["timestamp"].clone()
        };
        assert_eq!(text(284_285_751), "2020-07-10T06:42:52.284285751Z");
        assert_eq!(text(284_000_000), "2020-07-10T06:42:52.284Z");
        assert_eq!(text(0), "2020-07-10T06:42:52Z");
    }

    #[test]
    fn command_types_are_kebab_case_and_states_are_capitalised() {
        assert_eq!(serde_json::to_value(UpdateCommand::Refresh).expect("ser"), "refresh");
        assert_eq!(serde_json::to_value(UpdateCommand::Deactivate).expect("ser"), "deactivate");
        assert_eq!(serde_json::to_value(UpdateState::Available).expect("ser"), "Available");
        assert_eq!(serde_json::to_value(CommandStatus::Failed).expect("ser"), "Failed");
    }
}
