//! The patched moto ECS server (`tests/moto/server.py`) as a child process, with typed helpers for
//! its `/_harness/*` routes and an aws-sdk-ecs client pointed at it.
//!
//! Each [`MotoServer`] is its own process on its own port, so tests in parallel share nothing. The
//! Python venv is created (or found up to date) once per test process. Without Python or PyPI the
//! start fails with an error that says so: moto-backed tests fail loudly rather than skip.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use agent::cluster::ecs::EcsTimeouts;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use serde_json::{json, Value};

use crate::process::Env;

/// How long the server may take to print its port (imports alone take a second or two).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one harness request may take.
const HARNESS_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the server's stderr is kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// The region the server's ARNs and the test client use.
pub const REGION: &str = "us-east-1";

/// A running patched moto server; killed on drop.
pub struct MotoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

/// What `/_harness/seed` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The container instance ARNs, in creation order.
    pub instances: Vec<String>,
}

/// Faults the server injects into ECS calls (`/_harness/faults`); the default is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every n-th ECS call fails with `ThrottlingException` (0: never).
    pub throttle_every: u32,
    /// Every ECS call fails with `ServerException`.
    pub unavailable: bool,
    /// Added to every ECS call.
    pub latency_ms: u64,
    /// How long after DRAINING the service tasks' desired status turns STOPPED.
    pub drain_delay_ms: u64,
    /// How long those tasks then keep running (last status RUNNING) before their last status
    /// turns STOPPED: a load balancer's deregistration delay plus the stop timeout in ECS.
    pub stop_delay_ms: u64,
}

/// ECS calls the server has answered since the last reset (`/_harness/calls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// All calls.
    pub total: u64,
    /// Calls by ECS operation name (`ListAttributes`, ...).
    pub by_operation: BTreeMap<String, u64>,
}

/// One ECS call, in the order the server answered it (`/_harness/call-log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedCall {
    /// The access key the request was signed with (`None` if unsigned).
    pub key: Option<String>,
    /// The ECS operation name.
    pub operation: String,
    /// For attribute writes and deletions, each attribute's name and value.
    pub attributes: Vec<(String, Option<String>)>,
}

impl Calls {
    /// Calls of one operation.
    pub fn of(&self, operation: &str) -> u64 {
        self.by_operation.get(operation).copied().unwrap_or(0)
    }
}

impl MotoServer {
    /// Make sure the venv exists, start a server on a free port and wait until it serves.
    pub fn start() -> Result<MotoServer, String> {
        let python = ensure_venv()?;
        let script = repo_root().join("tests/moto/server.py");
        if !script.is_file() {
            return Err(format!("moto server script missing: {}", script.display()));
        }
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0"])
            .current_dir(repo_root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run the moto server with {}: {e}", python.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            drain_stderr(err, stderr.clone());
        }
        let stdin = child.stdin.take();
        let port = match child.stdout.take().map(wait_for_port) {
            Some(Ok(port)) => port,
            Some(Err(e)) => return Err(fail_start(child, &stderr, &e)),
            None => return Err(fail_start(child, &stderr, "no stdout")),
        };
        Ok(MotoServer { child, stdin, port, stderr })
    }

    /// `http://127.0.0.1:<port>`: the ECS endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has written to stderr (the tail), for failure messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// An ECS client for this server: static test credentials, us-east-1, no SDK retries.
    pub fn ecs_client(&self) -> aws_sdk_ecs::Client {
        self.ecs_client_with(EcsTimeouts::default())
    }

    /// As [`MotoServer::ecs_client`], with explicit timeouts.
    pub fn ecs_client_with(&self, timeouts: EcsTimeouts) -> aws_sdk_ecs::Client {
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto-static"))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.to_timeout_config())
            .build();
        aws_sdk_ecs::Client::from_conf(conf)
    }

