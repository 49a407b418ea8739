//! The two built binaries as child processes: `fake-bottlerocket` serving a host's API on a
//! temporary socket, and `br-update-agent` driven the way systemd drives a host container
//! (started, stopped with SIGTERM when the host goes down, started again after the boot).
//!
//! - [`binary`] finds a built binary next to the running test (`target/debug`).
//! - [`FakeHostProcess`] starts the fake host, waits for `READY`, reads `GET /fake/state`, and can
//!   hold a rebooting host down until the test lets it boot ([`Boot::Gated`]).
//! - [`AgentConfig`] writes an agent config with short timings.
//! - [`AgentProcess`] runs the agent with its stderr captured in a [`LogBuffer`]; [`run_agent`]
//!   runs a short command (`check-config`, a refused config) to completion.
//!
//! Every child is killed on drop, so a failing test leaves no process behind; when the test is
//! panicking, the child's captured log is printed to help read the failure. Timeouts here are
//! safety nets only: a step that is merely slow still passes.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::journal::Record;
use fake_bottlerocket::HostSnapshot;

/// The agent's binary name.
pub const AGENT_BIN: &str = "br-update-agent";
/// The fake host's binary name.
pub const FAKE_HOST_BIN: &str = "fake-bottlerocket";
/// The journal's file name inside the agent's state dir.
pub const JOURNAL_FILE: &str = "update-agent-state.json";

/// How long a fake host may take to print `READY` (a loaded machine is slow to start processes).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request to the fake host's socket may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two looks at something a test waits for.
const POLL: Duration = Duration::from_millis(50);
/// How many log lines an error message or a failure dump shows.
const TAIL_LINES: usize = 60;

// ------------------------------------------------------------------ errors

/// Why a harness step failed.
#[derive(Debug)]
pub enum ProcessError {
    /// A binary is not built.
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An operating-system call failed.
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Something awaited did not happen within its safety net.
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited: Duration,
        /// The end of the log that should have shown it.
        log_tail: String,
    },
    /// A process ended (or closed its output) before it did what was awaited.
    Exited {
        /// What was awaited.
        what: String,
        /// Its exit status, when known.
        status: Option<ExitStatus>,
        /// The end of its log.
        log_tail: String,
    },
    /// The fake host closed the connection without answering: it is down after a reboot.
    NoAnswer {
        /// The request.
        request: String,
    },
    /// An answer that does not fit the request.
    BadAnswer {
        /// The request.
        request: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::MissingBinary { name, path } => write!(
                f,
                "`{name}` is not built (looked for {}); run `cargo build --workspace --all-targets` first: \
                 `cargo test -p testkit` does not build other packages' binaries",
                path.display()
            ),
            ProcessError::Io { what, source } => write!(f, "{what}: {source}"),
            ProcessError::Timeout { what, waited, log_tail } => {
                write!(f, "gave up after {waited:?} waiting for {what}; log tail:\n{log_tail}")
            }
            ProcessError::Exited { what, status, log_tail } => {
                write!(f, "process ended ({status:?}) before {what}; log tail:\n{log_tail}")
            }
            ProcessError::NoAnswer { request } => write!(f, "{request}: no answer (the host is down)"),
            ProcessError::BadAnswer { request, reason } => write!(f, "{request}: {reason}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Io { what, source }
}

// ------------------------------------------------------------------ binaries

/// The path of the built binary `name` in the target directory of the running test.
pub fn binary(name: &str) -> Result<PathBuf, ProcessError> {
    let exe = std::env::current_exe().map_err(io("locating the running test binary"))?;
    // Integration tests run from `target/<profile>/deps`; binaries sit one level up.
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ProcessError::MissingBinary { name: name.to_string(), path })
    }
}

/// The agent's journal file inside `state_dir`.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join(JOURNAL_FILE)
}

/// The agent's journal in `state_dir`; `None` when the agent never wrote one.
pub fn read_journal(state_dir: &Path) -> Result<Option<Record>, ProcessError> {
    let path = journal_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ProcessError::BadAnswer { request: format!("reading {}", path.display()), reason: e.to_string() })
}

// ------------------------------------------------------------------ captured output

/// What a child wrote to one of its pipes, kept whole for searching while it runs.
#[derive(Clone, Debug, Default)]
pub struct LogBuffer {
    shared: Arc<(Mutex<LogState>, Condvar)>,
}

