//! `br-update-agent`: parses the command line, loads the config, wires the real clients into the
//! agent and maps the result to an exit code. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::backoff::{Backoff, Jitter};
use agent::clock::SystemClock;
use agent::cluster::ecs::EcsStore;
use agent::cluster::paced::Paced;
use agent::cluster::ClusterStore;
use agent::config::{Config, DEFAULT_CONFIG_PATH};
use agent::cycle::{Agent, Outcome};
use agent::journal::FileJournal;
use agent::lease::Names;
use agent::notify::{Notifier, Origin, FLUSH_TIME};
use agent::os_api::http::HttpOsApi;
use agent::shutdown::{self, Shutdown};

const USAGE: &str = "\
usage:
  br-update-agent [run] [--config PATH] [--once]   run the agent (default)
  br-update-agent check-config [--config PATH]     validate a config and print the effective one
  br-update-agent next [--config PATH] [--seed N] [--count K] [--from RFC3339]
                                                   print the next check slots and why (read-only)
  br-update-agent user-data --config PATH [--toml NAME --source IMAGE]
                                                   print the config as base64 host-container user-data,
                                                   or with --toml a whole [settings.host-containers.NAME]
  br-update-agent fleet COMMAND --cluster NAME ...  for operators: the rollout (status) and one-word
                                                   controls, with your own AWS credentials; see `fleet --help`

The config defaults to the host container's user-data (/.bottlerocket/host-containers/current/user-data);
a missing file means every default.";

/// Exit code for a refused command line or config (sysexits' EX_USAGE / EX_CONFIG).
const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

struct Args {
    command: String,
    config: PathBuf,
    once: bool,
    /// `user-data --toml NAME --source IMAGE`: the host-container name and image of the block.
    block: Option<(String, String)>,
    /// `next --seed N`.
    seed: Option<u32>,
    /// `next --count K`.
    count: usize,
    /// `next --from T`.
    from: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { command: "run".into(), config: DEFAULT_CONFIG_PATH.into(), once: false, block: None, seed: None, count: 5, from: None };
    let (mut name, mut source) = (None, None);
    let mut it = std::env::args().skip(1);
    let mut first = true;
    while let Some(a) = it.next() {
        match a.as_str() {
            "run" | "check-config" | "user-data" | "next" if first => args.command = a,
            "--seed" => args.seed = Some(number(it.next(), "--seed")?),
            "--count" => args.count = number(it.next(), "--count")?,
            "--from" => args.from = Some(it.next().ok_or("--from needs an RFC 3339 time")?),
            "--config" => args.config = it.next().ok_or("--config needs a path")?.into(),
            "--once" => args.once = true,
            "--toml" => name = Some(it.next().ok_or("--toml needs a host-container name")?),
            "--source" => source = Some(it.next().ok_or("--source needs an image")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
        first = false;
    }
    args.block = match (name, source) {
        (Some(n), Some(s)) if args.command == "user-data" => Some((n, s)),
        (None, None) => None,
        _ => return Err("--toml and --source go together, with user-data".into()),
    };
    Ok(args)
}

fn number<T: std::str::FromStr>(v: Option<String>, flag: &str) -> Result<T, String> {
    v.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} needs a number"))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "fleet") {
        return agent::fleet::cli::main(&argv[1..]);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.command == "user-data" {
        return user_data(&args);
    }
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("the agent changed nothing; fix the config and restart it");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.command == "check-config" {
        println!("# effective config from {}\n{}", args.config.display(), cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.command == "next" {
        return next_slots(&cfg, &args);
    }
    agent::logging::init(cfg.log_format, &cfg.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cfg, args.once))
}

/// Prints the next check slots for a seed, with the reason for each; touches nothing.
fn next_slots(cfg: &Config, args: &Args) -> ExitCode {
    use agent::clock::{Clock, WallTime};
    use agent::slot::{describe, upcoming, Schedule};
    let from = match &args.from {
        None => SystemClock.now(),
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => WallTime(t.timestamp_millis()),
            Err(e) => {
                eprintln!("error: --from `{t}`: {e}");
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    let Some(seed) = args.seed.or(cfg.seed) else {
        eprintln!("error: give the host's wave seed (settings.updates.seed) with --seed N");
        return ExitCode::from(EX_USAGE);
    };
    let m = &cfg.maintenance;
    let schedule = Schedule { seed, interval: cfg.check_interval };
    println!("# next checks for seed {seed} from {from} (time zone {}; plus up to {} s of jitter)", m.windows.zone, cfg.check_jitter.as_secs());
    for p in upcoming(&schedule, &m.windows, m.expected_duration, from, args.count.clamp(1, 100)) {
        println!("{}", describe(&p, &schedule, m.expected_duration));
    }
    ExitCode::SUCCESS
}

/// Prints the config file as host-container user-data, after the agent's own validation.
fn user_data(args: &Args) -> ExitCode {
    use agent::user_data::{encode_config_file, host_container_block, UserDataError};
    let printed = encode_config_file(&args.config).and_then(|encoded| match &args.block {
        Some((name, source)) => host_container_block(name, source, &encoded),
        None => Ok(format!("{encoded}\n")),
    });
    match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, UserDataError::Name(_)) { EX_USAGE } else { EX_CONFIG })
        }
    }
}