    /// The environment of an operator's shell pointed at this server: endpoint, region and
    /// static keys set, nothing from this machine's own AWS configuration.
    pub fn operator_env(&self) -> Env {
        let set = [
            ("AWS_ENDPOINT_URL_ECS", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/nonexistent/br-update-agent-test/config".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/br-update-agent-test/credentials".to_owned()),
        ];
        let remove = ["AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "NO_COLOR"];
        Env {
            set: set.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            remove: remove.into_iter().map(str::to_owned).collect(),
        }
    }

    /// Forget all ECS state, faults and call counts.
    pub fn reset(&self) -> Result<(), String> {
        self.post("/_harness/reset", &json!({})).map(drop)
    }

    /// Create `cluster` with `instances` registered container instances and `tags`.
    pub fn seed(&self, cluster: &str, instances: usize, tags: &[(&str, &str)]) -> Result<Seeded, String> {
        let tags: BTreeMap<&str, &str> = tags.iter().copied().collect();
        let out = self.post("/_harness/seed", &json!({"cluster": cluster, "instances": instances, "tags": tags}))?;
        let cluster_arn = out["cluster_arn"].as_str().ok_or_else(|| format!("seed: no cluster_arn in {out}"))?;
        Ok(Seeded { cluster_arn: cluster_arn.to_owned(), instances: strings(&out["instances"], "seed")? })
    }

    /// Start `count` RUNNING tasks on `instance`, with `started_by` (`ecs-svc/...` for service tasks).
    pub fn add_tasks(
        &self,
        cluster: &str,
        instance: &str,
        started_by: Option<&str>,
        count: usize,
    ) -> Result<Vec<String>, String> {
        let body = json!({"cluster": cluster, "instance": instance, "started_by": started_by, "count": count});
        let out = self.post("/_harness/tasks", &body)?;
        strings(&out["tasks"], "tasks")
    }

    /// Replace the injected faults.
    pub fn set_faults(&self, faults: &Faults) -> Result<(), String> {
        let body = json!({
            "throttle_every": faults.throttle_every,
            "unavailable": faults.unavailable,
            "latency_ms": faults.latency_ms,
            "drain_delay_ms": faults.drain_delay_ms,
            "stop_delay_ms": faults.stop_delay_ms,
        });
        self.post("/_harness/faults", &body).map(drop)
    }

    /// The ECS calls answered since the last reset.
    pub fn calls(&self) -> Result<Calls, String> {
        let out = self.request("GET", "/_harness/calls", None)?;
        let total = out["total"].as_u64().ok_or_else(|| format!("calls: no total in {out}"))?;
        let by_operation = out["by_operation"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
            .unwrap_or_default();
        Ok(Calls { total, by_operation })
    }

    /// The ECS calls answered since the last reset, one by one.
    pub fn call_log(&self) -> Result<Vec<LoggedCall>, String> {
        let out = self.request("GET", "/_harness/call-log", None)?;
        let calls = out["calls"].as_array().ok_or_else(|| format!("call log: no calls in {out}"))?;
        calls.iter().map(logged_call).collect()
    }

    /// Zero the call counts (and the call log).
    pub fn reset_calls(&self) -> Result<(), String> {
        self.post("/_harness/calls/reset", &json!({})).map(drop)
    }

    /// The server's view of `cluster` (instances, attributes, tasks), as it reports it.
    pub fn state(&self, cluster: &str) -> Result<Value, String> {
        self.request("GET", &format!("/_harness/state?cluster={cluster}"), None)
    }

    /// Set `tags` on `cluster` and remove the keys in `remove`.
    pub fn set_tags(&self, cluster: &str, tags: &[(&str, &str)], remove: &[&str]) -> Result<(), String> {
        let tags: BTreeMap<&str, &str> = tags.iter().copied().collect();
        self.post("/_harness/tags", &json!({"cluster": cluster, "tags": tags, "remove": remove})).map(drop)
    }

    /// Play the scheduler stopping `task`: its desired status turns STOPPED and its last status
    /// becomes `last_status` (`RUNNING` ... `STOPPED`), so a test can hold a task stopping.
    pub fn set_task_status(&self, cluster: &str, task: &str, last_status: &str) -> Result<(), String> {
        self.post("/_harness/task-status", &json!({"cluster": cluster, "task": task, "last_status": last_status}))
            .map(drop)
    }

    /// Force `instance`'s status (e.g. `REGISTERING`), bypassing ECS's transition rules.
    pub fn set_instance_status(&self, cluster: &str, instance: &str, status: &str) -> Result<(), String> {
        self.post("/_harness/instance-status", &json!({"cluster": cluster, "instance": instance, "status": status}))
            .map(drop)
    }

    /// Play ECS's health checks for `instance`: from now on DescribeContainerInstances (with
    /// `include = CONTAINER_INSTANCE_HEALTH`) reports `overall` (`OK`, `IMPAIRED`,
    /// `INSUFFICIENT_DATA`, `INITIALIZING`) with one check of `check_type` (e.g.
    /// `CONTAINER_RUNTIME`) in that status, and `reason` as its `statusReason`.
    pub fn set_instance_health(
        &self,
        cluster: &str,
        instance: &str,
        overall: &str,
        check_type: &str,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let body = json!({"cluster": cluster, "instance": instance, "overall": overall, "type": check_type, "reason": reason});
        self.post("/_harness/instance-health", &body).map(drop)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.request("POST", path, Some(body))
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        harness_request(self.port, method, path, body)
    }

    /// The ECS agent's task listing (`/v1/tasks`) for `instance` of `cluster`, answered from this
    /// server's tasks (not counted as ECS calls): each task with its last status as the ECS
    /// agent's `KnownStatus`, since ECS learns a task's last status from the ECS agent.
    pub fn introspection_tasks(&self, cluster: &str, instance: &str) -> crate::introspection::TasksSource {
        let (port, cluster, instance) = (self.port, cluster.to_owned(), instance.to_owned());
        std::sync::Arc::new(move || match harness_request(port, "GET", &format!("/_harness/state?cluster={cluster}"), None) {
            Ok(state) => (200, local_listing(&state, &instance).to_string()),
            Err(e) => (500, e),
        })
    }
}

/// The `/v1/tasks` body for `instance` from a `/_harness/state` answer.
fn local_listing(state: &Value, instance: &str) -> Value {
    let tasks: Vec<Value> = state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["arn"] == instance)
        .flat_map(|i| i["tasks"].as_array().cloned().unwrap_or_default())
        .map(|t| json!({"Arn": t["arn"], "DesiredStatus": t["desired_status"], "KnownStatus": t["last_status"], "Family": "", "Version": "", "Containers": []}))
        .collect();
    json!({ "Tasks": tasks })
}

/// One harness request over plain HTTP/1.0 (no chunking, the server closes when done).
fn harness_request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let what = format!("{method} {path}");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{what}: connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(HARNESS_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HARNESS_TIMEOUT));
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        port,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("{what}: send: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("{what}: read: {e}"))?;
    parse_response(&what, &raw)
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // The server exits when its stdin closes; the kill covers a server that is stuck.
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root, from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../..").canonicalize().unwrap_or_else(|_| manifest.join("../.."))
}