#[derive(Debug, Default)]
struct LogState {
    text: String,
    closed: bool,
}

impl LogBuffer {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.state().text.clone()
    }

    /// The current length: a mark for [`LogBuffer::wait_for_from`] ("after this point").
    pub fn mark(&self) -> usize {
        self.state().text.len()
    }

    /// Whether `needle` was written.
    pub fn contains(&self, needle: &str) -> bool {
        self.state().text.contains(needle)
    }

    /// How many times `needle` was written.
    pub fn count(&self, needle: &str) -> usize {
        self.state().text.matches(needle).count()
    }

    /// The lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.state().text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    /// The last lines, for error messages.
    pub fn tail(&self) -> String {
        let state = self.state();
        let lines: Vec<&str> = state.text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Waits until `needle` is written; returns the offset just after it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<usize, ProcessError> {
        self.wait_for_from(0, needle, timeout)
    }

    /// Waits until `needle` is written after offset `from` (a [`LogBuffer::mark`]); returns the
    /// offset just after it. Fails early when the pipe closed without it.
    pub fn wait_for_from(&self, from: usize, needle: &str, timeout: Duration) -> Result<usize, ProcessError> {
        let start = Instant::now();
        let (lock, changed) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(at) = state.text.get(from..).and_then(|rest| rest.find(needle)) {
                return Ok(from + at + needle.len());
            }
            let what = format!("`{needle}` in the log");
            if state.closed {
                drop(state);
                return Err(ProcessError::Exited { what, status: None, log_tail: self.tail() });
            }
            let waited = start.elapsed();
            if waited >= timeout {
                drop(state);
                return Err(ProcessError::Timeout { what, waited, log_tail: self.tail() });
            }
            state = changed.wait_timeout(state, timeout - waited).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn push(&self, line: &str) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).text.push_str(line);
        changed.notify_all();
    }

    fn close(&self) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        changed.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Copies `pipe` into `log` line by line until it closes.
fn capture(pipe: impl Read + Send + 'static, log: LogBuffer) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => log.push(&String::from_utf8_lossy(&line)),
            }
        }
        log.close();
    })
}

/// Sends `SIGNAL` (a name such as `TERM`) to `target`: a pid, or `-pgid` for a process group.
fn send_signal(signal: &str, target: &str) -> Result<(), ProcessError> {
    let what = format!("kill -s {signal} {target}");
    let status = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io(what.clone()))?;
    if status.success() {
        Ok(())
    } else {
        Err(ProcessError::BadAnswer { request: what, reason: format!("kill exited {status}") })
    }
}

/// Waits for `child` to exit within `timeout`.
fn wait_child(child: &mut Child, what: &str, timeout: Duration, log: &LogBuffer) -> Result<ExitStatus, ProcessError> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(io(format!("waiting for {what}")))? {
            return Ok(status);
        }
        if start.elapsed() >= timeout {
            return Err(ProcessError::Timeout { what: format!("{what} to exit"), waited: start.elapsed(), log_tail: log.tail() });
        }
        std::thread::sleep(POLL);
    }
}

