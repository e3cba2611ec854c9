//! `ws-proxy-demo`: a simulated KubeVirt API with VNC test consoles behind the ws-proxy engine,
//! a minted console token, the `ws://` URLs and (with noVNC installed) a browser page.
use std::process::ExitCode;

use clap::Parser;
use ws_proxy_demo::{DemoArgs, demo_main};

/// Try ws-proxy without a cluster: simulated KubeVirt VNC consoles behind the proxy.
#[derive(Debug, Parser)]
#[command(name = "ws-proxy-demo", version)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
}

fn main() -> ExitCode {
    demo_main(&Cli::parse().demo)
}
