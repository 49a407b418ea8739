//! `health.on-failure = "rollback"`: a host whose new version failed its gate or bake goes back
//! to the version it came from, through Bottlerocket's own updater, still holding its slot.
//!
//! Bottlerocket exposes no "roll back" action once the new version has booted, so the way back is
//! a downgrade: lock `settings.updates.version-lock` to the old version (and ignore waves, which
//! could hide it), refresh, prepare, activate, then put the operator's two settings back before
//! the reboot, so that nothing of the rollback outlives it. The bad version stays out through
//! the local quarantine and the fleet-wide failure marker, not through the lock.
//!
//! Every step is written to the in-flight record first and can be repeated: a restart at any
//! point resumes the rollback (the record says a rollback is under way), never the update.

use std::time::Duration;

use crate::cluster::{ClusterStore, InstanceStatus, SetStatus};
use crate::clock::Clock;
use crate::journal::{InFlight, Journal, Rollback};
use crate::keeper::ClaimKeeper;
use crate::lease::{ClaimPhase, LeaseError};
use crate::os_api::commands::{self, RebootRequest};
use crate::os_api::{Action, Commit, OsApi, UpdateState, UpdateStatus, UpdatesPatch};

use super::{Agent, Outcome, TasksLeft};

/// The settings transaction the rollback writes in, so no one else's pending change is committed.
const TX: &str = "br-update-agent-rollback";
/// Settings are applied in the background after the commit: refresh this many times, this far
/// apart, before deciding the old version is not offered.
const APPLY_TRIES: u32 = 10;
const APPLY_WAIT: Duration = Duration::from_secs(2);
/// A rollback that has rebooted this many times without landing holds instead.
const MAX_REBOOTS: u32 = 2;

/// What a rollback step ended in.
pub(super) enum Rolled {
    /// The reboot into the old version was asked for.
    Rebooting(Outcome),
    /// It cannot be done (why): the host holds its slot for a person to look at.
    Failed(String),
}

/// The settings that lock the updater to `version` for the rollback.
fn lock_to(version: &str) -> UpdatesPatch {
    UpdatesPatch { version_lock: version.to_string(), ignore_waves: true }
}

/// The operator's settings, as saved before the rollback changed them.
fn saved(rb: &Rollback) -> UpdatesPatch {
    UpdatesPatch { version_lock: rb.saved_version_lock.clone(), ignore_waves: rb.saved_ignore_waves }
}

/// Where the host's partitions stand for going back to `old`.
#[derive(Debug, PartialEq, Eq)]
enum Staging {
    /// `old` will boot next: only the reboot is left.
    Ready,
    /// `old` is written to the other partition set: activate it.
    Staged,
    /// Nothing usable: refresh and prepare first.
    Nothing,
}

fn staging_for(status: Option<&UpdateStatus>, old: &str) -> Staging {
    match status {
        Some(s) if s.staged_version() == Some(old) && s.update_state == UpdateState::Ready => Staging::Ready,
        Some(s) if s.staged_version() == Some(old) && s.update_state == UpdateState::Staged => Staging::Staged,
        _ => Staging::Nothing,
    }
}

impl<O: OsApi, S: ClusterStore, K: Clock, J: Journal> Agent<O, S, K, J> {
    /// Takes the host back to `f.from_version` after `why`; resumes one already under way.
    pub(super) async fn roll_back(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>, why: &str) -> Result<Rolled, String> {
        let rb = self.begin_rollback(f, why).await?;
        if rb.reboots >= MAX_REBOOTS {
            return Ok(Rolled::Failed(format!("asked {} times to reboot into {} and still running {}", rb.reboots, f.from_version, f.target_version)));
        }
        self.publish("rolling-back", Some(&f.target_version), "rolling-back", &format!("to {}: {why}", f.from_version)).await;
        tracing::warn!(from = %f.target_version, to = %f.from_version, reason = %why, "rolling back: staging the old version through the updater");
        let staged = self.stage_old_version(&f.from_version).await;
        self.restore_settings(&rb).await?;
        if let Err(e) = staged {
            return Ok(Rolled::Failed(format!("cannot stage {}: {e}", f.from_version)));
        }
        if let Some(why) = self.drain_for_rollback(f).await? {
            return Ok(Rolled::Failed(why));
        }
        self.reboot_into_old(f, keeper).await
    }

