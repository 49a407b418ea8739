//! The host-container image, run the way a Bottlerocket host runs it: host network, the API socket
//! bind-mounted at `/run/api.sock`, the user-data at `/.bottlerocket/host-containers/current/user-data`
//! and a persistent state directory; here the API is the `fake-bottlerocket` binary on a temporary
//! socket, and ECS (in the second test) the moto harness with a fake ECS agent introspection.
//!
//! Without a Docker engine the image tests fail, loudly, unless `ALLOW_NO_DOCKER=1` says that is
//! expected on this machine. The IAM policy check needs no engine.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::introspection::{Answer, FakeIntrospection};
use testkit::moto::MotoServer;

/// A safety net for a run that hangs, far above what a run takes.
const PATIENCE: Duration = Duration::from_secs(300);
/// How long `docker info` may take to answer.
const DOCKER_INFO_TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ------------------------------------------------------------------ docker and the image

/// Waits for `child` up to `limit`; kills it past that.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("poll child") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!("{what} did not finish within {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Whether a Docker engine answers `docker info`.
fn docker_answers() -> bool {
    let child = Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    while start.elapsed() < DOCKER_INFO_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// True when the test can go on; false (after the loud line) when the engine is absent and that
/// is allowed; panics when it is absent and not allowed.
fn docker_or_allowed_absence() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    if *ANSWERS.get_or_init(docker_answers) {
        return true;
    }
    // Straight to the stream, past the harness's capture, so that a passing run shows it too.
    let _ = writeln!(std::io::stderr(), "DOCKER ENGINE ABSENT: image test not run");
    if std::env::var("ALLOW_NO_DOCKER").as_deref() == Ok("1") {
        return false;
    }
    panic!("no Docker engine answers `docker info`; set ALLOW_NO_DOCKER=1 where that is expected");
}

/// Builds the image once per test process (reusing a binary newer than the sources); its tag.
fn image() -> String {
    static TAG: OnceLock<Result<String, String>> = OnceLock::new();
    TAG.get_or_init(|| {
        let script = root().join("host-container-image/build.sh");
        let child = Command::new("bash")
            .arg(&script)
            .arg("--reuse")
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        // The release build takes minutes on a small machine; this only bounds a hang.
        let out = wait_output(child, Duration::from_secs(3600), "build.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("build.sh failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        eprint!("{stdout}");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("IMAGE ").map(str::to_owned))
            .ok_or_else(|| format!("build.sh printed no IMAGE line: {stdout}"))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A container run of the image with the host's mounts; returns (exit code, the agent's log lines).
struct Run {
    code: Option<i32>,
    logs: Vec<Value>,
    raw: String,
}

impl Run {
    /// The `outcome` the agent logged when stopping.
    fn outcome(&self) -> Option<&str> {
        self.logs
            .iter()
            .find(|l| l["message"] == "agent stopping")
            .and_then(|l| l["outcome"].as_str())
    }
}

fn docker_run(host: &HostDirs, extra: &[String], args: &[&str]) -> Run {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("br-update-agent-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
        .arg("-v")
        .arg(format!("{}:/run/api.sock", host.socket.display()))
        .arg("-v")
        .arg(format!("{}:/.bottlerocket/host-containers/current/user-data:ro", host.user_data.display()))
        .arg("-v")
        .arg(format!("{}:{STATE_DIR}", host.state.display()))
        .args(extra)
        .arg(image())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("run docker");
    let started = Instant::now();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_output(child, PATIENCE, "docker run")));
    let out = out.unwrap_or_else(|e| {
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        std::panic::resume_unwind(e)
    });
    let raw = String::from_utf8_lossy(&out.stderr).into_owned();
    let logs = raw.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    eprintln!("container {name} ran {:?}, exit {:?}", started.elapsed(), out.status.code());
    Run { code: out.status.code(), logs, raw }
}

// ------------------------------------------------------------------ the fake host

/// Where the image expects its state (a persistent, mounted directory).
const STATE_DIR: &str = "/var/lib/br-update-agent";

/// The host side of the mounts.
struct HostDirs {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    user_data: PathBuf,
    state: PathBuf,
}

impl HostDirs {
    fn new(config: &str) -> HostDirs {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let user_data = dir.path().join("user-data");
        std::fs::write(&user_data, config).expect("write user-data");
        agent::config::Config::parse(config, "test user-data").expect("the test config is valid");
        HostDirs { socket: dir.path().join("api.sock"), user_data, state, _dir: dir }
    }
}

fn fake_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "fake-bottlerocket", "--bin", "fake-bottlerocket", "--message-format=json"])
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "building fake-bottlerocket failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "fake-bottlerocket")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the fake-bottlerocket executable")
    })
    .clone()
}

