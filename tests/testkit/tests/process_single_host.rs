//! The agent binary on one host, against the fake Bottlerocket binary, driven the way systemd
//! drives a host container: the agent runs as a daemon, gets SIGTERM when the host goes down for
//! the reboot it asked for, and a new agent process starts after the boot with the same config and
//! state directory.
//!
//! Needs the built binaries: `cargo build --workspace --all-targets` first. Timeouts are safety
//! nets far above what a step takes; figures are printed (`MEASURE:` on stderr), never asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_bottlerocket::{UpdateCommand, UpdateState};
use tempfile::TempDir;
use testkit::introspection::{Answer, FakeIntrospection};
use testkit::process::{
    journal_path, read_journal, run_agent, AgentConfig, AgentProcess, Boot, FakeHostProcess, Memory,
};

/// Safety net for one step of an update (a slot, a few short commands).
const STEP: Duration = Duration::from_secs(60);
/// Safety net for a step that waits out the 30 s prepare.
const LONG_STEP: Duration = Duration::from_secs(150);
/// Safety net for an exit after SIGTERM.
const EXIT: Duration = Duration::from_secs(20);

/// The agent's log line once a new process has verified the new version after the boot.
const VERIFIED: &str = "booted into the new version";

/// One host: a temporary directory with the fake host's socket, the config and the state dir.
struct Host {
    dir: TempDir,
    fake: FakeHostProcess,
    config: PathBuf,
    state_dir: PathBuf,
}

impl Host {
    /// A fake host started with `args`, and an agent config for it (after `tweak`).
    fn start(args: &[&str], boot: Boot, tweak: impl FnOnce(&mut AgentConfig)) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeHostProcess::start(dir.path(), args, boot).expect("fake host starts");
        let state_dir = dir.path().join("state");
        let config = dir.path().join("agent.toml");
        let mut cfg = AgentConfig::for_tests(fake.socket(), &state_dir);
        tweak(&mut cfg);
        cfg.write(&config).expect("config written");
        Host { dir, fake, config, state_dir }
    }

    fn agent(&self) -> AgentProcess {
        AgentProcess::start(&self.config, &[]).expect("agent starts")
    }

    /// The agent's journal, which must be readable.
    fn journal(&self) -> Option<agent::journal::Record> {
        read_journal(&self.state_dir).expect("journal readable")
    }

    /// How many times the host was asked for `request` (e.g. `POST /actions/prepare-update`).
    fn requests_of(&self, request: &str) -> usize {
        self.fake.api_requests().expect("request log").iter().filter(|r| r.as_str() == request).count()
    }

    /// Waits until the journal has no update in flight and names `result` as the last one.
    fn wait_journal_result(&self, result: &str) -> agent::journal::Record {
        let start = Instant::now();
        loop {
            let record = self.journal();
            if let Some(r) = record.filter(|r| r.in_flight.is_none() && r.last_result.as_deref() == Some(result)) {
                return r;
            }
            assert!(start.elapsed() < STEP, "journal never reached `{result}`: {:?}", self.journal());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Plays systemd around the reboot the running agent asked for: waits until the host is held
    /// down, stops the agent with SIGTERM (it must exit 0), and boots the host. Returns how long
    /// the agent took to exit.
    fn reboot_with_agent_stopped(&self, agent: &mut AgentProcess, wait: Duration) -> Duration {
        self.fake.wait_reboot_held(wait).expect("the agent asked for the reboot");
        let asked = Instant::now();
        let status = agent.stop(EXIT).expect("agent exits after SIGTERM");
        let took = asked.elapsed();
        assert!(status.success(), "agent stopped during the reboot must exit 0, got {status}");
        let journal = self.journal().expect("journal written before the reboot");
        let flight = journal.in_flight.expect("the reboot is announced in the journal");
        assert_eq!(flight.step, agent::journal::Step::Rebooting);
        assert_eq!(flight.target_version, "1.1.0");
        let booted = self.fake.release_boot(STEP).expect("host boots");
        assert_eq!(booted.boots, 1);
        took
    }
}

/// Prints a figure on the process's stderr itself: libtest captures `eprintln!`, not the handle,
/// so the line shows with or without `--nocapture`.
fn measure(what: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "MEASURE: {what}: {value}");
}

