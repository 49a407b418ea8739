//! The agent's configuration: TOML with kebab-case keys, from the host container's user-data.
//!
//! Two levels, so that every problem is reported before the agent touches anything: [`RawConfig`]
//! is what serde reads (unknown keys and wrong types fail here, with the line of the key), and
//! [`Config::from_raw`] checks values (zero limits, negative or malformed durations, ...) and then
//! [`Config::validate`] the rules the lease's safety argument and the agent's pacing rely on
//! (floors, the renewal margin, the instance ARN); both name the key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use chrono_tz::Tz;

use crate::backoff::Backoff;
use crate::window::{parse_day, parse_time, Window, Windows};
use crate::os_api::commands::{CommandBudget, CommandBudgets};

/// Where a host container finds its user-data.
pub const DEFAULT_CONFIG_PATH: &str = "/.bottlerocket/host-containers/current/user-data";

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which shows the key's line.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("invalid config: `{key}`: {reason}")]
    Value {
        /// The full key, e.g. `cluster.max-concurrent`.
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The longest duration any key accepts. No setting needs more than a year, and with this bound
/// no sum or multiple of config durations, nor any instant they are added to, can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// `cluster.settle-time` floor: it must cover ECS's read staleness, about a second.
pub const MIN_SETTLE_TIME: Duration = Duration::from_secs(1);
/// `check-interval` floor: each round asks the local API and ECS; shorter is a hot loop.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// `maintenance.update-now-poll` floor: each look is a refresh, and an ECS call from every waiting
/// host with a version to install.
pub const MIN_UPDATE_NOW_POLL: Duration = Duration::from_secs(10);
/// `cluster.wait-poll-max` floor: each look while the cluster is full lists every claim.
pub const MIN_WAIT_POLL_MAX: Duration = Duration::from_secs(1);
/// `cluster.drain-poll-interval` floor: each check lists the instance's tasks.
pub const MIN_DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// `commands.poll-interval` floor: each poll is a request on the local API socket.
pub const MIN_COMMAND_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// `cluster.ecs-call-spacing` ceiling: the spacing delays every call, renewals included.
pub const MAX_ECS_CALL_SPACING: Duration = Duration::from_secs(2);
/// `cluster.reboot-allowance` floor: no host shuts down, boots and restarts the agent faster.
pub const MIN_REBOOT_ALLOWANCE: Duration = Duration::from_secs(60);

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value { key: key.to_string(), reason: reason.into() }
}

/// What to do when the instance runs tasks that ECS will not move (RunTask, scheduled tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandalonePolicy {
    /// Drain anyway and wait for them to end, up to `standalone-task-timeout`.
    Wait,
    /// Do not drain this round: release the lease and come back later.
    Skip,
}

/// What a host whose new version failed its health gate or its bake does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Keep the instance out of service and the slot held, for a person to look at (the gate is
    /// looked at again now and then; if it passes, the update finishes).
    Hold,
    /// Record the failure and return the host to service on the new version.
    Return,
    /// Record the failure, take the host back to the version it came from through Bottlerocket's
    /// own updater (a second reboot, still holding the slot), then return it to service there;
    /// if the rollback cannot be done, hold.
    Rollback,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (CloudWatch).
    Json,
}

