//! The host without I/O: apiserver plus thar-be-updates plus the partition sets, as a value.
//!
//! Every operation takes `now` (a `tokio::time::Instant`) instead of reading a clock, so the same
//! model runs behind a socket on real time and in a fleet simulation on paused time. No task runs
//! per command: a command's work "ends at" an instant, and the model finishes it lazily the next
//! time it is touched, stamping the result with the wall time at which the work really ended.
//!
//! The rules come from thar-be-updates: the update lock is taken first (423), a missing status is
//! then initialised (even for a command that is refused next), the transition table decides (409),
//! prepare needs a chosen update and activate/deactivate a staged image (404), and only then does
//! the work start. The state changes only when the work succeeds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::settings::{Refusal, SettingsStore, UpdaterSettings};
use crate::version;
use crate::waves::{self, WaveStart};
use crate::wire::{
    CommandResult, CommandStatus, OsRelease, StagedImage, UpdateCommand, UpdateImage, UpdateState,
    UpdateStatus,
};

/// How long each command's work holds the update lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDurations {
    /// `refresh-updates` (updog fetching metadata).
    pub refresh: Duration,
    /// `prepare-update` (updog writing the image).
    pub prepare: Duration,
    /// `activate-update`.
    pub activate: Duration,
    /// `deactivate-update`.
    pub deactivate: Duration,
}

impl CommandDurations {
    /// The same duration for every command (`Duration::ZERO` makes every command end at once).
    pub fn all(d: Duration) -> CommandDurations {
        CommandDurations { refresh: d, prepare: d, activate: d, deactivate: d }
    }
    /// The duration of `command`.
    pub fn of(&self, command: UpdateCommand) -> Duration {
        match command {
            UpdateCommand::Refresh => self.refresh,
            UpdateCommand::Prepare => self.prepare,
            UpdateCommand::Activate => self.activate,
            UpdateCommand::Deactivate => self.deactivate,
        }
    }
}

impl Default for CommandDurations {
    fn default() -> Self {
        CommandDurations {
            refresh: Duration::from_millis(200),
            prepare: Duration::from_secs(2),
            activate: Duration::from_millis(200),
            deactivate: Duration::from_millis(200),
        }
    }
}

/// Injected failures. Each is a level, not a one-shot: it holds until it is cleared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Refresh work ends Failed (Idle/Available drop to Idle; the lists are kept).
    pub refresh_fails: bool,
    /// Prepare work ends Failed (state unchanged).
    pub prepare_fails: bool,
    /// Activate work ends Failed (state unchanged).
    pub activate_fails: bool,
    /// `POST /actions/reboot` answers 500, as when a systemd inhibitor blocks it.
    pub reboot_refused: bool,
    /// A boot from `Ready` comes back on the old version (the new set failed its one try).
    pub rollback_on_boot: bool,
    /// A `GET /updates/status` that would answer 200 answers 200 with a body that does not parse.
    pub malformed_status: bool,
    /// Deactivate work ends Failed (the update stays active).
    pub deactivate_fails: bool,
    /// Every API request (not `/fake/*`) answers 500, as a new version whose apiserver is broken.
    pub api_errors: bool,
    /// After each boot, every API request answers 500 for this long (zero: never).
    pub api_errors_after_boot: Duration,
}

/// What an accepted reboot request does to reachability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RebootBehavior {
    /// Only recorded; the host stays up until something calls `boot()`.
    #[default]
    StayUp,
    /// The host goes down (unreachable) until something calls `boot()`.
    GoDown,
    /// The host goes down and boots by itself this long after the request.
    BootAfter(Duration),
}