/// The fake Bottlerocket API as a process; killed on drop.
struct FakeHost {
    child: Child,
    socket: PathBuf,
}

impl FakeHost {
    /// Version 1.0.0 with 1.1.0 published, quick commands, and a reboot that boots quickly.
    fn start(socket: &Path) -> FakeHost {
        let mut child = Command::new(fake_binary())
            .arg("--socket")
            .arg(socket)
            .args(["--version", "1.0.0", "--publish", "1.1.0"])
            .args(["--refresh-time", "100ms", "--prepare-time", "500ms", "--activate-time", "100ms"])
            .args(["--boot-delay", "300ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-bottlerocket");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read READY");
        assert_eq!(line.trim_end(), format!("READY {}", socket.display()));
        FakeHost { child, socket: socket.to_path_buf() }
    }

    /// `GET /fake/state`, or `None` while the host is down.
    fn state(&self) -> Option<Value> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /fake/state HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| serde_json::from_str(body).ok())?
    }

    /// Polls the state until `done` holds.
    fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(state) = self.state().filter(|s| done(s)) {
                return state;
            }
            assert!(start.elapsed() < PATIENCE, "fake host never reached: {what}; last state {:?}", self.state());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for a quick run in the container; `cluster` is the `[cluster]` table's body.
fn config(cluster: &str) -> String {
    format!(
        "log-format = \"json\"\nlog-level = \"info\"\nstate-dir = \"{STATE_DIR}\"\ncheck-jitter = \"0s\"\n\
         request-timeout = \"10s\"\n\n[commands]\npoll-interval = \"200ms\"\nbusy-backoff-min = \"200ms\"\n\
         busy-backoff-max = \"1s\"\n\n[cluster]\n{cluster}"
    )
}

// ------------------------------------------------------------------ tests

#[test]
fn the_image_updates_a_standalone_host_through_its_reboot() {
    if !docker_or_allowed_absence() {
        return;
    }
    let tag = image();
    let inspect = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}} {{.Size}}", &tag])
        .output()
        .expect("docker image inspect");
    let inspect = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    eprintln!("image {tag}: {inspect}");
    assert!(inspect.starts_with("0:0 [\"/usr/bin/br-update-agent\"] "), "{inspect}");

    let host = HostDirs::new(&config("enabled = false\n"));
    let fake = FakeHost::start(&host.socket);
    assert_eq!(fake.state().expect("fake host up")["running_version"], "1.0.0");

    let first = docker_run(&host, &[], &["run", "--once"]);
    assert_eq!(first.code, Some(0), "first run failed:\n{}", first.raw);
    assert_eq!(first.outcome(), Some("rebooting"), "first run:\n{}", first.raw);
    // The fake boots onto 1.1.0 only after refresh, prepare and activate succeeded, in that order.
    let booted = fake.wait_for("booted onto 1.1.0", |s| s["boots"] == 1);
    assert_eq!(booted["running_version"], "1.1.0", "{booted}");
    assert_eq!(booted["reboot_requests"], 1, "{booted}");
    let journal = host.state.join("update-agent-state.json");
    assert!(journal.is_file(), "the in-flight record is written to the mounted state dir");

    // As after a real reboot: the container starts again and finds the update done.
    let second = docker_run(&host, &[], &["run", "--once"]);
    assert_eq!(second.code, Some(0), "second run failed:\n{}", second.raw);
    assert_eq!(second.outcome(), Some("updated"), "second run:\n{}", second.raw);
    let after = fake.state().expect("fake host up");
    assert_eq!(after["reboot_requests"], 1, "no second reboot: {after}");
}

