//! `ws-proxy`: the JWT-authenticated WebSocket proxy for KubeVirt VNC consoles, configured like
//! the Python `lab-orchestrator-ws-proxy` image (see `docs/configuration.md`).
use std::process::ExitCode;

use clap::Parser;
use proxy_server::cli::{ServeArgs, serve_main};

/// JWT-authenticated WebSocket proxy for KubeVirt VNC consoles (drop-in for the Python image).
#[derive(Debug, Parser)]
#[command(name = "ws-proxy", version)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    serve_main(&cli.serve)
}
