//! [`FakeHost`]: a cheap-to-clone, thread-safe handle on one host model, with the control API
//! tests use and [`FakeHost::handle`], the entry point every transport goes through.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::control::HostSnapshot;
use crate::model::{CommandDurations, Faults, HostConfig, HostModel};
use crate::routes::{self, FakeResponse};
use crate::wire::{OsRelease, UpdateCommand, UpdateState, UpdateStatus};

/// The most requests the log keeps; older entries are dropped first.
pub const REQUEST_LOG_LIMIT: usize = 10_000;

/// One fake Bottlerocket host. Clones share the host.
#[derive(Clone, Debug)]
pub struct FakeHost {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    model: HostModel,
    requests: VecDeque<String>,
}

impl FakeHost {
    /// A freshly booted host.
    pub fn new(config: HostConfig) -> FakeHost {
        let model = HostModel::new(config, Instant::now());
        FakeHost { inner: Arc::new(Mutex::new(Inner { model, requests: VecDeque::new() })) }
    }

    /// Answer `method path_and_query` with an empty request body; [`FakeResponse::no_answer`]
    /// while the host is down.
    pub fn handle(&self, method: &str, path_and_query: &str) -> FakeResponse {
        self.request(method, path_and_query, b"").unwrap_or_else(FakeResponse::no_answer)
    }

    /// Answer one request, or `None` while the host is down (nothing listens during a reboot).
    /// API requests are logged; `/fake/*` control requests are not.
    pub fn request(&self, method: &str, path_and_query: &str, body: &[u8]) -> Option<FakeResponse> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.model.advance(now);
        if inner.model.is_down() {
            tracing::debug!(method, path = path_and_query, "no answer: host is down");
            return None;
        }
        if !routes::is_control(path_and_query) {
            inner.log(format!("{method} {path_and_query}"));
        }
        let response = routes::route(&mut inner.model, now, method, path_and_query, body);
        tracing::debug!(method, path = path_and_query, status = response.status, "answered");
        Some(response)
    }

    /// The requests received so far, as `"METHOD path?query"`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Forget the logged requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The running version (`GET /os` `version_id`).
    pub fn running_version(&self) -> String {
        self.with(|m| m.running_version().to_string())
    }

    /// The update state; `None` while the status is absent (after boot, before any command).
    pub fn update_state(&self) -> Option<UpdateState> {
        self.with(|m| m.update_state())
    }

    /// The stored status, even while the lock hides it from `GET /updates/status`.
    pub fn status(&self) -> Option<UpdateStatus> {
        self.with(|m| m.status().cloned())
    }

    /// The command whose work holds the update lock, if any.
    pub fn busy_with(&self) -> Option<UpdateCommand> {
        self.with(|m| m.busy_with())
    }

    /// When the current command's work ends, if one runs.
    pub fn work_ends_at(&self) -> Option<Instant> {
        self.with(|m| m.work_ends_at())
    }

    /// Whether the host is down after an accepted reboot.
    pub fn is_down(&self) -> bool {
        self.with(|m| m.is_down())
    }

    /// Accepted reboot requests since creation.
    pub fn reboot_requests(&self) -> usize {
        self.with(|m| m.reboot_requests())
    }

    /// Boots since creation.
    pub fn boots(&self) -> usize {
        self.with(|m| m.boots())
    }

    /// Boot now: a `Ready` host comes up on the staged version (unless rolling back); the status
    /// is gone and the lock free.
    pub fn boot(&self) {
        let now = Instant::now();
        self.lock().model.boot(now);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.with(|m| m.faults())
    }

    /// Replace the faults (work that already ended keeps its result).
    pub fn set_faults(&self, faults: Faults) {
        let now = Instant::now();
        self.lock().model.set_faults(faults, now);
    }

    /// Replace the published versions.
    pub fn publish<S: Into<String>>(&self, versions: impl IntoIterator<Item = S>) {
        let versions = versions.into_iter().map(Into::into).collect();
        let now = Instant::now();
        self.lock().model.publish(versions, now);
    }

    /// Replace the command durations (work already started keeps its end).
    pub fn set_durations(&self, durations: CommandDurations) {
        self.with(|m| m.set_durations(durations));
    }

    /// `GET /os` as a value.
    pub fn os_release(&self) -> OsRelease {
        self.with(|m| m.os_release())
    }

    /// What `GET /fake/state` reports.
    pub fn snapshot(&self) -> HostSnapshot {
        self.with(|m| HostSnapshot::of(m))
    }

    /// Run `f` on the model brought up to now.
    fn with<R>(&self, f: impl FnOnce(&mut HostModel) -> R) -> R {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.model.advance(now);
        f(&mut inner.model)
    }

    /// The model stays consistent across a panicking test thread, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn log(&mut self, line: String) {
        if self.requests.len() >= REQUEST_LOG_LIMIT {
            self.requests.pop_front();
        }
        self.requests.push_back(line);
    }
}
