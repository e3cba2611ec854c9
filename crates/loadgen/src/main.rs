//! `loadgen`: runs the load scenarios against the direct baseline, socat, the byte relay and the
//! proxy, and prints the comparison table. See the crate's README for examples.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::{LoadgenError, ProxyChoice, RunOptions, ScenarioConfig, Secret, process};

/// Load generator for ws-proxy: direct vs socat vs byte relay vs proxy, one run, one table.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Run every scenario small (seconds): a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Spawn this ws-proxy binary (SECRET_KEY, LOCAL_DEV_MODE=true, WS_REMOTE_URL, HOST, PORT set for it).
    #[arg(long, value_name = "PATH", conflicts_with = "proxy_url")]
    proxy_bin: Option<PathBuf>,
    /// Extra KEY=VALUE environment for the spawned proxy (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env_pair, requires = "proxy_bin")]
    proxy_env: Vec<(String, String)>,
    /// Also spawn the proxy in the pod's shape (wss:// to a TLS simulator, CA and token files):
    /// the "proxy in-cluster" column.
    #[arg(long, requires = "proxy_bin")]
    in_cluster: bool,
    /// Write the spawned proxy's stdout and stderr to this file.
    #[arg(long, value_name = "PATH", requires = "proxy_bin")]
    proxy_log: Option<PathBuf>,
    /// URL template of an already running proxy, e.g. ws://127.0.0.1:5001/{token}/{vmi}.
    #[arg(long, value_name = "TEMPLATE")]
    proxy_url: Option<String>,
    /// Process id of the already running proxy (for its memory readings).
    #[arg(long, value_name = "PID", requires = "proxy_url")]
    proxy_pid: Option<u32>,
    /// HS256 secret for minted tokens (the proxy's SECRET_KEY).
    #[arg(
        long,
        env = "LOADGEN_SECRET",
        default_value = "loadgen-benchmark-secret",
        hide_env_values = true
    )]
    secret: String,
    /// Upstream port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    upstream_port: u16,
    /// Skip the socat column.
    #[arg(long)]
    no_socat: bool,
    /// Skip the byte relay column.
    #[arg(long)]
    no_byte_relay: bool,
    /// The byte-relay binary (default: the one beside this loadgen binary).
    #[arg(long, value_name = "PATH", conflicts_with = "no_byte_relay")]
    byte_relay_bin: Option<PathBuf>,
    /// Also run websocat (this binary) as a column: a relay that checks no token, on the echo
    /// scenarios (idle, latency, set-up).
    #[arg(long, value_name = "PATH")]
    websocat: Option<PathBuf>,
    /// Also run the Python original as a column: the python of a venv with
    /// `lab-orchestrator-ws-proxy==1.0.0` (see the README).
    #[arg(long, value_name = "PYTHON")]
    python_original: Option<PathBuf>,
    /// Rounds of each throughput, latency and set-up scenario (default: 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: Option<u16>,
    /// Skip the direct column.
    #[arg(long)]
    no_direct: bool,
    /// Do not pin anything to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// CPU for the proxy, socat and the byte relay.
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    /// CPU for this process (load and upstream).
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
    /// Idle sessions to hold (default: 9,900, or 20 with --quick; capped by the open-file limit).
    #[arg(long)]
    idle_sessions: Option<usize>,
    /// Run only these scenario groups (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<ScenarioGroup>,
    /// Wall-time limit per scenario and target, in seconds.
    #[arg(long)]
    time_limit_secs: Option<u64>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the Markdown table here instead of stdout.
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
}

/// The scenario groups `--only` selects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioGroup {
    /// N idle sessions held open, proxy memory per session.
    Idle,
    /// Throughput both ways, 1 KiB and 64 KiB messages, 1 and 8 sessions.
    Throughput,
    /// Round-trip latency of 16-byte messages.
    Latency,
    /// Session set-up rate.
    Setup,
    /// A class of 300 and of 2,000 browsers opening their consoles within a second.
    ClassStart,
    /// 1,000 and 5,000 consoles of each recorded traffic mix: CPU, memory, key-to-echo.
    Steady,
}

fn parse_env_pair(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}

const BYTE_RELAY_MISSING: &str = "no byte-relay binary beside loadgen (cargo build --release -p loadgen \
     builds both): byte relay column skipped";

/// File descriptors kept back from the idle scenario for listeners, children and the runtime.
const SPARE_FDS: u64 = 64;

