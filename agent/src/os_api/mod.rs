//! The local Bottlerocket API (apiserver on `/run/api.sock`), as the agent needs it.
//!
//! The trait is deliberately raw: one method per endpoint, answering with what the server said
//! (started, busy, not allowed, ...), not with what the agent should do about it. The semantics
//! that take several requests (wait for a command to finish, retry while the update lock is held)
//! live in [`commands`], written once over the trait, so they run the same against the real socket,
//! the fake host served on a socket, and the in-memory hosts of the fleet simulation.
//!
//! Field names follow apiserver's serde structs (snake_case), not `openapi.yaml` (kebab-case).

pub mod commands;
pub mod http;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /os`: the running OS release. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// The running version, e.g. `1.26.1`.
    pub version_id: String,
    /// The variant, e.g. `aws-ecs-2`.
    #[serde(default)]
    pub variant_id: String,
    /// The architecture, e.g. `x86_64`.
    #[serde(default)]
    pub arch: String,
    /// The human-readable name.
    #[serde(default)]
    pub pretty_name: Option<String>,
    /// The build hash.
    #[serde(default)]
    pub build_id: Option<String>,
}

/// The `settings.updates.*` keys the agent reads (`GET /settings?keys=...`). Missing keys are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSettings {
    /// `settings.updates.seed`: the host's wave seed, normally 0..2048.
    #[serde(default)]
    pub seed: Option<u32>,
    /// `settings.updates.version-lock`: `latest` or a version.
    #[serde(default, rename = "version-lock")]
    pub version_lock: Option<String>,
    /// `settings.updates.ignore-waves`.
    #[serde(default, rename = "ignore-waves")]
    pub ignore_waves: Option<bool>,
}

/// `update_state` of the update status; spelled as apiserver spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateState {
    /// No update chosen.
    Idle,
    /// An update is chosen and may be prepared.
    Available,
    /// An update is written to the inactive partition set.
    Staged,
    /// The staged update will boot next.
    Ready,
}

/// An update image: what `chosen_update` and the partitions name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateImage {
    /// The architecture.
    #[serde(default)]
    pub arch: String,
    /// The version.
    pub version: String,
    /// The variant.
    #[serde(default)]
    pub variant: String,
}

/// One partition set of the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImage {
    /// What it holds; `null` when unknown.
    #[serde(default)]
    pub image: Option<UpdateImage>,
    /// Whether it boots next.
    #[serde(default)]
    pub next_to_boot: bool,
}

/// `most_recent_command.cmd_type`. Values this agent does not know are kept, not rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandType {
    /// `refresh`
    Refresh,
    /// `prepare`
    Prepare,
    /// `activate`
    Activate,
    /// `deactivate`
    Deactivate,
    /// Anything newer.
    #[serde(untagged)]
    Other(String),
}

/// `most_recent_command.cmd_status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// The command succeeded.
    Success,
    /// The command failed; `stderr` says why.
    Failed,
    /// Defined by apiserver, never set by current code; treated as not successful.
    Unknown,
    /// Anything newer.
    #[serde(untagged)]
    Other(String),
}

/// `most_recent_command`: the last update command the host ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Which command.
    pub cmd_type: CommandType,
    /// How it ended.
    pub cmd_status: CommandStatus,
    /// When it ended (RFC 3339 with 0, 3, 6 or 9 fractional digits); compared as instants.
    pub timestamp: DateTime<Utc>,
    /// Its exit status, or the signal that killed it.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// updog's stderr.
    #[serde(default)]
    pub stderr: Option<String>,
}

/// `GET /updates/status` (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The update state machine's state.
    pub update_state: UpdateState,
    /// Every version the host could move to, newest first (may include older ones).
    #[serde(default)]
    pub available_updates: Vec<String>,
    /// The update `prepare` would stage, honouring version-lock and waves.
    #[serde(default)]
    pub chosen_update: Option<UpdateImage>,
    /// The running partition set.
    #[serde(default)]
    pub active_partition: Option<StagedImage>,
    /// The other partition set, when something is staged there.
    #[serde(default)]
    pub staging_partition: Option<StagedImage>,
    /// The last command; `null` after an initialisation by a refused command.
    #[serde(default)]
    pub most_recent_command: Option<CommandResult>,
}

impl UpdateStatus {
    /// The version of the chosen update, if any.
    pub fn chosen_version(&self) -> Option<&str> {
        self.chosen_update.as_ref().map(|u| u.version.as_str())
    }
    /// The version held by the staging partition, if any.
    pub fn staged_version(&self) -> Option<&str> {
        self.staging_partition.as_ref()?.image.as_ref().map(|i| i.version.as_str())
    }
}