    /// Saves the operator's settings in the record before anything changes them (a resumed
    /// rollback keeps what the first attempt saved: by then the lock is our own).
    async fn begin_rollback(&self, f: &InFlight, why: &str) -> Result<Rollback, String> {
        let mut record = self.load_record();
        let Some(flight) = record.in_flight.as_mut() else { return Err("no update in flight to roll back".into()) };
        if let Some(rb) = &flight.rollback {
            return Ok(rb.clone());
        }
        let now = self.os.update_settings().await.map_err(|e| format!("cannot read the update settings: {e}"))?;
        let rb = Rollback {
            reason: why.to_string(),
            saved_version_lock: now.version_lock.unwrap_or_else(|| "latest".into()),
            saved_ignore_waves: now.ignore_waves.unwrap_or(false),
            restored: false,
            reboots: 0,
        };
        flight.rollback = Some(rb.clone());
        self.journal.store(&record).map_err(|e| e.to_string())?;
        tracing::info!(version_lock = %rb.saved_version_lock, ignore_waves = rb.saved_ignore_waves, target = %f.target_version,
            "rollback: the operator's update settings are saved, to be put back before the reboot");
        Ok(rb)
    }

    /// Locks the updater to `old`, then refresh, prepare and activate until `old` boots next.
    async fn stage_old_version(&self, old: &str) -> Result<(), String> {
        let b = &self.cfg.commands;
        let status = commands::read_status(&self.os, &self.clock, &self.jitter, &b.status).await.map_err(|e| e.to_string())?;
        let mut staging = staging_for(status.as_ref(), old);
        if staging == Staging::Nothing {
            self.write_settings(&lock_to(old)).await?;
            self.refresh_until_chosen(old).await?;
            let st = commands::run_command(&self.os, &self.clock, &self.jitter, Action::Prepare, &b.prepare).await.map_err(|e| format!("prepare: {e}"))?;
            staging = staging_for(Some(&st), old);
            if staging != Staging::Staged {
                return Err(format!("prepare staged {:?}, expected {old}", st.staged_version()));
            }
        }
        if staging == Staging::Staged {
            let st = commands::run_command(&self.os, &self.clock, &self.jitter, Action::Activate, &b.activate).await.map_err(|e| format!("activate: {e}"))?;
            if staging_for(Some(&st), old) != Staging::Ready {
                return Err(format!("activate left the update {:?}", st.update_state));
            }
        }
        tracing::info!(version = old, "rollback: the old version boots next");
        Ok(())
    }

    /// Refreshes until the updater chooses `old`: the settings apply in the background, so the
    /// first refreshes after the commit may still see the operator's lock.
    async fn refresh_until_chosen(&self, old: &str) -> Result<(), String> {
        let b = &self.cfg.commands.refresh;
        for attempt in 1..=APPLY_TRIES {
            let st = commands::run_command(&self.os, &self.clock, &self.jitter, Action::Refresh, b).await.map_err(|e| format!("refresh: {e}"))?;
            if st.chosen_version() == Some(old) {
                return Ok(());
            }
            if attempt == APPLY_TRIES {
                return Err(format!("the updater does not offer {old} (chosen {:?}, available {:?})", st.chosen_version(), st.available_updates));
            }
            tracing::info!(attempt, chosen = ?st.chosen_version(), "rollback: the version lock is not applied yet; refreshing again");
            self.pause(APPLY_WAIT).await?;
        }
        Err(format!("the updater does not offer {old}"))
    }

    /// One settings transaction: PATCH then commit and apply (nothing pending means an earlier
    /// attempt committed it already).
    async fn write_settings(&self, patch: &UpdatesPatch) -> Result<(), String> {
        self.os.patch_updates(TX, patch).await.map_err(|e| format!("cannot write the update settings: {e}"))?;
        match self.os.commit_and_apply(TX).await.map_err(|e| format!("cannot commit the update settings: {e}"))? {
            Commit::Applied(keys) => tracing::info!(?keys, version_lock = %patch.version_lock, ignore_waves = patch.ignore_waves, "update settings committed"),
            Commit::NothingPending => tracing::info!("update settings: nothing pending (already committed)"),
        }
        Ok(())
    }

    /// Puts the operator's version-lock and ignore-waves back, once, and records it.
    pub(super) async fn restore_settings(&self, rb: &Rollback) -> Result<(), String> {
        let mut record = self.load_record();
        let done = record.in_flight.as_ref().and_then(|f| f.rollback.as_ref()).is_none_or(|r| r.restored);
        if done {
            return Ok(());
        }
        self.write_settings(&saved(rb)).await?;
        if let Some(r) = record.in_flight.as_mut().and_then(|f| f.rollback.as_mut()) {
            r.restored = true;
        }
        self.journal.store(&record).map_err(|e| e.to_string())?;
        tracing::info!(version_lock = %rb.saved_version_lock, ignore_waves = rb.saved_ignore_waves, "rollback: the operator's update settings are back");
        Ok(())
    }

