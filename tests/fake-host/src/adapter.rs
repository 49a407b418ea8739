//! The agent's [`OsApi`] over a [`FakeHost`] in memory, mapping each answer to the trait's types
//! exactly as a correct HTTP client does, so the fleet simulation needs no sockets.
//!
//! Bodies go through the agent's own types, parsed from the fake's JSON text: a client-side
//! schema mistake fails here just as it would against a real host.

use agent::os_api::{
    Action, ActionReply, Commit, OsApi, OsApiError, OsInfo, StatusRead, UpdateSettings, UpdateStatus, UpdatesPatch,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::host::FakeHost;
use crate::routes::FakeResponse;

/// The settings request the agent makes.
pub const SETTINGS_PATH: &str =
    "/settings?keys=settings.updates.seed,settings.updates.version-lock,settings.updates.ignore-waves";

/// The longest body kept in an error.
const ERROR_BODY_LIMIT: usize = 4096;

/// `GET /settings` answers without the `settings` wrapper.
#[derive(Deserialize)]
struct SettingsBody {
    #[serde(default)]
    updates: UpdateSettings,
}

impl OsApi for FakeHost {
    async fn os_info(&self) -> Result<OsInfo, OsApiError> {
        let request = "GET /os";
        let response = self.exchange("GET", "/os")?;
        match response.status {
            200 => parse(request, &response),
            _ => Err(unexpected(request, &response)),
        }
    }

    async fn update_settings(&self) -> Result<UpdateSettings, OsApiError> {
        let request = format!("GET {SETTINGS_PATH}");
        let response = self.exchange("GET", SETTINGS_PATH)?;
        match response.status {
            200 => parse::<SettingsBody>(&request, &response).map(|b| b.updates),
            _ => Err(unexpected(&request, &response)),
        }
    }

    async fn update_status(&self) -> Result<StatusRead, OsApiError> {
        let request = "GET /updates/status";
        let response = self.exchange("GET", "/updates/status")?;
        match response.status {
            200 => parse::<UpdateStatus>(request, &response).map(StatusRead::Status),
            423 => Ok(StatusRead::Busy),
            404 => Ok(StatusRead::Uninitialized),
            _ => Err(unexpected(request, &response)),
        }
    }

    async fn action(&self, action: Action) -> Result<ActionReply, OsApiError> {
        let request = format!("POST {}", action.path());
        let response = self.exchange("POST", action.path())?;
        match response.status {
            204 => Ok(ActionReply::Started),
            423 => Ok(ActionReply::Busy),
            409 => Ok(ActionReply::NotAllowed),
            404 => Ok(ActionReply::NotFound(response.body)),
            _ => Err(unexpected(&request, &response)),
        }
    }

    async fn patch_updates(&self, tx: &str, patch: &UpdatesPatch) -> Result<(), OsApiError> {
        let path = format!("/settings?tx={tx}");
        let response = self.exchange_with("PATCH", &path, patch.body().to_string().as_bytes())?;
        match response.status {
            204 => Ok(()),
            _ => Err(unexpected(&format!("PATCH {path}"), &response)),
        }
    }

    async fn commit_and_apply(&self, tx: &str) -> Result<Commit, OsApiError> {
        let path = format!("/tx/commit_and_apply?tx={tx}");
        let request = format!("POST {path}");
        let response = self.exchange("POST", &path)?;
        match response.status {
            200 => parse::<Vec<String>>(&request, &response).map(Commit::Applied),
            422 => Ok(Commit::NothingPending),
            _ => Err(unexpected(&request, &response)),
        }
    }
}

impl FakeHost {
    /// One request; a down host is a transport failure that never reached the server.
    fn exchange(&self, method: &str, path: &str) -> Result<FakeResponse, OsApiError> {
        self.exchange_with(method, path, b"")
    }

    /// One request with a body.
    fn exchange_with(&self, method: &str, path: &str, body: &[u8]) -> Result<FakeResponse, OsApiError> {
        self.request(method, path, body).ok_or_else(|| OsApiError::Transport {
            request: format!("{method} {path}"),
            reason: "connection refused: host is rebooting".to_string(),
            maybe_sent: false,
        })
    }
}

fn parse<T: DeserializeOwned>(request: &str, response: &FakeResponse) -> Result<T, OsApiError> {
    serde_json::from_str(&response.body).map_err(|e| OsApiError::Malformed {
        request: request.to_string(),
        reason: e.to_string(),
        body: truncated(&response.body),
    })
}

fn unexpected(request: &str, response: &FakeResponse) -> OsApiError {
    OsApiError::Status {
        request: request.to_string(),
        status: response.status,
        body: truncated(&response.body),
    }
}

fn truncated(body: &str) -> String {
    body.chars().take(ERROR_BODY_LIMIT).collect()
}
