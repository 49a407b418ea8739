//! `FakeHost` as the agent's `OsApi` in memory, on paused time, and shared across threads.

use std::time::Duration;

use agent::os_api::{
    Action, ActionReply, CommandStatus, CommandType, OsApi, OsApiError, StatusRead, UpdateState,
};
use fake_bottlerocket::{CommandDurations, FakeHost, Faults, HostConfig, RebootBehavior};

fn host(published: &[&str], durations: CommandDurations, reboot: RebootBehavior) -> FakeHost {
    FakeHost::new(HostConfig {
        version: "1.26.0".into(),
        published: published.iter().map(|v| v.to_string()).collect(),
        durations,
        reboot,
        ..HostConfig::default()
    })
}

async fn status(h: &FakeHost) -> StatusRead {
    h.update_status().await.expect("status answers")
}

#[tokio::test(start_paused = true)]
async fn answers_map_to_the_trait_like_a_correct_client() {
    let h = host(&["1.27.0"], CommandDurations::all(Duration::from_secs(3)), RebootBehavior::StayUp);
    assert_eq!(status(&h).await, StatusRead::Uninitialized);
    assert_eq!(h.action(Action::Activate).await, Ok(ActionReply::NotAllowed));
    assert_eq!(h.action(Action::Refresh).await, Ok(ActionReply::Started));
    assert_eq!(status(&h).await, StatusRead::Busy);
    assert_eq!(h.action(Action::Prepare).await, Ok(ActionReply::Busy));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let StatusRead::Status(s) = status(&h).await else { panic!("status expected") };
    assert_eq!(s.update_state, UpdateState::Available);
    assert_eq!(s.chosen_version(), Some("1.27.0"));
    let cmd = s.most_recent_command.expect("recorded");
    assert_eq!((cmd.cmd_type, cmd.cmd_status), (CommandType::Refresh, CommandStatus::Success));

    let os = h.os_info().await.expect("os");
    assert_eq!((os.version_id.as_str(), os.variant_id.as_str(), os.arch.as_str()), ("1.26.0", "aws-ecs-2", "x86_64"));
    let settings = h.update_settings().await.expect("settings");
    assert_eq!(settings.seed, Some(1234));
    assert_eq!(settings.version_lock.as_deref(), Some("latest"));
    assert_eq!(settings.ignore_waves, Some(false));
    assert_eq!(
        h.requests(),
        [
            "GET /updates/status",
            "POST /actions/activate-update",
            "POST /actions/refresh-updates",
            "GET /updates/status",
            "POST /actions/prepare-update",
            "GET /updates/status",
            "GET /os",
            "GET /settings?keys=settings.updates.seed,settings.updates.version-lock,settings.updates.ignore-waves",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn errors_map_to_typed_failures() {
    let h = host(&["1.27.0"], CommandDurations::all(Duration::ZERO), RebootBehavior::StayUp);
    h.set_faults(Faults { reboot_refused: true, ..Faults::default() });
    match h.action(Action::Reboot).await {
        Err(OsApiError::Status { status: 500, body, .. }) => assert!(body.starts_with("Failed to reboot")),
        other => panic!("expected a 500, got {other:?}"),
    }
    h.action(Action::Refresh).await.expect("refresh");
    h.action(Action::Prepare).await.expect("prepare");
    h.publish(Vec::<String>::new());
    h.action(Action::Refresh).await.expect("refresh");
    match h.action(Action::Prepare).await {
        Ok(ActionReply::NotFound(body)) => assert_eq!(body, "Previously chosen Update no longer exists"),
        other => panic!("expected a 404, got {other:?}"),
    }
    h.set_faults(Faults { malformed_status: true, ..Faults::default() });
    assert!(matches!(h.update_status().await, Err(OsApiError::Malformed { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_rebooting_host_is_unreachable_then_boots_by_itself() {
    let reboot = RebootBehavior::BootAfter(Duration::from_secs(90));
    let h = host(&["1.27.0"], CommandDurations::all(Duration::ZERO), reboot);
    for action in [Action::Refresh, Action::Prepare, Action::Activate, Action::Reboot] {
        assert_eq!(h.action(action).await, Ok(ActionReply::Started), "{action:?}");
    }
    let logged = h.requests().len();
    match h.os_info().await {
        Err(OsApiError::Transport { maybe_sent: false, .. }) => {}
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert_eq!(h.requests().len(), logged, "a down host receives nothing");
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(h.os_info().await.expect("up again").version_id, "1.27.0");
    assert_eq!((h.boots(), h.reboot_requests()), (1, 1));
    assert_eq!(status(&h).await, StatusRead::Uninitialized);
}

/// One host's whole update, the way a patient client drives it.
async fn update_one(h: FakeHost) -> String {
    async fn wait_for(h: &FakeHost, cmd: CommandType) {
        loop {
            if let Ok(StatusRead::Status(s)) = h.update_status().await {
                if s.most_recent_command.as_ref().is_some_and(|c| c.cmd_type == cmd) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for (action, cmd) in [
        (Action::Refresh, CommandType::Refresh),
        (Action::Prepare, CommandType::Prepare),
        (Action::Activate, CommandType::Activate),
    ] {
        assert_eq!(h.action(action).await, Ok(ActionReply::Started));
        wait_for(&h, cmd).await;
    }
    assert_eq!(h.action(Action::Reboot).await, Ok(ActionReply::Started));
    loop {
        match h.os_info().await {
            Ok(os) => return os.version_id,
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_hosts_update_on_virtual_time() {
    let durations = CommandDurations {
        refresh: Duration::from_secs(2),
        prepare: Duration::from_secs(300),
        activate: Duration::from_secs(1),
        deactivate: Duration::from_secs(1),
    };
    let hosts: Vec<FakeHost> = (0..1000)
        .map(|i| {
            let h = host(&["1.27.0"], durations, RebootBehavior::BootAfter(Duration::from_secs(60)));
            if i % 100 == 0 {
                h.set_faults(Faults { rollback_on_boot: true, ..Faults::default() });
            }
            h
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for h in &hosts {
        tasks.spawn(update_one(h.clone()));
    }
    let mut versions = Vec::new();
    while let Some(done) = tasks.join_next().await {
        versions.push(done.expect("host task"));
    }
    let updated = versions.iter().filter(|v| v.as_str() == "1.27.0").count();
    assert_eq!(updated, 990, "all but the ten rolled-back hosts run the new version");
    assert!(hosts.iter().all(|h| h.boots() == 1));
}

#[test]
fn one_host_shared_by_threads_grants_the_lock_once() {
    let h = host(&["1.27.0"], CommandDurations::all(Duration::from_secs(3600)), RebootBehavior::StayUp);
    let started: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                scope.spawn(move || {
                    (0..50).filter(|_| h.handle("POST", "/actions/refresh-updates").status == 204).count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    assert_eq!(started, 1, "only one refresh can hold the lock");
    assert_eq!(h.requests().len(), 400);
    assert_eq!(h.handle("GET", "/updates/status").status, 423);
}

#[test]
fn the_handle_is_send_and_sync() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<FakeHost>();
}
