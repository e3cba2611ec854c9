//! `byte-relay`: the tokio byte relay `loadgen` measures as the floor for any relay process.
//! See [`loadgen::byte_relay`].

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;

/// A TCP byte relay on 127.0.0.1 (tokio, 256 KiB copy buffers, one thread).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    listen_port: u16,
    /// Port of the upstream on 127.0.0.1.
    #[arg(long)]
    upstream_port: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("byte-relay: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, cli.upstream_port));
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, cli.listen_port));
    let error = runtime.block_on(async {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => loadgen::byte_relay::serve_byte_relay(listener, upstream).await,
            Err(error) => error,
        }
    });
    eprintln!("byte-relay: {listen}: {error}");
    ExitCode::FAILURE
}