/// The file as written: every key optional, durations as text ("90s", "15m", "2h", "1d").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    dry_run: Option<bool>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    api_socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    check_interval: Option<String>,
    check_jitter: Option<String>,
    seed: Option<u32>,
    quarantine: Option<String>,
    min_release_age: Option<String>,
    request_timeout: Option<String>,
    reboot_wait: Option<String>,
    #[serde(default)]
    commands: RawCommands,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    maintenance: RawMaintenance,
    #[serde(default)]
    health: crate::health::RawHealth,
    #[serde(default)]
    notify: crate::notify::RawNotify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMaintenance {
    time_zone: Option<String>,
    expected_duration: Option<String>,
    update_now_poll: Option<String>,
    #[serde(default)]
    windows: Vec<RawWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWindow {
    days: Vec<String>,
    start: String,
    length: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCommands {
    poll_interval: Option<String>,
    busy_backoff_min: Option<String>,
    busy_backoff_max: Option<String>,
    refresh_timeout: Option<String>,
    prepare_timeout: Option<String>,
    activate_timeout: Option<String>,
    deactivate_timeout: Option<String>,
    reboot_timeout: Option<String>,
    status_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCluster {
    enabled: Option<bool>,
    cluster: Option<String>,
    instance_arn: Option<String>,
    region: Option<String>,
    introspection_url: Option<String>,
    discovery_timeout: Option<String>,
    attribute_prefix: Option<String>,
    max_concurrent: Option<i64>,
    lease_ttl: Option<String>,
    settle_time: Option<String>,
    clock_skew: Option<String>,
    lease_backoff_min: Option<String>,
    lease_backoff_max: Option<String>,
    wait_poll_max: Option<String>,
    drain_timeout: Option<String>,
    drain_poll_interval: Option<String>,
    standalone_tasks: Option<StandalonePolicy>,
    standalone_task_timeout: Option<String>,
    reboot_allowance: Option<String>,
    agent_connect_timeout: Option<String>,
    ecs_retry_budget: Option<String>,
    ecs_backoff_min: Option<String>,
    ecs_backoff_max: Option<String>,
    ecs_call_spacing: Option<String>,
    count_foreign_draining: Option<bool>,
    halt_after_failures: Option<u32>,
    canary_hosts: Option<u32>,
}

/// The validated configuration the agent runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Decide and log every step, change nothing.
    pub dry_run: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// tracing filter directive, e.g. `info` or `agent=debug`.
    pub log_level: String,
    /// The Bottlerocket API socket.
    pub api_socket: PathBuf,
    /// Where the in-flight record lives (persistent across reboots).
    pub state_dir: PathBuf,
    /// How often each host looks for updates.
    pub check_interval: Duration,
    /// Random extra delay on top of the seed's slot.
    pub check_jitter: Duration,
    /// The wave seed; read from `settings.updates.seed` unless set here.
    pub seed: Option<u32>,
    /// How long a version that failed to boot is not tried again.
    pub quarantine: Duration,
    /// A version is taken only once this host has known of it for this long.
    pub min_release_age: Duration,
    /// Per-request timeout on the API socket.
    pub request_timeout: Duration,
    /// How long to wait for the host to go down after the reboot was accepted.
    pub reboot_wait: Duration,
    /// Time allowances of the update commands.
    pub commands: CommandBudgets,
    /// Cluster coordination.
    pub cluster: ClusterConfig,
    /// When disruption is allowed.
    pub maintenance: Maintenance,
    /// The health gate after boot, the bake, and what a failed host does.
    pub health: crate::health::HealthConfig,
    /// Webhook notifications.
    pub notify: crate::notify::NotifyConfig,
}

/// Maintenance windows and how an update must fit in them.
#[derive(Clone, Debug, PartialEq)]
pub struct Maintenance {
    /// The windows (none: any time).
    pub windows: Windows,
    /// How long an update takes from lease to back in service; it must fit before the window closes.
    pub expected_duration: Duration,
    /// How often a waiting host looks for the update-now attribute (when it has a version to install).
    pub update_now_poll: Duration,
}

/// Cluster coordination settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Coordinate through ECS; false runs the host on its own (no lease, no drain).
    pub enabled: bool,
    /// The cluster, when not discovered.
    pub cluster: Option<String>,
    /// This host's container instance ARN, when not discovered.
    pub instance_arn: Option<String>,
    /// The AWS region, when not taken from the ARN.
    pub region: Option<String>,
    /// The ECS agent's introspection metadata URL.
    pub introspection_url: String,
    /// How long to wait for the ECS agent to answer (`None`: forever).
    pub discovery_timeout: Option<Duration>,
    /// Prefix of the attribute names the agent owns (`<prefix>.lease`, ...).
    pub attribute_prefix: String,
    /// At most this many hosts update at once (a cluster tag may override it).
    pub max_concurrent: u32,
    /// How long a claim lives without renewal.
    pub lease_ttl: Duration,
    /// Wait between writing a claim and counting the others (at least the store's staleness).
    pub settle_time: Duration,
    /// How far apart hosts' clocks may be.
    pub clock_skew: Duration,
    /// Back-off after losing a contended slot.
    pub lease_backoff: Backoff,
    /// The longest a waiting host sleeps between looks at the claims.
    pub wait_poll_max: Duration,
    /// How long a drain may take before the host gives up and re-activates.
    pub drain_timeout: Duration,
    /// How often the drain is checked.
    pub drain_poll_interval: Duration,
    /// What to do about standalone tasks.
    pub standalone_tasks: StandalonePolicy,
    /// How long to wait for standalone tasks under the `wait` policy.
    pub standalone_task_timeout: Duration,
    /// Claim lifetime written just before the reboot: covers shutdown, boot and the agent's start.
    pub reboot_allowance: Duration,
    /// How long to wait for the ECS agent to reconnect after boot.
    pub agent_connect_timeout: Duration,
    /// How long one ECS call is retried when throttled or unavailable.
    pub ecs_retry_budget: Duration,
    /// Back-off between ECS retries.
    pub ecs_backoff: Backoff,
    /// The least time between the starts of two of this agent's ECS calls (zero: not spaced).
    pub ecs_call_spacing: Duration,
    /// Whether an instance DRAINING without this agent's marker (an operator, ECS managed
    /// draining) takes one of the N slots.
    pub count_foreign_draining: bool,
    /// Stop updating to a version once this many instances of the cluster failed on it (0: never).
    pub halt_after_failures: u32,
    /// For a new version, one host at a time until this many hosts updated to it (0: no canary).
    pub canary_hosts: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config::from_raw(RawConfig::default()).unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl Config {
    /// Reads `path`; a missing file means every default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })?;
        Config::from_raw(raw)
    }

    /// Checks every value and fills in defaults.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let c = &raw.commands;
        let busy = Backoff::new(
            dur("commands.busy-backoff-min", &c.busy_backoff_min, "2s")?,
            dur("commands.busy-backoff-max", &c.busy_backoff_max, "30s")?,
        );
        check_backoff("commands.busy-backoff", busy)?;
        let poll = positive("commands.poll-interval", &c.poll_interval, "2s")?;
        let budget = |key: &str, v: &Option<String>, d: &str| -> Result<CommandBudget, ConfigError> {
            Ok(CommandBudget { total: positive(key, v, d)?, poll_interval: poll, busy_backoff: busy })
        };
        let commands = CommandBudgets {
            refresh: budget("commands.refresh-timeout", &c.refresh_timeout, "2m")?,
            prepare: budget("commands.prepare-timeout", &c.prepare_timeout, "30m")?,
            activate: budget("commands.activate-timeout", &c.activate_timeout, "2m")?,
            deactivate: budget("commands.deactivate-timeout", &c.deactivate_timeout, "2m")?,
            reboot: budget("commands.reboot-timeout", &c.reboot_timeout, "2m")?,
            status: budget("commands.status-timeout", &c.status_timeout, "2m")?,
        };
        let log_level = raw.log_level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(bad("log-level", format!("`{log_level}` is not a log filter (try `info` or `debug`)")));
        }
        let config = Config {
            dry_run: raw.dry_run.unwrap_or(false),
            log_format: raw.log_format.unwrap_or(LogFormat::Text),
            log_level,
            api_socket: raw.api_socket.unwrap_or_else(|| "/run/api.sock".into()),
            state_dir: raw.state_dir.unwrap_or_else(|| "/.bottlerocket/host-containers/current".into()),
            check_interval: positive("check-interval", &raw.check_interval, "6h")?,
            check_jitter: dur("check-jitter", &raw.check_jitter, "5m")?,
            seed: raw.seed,
            quarantine: dur("quarantine", &raw.quarantine, "7d")?,
            min_release_age: dur("min-release-age", &raw.min_release_age, "0s")?,
            request_timeout: positive("request-timeout", &raw.request_timeout, "30s")?,
            reboot_wait: positive("reboot-wait", &raw.reboot_wait, "10m")?,
            commands,
            cluster: ClusterConfig::from_raw(raw.cluster)?,
            maintenance: Maintenance::from_raw(raw.maintenance)?,
            health: crate::health::HealthConfig::from_raw(raw.health, dur, |k, r| bad(k, r))?,
            notify: crate::notify::NotifyConfig::from_raw(raw.notify, dur, bad)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules that relate values or bound them from below (see the README's "Rules a
    /// config must follow"); the first rule broken is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("check-interval", self.check_interval, MIN_CHECK_INTERVAL, "each round asks the local API and ECS; less is a hot loop")?;
        let c = &self.commands;
        for budget in [&c.refresh, &c.prepare, &c.activate, &c.deactivate, &c.reboot, &c.status] {
            at_least("commands.poll-interval", budget.poll_interval, MIN_COMMAND_POLL_INTERVAL, "each poll is a request on the API socket")?;
        }
        at_least(
            "maintenance.update-now-poll",
            self.maintenance.update_now_poll,
            MIN_UPDATE_NOW_POLL,
            "each look is an ECS call from every waiting host",
        )?;
        self.cluster.validate()
    }

    /// The effective config as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(&Printable::from(self)).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }

    /// The in-flight record's path.
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("update-agent-state.json")
    }
}

