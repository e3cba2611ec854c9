//! `instruction-counts`: instructions per session and per MiB through ws-proxy and through the
//! byte relay, counted by valgrind's callgrind. See [`loadgen::counts`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use loadgen::counts::{CountOptions, count_instructions};
use loadgen::{LoadgenError, Secret, process};

/// Instruction counts of ws-proxy against the byte relay (valgrind --tool=callgrind).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The ws-proxy binary (a release build).
    #[arg(long, value_name = "PATH")]
    proxy_bin: PathBuf,
    /// The byte-relay binary (default: the one beside this binary).
    #[arg(long, value_name = "PATH")]
    byte_relay_bin: Option<PathBuf>,
    /// The valgrind program.
    #[arg(long, value_name = "PATH", default_value = "valgrind")]
    valgrind: PathBuf,
    /// Small workloads: a report in a minute or two, not the published figures.
    #[arg(long)]
    quick: bool,
    /// CPU the relays are pinned to.
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    /// Do not pin the relays.
    #[arg(long)]
    no_pin: bool,
    /// Directory for callgrind's files (default: a new one in the temporary directory).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the Markdown table here instead of stdout.
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
}

fn main() -> ExitCode {
    process::init_logging();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", proxy_core::ErrorChain(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), LoadgenError> {
    let mut options = CountOptions::new(cli.proxy_bin, Secret::new("instruction-counts-secret"));
    options.byte_relay_bin = cli.byte_relay_bin.or_else(process::sibling_byte_relay);
    if options.byte_relay_bin.is_none() {
        tracing::warn!("no byte-relay binary beside this one: byte relay column left empty");
    }
    options.valgrind = cli.valgrind;
    options.quick = cli.quick;
    options.cpu = (!cli.no_pin).then_some(cli.relay_cpu);
    if let Some(dir) = cli.out_dir {
        options.out_dir = dir;
    }
    let report = process::load_runtime()?.block_on(count_instructions(&options))?;
    if let Some(path) = &cli.json {
        process::write_report(path, &report.to_json()?)?;
    }
    let markdown = report.to_markdown();
    match &cli.markdown {
        Some(path) => process::write_report(path, &markdown)?,
        None => print!("{markdown}"),
    }
    Ok(())
}
