//! HTTP semantics, in one place: which route answers what status, body and content type.
//!
//! As apiserver (actix-web 4) answers: a wrong method on a real route and an unknown path both get
//! an empty 404 (no 405); error bodies are plain text without a content type; JSON bodies are
//! `application/json`; a 204 has no body. Query strings on the action routes are ignored.

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::control::{FaultsPatch, HostSnapshot};
use crate::model::{CommandReply, HostModel, RebootReply, StatusReply};
use crate::wire::UpdateCommand;

/// The JSON content type apiserver sends.
pub const JSON: &str = "application/json";

/// Body of `GET /updates/status` while the lock is held (the io error is EWOULDBLOCK's text).
pub const STATUS_LOCKED_BODY: &str =
    "Unable to obtain shared lock for reading update status: Resource temporarily unavailable (os error 11)";
/// Body of `GET /updates/status` before any command since boot.
pub const STATUS_UNINITIALIZED_BODY: &str =
    "Update status is uninitialized, refresh-updates to initialize it";
/// Body of an update POST while the lock is held.
pub const LOCK_HELD_BODY: &str = "Update lock held";
/// Body of a 409.
pub const NOT_ALLOWED_BODY: &str = "Update action not allowed according to update state";
/// Body of prepare's 404.
pub const NO_CHOSEN_UPDATE_BODY: &str = "Previously chosen Update no longer exists";
/// Body of activate's and deactivate's 404.
pub const NO_STAGED_IMAGE_BODY: &str = "No update image applied to staging partition";

/// One HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeResponse {
    /// The status code (0 only for [`FakeResponse::no_answer`]).
    pub status: u16,
    /// `Content-Type`, absent for plain-text errors and empty bodies.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: String,
}

impl FakeResponse {
    /// An answer with no body (204, or actix's empty 404).
    pub fn empty(status: u16) -> FakeResponse {
        FakeResponse { status, content_type: None, body: String::new() }
    }
    /// A plain-text answer without a content type, as apiserver's errors are.
    pub fn text(status: u16, body: impl Into<String>) -> FakeResponse {
        FakeResponse { status, content_type: None, body: body.into() }
    }
    /// A JSON answer.
    pub fn json(status: u16, value: &impl Serialize) -> FakeResponse {
        match serde_json::to_string(value) {
            Ok(body) => FakeResponse { status, content_type: Some(JSON), body },
            Err(e) => FakeResponse::text(500, format!("Unable to serialize response: {e}")),
        }
    }
    /// What a host that is down "answers": nothing (status 0); a socket server closes instead.
    pub fn no_answer() -> FakeResponse {
        FakeResponse::empty(0)
    }
    /// Whether this is a real HTTP answer (the host was up).
    pub fn is_answer(&self) -> bool {
        self.status != 0
    }
    /// The body parsed as JSON of type `T`.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// Whether `path` belongs to the control endpoints rather than the emulated API.
pub fn is_control(path_and_query: &str) -> bool {
    path_and_query.starts_with("/fake/")
}

/// A route's answer: model, time, query string, request body.
type Handler = fn(&mut HostModel, Instant, &str, &[u8]) -> FakeResponse;

/// Answer `method path_and_query` (with request `body`) on `model` at `now`.
pub fn route(model: &mut HostModel, now: Instant, method: &str, path_and_query: &str, body: &[u8]) -> FakeResponse {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    // The one path with two methods.
    let path_key = if (method, path) == ("PATCH", "/settings") { "PATCH /settings" } else { path };
    let (want, answer): (&str, Handler) = match path_key {
        "/os" => ("GET", |m, _, q, _| os(m, q)),
        "/settings" => ("GET", |m, _, q, _| settings(m, q)),
        "PATCH /settings" => ("PATCH", |m, _, q, b| patch_settings(m, q, b)),
        "/tx/commit_and_apply" => ("POST", |m, now, q, _| commit_and_apply(m, now, q)),
        "/updates/status" => ("GET", |m, now, _, _| status(m, now)),
        "/actions/refresh-updates" => ("POST", |m, now, _, _| command(m, now, UpdateCommand::Refresh)),
        "/actions/prepare-update" => ("POST", |m, now, _, _| command(m, now, UpdateCommand::Prepare)),
        "/actions/activate-update" => ("POST", |m, now, _, _| command(m, now, UpdateCommand::Activate)),
        "/actions/deactivate-update" => ("POST", |m, now, _, _| command(m, now, UpdateCommand::Deactivate)),
        "/actions/reboot" => ("POST", |m, now, _, _| reboot(m, now)),
        "/fake/state" => ("GET", |m, now, _, _| fake_state(m, now)),
        "/fake/boot" => ("POST", |m, now, _, _| fake_boot(m, now)),
        "/fake/faults" => ("POST", fake_faults),
        "/fake/publish" => ("POST", fake_publish),
        _ => return FakeResponse::empty(404),
    };
    if method != want {
        return FakeResponse::empty(404);
    }
    if model.api_failing(now) && !is_control(path) {
        return FakeResponse::text(500, "Internal server error (injected fault)");
    }
    answer(model, now, query, body)
}

fn os(model: &HostModel, query: &str) -> FakeResponse {
    let release = model.os_release();
    let Some(prefix) = query_param(query, "prefix") else {
        return FakeResponse::json(200, &release);
    };
    if prefix.is_empty() {
        return FakeResponse::text(400, "Input error: prefix must not be empty");
    }
    let wanted = if prefix.starts_with("os.") { prefix } else { format!("os.{prefix}") };
    let Ok(Value::Object(fields)) = serde_json::to_value(&release) else {
        return FakeResponse::text(500, "Unable to serialize OS release");
    };
    let matching: Map<String, Value> =
        fields.into_iter().filter(|(name, _)| format!("os.{name}").starts_with(&wanted)).collect();
    FakeResponse::json(200, &matching)
}

/// `GET /settings`: `keys` (exact leaf keys) wins over `prefix`; missing keys are skipped.
fn settings(model: &HostModel, query: &str) -> FakeResponse {
    let leaves = model.settings();
    let selected: Vec<(&str, Value)> = if let Some(keys) = query_param(query, "keys") {
        let asked: Vec<&str> = keys.split(',').map(str::trim).collect();
        leaves.into_iter().filter(|(key, _)| asked.contains(key)).collect()
    } else if let Some(prefix) = query_param(query, "prefix") {
        if prefix.is_empty() {
            return FakeResponse::text(400, "Input error: prefix must not be empty");
        }
        let wanted = if prefix.starts_with("settings.") { prefix } else { format!("settings.{prefix}") };
        leaves.into_iter().filter(|(key, _)| key.starts_with(&wanted)).collect()
    } else {
        leaves
    };
    FakeResponse::json(200, &nest(selected))
}

/// `PATCH /settings?tx=NAME` (the transaction is `default` when `tx` is absent): 204.
fn patch_settings(model: &mut HostModel, query: &str, body: &[u8]) -> FakeResponse {
    let tx = query_param(query, "tx").unwrap_or_else(|| "default".into());
    match model.patch_settings(&tx, body) {
        Ok(()) => FakeResponse::empty(204),
        Err(r) => FakeResponse::text(r.status, r.body),
    }
}

/// `POST /tx/commit_and_apply?tx=NAME`: 200 with the committed keys, 422 with none pending.
fn commit_and_apply(model: &mut HostModel, now: Instant, query: &str) -> FakeResponse {
    let tx = query_param(query, "tx").unwrap_or_else(|| "default".into());
    match model.commit_settings(&tx, now) {
        Ok(keys) => FakeResponse::json(200, &keys),
        Err(r) => FakeResponse::text(r.status, r.body),
    }
}

/// `settings.a.b = v` leaves as `{"a":{"b":v}}` (the `settings` wrapper is dropped).
fn nest(leaves: Vec<(&str, Value)>) -> Value {
    let mut root = Map::new();
    for (key, value) in leaves {
        let path: Vec<&str> = key.split('.').skip(1).collect();
        insert_path(&mut root, &path, value);
    }
    Value::Object(root)
}

fn insert_path(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = entry {
                insert_path(child, rest, value);
            }
        }
    }
}

