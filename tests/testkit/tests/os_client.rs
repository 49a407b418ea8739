//! The real HTTP client and the update-command semantics against the fake host on a Unix socket.
//!
//! Every status code the agent relies on is produced by the fake from its own model of apiserver
//! and thar-be-updates, then read back through `HttpOsApi` and `run_command`.

use std::time::Duration;

use agent::backoff::{Backoff, Jitter};
use agent::clock::SystemClock;
use agent::os_api::commands::{read_status, request_reboot, run_command, CommandBudget, CommandError, RebootRequest};
use agent::os_api::http::HttpOsApi;
use agent::os_api::{
    Action, ActionReply, CommandStatus, CommandType, OsApi, OsApiError, StatusRead, UpdateSettings, UpdateState,
};
use fake_bottlerocket::{
    serve_with, CommandDurations, FakeHost, Faults, HostConfig, RebootBehavior, ServeOptions, ServedHost,
    UpdateState as FakeState,
};

/// A served fake host, the client for it, and the tempdir holding the socket.
struct Rig {
    host: FakeHost,
    api: HttpOsApi,
    _served: ServedHost,
    _dir: tempfile::TempDir,
}

fn config(durations: CommandDurations) -> HostConfig {
    HostConfig {
        version: "1.26.0".into(),
        published: vec!["1.25.0".into(), "1.26.1".into()],
        durations,
        ..HostConfig::default()
    }
}

fn quick() -> CommandDurations {
    CommandDurations::all(Duration::from_millis(150))
}

fn start(config: HostConfig) -> Rig {
    start_with(config, ServeOptions::default())
}

fn start_with(config: HostConfig, options: ServeOptions) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    let host = FakeHost::new(config);
    let served = serve_with(host.clone(), &socket, options).expect("serve");
    let api = HttpOsApi::new(&socket, Duration::from_secs(10));
    Rig { host, api, _served: served, _dir: dir }
}

/// Short polls and back-offs; the totals are only a safety net.
fn budget() -> CommandBudget {
    CommandBudget {
        total: Duration::from_secs(60),
        poll_interval: Duration::from_millis(100),
        busy_backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(400)),
    }
}

async fn run(rig: &Rig, action: Action) -> Result<agent::os_api::UpdateStatus, CommandError> {
    run_command(&rig.api, &SystemClock, &Jitter::seeded(1), action, &budget()).await
}

fn count(host: &FakeHost, request: &str) -> usize {
    host.requests().iter().filter(|r| r.as_str() == request).count()
}

#[tokio::test]
async fn refresh_prepare_activate_reboot_moves_the_host_to_the_new_version() {
    let rig = start(config(quick()));
    let os = rig.api.os_info().await.expect("os");
    assert_eq!((os.version_id.as_str(), os.variant_id.as_str(), os.arch.as_str()), ("1.26.0", "aws-ecs-2", "x86_64"));
    let settings = rig.api.update_settings().await.expect("settings");
    assert_eq!(
        settings,
        UpdateSettings { seed: Some(1234), version_lock: Some("latest".into()), ignore_waves: Some(false) }
    );
    let jitter = Jitter::seeded(2);
    assert_eq!(read_status(&rig.api, &SystemClock, &jitter, &budget()).await.expect("status"), None);

    let s = run(&rig, Action::Refresh).await.expect("refresh");
    assert_eq!(s.update_state, UpdateState::Available);
    assert_eq!(s.chosen_version(), Some("1.26.1"));
    assert_eq!(s.available_updates, vec!["1.26.1", "1.25.0"]);

    let s = run(&rig, Action::Prepare).await.expect("prepare");
    assert_eq!(s.update_state, UpdateState::Staged);
    assert_eq!(s.staged_version(), Some("1.26.1"));
    let cmd = s.most_recent_command.expect("command");
    assert_eq!((cmd.cmd_type, cmd.cmd_status), (CommandType::Prepare, CommandStatus::Success));
    assert!(cmd.stderr.unwrap_or_default().contains("Starting update to 1.26.1"));

    let s = run(&rig, Action::Activate).await.expect("activate");
    assert_eq!(s.update_state, UpdateState::Ready);
    assert!(s.staging_partition.expect("staged").next_to_boot);

    let reboot = request_reboot(&rig.api, &SystemClock, &jitter, &budget()).await.expect("reboot");
    assert_eq!(reboot, RebootRequest::Accepted);
    assert_eq!(rig.host.reboot_requests(), 1);
    rig.host.boot();
    assert_eq!(rig.api.os_info().await.expect("os").version_id, "1.26.1");
    assert_eq!(rig.api.update_status().await.expect("status"), StatusRead::Uninitialized, "status is gone after boot");
    for action in [Action::Refresh, Action::Prepare, Action::Activate] {
        assert_eq!(count(&rig.host, &format!("POST {}", action.path())), 1, "{action:?} posted once");
    }
}