/// What `GET /updates/status` answered.
// Read a few times per command; boxing the status would cost more than the size difference.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusRead {
    /// 200 with a status.
    Status(UpdateStatus),
    /// 423: a command holds the update lock.
    Busy,
    /// 404: no command since boot (the status lives in tmpfs).
    Uninitialized,
}

/// A `POST /actions/...` endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `refresh-updates`
    Refresh,
    /// `prepare-update`
    Prepare,
    /// `activate-update`
    Activate,
    /// `deactivate-update`
    Deactivate,
    /// `reboot`
    Reboot,
}

impl Action {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Action::Refresh => "/actions/refresh-updates",
            Action::Prepare => "/actions/prepare-update",
            Action::Activate => "/actions/activate-update",
            Action::Deactivate => "/actions/deactivate-update",
            Action::Reboot => "/actions/reboot",
        }
    }
    /// The `cmd_type` the status reports once this action's command ended (none for reboot).
    pub fn command_type(self) -> Option<CommandType> {
        match self {
            Action::Refresh => Some(CommandType::Refresh),
            Action::Prepare => Some(CommandType::Prepare),
            Action::Activate => Some(CommandType::Activate),
            Action::Deactivate => Some(CommandType::Deactivate),
            Action::Reboot => None,
        }
    }
    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Action::Refresh => "refresh",
            Action::Prepare => "prepare",
            Action::Activate => "activate",
            Action::Deactivate => "deactivate",
            Action::Reboot => "reboot",
        }
    }
}

/// What a `POST /actions/...` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionReply {
    /// 204: the command started (for reboot: systemctl accepted it). Not "done".
    Started,
    /// 423: another command holds the update lock.
    Busy,
    /// 409: not allowed in the current update state.
    NotAllowed,
    /// 404: no chosen update (prepare) or nothing staged (activate, deactivate); body kept.
    NotFound(String),
}

/// The `settings.updates.*` values a settings transaction writes (`PATCH /settings?tx=...`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesPatch {
    /// `settings.updates.version-lock`: `latest` or a version.
    #[serde(rename = "version-lock")]
    pub version_lock: String,
    /// `settings.updates.ignore-waves`.
    #[serde(rename = "ignore-waves")]
    pub ignore_waves: bool,
}

impl UpdatesPatch {
    /// The request body: apiserver takes the settings object without the `settings` wrapper.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "updates": self })
    }
}

/// What `POST /tx/commit_and_apply?tx=...` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// 200: committed; the keys that changed. Applying them (re-rendering config files such as
    /// updog's) happens shortly after, in the background.
    Applied(Vec<String>),
    /// 422: the transaction held nothing (already committed, say).
    NothingPending,
}

/// A failure talking to the API, typed by what went wrong; every variant names the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OsApiError {
    /// The request could not be sent or its answer not read (socket missing, refused, closed).
    #[error("{request}: transport error: {reason}")]
    Transport {
        /// Method and path.
        request: String,
        /// What failed.
        reason: String,
        /// Whether the request may have reached the server (then a POST must not be blindly resent).
        maybe_sent: bool,
    },
    /// No answer within the per-request timeout.
    #[error("{request}: no answer within {timeout_ms} ms")]
    Timeout {
        /// Method and path.
        request: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A status code the endpoint does not define here (5xx, 400, ...), with the body.
    #[error("{request}: HTTP {status}: {body}")]
    Status {
        /// Method and path.
        request: String,
        /// HTTP status code.
        status: u16,
        /// Response body (plain text from apiserver).
        body: String,
    },
    /// A 200 whose body is not the documented JSON.
    #[error("{request}: malformed response ({reason}): {body}")]
    Malformed {
        /// Method and path.
        request: String,
        /// The parse error.
        reason: String,
        /// The body as received (truncated to a few KiB).
        body: String,
    },
}

impl OsApiError {
    /// Whether trying again later can help (the server or socket may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            OsApiError::Transport { .. } | OsApiError::Timeout { .. } => true,
            OsApiError::Status { status, .. } => *status >= 500,
            OsApiError::Malformed { .. } => false,
        }
    }
}