fn status(model: &mut HostModel, now: Instant) -> FakeResponse {
    match model.read_status(now) {
        StatusReply::Status(status) => FakeResponse::json(200, &*status),
        StatusReply::Malformed(body) => FakeResponse { status: 200, content_type: Some(JSON), body },
        StatusReply::LockHeld => FakeResponse::text(423, STATUS_LOCKED_BODY),
        StatusReply::Uninitialized => FakeResponse::text(404, STATUS_UNINITIALIZED_BODY),
    }
}

fn command(model: &mut HostModel, now: Instant, command: UpdateCommand) -> FakeResponse {
    match model.command(command, now) {
        CommandReply::Started => FakeResponse::empty(204),
        CommandReply::LockHeld => FakeResponse::text(423, LOCK_HELD_BODY),
        CommandReply::NotAllowed => FakeResponse::text(409, NOT_ALLOWED_BODY),
        CommandReply::NoChosenUpdate => FakeResponse::text(404, NO_CHOSEN_UPDATE_BODY),
        CommandReply::NoStagedImage => FakeResponse::text(404, NO_STAGED_IMAGE_BODY),
    }
}

fn reboot(model: &mut HostModel, now: Instant) -> FakeResponse {
    match model.reboot(now) {
        RebootReply::Accepted => FakeResponse::empty(204),
        RebootReply::Refused(message) => FakeResponse::text(500, message),
    }
}

fn fake_state(model: &mut HostModel, now: Instant) -> FakeResponse {
    model.advance(now);
    FakeResponse::json(200, &HostSnapshot::of(model))
}

fn fake_boot(model: &mut HostModel, now: Instant) -> FakeResponse {
    model.boot(now);
    FakeResponse::empty(204)
}

fn fake_faults(model: &mut HostModel, now: Instant, _query: &str, body: &[u8]) -> FakeResponse {
    match serde_json::from_slice::<FaultsPatch>(body) {
        Ok(patch) => {
            let faults = patch.apply(model.faults());
            model.set_faults(faults, now);
            FakeResponse::json(200, &faults)
        }
        Err(e) => FakeResponse::text(400, format!("Invalid faults: {e}")),
    }
}

fn fake_publish(model: &mut HostModel, now: Instant, _query: &str, body: &[u8]) -> FakeResponse {
    match serde_json::from_slice::<Vec<String>>(body) {
        Ok(versions) => {
            model.publish(versions, now);
            FakeResponse::empty(204)
        }
        Err(e) => FakeResponse::text(400, format!("Invalid version list: {e}")),
    }
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// `%XX` and `+` decoding; malformed escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "keys=settings.updates.seed%2Csettings.updates.version-lock&prefix=x";
        assert_eq!(
            query_param(q, "keys").as_deref(),
            Some("settings.updates.seed,settings.updates.version-lock")
        );
        assert_eq!(query_param(q, "prefix").as_deref(), Some("x"));
        assert_eq!(query_param(q, "tx"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn nesting_drops_the_settings_wrapper() {
        let v = nest(vec![("settings.updates.seed", 5.into()), ("settings.updates.ignore-waves", true.into())]);
        assert_eq!(v, serde_json::json!({"updates": {"seed": 5, "ignore-waves": true}}));
    }
}