fn dump_if_panicking(name: &str, log: &LogBuffer) {
    if std::thread::panicking() {
        eprintln!("----- {name} log (last {TAIL_LINES} lines) -----\n{}\n----- end of {name} log -----", log.tail());
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

// ------------------------------------------------------------------ fake host

/// What the fake host does after it accepted a reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Boots by itself after `--boot-delay` (the binary's default: 1 s).
    Auto,
    /// Stays down until [`FakeHostProcess::release_boot`], so the test can stop the agent first,
    /// as systemd does while the host goes down.
    Gated,
}

/// A running `fake-bottlerocket` (in its own process group, killed with it on drop).
pub struct FakeHostProcess {
    child: Child,
    socket: PathBuf,
    /// Created by the on-reboot hook while it holds the host down.
    held: PathBuf,
    /// Created by the test to let the held host boot.
    release: PathBuf,
    log: LogBuffer,
}

/// The fake host's log answer lines (at debug level): `answered method="GET" path="/os" status=200`.
const ANSWERED: &str = "answered method=";

impl FakeHostProcess {
    /// Starts the fake host on `dir/api.sock` with `args` (e.g. `--version 1.0.0 --publish 1.1.0`)
    /// and waits for `READY`. Its log (stderr, with every answered request) is captured.
    pub fn start(dir: &Path, args: &[&str], boot: Boot) -> Result<FakeHostProcess, ProcessError> {
        let bin = binary(FAKE_HOST_BIN)?;
        let socket = dir.join("api.sock");
        let held = dir.join("boot-held");
        let release = dir.join("boot-release");
        let mut cmd = Command::new(bin);
        cmd.arg("--socket").arg(&socket).args(args);
        if boot == Boot::Gated {
            // Polls for the release file, with its own limit so a lost test cannot hold it forever.
            let hook = format!(
                "touch {h}; n=0; while [ ! -e {r} ] && [ $n -lt 6000 ]; do sleep 0.05; n=$((n+1)); done; rm -f {h} {r}",
                h = shell_quote(&held),
                r = shell_quote(&release)
            );
            cmd.arg("--on-reboot").arg(hook);
            if !args.iter().any(|a| a.starts_with("--boot-delay")) {
                cmd.args(["--boot-delay", "0ms"]);
            }
        }
        cmd.env("RUST_LOG", "info,fake_bottlerocket=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(io("starting fake-bottlerocket"))?;
        let log = LogBuffer::default();
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut host = FakeHostProcess { child, socket, held, release, log: log.clone() };
        if let Some(stderr) = stderr {
            capture(stderr, log);
        }
        host.wait_ready(stdout)?;
        Ok(host)
    }

    fn wait_ready(&mut self, stdout: Option<ChildStdout>) -> Result<(), ProcessError> {
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Drain the rest so the child never blocks on a full pipe.
                for _ in lines {}
            });
        }
        let what = "fake-bottlerocket to print READY".to_string();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.starts_with("READY ") => Ok(()),
            Ok(line) => Err(ProcessError::BadAnswer { request: what, reason: format!("first line was `{line}`") }),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(ProcessError::Timeout { what, waited: READY_TIMEOUT, log_tail: self.log.tail() })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(ProcessError::Exited { what, status, log_tail: self.log.tail() })
            }
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The fake host's captured log.
    pub fn log(&self) -> &LogBuffer {
        &self.log
    }

    /// `GET /fake/state`; [`ProcessError::NoAnswer`] while the host is down.
    pub fn state(&self) -> Result<HostSnapshot, ProcessError> {
        let (status, body) = self.request("GET", "/fake/state", None)?;
        let request = "GET /fake/state".to_string();
        if status != 200 {
            return Err(ProcessError::BadAnswer { request, reason: format!("status {status}: {body}") });
        }
        serde_json::from_str(&body).map_err(|e| ProcessError::BadAnswer { request, reason: e.to_string() })
    }

    /// Polls `/fake/state` until `done` holds (a down host counts as "not yet").
    pub fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&HostSnapshot) -> bool,
    ) -> Result<HostSnapshot, ProcessError> {
        let start = Instant::now();
        loop {
            let last = match self.state() {
                Ok(s) if done(&s) => return Ok(s),
                Ok(s) => format!("{s:?}"),
                Err(ProcessError::NoAnswer { .. }) => "host down".to_string(),
                Err(e) => return Err(e),
            };
            if start.elapsed() >= timeout {
                let log_tail = format!("last state: {last}\n{}", self.log.tail());
                return Err(ProcessError::Timeout { what: what.to_string(), waited: start.elapsed(), log_tail });
            }
            std::thread::sleep(POLL);
        }
    }

    /// With [`Boot::Gated`]: waits until a reboot was accepted and the host is held down.
    pub fn wait_reboot_held(&self, timeout: Duration) -> Result<(), ProcessError> {
        let start = Instant::now();
        while !self.held.exists() {
            if start.elapsed() >= timeout {
                let what = "the host to go down for a reboot".to_string();
                return Err(ProcessError::Timeout { what, waited: start.elapsed(), log_tail: self.log.tail() });
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// With [`Boot::Gated`]: lets the held host boot and waits until it answers again.
    pub fn release_boot(&self, timeout: Duration) -> Result<HostSnapshot, ProcessError> {
        std::fs::write(&self.release, b"").map_err(io(format!("creating {}", self.release.display())))?;
        let start = Instant::now();
        while self.held.exists() {
            if start.elapsed() >= timeout {
                let what = "the reboot hook to let go".to_string();
                return Err(ProcessError::Timeout { what, waited: start.elapsed(), log_tail: self.log.tail() });
            }
            std::thread::sleep(POLL);
        }
        self.wait_state("the host to boot", timeout.saturating_sub(start.elapsed()), |s| !s.down)
    }

    /// The API requests the host answered so far, as `"METHOD path?query"` (control requests
    /// left out). The host must be up: a control request marks how far its log has been read.
    pub fn api_requests(&self) -> Result<Vec<String>, ProcessError> {
        let barrier = format!("{ANSWERED}\"GET\" path=\"/fake/state\"");
        let before = self.log.count(&barrier);
        self.state()?;
        let start = Instant::now();
        while self.log.count(&barrier) <= before {
            if start.elapsed() >= REQUEST_TIMEOUT {
                let what = "the fake host to log its answer".to_string();
                return Err(ProcessError::Timeout { what, waited: start.elapsed(), log_tail: self.log.tail() });
            }
            std::thread::sleep(POLL);
        }
        let requests = self.log.lines_with(ANSWERED).iter().filter_map(|l| parse_answered(l)).collect::<Vec<_>>();
        Ok(requests.into_iter().filter(|r| !r.contains(" /fake/")).collect())
    }

    /// One HTTP/1.1 request over the socket: the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), ProcessError> {
        let request = format!("{method} {path}");
        let raw = self.exchange(method, path, body).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ProcessError::NoAnswer { request: request.clone() }
            }
            _ => io(request.clone())(e),
        })?;
        if raw.is_empty() {
            return Err(ProcessError::NoAnswer { request });
        }
        parse_response(&raw).map_err(|reason| ProcessError::BadAnswer { request, reason })
    }

    fn exchange(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Vec<u8>> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    }
}