impl ClusterConfig {
    fn from_raw(r: RawCluster) -> Result<ClusterConfig, ConfigError> {
        let max = r.max_concurrent.unwrap_or(1);
        if !(1..=1000).contains(&max) {
            return Err(bad("cluster.max-concurrent", format!("{max} is not between 1 and 1000")));
        }
        let prefix = r.attribute_prefix.unwrap_or_else(|| "br-update".into());
        if prefix.is_empty() || prefix.len() > 100 || !crate::cluster::valid_attribute_name(&prefix) {
            return Err(bad("cluster.attribute-prefix", "1-100 of letters, digits, `-`, `_`, `/`, `.`"));
        }
        let lease_backoff = Backoff::new(
            positive("cluster.lease-backoff-min", &r.lease_backoff_min, "30s")?,
            positive("cluster.lease-backoff-max", &r.lease_backoff_max, "10m")?,
        );
        check_backoff("cluster.lease-backoff", lease_backoff)?;
        let ecs_backoff = Backoff::new(
            positive("cluster.ecs-backoff-min", &r.ecs_backoff_min, "1s")?,
            positive("cluster.ecs-backoff-max", &r.ecs_backoff_max, "30s")?,
        );
        check_backoff("cluster.ecs-backoff", ecs_backoff)?;
        if let Some(url) = &r.introspection_url {
            if !url.starts_with("http://") {
                return Err(bad("cluster.introspection-url", "must be an http:// URL"));
            }
        }
        let discovery_timeout = match &r.discovery_timeout {
            None => None,
            Some(_) => Some(positive("cluster.discovery-timeout", &r.discovery_timeout, "0s")?),
        };
        Ok(ClusterConfig {
            enabled: r.enabled.unwrap_or(true),
            cluster: r.cluster,
            instance_arn: r.instance_arn,
            region: r.region,
            introspection_url: r
                .introspection_url
                .unwrap_or_else(|| "http://127.0.0.1:51678/v1/metadata".into()),
            discovery_timeout,
            attribute_prefix: prefix,
            max_concurrent: max as u32,
            lease_ttl: positive("cluster.lease-ttl", &r.lease_ttl, "10m")?,
            settle_time: dur("cluster.settle-time", &r.settle_time, "10s")?,
            clock_skew: dur("cluster.clock-skew", &r.clock_skew, "30s")?,
            lease_backoff,
            wait_poll_max: positive("cluster.wait-poll-max", &r.wait_poll_max, "1d")?,
            drain_timeout: positive("cluster.drain-timeout", &r.drain_timeout, "30m")?,
            drain_poll_interval: positive("cluster.drain-poll-interval", &r.drain_poll_interval, "15s")?,
            standalone_tasks: r.standalone_tasks.unwrap_or(StandalonePolicy::Skip),
            standalone_task_timeout: positive("cluster.standalone-task-timeout", &r.standalone_task_timeout, "1h")?,
            reboot_allowance: positive("cluster.reboot-allowance", &r.reboot_allowance, "20m")?,
            agent_connect_timeout: positive("cluster.agent-connect-timeout", &r.agent_connect_timeout, "10m")?,
            ecs_retry_budget: positive("cluster.ecs-retry-budget", &r.ecs_retry_budget, "2m")?,
            ecs_backoff,
            ecs_call_spacing: dur("cluster.ecs-call-spacing", &r.ecs_call_spacing, "1s")?,
            count_foreign_draining: r.count_foreign_draining.unwrap_or(true),
            halt_after_failures: r.halt_after_failures.unwrap_or(1),
            canary_hosts: r.canary_hosts.unwrap_or(1),
        })
    }

