//! `kubevirt-sim`: runs the simulated KubeVirt VNC API until Ctrl-C or SIGTERM.
//!
//! Prints `listening 127.0.0.1:PORT` as its only line on stdout once it accepts connections;
//! logs go to stderr (`RUST_LOG` filters them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kubevirt_sim::rfb::RfbOptions;
use kubevirt_sim::{KubevirtSim, SimConfig, SimError, VmSpec};

/// A simulated KubeVirt API serving the VNC subresource, for demos and tests.
#[derive(Debug, Parser)]
#[command(name = "kubevirt-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve wss:// with a CA and server certificate generated at start.
    #[arg(long)]
    tls: bool,
    /// Write the generated CA certificate (PEM) here; implies --tls.
    #[arg(long, value_name = "PATH")]
    tls_ca_out: Option<PathBuf>,
    /// Expect this bearer token (prefer --token-file: arguments are visible to other users).
    #[arg(
        long,
        env = "KUBEVIRT_SIM_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Expect the bearer token in this file, re-read on every request.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// A VMI to serve: `[NAMESPACE/]NAME=BEHAVIOR` with BEHAVIOR one of rfb,
    /// bridge:IP:PORT, echo, sink, source[:CHUNK[:TOTAL]], not-running, forbidden.
    #[arg(long = "vm", value_name = "[NAMESPACE/]NAME=BEHAVIOR")]
    vms: Vec<VmSpec>,
    /// Width of the built-in RFB consoles.
    #[arg(long, default_value_t = 800)]
    width: u16,
    /// Height of the built-in RFB consoles.
    #[arg(long, default_value_t = 600)]
    height: u16,
    /// Most sessions open at once.
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubevirt-sim: {}", proxy_core::ErrorChain(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), RunError> {
    let mut config = SimConfig::new()
        .listen(args.listen)
        .tls(args.tls || args.tls_ca_out.is_some())
        .max_sessions(args.max_sessions)
        .rfb_options(RfbOptions::new(args.width, args.height));
    if let Some(token) = args.token {
        config = config.bearer_token(token);
    }
    if let Some(path) = args.token_file {
        config = config.bearer_token_file(path);
    }
    for spec in args.vms {
        config = config.vm_spec(spec);
    }
    let sim = KubevirtSim::start(config).await?;
    if let Some(path) = &args.tls_ca_out {
        sim.write_ca_pem(path)?;
    }
    println!("listening {}", sim.local_addr());
    wait_for_stop_signal().await?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map_err(RunError::Signal),
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> Result<(), RunError> {
    tokio::signal::ctrl_c().await.map_err(RunError::Signal)
}
