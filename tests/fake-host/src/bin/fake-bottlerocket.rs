//! `fake-bottlerocket`: a fake Bottlerocket API server on a Unix socket, for process-level tests.
//!
//! An accepted reboot takes the host down; once the 204 has been written the binary runs the
//! `--on-reboot` command, waits `--boot-delay`, then boots the host (onto the staged version when
//! it was activated). Logs go to stderr; stdout carries only the `READY <socket>` line.

use std::io::Write;
use std::process::ExitCode;

use fake_bottlerocket::cli::{self, Invocation, RunArgs, USAGE};
use fake_bottlerocket::{serve, FakeHost};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let args = match cli::parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(args)) => args,
        Err(e) => {
            eprintln!("fake-bottlerocket: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-bottlerocket: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(*args))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

async fn run(args: RunArgs) -> ExitCode {
    let (mut terminate, mut interrupt) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("fake-bottlerocket: cannot watch signals: {e}");
                return ExitCode::FAILURE;
            }
        };
    let host = FakeHost::new(args.config.clone());
    let mut served = match serve(host.clone(), &args.socket) {
        Ok(served) => served,
        Err(e) => {
            eprintln!("fake-bottlerocket: cannot listen on {}: {e}", args.socket.display());
            return ExitCode::FAILURE;
        }
    };
    if let Some(notices) = served.take_reboot_notices() {
        tokio::spawn(reboot_worker(host, args.clone(), notices));
    }
    if announce_ready(&args).is_err() {
        served.shutdown().await;
        return ExitCode::FAILURE;
    }
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received; stopping"),
    }
    served.shutdown().await;
    ExitCode::SUCCESS
}

fn announce_ready(args: &RunArgs) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {}", args.socket.display())?;
    out.flush()
}

/// Plays each reboot: the host is already down; run the hook, wait, boot.
async fn reboot_worker(host: FakeHost, args: RunArgs, mut notices: tokio::sync::mpsc::UnboundedReceiver<()>) {
    while notices.recv().await.is_some() {
        let old_version = host.running_version();
        if let Some(command) = &args.on_reboot {
            run_hook(command, &args, &old_version).await;
        }
        tokio::time::sleep(args.boot_delay).await;
        host.boot();
        tracing::info!(%old_version, running = %host.running_version(), "rebooted");
    }
}

async fn run_hook(command: &str, args: &RunArgs, old_version: &str) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("FAKE_SOCKET", &args.socket)
        .env("FAKE_OLD_VERSION", old_version)
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => tracing::info!(command, "on-reboot command finished"),
        Ok(s) => tracing::warn!(command, status = %s, "on-reboot command failed; booting anyway"),
        Err(e) => tracing::warn!(command, error = %e, "on-reboot command could not start; booting anyway"),
    }
}
