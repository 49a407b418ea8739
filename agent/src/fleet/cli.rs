//! The `br-update-agent fleet ...` command line: parsing into a typed [`Invocation`], and
//! running it with the operator's own AWS credentials.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use super::controls::{apply, Control};
use super::forecast::Assumptions;
use crate::config::Config;
use super::model::ViewSettings;
use super::source::{operator_client, EcsFleet};
use super::watch::{status_once, watch, Output};
use crate::clock::{Clock, SystemClock};
use crate::shutdown::{self, Shutdown};

/// The `fleet` usage text.
pub const USAGE: &str = "\
usage: br-update-agent fleet COMMAND --cluster NAME [--region R] [--prefix P]

Runs with your own AWS credentials (the default chain: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_ECS, ...).

  status [--json] [--watch [--interval SECS]] [--verbose] [--forecast [--config FILE]]
                          the rollout: limit, pause, slots held, versions, one row per instance;
                          --forecast adds when each host behind the newest target updates and
                          when the rollout finishes, assuming the fleet's agents run FILE (the
                          agent config; default: the agent's defaults)
  pause | resume          tag the cluster <prefix>.paused=true / remove the tag
  limit N                 tag the cluster <prefix>.max-concurrent=N (1-1000)
  opt-out INSTANCE        put <prefix>.opt-out=true on the instance
  opt-in INSTANCE         delete <prefix>.opt-out from the instance
  update-now INSTANCE     put <prefix>.update-now=true on the instance
  resume-version VERSION  delete every <prefix>.failed marker that names VERSION, so the hosts
                          that halted it take it again
  release INSTANCE [--force]
                          a host that will never come back: set it ACTIVE (unless its marker
                          says someone else drained it), delete its <prefix>.drained and
                          <prefix>.lease (refused unless it carries the marker and its claim
                          has lapsed or is gone, unless --force)

INSTANCE is an EC2 instance id (i-...), a container-instance ARN, or a container-instance id.
The prefix defaults to br-update. Each control prints what it changed and the equivalent aws command.";

/// Exit code for a refused command line (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;
/// The largest limit accepted: the same bound as the agent's `cluster.max-concurrent`.
const MAX_LIMIT: u32 = 1000;
/// How often `--watch` refreshes by default.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What `fleet status` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusArgs {
    /// JSON instead of the table.
    pub json: bool,
    /// Refresh until Ctrl-C, every this often.
    pub watch: Option<Duration>,
    /// Print the ECS calls of each read.
    pub verbose: bool,
    /// Forecast the rollout; `Some(path)`: assuming the agents run the config at `path`.
    pub forecast: Option<Option<std::path::PathBuf>>,
}

/// A `fleet` subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetCommand {
    /// `fleet status`.
    Status(StatusArgs),
    /// A one-word control.
    Control(Control),
}

/// A parsed `fleet` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The cluster (name or ARN).
    pub cluster: String,
    /// The region, when given (else the default chain's).
    pub region: Option<String>,
    /// The attribute and tag prefix.
    pub prefix: String,
    /// What to do.
    pub command: FleetCommand,
}