impl Drop for FakeHostProcess {
    fn drop(&mut self) {
        dump_if_panicking("fake-bottlerocket", &self.log);
        // The group takes the reboot hook's shell with it.
        let _ = send_signal("KILL", &format!("-{}", self.child.id()));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `"GET /os"` from `... answered method="GET" path="/os" status=200`.
fn parse_answered(line: &str) -> Option<String> {
    let quoted = |key: &str| {
        let rest = &line[line.find(key)? + key.len()..];
        Some(rest[..rest.find('"')?].to_string())
    };
    Some(format!("{} {}", quoted("method=\"")?, quoted("path=\"")?))
}

/// Status and body of a whole HTTP/1.1 answer (read to the end of a `Connection: close` stream).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("answer has no end of headers")?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let body = match length {
        Some(n) => body.get(..n).ok_or("body shorter than its content-length")?,
        None => body,
    };
    Ok((status, body.to_string()))
}

// ------------------------------------------------------------------ agent config

/// An agent config file, key by key (values are TOML literals).
#[derive(Clone, Debug, Default)]
pub struct AgentConfig {
    /// Table name (`""` for top-level keys) to key to literal.
    tables: BTreeMap<String, BTreeMap<String, String>>,
}

impl AgentConfig {
    /// A standalone agent (`[cluster] enabled = false`) on `api_socket`, keeping its journal in
    /// `state_dir`, with short timings: a check every 10 s (the floor) at seed 0 without jitter, status polled
    /// every 200 ms, a held update lock retried within 200 ms to 1 s.
    pub fn for_tests(api_socket: &Path, state_dir: &Path) -> AgentConfig {
        let mut c = AgentConfig::default();
        c.set_str("api-socket", &api_socket.display().to_string())
            .set_str("state-dir", &state_dir.display().to_string())
            .set_str("check-interval", "10s")
            .set_str("check-jitter", "0s")
            .set_raw("seed", "0")
            .set_str("request-timeout", "10s")
            .set_str("commands.poll-interval", "200ms")
            .set_str("commands.busy-backoff-min", "200ms")
            .set_str("commands.busy-backoff-max", "1s")
            .set_raw("cluster.enabled", "false");
        c
    }

    /// Sets `key` (`name` or `table.name`) to a TOML literal written as is, e.g. `0` or `true`.
    pub fn set_raw(&mut self, key: &str, literal: &str) -> &mut AgentConfig {
        let (table, name) = key.split_once('.').unwrap_or(("", key));
        self.tables.entry(table.to_string()).or_default().insert(name.to_string(), literal.to_string());
        self
    }

    /// Sets `key` to the TOML string `value`.
    pub fn set_str(&mut self, key: &str, value: &str) -> &mut AgentConfig {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        self.set_raw(key, &format!("\"{escaped}\""))
    }

