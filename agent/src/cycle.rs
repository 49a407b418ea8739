//! The update state machine of one host: check, prepare, take a slot, drain, activate, reboot,
//! verify, return to service.
//!
//! ```text
//!   start ─► recover ─► wait for slot ─► refresh ─► prepare ─► lease ─► drain ─► activate ─► reboot
//!              ▲  (in-flight record: finish or undo)                                          │
//!              └──────────── after boot: verify version, ECS agent, ACTIVE, release ◄─────────┘
//! ```
//!
//! After boot the new version passes a health gate and a bake before the slot is given back; a
//! failure there follows `health.on-failure` (hold, return, or [`rollback`] to the old version).
//!
//! Every step that changes the world is announced in the journal first, so a restart at any
//! instant either finishes the update (after the reboot) or undoes it (before the reboot):
//! re-activate what this agent drained, deactivate what it activated, withdraw its claim. The
//! ECS side keeps its own trace (the claim and the drained marker live on the instance), so even
//! a lost journal leaves no instance DRAINING and no claim behind.

use std::future::Future;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::clock::{Clock, WallTime};
use crate::cluster::retry::{with_retry, RetryPolicy};
use crate::cluster::{ClusterError, ClusterStore, InstanceInfo, InstanceStatus, LocalTasks, SetStatus, TaskInfo};
use crate::config::{Config, OnFailure, StandalonePolicy};
use crate::health::Look;
use crate::journal::{InFlight, Journal, Record, Rollback, Step};
use crate::lease::{ClaimPhase, ClaimsInView, Gate, Held, LeaseClient, LeaseError, LeaseParams, LeaseRule, Names};
use crate::os_api::commands::{self, CommandError, RebootRequest};
use crate::os_api::{Action, OsApi, OsInfo, UpdateState, UpdateStatus};
use crate::shutdown::Shutdown;
use crate::keeper::ClaimKeeper;
use crate::slot::Schedule;

mod rollback;
use rollback::Rolled;
use crate::status::Status;

/// How one round ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to install.
    UpToDate {
        /// The running version.
        version: String,
    },
    /// An operator keeps this host out of updates.
    OptedOut,
    /// The only update is a version that failed to boot here recently.
    Quarantined {
        /// That version.
        version: String,
    },
    /// The version failed on enough hosts of the cluster that this one does not take it.
    Halted {
        /// That version.
        version: String,
        /// The instances it failed on.
        failed_on: Vec<String>,
    },
    /// Dry run: what would have happened.
    DryRun {
        /// The version that would be installed.
        target: String,
    },
    /// Not this round; the reason says why.
    Skipped {
        /// Why (standalone tasks, drain timeout, instance state, ...).
        reason: String,
    },
    /// The reboot into `target` was asked for; the host is going down.
    Rebooting {
        /// The version booting next.
        target: String,
    },
    /// Back from a reboot: the update is done, or rolled back.
    Finished {
        /// `updated`, `rolled-back`, ...
        result: String,
        /// The running version.
        version: String,
    },
    /// Stopped by a signal at a safe point.
    Interrupted,
    /// Something failed; the round is abandoned after undoing what it did.
    Failed {
        /// What failed.
        reason: String,
    },
}

impl Outcome {
    /// A short kebab-case token for the status attribute.
    pub fn token(&self) -> &str {
        match self {
            Outcome::UpToDate { .. } => "up-to-date",
            Outcome::OptedOut => "opted-out",
            Outcome::Quarantined { .. } => "quarantined",
            Outcome::Halted { .. } => "halted",
            Outcome::DryRun { .. } => "dry-run",
            Outcome::Skipped { reason } => skip_token(reason),
            Outcome::Rebooting { .. } => "rebooting",
            Outcome::Finished { result, .. } => result,
            Outcome::Interrupted => "interrupted",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// A status-attribute token for a skipped round, so the fleet's reasons can be read from ECS.
fn skip_token(reason: &str) -> &'static str {
    if reason.contains("standalone") {
        "skipped-standalone-tasks"
    } else if reason.contains("drain timed out") {
        "skipped-drain-timeout"
    } else if reason.contains("soaking") {
        "skipped-soaking"
    } else if reason.contains("window") {
        "skipped-outside-window"
    } else if reason.contains("instance is") {
        "skipped-instance-not-active"
    } else {
        "skipped"
    }
}

/// The operator's per-host switches, read from the instance's attributes.
#[derive(Default)]
struct Flags {
    opted_out: bool,
    update_now: bool,
}

/// The tasks still on the instance, by what ECS does about them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TasksLeft {
    /// Service tasks ECS will stop and replace elsewhere.
    services: usize,
    /// Tasks ECS is stopping already (a load balancer may still drain their connections).
    stopping: usize,
    /// Tasks ECS leaves alone (RunTask, scheduled tasks).
    standalone: usize,
}

impl TasksLeft {
    fn of(tasks: &[TaskInfo]) -> TasksLeft {
        let mut left = TasksLeft::default();
        for t in tasks {
            match (t.stopping, t.is_service_task()) {
                (true, _) => left.stopping += 1,
                (false, true) => left.services += 1,
                (false, false) => left.standalone += 1,
            }
        }
        left
    }
}

impl std::fmt::Display for TasksLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} service, {} stopping and {} standalone task(s)", self.services, self.stopping, self.standalone)
    }
}

/// Why the standalone-task policy `skip` would skip this round, if it would: the tasks ECS would
/// neither stop nor move (not a service's, not stopping already).
fn standalone_reason(tasks: &[TaskInfo]) -> Option<String> {
    let first = tasks.iter().find(|t| !t.is_service_task() && !t.stopping)?;
    let n = TasksLeft::of(tasks).standalone;
    Some(format!("{n} standalone task(s) would not be moved by ECS, e.g. {}", first.arn))
}

/// A failed health check: what the log and the status say, and the failure marker's token.
struct Failure {
    why: String,
    token: String,
}

impl Failure {
    fn of(why: String) -> Failure {
        let token = if why.starts_with("ECS agent") {
            "ecs-agent-not-connected"
        } else if why.contains("IMPAIRED") {
            "instance-impaired"
        } else if why.contains("INITIALIZING") {
            "health-initializing"
        } else {
            "health-check-failed"
        };
        Failure { token: token.into(), why }
    }
}

/// How the way back into service ended.
enum Finish {
    /// With this result token (the slot is given back).
    Result(&'static str),
    /// With a reboot asked for (the rollback's): the round ends, the record stays.
    Rebooting(Outcome),
}

/// Why a round stopped early.
enum Halt {
    /// A signal: undo and exit.
    Shutdown,
    /// The round is over with this outcome (after any undo it needed).
    Done(Outcome),
}

type Step_<T> = Result<T, Halt>;

fn failed(reason: impl Into<String>) -> Halt {
    Halt::Done(Outcome::Failed { reason: reason.into() })
}

/// One host's agent: the OS API, the cluster (absent when running standalone), a clock, a
/// journal, randomness, the config and the shutdown signal.
pub struct Agent<O, S, K, J> {
    /// The Bottlerocket API.
    pub os: O,
    /// ECS, bound to this host's instance; `None` runs without coordination.
    pub cluster: Option<S>,
    /// Time.
    pub clock: K,
    /// The in-flight record.
    pub journal: J,
    /// Randomness.
    pub jitter: Jitter,
    /// Settings.
    pub cfg: Config,
    /// Attribute names.
    pub names: Names,
    /// The signal to stop.
    pub shutdown: Shutdown,
    /// What this process remembers between rounds (start with `Default::default()`).
    pub memory: Memory,
    /// Webhook messages on the events that matter (`Default::default()`: none).
    pub notifier: crate::notify::Notifier,
}

/// What one agent process remembers between rounds.
#[derive(Default)]
pub struct Memory {
    /// The status attribute as last written, so that `since` survives rewrites and an unchanged
    /// status is not written again.
    status: std::cell::RefCell<Option<Status>>,
    /// The version whose canaries have all updated: its limit is N from then on, uncounted.
    canaries_done: std::cell::RefCell<Option<String>>,
    /// Whether the last limit computed was the canary's.
    canary: std::cell::Cell<bool>,
    /// The wave seed of the last slot planned, published so the fleet's forecast can place
    /// this host's next check.
    seed: std::cell::Cell<Option<u32>>,
    /// This instance as the claim's first renewal after boot read it, and when: the health
    /// gate's first look, an instant later, judges this read instead of asking again.
    boot_read: std::cell::RefCell<Option<(WallTime, InstanceInfo)>>,
    /// The last update's slot time as the record has it, once read (`None`: not read yet): every
    /// status carries it, and only a finished update changes it.
    last_took: std::cell::Cell<Option<Option<u64>>>,
    /// The slot time an "updated" status said before the slot was given back, for the record
    /// to keep the same figure.
    announced_took: std::cell::Cell<Option<u64>>,
    /// How many ECS calls this process has begun through [`Agent::ecs`]: tells whether a step
    /// between two others called ECS.
    ecs_calls: std::cell::Cell<u64>,
    /// The version the failure markers last let through, and when.
    halt_passed: std::cell::RefCell<Option<(String, WallTime)>>,
}

/// How recent a passed halt check lets a look that waits (at the canary's limit, or behind a
/// holder past its expected duration) go without one. A look that claims reads none: the check
/// after the claim always reads the markers, and undoes the claim before any drain.
const HALT_RECHECK: Duration = Duration::from_secs(600);

/// How old the operator's flags may be when a look finds a slot free: a host that waited longer
/// reads them again before it claims, so an opt-out set while it waited keeps it out. Public so
/// that a simulation's checker knows how late after an opt-out a claim may still come.
pub const FLAGS_RECHECK: Duration = Duration::from_secs(600);

/// The status token of a host holding its slot because `why`: the ECS agent's own, or `held_as`.
fn held_token<'a>(why: &str, held_as: &'a str) -> &'a str {
    if why.starts_with("ECS agent") {
        "held-ecs-agent"
    } else {
        held_as
    }
}

/// How long the health gate waits before its status says what it waits for.
const GATE_STATUS_AFTER: Duration = Duration::from_secs(60);

/// While the ECS agent is away after a boot, the longest the gate goes without asking ECS: its
/// local endpoint's silence spares the calls, but an endpoint that is off must not hide a
/// connected agent for long.
const GATE_ASK_EVERY_WHILE_AWAY: Duration = Duration::from_secs(60);

/// The longest a drain goes without a look at its task listing (a describe alone cannot tell
/// a standalone task, or a task still stopping).
const FULL_LOOK_EVERY: Duration = Duration::from_secs(300);

/// The same while the ECS agent's own view shows the tasks (stopping ones included): the
/// listing then only tells a standalone task from a service task, for the standalone policy,
/// and the drain's time limits force a listing on time regardless.
const FULL_LOOK_EVERY_WITH_VIEW: Duration = Duration::from_secs(900);

/// The pause between looks at a drain `waited` long: a third of the time waited, between
/// `poll` and four times it, so short drains are seen to end promptly and long ones cost a
/// handful of calls; but no longer than until the claim is due for renewal (`renew_in`), so the
/// renewal is as timely as with a look every `poll` (the margin the configuration checks).
fn drain_pause(poll: Duration, waited: Duration, renew_in: Duration) -> Duration {
    (waited / 3).clamp(poll, poll.saturating_mul(4)).min(renew_in.max(poll))
}

/// The next sleep of a wait with `remaining` left, looked through about every `poll`: the wait
/// cut into equal steps, so that the last ends where the wait does. A step may run a tenth over
/// `poll`, so that a check interval of whole polls plus its `check-jitter` takes no extra look.
fn update_now_step(remaining: Duration, poll: Duration) -> Duration {
    let longest = (poll + poll / 10).as_millis().max(1);
    let steps = remaining.as_millis().div_ceil(longest).max(1);
    let steps = u32::try_from(steps).unwrap_or(u32::MAX);
    if steps == 1 {
        return remaining;
    }
    remaining / steps
}

/// The version the status offers to install over the running one, if any.
fn candidate<'a>(os: &OsInfo, status: &'a UpdateStatus) -> Option<&'a str> {
    // A staged image is a target only if it is newer than what runs or what the updater
    // chooses now: one older is a leftover (a rollback's), never a downgrade to install.
    let wanted = |v: &str| {
        status.chosen_version() == Some(v) || crate::fleet::model::compare_versions(v, &os.version_id).is_gt()
    };
    let found = match status.update_state {
        UpdateState::Idle => None,
        UpdateState::Available => status.chosen_version(),
        // A download left from an earlier round (one that was halted, say) must not hold the
        // host back from a newer release: prepare stages the newer one over it.
        UpdateState::Staged => match (status.staged_version(), status.chosen_version()) {
            (Some(staged), Some(chosen)) if crate::fleet::model::compare_versions(chosen, staged).is_gt() => Some(chosen),
            (staged, chosen) => staged.filter(|v| wanted(v)).or(chosen),
        },
        UpdateState::Ready => status.staged_version().filter(|v| wanted(v)).or(status.chosen_version()),
    };
    found.filter(|v| *v != os.version_id)
}

