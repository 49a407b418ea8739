//! The host model through its HTTP semantics, on explicit instants (no clock, no runtime).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fake_bottlerocket::model::{CommandDurations, Faults, HostConfig, HostModel};
use fake_bottlerocket::routes::{self, FakeResponse, JSON};
use fake_bottlerocket::wire::{CommandStatus, UpdateCommand, UpdateState, UpdateStatus};
use serde_json::Value;
use tokio::time::Instant;

const RUNNING: &str = "1.26.0";

/// A host on a timeline we move by hand.
struct Bench {
    model: HostModel,
    start: Instant,
    now: Instant,
}

impl Bench {
    fn new(config: HostConfig) -> Bench {
        let start = Instant::now();
        Bench { model: HostModel::new(config, start), start, now: start }
    }
    /// A host with instant commands and `published` on offer.
    fn instant(published: &[&str]) -> Bench {
        Bench::new(HostConfig {
            version: RUNNING.into(),
            published: published.iter().map(|v| v.to_string()).collect(),
            durations: CommandDurations::all(Duration::ZERO),
            wall_clock_start: Some(wall_start()),
            ..HostConfig::default()
        })
    }
    fn at(&mut self, since_start: Duration) {
        self.now = self.start + since_start;
    }
    fn call(&mut self, method: &str, path: &str) -> FakeResponse {
        routes::route(&mut self.model, self.now, method, path, b"")
    }
    fn post(&mut self, action: &str) -> FakeResponse {
        self.call("POST", &format!("/actions/{action}"))
    }
    fn status(&mut self) -> UpdateStatus {
        let r = self.call("GET", "/updates/status");
        assert_eq!(r.status, 200, "status should be readable: {r:?}");
        r.json_body().expect("status parses")
    }
    fn faults(&mut self, faults: Faults) {
        self.model.set_faults(faults, self.now);
    }
    /// Drive the host to `state` with instant commands (1.27.0 published as the update).
    fn reach(&mut self, state: UpdateState) {
        let steps: &[&str] = match state {
            UpdateState::Idle => &["refresh-updates"],
            UpdateState::Available => &["refresh-updates"],
            UpdateState::Staged => &["refresh-updates", "prepare-update"],
            UpdateState::Ready => &["refresh-updates", "prepare-update", "activate-update"],
        };
        for step in steps {
            assert_eq!(self.post(step).status, 204, "{step} on the way to {state:?}");
        }
        assert_eq!(self.status().update_state, state);
    }
}

fn wall_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123456789Z").expect("valid").with_timezone(&Utc)
}

fn bench_in(state: UpdateState) -> Bench {
    let published: &[&str] = if state == UpdateState::Idle { &[RUNNING] } else { &["1.27.0", RUNNING] };
    let mut bench = Bench::instant(published);
    bench.reach(state);
    bench
}

fn assert_empty_404(r: &FakeResponse) {
    assert_eq!((r.status, r.content_type, r.body.as_str()), (404, None, ""), "{r:?}");
}

#[test]
fn status_is_absent_until_the_first_command() {
    let mut b = Bench::instant(&["1.27.0"]);
    let r = b.call("GET", "/updates/status");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "Update status is uninitialized, refresh-updates to initialize it");
    assert_eq!(r.content_type, None, "error bodies are plain text without a content type");
    assert_eq!(b.model.update_state(), None);
    assert_eq!(b.post("refresh-updates").status, 204);
    assert_eq!(b.status().update_state, UpdateState::Available);
}

#[test]
fn a_refused_command_initialises_the_status_with_a_null_command() {
    let mut b = Bench::instant(&["1.27.0"]);
    let r = b.post("activate-update");
    assert_eq!((r.status, r.body.as_str()), (409, "Update action not allowed according to update state"));
    let raw = b.call("GET", "/updates/status");
    assert_eq!((raw.status, raw.content_type), (200, Some(JSON)));
    let json: Value = serde_json::from_str(&raw.body).expect("json");
    assert_eq!(json["most_recent_command"], Value::Null);
    assert_eq!(json["update_state"], "Idle");
    assert_eq!(json["chosen_update"], Value::Null);
    assert_eq!(json["staging_partition"], Value::Null);
    assert_eq!(json["available_updates"], serde_json::json!([]));
    assert_eq!(json["active_partition"]["image"]["version"], RUNNING);
    assert_eq!(json["active_partition"]["next_to_boot"], true);
}