/// Everything a host starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The running version at creation (`version_id`).
    pub version: String,
    /// `variant_id`, e.g. `aws-ecs-2`.
    pub variant: String,
    /// `arch`, e.g. `x86_64`.
    pub arch: String,
    /// The versions the update repository offers (any order; may include older ones).
    pub published: Vec<String>,
    /// `settings.updates.version-lock`: `latest` or a version (leading `v` allowed).
    pub version_lock: String,
    /// `settings.updates.seed`.
    pub seed: u32,
    /// `settings.updates.ignore-waves`: offer every published version whatever its waves.
    pub ignore_waves: bool,
    /// The waves of each published version (version → wave starts); a version without an
    /// entry is offered to every seed at once.
    pub waves: std::collections::BTreeMap<String, Vec<WaveStart>>,
    /// How long after a settings commit updog sees the change (apply runs in the background).
    pub settings_apply_delay: Duration,
    /// How long each command's work takes.
    pub durations: CommandDurations,
    /// Failures injected from the start.
    pub faults: Faults,
    /// What an accepted reboot does.
    pub reboot: RebootBehavior,
    /// What the host's wall clock reads at creation; `None` reads the system clock.
    pub wall_clock_start: Option<DateTime<Utc>>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            version: "1.26.0".to_string(),
            variant: "aws-ecs-2".to_string(),
            arch: "x86_64".to_string(),
            published: Vec::new(),
            version_lock: "latest".to_string(),
            seed: 1234,
            ignore_waves: false,
            waves: Default::default(),
            settings_apply_delay: Duration::from_millis(300),
            durations: CommandDurations::default(),
            faults: Faults::default(),
            reboot: RebootBehavior::default(),
            wall_clock_start: None,
        }
    }
}

/// How the update endpoints answered a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandReply {
    /// The work started (204).
    Started,
    /// Another command's work holds the update lock (423).
    LockHeld,
    /// The transition table forbids it in this state (409).
    NotAllowed,
    /// Prepare without a chosen update (404).
    NoChosenUpdate,
    /// Activate or deactivate without a staged image (404).
    NoStagedImage,
}

/// How `GET /updates/status` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusReply {
    /// No command since boot (404).
    Uninitialized,
    /// A command's work holds the lock (423).
    LockHeld,
    /// The status (200).
    Status(Box<UpdateStatus>),
    /// The "malformed status" fault: a 200 body that does not parse.
    Malformed(String),
}

/// How `POST /actions/reboot` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebootReply {
    /// systemctl accepted the reboot (204).
    Accepted,
    /// systemctl refused (500); the message is the response body.
    Refused(String),
}

/// Whether and until when the host is unreachable after a reboot request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Down {
    UntilBoot,
    BootAt(Instant),
}

/// Work in progress under the update lock.
#[derive(Clone, Debug)]
struct Work {
    command: UpdateCommand,
    ends_at: Instant,
    /// What prepare stages: the chosen update when the work started.
    target: Option<UpdateImage>,
}

/// One Bottlerocket host's API-visible state.
#[derive(Clone, Debug)]
pub struct HostModel {
    config: HostConfig,
    running: String,
    clock_base: Instant,
    wall_base: DateTime<Utc>,
    status: Option<UpdateStatus>,
    work: Option<Work>,
    last_timestamp: Option<DateTime<Utc>>,
    reboot_requests: usize,
    boots: usize,
    booted_at: Option<Instant>,
    down: Option<Down>,
    settings: SettingsStore,
}

impl HostModel {
    /// A freshly booted host (status absent, lock free) at `now`.
    pub fn new(config: HostConfig, now: Instant) -> HostModel {
        let wall_base = config.wall_clock_start.unwrap_or_else(Utc::now);
        let initial = UpdaterSettings {
            version_lock: config.version_lock.clone(),
            ignore_waves: config.ignore_waves,
            seed: config.seed,
        };
        HostModel {
            settings: SettingsStore::new(initial, config.settings_apply_delay),
            running: version::normalize(&config.version).to_string(),
            config,
            clock_base: now,
            wall_base,
            status: None,
            work: None,
            last_timestamp: None,
            reboot_requests: 0,
            boots: 0,
            booted_at: None,
            down: None,
        }
    }

    /// Finish whatever work (and self-boot) is due by `now`, in the order it happened.
    pub fn advance(&mut self, now: Instant) {
        if let Some(Down::BootAt(at)) = self.down {
            if at <= now {
                self.finish_work_by(at);
                self.boot_at(at);
            }
        }
        self.finish_work_by(now);
    }

    /// The running version (`version_id`).
    pub fn running_version(&self) -> &str {
        &self.running
    }