    /// The cluster's rules: identity, floors, and the timings the lease's safety argument needs.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_identity()?;
        at_least("cluster.settle-time", self.settle_time, MIN_SETTLE_TIME, "it must be at least ECS's read staleness")?;
        at_least("cluster.wait-poll-max", self.wait_poll_max, MIN_WAIT_POLL_MAX, "each look lists every claim in the cluster")?;
        at_least(
            "cluster.drain-poll-interval",
            self.drain_poll_interval,
            MIN_DRAIN_POLL_INTERVAL,
            "each check lists the instance's tasks",
        )?;
        if self.ecs_call_spacing > MAX_ECS_CALL_SPACING {
            return Err(bad(
                "cluster.ecs-call-spacing",
                format!("must be at most {}: every call waits for it, renewals included", format_duration(MAX_ECS_CALL_SPACING)),
            ));
        }
        if self.settle_time >= self.lease_ttl {
            return Err(bad("cluster.settle-time", "must be shorter than cluster.lease-ttl"));
        }
        // A holder renews while it drains; a TTL shorter than two polls could lapse between renewals.
        if self.lease_ttl < self.drain_poll_interval.saturating_mul(2) {
            return Err(bad("cluster.lease-ttl", "must be at least twice cluster.drain-poll-interval"));
        }
        self.validate_renewal_margin()?;
        let f = format_duration;
        if self.reboot_allowance < MIN_REBOOT_ALLOWANCE.max(self.lease_ttl) {
            return Err(bad(
                "cluster.reboot-allowance",
                format!(
                    "{} is too short: the rule is cluster.reboot-allowance >= {} and >= cluster.lease-ttl ({}); it is the \
                     claim lifetime written before the reboot and must cover shutdown, boot, the agent's restart and its \
                     first renewal",
                    f(self.reboot_allowance),
                    f(MIN_REBOOT_ALLOWANCE),
                    f(self.lease_ttl)
                ),
            ));
        }
        Ok(())
    }

    /// The renewal margin: a holder renews once half of its claim's life is left, noticing it up to
    /// one drain poll late; the write may then be retried for the whole retry budget and must
    /// still land before the claim's expiry less the settle time and the clock skew, or other
    /// hosts may already have counted the claim as lapsed.
    fn validate_renewal_margin(&self) -> Result<(), ConfigError> {
        let parts = [self.ecs_retry_budget, self.settle_time, self.clock_skew, self.drain_poll_interval];
        // A renewal may also wait its turn behind the agent's other calls (see cluster::paced).
        let turn = self.ecs_call_spacing.saturating_mul(crate::cluster::paced::MAX_WAIT_SPACINGS);
        let sum = parts.iter().fold(turn, |acc, d| acc.saturating_add(*d));
        let half = self.lease_ttl / 2;
        if sum <= half {
            return Ok(());
        }
        let f = format_duration;
        Err(bad(
            "cluster.ecs-retry-budget",
            format!(
                "the renewal margin is broken: cluster.ecs-retry-budget + cluster.settle-time + cluster.clock-skew + \
                 cluster.drain-poll-interval + 2 x cluster.ecs-call-spacing = {} + {} + {} + {} + {} = {} must be <= \
                 cluster.lease-ttl / 2 = {}; a renewal retried for the whole budget could land after other hosts counted \
                 the claim as lapsed (shorten cluster.ecs-retry-budget or lengthen cluster.lease-ttl)",
                f(parts[0]),
                f(parts[1]),
                f(parts[2]),
                f(parts[3]),
                f(turn),
                f(sum),
                f(half)
            ),
        ))
    }

    /// `cluster.cluster` and `cluster.instance-arn` skip discovery only together (one alone would
    /// be ignored), and the ARN must be exactly the container instance's, or this host would not
    /// recognise its own claim and would count itself.
    fn validate_identity(&self) -> Result<(), ConfigError> {
        let (cluster, arn) = match (&self.cluster, &self.instance_arn) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return Err(bad(
                    "cluster.cluster",
                    "set cluster.instance-arn too, or neither: the two skip discovery only together",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "cluster.instance-arn",
                    "set cluster.cluster too, or neither: the two skip discovery only together",
                ))
            }
            (Some(c), Some(a)) => (c, a),
        };
        if cluster.trim().is_empty() {
            return Err(bad("cluster.cluster", "must not be empty"));
        }
        let in_arn = instance_arn_cluster(arn).map_err(|why| {
            bad(
                "cluster.instance-arn",
                format!(
                    "`{arn}` is not an ECS container-instance ARN ({why}); the rule is \
                     arn:<partition>:ecs:<region>:<12-digit account>:container-instance/[<cluster>/]<id>"
                ),
            )
        })?;
        let name = crate::discovery::cluster_name(cluster);
        match in_arn {
            Some(c) if c != name => Err(bad(
                "cluster.cluster",
                format!("`{cluster}` is not the cluster `{c}` that cluster.instance-arn names"),
            )),
            _ => Ok(()),
        }
    }
}