/// Why the command line was not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// `--help` was asked for.
    #[error("help")]
    Help,
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Parses the arguments after `fleet`.
pub fn parse(args: &[String]) -> Result<Invocation, CliError> {
    let (mut cluster, mut region, mut prefix) = (None, None, "br-update".to_owned());
    let (mut json, mut watch, mut interval, mut verbose, mut force) = (false, false, None, false, false);
    let (mut forecast, mut config) = (false, None);
    let mut words: Vec<String> = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| usage(format!("{flag} needs a value")));
        match a.as_str() {
            "--cluster" => cluster = Some(value("--cluster")?),
            "--region" => region = Some(value("--region")?),
            "--prefix" => prefix = value("--prefix")?,
            "--interval" => {
                let v = value("--interval")?;
                let secs = v.parse::<u64>().ok().filter(|s| (1..=3600).contains(s));
                interval = Some(secs.ok_or_else(|| usage(format!("--interval takes whole seconds from 1 to 3600, not `{v}`")))?);
            }
            "--json" => json = true,
            "--forecast" => forecast = true,
            "--config" => config = Some(std::path::PathBuf::from(value("--config")?)),
            "--watch" => watch = true,
            "--verbose" | "-v" => verbose = true,
            "--force" => force = true,
            "-h" | "--help" => return Err(CliError::Help),
            flag if flag.starts_with("--") => return Err(usage(format!("unknown option `{flag}`"))),
            word => words.push(word.to_owned()),
        }
    }
    let Some((command, rest)) = words.split_first() else { return Err(usage("which fleet command?")) };
    let cluster = cluster.filter(|c| !c.is_empty()).ok_or_else(|| usage("--cluster NAME is required"))?;
    if prefix.is_empty() || prefix.len() > 100 || !crate::cluster::valid_attribute_name(&prefix) {
        return Err(usage(format!("--prefix `{prefix}`: 1-100 of letters, digits, `-`, `_`, `/`, `.`")));
    }
    let status_only = json || watch || interval.is_some() || verbose || forecast;
    if command != "status" && status_only {
        return Err(usage("--json, --watch, --interval, --verbose and --forecast go with `fleet status`"));
    }
    if config.is_some() && !forecast {
        return Err(usage("--config goes with `fleet status --forecast`"));
    }
    if command != "release" && force {
        return Err(usage("--force goes with `fleet release`"));
    }
    if interval.is_some() && !watch {
        return Err(usage("--interval goes with --watch"));
    }
    let one = |what: &str| -> Result<String, CliError> {
        match rest {
            [x] if !x.is_empty() => Ok(x.clone()),
            [] => Err(usage(format!("`fleet {command}` needs {what}"))),
            _ => Err(usage(format!("`fleet {command}` takes one argument, {what}"))),
        }
    };
    let none = || if rest.is_empty() { Ok(()) } else { Err(usage(format!("`fleet {command}` takes no argument"))) };
    let instance = "an instance (i-..., a container-instance ARN or id)";
    let command = match command.as_str() {
        "status" => {
            none()?;
            let watch = watch.then(|| interval.map_or(DEFAULT_INTERVAL, Duration::from_secs));
            FleetCommand::Status(StatusArgs { json, watch, verbose, forecast: forecast.then_some(config) })
        }
        "pause" => none().map(|_| FleetCommand::Control(Control::Pause))?,
        "resume" => none().map(|_| FleetCommand::Control(Control::Resume))?,
        "limit" => {
            let n = one("a limit N")?;
            match n.parse::<u32>() {
                Ok(v) if (1..=MAX_LIMIT).contains(&v) => FleetCommand::Control(Control::Limit(v)),
                _ => return Err(usage(format!("limit must be a whole number from 1 to {MAX_LIMIT}, not `{n}`"))),
            }
        }
        "opt-out" => FleetCommand::Control(Control::OptOut(one(instance)?)),
        "opt-in" => FleetCommand::Control(Control::OptIn(one(instance)?)),
        "update-now" => FleetCommand::Control(Control::UpdateNow(one(instance)?)),
        "release" => FleetCommand::Control(Control::Release { instance: one(instance)?, force }),
        "resume-version" => FleetCommand::Control(Control::ResumeVersion(one("a VERSION")?)),
        other => return Err(usage(format!("unknown fleet command `{other}`"))),
    };
    Ok(Invocation { cluster, region, prefix, command })
}

