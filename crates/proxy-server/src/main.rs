//! `ws-proxy`: the JWT-authenticated WebSocket proxy for KubeVirt VNC consoles, configured like
//! the Python `lab-orchestrator-ws-proxy` image (see `docs/configuration.md`). To try it without
//! a cluster, run the separate `ws-proxy-demo` binary (`cargo run --release -p ws-proxy-demo`).
use std::process::ExitCode;

use clap::Parser;

use proxy_server::cli::{ServeArgs, parse_command_line, serve_main};

/// JWT-authenticated WebSocket proxy for KubeVirt VNC consoles (drop-in for the Python image).
#[derive(Debug, Parser)]
#[command(name = "ws-proxy", version, before_help = proxy_server::cli::MUST_SET, before_long_help = proxy_server::cli::MUST_SET)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    serve_main(&parse_command_line::<Cli>().serve)
}