#[test]
fn the_transition_table_decides_which_commands_run() {
    use UpdateState::*;
    // (state, command, allowed) for every cell of the table.
    let table = [
        (Idle, "refresh-updates", true), (Available, "refresh-updates", true),
        (Staged, "refresh-updates", true), (Ready, "refresh-updates", true),
        (Idle, "prepare-update", false), (Available, "prepare-update", true),
        (Staged, "prepare-update", true), (Ready, "prepare-update", false),
        (Idle, "activate-update", false), (Available, "activate-update", false),
        (Staged, "activate-update", true), (Ready, "activate-update", false),
        (Idle, "deactivate-update", false), (Available, "deactivate-update", false),
        (Staged, "deactivate-update", false), (Ready, "deactivate-update", true),
    ];
    for (state, action, allowed) in table {
        let mut b = bench_in(state);
        let before = b.status();
        let r = b.post(action);
        if allowed {
            assert_eq!(r.status, 204, "{action} from {state:?}: {r:?}");
            assert!(r.body.is_empty() && r.content_type.is_none());
        } else {
            assert_eq!(r.status, 409, "{action} from {state:?}: {r:?}");
            assert_eq!(b.status(), before, "a refused command changes nothing");
        }
    }
}

#[test]
fn refresh_moves_idle_and_available_by_what_it_finds() {
    let mut b = Bench::instant(&[RUNNING]);
    b.reach(UpdateState::Idle);
    b.model.publish(vec!["1.27.0".into(), RUNNING.into()], b.now);
    b.post("refresh-updates");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Available);
    assert_eq!(s.chosen_update.as_ref().map(|u| u.version.as_str()), Some("1.27.0"));
    let cmd = s.most_recent_command.expect("recorded");
    assert_eq!((cmd.cmd_type, cmd.cmd_status, cmd.exit_status), (UpdateCommand::Refresh, CommandStatus::Success, Some(0)));
    b.model.publish(vec![RUNNING.into()], b.now);
    b.post("refresh-updates");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Idle, "Available drops to Idle when nothing is found");
    assert_eq!(s.chosen_update, None);
}

#[test]
fn refresh_in_staged_or_ready_recomputes_lists_but_keeps_the_state() {
    for state in [UpdateState::Staged, UpdateState::Ready] {
        let mut b = bench_in(state);
        b.model.publish(vec!["1.28.0".into(), "1.27.0".into()], b.now);
        assert_eq!(b.post("refresh-updates").status, 204);
        let s = b.status();
        assert_eq!(s.update_state, state);
        assert_eq!(s.available_updates, ["1.28.0", "1.27.0"]);
        assert_eq!(s.chosen_update.as_ref().map(|u| u.version.as_str()), Some("1.28.0"));
        assert_eq!(s.staging_partition.and_then(|p| p.image).map(|i| i.version).as_deref(), Some("1.27.0"));
    }
}

#[test]
fn prepare_activate_deactivate_move_the_partition_flags() {
    let mut b = bench_in(UpdateState::Available);
    b.post("prepare-update");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Staged);
    let staging = s.staging_partition.clone().expect("staged");
    assert_eq!(staging.image.as_ref().map(|i| i.version.as_str()), Some("1.27.0"));
    assert!(!staging.next_to_boot);
    assert!(s.active_partition.as_ref().expect("active").next_to_boot);
    let cmd = s.most_recent_command.expect("recorded");
    assert_eq!(cmd.stderr.as_deref(), Some("Starting update to 1.27.0\n"));

    b.post("activate-update");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Ready);
    assert!(s.staging_partition.expect("staged").next_to_boot);
    assert!(!s.active_partition.expect("active").next_to_boot);

    b.post("deactivate-update");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Staged);
    assert!(!s.staging_partition.expect("staged").next_to_boot);
    assert!(s.active_partition.expect("active").next_to_boot);
    assert_eq!(s.most_recent_command.expect("recorded").cmd_type, UpdateCommand::Deactivate);
}

