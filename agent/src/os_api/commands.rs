//! Update commands as the agent needs them: started, waited for, and judged by the status.
//!
//! A `204` from an action only means thar-be-updates forked its worker; the worker holds the update
//! lock (so the status answers `423`) until it records `most_recent_command`. A command is done
//! when the status shows a command of its type with a timestamp strictly newer than the one seen
//! before the POST. Another caller may interleave its own command; that one is waited out.
//!
//! Everything waits through [`Clock::sleep`] and draws jitter from [`Jitter`], so the same code runs
//! on the real socket and on virtual time.

// The errors carry the status or command record that explains them; they are rare and not hot.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::{Action, ActionReply, CommandResult, CommandStatus, OsApi, OsApiError, StatusRead, UpdateStatus};
use crate::backoff::{Backoff, Jitter};
use crate::clock::{Clock, WallTime};

/// Logs a step of a command at info, or at debug for a refresh: idle hosts refresh every hour,
/// and the caller logs what the refresh decided.
macro_rules! step {
    ($action:expr, $($event:tt)+) => {
        if $action == Action::Refresh { tracing::debug!($($event)+) } else { tracing::info!($($event)+) }
    };
}

/// Time allowance of one update command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CommandBudget {
    /// How long the whole command may take: waiting for the lock, the POST, and the polling.
    pub total: Duration,
    /// The wait between status reads while the command runs.
    pub poll_interval: Duration,
    /// The back-off while another command holds the update lock (or the socket is away).
    #[serde(serialize_with = "serialize_backoff")]
    pub busy_backoff: Backoff,
}

impl CommandBudget {
    /// A budget of `total`, polling every `poll_interval`, backing off 2 s to 30 s while busy.
    pub const fn new(total: Duration, poll_interval: Duration) -> CommandBudget {
        CommandBudget { total, poll_interval, busy_backoff: DEFAULT_BUSY_BACKOFF }
    }
}

/// The default back-off while the update lock is held: hammering a held lock only adds contention.
const DEFAULT_BUSY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));

fn serialize_backoff<S: Serializer>(b: &Backoff, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Backoff", 2)?;
    st.serialize_field("base", &b.base)?;
    st.serialize_field("max", &b.max)?;
    st.end()
}

/// One [`CommandBudget`] per kind of command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CommandBudgets {
    /// `refresh-updates`: updog fetches metadata; seconds normally.
    pub refresh: CommandBudget,
    /// `prepare-update`: downloads and writes the image; many minutes on a slow link.
    pub prepare: CommandBudget,
    /// `activate-update`: flips the partition flags.
    pub activate: CommandBudget,
    /// `deactivate-update`: flips them back.
    pub deactivate: CommandBudget,
    /// `reboot`: only the request itself (resent while it was certainly not delivered).
    pub reboot: CommandBudget,
    /// A status read, waiting while the update lock is held.
    pub status: CommandBudget,
}

impl Default for CommandBudgets {
    fn default() -> CommandBudgets {
        let secs = Duration::from_secs;
        CommandBudgets {
            refresh: CommandBudget::new(secs(120), secs(1)),
            prepare: CommandBudget::new(secs(20 * 60), secs(2)),
            activate: CommandBudget::new(secs(120), secs(1)),
            deactivate: CommandBudget::new(secs(120), secs(1)),
            reboot: CommandBudget::new(secs(60), secs(1)),
            status: CommandBudget::new(secs(60), secs(1)),
        }
    }
}

impl CommandBudgets {
    /// The budget of `action`.
    pub fn for_action(&self, action: Action) -> &CommandBudget {
        match action {
            Action::Refresh => &self.refresh,
            Action::Prepare => &self.prepare,
            Action::Activate => &self.activate,
            Action::Deactivate => &self.deactivate,
            Action::Reboot => &self.reboot,
        }
    }
}

