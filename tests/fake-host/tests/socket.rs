//! The served host, spoken to in raw HTTP/1.1 over a Unix socket (no client library).

use std::path::PathBuf;
use std::time::Duration;

use fake_bottlerocket::{
    serve, serve_with, CommandDurations, FakeHost, HostConfig, RebootBehavior, ServeOptions,
};
use serde_json::Value;
use tokio::net::UnixStream;

mod common;
use common::{Raw, PATIENCE};

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("api.sock")
}

fn config(durations: CommandDurations, reboot: RebootBehavior) -> HostConfig {
    HostConfig {
        version: "1.26.0".into(),
        published: vec!["1.27.0".into(), "1.26.0".into()],
        durations,
        reboot,
        ..HostConfig::default()
    }
}

#[tokio::test]
async fn status_codes_content_types_and_bodies_on_one_keep_alive_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = CommandDurations { refresh: Duration::from_secs(3600), ..CommandDurations::default() };
    let served = serve(FakeHost::new(config(slow, RebootBehavior::StayUp)), &socket_in(&dir)).expect("serve");
    let mut c = Raw::connect(served.socket()).await;

    let os = c.call("GET", "/os").await;
    assert_eq!(os.status, 200);
    assert_eq!(os.header("content-type"), Some("application/json"));
    assert_eq!(os.header("content-length"), Some(os.body.len().to_string().as_str()));
    let json = os.json();
    for key in ["pretty_name", "variant_id", "version_id", "build_id", "arch"] {
        assert!(json.get(key).is_some_and(Value::is_string), "{key} in {json}");
    }

    let missing = c.call("GET", "/updates/status").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), None, "plain-text errors carry no content type");
    assert_eq!(missing.body, "Update status is uninitialized, refresh-updates to initialize it");
    assert!(missing.header("content-length").is_some());

    let started = c.call("POST", "/actions/refresh-updates").await;
    assert_eq!(started.status, 204);
    assert_eq!(started.header("content-length"), None, "a 204 has no Content-Length");
    assert_eq!(started.header("content-type"), None);
    // The next answer on the same connection starts right after the 204's head: no body bytes.
    let locked = c.call("GET", "/updates/status").await;
    assert_eq!(locked.status, 423);
    assert!(locked.body.starts_with("Unable to obtain shared lock for reading update status"));
    let busy = c.call("POST", "/actions/prepare-update").await;
    assert_eq!((busy.status, busy.body.as_str()), (423, "Update lock held"));

    let wrong = c.call("GET", "/actions/reboot").await;
    assert_eq!((wrong.status, wrong.body.as_str(), wrong.header("content-length")), (404, "", Some("0")));
    let unknown = c.call("GET", "/no/such/thing").await;
    assert_eq!((unknown.status, unknown.body.as_str()), (404, ""));
    assert_eq!(served.host().requests().len(), 7);
}

#[tokio::test]
async fn the_status_json_uses_snake_case_field_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instant = CommandDurations::all(Duration::ZERO);
    let served = serve(FakeHost::new(config(instant, RebootBehavior::StayUp)), &socket_in(&dir)).expect("serve");
    let mut c = Raw::connect(served.socket()).await;
    assert_eq!(c.call("POST", "/actions/refresh-updates").await.status, 204);
    let r = c.call("GET", "/updates/status").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    let s = r.json();
    let mut keys: Vec<&str> = s.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["active_partition", "available_updates", "chosen_update", "most_recent_command", "staging_partition", "update_state"]
    );
    assert_eq!(s["update_state"], "Available");
    assert_eq!(s["chosen_update"], serde_json::json!({"arch": "x86_64", "version": "1.27.0", "variant": "aws-ecs-2"}));
    assert_eq!(s["active_partition"]["next_to_boot"], true);
    let cmd = &s["most_recent_command"];
    let mut cmd_keys: Vec<&str> = cmd.as_object().expect("object").keys().map(String::as_str).collect();
    cmd_keys.sort_unstable();
    assert_eq!(cmd_keys, ["cmd_status", "cmd_type", "exit_status", "stderr", "timestamp"]);
    assert_eq!((cmd["cmd_type"].as_str(), cmd["cmd_status"].as_str()), (Some("refresh"), Some("Success")));
    let stamp = cmd["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{stamp}");
}