    /// Removes `key`, so the agent's default applies.
    pub fn remove(&mut self, key: &str) -> &mut AgentConfig {
        let (table, name) = key.split_once('.').unwrap_or(("", key));
        if let Some(t) = self.tables.get_mut(table) {
            t.remove(name);
        }
        self
    }

    /// The file's text: top-level keys first, then one section per table.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // BTreeMap order puts "" (top level) first, as TOML requires.
        for (table, keys) in &self.tables {
            if !table.is_empty() {
                out.push_str(&format!("\n[{table}]\n"));
            }
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ProcessError> {
        std::fs::write(path, self.to_toml()).map_err(io(format!("writing {}", path.display())))
    }
}

// ------------------------------------------------------------------ agent

/// A running `br-update-agent` (killed on drop).
pub struct AgentProcess {
    child: Child,
    log: LogBuffer,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

/// The resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now, in KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident, in KiB.
    pub hwm_kib: u64,
}

impl AgentProcess {
    /// Starts `br-update-agent run --config <config>` plus `extra` (e.g. `--once`), capturing
    /// its stderr. `RUST_LOG` is cleared so the config's `log-level` applies.
    pub fn start(config: &Path, extra: &[&str]) -> Result<AgentProcess, ProcessError> {
        let mut child = Command::new(binary(AGENT_BIN)?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting br-update-agent"))?;
        let log = LogBuffer::default();
        let reader = child.stderr.take().map(|e: ChildStderr| capture(e, log.clone()));
        Ok(AgentProcess { child, log, reader, exit: None })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's captured log (stderr).
    pub fn log(&self) -> &LogBuffer {
        &self.log
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> Result<bool, ProcessError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(io("polling br-update-agent"))?;
        }
        Ok(self.exit.is_none())
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) unless it already exited (its pid may be reused).
    pub fn signal(&mut self, signal: &str) -> Result<(), ProcessError> {
        if self.is_running()? {
            send_signal(signal, &self.pid().to_string())?;
        }
        Ok(())
    }

    /// Waits for the exit (SIGKILL past `timeout` is left to drop) and for the whole log.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let status = match self.exit {
            Some(s) => s,
            None => wait_child(&mut self.child, "br-update-agent", timeout, &self.log)?,
        };
        self.exit = Some(status);
        // The agent has no children, so its stderr closes with it.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// SIGTERM, as systemd stops the host container, then waits for the exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        self.signal("TERM")?;
        self.wait_exit(timeout)
    }

    /// `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
    pub fn memory(&self) -> Result<Memory, ProcessError> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).map_err(io(format!("reading {path}")))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| ProcessError::BadAnswer { request: format!("reading {path}"), reason: format!("no {name}") })
        };
        Ok(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        dump_if_panicking("br-update-agent", &self.log);
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished short command.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Changes to a child's environment: variables set, and variables removed.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// Set, in order.
    pub set: Vec<(String, String)>,
    /// Removed.
    pub remove: Vec<String>,
}

impl Env {
    fn apply(&self, cmd: &mut Command) {
        for name in &self.remove {
            cmd.env_remove(name);
        }
        cmd.envs(self.set.iter().map(|(k, v)| (k, v)));
    }
}

/// Runs `br-update-agent <args>` to completion (killed past `timeout`), e.g. `check-config`.
pub fn run_agent(args: &[&str], timeout: Duration) -> Result<Finished, ProcessError> {
    run_agent_with_env(args, &Env::default(), timeout)
}

/// As [`run_agent`], with `env` applied (e.g. the AWS settings of `fleet` commands).
pub fn run_agent_with_env(args: &[&str], env: &Env, timeout: Duration) -> Result<Finished, ProcessError> {
    let mut p = CommandProcess::start(args, env)?;
    let status = wait_child(&mut p.child, "br-update-agent", timeout, &p.err);
    if status.is_err() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let status = status?;
    p.exit = Some(status);
    for reader in std::mem::take(&mut p.readers) {
        let _ = reader.join();
    }
    Ok(Finished { status, stdout: p.out.text(), stderr: p.err.text() })
}

/// A long-running `br-update-agent <args>` with both pipes captured (e.g. `fleet status
/// --watch`), killed on drop.
pub struct CommandProcess {
    child: Child,
    out: LogBuffer,
    err: LogBuffer,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    stdin: Option<std::process::ChildStdin>,
}