/// Why an update command (or a status read) did not succeed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// 409: the update state does not allow the action; carries the status read right after.
    #[error("{}: not allowed in update state {}", action.name(), state_name(status))]
    NotAllowed {
        /// The action.
        action: Action,
        /// The status re-read after the refusal (`None` if it could not be read).
        status: Option<UpdateStatus>,
    },
    /// 404: no chosen update (prepare) or nothing staged (activate, deactivate).
    #[error("{}: not found: {body}", action.name())]
    NotFound {
        /// The action.
        action: Action,
        /// apiserver's explanation.
        body: String,
    },
    /// The command ran and did not succeed (`Failed`, or any status other than `Success`).
    #[error("{}: command ended {:?} (exit {:?}): {}", action.name(), result.cmd_status, result.exit_status,
        result.stderr.as_deref().unwrap_or("").trim())]
    Failed {
        /// The action.
        action: Action,
        /// The recorded command, with updog's stderr.
        result: CommandResult,
    },
    /// The budget ran out while the lock stayed held or the command kept running.
    #[error("{}: gave up after {} s", action.name(), waited.as_secs())]
    TimedOut {
        /// The action.
        action: Action,
        /// How long it waited in all.
        waited: Duration,
    },
    /// A non-transient API error, a transient one that outlived the budget, or a POST that may have
    /// been delivered but got no answer.
    #[error("{}: {source}", action.name())]
    Api {
        /// The action.
        action: Action,
        /// What the API said.
        source: OsApiError,
    },
    /// A status read ([`read_status`]) stayed busy for its whole budget.
    #[error("status read: update lock still held after {} s", waited.as_secs())]
    StatusTimedOut {
        /// How long it waited.
        waited: Duration,
    },
    /// A status read ([`read_status`]) failed for good.
    #[error("status read: {source}")]
    StatusApi {
        /// What the API said.
        source: OsApiError,
    },
    /// [`run_command`] was asked to run `reboot`, which has no command to wait for.
    #[error("{}: not an update command (use request_reboot)", action.name())]
    NotACommand {
        /// The action.
        action: Action,
    },
}

impl CommandError {
    /// The action the error belongs to (`None` for a plain status read).
    pub fn action(&self) -> Option<Action> {
        match self {
            CommandError::NotAllowed { action, .. }
            | CommandError::NotFound { action, .. }
            | CommandError::Failed { action, .. }
            | CommandError::TimedOut { action, .. }
            | CommandError::Api { action, .. }
            | CommandError::NotACommand { action } => Some(*action),
            CommandError::StatusTimedOut { .. } | CommandError::StatusApi { .. } => None,
        }
    }
}

fn state_name(status: &Option<UpdateStatus>) -> String {
    status.as_ref().map_or_else(|| "unknown".to_string(), |s| format!("{:?}", s.update_state))
}

/// What became of the reboot request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootRequest {
    /// 204: systemd accepted the reboot.
    Accepted,
    /// The connection dropped (or stayed silent) after the request may have been delivered:
    /// normally the host going down under the agent.
    ConnectionLost,
}

/// The end of a budget, measured on the injected clock.
///
/// The clock is wall time, so a clock step moves the end; each request stays bounded by its own
/// timeout, and the caller's next cycle starts a fresh budget.
struct Deadline {
    start: WallTime,
    total: Duration,
}

impl Deadline {
    fn start<C: Clock>(clock: &C, total: Duration) -> Deadline {
        Deadline { start: clock.now(), total }
    }
    fn waited<C: Clock>(&self, clock: &C) -> Duration {
        clock.now().since(self.start)
    }
    fn remaining<C: Clock>(&self, clock: &C) -> Duration {
        self.total.saturating_sub(self.waited(clock))
    }
}

/// What waiting for a status read failed on, before it is tied to an action or not.
enum ReadFailure {
    Busy(Duration),
    Api(OsApiError),
}

/// Runs one update command to completion: returns the status that shows it succeeded.
pub async fn run_command<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    action: Action,
    budget: &CommandBudget,
) -> Result<UpdateStatus, CommandError> {
    let deadline = Deadline::start(clock, budget.total);
    if action.command_type().is_none() {
        return Err(CommandError::NotACommand { action });
    }
    let before = read_until(api, clock, jitter, budget, &deadline, action.name()).await.map_err(|f| tie(f, action))?;
    let before_ts = before.as_ref().and_then(|s| s.most_recent_command.as_ref()).map(|c| c.timestamp);
    step!(action, action = action.name(), before = ?before_ts, "starting update command");
    post(api, clock, jitter, action, budget, &deadline).await?;
    poll(api, clock, action, budget, &deadline, before_ts).await
}