#[tokio::test]
async fn control_endpoints_drive_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instant = CommandDurations::all(Duration::ZERO);
    let served = serve(FakeHost::new(config(instant, RebootBehavior::StayUp)), &socket_in(&dir)).expect("serve");
    let mut c = Raw::connect(served.socket()).await;
    c.send("POST", "/fake/publish", r#"["1.28.0"]"#).await;
    assert_eq!(c.read().await.expect("answer").status, 204);
    c.send("POST", "/fake/faults", r#"{"rollback_on_boot":true}"#).await;
    let faults = c.read().await.expect("answer");
    assert_eq!(faults.status, 200);
    assert_eq!(faults.json()["rollback_on_boot"], true);
    assert_eq!(faults.json()["refresh_fails"], false);
    c.send("POST", "/fake/faults", r#"{"explode":true}"#).await;
    assert_eq!(c.read().await.expect("answer").status, 400);
    for action in ["refresh-updates", "prepare-update", "activate-update"] {
        assert_eq!(c.call("POST", &format!("/actions/{action}")).await.status, 204);
    }
    let state = c.call("GET", "/fake/state").await.json();
    assert_eq!(state["update_state"], "Ready");
    assert_eq!(state["published"], serde_json::json!(["1.28.0"]));
    assert_eq!(c.call("POST", "/fake/boot").await.status, 204);
    let state = c.call("GET", "/fake/state").await.json();
    assert_eq!((state["running_version"].as_str(), state["boots"].as_u64()), (Some("1.26.0"), Some(1)));
    assert_eq!(state["update_state"], Value::Null);
    assert!(served.host().requests().iter().all(|r| !r.contains("/fake/")), "control calls are not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_closes_the_connection_and_the_host_stays_dark_until_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instant = CommandDurations::all(Duration::ZERO);
    let mut served = serve(FakeHost::new(config(instant, RebootBehavior::GoDown)), &socket_in(&dir)).expect("serve");
    let mut notices = served.take_reboot_notices().expect("first take");
    assert!(served.take_reboot_notices().is_none());
    let mut c = Raw::connect(served.socket()).await;
    for action in ["refresh-updates", "prepare-update", "activate-update"] {
        assert_eq!(c.call("POST", &format!("/actions/{action}")).await.status, 204);
    }
    let reboot = c.call("POST", "/actions/reboot").await;
    assert_eq!(reboot.status, 204);
    assert_eq!(reboot.header("connection"), Some("close"));
    assert!(c.closed_by_server().await);
    tokio::time::timeout(PATIENCE, notices.recv()).await.expect("notice in time").expect("a notice");

    // The connection may be closed before or after the request is written; no answer either way.
    let mut dark = Raw::connect(served.socket()).await;
    if dark.try_send("GET", "/os", "").await.is_ok() {
        assert!(dark.read().await.is_none(), "a down host answers nothing");
    }
    assert_eq!(served.host().requests().last().map(String::as_str), Some("POST /actions/reboot"));

    served.host().boot();
    let mut c = Raw::connect(served.socket()).await;
    assert_eq!(c.call("GET", "/os").await.json()["version_id"], "1.27.0");
    assert_eq!(c.call("GET", "/updates/status").await.status, 404);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServeOptions { idle_timeout: Some(Duration::from_millis(100)) };
    let served = serve_with(FakeHost::new(HostConfig::default()), &socket_in(&dir), options).expect("serve");
    let mut c = Raw::connect(served.socket()).await;
    assert_eq!(c.call("GET", "/os").await.status, 200);
    assert!(c.closed_by_server().await, "the server drops an idle connection");
}

#[tokio::test]
async fn dropping_the_served_host_stops_serving_and_removes_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let served = serve(FakeHost::new(HostConfig::default()), &socket).expect("serve");
    assert!(socket.exists());
    assert!(serve(FakeHost::new(HostConfig::default()), &socket).is_err(), "the path is taken");
    drop(served);
    assert!(!socket.exists());
    assert!(UnixStream::connect(&socket).await.is_err());

    let served = serve(FakeHost::new(HostConfig::default()), &socket).expect("serve again");
    served.shutdown().await;
    assert!(!socket.exists());
}
