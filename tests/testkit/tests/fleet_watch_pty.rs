//! `fleet status --watch` on a terminal, against the demo fleet (`demo --moto`: agent processes
//! around the patched moto server): run under `script` (util-linux), which gives it a
//! pseudo-terminal, it redraws the screen in place as hosts move, and Ctrl-C (a `\x03` typed into
//! the terminal) ends it with exit 0 and the terminal's settings as they were.
//!
//! Needs `script`, the moto venv (`bash tests/moto/ensure-venv.sh`) and the built binaries; a
//! missing one fails the test and says which.

use std::time::{Duration, Instant};

use testkit::fleet::measure;
use testkit::moto::REGION;
use testkit::process::{binary, CommandProcess, Env, AGENT_BIN};

/// Safety net for the demo to start (the moto server imports for a few seconds).
const START: Duration = Duration::from_secs(120);
/// Safety net for the watch to show what the test waits for.
const SHOW: Duration = Duration::from_secs(90);
/// The footer of every redraw.
const FOOTER: &str = "refreshing every 1s";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The text without ANSI escapes (CSI sequences), carriage returns dropped.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The host rows of each redraw (the lines between the column header and the footer).
fn frames(screen: &str) -> Vec<Vec<String>> {
    plain(screen)
        .split(FOOTER)
        .filter(|f| f.contains("INSTANCE"))
        .map(|f| f.lines().skip_while(|l| !l.contains("INSTANCE")).skip(1).filter(|l| l.contains(" i-")).map(str::to_owned).collect())
        .collect()
}

/// The `stty -g` settings printed after `label` (hex fields and colons), empty when absent.
fn stty_settings<'a>(out: &'a str, label: &str) -> &'a str {
    let Some(at) = out.find(label) else { return "" };
    let rest = &out[at + label.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_hexdigit() || c == ':')).unwrap_or(rest.len());
    &rest[..end]
}

fn operator_env(endpoint: &str) -> Env {
    let set = [
        ("AWS_ENDPOINT_URL_ECS", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/br-update-agent-test/config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/br-update-agent-test/credentials"),
        ("TERM", "xterm"),
        // `script -c` runs its command through $SHELL: with bash named here the command's shell is
        // the terminal's session leader. Under another shell (a `sh` that does not exec its last
        // command) that outer shell would die of the Ctrl-C and `script` would report 130.
        ("SHELL", "/bin/bash"),
    ];
    Env {
        set: set.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        remove: ["AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "NO_COLOR"].into_iter().map(str::to_owned).collect(),
    }
}

#[test]
fn watch_redraws_as_hosts_move_and_ends_cleanly_on_ctrl_c_in_a_terminal() {
    let started = Instant::now();
    let script = std::path::Path::new("/usr/bin/script");
    assert!(script.is_file(), "MISSING: `script` (util-linux) is needed to give the watch a terminal; install util-linux");
    let demo_bin = ok(binary("demo"));
    let agent = ok(binary(AGENT_BIN));
    let mut demo = ok(CommandProcess::start_program(&demo_bin, &["--moto", "--hosts", "6", "--max-concurrent", "2", "--linger", "5"], &Env::default()));
    let announced = "ECS (the patched moto server): ";
    demo.stdout().wait_for(announced, START).unwrap_or_else(|e| panic!("{e}\n{}", demo.stderr().text()));
    let endpoint = demo
        .stdout()
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(announced))
        .map(|e| e.trim().to_owned())
        .unwrap_or_else(|| panic!("no endpoint in {}", demo.stdout().text()));

    // stty before and after, around the watch, inside the same terminal; bash carries on after a
    // child that handled SIGINT and exited normally. Each is printed in one write behind a label:
    // the terminal echoes the `^C` after it has signalled, so on a busy machine that echo can land
    // at the start of a later line.
    let inner = format!(
        "echo \"stty-before=$(stty -g)\"; {} fleet status --cluster demo --watch --interval 1; echo \"exit=$?\"; echo \"stty-after=$(stty -g)\"",
        agent.display()
    );
    let mut term = ok(CommandProcess::start_program(script, &["-qfec", &inner, "/dev/null"], &operator_env(&endpoint)));
    let enough = |t: &str| frames(t).len() >= 3 && frames(t).windows(2).any(|w| w[0] != w[1]);
    let deadline = Instant::now() + SHOW;
    while !enough(&term.stdout().text()) {
        assert!(Instant::now() < deadline, "the screen did not change as hosts moved:\n{}\n--- demo\n{}", plain(&term.stdout().text()), demo.stdout().text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let screen = term.stdout().text();
    assert!(screen.contains("\x1b[H\x1b[2J"), "redrawn in place on a terminal:\n{screen:?}");
    assert!(plain(&screen).lines().any(|l| l.starts_with("* i-")), "rows that changed are marked:\n{}", plain(&screen));

    ok(term.write_stdin(b"\x03"));
    let status = ok(term.wait_exit(Duration::from_secs(30)));
    let out = plain(&term.stdout().text());
    assert!(out.contains("exit=0"), "Ctrl-C ends the watch with exit 0:\n{out}\n--- stderr\n{}", term.stderr().text());
    assert_eq!(status.code(), Some(0), "{out}");
    let before = stty_settings(&out, "stty-before=");
    let after = stty_settings(&out, "stty-after=");
    assert!(before.split(':').count() > 10, "stty -g before the watch:\n{out}");
    assert_eq!(before, after, "the terminal's settings are as they were:\n{out}");
    // The demo ends by itself once every host updated: its processes go with it.
    let demo_end = ok(demo.wait_exit(Duration::from_secs(300)));
    assert!(demo_end.success(), "the demo fleet finished its rollout:\n{}\n{}", demo.stdout().text(), demo.stderr().text());
    measure("fleet_watch_pty wall time", format!("{:.1} s", started.elapsed().as_secs_f64()));
}