/// Reads the status, waiting through 423 (busy) within the budget; Ok(None) on 404 (no command yet).
pub async fn read_status<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    budget: &CommandBudget,
) -> Result<Option<UpdateStatus>, CommandError> {
    let deadline = Deadline::start(clock, budget.total);
    read_until(api, clock, jitter, budget, &deadline, "status").await.map_err(|f| match f {
        ReadFailure::Busy(waited) => CommandError::StatusTimedOut { waited },
        ReadFailure::Api(source) => CommandError::StatusApi { source },
    })
}

/// Asks for the reboot. 204 → Ok(RebootRequest::Accepted); a transport error where the request may have
/// been sent (the host going down) → Ok(RebootRequest::ConnectionLost); a 500 (e.g. inhibitor) → Err.
pub async fn request_reboot<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    budget: &CommandBudget,
) -> Result<RebootRequest, CommandError> {
    let action = Action::Reboot;
    let deadline = Deadline::start(clock, budget.total);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let reason = match api.action(action).await {
            Ok(ActionReply::Started) => {
                tracing::info!(action = action.name(), attempt, "reboot accepted");
                return Ok(RebootRequest::Accepted);
            }
            Err(OsApiError::Transport { reason, maybe_sent: true, .. }) => {
                tracing::info!(action = action.name(), attempt, %reason,
                    "connection lost after the reboot request; taking it as the host going down");
                return Ok(RebootRequest::ConnectionLost);
            }
            Err(OsApiError::Timeout { timeout_ms, .. }) => {
                tracing::info!(
                    action = action.name(),
                    attempt,
                    timeout_ms,
                    "no answer to the reboot request; taking it as the host going down"
                );
                return Ok(RebootRequest::ConnectionLost);
            }
            Err(source @ OsApiError::Transport { maybe_sent: false, .. }) => {
                if deadline.remaining(clock).is_zero() {
                    return Err(CommandError::Api { action, source });
                }
                source.to_string()
            }
            Err(source) => {
                tracing::warn!(action = action.name(), attempt, error = %source, "reboot refused");
                return Err(CommandError::Api { action, source });
            }
            Ok(ActionReply::Busy) => {
                if deadline.remaining(clock).is_zero() {
                    return Err(CommandError::TimedOut { action, waited: deadline.waited(clock) });
                }
                "update lock held".to_string()
            }
            Ok(ActionReply::NotAllowed) => return Err(not_allowed(api, clock, jitter, action, budget).await),
            Ok(ActionReply::NotFound(body)) => return Err(CommandError::NotFound { action, body }),
        };
        back_off(clock, jitter, budget, &deadline, action.name(), attempt, &reason).await;
    }
}

/// Reads the status until it is not busy, or the deadline passes (always at least one read).
async fn read_until<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    budget: &CommandBudget,
    deadline: &Deadline,
    what: &'static str,
) -> Result<Option<UpdateStatus>, ReadFailure> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let reason = match api.update_status().await {
            Ok(StatusRead::Status(s)) => return Ok(Some(s)),
            Ok(StatusRead::Uninitialized) => {
                tracing::debug!(action = what, attempt, "no update status since boot (404)");
                return Ok(None);
            }
            Ok(StatusRead::Busy) => {
                if deadline.remaining(clock).is_zero() {
                    return Err(ReadFailure::Busy(deadline.waited(clock)));
                }
                "update lock held".to_string()
            }
            Err(e) if e.is_transient() && !deadline.remaining(clock).is_zero() => e.to_string(),
            Err(e) => return Err(ReadFailure::Api(e)),
        };
        back_off(clock, jitter, budget, deadline, what, attempt, &reason).await;
    }
}

/// POSTs the action until it starts: resent while busy or certainly undelivered, within the budget.
async fn post<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    action: Action,
    budget: &CommandBudget,
    deadline: &Deadline,
) -> Result<(), CommandError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let out_of_time = deadline.remaining(clock).is_zero();
        let reason = match api.action(action).await {
            Ok(ActionReply::Started) => {
                step!(action, action = action.name(), attempt, "command started (204)");
                return Ok(());
            }
            Ok(ActionReply::Busy) if out_of_time => {
                tracing::warn!(action = action.name(), attempt, "update lock still held; budget spent");
                return Err(CommandError::TimedOut { action, waited: deadline.waited(clock) });
            }
            Ok(ActionReply::Busy) => "update lock held".to_string(),
            Ok(ActionReply::NotAllowed) => return Err(not_allowed(api, clock, jitter, action, budget).await),
            Ok(ActionReply::NotFound(body)) => {
                tracing::warn!(action = action.name(), attempt, %body, "nothing to act on (404)");
                return Err(CommandError::NotFound { action, body });
            }
            Err(e @ OsApiError::Transport { maybe_sent: false, .. }) if !out_of_time => e.to_string(),
            Err(source) => {
                tracing::warn!(action = action.name(), attempt, error = %source,
                    "request failed (not resent: it may have been delivered, or the error is final)");
                return Err(CommandError::Api { action, source });
            }
        };
        back_off(clock, jitter, budget, deadline, action.name(), attempt, &reason).await;
    }
}

