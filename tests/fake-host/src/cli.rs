//! Command-line arguments of the `fake-bottlerocket` binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{CommandDurations, Faults, HostConfig, RebootBehavior};

/// Usage text printed with `--help` and after an argument error.
pub const USAGE: &str = "\
usage: fake-bottlerocket --socket PATH --version V [options]

  --socket PATH            Unix socket to listen on (must not exist)
  --version V              running version (version_id)
  --variant NAME           variant_id (default aws-ecs-2)
  --arch NAME              arch (default x86_64)
  --publish V1,V2          published versions (repeatable, lists add up)
  --version-lock L         settings.updates.version-lock (default latest)
  --seed N                 settings.updates.seed (default 1234)
  --ignore-waves           settings.updates.ignore-waves = true
  --refresh-time D         work time of refresh (default 200ms)
  --prepare-time D         work time of prepare (default 2s)
  --activate-time D        work time of activate (default 200ms)
  --deactivate-time D      work time of deactivate (default 200ms)
  --fail WHAT              refresh|prepare|activate|deactivate|reboot|rollback|malformed-status|api-errors
                           (repeatable)
  --api-errors-after-boot D  after each boot, every API request answers 500 for D
  --on-reboot CMD          run `sh -c CMD` after an accepted reboot (env FAKE_SOCKET, FAKE_OLD_VERSION)
  --boot-delay D           time down after the reboot command (default 1s)

Durations take a unit: 200ms, 2s, 1m.
Prints `READY <socket>` on stdout once listening; SIGTERM or SIGINT stops it.";

/// Flags followed by a value (`--flag V` or `--flag=V`).
const VALUE_FLAGS: &[&str] = &[
    "--socket", "--version", "--variant", "--arch", "--publish", "--version-lock", "--seed",
    "--refresh-time", "--prepare-time", "--activate-time", "--deactivate-time", "--fail",
    "--on-reboot", "--boot-delay", "--api-errors-after-boot",
];
/// Flags without a value.
const SWITCHES: &[&str] = &["-h", "--help", "--ignore-waves"];

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    /// `--help`.
    Help,
    /// Serve a host.
    Run(Box<RunArgs>),
}

/// The arguments of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    /// Where to listen.
    pub socket: PathBuf,
    /// The host to serve (reboots take it down until the binary boots it).
    pub config: HostConfig,
    /// Shell command run after an accepted reboot, before the boot.
    pub on_reboot: Option<String>,
    /// Time between the end of `on_reboot` and the boot.
    pub boot_delay: Duration,
}

/// A bad command line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// A flag the binary does not know.
    #[error("unknown argument `{0}`")]
    Unknown(String),
    /// A flag given without its value.
    #[error("`{0}` needs a value")]
    MissingValue(String),
    /// A required flag is absent.
    #[error("`{0}` is required")]
    Required(&'static str),
    /// A value that does not parse.
    #[error("invalid value `{value}` for `{flag}`: {reason}")]
    Invalid {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// Parse the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Invocation, ArgError> {
    let mut config = HostConfig {
        reboot: RebootBehavior::GoDown,
        durations: CommandDurations::default(),
        ..HostConfig::default()
    };
    let mut socket = None;
    let mut version = None;
    let mut on_reboot = None;
    let mut boot_delay = Duration::from_secs(1);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = VALUE_FLAGS.contains(&flag.as_str());
        if !takes_value && !SWITCHES.contains(&flag.as_str()) {
            return Err(ArgError::Unknown(arg));
        }
        let value = if takes_value {
            match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(ArgError::MissingValue(flag)),
            }
        } else {
            String::new()
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "--ignore-waves" => config.ignore_waves = true,
            "--socket" => socket = Some(PathBuf::from(value)),
            "--version" => version = Some(value),
            "--variant" => config.variant = value,
            "--arch" => config.arch = value,
            "--publish" => config.published.extend(split_list(&value)),
            "--version-lock" => config.version_lock = value,
            "--seed" => config.seed = value.parse().map_err(|e| invalid(&flag, &value, e))?,
            "--refresh-time" => config.durations.refresh = duration(&flag, &value)?,
            "--prepare-time" => config.durations.prepare = duration(&flag, &value)?,
            "--activate-time" => config.durations.activate = duration(&flag, &value)?,
            "--deactivate-time" => config.durations.deactivate = duration(&flag, &value)?,
            "--fail" => add_fault(&mut config.faults, &flag, &value)?,
            "--on-reboot" => on_reboot = Some(value),
            "--boot-delay" => boot_delay = duration(&flag, &value)?,
            "--api-errors-after-boot" => config.faults.api_errors_after_boot = duration(&flag, &value)?,
            _ => return Err(ArgError::Unknown(arg)),
        }
    }
    config.version = version.ok_or(ArgError::Required("--version"))?;
    let socket = socket.ok_or(ArgError::Required("--socket"))?;
    Ok(Invocation::Run(Box::new(RunArgs { socket, config, on_reboot, boot_delay })))
}