#[test]
fn the_image_coordinates_through_ecs_from_inside_the_container() {
    if !docker_or_allowed_absence() {
        return;
    }
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("the moto ECS server did not start: {e}"));
    let cluster = "image-test";
    let seeded = moto.seed(cluster, 1, &[]).expect("seed the cluster");
    let instance = seeded.instances[0].clone();
    let introspection = FakeIntrospection::start_with_tasks(
        Answer::registered(&seeded.cluster_arn, &instance),
        Some(moto.introspection_tasks(cluster, &instance)),
    );
    let cluster_config = format!(
        "introspection-url = \"{}\"\ndiscovery-timeout = \"1m\"\nsettle-time = \"1s\"\nlease-ttl = \"2m\"\n\
         lease-backoff-min = \"1s\"\nlease-backoff-max = \"5s\"\ndrain-poll-interval = \"1s\"\n\
         drain-timeout = \"1m\"\nreboot-allowance = \"5m\"\nagent-connect-timeout = \"1m\"\n\
         ecs-backoff-min = \"200ms\"\necs-backoff-max = \"2s\"\necs-retry-budget = \"20s\"\n\n\
         [health]\npoll-interval = \"1s\"\ncanary-bake-time = \"2s\"\n",
        introspection.url()
    );
    let host = HostDirs::new(&config(&cluster_config));
    let fake = FakeHost::start(&host.socket);
    // The region comes from the instance ARN, as on a host; only the endpoint and keys are test-made.
    let env: Vec<String> = [
        format!("AWS_ENDPOINT_URL_ECS={}", moto.endpoint()),
        "AWS_ACCESS_KEY_ID=testing".to_owned(),
        "AWS_SECRET_ACCESS_KEY=testing".to_owned(),
    ]
    .into_iter()
    .flat_map(|e| ["-e".to_owned(), e])
    .collect();

    let first = docker_run(&host, &env, &["run", "--once"]);
    assert_eq!(first.code, Some(0), "first run failed:\n{}\nmoto: {}", first.raw, moto.stderr_tail());
    assert_eq!(first.outcome(), Some("rebooting"), "first run:\n{}", first.raw);
    assert!(introspection.requests() >= 1, "the agent asked the ECS agent who it is");
    let calls = moto.calls().expect("moto calls");
    assert!(calls.of("PutAttributes") >= 1, "the lease was written: {calls:?}");
    assert!(calls.of("UpdateContainerInstancesState") >= 1, "the host was drained: {calls:?}");
    let state = moto.state(cluster).expect("moto state");
    assert_eq!(state["instances"][0]["status"], "DRAINING", "drained while rebooting: {state}");
    fake.wait_for("booted onto 1.1.0", |s| s["boots"] == 1 && s["running_version"] == "1.1.0");

    let second = docker_run(&host, &env, &["run", "--once"]);
    assert_eq!(second.code, Some(0), "second run failed:\n{}\nmoto: {}", second.raw, moto.stderr_tail());
    assert_eq!(second.outcome(), Some("updated"), "second run:\n{}", second.raw);
    let state = moto.state(cluster).expect("moto state");
    assert_eq!(state["instances"][0]["status"], "ACTIVE", "re-activated after the update: {state}");
}

#[test]
fn the_iam_policy_is_least_privilege_json() {
    let path = root().join("iam/update-agent-policy.json");
    let text = std::fs::read_to_string(&path).expect("read the IAM policy");
    let policy: Value = serde_json::from_str(&text).expect("the IAM policy is JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().expect("Statement list");
    let cluster_arn = "arn:aws:ecs:REGION:ACCOUNT_ID:cluster/CLUSTER_NAME";
    // Actions that support the ecs:cluster condition key must be scoped with it.
    let conditional = [
        "ecs:PutAttributes",
        "ecs:DeleteAttributes",
        "ecs:DescribeContainerInstances",
        "ecs:UpdateContainerInstancesState",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
    ];
    let on_cluster =
        ["ecs:ListAttributes", "ecs:ListContainerInstances", "ecs:DescribeClusters", "ecs:ListTagsForResource"];
    let mut granted = Vec::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "{s}");
        let actions: Vec<&str> = s["Action"].as_array().expect("Action list").iter().filter_map(Value::as_str).collect();
        for action in &actions {
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            if conditional.contains(action) {
                assert_eq!(s["Condition"]["ArnEquals"]["ecs:cluster"], cluster_arn, "{action} must be scoped to the cluster");
            } else {
                assert!(on_cluster.contains(action), "unexpected action {action}");
                assert_eq!(s["Resource"], cluster_arn, "{action} must name the cluster as its resource");
            }
        }
        granted.extend(actions);
    }
    granted.sort_unstable();
    let mut expected: Vec<&str> = conditional.iter().chain(on_cluster.iter()).copied().collect();
    expected.sort_unstable();
    assert_eq!(granted, expected, "exactly the actions the agent calls, each once");
}
