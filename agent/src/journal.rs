//! The in-flight record: what this host is in the middle of, kept where it survives a reboot.
//!
//! It is written before each side effect it announces (write-ahead), atomically (temp file,
//! fsync, rename, fsync of the directory), so a restart at any instant finds either the old
//! record or the new one. A record that cannot be read is reported and set aside, never a crash
//! loop: the agent then re-derives what it must undo from the OS and from its ECS attributes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::WallTime;

/// The step an update in flight has reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// A slot in the cluster is being taken or is held; nothing on the host has changed yet.
    Leased,
    /// The instance is (being) drained.
    Draining,
    /// activate-update was (being) asked for: the next boot may run the new version.
    Activating,
    /// The reboot was (being) asked for.
    Rebooting,
}

/// An update in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// How far it got.
    pub step: Step,
    /// The version running when it started.
    pub from_version: String,
    /// The version it moves to.
    pub target_version: String,
    /// The token of this host's claim, if it took one.
    pub lease_token: Option<String>,
    /// Whether this agent set the instance to DRAINING (and so must set it ACTIVE again).
    pub drained_by_us: bool,
    /// When the update started.
    pub started_at: WallTime,
    /// When the maintenance window it started in closes, if windows apply.
    #[serde(default)]
    pub window_end: Option<WallTime>,
    /// Whether this host took the version as one of its canaries (it bakes for longer).
    #[serde(default)]
    pub canary: bool,
    /// A rollback to `from_version` under way, after the target failed its checks.
    #[serde(default)]
    pub rollback: Option<Rollback>,
    /// When its claim was written (the slot's start), once it holds one.
    #[serde(default)]
    pub claimed_at: Option<WallTime>,
    /// When the claim renewed to outlive the reboot lapses: after the boot, how long the first
    /// renewal may wait for the ECS agent.
    #[serde(default)]
    pub claim_expires: Option<WallTime>,
}

/// A rollback in progress (`health.on-failure = "rollback"`): what it must put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The failed check that started it.
    pub reason: String,
    /// The operator's `settings.updates.version-lock` before the rollback changed it.
    pub saved_version_lock: String,
    /// The operator's `settings.updates.ignore-waves` before.
    pub saved_ignore_waves: bool,
    /// Whether the operator's settings have been written back.
    #[serde(default)]
    pub restored: bool,
    /// How many times the reboot into the old version was asked for.
    #[serde(default)]
    pub reboots: u32,
}

/// A version that failed to boot, not to be tried again before `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The version.
    pub version: String,
    /// When it may be tried again.
    pub until: WallTime,
    /// Why it is quarantined.
    pub reason: String,
}

/// Everything the agent keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The update in progress, if any.
    #[serde(default)]
    pub in_flight: Option<InFlight>,
    /// Versions that failed to boot.
    #[serde(default)]
    pub quarantine: Vec<Quarantined>,
    /// The outcome of the last update attempt, for the status attribute.
    #[serde(default)]
    pub last_result: Option<String>,
    /// When this host first saw each version offered (for `min-release-age`).
    #[serde(default)]
    pub first_seen: std::collections::BTreeMap<String, WallTime>,
    /// How many seconds the last finished update held its slot, for the status attribute.
    #[serde(default)]
    pub last_took: Option<u64>,
}

impl Record {
    /// Whether `version` may not be tried at `now`.
    pub fn is_quarantined(&self, version: &str, now: WallTime) -> bool {
        self.quarantine.iter().any(|q| q.version == version && q.until > now)
    }
    /// Quarantines `version` until `until`, forgetting entries that have lapsed.
    pub fn quarantine(&mut self, version: &str, until: WallTime, reason: &str, now: WallTime) {
        self.quarantine.retain(|q| q.until > now && q.version != version);
        self.quarantine.push(Quarantined { version: version.into(), until, reason: reason.into() });
    }
}

/// A record that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File system failure.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds something that is not a record.
    #[error("corrupt record {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// Where records are kept: a file in production, memory in a simulation.