/// The cluster part of a container-instance ARN (`None` for the old form without one), or why
/// `arn` is not one: `arn:<partition>:ecs:<region>:<12-digit account>:container-instance/[<cluster>/]<id>`.
fn instance_arn_cluster(arn: &str) -> Result<Option<&str>, String> {
    let fields: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = fields.as_slice() else {
        return Err(format!("expected 6 fields separated by `:`, found {}", fields.len()));
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if *prefix != "arn" {
        return Err("does not start with `arn:`".into());
    }
    if !word(partition) {
        return Err(format!("bad partition `{partition}`"));
    }
    if *service != "ecs" {
        return Err(format!("service is `{service}`, not `ecs`"));
    }
    if !word(region) {
        return Err(format!("bad region `{region}`"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("account `{account}` is not 12 digits"));
    }
    let Some(path) = resource.strip_prefix("container-instance/") else {
        return Err(format!("resource `{resource}` is not `container-instance/...`"));
    };
    let name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [id] if name(id) => Ok(None),
        [cluster, id] if name(cluster) && name(id) => Ok(Some(cluster)),
        _ => Err(format!("`container-instance/{path}` is not `container-instance/<id>` or `container-instance/<cluster>/<id>`")),
    }
}

impl Maintenance {
    fn from_raw(r: RawMaintenance) -> Result<Maintenance, ConfigError> {
        let zone_name = r.time_zone.unwrap_or_else(|| "UTC".into());
        let zone: Tz = zone_name
            .parse()
            .map_err(|_| bad("maintenance.time-zone", format!("`{zone_name}` is not an IANA time zone (e.g. `Europe/Berlin`)")))?;
        let mut windows = vec![];
        for (i, w) in r.windows.into_iter().enumerate() {
            let key = |k: &str| format!("maintenance.windows[{i}].{k}");
            if w.days.is_empty() {
                return Err(bad(&key("days"), "name at least one day"));
            }
            let days = w
                .days
                .iter()
                .map(|d| parse_day(d).ok_or_else(|| bad(&key("days"), format!("`{d}` is not a day (mon..sun)"))))
                .collect::<Result<Vec<_>, _>>()?;
            let start = parse_time(&w.start).ok_or_else(|| bad(&key("start"), format!("`{}` is not HH:MM", w.start)))?;
            let length = parse_duration(&w.length).map_err(|e| bad(&key("length"), e))?;
            if length.is_zero() || length > Duration::from_secs(7 * 86_400) {
                return Err(bad(&key("length"), "must be longer than zero and at most 7d"));
            }
            windows.push(Window { days, start, length });
        }
        Ok(Maintenance {
            windows: Windows { zone, windows },
            expected_duration: positive("maintenance.expected-duration", &r.expected_duration, "45m")?,
            update_now_poll: positive("maintenance.update-now-poll", &r.update_now_poll, "1h")?,
        })
    }
}

/// Refuses `value` below `floor`, naming the key and the rule with its reason.
fn at_least(key: &str, value: Duration, floor: Duration, why: &str) -> Result<(), ConfigError> {
    if value >= floor {
        return Ok(());
    }
    let f = format_duration;
    Err(bad(key, format!("{} is too short: the rule is {key} >= {} ({why})", f(value), f(floor))))
}

fn check_backoff(key: &str, b: Backoff) -> Result<(), ConfigError> {
    if b.base > b.max {
        return Err(bad(&format!("{key}-min"), format!("must not exceed {key}-max")));
    }
    Ok(())
}

fn dur(key: &str, value: &Option<String>, default: &str) -> Result<Duration, ConfigError> {
    parse_duration(value.as_deref().unwrap_or(default)).map_err(|reason| bad(key, reason))
}

fn positive(key: &str, value: &Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let d = dur(key, value, default)?;
    if d.is_zero() {
        return Err(bad(key, "must be longer than zero"));
    }
    Ok(d)
}

/// Parses "500ms", "90s", "15m", "2h", "7d" and sums like "1h30m", up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    if t.is_empty() {
        return Err("empty duration (write e.g. `90s`, `15m`, `2h`)".into());
    }
    let too_long = || format!("`{text}` is longer than {}, the longest duration the agent accepts", format_duration(MAX_DURATION));
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration (write e.g. `90s`, `15m`, `2h`)"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "" => return Err(format!("`{text}` lacks a unit (ms, s, m, h, d)")),
            u => return Err(format!("`{text}`: unknown unit `{u}` (ms, s, m, h, d)")),
        };
        total = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .and_then(|d| total.checked_add(d))
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way the config writes them.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The effective config in the file's own shape, so `check-config` output can be pasted back.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Printable {
    dry_run: bool,
    log_format: LogFormat,
    log_level: String,
    api_socket: String,
    state_dir: String,
    check_interval: String,
    check_jitter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u32>,
    quarantine: String,
    min_release_age: String,
    request_timeout: String,
    reboot_wait: String,
    commands: toml::Table,
    cluster: toml::Table,
    maintenance: toml::Table,
    health: toml::Table,
    /// The webhook shows as scheme and host only: the printed config may be shared.
    notify: toml::Table,
}

impl From<&Config> for Printable {
    fn from(c: &Config) -> Printable {
        let f = format_duration;
        let mut commands = toml::Table::new();
        let cm = &c.commands;
        for (k, v) in [
            ("poll-interval", cm.refresh.poll_interval),
            ("busy-backoff-min", cm.refresh.busy_backoff.base),
            ("busy-backoff-max", cm.refresh.busy_backoff.max),
            ("refresh-timeout", cm.refresh.total),
            ("prepare-timeout", cm.prepare.total),
            ("activate-timeout", cm.activate.total),
            ("deactivate-timeout", cm.deactivate.total),
            ("reboot-timeout", cm.reboot.total),
            ("status-timeout", cm.status.total),
        ] {
            commands.insert(k.into(), f(v).into());
        }
        let k = &c.cluster;
        let mut cluster = toml::Table::new();
        cluster.insert("enabled".into(), k.enabled.into());
        for (key, v) in [("cluster", &k.cluster), ("instance-arn", &k.instance_arn), ("region", &k.region)] {
            if let Some(v) = v {
                cluster.insert(key.into(), v.clone().into());
            }
        }
        cluster.insert("introspection-url".into(), k.introspection_url.clone().into());
        if let Some(d) = k.discovery_timeout {
            cluster.insert("discovery-timeout".into(), f(d).into());
        }
        cluster.insert("attribute-prefix".into(), k.attribute_prefix.clone().into());
        cluster.insert("max-concurrent".into(), i64::from(k.max_concurrent).into());
        for (key, v) in [
            ("lease-ttl", k.lease_ttl),
            ("settle-time", k.settle_time),
            ("clock-skew", k.clock_skew),
            ("lease-backoff-min", k.lease_backoff.base),
            ("lease-backoff-max", k.lease_backoff.max),
            ("wait-poll-max", k.wait_poll_max),
            ("drain-timeout", k.drain_timeout),
            ("drain-poll-interval", k.drain_poll_interval),
            ("standalone-task-timeout", k.standalone_task_timeout),
            ("reboot-allowance", k.reboot_allowance),
            ("agent-connect-timeout", k.agent_connect_timeout),
            ("ecs-retry-budget", k.ecs_retry_budget),
            ("ecs-backoff-min", k.ecs_backoff.base),
            ("ecs-backoff-max", k.ecs_backoff.max),
            ("ecs-call-spacing", k.ecs_call_spacing),
        ] {
            cluster.insert(key.into(), f(v).into());
        }
        let policy = match k.standalone_tasks {
            StandalonePolicy::Wait => "wait",
            StandalonePolicy::Skip => "skip",
        };
        cluster.insert("standalone-tasks".into(), policy.into());
        cluster.insert("count-foreign-draining".into(), k.count_foreign_draining.into());
        cluster.insert("halt-after-failures".into(), i64::from(k.halt_after_failures).into());
        cluster.insert("canary-hosts".into(), i64::from(k.canary_hosts).into());
        let m = &c.maintenance;
        let mut maintenance = toml::Table::new();
        maintenance.insert("time-zone".into(), m.windows.zone.name().into());
        maintenance.insert("expected-duration".into(), f(m.expected_duration).into());
        maintenance.insert("update-now-poll".into(), f(m.update_now_poll).into());
        let windows: Vec<toml::Value> = m
            .windows
            .windows
            .iter()
            .map(|w| {
                let mut t = toml::Table::new();
                let days: Vec<toml::Value> = w.days.iter().map(|d| d.to_string().to_lowercase().into()).collect();
                t.insert("days".into(), days.into());
                t.insert("start".into(), w.start.format("%H:%M").to_string().into());
                t.insert("length".into(), f(w.length).into());
                t.into()
            })
            .collect();
        maintenance.insert("windows".into(), windows.into());
        let h = &c.health;
        let mut health = toml::Table::new();
        for (key, v) in [
            ("instance-health-timeout", h.instance_health_timeout),
            ("url-timeout", h.url_timeout),
            ("poll-interval", h.poll_interval),
            ("task-timeout", h.task_timeout),
            ("bake-time", h.bake_time),
            ("canary-bake-time", h.canary_bake_time),
        ] {
            health.insert(key.into(), f(v).into());
        }
        let urls: Vec<toml::Value> = h.urls.iter().map(|u| u.clone().into()).collect();
        health.insert("urls".into(), urls.into());
        let families: Vec<toml::Value> = h.task_families.iter().map(|f| f.clone().into()).collect();
        health.insert("task-families".into(), families.into());
        let on_failure = match h.on_failure {
            OnFailure::Hold => "hold",
            OnFailure::Return => "return",
            OnFailure::Rollback => "rollback",
        };
        health.insert("on-failure".into(), on_failure.into());
        Printable {
            dry_run: c.dry_run,
            log_format: c.log_format,
            log_level: c.log_level.clone(),
            api_socket: c.api_socket.display().to_string(),
            state_dir: c.state_dir.display().to_string(),
            check_interval: f(c.check_interval),
            check_jitter: f(c.check_jitter),
            seed: c.seed,
            quarantine: f(c.quarantine),
            min_release_age: f(c.min_release_age),
            request_timeout: f(c.request_timeout),
            reboot_wait: f(c.reboot_wait),
            commands,
            cluster,
            maintenance,
            health,
            notify: c.notify.to_table(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").expect_err("must be refused").to_string()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", "t").expect("valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.cluster.max_concurrent, 1);
        assert_eq!(c.api_socket, PathBuf::from("/run/api.sock"));
        assert!(!c.dry_run);
    }

    #[test]
    fn missing_file_is_all_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Config::load(&dir.path().join("nope")).expect("defaults"), Config::default());
    }