/// Whether the status `last` written already says what `next` would: the same, or `updated`
/// where a later round found that version up to date (the update is the news; a round that
/// found nothing would cost a write per host and update).
fn says_as_much(last: &Status, next: &Status) -> bool {
    let updated_then_idle = (last.phase.as_str(), last.result.as_str(), next.phase.as_str(), next.result.as_str())
        == ("idle", "updated", "idle", "up-to-date")
        && last.running == next.running;
    last.same_as(next) || updated_then_idle
}

impl<O: OsApi, S: ClusterStore, K: Clock, J: Journal> Agent<O, S, K, J> {
    /// Runs until shutdown (or after one round with `once`). Returns the last round's outcome.
    pub async fn run(&self, once: bool) -> Outcome {
        let mut last = self.recover_until_done().await;
        if let Some(o) = &last {
            // Finishing what a previous run started is this run's round when running once.
            if once || matches!(o, Outcome::Interrupted | Outcome::Rebooting { .. }) {
                return self.after_reboot_request(o.clone(), once).await;
            }
        }
        let mut failures = 0u32;
        loop {
            // An undo that could not finish keeps its record: finish it before anything new.
            if self.load_record().in_flight.is_some() && !self.cfg.dry_run {
                if let Some(o @ (Outcome::Interrupted | Outcome::Rebooting { .. })) = self.recover_until_done().await {
                    return self.after_reboot_request(o, once).await;
                }
            }
            let mut now_requested = false;
            if !once {
                let wait = self.next_wait(failures).await;
                match self.wait_or_update_now(wait).await {
                    Ok(flag) => now_requested = flag,
                    Err(_) => return Outcome::Interrupted,
                }
            }
            let outcome = self.round(now_requested).await;
            tracing::info!(outcome = outcome.token(), detail = ?outcome, "round finished");
            failures = if matches!(outcome, Outcome::Failed { .. }) { failures + 1 } else { 0 };
            if matches!(outcome, Outcome::Rebooting { .. } | Outcome::Interrupted) {
                return self.after_reboot_request(outcome, once).await;
            }
            last = Some(outcome);
            if once {
                return last.unwrap_or(Outcome::Interrupted);
            }
        }
    }

    /// Sleeps `wait`, looking every `update-now-poll` for the operator's update-now attribute;
    /// true when it cut the wait short.
    async fn wait_or_update_now(&self, wait: Duration) -> Step_<bool> {
        let deadline = self.clock.now().plus(wait);
        let poll = self.cfg.maintenance.update_now_poll;
        loop {
            let remaining = deadline.since(self.clock.now());
            if remaining.is_zero() {
                return Ok(false);
            }
            let Some(store) = &self.cluster else {
                self.interruptible(self.clock.sleep(remaining)).await?;
                return Ok(false);
            };
            // Equal steps of about `poll`, the last ending at the round, whose own read of the
            // flags is that step's look: one read fewer per wait than steps of a random length.
            // The hosts' rounds already lie apart (their seeds, the check's jitter), and so do
            // their looks.
            let step = update_now_step(remaining, poll);
            self.interruptible(self.clock.sleep(step)).await?;
            if step == remaining {
                return Ok(false);
            }
            if !self.anything_to_install().await? {
                continue;
            }
            match store.describe_self().await {
                Ok(me) if me.attributes.contains_key(&self.names.update_now) => {
                    tracing::info!(attribute = %self.names.update_now, "operator asked to update now; skipping the wait");
                    return Ok(true);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot look for the update-now attribute"),
            }
        }
    }

    /// Whether an update-now look could lead anywhere: a refresh (a local call) shows a version
    /// to install. With none, update-now would only start a round that finds nothing, and the
    /// look is an ECS call from every idle host each hour; the round's own read still clears
    /// the attribute. A refresh or an `/os` read that fails looks anyway.
    async fn anything_to_install(&self) -> Step_<bool> {
        let status = match self.refresh().await {
            Ok(s) => s,
            Err(Halt::Shutdown) => return Err(Halt::Shutdown),
            Err(Halt::Done(o)) => {
                tracing::debug!(outcome = ?o, "cannot refresh; looking for update-now anyway");
                return Ok(true);
            }
        };
        let Ok(os) = self.os.os_info().await else { return Ok(true) };
        let found = candidate(&os, &status).is_some();
        if !found {
            tracing::debug!(running = %os.version_id, state = ?status.update_state, "nothing to install; not looking for update-now");
        }
        Ok(found)
    }

    /// After asking for the reboot the host goes down and systemd stops us with SIGTERM: wait for
    /// that (bounded), and if the host never goes down, undo rather than sit drained forever.
    async fn after_reboot_request(&self, outcome: Outcome, once: bool) -> Outcome {
        if !matches!(outcome, Outcome::Rebooting { .. }) || once {
            return outcome;
        }
        let waited = self.interruptible(self.clock.sleep(self.cfg.reboot_wait)).await;
        if waited.is_err() {
            tracing::info!("stopped while the host reboots, as expected");
            return outcome;
        }
        if self.load_record().in_flight.is_some_and(|f| f.rollback.is_some()) {
            // Undoing would deactivate the old version and leave the bad one in service: the
            // next start resumes the rollback from the record instead.
            tracing::error!(wait_s = self.cfg.reboot_wait.as_secs(), "host did not go down for the rollback reboot; the next start resumes the rollback");
            return Outcome::Failed { reason: "rollback reboot did not happen".into() };
        }
        tracing::error!(wait_s = self.cfg.reboot_wait.as_secs(), "host did not go down after the reboot was accepted; undoing");
        self.undo("reboot did not happen").await;
        Outcome::Failed { reason: "reboot did not happen".into() }
    }

    async fn next_wait(&self, failures: u32) -> Duration {
        if failures > 0 {
            let backoff = Backoff::new(Duration::from_secs(60), self.cfg.check_interval.min(Duration::from_secs(3600)));
            let wait = backoff.delay(failures - 1, &self.jitter);
            tracing::info!(wait_s = wait.as_secs(), failures, "retrying after a failed round");
            return wait;
        }
        let seed = match self.cfg.seed {
            Some(s) => s,
            None => match self.os.update_settings().await {
                Ok(s) => s.seed.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read settings.updates.seed; using a random slot");
                    (self.jitter.next_u64() % u64::from(crate::slot::SEED_SPACE)) as u32
                }
            },
        };
        self.memory.seed.set(Some(seed));
        let now = self.clock.now();
        let m = &self.cfg.maintenance;
        let schedule = Schedule { seed, interval: self.cfg.check_interval };
        let planned = crate::slot::plan(&schedule, &m.windows, m.expected_duration, now);
        let jitter = self.jitter.up_to(self.cfg.check_jitter);
        let at = planned.at.plus(jitter);
        match planned.window {
            Some(w) => tracing::info!(seed, at = %at, window_opens = %w.start, window_closes = %w.end,
                offset_s = planned.offset.as_secs(), jitter_s = jitter.as_secs(), "next check: seed's place in the next maintenance window"),
            None => tracing::info!(seed, at = %at, offset_s = planned.offset.as_secs(), jitter_s = jitter.as_secs(),
                interval_s = self.cfg.check_interval.as_secs(), "next check: seed's place in the check interval"),
        }
        at.since(now)
    }

    /// Whether an update may start now: inside a window, with time to finish before it closes.
    /// Returns the window's end (None when unrestricted or bypassed by update-now).
    fn window_fit(&self, bypass: bool) -> Result<Option<WallTime>, String> {
        let m = &self.cfg.maintenance;
        if bypass || !m.windows.is_restricted() {
            return Ok(None);
        }
        let now = self.clock.now();
        match m.windows.open_at(now) {
            None => {
                let next = m.windows.current_or_next(now).map(|o| o.start.to_string()).unwrap_or_default();
                Err(format!("outside the maintenance windows (next opens {next})"))
            }
            Some(o) if now.plus(m.expected_duration) > o.end => Err(format!(
                "an update ({}s) no longer fits before the window closes at {}",
                m.expected_duration.as_secs(),
                o.end
            )),
            Some(o) => Ok(Some(o.end)),
        }
    }