/// Runs `br-update-agent fleet <args>` and says how it ended.
pub fn main(args: &[String]) -> ExitCode {
    let inv = match parse(args) {
        Ok(i) => i,
        Err(CliError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(CliError::Usage(e)) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(inv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the forecast assumes: the config at `path` (the one the fleet's agents run), else the
/// agent's defaults.
fn assumptions(path: Option<&std::path::Path>) -> Result<Assumptions, super::FleetError> {
    let cfg = match path {
        Some(p) if !p.is_file() => {
            return Err(super::FleetError::Config(format!("{}: no such file", p.display())));
        }
        Some(p) => Config::load(p).map_err(|e| super::FleetError::Config(e.to_string()))?,
        None => Config::default(),
    };
    Ok(Assumptions::from_config(&cfg))
}

async fn run(inv: Invocation) -> Result<(), super::FleetError> {
    let api = EcsFleet::new(operator_client(inv.region.clone()).await)?;
    let settings = ViewSettings::defaults(&inv.prefix);
    match inv.command {
        FleetCommand::Status(s) => {
            let terminal = std::io::stdout().is_terminal();
            let out = Output {
                json: s.json,
                terminal,
                colour: terminal && std::env::var_os("NO_COLOR").is_none(),
                verbose: s.verbose,
                forecast: s.forecast.as_ref().map(|p| assumptions(p.as_deref())).transpose()?,
            };
            match s.watch {
                None => status_once(&api, &inv.cluster, &settings, &out).await,
                Some(every) => {
                    // Ctrl-C ends a watch at a refresh boundary, as a normal end.
                    let (trigger, stop) = Shutdown::new();
                    let signals = shutdown::install().map_err(super::FleetError::Output)?;
                    tokio::spawn(shutdown::forward(signals, trigger));
                    watch(&api, &inv.cluster, &settings, &out, every, &stop).await
                }
            }
        }
        FleetCommand::Control(c) => {
            let change = apply(&api, &inv.cluster, &settings, &c, SystemClock.now()).await?;
            print!("{}", change.report());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Invocation, CliError> {
        parse(&line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    fn refused(line: &str) -> String {
        match p(line) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{line:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn status_takes_its_options() {
        let inv = p("status --cluster prod --region eu-west-1 --json --watch --interval 2 -v").expect("parses");
        assert_eq!(inv.cluster, "prod");
        assert_eq!(inv.region.as_deref(), Some("eu-west-1"));
        assert_eq!(inv.prefix, "br-update");
        assert_eq!(inv.command, FleetCommand::Status(StatusArgs { json: true, watch: Some(Duration::from_secs(2)), verbose: true, forecast: None }));
        let plain = p("status --cluster prod").expect("parses");
        assert_eq!(plain.command, FleetCommand::Status(StatusArgs { json: false, watch: None, verbose: false, forecast: None }));
        let f = p("status --forecast --config fleet.toml --cluster prod").expect("parses");
        assert_eq!(f.command, FleetCommand::Status(StatusArgs { json: false, watch: None, verbose: false, forecast: Some(Some("fleet.toml".into())) }));
        let watch = p("--cluster prod status --watch").expect("options before the command");
        assert_eq!(watch.command, FleetCommand::Status(StatusArgs { json: false, watch: Some(DEFAULT_INTERVAL), verbose: false, forecast: None }));
    }

    #[test]
    fn controls_take_their_argument() {
        let c = |line: &str| p(line).map(|i| i.command).expect(line);
        assert_eq!(c("pause --cluster c"), FleetCommand::Control(Control::Pause));
        assert_eq!(c("resume --cluster c"), FleetCommand::Control(Control::Resume));
        assert_eq!(c("limit 3 --cluster c"), FleetCommand::Control(Control::Limit(3)));
        assert_eq!(c("opt-out i-1 --cluster c"), FleetCommand::Control(Control::OptOut("i-1".into())));
        assert_eq!(c("opt-in i-1 --cluster c"), FleetCommand::Control(Control::OptIn("i-1".into())));
        assert_eq!(c("update-now abc --cluster c"), FleetCommand::Control(Control::UpdateNow("abc".into())));
        assert_eq!(c("release i-1 --force --cluster c"), FleetCommand::Control(Control::Release { instance: "i-1".into(), force: true }));
        assert_eq!(p("pause --cluster c --prefix acme.upd").map(|i| i.prefix), Ok("acme.upd".into()));
    }

    #[test]
    fn wrong_command_lines_are_refused_with_a_reason() {
        assert!(refused("limit 0 --cluster c").contains("not `0`"));
        assert!(refused("limit many --cluster c").contains("not `many`"));
        assert!(refused("limit 1001 --cluster c").contains("1 to 1000"));
        assert!(refused("limit -1 --cluster c").contains("whole number"));
        assert!(refused("limit --cluster c").contains("needs a limit"));
        assert!(refused("status").contains("--cluster NAME is required"));
        assert!(refused("opt-out --cluster c").contains("needs an instance"));
        assert!(refused("opt-out a b --cluster c").contains("one argument"));
        assert!(refused("pause extra --cluster c").contains("takes no argument"));
        assert!(refused("pause --json --cluster c").contains("go with `fleet status`"));
        assert!(refused("opt-out i-1 --force --cluster c").contains("--force goes with"));
        assert!(refused("status --interval 2 --cluster c").contains("goes with --watch"));
        assert!(refused("status --watch --interval 0 --cluster c").contains("1 to 3600"));
        assert!(refused("status --cluster c --prefix a=b").contains("--prefix"));
        assert!(refused("pause --forecast --cluster c").contains("go with `fleet status`"));
        assert!(refused("status --config a.toml --cluster c").contains("--config goes with"));
        assert!(refused("frobnicate --cluster c").contains("unknown fleet command"));
        assert!(refused("status --cluster c --bogus").contains("unknown option"));
        assert!(refused("--cluster c").contains("which fleet command"));
        assert_eq!(p("--help"), Err(CliError::Help));
    }
}