/// A duration with a unit: `ms`, `s` or `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|at| text.split_at(at))
        .ok_or_else(|| "missing unit (ms, s or m)".to_string())?;
    let n: u64 = number.parse().map_err(|_| "expected a whole number before the unit".to_string())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(|| "too large".to_string()),
        other => Err(format!("unknown unit `{other}` (ms, s or m)")),
    }
}

fn duration(flag: &str, value: &str) -> Result<Duration, ArgError> {
    parse_duration(value).map_err(|reason| invalid(flag, value, reason))
}

fn add_fault(faults: &mut Faults, flag: &str, value: &str) -> Result<(), ArgError> {
    match value {
        "refresh" => faults.refresh_fails = true,
        "prepare" => faults.prepare_fails = true,
        "activate" => faults.activate_fails = true,
        "reboot" => faults.reboot_refused = true,
        "rollback" => faults.rollback_on_boot = true,
        "malformed-status" => faults.malformed_status = true,
        "deactivate" => faults.deactivate_fails = true,
        "api-errors" => faults.api_errors = true,
        _ => {
            return Err(invalid(
                flag,
                value,
                "expected refresh, prepare, activate, deactivate, reboot, rollback, malformed-status or api-errors",
            ))
        }
    }
    Ok(())
}

fn split_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

fn invalid(flag: &str, value: &str, reason: impl ToString) -> ArgError {
    ArgError::Invalid { flag: flag.to_string(), value: value.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ArgError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert!(parse_duration("200").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1.5s").is_err());
    }

    #[test]
    fn a_full_command_line_builds_the_host() {
        let Ok(Invocation::Run(run)) = parse(&[
            "--socket", "/tmp/x.sock", "--version", "1.20.0", "--publish", "1.20.1,1.21.0",
            "--publish=1.22.0", "--version-lock", "v1.21.0", "--seed", "77", "--prepare-time", "5s",
            "--fail", "prepare", "--fail", "rollback", "--on-reboot", "echo hi", "--boot-delay", "50ms",
            "--ignore-waves",
        ]) else {
            panic!("expected a run");
        };
        assert_eq!(run.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(run.config.version, "1.20.0");
        assert_eq!(run.config.published, ["1.20.1", "1.21.0", "1.22.0"]);
        assert_eq!(run.config.version_lock, "v1.21.0");
        assert_eq!(run.config.seed, 77);
        assert!(run.config.ignore_waves);
        assert_eq!(run.config.durations.prepare, Duration::from_secs(5));
        assert!(run.config.faults.prepare_fails && run.config.faults.rollback_on_boot);
        assert!(!run.config.faults.refresh_fails);
        assert_eq!(run.config.reboot, RebootBehavior::GoDown);
        assert_eq!(run.on_reboot.as_deref(), Some("echo hi"));
        assert_eq!(run.boot_delay, Duration::from_millis(50));
    }

    #[test]
    fn bad_command_lines_are_rejected_with_the_reason() {
        assert_eq!(parse(&["--version", "1.0.0"]), Err(ArgError::Required("--socket")));
        assert_eq!(parse(&["--socket", "s"]), Err(ArgError::Required("--version")));
        assert_eq!(parse(&["--socket"]), Err(ArgError::MissingValue("--socket".into())));
        assert_eq!(parse(&["--bogus"]), Err(ArgError::Unknown("--bogus".into())));
        assert!(matches!(parse(&["--fail", "everything"]), Err(ArgError::Invalid { .. })));
        assert!(matches!(parse(&["--seed", "-1"]), Err(ArgError::Invalid { .. })));
        assert_eq!(parse(&["--socket", "s", "--help"]), Ok(Invocation::Help));
    }
}