    /// Runs `fut` unless shutdown comes first.
    async fn interruptible<T>(&self, fut: impl Future<Output = T>) -> Step_<T> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => Err(Halt::Shutdown),
            v = fut => Ok(v),
        }
    }

    fn lease(&self) -> Option<LeaseClient<'_, S, K>> {
        let store = self.cluster.as_ref()?;
        Some(LeaseClient { store, clock: &self.clock, jitter: &self.jitter, names: &self.names, retry: self.retry() })
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy { budget: self.cfg.cluster.ecs_retry_budget, backoff: self.cfg.cluster.ecs_backoff }
    }

    async fn ecs<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        self.memory.ecs_calls.set(self.memory.ecs_calls.get() + 1);
        with_retry(&self.clock, &self.jitter, &self.retry(), what, op).await
    }

    // ---------------------------------------------------------------- one round

    /// One round: decide, and if there is an update, carry it up to the reboot request.
    pub async fn round(&self, now_requested: bool) -> Outcome {
        match self.try_round(now_requested).await {
            Ok(o) | Err(Halt::Done(o)) => {
                if !matches!(o, Outcome::Rebooting { .. }) {
                    self.publish_status("idle", None, &o).await;
                }
                o
            }
            Err(Halt::Shutdown) => {
                self.undo("stopped by signal").await;
                Outcome::Interrupted
            }
        }
    }

    async fn try_round(&self, now_requested: bool) -> Step_<Outcome> {
        let os = self.os_info().await?;
        let flags = self.instance_flags().await?;
        let flags_read = self.clock.now();
        if flags.opted_out {
            tracing::info!(attribute = %self.names.opt_out, "opted out by operator; not updating this host");
            return Ok(Outcome::OptedOut);
        }
        let bypass = now_requested || flags.update_now;
        if flags.update_now {
            self.clear_update_now().await;
        }
        let status = self.refresh().await?;
        let Some(target) = self.choose(&os, &status)? else {
            return Ok(Outcome::UpToDate { version: os.version_id });
        };
        self.halt_check(&target).await.map_err(Halt::Done)?;
        self.prepare(&status, &target).await?;
        let window_end = self.window_fit(bypass).map_err(|reason| {
            tracing::info!(reason = %reason, "not starting the update now");
            Halt::Done(Outcome::Skipped { reason })
        })?;
        if self.cfg.dry_run {
            tracing::info!(target = %target, "dry run: would take a slot, drain, activate and reboot");
            return Ok(Outcome::DryRun { target });
        }
        let mut flight = InFlight {
            step: Step::Leased,
            from_version: os.version_id.clone(),
            target_version: target.clone(),
            lease_token: None,
            drained_by_us: false,
            started_at: self.clock.now(),
            window_end,
            canary: false,
            rollback: None,
            claimed_at: None,
            claim_expires: None,
        };
        let held = self.take_slot(&mut flight, bypass, flags_read).await?;
        let held = self.drain(&mut flight, held, bypass).await?;
        let held = match held {
            Some(h) => Some(self.claim_for_reboot(h, &flight).await?),
            None => None,
        };
        self.activate(&mut flight).await?;
        self.reboot(&mut flight, held).await
    }

    /// After the drain, before the activation: the claim renewed to outlive the reboot, and the
    /// status saying so, in one write. The drain may have run long since the last renewal, so
    /// activation too then runs under a fresh claim; the reboot finds both already written.
    async fn claim_for_reboot(&self, held: Held, flight: &InFlight) -> Step_<Held> {
        let Some(lease) = self.lease() else { return Ok(held) };
        let outcome = Outcome::Rebooting { target: flight.target_version.clone() };
        let st = self.status_value("rebooting", &flight.from_version, &flight.target_version, outcome.token(), "");
        let extra = [(self.names.status.clone(), st.encode())];
        let renewed = lease.renew_with(&held, ClaimPhase::Rebooting, self.cfg.cluster.reboot_allowance, self.margin(), &extra);
        let kept = self.kept_or_undo(self.interruptible(renewed).await?).await?;
        *self.memory.status.borrow_mut() = Some(st);
        Ok(kept)
    }

    async fn os_info(&self) -> Step_<OsInfo> {
        self.os.os_info().await.map_err(|e| failed(format!("cannot read /os: {e}")))
    }

    /// The operator's per-host attributes: opt-out and update-now.
    async fn instance_flags(&self) -> Step_<Flags> {
        let Some(store) = &self.cluster else { return Ok(Flags::default()) };
        let me = self
            .ecs("DescribeContainerInstances", || store.describe_self())
            .await
            .map_err(|e| failed(format!("cannot read own instance: {e}")))?;
        if self.memory.status.borrow().is_none() {
            // A new process knows what it last wrote from ECS, so a round that changes nothing
            // writes nothing.
            *self.memory.status.borrow_mut() = me.attributes.get(&self.names.status).and_then(|v| Status::parse(v));
        }
        Ok(Flags {
            opted_out: me.attributes.get(&self.names.opt_out).is_some_and(|v| v.eq_ignore_ascii_case("true")),
            update_now: me.attributes.contains_key(&self.names.update_now),
        })
    }

    /// Acting on update-now consumes it, so it skips one wait only.
    async fn clear_update_now(&self) {
        let Some(store) = &self.cluster else { return };
        if self.cfg.dry_run {
            return;
        }
        let names = [self.names.update_now.clone()];
        match self.ecs("DeleteAttributes", || store.delete_attributes(&names)).await {
            Ok(()) => tracing::info!(attribute = %self.names.update_now, "update-now acted on and cleared"),
            Err(e) => tracing::warn!(error = %e, "cannot clear the update-now attribute"),
        }
    }

    /// Refreshes the update list (in a dry run, only reads it) and returns the status.
    async fn refresh(&self) -> Step_<UpdateStatus> {
        let b = &self.cfg.commands;
        let result = if self.cfg.dry_run {
            tracing::info!("dry run: reading the update status without refreshing");
            commands::read_status(&self.os, &self.clock, &self.jitter, &b.status).await.map(|s| {
                s.unwrap_or(UpdateStatus {
                    update_state: UpdateState::Idle,
                    available_updates: vec![],
                    chosen_update: None,
                    active_partition: None,
                    staging_partition: None,
                    most_recent_command: None,
                })
            })
        } else {
            self.interruptible(commands::run_command(&self.os, &self.clock, &self.jitter, Action::Refresh, &b.refresh))
                .await?
        };
        result.map_err(|e| failed(format!("refresh: {e}")))
    }

    /// The version to install, if any, with the reason logged either way.
    fn choose(&self, os: &OsInfo, status: &UpdateStatus) -> Step_<Option<String>> {
        let Some(target) = candidate(os, status) else {
            tracing::info!(running = %os.version_id, state = ?status.update_state, available = ?status.available_updates,
                "no update chosen (none published, version-lock, or this host's wave has not started)");
            return Ok(None);
        };
        let record = self.load_record();
        if record.is_quarantined(target, self.clock.now()) {
            tracing::warn!(target, "update failed to boot here recently; quarantined");
            return Err(Halt::Done(Outcome::Quarantined { version: target.to_string() }));
        }
        self.soaked(record, target)?;
        tracing::info!(running = %os.version_id, target, "update chosen");
        Ok(Some(target.to_string()))
    }

    /// `min-release-age`: a version is taken only once this host has known of it that long (the
    /// first sighting is kept in the record, across reboots and restarts; a dry run keeps none).
    fn soaked(&self, mut record: Record, target: &str) -> Step_<()> {
        let age = self.cfg.min_release_age;
        if age.is_zero() {
            return Ok(());
        }
        let now = self.clock.now();
        let first = match record.first_seen.get(target) {
            Some(t) => *t,
            None => {
                record.first_seen.insert(target.to_string(), now);
                if !self.cfg.dry_run {
                    self.journal.store(&record).map_err(|e| failed(format!("cannot write the record: {e}")))?;
                }
                now
            }
        };
        let ready = first.plus(age);
        if now >= ready {
            return Ok(());
        }
        let reason = format!("soaking: version {target} first seen {first}, taken from {ready} (min-release-age)");
        tracing::info!(target, first_seen = %first, ready = %ready, "not taking a version this young");
        Err(Halt::Done(Outcome::Skipped { reason }))
    }

    /// Downloads the update to the inactive partition before any cluster step, so the host
    /// spends no drained time downloading.
    async fn prepare(&self, status: &UpdateStatus, target: &str) -> Step_<()> {
        if status.staged_version() == Some(target) {
            tracing::info!(target, state = ?status.update_state, "update already staged");
            return Ok(());
        }
        if self.cfg.dry_run {
            tracing::info!(target, "dry run: would prepare (download) the update");
            return Ok(());
        }
        let b = &self.cfg.commands.prepare;
        tracing::info!(target, budget_s = b.total.as_secs(), "preparing update (download to inactive partition)");
        let st = self
            .interruptible(commands::run_command(&self.os, &self.clock, &self.jitter, Action::Prepare, b))
            .await?
            .map_err(|e| failed(format!("prepare: {e}")))?;
        match st.staged_version() {
            Some(v) if v == target => Ok(()),
            other => Err(failed(format!("prepare staged {other:?}, expected {target}"))),
        }
    }

    fn load_record(&self) -> Record {
        match self.journal.load() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "in-flight record unreadable; setting it aside");
                let _ = self.journal.set_aside();
                Record::default()
            }
        }
    }

    /// Writes the record before the step it announces; a failure here stops the round.
    fn announce(&self, flight: &InFlight) -> Step_<()> {
        let mut r = self.load_record();
        r.in_flight = Some(flight.clone());
        self.journal.store(&r).map_err(|e| failed(format!("cannot write in-flight record: {e}")))?;
        tracing::info!(step = ?flight.step, target = %flight.target_version, "in-flight record written");
        Ok(())
    }

    // ---------------------------------------------------------------- cluster steps

    fn lease_params(&self, max_concurrent: u32) -> LeaseParams {
        let c = &self.cfg.cluster;
        LeaseParams {
            max_concurrent,
            ttl: c.lease_ttl,
            settle: c.settle_time,
            skew: c.clock_skew,
            backoff: c.lease_backoff,
            wait_poll_max: c.wait_poll_max,
            rule: LeaseRule::CountOthers,
            foreign_draining: c.count_foreign_draining,
            // An update that runs past the operator's expected duration may have failed.
            stuck_after: Some(self.cfg.maintenance.expected_duration),
        }
    }

    /// How close to its expiry a claim may be renewed or acted on (see [`LeaseParams::margin`]).
    fn margin(&self) -> Duration {
        self.lease_params(1).margin()
    }

    /// Reads the fleet-wide tags, and with them the cluster's instance count: no limit when
    /// paused, else the N to use.
    async fn fleet_limit(&self) -> Result<Gate, LeaseError> {
        let Some(store) = &self.cluster else { return Ok(Gate::open(self.cfg.cluster.max_concurrent)) };
        let summary = self.ecs("DescribeClusters", || store.describe_cluster()).await?;
        let fleet = crate::fleet::tags::FleetTags::read(&summary.tags, &self.names, self.cfg.cluster.max_concurrent);
        let registered = Some(summary.registered_instances);
        if fleet.paused {
            return Ok(Gate { limit: None, registered });
        }
        if let crate::fleet::tags::LimitSource::InvalidTag(v) = &fleet.source {
            tracing::warn!(tag = %self.names.max_concurrent_tag, value = %v, "ignoring invalid cluster tag");
        }
        Ok(Gate { limit: Some(fleet.limit), registered })
    }

    /// Fails with [`Outcome::Halted`] when `version` failed on `cluster.halt-after-failures`
    /// instances of the cluster (an unreadable listing fails the round: it is retried later).
    async fn halt_check(&self, version: &str) -> Result<(), Outcome> {
        let Some(store) = &self.cluster else { return Ok(()) };
        let threshold = self.cfg.cluster.halt_after_failures;
        if threshold == 0 {
            return Ok(());
        }
        let markers = match self.ecs("ListAttributes", || store.list_attribute(&self.names.failed)).await {
            Ok(m) => m,
            Err(e) => return Err(Outcome::Failed { reason: format!("cannot read the failure markers: {e}") }),
        };
        let failed = crate::halt::failed_on(&markers, version);
        if !crate::halt::halts(&failed, threshold) {
            *self.memory.halt_passed.borrow_mut() = Some((version.to_string(), self.clock.now()));
            return Ok(());
        }
        let on: Vec<&str> = failed.iter().map(|a| crate::status::short_id(a)).collect();
        tracing::warn!(version, failed_on = %on.join(" "), threshold, "halted: version {version} failed on {}", on.join(" "));
        self.notify(crate::notify::Event::Halted { version: version.into(), failed_on: failed.clone() });
        Err(Outcome::Halted { version: version.into(), failed_on: failed })
    }

    /// [`Self::halt_check`], unless one let `version` through within [`HALT_RECHECK`].
    async fn halt_check_unless_recent(&self, version: &str) -> Result<(), Outcome> {
        let recent = self.memory.halt_passed.borrow().as_ref().is_some_and(|(v, at)| v == version && self.clock.now().since(*at) < HALT_RECHECK);
        if recent {
            return Ok(());
        }
        self.halt_check(version).await
    }

    /// Reads the operator's flags again when the last read (`read_at`) is older than
    /// [`FLAGS_RECHECK`]: fails with [`Outcome::OptedOut`] when an operator opted the host out
    /// meanwhile, and with the round's failure when the instance cannot be read (no claim
    /// without knowing).
    async fn still_opted_in(&self, read_at: &std::cell::Cell<WallTime>) -> Result<(), Outcome> {
        if self.clock.now().since(read_at.get()) < FLAGS_RECHECK || self.names.is_off(|o| o.opt_out_recheck) {
            return Ok(());
        }
        match self.instance_flags().await {
            Ok(flags) if flags.opted_out => {
                tracing::info!(attribute = %self.names.opt_out, "opted out by operator while waiting for a slot; not claiming");
                Err(Outcome::OptedOut)
            }
            Ok(_) => {
                read_at.set(self.clock.now());
                Ok(())
            }
            Err(Halt::Done(outcome)) => Err(outcome),
            Err(Halt::Shutdown) => Err(Outcome::Skipped { reason: "shutting down".into() }),
        }
    }

    /// The limit for a version few hosts have taken yet: one at a time until
    /// `cluster.canary-hosts` instances run it and finished their update, then `n`. Two other
    /// hosts' confirmed claims for it (`confirmed`) show the count passed: under the canary's
    /// limit of one, no two could have been confirmed; a full look's claims are heeded too. The
    /// count is the one this look's gate read (`at_gate`, see [`Self::count_canaries_at_gate`]),
    /// or one read now.
    async fn canary_limit(&self, version: &str, n: u32, confirmed: u32, at_gate: Option<usize>) -> u32 {
        let canaries = self.cfg.cluster.canary_hosts;
        if canaries == 0 || self.cluster.is_none() {
            return n;
        }
        self.note_confirmed_claims(version, confirmed);
        if self.canaries_done(version) {
            self.memory.canary.set(false);
            return n;
        }
        let passed = match at_gate {
            Some(passed) => passed,
            // Unreadable: one at a time meanwhile.
            None => self.count_canaries(version).await.unwrap_or(0),
        };
        if self.note_canary_count(version, passed) {
            self.memory.canary.set(false);
            return n;
        }
        self.memory.canary.set(true);
        tracing::info!(version, passed, canaries, "canary: one host at a time until {canaries} updated to {version}");
        1
    }

    /// Two other hosts' confirmed claims for `version` (`confirmed`) show its canaries passed:
    /// under the canary's limit of one, no two could have been confirmed.
    fn note_confirmed_claims(&self, version: &str, confirmed: u32) {
        if confirmed >= 2 && self.cfg.cluster.canary_hosts > 0 && !self.canaries_done(version) {
            tracing::info!(version, confirmed, "canary passed: other hosts hold {confirmed} confirmed claims for {version}");
            *self.memory.canaries_done.borrow_mut() = Some(version.to_string());
        }
    }

    /// A count of `version`'s canaries (`passed`): whether it shows they passed, remembered.
    fn note_canary_count(&self, version: &str, passed: usize) -> bool {
        let canaries = self.cfg.cluster.canary_hosts;
        let done = passed as u64 >= u64::from(canaries);
        if done && !self.canaries_done(version) {
            tracing::info!(version, canaries, "canary passed: {canaries} instances updated to {version}");
            *self.memory.canaries_done.borrow_mut() = Some(version.to_string());
        }
        done
    }

    /// Whether `version`'s canaries are known to have passed.
    fn canaries_done(&self, version: &str) -> bool {
        self.memory.canaries_done.borrow().as_deref() == Some(version)
    }

    /// How many instances finished their update to `version`, counted up to the number of
    /// canaries (`None` when unreadable). The marker each host writes with its `updated` status,
    /// listed by value: the first page answers, however large the fleet. A host updated by an
    /// agent without the marker is not counted, which only keeps the canary narrow for longer.
    async fn count_canaries(&self, version: &str) -> Option<usize> {
        let store = self.cluster.as_ref()?;
        let enough = usize::try_from(self.cfg.cluster.canary_hosts).unwrap_or(usize::MAX);
        match self.ecs("ListAttributes", || store.list_attribute_value(&self.names.updated, version, enough)).await {
            Ok(attrs) => Some(attrs.len()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the canaries; one at a time meanwhile");
                None
            }
        }
    }

    /// The canary count read at a look's gate, before the claims are listed, while `version`'s
    /// canaries are not known to have passed (`None` otherwise, or when unreadable): a waiter
    /// kept out by a full fleet learns that they passed before its turn comes, and the look that
    /// finds a slot free reads nothing more between its listing of the claims and its claim,
    /// which should follow that listing closely. The count only ever grows, so a read one call
    /// early can only hold a host back, never let one through; but it would make a host that
    /// finds the canary's slot free a second canary, so such a look counts again.
    async fn count_canaries_at_gate(&self, version: &str) -> Option<usize> {
        if self.cfg.cluster.canary_hosts == 0 || self.canaries_done(version) {
            return None;
        }
        let passed = self.count_canaries(version).await?;
        self.note_canary_count(version, passed);
        Some(passed)
    }

    /// Writes this instance's failure marker for `version` (never in a dry run).
    async fn record_failure(&self, version: &str, reason: &str) {
        self.notify(crate::notify::Event::Failed { version: version.into(), reason: reason.into() });
        let Some(store) = &self.cluster else { return };
        if self.cfg.dry_run {
            return;
        }
        let marker = crate::halt::FailureMarker { version: version.into(), at: self.clock.now(), reason: reason.into() };
        let attrs = [(self.names.failed.clone(), marker.encode())];
        match self.ecs("PutAttributes", || store.put_attributes(&attrs)).await {
            Ok(()) => tracing::warn!(version, reason, "failure marker written: the cluster halts this version"),
            Err(e) => tracing::error!(error = %e, version, "cannot write the failure marker"),
        }
    }

    async fn take_slot(&self, flight: &mut InFlight, bypass: bool, flags_read: WallTime) -> Step_<Option<Held>> {
        let Some(lease) = self.lease() else { return Ok(None) };
        // Recorded before the claim is written, so a crash in between still withdraws it.
        self.announce(flight)?;
        let mut params = self.lease_params(self.cfg.cluster.max_concurrent);
        if let Some(end) = flight.window_end {
            // A waiter wakes no later than the update stops fitting in this window, so that it
            // plans its place in the next window rather than sleep into it.
            let fits_until = end.minus(self.cfg.maintenance.expected_duration);
            params.wait_poll_max = params.wait_poll_max.min(fits_until.since(self.clock.now()).max(Duration::from_secs(60)));
        }
        let halted: std::cell::RefCell<Option<Outcome>> = Default::default();
        let gates = std::cell::Cell::new(0u32);
        // The canary count this look's gate read, until the look works out its limit.
        let gate_count: std::cell::Cell<Option<usize>> = Default::default();
        let gate = || async {
            self.window_fit(bypass).map_err(LeaseError::NotNow)?;
            let gate = self.fleet_limit().await?;
            // Not on the first look: its claims may show the canaries passed (see
            // `canary_limit`), which then costs no count at all.
            let first = gates.replace(gates.get() + 1) == 0;
            match gate.limit {
                Some(_) if !first => gate_count.set(self.count_canaries_at_gate(&flight.target_version).await),
                Some(_) => {}
                None => {
                    let why = format!("fleet paused by cluster tag {}", self.names.paused_tag);
                    self.publish("waiting", Some(&flight.target_version), "paused", &why).await;
                }
            }
            Ok(gate)
        };
        // The canary count, until it is known to have passed, at the gate of every look but the
        // first (it is the limit those looks apply); at N = 1 too: a canary bakes longer. The
        // operator's flags, when old, once the limit too leaves a slot free; otherwise, the
        // failure markers (the check after a claim reads those before any drain; the fleet
        // view shows a halt meanwhile).
        let (version, halted_ref, gate_count) = (flight.target_version.as_str(), &halted, &gate_count);
        let flags_read = std::cell::Cell::new(flags_read);
        let flags_ref = &flags_read;
        let ready = |n: u32, seen: ClaimsInView| async move {
            let before = self.memory.ecs_calls.get();
            let checked = async {
                // A count from the gate that would make this host a canary is counted again: the
                // canary may have finished between that count and the listing that found its slot
                // free (it says so before it releases, so a count after the listing sees it).
                let at_gate = gate_count.take().filter(|_| seen.taken > 0);
                let limit = self.canary_limit(version, n, seen.confirmed_same_target, at_gate).await;
                if seen.taken < limit {
                    // A look that claims leaves the failure markers to the check after the
                    // claim, which reads them before any drain. The flags only here: a
                    // canary's waiters look often.
                    self.still_opted_in(flags_ref).await?;
                } else {
                    // A look that waits (at the canary's limit, or behind a holder past its
                    // expected duration) learns of a halt that keeps it waiting.
                    self.halt_check_unless_recent(version).await?;
                }
                Ok::<u32, Outcome>(limit)
            };
            match checked.await {
                Ok(limit) => Ok((limit, self.memory.ecs_calls.get() != before)),
                Err(outcome) => {
                    let why = outcome.token().to_string();
                    *halted_ref.borrow_mut() = Some(outcome);
                    Err(LeaseError::NotNow(why))
                }
            }
        };
        let target = flight.target_version.clone();
        // Named only when they hold it up past the expected duration (or without a live claim):
        // a status that named every holder was rewritten at nearly every look of a rollout
        // going well, and the fleet view shows the holders from their claims anyway.
        let waiting = |blocking: Vec<String>, seen: ClaimsInView| {
            self.note_confirmed_claims(version, seen.confirmed_same_target);
            let detail = match blocking.is_empty() {
                true => "all slots taken".to_string(),
                false => format!("slots held by {}", blocking.join(" ")),
            };
            let target = target.clone();
            async move { self.publish("waiting", Some(&target), "waiting-for-slot", &detail).await }
        };
        let held = self.interruptible(lease.acquire_when(&params, &flight.target_version, gate, ready, waiting)).await?;
        let held = match held {
            Ok(h) => h,
            Err(LeaseError::NotNow(reason)) => {
                self.undo(&reason).await;
                let outcome = halted.borrow_mut().take().unwrap_or(Outcome::Skipped { reason });
                return Err(Halt::Done(outcome));
            }
            Err(e) => {
                self.undo("could not take a slot").await;
                return Err(failed(format!("lease: {e}")));
            }
        };
        flight.lease_token = Some(held.claim.token.clone());
        flight.claimed_at = Some(WallTime::from_secs(held.claim.claimed_at));
        flight.canary = self.memory.canary.get();
        self.announce(flight)?;
        // A host may have failed on this version while this one waited for the slot.
        if let Err(halted) = self.halt_check(&flight.target_version).await {
            self.undo("the version was halted while waiting for a slot").await;
            return Err(Halt::Done(halted));
        }
        Ok(Some(held))
    }

    async fn drain(&self, flight: &mut InFlight, held: Option<Held>, bypass: bool) -> Step_<Option<Held>> {
        let (Some(store), Some(mut held)) = (&self.cluster, held) else { return Ok(None) };
        // The slot may have taken a while: the update must still fit before the window closes.
        if let Err(reason) = self.window_fit(bypass) {
            self.undo(&reason).await;
            return Err(Halt::Done(Outcome::Skipped { reason }));
        }
        let instance_status = self.own_status_for_drain(store, &held).await?;
        // Listed here, not before the claim: a waiter could not use the answer (a task may
        // start or end while it waits), and a host that finds a slot free lists them once.
        // Under `wait` nothing is decided on them before the drain, whose end lists them anyway.
        if self.cfg.cluster.standalone_tasks == StandalonePolicy::Skip {
            let tasks = self.ecs_or_undo("ListTasks", || store.kept_running_tasks()).await?;
            if let Some(reason) = standalone_reason(&tasks) {
                self.undo(&reason).await;
                return Err(Halt::Done(Outcome::Skipped { reason }));
            }
        }
        let lease = self.lease().ok_or_else(|| failed("no cluster"))?;
        let before = held.claim.clone();
        held.claim = lease.renewed(&held, ClaimPhase::Draining, self.cfg.cluster.lease_ttl);
        // One write: the claim's new phase, the marker that says we drained, and the status.
        let status = self.status_value("draining", &flight.from_version, &flight.target_version, "in-progress", "");
        let mut attrs = vec![(self.names.lease.clone(), held.claim.encode()), (self.names.status.clone(), status.encode())];
        let ours = match instance_status {
            InstanceStatus::Active => true,
            InstanceStatus::Draining => {
                tracing::info!("instance already DRAINING by someone else; will not re-activate it");
                false
            }
            InstanceStatus::Other(s) => {
                let reason = format!("instance is {s}, not ACTIVE");
                self.undo(&reason).await;
                return Err(Halt::Done(Outcome::Skipped { reason }));
            }
        };
        flight.step = Step::Draining;
        flight.drained_by_us = ours;
        self.announce(flight)?;
        // Whoever drained, the marker keeps the slot until the update is over: a claim can lapse
        // (a renewal that lands late) while the instance is back ACTIVE by its drainer's hand.
        if ours {
            attrs.push((self.names.drained.clone(), format!("by-agent:{}", held.claim.token)));
        } else if !self.names.is_off(|o| o.marker_when_drained_by_others) {
            attrs.push((self.names.drained.clone(), format!("{}{}", crate::lease::DRAINED_BY_OTHERS, held.claim.token)));
        }
        self.ecs_or_undo("PutAttributes", || store.put_attributes(&attrs)).await?;
        *self.memory.status.borrow_mut() = Some(status);
        // The write must have landed while others still counted the claim it renews; otherwise
        // another host may hold the slot already, and this one must not drain.
        if let Err(e) = lease.in_time(&before, self.margin()) {
            let reason = format!("cannot keep the slot: {e}");
            tracing::error!(reason = %reason, "stopping before the drain");
            self.undo(&reason).await;
            return Err(failed(reason));
        }
        if ours {
            self.ecs_or_undo("UpdateContainerInstancesState", || store.set_status(SetStatus::Draining)).await?;
            tracing::info!(instance = store.instance_arn(), "instance set to DRAINING");
        }
        self.notify(crate::notify::Event::DrainStarted { version: flight.target_version.clone() });
        held = self.wait_drained(store, held).await?;
        Ok(Some(held))
    }

    /// This instance's status as the drain starts. The count that confirmed the claim listed the
    /// DRAINING instances seconds ago and saw the claim there: a describe would tell nothing
    /// new. Without that listing (`count-foreign-draining = false`), one describe, which also
    /// shows the claim still ours.
    async fn own_status_for_drain(&self, store: &S, held: &Held) -> Step_<InstanceStatus> {
        match held.own_draining {
            Some(true) => return Ok(InstanceStatus::Draining),
            Some(false) => return Ok(InstanceStatus::Active),
            None => {}
        }
        let me = self.ecs_or_undo("DescribeContainerInstances", || store.describe_self()).await?;
        let lease = self.lease().ok_or_else(|| failed("no cluster"))?;
        if let Err(e) = lease.check_own(&me.attributes, held, self.margin()) {
            let reason = format!("cannot keep the slot: {e}");
            self.undo(&reason).await;
            return Err(failed(reason));
        }
        Ok(me.status)
    }

    /// An ECS call that, when it fails for good, undoes the round.
    async fn ecs_or_undo<T, F, Fut>(&self, what: &str, op: F) -> Step_<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        match self.interruptible(self.ecs(what, op)).await? {
            Ok(v) => Ok(v),
            Err(e) => {
                let reason = format!("{what}: {e}");
                self.undo(&reason).await;
                Err(failed(reason))
            }
        }
    }

    /// Waits until no task on the instance is left, renewing the claim meanwhile. While the ECS
    /// agent's own view shows a task not stopped, ECS cannot say the drain is over, so most looks
    /// cost no ECS call: the claim is renewed when due and the view looked at every
    /// `drain-poll-interval`. Without that view, a look is one describe: while ECS still counts a
    /// task it means to keep running, the drain is not over (a stale count only delays the end by
    /// a look), and looks thin out from `drain-poll-interval` to four times it. The task listing,
    /// which alone can say the drain is over (it also shows tasks still stopping), is read when
    /// either count reaches zero and at least every [`FULL_LOOK_EVERY`] (a standalone task, a
    /// timeout), or every [`FULL_LOOK_EVERY_WITH_VIEW`] while the view answers.
    async fn wait_drained(&self, store: &S, mut held: Held) -> Step_<Held> {
        let c = &self.cfg.cluster;
        let start = self.clock.now();
        let mut listed_at = start;
        let mut viewed = false;
        loop {
            let waited = self.clock.now().since(start);
            let full_every = if viewed { FULL_LOOK_EVERY_WITH_VIEW } else { FULL_LOOK_EVERY };
            if self.clock.now().since(listed_at) < full_every && waited < c.drain_timeout.min(c.standalone_task_timeout) {
                let local = store.local_tasks().await;
                viewed = matches!(local, LocalTasks::Unstopped(_));
                if let LocalTasks::Unstopped(n @ 1..) = local {
                    tracing::debug!(unstopped = n, waited_s = waited.as_secs(), "tasks still running (ECS agent's view)");
                    held = self.keep_claim(held, ClaimPhase::Draining, c.lease_ttl).await?;
                    self.interruptible(self.clock.sleep(self.local_pause(&held))).await?;
                    continue;
                }
                // With the ECS agent's view at zero, the task listing is the next word.
                let me = match local {
                    LocalTasks::Unstopped(_) => None,
                    _ => Some(self.ecs_or_undo("DescribeContainerInstances", || store.describe_self()).await?),
                };
                if let Some(me) = me {
                    held = self.keep_claim_seen(held, &me.attributes).await?;
                    if me.running_tasks > 0 {
                        tracing::debug!(running = me.running_tasks, waited_s = waited.as_secs(), "tasks still running");
                        self.interruptible(self.clock.sleep(self.drain_pause(&held, waited))).await?;
                        continue;
                    }
                }
            }
            listed_at = self.clock.now();
            let tasks = self.ecs_or_undo("ListTasks", || store.running_tasks()).await?;
            let left = TasksLeft::of(&tasks);
            let waited = self.clock.now().since(start);
            if tasks.is_empty() {
                tracing::info!(waited_s = waited.as_secs(), "drained: every task on the instance has stopped");
                return Ok(held);
            }
            if left.standalone > 0 && c.standalone_tasks == StandalonePolicy::Skip {
                let reason = format!("{} standalone task(s) started during the drain would not be moved by ECS", left.standalone);
                self.undo(&reason).await;
                return Err(Halt::Done(Outcome::Skipped { reason }));
            }
            let limit = if left.services + left.stopping == 0 { c.standalone_task_timeout } else { c.drain_timeout };
            if waited >= limit {
                let reason = format!("drain timed out after {}s with {left} left", waited.as_secs());
                self.undo(&reason).await;
                return Err(Halt::Done(Outcome::Skipped { reason }));
            }
            tracing::info!(services = left.services, stopping = left.stopping, standalone = left.standalone,
                waited_s = waited.as_secs(), "waiting for tasks to stop");
            held = self.keep_claim(held, ClaimPhase::Draining, c.lease_ttl).await?;
            self.interruptible(self.clock.sleep(self.drain_pause(&held, waited))).await?;
        }
    }

    /// The pause before the next look at the ECS agent's view of a drain: `drain-poll-interval`,
    /// or less when the claim is due for renewal sooner.
    fn local_pause(&self, held: &Held) -> Duration {
        let c = &self.cfg.cluster;
        let due = WallTime::from_secs(held.claim.expires_at).minus(c.lease_ttl / 2);
        c.drain_poll_interval.min(due.since(self.clock.now())).max(Duration::from_secs(1))
    }

    /// The pause before the next look at the drain (see [`drain_pause`]).
    fn drain_pause(&self, held: &Held, waited: Duration) -> Duration {
        let c = &self.cfg.cluster;
        let due = WallTime::from_secs(held.claim.expires_at).minus(c.lease_ttl / 2);
        drain_pause(c.drain_poll_interval, waited, due.since(self.clock.now()))
    }

    /// [`Self::keep_claim`] in the draining phase against attributes just read: renews (one
    /// write) only when less than half the claim's life is left.
    async fn keep_claim_seen(&self, held: Held, attrs: &std::collections::BTreeMap<String, String>) -> Step_<Held> {
        let Some(lease) = self.lease() else { return Ok(held) };
        let ttl = self.cfg.cluster.lease_ttl;
        let left = WallTime::from_secs(held.claim.expires_at).since(self.clock.now());
        if held.claim.phase == ClaimPhase::Draining && left > ttl / 2 {
            return Ok(held);
        }
        let renewed = self.interruptible(lease.renew_seen(attrs, &held, ClaimPhase::Draining, ttl, self.margin(), &[])).await?;
        self.kept_or_undo(renewed).await
    }

    /// Renews the claim when less than half its life is left (and always on a phase change).
    async fn keep_claim(&self, held: Held, phase: ClaimPhase, ttl: Duration) -> Step_<Held> {
        let Some(lease) = self.lease() else { return Ok(held) };
        let left = WallTime::from_secs(held.claim.expires_at).since(self.clock.now());
        if held.claim.phase == phase && left > ttl / 2 {
            return Ok(held);
        }
        let renewed = self.interruptible(lease.renew(&held, phase, ttl, self.margin())).await?;
        self.kept_or_undo(renewed).await
    }

    /// A renewal's result: the claim kept, or the round undone before any further side effect.
    async fn kept_or_undo(&self, renewed: Result<Held, LeaseError>) -> Step_<Held> {
        match renewed {
            Ok(h) => Ok(h),
            Err(e) => {
                let reason = format!("cannot keep the slot: {e}");
                tracing::error!(reason = %reason, "stopping before any further side effect");
                self.undo(&reason).await;
                Err(failed(reason))
            }
        }
    }

    // ---------------------------------------------------------------- host steps

    async fn activate(&self, flight: &mut InFlight) -> Step_<()> {
        flight.step = Step::Activating;
        self.announce(flight)?;
        let b = &self.cfg.commands.activate;
        match self.interruptible(commands::run_command(&self.os, &self.clock, &self.jitter, Action::Activate, b)).await? {
            Ok(_) => Ok(()),
            Err(CommandError::NotAllowed { status: Some(s), .. })
                if s.update_state == UpdateState::Ready && s.staged_version() == Some(flight.target_version.as_str()) =>
            {
                tracing::info!("update was already active");
                Ok(())
            }
            Err(e) => {
                let reason = format!("activate: {e}");
                self.undo(&reason).await;
                Err(failed(reason))
            }
        }
    }

    async fn reboot(&self, flight: &mut InFlight, held: Option<Held>) -> Step_<Outcome> {
        let held = match held {
            // The claim must outlive shutdown, boot and our restart: nobody may take our slot
            // while this host is down.
            Some(h) => Some(self.keep_claim(h, ClaimPhase::Rebooting, self.cfg.cluster.reboot_allowance).await?),
            None => None,
        };
        flight.step = Step::Rebooting;
        flight.claim_expires = held.as_ref().map(|h| WallTime::from_secs(h.claim.expires_at));
        self.announce(flight)?;
        self.publish_status("rebooting", Some(&flight.target_version), &Outcome::Rebooting { target: flight.target_version.clone() }).await;
        // Publishing may have been retried for a while: reboot only under a claim others count.
        if let (Some(lease), Some(h)) = (self.lease(), &held) {
            if let Err(e) = lease.in_time(&h.claim, self.margin()) {
                let reason = format!("cannot keep the slot: {e}");
                self.undo(&reason).await;
                return Err(failed(reason));
            }
        }
        let b = &self.cfg.commands.reboot;
        // Not interruptible: once asked, SIGTERM is the expected end, and the request is quick.
        match commands::request_reboot(&self.os, &self.clock, &self.jitter, b).await {
            Ok(RebootRequest::Accepted) => tracing::info!(target = %flight.target_version, "reboot accepted"),
            Ok(RebootRequest::ConnectionLost) => tracing::info!("connection lost while asking for the reboot: host going down"),
            Err(e) => {
                let reason = format!("reboot refused: {e}");
                self.undo(&reason).await;
                return Err(failed(reason));
            }
        }
        Ok(Outcome::Rebooting { target: flight.target_version.clone() })
    }

    // ---------------------------------------------------------------- recovery

    /// Finishes or undoes what a previous run left, retrying until it is done (or shutdown).
    /// After a reboot the claim is kept alive the whole way back into service.
    async fn recover_until_done(&self) -> Option<Outcome> {
        if self.cfg.dry_run {
            self.report_leftovers().await;
            return None;
        }
        let rebooted = self.load_record().in_flight.filter(|f| f.step == Step::Rebooting);
        match rebooted {
            Some(f) => self.finish_with_claim_kept(f).await,
            None => self.retry_until_done(|| self.recover()).await,
        }
    }

    /// Runs `attempt` until it succeeds, backing off between tries; `Interrupted` on shutdown.
    async fn retry_until_done<F, Fut>(&self, mut attempt: F) -> Option<Outcome>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<Outcome>, String>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(o) => return o,
                Err(reason) => {
                    let delay = self.cfg.cluster.ecs_backoff.delay(tries, &self.jitter).max(Duration::from_secs(5));
                    tracing::error!(reason = %reason, retry_s = delay.as_secs(), "recovery incomplete; will retry");
                    tries += 1;
                    if self.interruptible(self.clock.sleep(delay)).await.is_err() {
                        return Some(Outcome::Interrupted);
                    }
                }
            }
        }
    }

    /// On start, before a reboot: undo what a previous run left (with no record, anything of
    /// ours on the instance is a leftover).
    pub async fn recover(&self) -> Result<Option<Outcome>, String> {
        match self.load_record().in_flight {
            Some(f) if f.step == Step::Rebooting => Err("an update after a reboot is finished with its claim kept".into()),
            Some(f) => {
                tracing::warn!(step = ?f.step, target = %f.target_version, "previous run stopped before the reboot; undoing");
                if self.undo_inner(&format!("interrupted at {:?}", f.step)).await {
                    Ok(None)
                } else {
                    Err("undo incomplete".into())
                }
            }
            None => self.release_strays().await.map(|_| None),
        }
    }

    /// Dry run: say what a real start would finish or undo, and touch nothing.
    async fn report_leftovers(&self) {
        if let Some(f) = self.load_record().in_flight {
            let act = if f.step == Step::Rebooting { "finish (verify and return to service)" } else { "undo" };
            tracing::warn!(step = ?f.step, target = %f.target_version, action = act, "dry run: found an update in flight; would {act} it, changing nothing");
        }
        let Some(store) = &self.cluster else { return };
        if let Ok(me) = store.describe_self().await {
            let has_claim = me.attributes.contains_key(&self.names.lease);
            let has_marker = me.attributes.contains_key(&self.names.drained);
            if has_claim || has_marker {
                tracing::warn!(has_claim, has_marker, status = ?me.status, "dry run: found our claim or drain marker; would clean them up, changing nothing");
            }
        }
    }

    /// With no record, anything of ours still on the instance is a leftover: release if held,
    /// re-activate if our marker says we drained it.
    async fn release_strays(&self) -> Result<(), String> {
        let Some(store) = &self.cluster else { return Ok(()) };
        let me = self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?;
        let has_claim = me.attributes.contains_key(&self.names.lease);
        let has_marker = me.attributes.contains_key(&self.names.drained);
        if !has_claim && !has_marker {
            return Ok(());
        }
        tracing::warn!(has_claim, has_marker, "found our claim or drain marker with no in-flight record; cleaning up");
        if self.undo_inner("leftover from an earlier run").await {
            Ok(())
        } else {
            Err("cleanup incomplete".into())
        }
    }

    /// After the reboot: renew the claim before anything else, keep it alive in the background,
    /// and verify and return to service under it, however long that takes.
    async fn finish_with_claim_kept(&self, f: InFlight) -> Option<Outcome> {
        let keeper = match (self.lease(), &f.lease_token) {
            (Some(lease), Some(_)) if !self.names.is_off(|o| o.claim_keeper) => {
                Some(ClaimKeeper::new(lease, self.cfg.cluster.lease_ttl, self.margin()))
            }
            _ => None,
        };
        let Some(keeper) = keeper else {
            return self.retry_until_done(|| async { self.finish_after_reboot(&f, None).await.map(Some) }).await;
        };
        let token = f.lease_token.clone().unwrap_or_default();
        if self.interruptible(self.until_ecs_agent_answers(&f)).await.is_err() {
            return Some(Outcome::Interrupted);
        }
        let first = self.retry_until_done(|| async {
            let read = keeper.first_renewal(&token, self.returns_at_once(&f)).await.map_err(|e| format!("cannot renew the claim after boot: {e}"))?;
            *self.memory.boot_read.borrow_mut() = Some((self.clock.now(), read.1));
            Ok(None)
        });
        if let Some(o) = first.await {
            return Some(o);
        }
        let work = self.retry_until_done(|| async { self.finish_after_reboot(&f, Some(&keeper)).await.map(Some) });
        tokio::select! {
            biased;
            o = work => o,
            _ = keeper.run() => None,
        }
    }

    /// After the boot, before the first renewal: waits up to a minute for the ECS agent to
    /// answer on this host, so that the renewal's read of the instance also serves the health
    /// gate's first look (one describe, not two). Never longer than the claim written before the
    /// reboot keeps over half a TTL: the keeper's own rule for a renewal.
    async fn until_ecs_agent_answers(&self, f: &InFlight) {
        let (Some(store), Some(expires)) = (&self.cluster, f.claim_expires) else { return };
        let start = self.clock.now();
        let until = expires.minus(self.cfg.cluster.lease_ttl / 2).min(start.plus(GATE_ASK_EVERY_WHILE_AWAY));
        // The ECS agent answers locally at no ECS call: looked at closely.
        let poll = self.cfg.health.poll_interval.min(Duration::from_secs(2));
        while self.clock.now() < until && store.local_tasks().await == LocalTasks::Down {
            self.clock.sleep(poll.min(until.since(self.clock.now()))).await;
        }
        tracing::info!(waited_s = self.clock.now().since(start).as_secs(), "renewing the claim after boot");
    }

    async fn finish_after_reboot(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>) -> Result<Outcome, String> {
        let os = self.after_boot(self.os.os_info().await, "cannot read /os after boot").await?;
        let status = self
            .after_boot(commands::read_status(&self.os, &self.clock, &self.jitter, &self.cfg.commands.status).await, "cannot read update status after boot")
            .await?;
        if keeper.is_none() {
            // Without a keeper (no claim, or the fix switched off) the claim is renewed once, here.
            self.renew_after_boot(f).await?;
        }
        // The record, not `f`, says whether a rollback is under way: it may have started after `f` was read.
        let rolling_back = self.load_record().in_flight.and_then(|x| x.rollback);
        let result = if let Some(rb) = rolling_back {
            match self.after_rollback_boot(f, &rb, &os, status.as_ref(), keeper).await? {
                Finish::Result(r) => r,
                Finish::Rebooting(o) => return Ok(o),
            }
        } else if os.version_id == f.target_version {
            tracing::info!(from = %f.from_version, to = %os.version_id, "booted into the new version");
            "updated"
        } else if os.version_id == f.from_version {
            let staged_ready = status.as_ref().is_some_and(|s| {
                s.update_state == UpdateState::Ready && s.staged_version() == Some(f.target_version.as_str())
            });
            if staged_ready {
                let held = match keeper {
                    Some(k) => k.stop().await,
                    None => None,
                };
                return self.reboot_again(f, held).await;
            }
            self.quarantine(&f.target_version, "did not boot; the host rolled back")?;
            tracing::error!(target = %f.target_version, running = %os.version_id, "new version did not boot (rolled back); quarantined");
            self.notify(crate::notify::Event::RolledBack { version: f.target_version.clone(), reason: format!("did not boot; running {} again", os.version_id) });
            self.record_failure(&f.target_version, "rolled-back").await;
            "rolled-back"
        } else {
            tracing::warn!(expected = %f.target_version, running = %os.version_id, "running an unexpected version");
            self.record_failure(&f.target_version, "unexpected-version").await;
            "unexpected-version"
        };
        let result = if result == "updated" && self.cluster.is_some() {
            match self.gate_and_bake(f, keeper).await? {
                Finish::Result(r) => r,
                Finish::Rebooting(o) => return Ok(o),
            }
        } else {
            self.return_to_service(f, keeper).await?;
            result
        };
        if let Some(end) = f.window_end.filter(|end| self.clock.now() > *end) {
            tracing::warn!(window_closed = %end, over_s = self.clock.now().since(end).as_secs(),
                "update ran over the maintenance window (it was already under way when the window closed)");
            self.notify(crate::notify::Event::OverWindow { version: f.target_version.clone(), closed: end });
        }
        self.clear_in_flight(result).map_err(|e| e.to_string())?;
        if result == "updated" { self.notify(crate::notify::Event::Updated { from: f.from_version.clone(), version: os.version_id.clone() }); }
        let outcome = Outcome::Finished { result: result.to_string(), version: os.version_id };
        self.publish_status("idle", None, &outcome).await;
        Ok(outcome)
    }

    /// Quarantines `version` here for `quarantine`, recorded in the journal.
    fn quarantine(&self, version: &str, why: &str) -> Result<(), String> {
        let mut r = self.load_record();
        let until = self.clock.now().plus(self.cfg.quarantine);
        r.quarantine(version, until, why, self.clock.now());
        self.journal.store(&r).map_err(|e| e.to_string())?;
        tracing::warn!(version, until = %until, reason = why, "version quarantined on this host");
        Ok(())
    }

    /// Back from a boot with a rollback under way: on the old version it is done (settings back,
    /// bad version quarantined, host back in service); still on the new one, it goes on, or holds
    /// when the old version will not boot.
    async fn after_rollback_boot(&self, f: &InFlight, rb: &Rollback, os: &OsInfo, status: Option<&UpdateStatus>,
        keeper: Option<&ClaimKeeper<'_, S, K>>) -> Result<Finish, String> {
        if os.version_id == f.from_version {
            self.restore_settings(rb).await?;
            self.quarantine(&f.target_version, &format!("failed after the update and was rolled back: {}", rb.reason))?;
            tracing::warn!(running = %os.version_id, bad = %f.target_version, "rolled back to the old version");
            self.notify(crate::notify::Event::RolledBack { version: f.target_version.clone(), reason: rb.reason.clone() });
            return Ok(Finish::Result("rolled-back"));
        }
        // A reboot that happened (the status is gone) yet landed on the new version again: the
        // old version failed its one boot attempt.
        let why = if rb.reboots > 0 && status.is_none() {
            format!("rollback failed: {} did not boot (running {})", f.from_version, os.version_id)
        } else {
            match self.roll_back(f, keeper, &rb.reason).await? {
                Rolled::Rebooting(o) => return Ok(Finish::Rebooting(o)),
                Rolled::Failed(why) => why,
            }
        };
        self.hold_after_failed_rollback(f, &why).await
    }

    /// The host stays on the new version after a rollback that did not finish: an old version
    /// the rollback activated must not boot at the next reboot.
    async fn unstage_old(&self, f: &InFlight) -> Result<(), String> {
        let b = &self.cfg.commands.status;
        let status = commands::read_status(&self.os, &self.clock, &self.jitter, b).await.map_err(|e| e.to_string())?;
        let old_ready = status.is_some_and(|s| s.update_state == UpdateState::Ready && s.staged_version() == Some(f.from_version.as_str()));
        if old_ready && !self.deactivate().await {
            return Err(format!("cannot deactivate {} staged by the rollback", f.from_version));
        }
        Ok(())
    }

    /// The rollback cannot be done: hold the slot, saying so, until the checks pass on what runs.
    async fn hold_after_failed_rollback(&self, f: &InFlight, why: &str) -> Result<Finish, String> {
        tracing::error!(reason = %why, "rollback failed; holding the slot for a person to look at");
        self.publish("held", Some(&f.target_version), "held-rollback-failed", why).await;
        self.notify(crate::notify::Event::Held { version: f.target_version.clone(), reason: why.to_string() });
        self.hold_until_pass(f, "held-rollback-failed", Some(why)).await?;
        self.unstage_old(f).await?;
        Ok(Finish::Result("updated-after-failed-rollback"))
    }

    /// A read after boot; a failure is published as the reason the host holds its slot.
    async fn after_boot<T, E: std::fmt::Display>(&self, read: Result<T, E>, what: &str) -> Result<T, String> {
        match read {
            Ok(v) => Ok(v),
            Err(e) => {
                let reason = format!("{what}: {e}");
                let target = self.load_record().in_flight.map(|f| f.target_version);
                self.publish("held", target.as_deref(), "held-after-boot", &reason).await;
                self.notify(crate::notify::Event::Held { version: target.unwrap_or_default(), reason: reason.clone() });
                Err(reason)
            }
        }
    }

    /// Without a keeper: renew the claim once, after the version check (only a negative control
    /// or a claim-less start takes this path).
    async fn renew_after_boot(&self, f: &InFlight) -> Result<Option<Held>, String> {
        let (Some(lease), Some(token)) = (self.lease(), &f.lease_token) else { return Ok(None) };
        let me = self.ecs("DescribeContainerInstances", || lease.store.describe_self()).await.map_err(|e| e.to_string())?;
        let Some(Ok(claim)) = me.attributes.get(&self.names.lease).map(|v| crate::lease::Claim::parse(v)) else {
            tracing::warn!("our claim is gone after the reboot; finishing the return to service without it");
            return Ok(None);
        };
        if &claim.token != token {
            tracing::warn!("our claim was replaced during the reboot; finishing the return to service without it");
            return Ok(None);
        }
        let ttl = self.cfg.cluster.lease_ttl;
        match lease.renew_seen(&me.attributes, &Held { claim, own_draining: None }, ClaimPhase::Verifying, ttl, self.margin(), &[]).await {
            Ok(h) => Ok(Some(h)),
            Err(LeaseError::Lost(why)) => {
                tracing::warn!(reason = %why, "claim lapsed during the reboot; finishing the return to service without it");
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The host came back on the old version with the update still Ready: the reboot never
    /// happened (we were stopped before it took). Ask again, but only while holding the slot.
    async fn reboot_again(&self, f: &InFlight, held: Option<Held>) -> Result<Outcome, String> {
        if self.cluster.is_some() && held.is_none() {
            tracing::warn!("reboot never happened and the slot is gone; undoing");
            return if self.undo_inner("reboot never happened").await { Ok(Outcome::Failed { reason: "reboot never happened".into() }) } else { Err("undo incomplete".into()) };
        }
        tracing::warn!(target = %f.target_version, "reboot never happened; asking again");
        if let Some(h) = held {
            let lease = self.lease().ok_or("no cluster")?;
            lease.renew(&h, ClaimPhase::Rebooting, self.cfg.cluster.reboot_allowance, self.margin()).await.map_err(|e| e.to_string())?;
        }
        match commands::request_reboot(&self.os, &self.clock, &self.jitter, &self.cfg.commands.reboot).await {
            Ok(_) => Ok(Outcome::Rebooting { target: f.target_version.clone() }),
            Err(e) => {
                let reason = format!("reboot refused: {e}");
                if self.undo_inner(&reason).await { Ok(Outcome::Failed { reason }) } else { Err(reason) }
            }
        }
    }

    /// After boot: wait for the ECS agent (holding the slot for as long as it takes), set ACTIVE
    /// if we drained, stop keeping the claim, and clear marker and claim.
    async fn return_to_service(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>) -> Result<(), String> {
        let Some(store) = &self.cluster else { return Ok(()) };
        let c = &self.cfg.cluster;
        let start = self.clock.now();
        let mut said = false;
        let me = loop {
            let me = self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?;
            if me.agent_connected {
                break me;
            }
            let waited = self.clock.now().since(start);
            if waited >= c.agent_connect_timeout && !said {
                // Returning to service without the ECS agent would hand the next host a slot while
                // this one cannot run tasks: hold the slot, and say so.
                let reason = format!("ECS agent not connected {}s after boot; holding the slot", waited.as_secs());
                tracing::error!(reason = %reason, "cannot return to service; the rollout waits for this host");
                self.publish("held", Some(&f.target_version), "held-ecs-agent", &reason).await;
                self.record_failure(&f.target_version, "ecs-agent-not-connected").await;
                self.notify(crate::notify::Event::Held { version: f.target_version.clone(), reason: reason.clone() });
                said = true;
            } else if !said {
                tracing::info!(waited_s = waited.as_secs(), "waiting for the ECS agent to connect");
            }
            let poll = if said { (c.drain_poll_interval * 4).min(Duration::from_secs(60)).max(c.drain_poll_interval) } else { c.drain_poll_interval };
            if self.interruptible(self.clock.sleep(poll)).await.is_err() {
                return Err("stopped by signal while waiting for the ECS agent; the next start resumes".into());
            }
        };
        if let Some(k) = keeper {
            k.stop().await;
        }
        let ours = self.drained_by_us(Some(f), &me.attributes);
        self.restore_instance(store, ours, &me.status).await
    }

    /// Whether this agent set the instance DRAINING: the in-flight record says so, or the marker
    /// does (a record lost or not yet written).
    fn drained_by_us(&self, flight: Option<&InFlight>, attrs: &std::collections::BTreeMap<String, String>) -> bool {
        flight.is_some_and(|f| f.drained_by_us) || self.names.agent_drained(attrs)
    }

    /// Sets ACTIVE when we drained the instance, then removes marker and claim (in that order,
    /// so the marker outlives the drain).
    async fn restore_instance(&self, store: &S, ours: bool, status: &InstanceStatus) -> Result<(), String> {
        let set_active = if self.names.is_off(|o| o.undo_sets_active_always) {
            ours && *status == InstanceStatus::Draining
        } else {
            // A read just after DRAINING was set may still say ACTIVE or nothing: trust the
            // marker, not the read (setting ACTIVE twice is harmless).
            ours && matches!(status, InstanceStatus::Active | InstanceStatus::Draining)
                || ours && *status == InstanceStatus::Other("UNKNOWN".into())
        };
        if set_active {
            self.ecs("UpdateContainerInstancesState", || store.set_status(SetStatus::Active)).await.map_err(|e| e.to_string())?;
            tracing::info!(read_as = ?status, "instance set to ACTIVE");
        } else if ours {
            tracing::warn!(status = ?status, "instance is neither ACTIVE nor DRAINING; not setting it ACTIVE");
        } else if *status == InstanceStatus::Draining {
            tracing::info!("instance was drained by someone else; leaving it DRAINING");
        }
        self.remove_marks(store).await
    }

    /// Removes the drain marker and the claim: the slot is free.
    async fn remove_marks(&self, store: &S) -> Result<(), String> {
        let names = [self.names.drained.clone(), self.names.lease.clone()];
        self.ecs("DeleteAttributes", || store.delete_attributes(&names)).await.map_err(|e| e.to_string())?;
        tracing::info!("drain marker and claim removed");
        Ok(())
    }

    fn clear_in_flight(&self, result: &str) -> Result<(), crate::journal::JournalError> {
        let mut r = self.load_record();
        if let Some(claimed) = r.in_flight.as_ref().and_then(|f| f.claimed_at).filter(|_| result == "updated") {
            let announced = self.memory.announced_took.take();
            r.last_took = Some(announced.unwrap_or_else(|| self.clock.now().since(claimed).as_secs()));
        }
        r.in_flight = None;
        r.last_result = Some(result.to_string());
        self.journal.store(&r)?;
        self.memory.last_took.set(Some(r.last_took));
        Ok(())
    }

    /// Undoes a round that stopped before the reboot; logs but does not return failures (a
    /// failed undo keeps the record, so the next round or start tries again).
    async fn undo(&self, why: &str) {
        if !self.undo_inner(why).await {
            tracing::error!(reason = why, "undo incomplete; the in-flight record is kept and is retried before the next round");
        }
    }

    /// Deactivates what we activated, re-activates what we drained, withdraws our claim, clears
    /// the record and publishes the state; true when everything is done. A failed deactivation
    /// still returns the instance to service and releases the slot (the record is kept, so the
    /// deactivation is tried again).
    async fn undo_inner(&self, why: &str) -> bool {
        if self.cfg.dry_run {
            tracing::info!(reason = why, "dry run: would undo the update round; changing nothing");
            return true;
        }
        tracing::warn!(reason = why, "undoing the update round");
        let record = self.load_record();
        let flight = record.in_flight.clone();
        let deactivated = match flight.as_ref().filter(|f| matches!(f.step, Step::Activating | Step::Rebooting)) {
            Some(f) => self.deactivate().await || {
                // Keep a record that says "activated, not rebooted": the next try undoes it,
                // it does not take the host for one back from a reboot.
                self.keep_for_retry(f);
                false
            },
            None => true,
        };
        let restored = match &self.cluster {
            Some(store) => self.restore_after_undo(store, flight.as_ref()).await,
            None => true,
        };
        let cleared = deactivated && restored && match self.clear_in_flight(&format!("undone: {why}")) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot clear the in-flight record");
                false
            }
        };
        let (result, detail) = if cleared { ("undone", why.to_string()) } else { ("undo-incomplete", format!("{why}; retrying")) };
        self.publish("idle", None, result, &detail).await;
        cleared
    }

    fn keep_for_retry(&self, f: &InFlight) {
        let mut r = self.load_record();
        r.in_flight = Some(InFlight { step: Step::Activating, ..f.clone() });
        if let Err(e) = self.journal.store(&r) {
            tracing::error!(error = %e, "cannot keep the in-flight record for a retry");
        }
    }

    async fn deactivate(&self) -> bool {
        let b = &self.cfg.commands.deactivate;
        match commands::run_command(&self.os, &self.clock, &self.jitter, Action::Deactivate, b).await {
            Ok(_) => tracing::info!("update deactivated: the next boot keeps the running version"),
            Err(CommandError::NotAllowed { .. }) => tracing::info!("nothing active to deactivate"),
            Err(CommandError::NotFound { .. }) => tracing::info!("nothing staged to deactivate"),
            Err(e) => {
                tracing::error!(error = %e, "cannot deactivate the update; returning to service anyway and trying again later");
                return false;
            }
        }
        true
    }

    async fn restore_after_undo(&self, store: &S, flight: Option<&InFlight>) -> bool {
        let me = match self.ecs("DescribeContainerInstances", || store.describe_self()).await {
            Ok(me) => me,
            Err(e) => {
                tracing::error!(error = %e, "cannot read own instance to undo");
                return false;
            }
        };
        let ours = self.drained_by_us(flight, &me.attributes);
        match self.restore_instance(store, ours, &me.status).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot return the instance to service");
                false
            }
        }
    }

    // ---------------------------------------------------------------- health gate and bake

    /// After booting the target: the health gate while out of service, then back in service
    /// with the slot kept through the bake, then the slot given back. A failure writes the
    /// failure marker (which halts the version fleet-wide) and follows `health.on-failure`.
    async fn gate_and_bake(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>) -> Result<Finish, String> {
        let store = self.cluster.as_ref().ok_or("no cluster")?;
        // The instance as the passing look read it; read again after a failure held the host.
        let seen = match self.gate(f).await? {
            Ok(me) => Some(me),
            Err(failure) => match self.on_failure(f, keeper, &failure, "held-health", "failed-health").await? {
                Some(done) => return Ok(done),
                None => None,
            },
        };
        let me = match seen {
            Some(me) => me,
            None => self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?,
        };
        let ours = self.drained_by_us(Some(f), &me.attributes);
        if ours {
            self.ecs("UpdateContainerInstancesState", || store.set_status(SetStatus::Active)).await.map_err(|e| e.to_string())?;
            tracing::info!("instance back in service; the slot is kept until the bake is over");
        }
        let bake = self.bake_time(f);
        if self.returns_at_once(f) {
            // Nothing was waited for since the instance was set ACTIVE: a second read and a
            // second ACTIVE would only repeat what was just done.
            if let Some(k) = keeper {
                k.stop().await;
            }
            self.announce_updated(f).await;
            return self.remove_marks(store).await.map(|()| Finish::Result("updated"));
        }
        if let Some(failure) = self.families_back(store).await? {
            if let Some(done) = self.on_failure(f, keeper, &failure, "held-health", "failed-health").await? {
                return Ok(done);
            }
        }
        if let Some(failure) = self.bake(f, bake).await? {
            if let Some(done) = self.on_failure(f, keeper, &failure, "held-bake", "failed-bake").await? {
                return Ok(done);
            }
        }
        self.give_back(store, f, keeper, "updated", ours).await.map(Finish::Result)
    }

    /// How long this host keeps its slot, back in service, while the checks pass.
    fn bake_time(&self, f: &InFlight) -> Duration {
        if f.canary { self.cfg.health.canary_bake_time } else { self.cfg.health.bake_time }
    }

    /// Whether a host that passes its checks after boot gives its slot back at once: no bake,
    /// no task families to wait for.
    fn returns_at_once(&self, f: &InFlight) -> bool {
        self.cfg.health.task_families.is_empty() && self.bake_time(f).is_zero()
    }

    /// Looks at the checks until they all pass (`Ok`, with the instance as the last look read
    /// it) or one fails. While the ECS agent is away and silent on this host too, a look
    /// costs no ECS call but once a minute.
    async fn gate(&self, f: &InFlight) -> Result<Result<InstanceInfo, Failure>, String> {
        let start = self.clock.now();
        let (mut said, mut published) = (String::new(), String::new());
        // When and with what limit ECS last said the ECS agent was away.
        let mut away: Option<(WallTime, Duration)> = None;
        loop {
            let (why, limit) = match away {
                // A gate that is about to fail asks ECS whatever the host says.
                Some((asked, limit)) if self.clock.now().since(start) < limit && self.ecs_agent_still_away(asked).await => {
                    (said.clone(), limit)
                }
                _ => {
                    // The first renewal's read, if it is still as good as a new one.
                    let fresh = self.memory.boot_read.borrow_mut().take().filter(|(at, _)| self.clock.now().since(*at) < Duration::from_secs(1));
                    let asked = self.clock.now();
                    match self.look_at(fresh.map(|(_, me)| me)).await? {
                        (Look::Pass, me) => return Ok(Ok(me)),
                        (Look::Fail(why), _) => return Ok(Err(Failure::of(why))),
                        (Look::Wait { why, limit }, me) => {
                            away = (!me.agent_connected).then_some((asked, limit));
                            (why, limit)
                        }
                    }
                }
            };
            let waited = self.clock.now().since(start);
            if waited >= limit {
                return Ok(Err(Failure::of(format!("{why} for {}s", waited.as_secs()))));
            }
            if why != said {
                tracing::info!(check = %why, waited_s = waited.as_secs(), limit_s = limit.as_secs(), "health gate: waiting");
                said = why.clone();
            }
            // A boot's first minute of waiting (for the ECS agent, mostly) is the norm: the
            // `rebooting` status stands for it, and a write then would be one per update.
            if waited >= GATE_STATUS_AFTER && why != published {
                self.publish("verifying", Some(&f.target_version), "health-gate", &why).await;
                published = why;
            }
            self.pause(self.cfg.health.poll_interval).await?;
        }
    }

    /// Whether the gate can skip asking ECS about the ECS agent it last found away (asked at
    /// `asked`): ECS cannot report it connected while it does not even answer on this host.
    async fn ecs_agent_still_away(&self, asked: WallTime) -> bool {
        let Some(store) = &self.cluster else { return false };
        self.clock.now().since(asked) < GATE_ASK_EVERY_WHILE_AWAY && store.local_tasks().await == LocalTasks::Down
    }

    /// Once back in service: waits for the `health.task-families` to run on the instance again
    /// (ECS places daemon tasks once it is ACTIVE); `Some` when one has not within the timeout.
    async fn families_back(&self, store: &S) -> Result<Option<Failure>, String> {
        let h = &self.cfg.health;
        if h.task_families.is_empty() {
            return Ok(None);
        }
        let start = self.clock.now();
        loop {
            let tasks = self.ecs("ListTasks", || store.running_tasks()).await.map_err(|e| e.to_string())?;
            let missing = crate::health::missing_families(&h.task_families, &tasks);
            if missing.is_empty() {
                tracing::info!(families = ?h.task_families, "every required task family runs again");
                return Ok(None);
            }
            let waited = self.clock.now().since(start);
            if waited >= h.task_timeout {
                let why = format!("task families not running {}s after the return to service: {}", waited.as_secs(), missing.join(", "));
                return Ok(Some(Failure { token: "task-family-missing".into(), why }));
            }
            tracing::info!(missing = %missing.join(", "), waited_s = waited.as_secs(), "health gate: waiting for task families");
            self.pause(h.poll_interval).await?;
        }
    }

    /// Keeps the slot for `bake` while the checks keep passing; `Some` when one fails.
    async fn bake(&self, f: &InFlight, bake: Duration) -> Result<Option<Failure>, String> {
        if bake.is_zero() {
            return Ok(None);
        }
        let until = self.clock.now().plus(bake);
        tracing::info!(bake_s = bake.as_secs(), canary = f.canary, until = %until, "baking: back in service, keeping the slot while the checks pass");
        self.publish("baking", Some(&f.target_version), "baking", &format!("until {until}")).await;
        // A fault that takes minutes to show is caught within a minute (or a quarter of a short
        // bake); closer looks would cost an ECS call each for little.
        let every = self.cfg.health.poll_interval.max((bake / 4).min(Duration::from_secs(60)));
        while self.clock.now() < until {
            self.pause(every.min(until.since(self.clock.now()))).await?;
            match self.look().await?.0 {
                Look::Pass => {}
                // During the bake a check that stops passing is a failure: the host served under it.
                Look::Fail(why) | Look::Wait { why, .. } => return Ok(Some(Failure::of(format!("during the bake: {why}")))),
            }
        }
        tracing::info!("baked: the checks passed for the whole bake time");
        Ok(None)
    }

    /// One look at every check, with the instance as it read it.
    async fn look(&self) -> Result<(Look, InstanceInfo), String> {
        self.look_at(None).await
    }

    /// [`Self::look`], judging `read` (this instance as just read) when given, instead of
    /// reading it again.
    async fn look_at(&self, read: Option<InstanceInfo>) -> Result<(Look, InstanceInfo), String> {
        let store = self.cluster.as_ref().ok_or("no cluster")?;
        let me = match read {
            Some(me) => me,
            None => self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?,
        };
        let look = match crate::health::judge_instance(&me, &self.cfg.health, self.cfg.cluster.agent_connect_timeout) {
            Look::Pass => crate::health::judge_urls(&self.cfg.health).await,
            other => other,
        };
        Ok((look, me))
    }

    /// Records the failure and applies `health.on-failure`: `Some` ends the round (slot given
    /// back under `return`; rollback reboot asked for); `None` goes on with the update (a hold,
    /// or a failed rollback, ended because the checks pass again).
    async fn on_failure(&self, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>, failure: &Failure, held_as: &str,
        result: &'static str) -> Result<Option<Finish>, String> {
        tracing::error!(check = %failure.why, policy = ?self.cfg.health.on_failure, target = %f.target_version, "health check failed");
        self.record_failure(&f.target_version, &failure.token).await;
        match self.cfg.health.on_failure {
            OnFailure::Return => {
                let store = self.cluster.as_ref().ok_or("no cluster")?;
                return self.give_back(store, f, keeper, result, false).await.map(|r| Some(Finish::Result(r)));
            }
            OnFailure::Rollback => match self.roll_back(f, keeper, &failure.why).await? {
                Rolled::Rebooting(o) => return Ok(Some(Finish::Rebooting(o))),
                Rolled::Failed(why) => {
                    self.hold_after_failed_rollback(f, &why).await?;
                    return Ok(None);
                }
            },
            OnFailure::Hold => {}
        }
        self.publish("held", Some(&f.target_version), held_token(&failure.why, held_as), &failure.why).await;
        self.notify(crate::notify::Event::Held { version: f.target_version.clone(), reason: failure.why.clone() });
        self.hold_until_pass(f, held_as, None).await?;
        Ok(None)
    }

    /// Holds the slot, looking now and then, until every check passes; the status names what
    /// fails now, after `context` (why the host holds) when there is one.
    async fn hold_until_pass(&self, f: &InFlight, held_as: &str, context: Option<&str>) -> Result<(), String> {
        let poll = (self.cfg.health.poll_interval * 4).min(Duration::from_secs(60)).max(self.cfg.health.poll_interval);
        loop {
            self.pause(poll).await?;
            match self.look().await?.0 {
                Look::Pass => {
                    tracing::warn!(target = %f.target_version, "the checks pass again; finishing the update (the failure marker stays)");
                    return Ok(());
                }
                // The status says what fails now (publish writes only what changed).
                Look::Fail(why) | Look::Wait { why, .. } => {
                    let (token, detail) = match context {
                        Some(c) => (held_as, format!("{c}; now: {why}")),
                        None => (held_token(&why, held_as), why.clone()),
                    };
                    self.publish("held", Some(&f.target_version), token, &detail).await;
                }
            }
        }
    }

    /// Gives the slot back: ACTIVE if we drained (unless `reactivated`, set ACTIVE since the boot,
    /// and still read so), marker and claim removed.
    async fn give_back(&self, store: &S, f: &InFlight, keeper: Option<&ClaimKeeper<'_, S, K>>, result: &'static str,
        reactivated: bool) -> Result<&'static str, String> {
        if let Some(k) = keeper {
            k.stop().await;
        }
        let me = self.ecs("DescribeContainerInstances", || store.describe_self()).await.map_err(|e| e.to_string())?;
        let ours = self.drained_by_us(Some(f), &me.attributes);
        if result == "updated" {
            self.announce_updated(f).await;
        }
        if reactivated && ours && me.status == InstanceStatus::Active {
            // Set ACTIVE by this host before the checks and the bake, and read so since: no
            // stale echo of our DRAINING, and a second ACTIVE would only repeat the first.
            return self.remove_marks(store).await.map(|()| result);
        }
        self.restore_instance(store, ours, &me.status).await?;
        Ok(result)
    }

    /// A canary says "updated", with the marker the canary count lists, before it gives its slot
    /// back: a host that finds the slot free then finds the canary through too, and does not
    /// claim as a second canary (with a bake of its own) in the second between the release and
    /// the status. Other hosts release first: the count no longer waits for them, and the slot
    /// frees a call sooner. A write that fails is made again after the release, as any status.
    async fn announce_updated(&self, f: &InFlight) {
        if !f.canary {
            return;
        }
        if let Some(took) = f.claimed_at.map(|claimed| self.clock.now().since(claimed).as_secs()) {
            self.memory.announced_took.set(Some(took));
            self.memory.last_took.set(Some(Some(took)));
        }
        self.publish("idle", None, "updated", "").await;
    }

    /// Sleeps, unless a signal comes first (the next start resumes from the record).
    async fn pause(&self, d: Duration) -> Result<(), String> {
        self.interruptible(self.clock.sleep(d)).await.map_err(|_| "stopped by signal after boot; the next start resumes".to_string())
    }

    // ---------------------------------------------------------------- status

    /// The status value for `phase` and `result`, keeping `since` while neither changed.
    fn status_value(&self, phase: &str, running: &str, target: &str, result: &str, detail: &str) -> Status {
        let mut st = Status {
            phase: phase.into(),
            running: running.into(),
            target: target.into(),
            result: result.into(),
            since: Some(self.clock.now()),
            detail: detail.into(),
            seed: self.memory.seed.get(),
            took: self.last_took(),
        };
        if let Some(last) = self.memory.status.borrow().as_ref() {
            if (&last.phase, &last.result) == (&st.phase, &st.result) {
                st.since = last.since;
            }
        }
        st
    }

    /// The last update's slot time, from the record the first time (read quietly: a record that
    /// cannot be read is load_record's to report).
    fn last_took(&self) -> Option<u64> {
        if let Some(took) = self.memory.last_took.get() {
            return took;
        }
        let took = self.journal.load().ok().and_then(|r| r.last_took);
        self.memory.last_took.set(Some(took));
        took
    }

    /// Keeps `<prefix>.status` on the instance current after a round, so the fleet can be read
    /// from ECS alone.
    async fn publish_status(&self, phase: &str, target: Option<&str>, outcome: &Outcome) {
        let detail = match outcome {
            Outcome::Skipped { reason } | Outcome::Failed { reason } => reason.clone(),
            Outcome::Halted { version, failed_on } => {
                let on: Vec<&str> = failed_on.iter().map(|a| crate::status::short_id(a)).collect();
                format!("halted: version {version} failed on {}", on.join(" "))
            }
            _ => String::new(),
        };
        self.publish(phase, target, outcome.token(), &detail).await;
    }

    /// Writes the status attribute unless it says what it said last time (never in a dry run).
    async fn publish(&self, phase: &str, target: Option<&str>, result: &str, detail: &str) {
        let Some(store) = &self.cluster else { return };
        if self.cfg.dry_run {
            return;
        }
        let running = match self.os.os_info().await {
            Ok(os) => os.version_id,
            Err(_) => "-".into(),
        };
        let st = self.status_value(phase, &running, target.unwrap_or("-"), result, detail);
        if self.memory.status.borrow().as_ref().is_some_and(|last| says_as_much(last, &st)) {
            return;
        }
        let mut attrs = vec![(self.names.status.clone(), st.encode())];
        if result == "updated" && running != "-" {
            // In the same write: the marker the canary count lists by value.
            attrs.push((self.names.updated.clone(), running.clone()));
        }
        match self.ecs("PutAttributes", || store.put_attributes(&attrs)).await {
            Ok(()) => *self.memory.status.borrow_mut() = Some(st),
            Err(e) => tracing::warn!(error = %e, "cannot publish status attribute"),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// A status as apiserver writes it: `state`, the chosen update and the staged image.
    fn status(state: &str, chosen: Option<&str>, staged: Option<&str>) -> UpdateStatus {
        let image = |v: Option<&str>| v.map(|v| serde_json::json!({"arch": "x86_64", "version": v, "variant": "aws-ecs-2"}));
        let staging = staged.map(|v| serde_json::json!({"image": image(Some(v)), "next_to_boot": false}));
        let body = serde_json::json!({"update_state": state, "available_updates": [], "chosen_update": image(chosen),
            "active_partition": null, "staging_partition": staging, "most_recent_command": null});
        serde_json::from_value(body).expect("a documented status")
    }

    #[test]
    fn the_version_to_install_is_never_the_running_one_nor_an_older_leftover() {
        let os: OsInfo = serde_json::from_value(serde_json::json!({"version_id": "1.1.0"})).expect("os");
        let found = |state, chosen, staged| candidate(&os, &status(state, chosen, staged)).map(str::to_string);
        let some = |v: &str| Some(v.to_string());
        assert_eq!(found("Idle", None, None), None);
        assert_eq!(found("Available", Some("1.2.0"), None), some("1.2.0"));
        assert_eq!(found("Available", Some("1.1.0"), None), None, "the running version");
        assert_eq!(found("Staged", Some("1.3.0"), Some("1.2.0")), some("1.3.0"), "a newer release over a leftover download");
        assert_eq!(found("Staged", Some("1.2.0"), Some("1.3.0")), some("1.3.0"), "a staged image newer than the choice");
        assert_eq!(found("Staged", None, Some("1.0.0")), None, "a rollback's leftover: never a downgrade");
        assert_eq!(found("Staged", Some("1.0.0"), Some("1.0.0")), some("1.0.0"), "unless the updater chooses it");
        assert_eq!(found("Ready", None, Some("1.2.0")), some("1.2.0"));
        assert_eq!(found("Ready", None, Some("1.0.0")), None);
    }

    #[test]
    fn an_idle_wait_is_cut_into_equal_steps_of_about_the_poll() {
        let (h, m) = (|x: u64| Duration::from_secs(x * 3600), |x: u64| Duration::from_secs(x * 60));
        assert_eq!(update_now_step(h(6), h(1)), h(1), "six steps: five looks and the round's read");
        assert_eq!(update_now_step(m(150), h(1)), m(50), "three steps, not 60 + 60 + 30");
        assert_eq!(update_now_step(m(40), h(1)), m(40), "within one poll: no look before the round");
        assert_eq!(update_now_step(h(6) + m(5), h(1)), (h(6) + m(5)) / 6, "the check's jitter takes no extra look");
        assert_eq!(update_now_step(m(66), h(1)), m(66), "a tenth over the poll at most");
        assert_eq!(update_now_step(m(67), h(1)), m(67) / 2);
        assert_eq!(update_now_step(h(1), h(1)), h(1));
        assert_eq!(update_now_step(Duration::ZERO, h(1)), Duration::ZERO);
    }

    #[test]
    fn drain_looks_thin_out_but_never_delay_a_renewal() {
        let (poll, s) = (Duration::from_secs(15), Duration::from_secs);
        assert_eq!(drain_pause(poll, s(0), s(600)), poll, "a fresh drain is looked at every poll");
        assert_eq!(drain_pause(poll, s(90), s(600)), s(30), "a third of the time waited");
        assert_eq!(drain_pause(poll, s(900), s(600)), s(60), "at most four polls");
        assert_eq!(drain_pause(poll, s(900), s(20)), s(20), "no later than the renewal is due");
        assert_eq!(drain_pause(poll, s(900), s(0)), poll, "a renewal due now waits one poll, as before");
    }
}