fn main() -> ExitCode {
    process::init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(Verdict::Clean) => ExitCode::SUCCESS,
        Ok(Verdict::Failures) => ExitCode::from(2),
        Err(error) => {
            tracing::error!("{}", proxy_core::ErrorChain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Whether every scenario ran clean: no errors, nothing cut short, no upstream connection left open.
enum Verdict {
    Clean,
    Failures,
}

fn run(cli: Cli) -> Result<Verdict, LoadgenError> {
    let (soft, hard) = process::raise_nofile_limit()?;
    tracing::info!(soft, hard, "open-file limit raised to the hard limit");

    let cpus = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let pin = !cli.no_pin && cpus > cli.relay_cpu.max(cli.load_cpu);
    if !cli.no_pin && !pin {
        tracing::warn!(
            cpus,
            "not enough CPUs to pin relay and load apart; running unpinned"
        );
    }
    if pin {
        // Before the runtime exists, so every thread it starts inherits the affinity.
        process::pin_current_process(cli.load_cpu)?;
        tracing::info!(cpu = cli.load_cpu, "load pinned");
    }

    let mut scenarios = if cli.quick {
        ScenarioConfig::quick()
    } else {
        ScenarioConfig::full()
    };
    if let Some(idle) = cli.idle_sessions {
        scenarios.idle_sessions = idle;
    }
    // Each idle session costs this process two descriptors on the direct path (client and upstream).
    let idle_cap = usize::try_from(soft.saturating_sub(SPARE_FDS) / 2).unwrap_or(usize::MAX);
    if scenarios.idle_sessions > idle_cap {
        tracing::warn!(
            asked = scenarios.idle_sessions,
            cap = idle_cap,
            "idle sessions capped by the open-file limit"
        );
        scenarios.idle_sessions = idle_cap;
    }
    if !cli.only.is_empty() {
        let wanted = |group| cli.only.contains(&group);
        if !wanted(ScenarioGroup::Idle) {
            scenarios.idle_sessions = 0;
        }
        if !wanted(ScenarioGroup::Throughput) {
            scenarios.throughput.clear();
        }
        if !wanted(ScenarioGroup::Latency) {
            scenarios.latency.clear();
        }
        if !wanted(ScenarioGroup::Setup) {
            scenarios.setup.clear();
        }
        if !wanted(ScenarioGroup::ClassStart) {
            scenarios.class_start.clear();
        }
        if !wanted(ScenarioGroup::Steady) {
            scenarios.steady.clear();
        }
    }
    if let Some(rounds) = cli.rounds {
        scenarios.rounds = usize::from(rounds);
    }
    if let Some(secs) = cli.time_limit_secs {
        scenarios.time_limit = Duration::from_secs(secs);
    }

    let mut options = RunOptions::new(scenarios, Secret::new(cli.secret));
    options.upstream_port = cli.upstream_port;
    options.direct = !cli.no_direct;
    options.socat = !cli.no_socat;
    options.byte_relay = if cli.no_byte_relay {
        None
    } else {
        cli.byte_relay_bin.or_else(process::sibling_byte_relay)
    };
    let byte_relay_missing = !cli.no_byte_relay && options.byte_relay.is_none();
    if byte_relay_missing {
        tracing::warn!("{BYTE_RELAY_MISSING}");
    }
    if pin {
        options.relay_cpu = Some(cli.relay_cpu);
        options.load_cpu = Some(cli.load_cpu);
    }
    options.in_cluster = cli.in_cluster;
    options.websocat = cli.websocat;
    options.python_original = cli.python_original;
    options.proxy = match (cli.proxy_bin, cli.proxy_url) {
        (Some(binary), _) => ProxyChoice::Spawn {
            binary,
            extra_env: cli.proxy_env,
            log_file: cli.proxy_log,
        },
        (None, Some(url_template)) => ProxyChoice::External {
            url_template,
            pid: cli.proxy_pid,
        },
        (None, None) => ProxyChoice::None,
    };

    let runtime = process::load_runtime()?;
    let mut report = runtime.block_on(loadgen::run(&options))?;
    report.note(format!("open-file limit: soft {soft}, hard {hard}"));
    if byte_relay_missing {
        report.note(BYTE_RELAY_MISSING);
    }

    if let Some(path) = &cli.json {
        process::write_report(path, &report.to_json()?)?;
    }
    let markdown = report.to_markdown();
    match &cli.markdown {
        Some(path) => process::write_report(path, &markdown)?,
        None => print!("{markdown}"),
    }
    let failed = report.records.iter().filter(|record| {
        let outcome = &record.outcome;
        outcome.errors > 0 || !outcome.completed || outcome.upstream_left_open > 0
    });
    let failed = failed.count();
    if failed == 0 {
        Ok(Verdict::Clean)
    } else {
        tracing::warn!(
            failed,
            "scenarios with errors, cut short, or leaving upstream connections open"
        );
        Ok(Verdict::Failures)
    }
}