/// Run `tests/moto/ensure-venv.sh` once per process; the venv's python, or why there is none.
fn ensure_venv() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = repo_root();
        let out = Command::new("bash")
            .arg(root.join("tests/moto/ensure-venv.sh"))
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash for tests/moto/ensure-venv.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "creating the Python venv for the moto ECS server failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let python = root.join("target/moto-venv/bin/python");
        if python.is_file() {
            Ok(python)
        } else {
            Err(format!("ensure-venv.sh succeeded but {} is missing", python.display()))
        }
    })
    .clone()
}

/// Read stdout until `PORT <n>`, then keep draining it on a thread so the server never blocks.
fn wait_for_port(stdout: std::process::ChildStdout) -> Result<u16, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.trim().parse::<u16>().ok()) {
                    let _ = tx.send(Ok(port));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = tx.send(Err("the moto server exited before printing its port".to_owned()));
        }
    });
    rx.recv_timeout(START_TIMEOUT).map_err(|_| format!("the moto server printed no port within {START_TIMEOUT:?}"))?
}

fn drain_stderr(stderr: std::process::ChildStderr, keep: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut kept) = keep.lock() {
                kept.push_str(&line);
                kept.push('\n');
                if kept.len() > STDERR_KEEP {
                    let cut = kept.len() - STDERR_KEEP;
                    let cut = (cut..kept.len()).find(|i| kept.is_char_boundary(*i)).unwrap_or(0);
                    kept.drain(..cut);
                }
            }
        }
    });
}

fn fail_start(mut child: Child, stderr: &Mutex<String>, why: &str) -> String {
    let _ = child.kill();
    let _ = child.wait();
    // Give the drain thread a moment to collect the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let tail = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    format!("starting the moto ECS server failed: {why}; its stderr:\n{tail}")
}

fn parse_response(what: &str, raw: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{what}: no HTTP header in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    if !(200..300).contains(&status) {
        return Err(format!("{what}: HTTP {status}: {body}"));
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body).map_err(|e| format!("{what}: bad JSON ({e}): {body}"))
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{what}: expected a list, got {value}"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{what}: not a string: {v}")))
        .collect()
}

fn logged_call(v: &Value) -> Result<LoggedCall, String> {
    let operation = v["operation"].as_str().ok_or_else(|| format!("call log: no operation in {v}"))?;
    let attributes = v["attributes"]
        .as_array()
        .map(|a| a.iter().map(|x| (x["name"].as_str().unwrap_or_default().to_owned(), x["value"].as_str().map(str::to_owned))).collect())
        .unwrap_or_default();
    Ok(LoggedCall { key: v["key"].as_str().map(str::to_owned), operation: operation.to_owned(), attributes })
}