/// The Bottlerocket API endpoints the agent uses, one method per request.
///
/// Implementations: [`http::HttpOsApi`] over the Unix socket; the fake host's in-memory adapter.
pub trait OsApi {
    /// `GET /os`.
    fn os_info(&self) -> impl Future<Output = Result<OsInfo, OsApiError>>;
    /// `GET /settings?keys=settings.updates.seed,settings.updates.version-lock,settings.updates.ignore-waves`.
    fn update_settings(&self) -> impl Future<Output = Result<UpdateSettings, OsApiError>>;
    /// `GET /updates/status`.
    fn update_status(&self) -> impl Future<Output = Result<StatusRead, OsApiError>>;
    /// `POST` one of `/actions/*`, with an empty body.
    fn action(&self, action: Action) -> impl Future<Output = Result<ActionReply, OsApiError>>;
    /// `PATCH /settings?tx=TX` with `settings.updates` values (204: pending in that transaction).
    fn patch_updates(&self, tx: &str, patch: &UpdatesPatch) -> impl Future<Output = Result<(), OsApiError>>;
    /// `POST /tx/commit_and_apply?tx=TX`.
    fn commit_and_apply(&self, tx: &str) -> impl Future<Output = Result<Commit, OsApiError>>;
}

impl<T: OsApi> OsApi for &T {
    fn os_info(&self) -> impl Future<Output = Result<OsInfo, OsApiError>> {
        (**self).os_info()
    }
    fn update_settings(&self) -> impl Future<Output = Result<UpdateSettings, OsApiError>> {
        (**self).update_settings()
    }
    fn update_status(&self) -> impl Future<Output = Result<StatusRead, OsApiError>> {
        (**self).update_status()
    }
    fn action(&self, action: Action) -> impl Future<Output = Result<ActionReply, OsApiError>> {
        (**self).action(action)
    }
    fn patch_updates(&self, tx: &str, patch: &UpdatesPatch) -> impl Future<Output = Result<(), OsApiError>> {
        (**self).patch_updates(tx, patch)
    }
    fn commit_and_apply(&self, tx: &str) -> impl Future<Output = Result<Commit, OsApiError>> {
        (**self).commit_and_apply(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_status_and_ignores_unknown_fields() {
        let body = r#"{"update_state":"Available","available_updates":["0.4.0","0.3.4"],
          "chosen_update":{"arch":"x86_64","version":"0.4.0","variant":"aws-k8s-1.15"},
          "active_partition":{"image":{"arch":"x86_64","version":"0.3.4","variant":"aws-k8s-1.15"},"next_to_boot":true},
          "staging_partition":null,"new_field":[1,2],
          "most_recent_command":{"cmd_type":"refresh","cmd_status":"Success","timestamp":"2020-07-10T06:42:52.284285751Z","exit_status":0,"stderr":""}}"#;
        let s: UpdateStatus = serde_json::from_str(body).expect("documented status parses");
        assert_eq!(s.update_state, UpdateState::Available);
        assert_eq!(s.chosen_version(), Some("0.4.0"));
        let cmd = s.most_recent_command.expect("command present");
        assert_eq!(cmd.cmd_type, CommandType::Refresh);
        assert_eq!(cmd.cmd_status, CommandStatus::Success);
        assert_eq!(cmd.timestamp.timestamp_subsec_nanos(), 284_285_751);
    }

    #[test]
    fn null_command_deactivate_unknown_and_short_fractions_parse() {
        let s: UpdateStatus =
            serde_json::from_str(r#"{"update_state":"Idle","most_recent_command":null}"#).expect("parses");
        assert!(s.most_recent_command.is_none());
        for (ts, nanos) in [("2024-01-01T00:00:00Z", 0), ("2024-01-01T00:00:00.5Z", 500_000_000),
            ("2024-01-01T00:00:00.123456Z", 123_456_000)] {
            let body = format!(
                r#"{{"update_state":"Staged","most_recent_command":{{"cmd_type":"deactivate","cmd_status":"Unknown","timestamp":"{ts}"}}}}"#
            );
            let s: UpdateStatus = serde_json::from_str(&body).expect("parses");
            let cmd = s.most_recent_command.expect("present");
            assert_eq!(cmd.cmd_type, CommandType::Deactivate);
            assert_eq!(cmd.cmd_status, CommandStatus::Unknown);
            assert_eq!(cmd.timestamp.timestamp_subsec_nanos(), nanos);
        }
    }

    #[test]
    fn unknown_state_is_an_error_not_a_guess() {
        assert!(serde_json::from_str::<UpdateStatus>(r#"{"update_state":"Exploded"}"#).is_err());
    }
}