#[test]
fn prepare_from_staged_restages_the_newly_chosen_update() {
    let mut b = bench_in(UpdateState::Staged);
    b.model.publish(vec!["1.28.0".into()], b.now);
    b.post("refresh-updates");
    assert_eq!(b.post("prepare-update").status, 204);
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Staged);
    assert_eq!(s.staging_partition.and_then(|p| p.image).map(|i| i.version).as_deref(), Some("1.28.0"));
}

#[test]
fn prepare_without_a_chosen_update_is_404() {
    let mut b = bench_in(UpdateState::Staged);
    b.model.publish(Vec::<String>::new(), b.now);
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update, None);
    let r = b.post("prepare-update");
    assert_eq!((r.status, r.body.as_str(), r.content_type), (404, "Previously chosen Update no longer exists", None));
}

#[test]
fn failed_commands_record_failed_and_change_state_only_as_documented() {
    // (start, action, fault, state afterwards)
    let cases = [
        (UpdateState::Idle, "refresh-updates", Faults { refresh_fails: true, ..Faults::default() }, UpdateState::Idle),
        (UpdateState::Staged, "refresh-updates", Faults { refresh_fails: true, ..Faults::default() }, UpdateState::Staged),
        (UpdateState::Ready, "refresh-updates", Faults { refresh_fails: true, ..Faults::default() }, UpdateState::Ready),
        (UpdateState::Available, "prepare-update", Faults { prepare_fails: true, ..Faults::default() }, UpdateState::Available),
        (UpdateState::Staged, "prepare-update", Faults { prepare_fails: true, ..Faults::default() }, UpdateState::Staged),
        (UpdateState::Staged, "activate-update", Faults { activate_fails: true, ..Faults::default() }, UpdateState::Staged),
    ];
    for (start, action, faults, after) in cases {
        let mut b = bench_in(start);
        b.faults(faults);
        assert_eq!(b.post(action).status, 204, "the POST succeeds; the work fails later");
        let s = b.status();
        assert_eq!(s.update_state, after, "{action} failing from {start:?}");
        let cmd = s.most_recent_command.expect("recorded");
        assert_eq!(cmd.cmd_status, CommandStatus::Failed, "{action} from {start:?}");
        assert_eq!(cmd.exit_status, Some(1));
        assert!(!cmd.stderr.unwrap_or_default().is_empty(), "a failure says why");
    }
}

#[test]
fn a_failed_refresh_drops_available_to_idle_but_keeps_the_lists() {
    let mut b = Bench::instant(&["1.27.0", "1.26.1", RUNNING]);
    b.reach(UpdateState::Available);
    let before = b.status();
    b.faults(Faults { refresh_fails: true, ..Faults::default() });
    b.model.publish(vec!["1.30.0".into()], b.now);
    b.post("refresh-updates");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Idle);
    assert_eq!(s.chosen_update, before.chosen_update, "chosen_update survives the failure");
    assert_eq!(s.available_updates, ["1.27.0", "1.26.1", RUNNING]);
    assert_eq!(b.post("prepare-update").status, 409, "Idle refuses prepare despite chosen_update");
}

#[test]
fn version_lock_picks_the_chosen_update() {
    let published = ["1.25.0", "1.27.0", "1.26.1", RUNNING, "v1.26.2"];
    let cases = [
        ("latest", Some("1.27.0")),
        ("1.26.1", Some("1.26.1")),
        ("v1.25.0", Some("1.25.0")), // a downgrade, when asked for by name
        (RUNNING, None),             // locked to what runs: nothing to do
        ("1.99.0", None),            // not published
    ];
    for (lock, chosen) in cases {
        let mut b = Bench::new(HostConfig {
            version: RUNNING.into(),
            published: published.iter().map(|v| v.to_string()).collect(),
            version_lock: lock.into(),
            durations: CommandDurations::all(Duration::ZERO),
            ..HostConfig::default()
        });
        b.post("refresh-updates");
        let s = b.status();
        assert_eq!(s.available_updates, ["1.27.0", "1.26.2", "1.26.1", RUNNING, "1.25.0"], "newest first");
        assert_eq!(s.chosen_update.as_ref().map(|u| u.version.as_str()), chosen, "lock {lock}");
        let expected = if chosen.is_some() { UpdateState::Available } else { UpdateState::Idle };
        assert_eq!(s.update_state, expected, "lock {lock}");
        if let Some(u) = s.chosen_update {
            assert_eq!((u.arch.as_str(), u.variant.as_str()), ("x86_64", "aws-ecs-2"));
        }
    }
}