    /// The update state, `None` while the status is absent (after boot, before any command).
    pub fn update_state(&self) -> Option<UpdateState> {
        self.status.as_ref().map(|s| s.update_state)
    }

    /// The status as stored, even while the lock hides it from `GET /updates/status`.
    pub fn status(&self) -> Option<&UpdateStatus> {
        self.status.as_ref()
    }

    /// The command whose work holds the update lock, if any.
    pub fn busy_with(&self) -> Option<UpdateCommand> {
        self.work.as_ref().map(|w| w.command)
    }

    /// When the current work ends, if any (a simulation may sleep until then).
    pub fn work_ends_at(&self) -> Option<Instant> {
        self.work.as_ref().map(|w| w.ends_at)
    }

    /// Whether the host is down after an accepted reboot (callers keep it unreachable).
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }

    /// Accepted reboot requests since creation.
    pub fn reboot_requests(&self) -> usize {
        self.reboot_requests
    }

    /// Boots since creation.
    pub fn boots(&self) -> usize {
        self.boots
    }

    /// The configuration the host was created with (published list, faults and durations current).
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Whether API requests fail at `now` (the `api_errors` faults).
    pub fn api_failing(&self, now: Instant) -> bool {
        let f = &self.config.faults;
        f.api_errors || self.booted_at.is_some_and(|at| now < at + f.api_errors_after_boot)
    }

    /// The injected faults in force.
    pub fn faults(&self) -> Faults {
        self.config.faults
    }

    /// Replace the faults; work due before `now` ends under the old ones.
    pub fn set_faults(&mut self, faults: Faults, now: Instant) {
        self.advance(now);
        tracing::info!(?faults, "fake host faults changed");
        self.config.faults = faults;
    }

    /// Replace the published versions; a refresh that ended before `now` saw the old list.
    pub fn publish(&mut self, versions: Vec<String>, now: Instant) {
        self.advance(now);
        tracing::info!(?versions, "fake host published versions changed");
        self.config.published = versions;
    }

    /// Replace the command durations; work already started keeps its end.
    pub fn set_durations(&mut self, durations: CommandDurations) {
        self.config.durations = durations;
    }

    /// `GET /os`.
    pub fn os_release(&self) -> OsRelease {
        OsRelease {
            pretty_name: format!("Bottlerocket OS {} ({})", self.running, self.config.variant),
            variant_id: self.config.variant.clone(),
            version_id: self.running.clone(),
            build_id: build_id(&self.running, &self.config.variant),
            arch: self.config.arch.clone(),
        }
    }

    /// The live settings leaves, as full data keys with their JSON values.
    pub fn settings(&self) -> Vec<(&'static str, serde_json::Value)> {
        let live = self.settings.live();
        vec![
            ("settings.updates.seed", live.seed.into()),
            ("settings.updates.version-lock", live.version_lock.clone().into()),
            ("settings.updates.ignore-waves", live.ignore_waves.into()),
        ]
    }

    /// `PATCH /settings?tx=NAME`.
    pub fn patch_settings(&mut self, tx: &str, body: &[u8]) -> Result<(), Refusal> {
        self.settings.patch(tx, body)
    }

    /// `POST /tx/commit_and_apply?tx=NAME` at `now`: the keys committed.
    pub fn commit_settings(&mut self, tx: &str, now: Instant) -> Result<Vec<String>, Refusal> {
        self.advance(now);
        let keys = self.settings.commit_and_apply(tx, now)?;
        tracing::info!(?keys, live = ?self.settings.live(), "settings committed; updog sees them once applied");
        Ok(keys)
    }

    /// An update command POST (`refresh`/`prepare`/`activate`/`deactivate`) at `now`.
    pub fn command(&mut self, command: UpdateCommand, now: Instant) -> CommandReply {
        self.advance(now);
        if let Some(work) = &self.work {
            tracing::info!(?command, running = ?work.command, "refused: update lock held");
            return CommandReply::LockHeld;
        }
        let status = self.initialised_status();
        if !allowed(status.update_state, command) {
            tracing::info!(?command, state = ?status.update_state, "refused: transition not allowed");
            return CommandReply::NotAllowed;
        }
        let target = status.chosen_update.clone();
        let staged = status.staging_partition.as_ref().is_some_and(|p| p.image.is_some());
        match command {
            UpdateCommand::Prepare if target.is_none() => {
                tracing::info!(?command, "refused: no chosen update");
                return CommandReply::NoChosenUpdate;
            }
            UpdateCommand::Activate | UpdateCommand::Deactivate if !staged => {
                tracing::info!(?command, "refused: nothing staged");
                return CommandReply::NoStagedImage;
            }
            _ => {}
        }
        let ends_at = now + self.config.durations.of(command);
        tracing::info!(?command, work_ms = (ends_at - now).as_millis() as u64, "command started");
        self.work = Some(Work { command, ends_at, target });
        self.advance(now);
        CommandReply::Started
    }

    /// `GET /updates/status` at `now`.
    pub fn read_status(&mut self, now: Instant) -> StatusReply {
        self.advance(now);
        if self.work.is_some() {
            return StatusReply::LockHeld;
        }
        let Some(status) = &self.status else {
            return StatusReply::Uninitialized;
        };
        if self.config.faults.malformed_status {
            return StatusReply::Malformed(malformed(status));
        }
        StatusReply::Status(Box::new(status.clone()))
    }

    /// `POST /actions/reboot` at `now`: no state or lock check, as apiserver does none.
    pub fn reboot(&mut self, now: Instant) -> RebootReply {
        self.advance(now);
        if self.config.faults.reboot_refused {
            tracing::info!("reboot refused (injected fault)");
            return RebootReply::Refused(
                "Failed to reboot, exit code: 1, stderr: Call to Reboot failed: \
                 Operation inhibited (injected fault)\n"
                    .to_string(),
            );
        }
        self.reboot_requests += 1;
        self.down = match self.config.reboot {
            RebootBehavior::StayUp => None,
            RebootBehavior::GoDown => Some(Down::UntilBoot),
            RebootBehavior::BootAfter(d) => Some(Down::BootAt(now + d)),
        };
        tracing::info!(requests = self.reboot_requests, down = self.down.is_some(), "reboot accepted");
        RebootReply::Accepted
    }

    /// Boot at `now`: a `Ready` host moves to the staged version (unless the rollback fault is
    /// set); in every case the status is gone and the lock is free.
    pub fn boot(&mut self, now: Instant) {
        self.advance(now);
        self.boot_at(now);
    }

    fn boot_at(&mut self, at: Instant) {
        self.booted_at = Some(at);
        let old = self.running.clone();
        if let Some(next) = self.ready_version() {
            if self.config.faults.rollback_on_boot {
                tracing::info!(%old, attempted = %next, "boot rolled back to the old partition set");
            } else {
                self.running = next;
            }
        }
        self.status = None;
        self.work = None;
        self.down = None;
        self.boots += 1;
        tracing::info!(%old, running = %self.running, boots = self.boots, "host booted");
    }

    /// The version the bootloader would try next, when the update is activated.
    fn ready_version(&self) -> Option<String> {
        let status = self.status.as_ref().filter(|s| s.update_state == UpdateState::Ready)?;
        let staging = status.staging_partition.as_ref().filter(|p| p.next_to_boot)?;
        staging.image.as_ref().map(|i| i.version.clone())
    }

    /// The status, initialised as thar-be-updates does when its file is missing.
    fn initialised_status(&mut self) -> &mut UpdateStatus {
        let image = self.image(&self.running);
        self.status.get_or_insert_with(|| UpdateStatus {
            update_state: UpdateState::Idle,
            available_updates: Vec::new(),
            chosen_update: None,
            active_partition: Some(StagedImage { image: Some(image), next_to_boot: true }),
            staging_partition: None,
            most_recent_command: None,
        })
    }

    fn image(&self, version: &str) -> UpdateImage {
        UpdateImage {
            arch: self.config.arch.clone(),
            version: version.to_string(),
            variant: self.config.variant.clone(),
        }
    }

    fn finish_work_by(&mut self, now: Instant) {
        if self.work.as_ref().is_some_and(|w| w.ends_at <= now) {
            if let Some(work) = self.work.take() {
                self.finish(work);
            }
        }
    }

    /// Record the result of `work` at the instant it ended and apply its effect on success.
    fn finish(&mut self, work: Work) {
        let timestamp = self.wall_time_at(work.ends_at);
        let outcome = match work.command {
            UpdateCommand::Refresh => self.finish_refresh(work.ends_at),
            UpdateCommand::Prepare => self.finish_prepare(work.target),
            UpdateCommand::Activate => self.finish_activate(),
            UpdateCommand::Deactivate => self.finish_deactivate(),
        };
        let (cmd_status, exit_status) = match outcome {
            Ok(_) => (CommandStatus::Success, 0),
            Err(_) => (CommandStatus::Failed, 1),
        };
        let stderr = match outcome {
            Ok(text) | Err(text) => text,
        };
        let status = self.initialised_status();
        status.most_recent_command = Some(CommandResult {
            cmd_type: work.command,
            cmd_status,
            timestamp,
            exit_status: Some(exit_status),
            stderr: Some(stderr),
        });
        tracing::info!(command = ?work.command, ?cmd_status, state = ?status.update_state, "command ended");
    }

    fn finish_refresh(&mut self, at: Instant) -> Result<String, String> {
        let fails = self.config.faults.refresh_fails;
        let (available, chosen) = self.find_updates(at);
        let status = self.initialised_status();
        let movable = matches!(status.update_state, UpdateState::Idle | UpdateState::Available);
        if fails {
            if movable {
                status.update_state = UpdateState::Idle;
            }
            return Err("Failed to check for updates: update repository unreachable (injected fault)\n".into());
        }
        if movable {
            status.update_state =
                if chosen.is_some() { UpdateState::Available } else { UpdateState::Idle };
        }
        status.available_updates = available;
        status.chosen_update = chosen;
        Ok(String::new())
    }

    fn finish_prepare(&mut self, target: Option<UpdateImage>) -> Result<String, String> {
        let fails = self.config.faults.prepare_fails;
        let Some(target) = target else {
            return Err("No update chosen\n".into());
        };
        let started = format!("Starting update to {}\n", target.version);
        if fails {
            return Err(format!("{started}Failed to write the update image (injected fault)\n"));
        }
        let status = self.initialised_status();
        status.staging_partition = Some(StagedImage { image: Some(target), next_to_boot: false });
        set_active_next(status, true);
        status.update_state = UpdateState::Staged;
        Ok(started)
    }

    fn finish_activate(&mut self) -> Result<String, String> {
        if self.config.faults.activate_fails {
            return Err("Failed to mark the staging partition set to boot next (injected fault)\n".into());
        }
        let status = self.initialised_status();
        set_active_next(status, false);
        status.update_state = UpdateState::Ready;
        Ok(String::new())
    }

    fn finish_deactivate(&mut self) -> Result<String, String> {
        if self.config.faults.deactivate_fails {
            return Err("Failed to mark the active partition set to boot next (injected fault)\n".into());
        }
        let status = self.initialised_status();
        set_active_next(status, true);
        status.update_state = UpdateState::Staged;
        Ok(String::new())
    }

    /// `available_updates` (published and offered to this seed by `at`, newest first,
    /// deduplicated) and `chosen_update`, from the settings updog reads at `at`.
    fn find_updates(&self, at: Instant) -> (Vec<String>, Option<UpdateImage>) {
        let updog = self.settings.rendered_at(at);
        let wall = self.wall_base + chrono::Duration::from_std(at.saturating_duration_since(self.clock_base)).unwrap_or_default();
        let offered = |v: &String| {
            updog.ignore_waves
                || self.config.waves.get(version::normalize(v)).is_none_or(|w| waves::update_ready(w, updog.seed, wall))
        };
        let mut available: Vec<String> =
            self.config.published.iter().filter(|v| offered(v)).map(|v| version::normalize(v).to_string()).collect();
        available.sort_by(|a, b| version::compare(b, a));
        available.dedup();
        let running = self.running.as_str();
        let lock = version::normalize(updog.version_lock.trim());
        let chosen = if lock == "latest" {
            available.iter().find(|v| version::compare(v, running).is_gt())
        } else {
            available.iter().find(|v| v.as_str() == lock && lock != running)
        };
        let chosen = chosen.map(|v| self.image(v));
        (available, chosen)
    }

    /// The wall time at `at`, strictly after any timestamp already written, as distinct
    /// commands on a real host never share a nanosecond.
    fn wall_time_at(&mut self, at: Instant) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(at.saturating_duration_since(self.clock_base))
            .unwrap_or(chrono::Duration::MAX);
        let mut t = self.wall_base.checked_add_signed(elapsed).unwrap_or(self.wall_base);
        if let Some(last) = self.last_timestamp {
            if t <= last {
                t = last + chrono::Duration::nanoseconds(1);
            }
        }
        self.last_timestamp = Some(t);
        t
    }
}

