//! `ws-proxy`: the JWT-authenticated WebSocket proxy for KubeVirt VNC consoles, configured like
//! the Python `lab-orchestrator-ws-proxy` image (see `docs/configuration.md`).
//! `ws-proxy demo` runs it against a simulated KubeVirt API to try without a cluster.
use std::process::ExitCode;

use clap::Parser;
use proxy_server::cli::{ServeArgs, serve_main};
use proxy_server::demo::{DemoArgs, demo_main};

/// JWT-authenticated WebSocket proxy for KubeVirt VNC consoles (drop-in for the Python image).
#[derive(Debug, Parser)]
#[command(name = "ws-proxy", version, disable_help_subcommand = true)]
struct Cli {
    /// Without a subcommand, serves consoles as configured by the flags below.
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Try it without a cluster: a simulated KubeVirt API with VNC test consoles behind the
    /// proxy, a minted console token, the ws:// URLs and (with noVNC installed) a browser page.
    Demo(DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Demo(demo)) => demo_main(&demo),
        None => serve_main(&cli.serve),
    }
}