fn measure_memory(what: &str, m: Memory) {
    measure(what, format!("VmRSS {} KiB, VmHWM {} KiB", m.rss_kib, m.hwm_kib));
}

#[test]
fn full_update_goes_through_the_reboot_and_a_new_agent_process_finishes_it() {
    let host = Host::start(&["--version", "1.0.0", "--publish", "1.1.0", "--prepare-time", "500ms"], Boot::Gated, |_| {});
    let started = Instant::now();
    let mut first = host.agent();
    first.log().wait_for("update chosen", STEP).expect("the first round finds 1.1.0");
    let chosen = Instant::now();
    let exit = host.reboot_with_agent_stopped(&mut first, STEP);
    assert!(first.log().contains("stopped while the host reboots"), "{}", first.log().tail());
    measure("exit after SIGTERM while the host reboots", format!("{} ms", exit.as_millis()));

    let mut second = host.agent();
    second.log().wait_for(VERIFIED, STEP).expect("the new process verifies the update");
    let record = host.wait_journal_result("updated");
    let (cycle, from_chosen) = (started.elapsed(), chosen.elapsed());
    assert!(record.quarantine.is_empty(), "{record:?}");
    let state = host.fake.state().expect("state");
    assert_eq!(state.running_version, "1.1.0");
    assert_eq!(state.reboot_requests, 1);
    let line = second.log().lines_with(VERIFIED).join("\n");
    assert!(line.contains("from=1.0.0") && line.contains("to=1.1.0"), "{line}");

    measure("full update cycle, standalone (agent start to new version verified by a new process; \
             includes up to 10 s to the first slot and a 500 ms prepare)", format!("{:.2} s", cycle.as_secs_f64()));
    measure("update cycle from `update chosen` to verified (prepare, activate, reboot, restart, verify)",
        format!("{:.2} s", from_chosen.as_secs_f64()));
    // Settled: the next round's slot is planned and the agent sleeps until it.
    let mark = second.log().mark();
    second.log().wait_for_from(mark, "next check", STEP).expect("agent plans its next round");
    std::thread::sleep(Duration::from_millis(300));
    measure_memory("agent memory, idle after finishing an update", second.memory().expect("memory"));
    let status = second.stop(EXIT).expect("agent exits");
    assert!(status.success(), "{status}");
}