impl CommandProcess {
    /// Starts `program <args>` with `env` applied and a pipe to its stdin ([`Self::write_stdin`]).
    pub fn start_program(program: &Path, args: &[&str], env: &Env) -> Result<CommandProcess, ProcessError> {
        let mut cmd = Command::new(program);
        cmd.args(args).env_remove("RUST_LOG");
        env.apply(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {}", program.display())))?;
        let (out, err) = (LogBuffer::default(), LogBuffer::default());
        let readers = [child.stdout.take().map(|p| capture(p, out.clone())), child.stderr.take().map(|p| capture(p, err.clone()))];
        let stdin = child.stdin.take();
        Ok(CommandProcess { child, out, err, readers: readers.into_iter().flatten().collect(), exit: None, stdin })
    }

    /// Writes `bytes` to its stdin (started with [`Self::start_program`]).
    pub fn write_stdin(&mut self, bytes: &[u8]) -> Result<(), ProcessError> {
        let pipe = self.stdin.as_mut().ok_or_else(|| ProcessError::BadAnswer { request: "stdin".into(), reason: "not a pipe".into() })?;
        pipe.write_all(bytes).and_then(|_| pipe.flush()).map_err(io("writing to the child's stdin"))
    }

    /// Starts `br-update-agent <args>` with `env` applied.
    pub fn start(args: &[&str], env: &Env) -> Result<CommandProcess, ProcessError> {
        let mut cmd = Command::new(binary(AGENT_BIN)?);
        cmd.args(args).env_remove("RUST_LOG");
        env.apply(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting br-update-agent"))?;
        let (out, err) = (LogBuffer::default(), LogBuffer::default());
        let readers = [child.stdout.take().map(|p| capture(p, out.clone())), child.stderr.take().map(|p| capture(p, err.clone()))];
        Ok(CommandProcess { child, out, err, readers: readers.into_iter().flatten().collect(), exit: None, stdin: None })
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> &LogBuffer {
        &self.out
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> &LogBuffer {
        &self.err
    }

    /// Sends `signal` (`INT`, `TERM`, ...) unless it already exited (its pid may be reused).
    pub fn signal(&mut self, signal: &str) -> Result<(), ProcessError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(io("polling br-update-agent"))?;
        }
        if self.exit.is_none() {
            send_signal(signal, &self.child.id().to_string())?;
        }
        Ok(())
    }

    /// Waits for the exit (killed past `timeout`) and for the whole output.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let status = match self.exit {
            Some(s) => s,
            None => wait_child(&mut self.child, "br-update-agent", timeout, &self.err)?,
        };
        self.exit = Some(status);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(status)
    }
}

impl Drop for CommandProcess {
    fn drop(&mut self) {
        dump_if_panicking("br-update-agent (stderr)", &self.err);
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw), Ok((200, "{}".to_string())));
        let raw = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
        assert_eq!(parse_response(raw), Ok((204, String::new())));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn answered_lines_name_the_request() {
        let line = "2026-01-01T00:00:00Z DEBUG fake_bottlerocket::host: \
                    answered method=\"POST\" path=\"/actions/reboot\" status=204";
        assert_eq!(parse_answered(line).as_deref(), Some("POST /actions/reboot"));
        assert_eq!(parse_answered("INFO something else"), None);
    }

    #[test]
    fn config_puts_top_level_keys_before_tables() {
        let mut c = AgentConfig::for_tests(Path::new("/s/api.sock"), Path::new("/s/state"));
        c.set_raw("cluster.max-concurrent", "0").set_str("check-interval", "-5s").remove("seed");
        let text = c.to_toml();
        let first_table = text.find('[').expect("has tables");
        assert!(text[..first_table].contains("check-interval = \"-5s\""), "{text}");
        assert!(!text.contains("seed ="), "{text}");
        assert!(text[first_table..].contains("[cluster]\nenabled = false\nmax-concurrent = 0\n"), "{text}");
    }

    #[test]
    fn log_waits_see_only_what_follows_the_mark() {
        let log = LogBuffer::default();
        log.push("one\n");
        let mark = log.mark();
        assert_eq!(log.wait_for("one", Duration::from_secs(1)).expect("written"), 3);
        log.push("two one\n");
        assert_eq!(log.wait_for_from(mark, "one", Duration::from_secs(1)).expect("written after the mark"), mark + 7);
        log.close();
        assert!(matches!(log.wait_for("three", Duration::from_secs(30)), Err(ProcessError::Exited { .. })));
    }
}