async fn run(cfg: Config, once: bool) -> ExitCode {
    let (trigger, shutdown) = Shutdown::new();
    match shutdown::install() {
        Ok(signals) => {
            tokio::spawn(shutdown::forward(signals, trigger));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), dry_run = cfg.dry_run, cluster = cfg.cluster.enabled, "agent starting");
    let os = HttpOsApi::new(cfg.api_socket.clone(), cfg.request_timeout);
    let jitter = Jitter::from_os();
    let cluster = if cfg.cluster.enabled {
        match connect_cluster(&cfg, &jitter, &shutdown).await {
            Connected::Store(c) => Some(c),
            // Nothing was touched yet, so a stop here is as clean as any other.
            Connected::Stopped => return ExitCode::SUCCESS,
            Connected::Failed => return ExitCode::FAILURE,
        }
    } else {
        tracing::info!("cluster coordination disabled: updating this host on its own schedule");
        None
    };
    let origin = match &cluster {
        Some(store) => Origin { cluster: Some(agent::discovery::cluster_name(store.cluster())), instance: Some(store.instance_arn().to_string()) },
        None => Origin::default(),
    };
    let notifier = Notifier::start(&cfg.notify, origin);
    let spacing = cfg.cluster.ecs_call_spacing;
    let agent = Agent {
        os,
        cluster: cluster.map(|store| Paced::new(store, SystemClock, spacing)),
        clock: SystemClock,
        journal: FileJournal::new(cfg.journal_path()),
        jitter,
        names: Names::new(&cfg.cluster.attribute_prefix),
        cfg,
        shutdown,
        memory: Default::default(),
        notifier,
    };
    let outcome = agent.run(once).await;
    tracing::info!(outcome = outcome.token(), "agent stopping");
    // Bounded: a host going down for its reboot must not wait on a slow webhook.
    agent.notifier.close(FLUSH_TIME).await;
    match outcome {
        Outcome::Failed { .. } if once => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// How finding the cluster ended.
enum Connected {
    /// Found; the store is bound to this host's instance.
    Store(EcsStore),
    /// A signal came first.
    Stopped,
    /// Discovery gave up (already logged).
    Failed,
}

/// Finds the cluster and instance (config first, then the ECS agent), and builds the store.
async fn connect_cluster(cfg: &Config, jitter: &Jitter, shutdown: &Shutdown) -> Connected {
    let c = &cfg.cluster;
    let (cluster, arn, region) = match (&c.cluster, &c.instance_arn) {
        (Some(cluster), Some(arn)) => (cluster.clone(), arn.clone(), c.region.clone().or_else(|| agent::discovery::region_from_arn(arn))),
        _ => {
            let backoff = Backoff::new(std::time::Duration::from_secs(2), std::time::Duration::from_secs(60));
            let found = tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    tracing::info!("stopped by signal during discovery; nothing was changed");
                    return Connected::Stopped;
                }
                r = agent::discovery::discover(&SystemClock, jitter, &c.introspection_url, backoff, c.discovery_timeout) => r,
            };
            match found {
                Ok(d) => (d.cluster, d.instance_arn, c.region.clone().or(d.region)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot learn the cluster and container instance");
                    return Connected::Failed;
                }
            }
        }
    };
    tracing::info!(cluster = %cluster, instance = %arn, region = ?region, "coordinating through ECS");
    let client = agent::cluster::ecs::client_from_env(region).await;
    let store = EcsStore::new(client, agent::discovery::cluster_name(&cluster), arn)
        .with_local_tasks(agent::discovery::tasks_url(&c.introspection_url));
    Connected::Store(store)
}