#[test]
fn latest_with_nothing_newer_stays_idle() {
    let mut b = Bench::instant(&["1.25.0", RUNNING]);
    b.post("refresh-updates");
    let s = b.status();
    assert_eq!((s.update_state, s.chosen_update), (UpdateState::Idle, None));
    assert_eq!(s.available_updates, [RUNNING, "1.25.0"], "older versions are listed too");
}

#[test]
fn the_lock_hides_the_status_and_refuses_commands_until_the_work_ends() {
    let mut b = Bench::new(HostConfig {
        version: RUNNING.into(),
        published: vec!["1.27.0".into()],
        durations: CommandDurations { refresh: Duration::from_secs(10), ..CommandDurations::default() },
        wall_clock_start: Some(wall_start()),
        ..HostConfig::default()
    });
    b.at(Duration::from_secs(5));
    assert_eq!(b.post("refresh-updates").status, 204);
    for t in [5, 9, 14] {
        b.at(Duration::from_secs(t));
        let r = b.call("GET", "/updates/status");
        assert_eq!(r.status, 423, "at {t}s the work still runs");
        assert_eq!(r.body, routes::STATUS_LOCKED_BODY);
        assert!(r.body.starts_with("Unable to obtain shared lock for reading update status: "));
        assert_eq!(r.content_type, None);
        for action in ["refresh-updates", "prepare-update", "activate-update", "deactivate-update"] {
            let r = b.post(action);
            assert_eq!((r.status, r.body.as_str()), (423, "Update lock held"), "{action} at {t}s");
        }
    }
    // Touched only long after the work ended: the result carries the real end time.
    b.at(Duration::from_secs(60));
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Available);
    let cmd = s.most_recent_command.expect("recorded");
    assert_eq!(cmd.cmd_type, UpdateCommand::Refresh);
    assert_eq!(cmd.timestamp, wall_start() + chrono::Duration::seconds(15));
    let raw: Value = serde_json::from_str(&b.call("GET", "/updates/status").body).expect("json");
    assert_eq!(raw["most_recent_command"]["timestamp"], "2024-05-01T12:00:15.123456789Z");
}

#[test]
fn the_reboot_endpoint_ignores_state_and_lock() {
    let mut b = Bench::new(HostConfig {
        published: vec!["1.27.0".into()],
        durations: CommandDurations::all(Duration::from_secs(30)),
        ..HostConfig::default()
    });
    assert_eq!(b.post("refresh-updates").status, 204);
    let r = b.post("reboot");
    assert_eq!((r.status, r.body.as_str(), r.content_type), (204, "", None));
    assert_eq!(b.model.reboot_requests(), 1);
    assert_eq!(b.model.busy_with(), Some(UpdateCommand::Refresh), "a reboot request alone changes nothing");
    assert_eq!(b.model.running_version(), "1.26.0");
}

#[test]
fn a_refused_reboot_is_a_500_with_systemctl_text() {
    let mut b = Bench::instant(&[]);
    b.faults(Faults { reboot_refused: true, ..Faults::default() });
    let r = b.post("reboot");
    assert_eq!((r.status, r.content_type), (500, None));
    assert!(r.body.starts_with("Failed to reboot, exit code: 1, stderr: "), "{}", r.body);
    assert_eq!(b.model.reboot_requests(), 0);
}