/// The transition table: which commands each state accepts (refresh is never refused).
fn allowed(state: UpdateState, command: UpdateCommand) -> bool {
    match command {
        UpdateCommand::Refresh => true,
        UpdateCommand::Prepare => matches!(state, UpdateState::Available | UpdateState::Staged),
        UpdateCommand::Activate => state == UpdateState::Staged,
        UpdateCommand::Deactivate => state == UpdateState::Ready,
    }
}

/// Point the bootloader at the active set (`true`) or at the staging set (`false`).
fn set_active_next(status: &mut UpdateStatus, active_next: bool) {
    if let Some(active) = status.active_partition.as_mut() {
        active.next_to_boot = active_next;
    }
    if let Some(staging) = status.staging_partition.as_mut() {
        staging.next_to_boot = !active_next;
    }
}

/// A status body cut in half: JSON that no client can parse.
fn malformed(status: &UpdateStatus) -> String {
    let full = serde_json::to_string(status).unwrap_or_default();
    let half: String = full.chars().take(full.chars().count() / 2).collect();
    if half.is_empty() {
        "{\"update_state\":".to_string()
    } else {
        half
    }
}

/// A stable short hash standing in for the build's commit (FNV-1a).
fn build_id(version: &str, variant: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in version.bytes().chain([b'/']).chain(variant.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged_host() -> (HostModel, Instant) {
        let now = Instant::now();
        let config = HostConfig {
            published: vec!["1.27.0".into()],
            durations: CommandDurations::all(Duration::ZERO),
            ..HostConfig::default()
        };
        let mut host = HostModel::new(config, now);
        assert_eq!(host.command(UpdateCommand::Refresh, now), CommandReply::Started);
        assert_eq!(host.command(UpdateCommand::Prepare, now), CommandReply::Started);
        assert_eq!(host.update_state(), Some(UpdateState::Staged));
        (host, now)
    }

    // The transition table is checked before the staged image, so these 404s need a status
    // that commands alone never produce (a staging set that lost its image).
    #[test]
    fn activate_and_deactivate_need_a_staged_image() {
        let (mut host, now) = staged_host();
        if let Some(status) = host.status.as_mut() {
            status.staging_partition = None;
        }
        assert_eq!(host.command(UpdateCommand::Activate, now), CommandReply::NoStagedImage);
        if let Some(status) = host.status.as_mut() {
            status.update_state = UpdateState::Ready;
            status.staging_partition = Some(StagedImage { image: None, next_to_boot: true });
        }
        assert_eq!(host.command(UpdateCommand::Deactivate, now), CommandReply::NoStagedImage);
        assert_eq!(host.busy_with(), None, "no work started");
    }

    #[test]
    fn self_boot_happens_at_its_instant_even_when_touched_later() {
        let (mut host, start) = staged_host();
        host.config.reboot = RebootBehavior::BootAfter(Duration::from_secs(30));
        assert_eq!(host.command(UpdateCommand::Activate, start), CommandReply::Started);
        assert_eq!(host.reboot(start), RebootReply::Accepted);
        assert!(host.is_down());
        host.advance(start + Duration::from_secs(29));
        assert!(host.is_down(), "still rebooting");
        host.advance(start + Duration::from_secs(600));
        assert!(!host.is_down());
        assert_eq!((host.running_version(), host.boots()), ("1.27.0", 1));
        assert_eq!(host.update_state(), None);
    }
}