    #[test]
    fn durations_parse_and_print_round_trip() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
        for d in ["7d", "2h", "15m", "90s", "250ms"] {
            assert_eq!(format_duration(parse_duration(d).expect("parses")), d);
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err("[cluster]\nmax-concurrent = 0").contains("`cluster.max-concurrent`"));
        assert!(err("check-interval = \"-5m\"").contains("`check-interval`"));
        assert!(err("check-interval = \"0s\"").contains("longer than zero"));
        assert!(err("[commands]\nprepare-timeout = \"soon\"").contains("`commands.prepare-timeout`"));
        assert!(err("[cluster]\nsettle-time = \"20m\"\nlease-ttl = \"10m\"").contains("`cluster.settle-time`"));
        assert!(err("[cluster]\nattribute-prefix = \"a=b\"").contains("`cluster.attribute-prefix`"));
        assert!(err("log-level = \"[[[\"").contains("`log-level`"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_naming_the_key() {
        let e = err("check-intervall = \"5m\"");
        assert!(e.contains("check-intervall"), "{e}");
        let e = err("[cluster]\nmax-concurrent = \"three\"");
        assert!(e.contains("max-concurrent"), "{e}");
        let e = err("dry-run = 1");
        assert!(e.contains("dry-run"), "{e}");
        let e = err("[cluster]\nstandalone-tasks = \"ignore\"");
        assert!(e.contains("standalone-tasks"), "{e}");
    }

    #[test]
    fn bad_windows_are_refused_naming_the_key() {
        let w = |body: &str| err(&format!("[maintenance]\n{body}"));
        assert!(w("time-zone = \"Mars/Olympus\"").contains("`maintenance.time-zone`"));
        let one = |days: &str, start: &str, length: &str| {
            w(&format!("[[maintenance.windows]]\ndays = {days}\nstart = \"{start}\"\nlength = \"{length}\""))
        };
        assert!(one("[\"mon\", \"funday\"]", "02:00", "2h").contains("`maintenance.windows[0].days`"));
        assert!(one("[]", "02:00", "2h").contains("`maintenance.windows[0].days`"));
        assert!(one("[\"mon\"]", "25:00", "2h").contains("`maintenance.windows[0].start`"));
        assert!(one("[\"mon\"]", "02:00", "0s").contains("`maintenance.windows[0].length`"));
        assert!(one("[\"mon\"]", "02:00", "8d").contains("`maintenance.windows[0].length`"));
    }

    #[test]
    fn windows_parse_in_their_zone() {
        let text = "[maintenance]\ntime-zone = \"Europe/Berlin\"\n[[maintenance.windows]]\ndays = [\"sat\", \"Sunday\"]\nstart = \"22:30\"\nlength = \"4h\"\n";
        let c = Config::parse(text, "t").expect("valid");
        assert_eq!(c.maintenance.windows.zone, chrono_tz::Europe::Berlin);
        assert_eq!(c.maintenance.windows.windows.len(), 1);
        assert_eq!(c.maintenance.windows.windows[0].days.len(), 2);
        assert_eq!(Config::parse(&c.to_toml(), "printed").expect("round trip"), c);
    }

    fn ok(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("must be accepted: {e}\n{text}"))
    }

    /// A refusal of `text` that names `key` in backquotes and says `rule`.
    fn refused(text: &str, key: &str, rule: &str) {
        let e = err(text);
        assert!(e.contains(&format!("`{key}`")), "must name `{key}`: {e}");
        assert!(e.contains(rule), "must state `{rule}`: {e}");
    }

    #[test]
    fn settle_time_below_a_second_is_refused() {
        let rule = "cluster.settle-time >= 1s";
        refused("[cluster]\nsettle-time = \"0s\"", "cluster.settle-time", rule);
        refused("[cluster]\nsettle-time = \"999ms\"", "cluster.settle-time", rule);
        assert_eq!(ok("[cluster]\nsettle-time = \"1s\"").cluster.settle_time, Duration::from_secs(1));
    }

    #[test]
    fn a_retry_budget_that_breaks_the_renewal_margin_is_refused() {
        // Defaults: 2m + 10s + 30s + 15s + 2 x 1s = 2m57s against a 10m TTL's 5m.
        let e = err("[cluster]\necs-retry-budget = \"10m\"");
        assert!(e.contains("`cluster.ecs-retry-budget`"), "{e}");
        assert!(
            e.contains("cluster.ecs-retry-budget + cluster.settle-time + cluster.clock-skew + cluster.drain-poll-interval + 2 x cluster.ecs-call-spacing"),
            "{e}"
        );
        assert!(e.contains("10m + 10s + 30s + 15s + 2s = 657s must be <= cluster.lease-ttl / 2 = 5m"), "{e}");
        // One second over, then exactly at the margin.
        refused("[cluster]\necs-retry-budget = \"4m4s\"", "cluster.ecs-retry-budget", "= 301s must be <= cluster.lease-ttl / 2 = 5m");
        assert_eq!(ok("[cluster]\necs-retry-budget = \"4m3s\"").cluster.ecs_retry_budget, Duration::from_secs(243));
        // Every term counts: a long skew breaks it as well, and a longer TTL mends it; so does the
        // time a renewal may wait for its turn.
        refused("[cluster]\nclock-skew = \"3m\"", "cluster.ecs-retry-budget", "= 327s must be <= cluster.lease-ttl / 2 = 5m");
        ok("[cluster]\nclock-skew = \"3m\"\nlease-ttl = \"11m\"");
        refused("[cluster]\necs-retry-budget = \"4m3s\"\necs-call-spacing = \"2s\"", "cluster.ecs-retry-budget", "= 302s");
        assert_eq!(ok("[cluster]\necs-retry-budget = \"4m4s\"\necs-call-spacing = \"0s\"").cluster.ecs_call_spacing, Duration::ZERO);
    }

    #[test]
    fn a_call_spacing_beyond_its_ceiling_is_refused() {
        refused("[cluster]\necs-call-spacing = \"2001ms\"", "cluster.ecs-call-spacing", "at most 2s");
        assert_eq!(ok("[cluster]\necs-call-spacing = \"2s\"").cluster.ecs_call_spacing, Duration::from_secs(2));
        assert_eq!(ok("").cluster.ecs_call_spacing, Duration::from_secs(1));
    }

    #[test]
    fn a_reboot_allowance_shorter_than_a_reboot_or_the_ttl_is_refused() {
        let rule = "cluster.reboot-allowance >= 1m and >= cluster.lease-ttl";
        refused("[cluster]\nreboot-allowance = \"9m59s\"", "cluster.reboot-allowance", rule);
        assert_eq!(ok("[cluster]\nreboot-allowance = \"10m\"").cluster.reboot_allowance, Duration::from_secs(600));
        let short_ttl = "[cluster]\nlease-ttl = \"30s\"\necs-retry-budget = \"2s\"\nsettle-time = \"1s\"\nclock-skew = \"1s\"\ndrain-poll-interval = \"1s\"";
        refused(&format!("{short_ttl}\nreboot-allowance = \"59s\""), "cluster.reboot-allowance", rule);
        ok(&format!("{short_ttl}\nreboot-allowance = \"1m\""));
    }

    #[test]
    fn polling_floors_are_enforced_and_their_boundaries_accepted() {
        let cases = [
            ("check-interval = \"1ms\"", "check-interval", "check-interval >= 10s"),
            ("check-interval = \"9s\"", "check-interval", "check-interval >= 10s"),
            ("[maintenance]\nupdate-now-poll = \"9s\"", "maintenance.update-now-poll", "maintenance.update-now-poll >= 10s"),
            ("[cluster]\nwait-poll-max = \"999ms\"", "cluster.wait-poll-max", "cluster.wait-poll-max >= 1s"),
            ("[cluster]\ndrain-poll-interval = \"99ms\"", "cluster.drain-poll-interval", "cluster.drain-poll-interval >= 100ms"),
            ("[commands]\npoll-interval = \"99ms\"", "commands.poll-interval", "commands.poll-interval >= 100ms"),
        ];
        for (text, key, rule) in cases {
            refused(text, key, rule);
        }
        let c = ok("check-interval = \"10s\"\n[maintenance]\nupdate-now-poll = \"10s\"\n[commands]\npoll-interval = \"100ms\"\n\
                    [cluster]\nwait-poll-max = \"1s\"\ndrain-poll-interval = \"100ms\"");
        assert_eq!(c.check_interval, MIN_CHECK_INTERVAL);
        assert_eq!(c.maintenance.update_now_poll, MIN_UPDATE_NOW_POLL);
        assert_eq!(c.commands.prepare.poll_interval, MIN_COMMAND_POLL_INTERVAL);
        assert_eq!(c.cluster.wait_poll_max, MIN_WAIT_POLL_MAX);
        assert_eq!(c.cluster.drain_poll_interval, MIN_DRAIN_POLL_INTERVAL);
    }

    #[test]
    fn the_instance_arn_must_be_a_container_instance_arn_with_its_cluster() {
        let with = |arn: &str| format!("[cluster]\ncluster = \"prod\"\ninstance-arn = \"{arn}\"");
        let rule = "arn:<partition>:ecs:<region>:<12-digit account>:container-instance/[<cluster>/]<id>";
        for arn in [
            "i-0123456789abcdef0",
            "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123",
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
            "arn:aws:ecs:eu-west-1:12345:container-instance/prod/0123abcd",
            "arn:aws:ecs::123456789012:container-instance/prod/0123abcd",
            "arn::ecs:eu-west-1:123456789012:container-instance/prod/0123abcd",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance/",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance//0123abcd",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd/x",
        ] {
            refused(&with(arn), "cluster.instance-arn", rule);
        }
        let long = ok(&with("arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd"));
        assert_eq!(long.cluster.instance_arn.as_deref(), Some("arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd"));
        ok(&with("arn:aws-cn:ecs:cn-north-1:123456789012:container-instance/5f1e0c2b-9d8a-4c6e-8f00-0123456789ab"));
        // The cluster may be given as an ARN; it must be the one the instance ARN names.
        ok("[cluster]\ncluster = \"arn:aws:ecs:eu-west-1:123456789012:cluster/prod\"\n\
            instance-arn = \"arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd\"");
        refused(&with("arn:aws:ecs:eu-west-1:123456789012:container-instance/staging/0123abcd"), "cluster.cluster", "`staging`");
        // Either alone would be ignored by discovery: refused.
        refused("[cluster]\ninstance-arn = \"arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd\"",
            "cluster.instance-arn", "set cluster.cluster too");
        refused("[cluster]\ncluster = \"prod\"", "cluster.cluster", "set cluster.instance-arn too");
    }

    #[test]
    fn durations_beyond_a_year_are_refused_naming_the_key_not_a_panic() {
        let rule = "longer than 365d";
        refused("[cluster]\ndrain-poll-interval = \"100000000d\"", "cluster.drain-poll-interval", rule);
        refused("check-interval = \"100000000d\"", "check-interval", rule);
        refused("check-interval = \"18446744073709551615s\"", "check-interval", rule);
        refused("check-interval = \"99999999999999999999999s\"", "check-interval", rule);
        refused("quarantine = \"365d1ms\"", "quarantine", rule);
        refused("[cluster]\nlease-ttl = \"200d200d\"", "cluster.lease-ttl", rule);
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(ok("check-interval = \"365d\"").check_interval, MAX_DURATION);
    }

    #[test]
    fn next_slots_at_the_largest_accepted_values_do_not_panic() {
        use crate::clock::WallTime;
        use crate::slot::{describe, upcoming, Schedule};
        let c = ok("check-interval = \"365d\"\ncheck-jitter = \"365d\"\n[maintenance]\nexpected-duration = \"365d\"");
        let zones = [
            Windows::default(),
            ok("[maintenance]\ntime-zone = \"Europe/Berlin\"\n[[maintenance.windows]]\ndays = [\"sun\"]\nstart = \"02:30\"\nlength = \"7d\"")
                .maintenance
                .windows,
        ];
        for windows in &zones {
            for seed in [0, 1, 2047, u32::MAX] {
                let schedule = Schedule { seed, interval: c.check_interval };
                // Also the ends of the calendar, where window arithmetic is done in dates.
                const DAY_MS: i64 = 86_400_000;
                let calendar_max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis();
                let calendar_min = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis();
                for from in [WallTime(i64::MIN), WallTime(i64::MIN + 1), WallTime(calendar_min), WallTime(calendar_min + 11 * DAY_MS), WallTime(-1), WallTime(0), WallTime(calendar_max - 11 * DAY_MS), WallTime(calendar_max - DAY_MS), WallTime(calendar_max), WallTime(i64::MAX)] {
                    let slots = upcoming(&schedule, windows, c.maintenance.expected_duration, from, 100);
                    assert_eq!(slots.len(), 100);
                    assert!(slots.windows(2).all(|p| p[0].at <= p[1].at), "slots never go back from {from:?}");
                    let _ = describe(&slots[0], &schedule, c.maintenance.expected_duration);
                }
            }
        }
    }

    #[test]
    fn count_foreign_draining_defaults_to_true_and_prints() {
        assert!(Config::default().cluster.count_foreign_draining);
        let c = ok("[cluster]\ncount-foreign-draining = false");
        assert!(!c.cluster.count_foreign_draining);
        let printed = c.to_toml();
        assert!(printed.contains("count-foreign-draining = false"), "{printed}");
        assert_eq!(Config::parse(&printed, "printed").expect("round trip"), c);
        assert!(err("[cluster]\ncount-foreign-draining = \"yes\"").contains("count-foreign-draining"));
    }

    #[test]
    fn configs_built_in_code_are_checked_by_the_same_rules() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.cluster.ecs_retry_budget = c.cluster.lease_ttl;
        let e = c.validate().expect_err("the margin is broken").to_string();
        assert!(e.contains("`cluster.ecs-retry-budget`"), "{e}");
        let mut c = Config::default();
        c.cluster.drain_poll_interval = Duration::MAX;
        assert!(c.validate().is_err(), "refused, without overflow");
    }