#[test]
fn boot_from_ready_runs_the_staged_version_and_forgets_the_status() {
    let mut b = bench_in(UpdateState::Ready);
    b.post("reboot");
    b.model.boot(b.now);
    assert_eq!(b.model.running_version(), "1.27.0");
    assert_eq!(b.model.boots(), 1);
    assert_eq!(b.call("GET", "/updates/status").status, 404);
    let os: Value = serde_json::from_str(&b.call("GET", "/os").body).expect("json");
    assert_eq!(os["version_id"], "1.27.0");
    // After the boot the next refresh starts from Idle on the new version.
    b.post("refresh-updates");
    let s = b.status();
    assert_eq!(s.update_state, UpdateState::Idle);
    assert_eq!(s.active_partition.and_then(|p| p.image).map(|i| i.version).as_deref(), Some("1.27.0"));
}

#[test]
fn rollback_on_boot_comes_back_on_the_old_version() {
    let mut b = bench_in(UpdateState::Ready);
    b.faults(Faults { rollback_on_boot: true, ..Faults::default() });
    b.model.boot(b.now);
    assert_eq!(b.model.running_version(), RUNNING);
    assert_eq!(b.model.update_state(), None, "the status is gone after any boot");
    assert_eq!(b.call("GET", "/updates/status").status, 404);
}

#[test]
fn boots_without_activation_keep_the_version() {
    for state in [UpdateState::Available, UpdateState::Staged] {
        let mut b = bench_in(state);
        b.model.boot(b.now);
        assert_eq!(b.model.running_version(), RUNNING, "boot from {state:?}");
    }
    let mut b = bench_in(UpdateState::Ready);
    b.post("deactivate-update");
    b.model.boot(b.now);
    assert_eq!(b.model.running_version(), RUNNING, "boot after deactivate");
}

#[test]
fn a_boot_during_work_frees_the_lock() {
    let mut b = Bench::new(HostConfig {
        published: vec!["1.27.0".into()],
        durations: CommandDurations::all(Duration::from_secs(30)),
        ..HostConfig::default()
    });
    b.post("refresh-updates");
    b.at(Duration::from_secs(1));
    b.model.boot(b.now);
    assert_eq!(b.call("GET", "/updates/status").status, 404);
    assert_eq!(b.post("refresh-updates").status, 204, "the lock is free again");
}

#[test]
fn wrong_methods_and_unknown_paths_are_empty_404s() {
    let mut b = Bench::instant(&[]);
    for (method, path) in [
        ("GET", "/actions/reboot"),
        ("GET", "/actions/refresh-updates"),
        ("PUT", "/actions/prepare-update"),
        ("POST", "/updates/status"),
        ("POST", "/os"),
        ("DELETE", "/settings"),
        ("GET", "/nope"),
        ("GET", "/actions/reboot/"),
        ("GET", "/"),
    ] {
        assert_empty_404(&b.call(method, path));
    }
    assert_eq!(b.model.reboot_requests(), 0);
    assert_eq!(b.model.update_state(), None, "nothing initialised the status");
}

#[test]
fn os_answers_snake_case_release_fields() {
    let mut b = Bench::instant(&[]);
    let r = b.call("GET", "/os");
    assert_eq!((r.status, r.content_type), (200, Some(JSON)));
    let os: Value = serde_json::from_str(&r.body).expect("json");
    let mut keys: Vec<&str> = os.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["arch", "build_id", "pretty_name", "variant_id", "version_id"]);
    assert_eq!(os["version_id"], RUNNING);
    assert_eq!(os["variant_id"], "aws-ecs-2");
    assert_eq!(os["pretty_name"], "Bottlerocket OS 1.26.0 (aws-ecs-2)");
    let version_only: Value = serde_json::from_str(&b.call("GET", "/os?prefix=version").body).expect("json");
    assert_eq!(version_only, serde_json::json!({"version_id": RUNNING}));
    assert_eq!(b.call("GET", "/os?prefix=").status, 400);
}