pub trait Journal {
    /// The stored record; `Ok(Default)` when there is none.
    fn load(&self) -> Result<Record, JournalError>;
    /// Replaces the stored record.
    fn store(&self, record: &Record) -> Result<(), JournalError>;
    /// Sets a corrupt record aside so the next load starts clean.
    fn set_aside(&self) -> Result<(), JournalError>;
}

/// A record in a file, replaced atomically.
#[derive(Clone, Debug)]
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// A journal at `path` (its directory must exist or be creatable).
    pub fn new(path: impl Into<PathBuf>) -> FileJournal {
        FileJournal { path: path.into() }
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
        move |source| JournalError::Io { action, path: self.path.clone(), source }
    }
}

impl Journal for FileJournal {
    fn load(&self) -> Result<Record, JournalError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(self.io("read")(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| JournalError::Corrupt { path: self.path.clone(), reason: e.to_string() })
    }

    fn store(&self, record: &Record) -> Result<(), JournalError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(self.io("create directory for"))?;
        let tmp = self.path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| JournalError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        let mut f = std::fs::File::create(&tmp).map_err(self.io("create"))?;
        f.write_all(&body).map_err(self.io("write"))?;
        f.sync_all().map_err(self.io("fsync"))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(self.io("rename onto"))?;
        // The rename is durable only once the directory entry is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn set_aside(&self) -> Result<(), JournalError> {
        let aside = self.path.with_extension("corrupt");
        match std::fs::rename(&self.path, aside) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("set aside")(e)),
        }
    }
}

/// A record in memory: what a simulated host keeps across a simulated crash.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal(std::rc::Rc<std::cell::RefCell<Option<Record>>>);

impl Journal for MemoryJournal {
    fn load(&self) -> Result<Record, JournalError> {
        Ok(self.0.borrow().clone().unwrap_or_default())
    }
    fn store(&self, record: &Record) -> Result<(), JournalError> {
        *self.0.borrow_mut() = Some(record.clone());
        Ok(())
    }
    fn set_aside(&self) -> Result<(), JournalError> {
        *self.0.borrow_mut() = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            in_flight: Some(InFlight {
                step: Step::Rebooting,
                from_version: "1.0.0".into(),
                target_version: "1.1.0".into(),
                lease_token: Some("ab12cd34".into()),
                drained_by_us: true,
                started_at: WallTime::from_secs(1_700_000_000),
                window_end: None,
                canary: false,
                rollback: None,
                claimed_at: Some(WallTime::from_secs(1_700_000_100)),
                claim_expires: Some(WallTime::from_secs(1_700_001_300)),
            }),
            quarantine: vec![],
            last_result: None,
            first_seen: Default::default(),
            last_took: Some(540),
        }
    }

    #[test]
    fn store_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = FileJournal::new(dir.path().join("sub/state.json"));
        assert_eq!(j.load().expect("empty"), Record::default());
        j.store(&sample()).expect("stored");
        assert_eq!(j.load().expect("loads"), sample());
        assert!(!dir.path().join("sub/state.tmp").exists());
    }

    #[test]
    fn corrupt_record_is_reported_and_can_be_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"in_flight\": {\"step\": \"warp\"").expect("write");
        let j = FileJournal::new(&path);
        assert!(matches!(j.load(), Err(JournalError::Corrupt { .. })));
        j.set_aside().expect("set aside");
        assert_eq!(j.load().expect("clean after set aside"), Record::default());
        assert!(dir.path().join("state.corrupt").exists());
    }

    #[test]
    fn quarantine_expires_and_replaces() {
        let mut r = Record::default();
        let now = WallTime::from_secs(1000);
        r.quarantine("1.1.0", WallTime::from_secs(2000), "rolled back", now);
        assert!(r.is_quarantined("1.1.0", now));
        assert!(!r.is_quarantined("1.1.0", WallTime::from_secs(2000)));
        assert!(!r.is_quarantined("1.2.0", now));
        r.quarantine("1.1.0", WallTime::from_secs(3000), "again", now);
        assert_eq!(r.quarantine.len(), 1);
    }
}