/// The 409 answer: re-reads the status so the caller sees the state that refused the action.
async fn not_allowed<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    jitter: &Jitter,
    action: Action,
    budget: &CommandBudget,
) -> CommandError {
    // A short allowance of its own: the refusal is the answer, the status only explains it.
    let reread = CommandBudget { total: budget.total.min(budget.busy_backoff.max), ..*budget };
    let status = match read_status(api, clock, jitter, &reread).await {
        Ok(status) => status,
        Err(e) => {
            tracing::warn!(action = action.name(), error = %e, "could not re-read the status after 409");
            None
        }
    };
    tracing::warn!(action = action.name(), state = %state_name(&status), "not allowed in this update state (409)");
    CommandError::NotAllowed { action, status }
}

/// Polls the status until the command shows up as finished, or the budget ends.
async fn poll<A: OsApi, C: Clock>(
    api: &A,
    clock: &C,
    action: Action,
    budget: &CommandBudget,
    deadline: &Deadline,
    before: Option<DateTime<Utc>>,
) -> Result<UpdateStatus, CommandError> {
    let mut attempt = 0u32;
    loop {
        clock.sleep(budget.poll_interval.min(deadline.remaining(clock))).await;
        attempt += 1;
        let failure = match api.update_status().await {
            Ok(StatusRead::Status(status)) => match progress(action, before, &status) {
                Progress::Finished(result) => return judge(action, attempt, result, status),
                Progress::Waiting(reason) => {
                    tracing::debug!(action = action.name(), attempt, reason, "command not finished yet");
                    None
                }
            },
            Ok(StatusRead::Busy) => {
                tracing::debug!(action = action.name(), attempt, reason = "update lock held", "command still running");
                None
            }
            Ok(StatusRead::Uninitialized) => {
                tracing::debug!(
                    action = action.name(),
                    attempt,
                    reason = "no status yet (404)",
                    "command not recorded yet"
                );
                None
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(action = action.name(), attempt, error = %e, "status read failed; will retry");
                Some(e)
            }
            Err(source) => return Err(CommandError::Api { action, source }),
        };
        if deadline.remaining(clock).is_zero() {
            let waited = deadline.waited(clock);
            tracing::warn!(
                action = action.name(),
                attempt,
                waited_s = waited.as_secs(),
                "budget spent waiting for the command"
            );
            return Err(match failure {
                Some(source) => CommandError::Api { action, source },
                None => CommandError::TimedOut { action, waited },
            });
        }
    }
}