#[test]
fn settings_answer_only_the_asked_keys_that_exist() {
    let mut b = Bench::new(HostConfig { seed: 812, ..HostConfig::default() });
    let r = b.call(
        "GET",
        "/settings?keys=settings.updates.seed,settings.updates.version-lock,settings.updates.ignore-waves",
    );
    assert_eq!((r.status, r.content_type), (200, Some(JSON)));
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v, serde_json::json!({"updates": {"seed": 812, "version-lock": "latest", "ignore-waves": false}}));
    let v: Value = serde_json::from_str(
        &b.call("GET", "/settings?keys=settings.updates.seed,settings.nope.x,updates.version-lock").body,
    )
    .expect("json");
    assert_eq!(v, serde_json::json!({"updates": {"seed": 812}}), "unknown and unprefixed keys are skipped");
    let v: Value = serde_json::from_str(&b.call("GET", "/settings?prefix=updates.ignore").body).expect("json");
    assert_eq!(v, serde_json::json!({"updates": {"ignore-waves": false}}));
}

#[test]
fn malformed_status_is_a_200_that_does_not_parse() {
    let mut b = bench_in(UpdateState::Available);
    b.faults(Faults { malformed_status: true, ..Faults::default() });
    let r = b.call("GET", "/updates/status");
    assert_eq!((r.status, r.content_type), (200, Some(JSON)));
    assert!(serde_json::from_str::<UpdateStatus>(&r.body).is_err(), "body: {}", r.body);
    assert!(serde_json::from_str::<agent::os_api::UpdateStatus>(&r.body).is_err());
}

#[test]
fn timestamps_of_instant_commands_still_increase() {
    let mut b = bench_in(UpdateState::Available);
    let first = b.status().most_recent_command.expect("recorded").timestamp;
    b.post("refresh-updates");
    let second = b.status().most_recent_command.expect("recorded").timestamp;
    assert!(second > first, "{second} should be after {first}");
}

#[test]
fn waves_hide_a_release_from_a_late_seed_until_its_time_unless_waves_are_ignored() {
    let start = wall_start();
    let hours = |h: i64| start + chrono::Duration::hours(h);
    let waves = [("1.27.0".to_string(), vec![(0, hours(0)), (1024, hours(10)), (2048, hours(20))])].into_iter().collect();
    let host = |ignore_waves: bool| {
        Bench::new(HostConfig {
            version: RUNNING.into(),
            published: vec!["1.27.0".into()],
            seed: 2000,
            ignore_waves,
            waves: std::collections::BTreeMap::clone(&waves),
            durations: CommandDurations::all(Duration::ZERO),
            wall_clock_start: Some(start),
            ..HostConfig::default()
        })
    };
    let mut b = host(false);
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update, None, "seed 2000 waits for the last wave");
    assert!(b.status().available_updates.is_empty());
    b.at(Duration::from_secs(20 * 3600));
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update.map(|u| u.version), Some("1.27.0".into()), "the wave has passed");

    let mut b = host(true);
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update.map(|u| u.version), Some("1.27.0".into()), "ignore-waves offers it at once");
}

#[test]
fn a_committed_version_lock_reaches_refresh_only_after_the_apply_delay() {
    let mut b = Bench::new(HostConfig {
        version: RUNNING.into(),
        published: vec!["1.25.0".into(), "1.27.0".into()],
        settings_apply_delay: Duration::from_secs(2),
        durations: CommandDurations::all(Duration::ZERO),
        ..HostConfig::default()
    });
    let patch = routes::route(&mut b.model, b.now, "PATCH", "/settings?tx=t", br#"{"updates":{"version-lock":"v1.25.0"}}"#);
    assert_eq!(patch.status, 204, "{patch:?}");
    let commit = b.call("POST", "/tx/commit_and_apply?tx=t");
    assert_eq!((commit.status, commit.body.as_str()), (200, r#"["settings.updates.version-lock"]"#));
    let live: Value = b.call("GET", "/settings?keys=settings.updates.version-lock").json_body().expect("json");
    assert_eq!(live, serde_json::json!({"updates": {"version-lock": "v1.25.0"}}), "live at once");
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update.map(|u| u.version), Some("1.27.0".into()), "updog still reads the old lock");
    b.at(Duration::from_secs(2));
    b.post("refresh-updates");
    assert_eq!(b.status().chosen_update.map(|u| u.version), Some("1.25.0".into()), "the downgrade, once applied");
    let again = b.call("POST", "/tx/commit_and_apply?tx=t");
    assert_eq!((again.status, again.body.as_str()), (422, "Tried to commit with no pending changes"));
}