#[test]
fn rolled_back_boot_quarantines_the_version_and_later_rounds_leave_it_alone() {
    let host = Host::start(&["--version", "1.0.0", "--publish", "1.1.0", "--fail", "rollback"], Boot::Gated, |_| {});
    let mut first = host.agent();
    host.reboot_with_agent_stopped(&mut first, STEP);

    let mut second = host.agent();
    second.log().wait_for("rolled back", STEP).expect("the new process sees the rollback");
    let record = host.wait_journal_result("rolled-back");
    assert!(record.quarantine.iter().any(|q| q.version == "1.1.0"), "{record:?}");
    // A further round sees 1.1.0 offered again and leaves it alone.
    let seen = second.log().wait_for("update failed to boot here recently", STEP).expect("a later round");
    second.log().wait_for_from(seen, "round finished", STEP).expect("that round ends");
    assert!(second.is_running().expect("poll"), "{}", second.log().tail());
    let state = host.fake.state().expect("state");
    assert_eq!(state.running_version, "1.0.0");
    assert_eq!(state.reboot_requests, 1, "no second reboot");
    assert_eq!(host.requests_of("POST /actions/prepare-update"), 1, "the quarantined version is not downloaded again");
    let status = second.stop(EXIT).expect("agent exits");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_during_prepare_exits_cleanly_and_a_restarted_agent_finishes() {
    let host = Host::start(&["--version", "1.0.0", "--publish", "1.1.0", "--prepare-time", "30s"], Boot::Gated, |_| {});
    let mut first = host.agent();
    host.fake
        .wait_state("the prepare to run", STEP, |s| s.busy_with == Some(UpdateCommand::Prepare))
        .expect("agent starts the prepare");
    first.log().wait_for("starting update command action=\"prepare\"", STEP).expect("agent waits on the prepare");
    let asked = Instant::now();
    let status = first.stop(EXIT).expect("agent exits after SIGTERM");
    measure("exit after SIGTERM during a prepare", format!("{} ms", asked.elapsed().as_millis()));
    assert!(status.success(), "{status}");
    assert!(host.journal().is_none_or(|r| r.in_flight.is_none()), "{:?}", host.journal());
    let state = host.fake.state().expect("state");
    let still_going = state.busy_with == Some(UpdateCommand::Prepare) || state.update_state == Some(UpdateState::Staged);
    assert!(still_going, "the prepare goes on in the host: {state:?}");

    let mut second = host.agent();
    host.reboot_with_agent_stopped(&mut second, LONG_STEP);
    assert!(second.log().contains("update already staged"), "{}", second.log().tail());

    let mut third = host.agent();
    third.log().wait_for(VERIFIED, STEP).expect("the update is verified");
    host.wait_journal_result("updated");
    assert_eq!(host.fake.state().expect("state").running_version, "1.1.0");
    assert_eq!(host.requests_of("POST /actions/prepare-update"), 1, "the interrupted download was used");
    let status = third.stop(EXIT).expect("agent exits");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_while_discovering_the_cluster_exits_0_having_changed_nothing() {
    // Nothing listens at the introspection URL, as before the ECS agent has started.
    let introspection = FakeIntrospection::start(Answer::Refuse);
    let url = introspection.url();
    let host = Host::start(&["--version", "1.0.0", "--publish", "1.1.0"], Boot::Auto, |c| {
        c.set_raw("cluster.enabled", "true").set_str("cluster.introspection-url", &url);
    });
    let mut agent = host.agent();
    agent.log().wait_for("ECS agent not ready; retrying", STEP).expect("the agent waits for the ECS agent");
    let status = agent.stop(EXIT).expect("agent exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "a stop during discovery is a clean stop: {}", agent.log().tail());
    assert!(
        agent.log().contains("stopped by signal during discovery; nothing was changed"),
        "{}",
        agent.log().tail()
    );
    assert!(!agent.log().contains("coordinating through ECS"), "{}", agent.log().tail());
    assert_eq!(host.fake.api_requests().expect("request log"), Vec::<String>::new(), "the host saw no request");
    assert!(!host.state_dir.exists(), "the state dir must not be created");
}

/// Makes a good config bad.
type Spoil = fn(&mut AgentConfig);

#[test]
fn bad_configs_are_refused_before_anything_is_touched() {
    let host = Host::start(&["--version", "1.0.0", "--publish", "1.1.0"], Boot::Auto, |_| {});
    // (case, how the config is spoiled, the key stderr must name)
    let cases: [(&str, Spoil, &str); 4] = [
        ("unknown key", |c| {
            c.set_str("check-intervall", "5m");
        }, "check-intervall"),
        ("zero max-concurrent", |c| {
            c.set_raw("cluster.max-concurrent", "0");
        }, "cluster.max-concurrent"),
        ("negative duration", |c| {
            c.set_str("check-interval", "-5m");
        }, "check-interval"),
        ("check interval below its floor", |c| {
            c.set_str("check-interval", "1ms");
        }, "check-interval >= 10s"),
    ];
    for (case, spoil, key) in cases {
        let mut cfg = AgentConfig::for_tests(host.fake.socket(), &host.state_dir);
        spoil(&mut cfg);
        let path = host.dir.path().join("bad.toml");
        cfg.write(&path).expect("config written");
        let out = run_agent(&["run", "--config", path.to_str().expect("utf-8 path")], STEP).expect("agent runs");
        assert!(!out.status.success(), "{case}: must exit non-zero; stderr: {}", out.stderr);
        assert!(out.stderr.contains(key), "{case}: stderr must name `{key}`: {}", out.stderr);
        assert!(!host.state_dir.exists(), "{case}: the state dir must not be created");
    }
    assert_eq!(host.fake.api_requests().expect("request log"), Vec::<String>::new(), "the host saw no request");
    assert_eq!(host.fake.state().expect("state").update_state, None);
}

#[test]
fn check_config_prints_the_effective_config_that_reads_back_the_same() {
    let host = Host::start(&["--version", "1.0.0"], Boot::Auto, |c| {
        c.set_raw("cluster.max-concurrent", "3");
    });
    let check = |path: &Path| {
        let out = run_agent(&["check-config", "--config", path.to_str().expect("utf-8 path")], STEP).expect("runs");
        assert!(out.status.success(), "check-config of a good file exits 0: {}", out.stderr);
        out.stdout
    };
    let printed = check(&host.config);
    let (comment, body) = printed.split_once('\n').expect("a comment line, then the config");
    assert!(comment.starts_with("# effective config from"), "{printed}");
    for expected in ["check-interval = \"10s\"", "max-concurrent = 3", "enabled = false", "quarantine = \"7d\""] {
        assert!(body.contains(expected), "missing `{expected}` in:\n{printed}");
    }
    assert!(body.contains(&host.fake.socket().display().to_string()), "{printed}");
    let again = host.dir.path().join("printed.toml");
    std::fs::write(&again, body).expect("write");
    let reprinted = check(&again);
    assert_eq!(reprinted.split_once('\n').map(|(_, b)| b), Some(body), "the printed config reads back to itself");
    assert_eq!(host.fake.api_requests().expect("request log"), Vec::<String>::new(), "check-config touches nothing");
    assert!(!host.state_dir.exists());
}

#[test]
fn corrupt_journal_is_set_aside_and_the_agent_carries_on() {
    let host = Host::start(&["--version", "1.0.0"], Boot::Auto, |_| {});
    std::fs::create_dir_all(&host.state_dir).expect("state dir");
    let garbage = b"{\"in_flight\": {\"step\": \"warp";
    let journal = journal_path(&host.state_dir);
    std::fs::write(&journal, garbage).expect("corrupt journal");

    let mut agent = host.agent();
    agent.log().wait_for("in-flight record unreadable", STEP).expect("the agent reports the record");
    let report = agent.log().lines_with("in-flight record unreadable").join("\n");
    assert!(report.contains("ERROR") && report.contains("corrupt record"), "{report}");
    let seen = agent.log().mark();
    agent.log().wait_for_from(seen, "round finished", STEP).expect("a round runs afterwards");
    assert!(agent.is_running().expect("poll"), "agent keeps running: {}", agent.log().tail());
    let aside = journal.with_extension("corrupt");
    assert_eq!(std::fs::read(&aside).expect("record set aside"), garbage);
    assert!(host.journal().is_none_or(|r| r.in_flight.is_none()), "whatever is left reads cleanly");
    let status = agent.stop(EXIT).expect("agent exits");
    assert!(status.success(), "{status}");

    // Restarted by systemd onto a corrupt record again, a single round still ends well.
    std::fs::write(&journal, garbage).expect("corrupt journal");
    let config = host.config.to_str().expect("utf-8 path");
    let out = run_agent(&["run", "--config", config, "--once"], STEP).expect("agent runs");
    assert!(out.status.success(), "no crash loop: {}\n{}", out.status, out.stderr);
    assert!(out.stderr.contains("in-flight record unreadable"), "{}", out.stderr);
}

#[test]
fn idle_agent_memory_is_measured() {
    let host = Host::start(&["--version", "1.0.0"], Boot::Auto, |c| {
        c.set_str("check-interval", "1h").set_raw("seed", "1024");
    });
    let mut agent = host.agent();
    agent.log().wait_for("next check", STEP).expect("agent plans its first round");
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.is_running().expect("poll"), "{}", agent.log().tail());
    measure_memory("agent memory, idle waiting for its first slot", agent.memory().expect("memory"));
    let status = agent.stop(EXIT).expect("agent exits");
    assert!(status.success(), "{status}");
}