    /// Out of service again before the reboot: a failure found during the bake finds the host
    /// ACTIVE with tasks on it. `Some(why)` when the tasks do not stop in time.
    async fn drain_for_rollback(&self, f: &InFlight) -> Result<Option<String>, String> {
        let Some(store) = &self.cluster else { return Ok(None) };
        let me = self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?;
        let ours = self.drained_by_us(Some(f), &me.attributes);
        if ours && me.status == InstanceStatus::Active {
            self.ecs("UpdateContainerInstancesState", || store.set_status(SetStatus::Draining)).await.map_err(|e| e.to_string())?;
            tracing::info!("rollback: instance set to DRAINING again");
        }
        let c = &self.cfg.cluster;
        let start = self.clock.now();
        loop {
            let tasks = self.ecs("ListTasks", || store.running_tasks()).await.map_err(|e| e.to_string())?;
            if tasks.is_empty() {
                return Ok(None);
            }
            let waited = self.clock.now().since(start);
            if waited >= c.drain_timeout {
                return Ok(Some(format!("drain before the rollback reboot timed out after {}s with {} left", waited.as_secs(), TasksLeft::of(&tasks))));
            }
            self.pause(c.drain_poll_interval).await?;
        }
    }

    /// The reboot into the old version, under a claim renewed to outlive it, as the update's own
    /// reboot: a claim lost meanwhile (a renewal that landed late) means another host may hold
    /// the slot now, so the host holds instead of rebooting.
    async fn reboot_into_old(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>) -> Result<Rolled, String> {
        let held = match keeper {
            Some(k) => k.stop().await,
            None => None,
        };
        let held = match (self.lease(), held) {
            (None, _) => None,
            (Some(_), None) => return Ok(Rolled::Failed("the claim was lost while the host was out of service; not rebooting without it".into())),
            (Some(lease), Some(h)) => match lease.renew(&h, ClaimPhase::Rebooting, self.cfg.cluster.reboot_allowance, self.margin()).await {
                Ok(h) => Some(h),
                Err(LeaseError::Lost(why)) => return Ok(Rolled::Failed(format!("the claim was lost before the reboot: {why}"))),
                // ECS unreachable: the next attempt resumes here (the claim may lapse meanwhile,
                // and then the host holds).
                Err(e) => return Err(format!("cannot renew the claim for the reboot: {e}")),
            },
        };
        let mut record = self.load_record();
        if let Some(r) = record.in_flight.as_mut().and_then(|f| f.rollback.as_mut()) {
            r.reboots += 1;
        }
        self.journal.store(&record).map_err(|e| e.to_string())?;
        self.publish("rebooting", Some(&f.from_version), "rolling-back", &format!("rebooting into {}", f.from_version)).await;
        // Publishing may have been retried for a while: reboot only under a claim others count.
        if let (Some(lease), Some(h)) = (self.lease(), &held) {
            if let Err(e) = lease.in_time(&h.claim, self.margin()) {
                return Ok(Rolled::Failed(format!("the claim ran out before the reboot: {e}")));
            }
        }
        match commands::request_reboot(&self.os, &self.clock, &self.jitter, &self.cfg.commands.reboot).await {
            Ok(RebootRequest::Accepted) | Ok(RebootRequest::ConnectionLost) => {
                tracing::warn!(to = %f.from_version, "rollback: reboot into the old version asked for");
                Ok(Rolled::Rebooting(Outcome::Rebooting { target: f.from_version.clone() }))
            }
            Err(e) => Ok(Rolled::Failed(format!("reboot refused: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os_api::{StagedImage, UpdateImage};

    fn status(state: UpdateState, staged: Option<&str>) -> UpdateStatus {
        UpdateStatus {
            update_state: state,
            available_updates: vec![],
            chosen_update: None,
            active_partition: None,
            staging_partition: staged.map(|v| StagedImage {
                image: Some(UpdateImage { arch: "x86_64".into(), version: v.into(), variant: "aws-ecs-2".into() }),
                next_to_boot: state == UpdateState::Ready,
            }),
            most_recent_command: None,
        }
    }

    #[test]
    fn only_the_old_version_staged_or_ready_skips_steps() {
        assert_eq!(staging_for(None, "1.0.0"), Staging::Nothing, "status gone after boot");
        assert_eq!(staging_for(Some(&status(UpdateState::Ready, Some("1.0.0"))), "1.0.0"), Staging::Ready);
        assert_eq!(staging_for(Some(&status(UpdateState::Staged, Some("1.0.0"))), "1.0.0"), Staging::Staged);
        assert_eq!(staging_for(Some(&status(UpdateState::Ready, Some("1.1.0"))), "1.0.0"), Staging::Nothing, "another version ready");
        assert_eq!(staging_for(Some(&status(UpdateState::Idle, None)), "1.0.0"), Staging::Nothing);
    }

    #[test]
    fn the_lock_ignores_waves_and_the_restore_puts_back_what_was_saved() {
        let l = lock_to("1.0.0");
        assert_eq!((l.version_lock.as_str(), l.ignore_waves), ("1.0.0", true));
        let rb = Rollback { reason: "x".into(), saved_version_lock: "v1.2.0".into(), saved_ignore_waves: false, restored: false, reboots: 0 };
        assert_eq!(saved(&rb).body(), serde_json::json!({"updates": {"version-lock": "v1.2.0", "ignore-waves": false}}));
    }
}