/// Whether the status shows this command finished.
enum Progress {
    Finished(CommandResult),
    Waiting(&'static str),
}

fn progress(action: Action, before: Option<DateTime<Utc>>, status: &UpdateStatus) -> Progress {
    let Some(cmd) = status.most_recent_command.as_ref() else {
        return Progress::Waiting("no command recorded yet");
    };
    if before.is_some_and(|b| cmd.timestamp <= b) {
        return Progress::Waiting("the recorded command is the one from before");
    }
    if Some(&cmd.cmd_type) != action.command_type().as_ref() {
        return Progress::Waiting("another caller's command finished in between");
    }
    Progress::Finished(cmd.clone())
}

fn judge(
    action: Action,
    attempt: u32,
    result: CommandResult,
    status: UpdateStatus,
) -> Result<UpdateStatus, CommandError> {
    if result.cmd_status == CommandStatus::Success {
        step!(action, action = action.name(), attempt, state = ?status.update_state, "command succeeded");
        Ok(status)
    } else {
        tracing::warn!(
            action = action.name(),
            attempt,
            cmd_status = ?result.cmd_status,
            exit_status = ?result.exit_status,
            stderr = result.stderr.as_deref().unwrap_or(""),
            "command did not succeed"
        );
        Err(CommandError::Failed { action, result })
    }
}

/// Ties a status-read failure to the command it was part of.
fn tie(failure: ReadFailure, action: Action) -> CommandError {
    match failure {
        ReadFailure::Busy(waited) => CommandError::TimedOut { action, waited },
        ReadFailure::Api(source) => CommandError::Api { action, source },
    }
}

/// Sleeps the busy back-off of retry `attempt` (1-based), never past the deadline.
async fn back_off<C: Clock>(
    clock: &C,
    jitter: &Jitter,
    budget: &CommandBudget,
    deadline: &Deadline,
    what: &'static str,
    attempt: u32,
    reason: &str,
) {
    let delay = budget.busy_backoff.delay(attempt.saturating_sub(1), jitter).min(deadline.remaining(clock));
    tracing::info!(action = what, attempt, reason, delay_ms = delay.as_millis() as u64, "backing off before retrying");
    clock.sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;
    use crate::clock::VirtualClock;
    use crate::os_api::{CommandType, OsInfo, UpdateSettings, UpdateState};

    /// Answers from scripts; the last answer of a script repeats forever.
    #[derive(Default)]
    struct Scripted {
        statuses: RefCell<VecDeque<Result<StatusRead, OsApiError>>>,
        replies: RefCell<VecDeque<Result<ActionReply, OsApiError>>>,
        status_reads: RefCell<u32>,
        posts: RefCell<Vec<Action>>,
    }

    impl Scripted {
        fn new(
            statuses: impl IntoIterator<Item = Result<StatusRead, OsApiError>>,
            replies: impl IntoIterator<Item = Result<ActionReply, OsApiError>>,
        ) -> Scripted {
            Scripted {
                statuses: RefCell::new(statuses.into_iter().collect()),
                replies: RefCell::new(replies.into_iter().collect()),
                ..Scripted::default()
            }
        }
        fn reads(&self) -> u32 {
            *self.status_reads.borrow()
        }
        fn posts(&self) -> usize {
            self.posts.borrow().len()
        }
        fn unread(&self) -> usize {
            self.statuses.borrow().len()
        }
    }

    fn next<T: Clone>(script: &RefCell<VecDeque<T>>) -> T {
        let mut s = script.borrow_mut();
        if s.len() > 1 {
            s.pop_front().expect("non-empty")
        } else {
            s.front().cloned().expect("script must not be empty")
        }
    }

    impl OsApi for Scripted {
        async fn os_info(&self) -> Result<OsInfo, OsApiError> {
            unimplemented!("not used by commands")
        }
        async fn update_settings(&self) -> Result<UpdateSettings, OsApiError> {
            unimplemented!("not used by commands")
        }
        async fn update_status(&self) -> Result<StatusRead, OsApiError> {
            *self.status_reads.borrow_mut() += 1;
            next(&self.statuses)
        }
        async fn action(&self, action: Action) -> Result<ActionReply, OsApiError> {
            self.posts.borrow_mut().push(action);
            next(&self.replies)
        }
        async fn patch_updates(&self, _tx: &str, _patch: &crate::os_api::UpdatesPatch) -> Result<(), OsApiError> {
            unimplemented!("not used by commands")
        }
        async fn commit_and_apply(&self, _tx: &str) -> Result<crate::os_api::Commit, OsApiError> {
            unimplemented!("not used by commands")
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid")
    }

    fn status(state: UpdateState, cmd: Option<(CommandType, CommandStatus, DateTime<Utc>)>) -> UpdateStatus {
        UpdateStatus {
            update_state: state,
            available_updates: vec![],
            chosen_update: None,
            active_partition: None,
            staging_partition: None,
            most_recent_command: cmd.map(|(cmd_type, cmd_status, timestamp)| CommandResult {
                cmd_type,
                cmd_status,
                timestamp,
                exit_status: Some(0),
                stderr: Some(String::new()),
            }),
        }
    }

    fn ok(state: UpdateState, ty: CommandType, secs: i64) -> Result<StatusRead, OsApiError> {
        Ok(StatusRead::Status(status(state, Some((ty, CommandStatus::Success, at(secs))))))
    }

    fn busy() -> Result<StatusRead, OsApiError> {
        Ok(StatusRead::Busy)
    }

    fn budget(total_secs: u64) -> CommandBudget {
        CommandBudget {
            total: Duration::from_secs(total_secs),
            poll_interval: Duration::from_secs(1),
            busy_backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(8)),
        }
    }

    fn clock() -> VirtualClock {
        VirtualClock::new(WallTime::from_secs(1_700_000_000), 0)
    }

    fn refused(maybe_sent: bool) -> OsApiError {
        OsApiError::Transport { request: "POST /x".into(), reason: "connection reset".into(), maybe_sent }
    }

    #[tokio::test(start_paused = true)]
    async fn busy_post_is_retried_with_backoff_until_it_starts() {
        use CommandType::Refresh;
        let api = Scripted::new(
            [ok(UpdateState::Idle, Refresh, 0), busy(), ok(UpdateState::Available, Refresh, 50)],
            [Ok(ActionReply::Busy), Ok(ActionReply::Busy), Ok(ActionReply::Busy), Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(1));
        let t0 = clock.now();
        let s = run_command(&api, &clock, &jitter, Action::Refresh, &budget(120)).await.expect("succeeds");
        assert_eq!(s.update_state, UpdateState::Available);
        assert_eq!(api.posts(), 4);
        assert_eq!(api.reads(), 3);
        // Three back-offs of at least half their ceilings (1 s, 2 s, 4 s), then two polls of 1 s.
        assert!(clock.now().since(t0) >= Duration::from_secs(7 + 2), "{:?}", clock.now().since(t0));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_status_reads_are_waited_through_before_and_after_the_post() {
        use CommandType::Prepare;
        let api = Scripted::new(
            [
                busy(),
                busy(),
                busy(),
                ok(UpdateState::Available, Prepare, 0),
                busy(),
                busy(),
                ok(UpdateState::Staged, Prepare, 9),
            ],
            [Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(2));
        let s = run_command(&api, &clock, &jitter, Action::Prepare, &budget(120)).await.expect("succeeds");
        assert_eq!(s.update_state, UpdateState::Staged);
        assert_eq!(api.posts(), 1);
        assert_eq!(api.unread(), 1, "every scripted answer was read");
    }

    #[tokio::test(start_paused = true)]
    async fn no_status_before_the_first_command_counts_any_result_as_new() {
        let api = Scripted::new(
            [
                Ok(StatusRead::Uninitialized),
                Ok(StatusRead::Uninitialized),
                busy(),
                ok(UpdateState::Idle, CommandType::Refresh, -3600),
            ],
            [Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(3));
        let s = run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect("succeeds");
        assert_eq!(s.most_recent_command.expect("command").timestamp, at(-3600));
        assert_eq!(api.reads(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn not_allowed_carries_the_status_read_after_it() {
        let api = Scripted::new(
            [Ok(StatusRead::Uninitialized), Ok(StatusRead::Status(status(UpdateState::Idle, None)))],
            [Ok(ActionReply::NotAllowed)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(4));
        match run_command(&api, &clock, &jitter, Action::Activate, &budget(60)).await {
            Err(CommandError::NotAllowed { action: Action::Activate, status: Some(s) }) => {
                assert_eq!(s.update_state, UpdateState::Idle);
                assert!(s.most_recent_command.is_none());
            }
            other => panic!("expected NotAllowed with a status, got {other:?}"),
        }
        assert_eq!(api.posts(), 1, "a refusal is not retried");
        assert_eq!(api.reads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_reported_with_its_body() {
        let api = Scripted::new(
            [ok(UpdateState::Idle, CommandType::Refresh, 0)],
            [Ok(ActionReply::NotFound("Previously chosen Update no longer exists".into()))],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(5));
        let err = run_command(&api, &clock, &jitter, Action::Prepare, &budget(60)).await.expect_err("404");
        assert_eq!(
            err,
            CommandError::NotFound {
                action: Action::Prepare,
                body: "Previously chosen Update no longer exists".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_timestamp_keeps_polling_until_a_strictly_newer_one() {
        use CommandType::Refresh;
        let newer = at(100) + chrono::Duration::milliseconds(1);
        let api = Scripted::new(
            [
                ok(UpdateState::Available, Refresh, 100),
                ok(UpdateState::Available, Refresh, 100),
                ok(UpdateState::Available, Refresh, 100),
                ok(UpdateState::Available, Refresh, 99),
                Ok(StatusRead::Status(status(UpdateState::Idle, Some((Refresh, CommandStatus::Success, newer))))),
            ],
            [Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(6));
        let s = run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect("succeeds");
        assert_eq!(s.update_state, UpdateState::Idle);
        assert_eq!(s.most_recent_command.expect("command").timestamp, newer);
        assert_eq!(api.reads(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn another_callers_command_is_waited_out() {
        let api = Scripted::new(
            [
                ok(UpdateState::Available, CommandType::Refresh, 0),
                ok(UpdateState::Staged, CommandType::Prepare, 10),
                busy(),
                ok(UpdateState::Staged, CommandType::Refresh, 20),
            ],
            [Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(7));
        let s = run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect("succeeds");
        let cmd = s.most_recent_command.expect("command");
        assert_eq!((cmd.cmd_type, cmd.timestamp), (CommandType::Refresh, at(20)));
        assert_eq!(api.reads(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_and_unknown_results_are_failures_with_stderr() {
        for outcome in [CommandStatus::Failed, CommandStatus::Unknown] {
            let mut done = status(UpdateState::Available, Some((CommandType::Prepare, outcome.clone(), at(30))));
            let cmd = done.most_recent_command.as_mut().expect("command");
            cmd.exit_status = Some(1);
            cmd.stderr = Some("Failed to download image".into());
            let api = Scripted::new(
                [ok(UpdateState::Available, CommandType::Refresh, 0), busy(), Ok(StatusRead::Status(done))],
                [Ok(ActionReply::Started)],
            );
            let (clock, jitter) = (clock(), Jitter::seeded(8));
            match run_command(&api, &clock, &jitter, Action::Prepare, &budget(60)).await {
                Err(CommandError::Failed { action: Action::Prepare, result }) => {
                    assert_eq!(result.cmd_status, outcome);
                    assert_eq!(result.exit_status, Some(1));
                    assert_eq!(result.stderr.as_deref(), Some("Failed to download image"));
                }
                other => panic!("expected Failed for {outcome:?}, got {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_that_keeps_running_times_out_at_the_budget() {
        let api =
            Scripted::new([ok(UpdateState::Available, CommandType::Refresh, 0), busy()], [Ok(ActionReply::Started)]);
        let (clock, jitter) = (clock(), Jitter::seeded(9));
        let t0 = clock.now();
        match run_command(&api, &clock, &jitter, Action::Prepare, &budget(30)).await {
            Err(CommandError::TimedOut { action: Action::Prepare, waited }) => {
                assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(32), "{waited:?}");
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        assert!(clock.now().since(t0) < Duration::from_secs(32));
        assert!(api.reads() >= 29, "polled every second: {}", api.reads());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_that_stays_held_times_out_without_failing_on_the_first_busy() {
        let api = Scripted::new([ok(UpdateState::Available, CommandType::Refresh, 0)], [Ok(ActionReply::Busy)]);
        let (clock, jitter) = (clock(), Jitter::seeded(10));
        match run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await {
            Err(CommandError::TimedOut { action: Action::Refresh, waited }) => {
                assert!(waited >= Duration::from_secs(60), "{waited:?}");
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        assert!(api.posts() > 5, "retried while busy: {}", api.posts());
    }

    #[tokio::test(start_paused = true)]
    async fn undelivered_posts_are_resent_but_possibly_delivered_ones_are_not() {
        use CommandType::Refresh;
        let api = Scripted::new(
            [ok(UpdateState::Idle, Refresh, 0), ok(UpdateState::Idle, Refresh, 5)],
            [Err(refused(false)), Err(refused(false)), Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(11));
        run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect("succeeds");
        assert_eq!(api.posts(), 3);

        let api = Scripted::new([ok(UpdateState::Idle, Refresh, 0)], [Err(refused(true)), Ok(ActionReply::Started)]);
        let err = run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect_err("not resent");
        assert!(
            matches!(
                err,
                CommandError::Api { action: Action::Refresh, source: OsApiError::Transport { maybe_sent: true, .. } }
            ),
            "{err:?}"
        );
        assert_eq!(api.posts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_poll_errors_are_retried_and_reported_when_they_outlive_the_budget() {
        use CommandType::Refresh;
        let down =
            || Err(OsApiError::Status { request: "GET /updates/status".into(), status: 500, body: "oops".into() });
        let api = Scripted::new(
            [ok(UpdateState::Idle, Refresh, 0), down(), down(), ok(UpdateState::Available, Refresh, 3)],
            [Ok(ActionReply::Started)],
        );
        let (clock, jitter) = (clock(), Jitter::seeded(12));
        run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect("recovers");

        let api = Scripted::new([ok(UpdateState::Idle, Refresh, 0), down()], [Ok(ActionReply::Started)]);
        let err = run_command(&api, &clock, &jitter, Action::Refresh, &budget(20)).await.expect_err("outlived");
        assert!(matches!(err, CommandError::Api { source: OsApiError::Status { status: 500, .. }, .. }), "{err:?}");

        let malformed =
            OsApiError::Malformed { request: "GET /updates/status".into(), reason: "eof".into(), body: "{".into() };
        let api =
            Scripted::new([ok(UpdateState::Idle, Refresh, 0), Err(malformed.clone())], [Ok(ActionReply::Started)]);
        let err = run_command(&api, &clock, &jitter, Action::Refresh, &budget(60)).await.expect_err("final");
        assert_eq!(err, CommandError::Api { action: Action::Refresh, source: malformed });
        assert_eq!(api.reads(), 2, "a malformed status is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn read_status_waits_through_busy_and_maps_404_to_none() {
        let (clock, jitter) = (clock(), Jitter::seeded(13));
        let api = Scripted::new([busy(), busy(), Ok(StatusRead::Uninitialized)], []);
        assert_eq!(read_status(&api, &clock, &jitter, &budget(60)).await, Ok(None));
        assert_eq!(api.reads(), 3);

        let api = Scripted::new([busy()], []);
        match read_status(&api, &clock, &jitter, &budget(10)).await {
            Err(CommandError::StatusTimedOut { waited }) => assert!(waited >= Duration::from_secs(10)),
            other => panic!("expected StatusTimedOut, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reboot_outcomes() {
        let (clock, jitter) = (clock(), Jitter::seeded(14));
        let api = Scripted::new([], [Ok(ActionReply::Started)]);
        assert_eq!(request_reboot(&api, &clock, &jitter, &budget(30)).await, Ok(RebootRequest::Accepted));

        let api = Scripted::new([], [Err(refused(true))]);
        assert_eq!(request_reboot(&api, &clock, &jitter, &budget(30)).await, Ok(RebootRequest::ConnectionLost));

        let api = Scripted::new([], [Err(refused(false)), Ok(ActionReply::Started)]);
        assert_eq!(request_reboot(&api, &clock, &jitter, &budget(30)).await, Ok(RebootRequest::Accepted));
        assert_eq!(api.posts(), 2);

        let inhibited =
            OsApiError::Status { request: "POST /actions/reboot".into(), status: 500, body: "inhibited".into() };
        let api = Scripted::new([], [Err(inhibited.clone()), Ok(ActionReply::Started)]);
        assert_eq!(
            request_reboot(&api, &clock, &jitter, &budget(30)).await,
            Err(CommandError::Api { action: Action::Reboot, source: inhibited })
        );
        assert_eq!(api.posts(), 1, "a refused reboot is not resent");
    }

    #[tokio::test(start_paused = true)]
    async fn reboot_is_not_a_command_to_wait_for() {
        let api = Scripted::new([], []);
        let (clock, jitter) = (clock(), Jitter::seeded(15));
        let err = run_command(&api, &clock, &jitter, Action::Reboot, &budget(30)).await.expect_err("refused");
        assert_eq!(err, CommandError::NotACommand { action: Action::Reboot });
        assert_eq!((api.reads(), api.posts()), (0, 0));
    }

    #[test]
    fn default_budgets_follow_the_documented_pacing() {
        let b = CommandBudgets::default();
        for action in [Action::Refresh, Action::Prepare, Action::Activate, Action::Deactivate, Action::Reboot] {
            let p = b.for_action(action).poll_interval;
            assert!(p >= Duration::from_secs(1) && p <= Duration::from_secs(2), "{action:?}: {p:?}");
        }
        assert!(b.prepare.total >= Duration::from_secs(10 * 60), "prepare may take many minutes");
        assert!(b.refresh.total < b.prepare.total);
        assert_eq!(b.status.busy_backoff.ceiling(0), Duration::from_secs(2));
        assert_eq!(b.status.busy_backoff.ceiling(10), Duration::from_secs(30));
    }
}