#[tokio::test]
async fn a_refused_command_on_a_fresh_host_leaves_a_status_with_no_command() {
    let rig = start(config(quick()));
    assert_eq!(rig.api.action(Action::Activate).await.expect("answer"), ActionReply::NotAllowed);
    match rig.api.update_status().await.expect("answer") {
        StatusRead::Status(s) => {
            assert_eq!(s.update_state, UpdateState::Idle);
            assert!(s.most_recent_command.is_none(), "{s:?}");
        }
        other => panic!("expected the initialised status, got {other:?}"),
    }
    let fresh = start(config(quick()));
    match run(&fresh, Action::Activate).await {
        Err(CommandError::NotAllowed { action: Action::Activate, status: Some(s) }) => {
            assert_eq!(s.update_state, UpdateState::Idle);
            assert!(s.most_recent_command.is_none());
        }
        other => panic!("expected NotAllowed with the re-read status, got {other:?}"),
    }
}

#[tokio::test]
async fn a_status_that_does_not_parse_is_malformed_with_its_body() {
    let rig = start(config(quick()));
    run(&rig, Action::Refresh).await.expect("refresh");
    rig.host.set_faults(Faults { malformed_status: true, ..Faults::default() });
    match rig.api.update_status().await {
        Err(OsApiError::Malformed { request, body, .. }) => {
            assert_eq!(request, "GET /updates/status");
            assert!(body.starts_with("{\"update_state\":\"Available\""), "{body}");
            assert!(serde_json::from_str::<serde_json::Value>(&body).is_err(), "the body really is broken");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    match run(&rig, Action::Refresh).await {
        Err(CommandError::Api { action: Action::Refresh, source: OsApiError::Malformed { .. } }) => {}
        other => panic!("expected a malformed status to end the command, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_prepare_is_polled_through_the_held_lock() {
    let durations = CommandDurations { prepare: Duration::from_secs(3), ..quick() };
    let rig = start(config(durations));
    run(&rig, Action::Refresh).await.expect("refresh");
    rig.host.clear_requests();
    let started = std::time::Instant::now();
    let s = run(&rig, Action::Prepare).await.expect("prepare");
    assert_eq!(s.update_state, UpdateState::Staged);
    assert!(started.elapsed() >= Duration::from_secs(3), "finished only when the work ended");
    assert_eq!(count(&rig.host, "POST /actions/prepare-update"), 1);
    let polls = count(&rig.host, "GET /updates/status");
    assert!(polls >= 5, "polled while the lock was held: {polls}");
}

#[tokio::test]
async fn the_lock_answers_423_while_a_command_runs_and_commands_wait_for_it() {
    let durations = CommandDurations { prepare: Duration::from_secs(4), ..quick() };
    let rig = start(config(durations));
    run(&rig, Action::Refresh).await.expect("refresh");
    // The work lasts 4 s; the next three local requests take milliseconds.
    assert_eq!(rig.api.action(Action::Prepare).await.expect("answer"), ActionReply::Started);
    assert_eq!(rig.api.update_status().await.expect("answer"), StatusRead::Busy);
    assert_eq!(rig.api.action(Action::Refresh).await.expect("answer"), ActionReply::Busy);

    let s = run(&rig, Action::Refresh).await.expect("refresh after the prepare");
    let cmd = s.most_recent_command.expect("command");
    assert_eq!((cmd.cmd_type, cmd.cmd_status), (CommandType::Refresh, CommandStatus::Success));
    assert_eq!(s.update_state, UpdateState::Staged, "the prepare finished first");
}

#[tokio::test]
async fn the_status_is_404_after_a_boot_until_the_next_command() {
    let rig = start(config(quick()));
    run(&rig, Action::Refresh).await.expect("refresh");
    assert!(matches!(rig.api.update_status().await, Ok(StatusRead::Status(_))));
    rig.host.boot();
    assert_eq!(rig.api.update_status().await.expect("answer"), StatusRead::Uninitialized);
    let jitter = Jitter::seeded(3);
    assert_eq!(read_status(&rig.api, &SystemClock, &jitter, &budget()).await.expect("read"), None);
    let s = run(&rig, Action::Refresh).await.expect("refresh after boot");
    assert_eq!(s.update_state, UpdateState::Available);
}

#[tokio::test]
async fn prepare_without_a_chosen_update_is_not_found() {
    let rig = start(config(quick()));
    run(&rig, Action::Refresh).await.expect("refresh");
    run(&rig, Action::Prepare).await.expect("prepare");
    // Staged keeps its state on refresh, but the chosen update goes once nothing is published.
    rig.host.publish(Vec::<String>::new());
    let s = run(&rig, Action::Refresh).await.expect("refresh");
    assert_eq!((s.update_state, s.chosen_version()), (UpdateState::Staged, None));
    match run(&rig, Action::Prepare).await {
        Err(CommandError::NotFound { action: Action::Prepare, body }) => {
            assert_eq!(body, "Previously chosen Update no longer exists");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_reboot_is_an_error_with_the_reason() {
    let rig = start(HostConfig { faults: Faults { reboot_refused: true, ..Faults::default() }, ..config(quick()) });
    match request_reboot(&rig.api, &SystemClock, &Jitter::seeded(4), &budget()).await {
        Err(CommandError::Api { action: Action::Reboot, source: OsApiError::Status { status: 500, body, .. } }) => {
            assert!(body.contains("inhibited"), "{body}");
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    assert_eq!(rig.host.reboot_requests(), 0);
    assert_eq!(count(&rig.host, "POST /actions/reboot"), 1, "a refused reboot is not resent");
}

#[tokio::test]
async fn a_missing_socket_is_a_transport_error_that_was_never_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = HttpOsApi::new(dir.path().join("api.sock"), Duration::from_secs(5));
    for result in [api.update_status().await.map(|_| ()), api.action(Action::Prepare).await.map(|_| ())] {
        match result {
            Err(OsApiError::Transport { maybe_sent, .. }) => assert!(!maybe_sent),
            other => panic!("expected a transport error, got {other:?}"),
        }
    }
    let short = CommandBudget { total: Duration::from_millis(500), ..budget() };
    match run_command(&api, &SystemClock, &Jitter::seeded(5), Action::Refresh, &short).await {
        Err(CommandError::Api { source: OsApiError::Transport { maybe_sent: false, .. }, .. }) => {}
        other => panic!("expected the transport error after the budget, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_prepare_is_failed_with_stderr() {
    let rig = start(config(quick()));
    run(&rig, Action::Refresh).await.expect("refresh");
    rig.host.set_faults(Faults { prepare_fails: true, ..Faults::default() });
    match run(&rig, Action::Prepare).await {
        Err(CommandError::Failed { action: Action::Prepare, result }) => {
            assert_eq!((result.cmd_type, result.cmd_status), (CommandType::Prepare, CommandStatus::Failed));
            assert_ne!(result.exit_status, Some(0));
            let stderr = result.stderr.unwrap_or_default();
            assert!(stderr.contains("Failed to write the update image"), "{stderr}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(rig.host.update_state(), Some(FakeState::Available), "a failed prepare changes nothing");
}

#[tokio::test]
async fn a_failed_refresh_drops_to_idle_and_is_failed() {
    let rig = start(config(quick()));
    run(&rig, Action::Refresh).await.expect("refresh");
    rig.host.set_faults(Faults { refresh_fails: true, ..Faults::default() });
    match run(&rig, Action::Refresh).await {
        Err(CommandError::Failed { action: Action::Refresh, result }) => {
            assert_eq!(result.cmd_status, CommandStatus::Failed);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(rig.host.update_state(), Some(FakeState::Idle));
}

#[tokio::test]
async fn connections_closed_by_the_idle_timeout_are_replaced() {
    let options = ServeOptions { idle_timeout: Some(Duration::from_millis(200)) };
    let rig = start_with(config(quick()), options);
    rig.api.os_info().await.expect("first request opens a connection");
    tokio::time::sleep(Duration::from_millis(600)).await;
    rig.api.os_info().await.expect("a read after the server closed the idle connection");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rig.api.action(Action::Refresh).await.expect("a post after the idle close"), ActionReply::Started);
    assert_eq!(count(&rig.host, "POST /actions/refresh-updates"), 1);
}

#[tokio::test]
async fn a_host_that_went_down_is_a_transport_error() {
    let rig = start(HostConfig { reboot: RebootBehavior::GoDown, ..config(quick()) });
    let jitter = Jitter::seeded(6);
    assert_eq!(request_reboot(&rig.api, &SystemClock, &jitter, &budget()).await, Ok(RebootRequest::Accepted));
    match rig.api.os_info().await {
        Err(OsApiError::Transport { request, .. }) => assert_eq!(request, "GET /os"),
        other => panic!("expected a transport error while the host is down, got {other:?}"),
    }
    rig.host.boot();
    assert_eq!(rig.api.os_info().await.expect("up again").version_id, "1.26.0", "no activate: same version");
}

#[tokio::test]
async fn a_settings_transaction_over_the_socket_locks_the_updater_to_an_older_version() {
    let rig = start(HostConfig { settings_apply_delay: Duration::ZERO, ..config(quick()) });
    let lock = agent::os_api::UpdatesPatch { version_lock: "v1.25.0".into(), ignore_waves: true };
    rig.api.patch_updates("agent-test", &lock).await.expect("PATCH /settings is 204");
    assert_eq!(rig.api.update_settings().await.expect("settings").version_lock.as_deref(), Some("latest"), "pending, not live");
    let keys = rig.api.commit_and_apply("agent-test").await.expect("commit");
    assert_eq!(
        keys,
        agent::os_api::Commit::Applied(vec!["settings.updates.ignore-waves".into(), "settings.updates.version-lock".into()])
    );
    assert_eq!(rig.api.commit_and_apply("agent-test").await.expect("422 is an answer"), agent::os_api::Commit::NothingPending);
    let live = rig.api.update_settings().await.expect("settings");
    assert_eq!((live.version_lock.as_deref(), live.ignore_waves), (Some("v1.25.0"), Some(true)));
    // Locked to an older published version, the updater chooses it: the way back down.
    let s = run(&rig, Action::Refresh).await.expect("refresh");
    assert_eq!(s.chosen_version(), Some("1.25.0"));
    // A body the settings model refuses is a 400, reported as such.
    let bad = agent::os_api::UpdatesPatch { version_lock: "newest".into(), ignore_waves: false };
    let err = rig.api.patch_updates("agent-test", &bad).await.expect_err("400");
    assert!(matches!(err, agent::os_api::OsApiError::Status { status: 400, .. }), "{err:?}");
}