    #[test]
    fn the_notify_table_is_read_and_printed_without_the_webhook_secret() {
        assert_eq!(Config::default().notify.webhook, None);
        let c = ok("[notify]\nwebhook = \"https://hooks.example.com/services/T0/B0/s3cr3t\"\ntimeout = \"5s\"\nretries = 2");
        assert_eq!(c.notify.webhook.as_ref().map(|w| w.host()), Some("hooks.example.com"));
        assert_eq!((c.notify.timeout, c.notify.retries), (Duration::from_secs(5), 2));
        let printed = c.to_toml();
        assert!(printed.contains("[notify]") && printed.contains("https://hooks.example.com/<redacted>"), "{printed}");
        assert!(!printed.contains("s3cr3t") && !format!("{c:?}").contains("s3cr3t"), "{printed}");
        refused("[notify]\nwebhook = \"http://hooks.example.com/services/T0/B0/s3cr3t\"", "notify.webhook", "https://");
        assert!(!err("[notify]\nwebhook = \"http://hooks.example.com/services/T0/B0/s3cr3t\"").contains("s3cr3t"));
        assert!(err("[notify]\nwebhok = \"https://h/x\"").contains("webhok"));
    }

    #[test]
    fn effective_config_prints_as_a_file_that_parses_back_to_itself() {
        let text = "dry-run = true\ncheck-interval = \"30m\"\n[cluster]\nmax-concurrent = 3\nstandalone-tasks = \"wait\"\n";
        let c = Config::parse(text, "t").expect("valid");
        let printed = c.to_toml();
        assert_eq!(Config::parse(&printed, "printed").expect("printed config parses"), c);
        assert!(printed.contains("max-concurrent = 3"), "{printed}");
    }
}
