//! The `fake-bottlerocket` binary as a process: READY line, API and control over its socket,
//! a reboot through `--on-reboot`, a clean exit on SIGTERM, and exit code 2 on bad arguments.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::{Raw, PATIENCE};

const BINARY: &str = env!("CARGO_BIN_EXE_fake-bottlerocket");

/// Start the binary and wait for its READY line.
async fn start(socket: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(BINARY)
        .args(["--socket", socket.to_str().expect("utf-8 path"), "--version", "1.26.0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    tokio::time::timeout(PATIENCE, stdout.read_line(&mut line)).await.expect("READY in time").expect("read stdout");
    assert_eq!(line.trim_end(), format!("READY {}", socket.display()));
    child
}

fn terminate(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(status.success());
}

/// Poll `/fake/state` until `done` holds (connections fail while the host is down).
async fn wait_for_state(socket: &Path, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let poll = async {
        loop {
            if let Ok(mut c) = Raw::try_connect(socket).await {
                let sent = c.try_send("GET", "/fake/state", "").await;
                if let (Ok(()), Some(r)) = (sent, c.read().await) {
                    let state = r.json();
                    if done(&state) {
                        return state;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, poll).await.expect("state reached in time")
}

#[tokio::test]
async fn serves_until_sigterm_and_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    let mut child = start(&socket, &["--variant", "aws-ecs-1", "--publish", "1.27.0", "--fail", "reboot"]).await;

    let mut c = Raw::connect(&socket).await;
    let os = c.call("GET", "/os").await;
    assert_eq!((os.status, os.header("content-type")), (200, Some("application/json")));
    assert_eq!(os.json()["version_id"], "1.26.0");
    assert_eq!(os.json()["variant_id"], "aws-ecs-1");
    let state = c.call("GET", "/fake/state").await;
    assert_eq!(state.status, 200);
    let state = state.json();
    assert_eq!(state["running_version"], "1.26.0");
    assert_eq!(state["update_state"], serde_json::Value::Null);
    assert_eq!(state["faults"]["reboot_refused"], true);
    assert_eq!(state["published"], serde_json::json!(["1.27.0"]));
    assert_eq!(c.call("POST", "/actions/reboot").await.status, 500);

    terminate(&child);
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("exits in time").expect("wait");
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[tokio::test]
async fn a_reboot_runs_the_hook_then_boots_onto_the_activated_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    let marker = dir.path().join("hook.out");
    let hook = format!("echo \"$FAKE_OLD_VERSION $FAKE_SOCKET\" > '{}'", marker.display());
    let mut child = start(
        &socket,
        &["--publish", "1.27.0,1.25.0", "--refresh-time", "0ms", "--prepare-time", "0ms", "--activate-time", "0ms",
          "--on-reboot", &hook, "--boot-delay", "50ms"],
    )
    .await;
    let mut c = Raw::connect(&socket).await;
    for action in ["refresh-updates", "prepare-update", "activate-update", "reboot"] {
        assert_eq!(c.call("POST", &format!("/actions/{action}")).await.status, 204, "{action}");
    }
    let state = wait_for_state(&socket, |s| s["boots"] == 1).await;
    assert_eq!(state["running_version"], "1.27.0");
    assert_eq!(state["reboot_requests"], 1);
    let written = std::fs::read_to_string(&marker).expect("the hook ran");
    assert_eq!(written.trim_end(), format!("1.26.0 {}", socket.display()));

    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [&["--version", "1.0.0"][..], &["--socket", "x", "--version", "1", "--prepare-time", "2"], &["--what"]] {
        let out = std::process::Command::new(BINARY).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("fake-bottlerocket:"), "{args:?}");
    }
    let help = std::process::Command::new(BINARY).arg("--help").output().expect("run");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--on-reboot"));
}
