//! Instruction counts: what one session and one MiB cost a relay, counted by valgrind's
//! callgrind instead of timed, so that the figures hold still on a shared host whose speed
//! swings between runs.
//!
//! For every [`Workload`] and relay (the `ws-proxy` binary and the `byte-relay` binary, a tokio
//! byte relay on one thread built like the proxy, see [`crate::byte_relay`]) the relay runs under
//! `valgrind --tool=callgrind`, pinned to one CPU (so `ws-proxy` starts its current-thread
//! runtime, as it does in a one-CPU pod), in front of this process's upstream. The workload is
//! played twice, small and large, each time in a fresh relay process; the difference of the two
//! instruction totals divided by the difference in units is the work per unit. Start-up, the
//! readiness probe and shutdown are in both totals and cancel out; timers that tick while the
//! relay runs (keepalive, metrics) are not and stay in the per-unit figure, a small bias against
//! the proxy.
//!
//! Only the relay process is counted: the load and the upstream run in this process, outside
//! valgrind. Work in the kernel (system calls, TCP) is not counted either, and neither is
//! aws-lc's seeding of its random generator from CPU jitter at start (hundreds of millions of
//! instructions whose number depends on the timing).
//!
//! # Example
//!
//! ```no_run
//! use loadgen::counts::{CountOptions, count_instructions};
//! use loadgen::Secret;
//!
//! # async fn example() -> Result<(), loadgen::LoadgenError> {
//! let mut options = CountOptions::new("target/release/ws-proxy".into(), Secret::new("s"));
//! options.byte_relay_bin = Some("target/release/byte-relay".into());
//! options.quick = true;
//! let report = count_instructions(&options).await?;
//! println!("{}", report.to_markdown());
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, ProxySpawn, free_port, start_byte_relay_under};
use crate::scenario::{SetupCase, SingleScenario, ThroughputCase, play_single};
use crate::target::TargetKind;
use crate::{LoadgenError, ScenarioConfig, Secret, Target, UpstreamServer, mint_console_token};

/// How long a relay under valgrind may take to write its output and exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(120);
/// Wall-time limit of one workload under valgrind (tens of times slower than native).
const RUN_LIMIT: Duration = Duration::from_secs(900);
const MIB: u64 = 1 << 20;
/// The function whose instructions are not counted (callgrind stops collecting inside it).
const UNCOUNTED_SEEDING: &str = "*tree_jitter_initialize";

/// What is counted per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Workload {
    /// One session: WebSocket handshake with a token, one 16-byte echo, close. In the proxy:
    /// the request head parsed, the token verified, the upstream upgrade request sent and its
    /// 101 read, the 101 answered, the echo relayed both ways, both closing handshakes.
    Setup,
    /// One MiB from the upstream to the client (the framebuffer direction) in messages of this size.
    Download {
        /// Payload bytes per message.
        message_size: usize,
    },
    /// One MiB from the client to the upstream (masked frames) in messages of this size.
    Upload {
        /// Payload bytes per message.
        message_size: usize,
    },
}

impl Workload {
    /// The published workloads: set-up, and 1 KiB and 64 KiB messages each way.
    pub fn all() -> Vec<Workload> {
        let mut all = vec![Workload::Setup];
        for message_size in [1024, 64 * 1024] {
            all.push(Workload::Download { message_size });
            all.push(Workload::Upload { message_size });
        }
        all
    }

    /// How the report names it.
    pub fn label(&self) -> String {
        match self {
            Workload::Setup => "session set-up (token, upgrade both legs, one echo, close)".into(),
            Workload::Download { message_size } => {
                format!("upstream->client, {} KiB messages", message_size / 1024)
            }
            Workload::Upload { message_size } => {
                format!("client->upstream, {} KiB messages", message_size / 1024)
            }
        }
    }

    /// The unit counted: a session or a MiB.
    pub fn unit(&self) -> &'static str {
        match self {
            Workload::Setup => "session",
            Workload::Download { .. } | Workload::Upload { .. } => "MiB",
        }
    }

    /// The small and the large run, in units.
    fn sizes(&self, quick: bool) -> (u64, u64) {
        match (self, quick) {
            (Workload::Setup, false) => (200, 1_200),
            (Workload::Setup, true) => (20, 100),
            (Workload::Download { message_size } | Workload::Upload { message_size }, _) => {
                let small_messages = *message_size < 16 * 1024;
                match (small_messages, quick) {
                    (true, false) => (4, 24),
                    (true, true) => (1, 5),
                    (false, false) => (8, 72),
                    (false, true) => (2, 10),
                }
            }
        }
    }

    /// The scenario of `units` units and the configuration whose VMs it needs.
    fn scenario(&self, units: u64) -> (ScenarioConfig, SingleScenario) {
        let mut config = ScenarioConfig::quick();
        config.idle_sessions = 0;
        config.throughput.clear();
        config.latency.clear();
        config.setup.clear();
        config.class_start.clear();
        config.steady.clear();
        config.time_limit = RUN_LIMIT;
        let throughput = |message_size: usize| ThroughputCase {
            message_size,
            total_bytes: units * MIB,
            sessions: 1,
        };
        let scenario = match *self {
            Workload::Setup => {
                let case = SetupCase {
                    loops: 1,
                    sessions_total: units,
                    duration: RUN_LIMIT,
                };
                config.setup.push(case);
                SingleScenario::Setup(case)
            }
            Workload::Download { message_size } => {
                config.throughput.push(throughput(message_size));
                SingleScenario::Download(throughput(message_size))
            }
            Workload::Upload { message_size } => {
                config.throughput.push(throughput(message_size));
                SingleScenario::Upload(throughput(message_size))
            }
        };
        (config, scenario)
    }
}

/// Everything [`count_instructions`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CountOptions {
    /// The `ws-proxy` binary (a release build: a debug build counts something else).
    pub proxy_bin: PathBuf,
    /// The `byte-relay` binary; `None` leaves the byte-relay column empty.
    pub byte_relay_bin: Option<PathBuf>,
    /// The valgrind program.
    pub valgrind: PathBuf,
    /// CPU the relays are pinned to (`taskset -c`); `None` runs them unpinned.
    pub cpu: Option<usize>,
    /// Small workloads (a CI report in a minute or two) instead of the published sizes.
    pub quick: bool,
    /// Where callgrind writes its files (kept for `callgrind_annotate`).
    pub out_dir: PathBuf,
    /// The HS256 secret the proxy verifies tokens with.
    pub secret: Secret,
    /// The workloads to count.
    pub workloads: Vec<Workload>,
}

impl CountOptions {
    /// All workloads at the published sizes, `valgrind` from `PATH`, pinned to CPU 0, files in
    /// the temporary directory, no byte-relay column.
    pub fn new(proxy_bin: PathBuf, secret: Secret) -> CountOptions {
        CountOptions {
            proxy_bin,
            byte_relay_bin: None,
            valgrind: PathBuf::from("valgrind"),
            cpu: Some(0),
            quick: false,
            out_dir: std::env::temp_dir().join(format!("loadgen-counts-{}", std::process::id())),
            secret,
            workloads: Workload::all(),
        }
    }
}

/// The two runs behind a per-unit figure.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CountRuns {
    /// Units of the small run and its instruction total.
    pub small: (u64, u64),
    /// Units of the large run and its instruction total.
    pub large: (u64, u64),
}

impl CountRuns {
    /// Instructions per unit: the difference of the totals over the difference of the units.
    pub fn per_unit(&self) -> f64 {
        let units = self.large.0.saturating_sub(self.small.0).max(1);
        (self.large.1 as f64 - self.small.1 as f64) / units as f64
    }
}

/// One workload's counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct CountRow {
    /// The workload.
    pub workload: Workload,
    /// The proxy's runs.
    pub proxy: CountRuns,
    /// The byte relay's runs, if it was counted.
    pub byte_relay: Option<CountRuns>,
}

impl CountRow {
    /// Proxy instructions per unit over the byte relay's.
    pub fn ratio(&self) -> Option<f64> {
        let relay = self.byte_relay?.per_unit();
        (relay > 0.0).then(|| self.proxy.per_unit() / relay)
    }
}

/// The counts of every workload, with how they were made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct CountReport {
    /// One row per workload.
    pub rows: Vec<CountRow>,
    /// How the counts were made (valgrind version, sizes, pinning).
    pub notes: Vec<String>,
}

impl CountReport {
    /// The report as a Markdown table and its notes.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| workload | unit | ws-proxy instructions | byte relay instructions | ws-proxy / byte relay |\n\
             |---|---|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let relay = row
                .byte_relay
                .map_or_else(|| "–".to_owned(), |runs| thousands(runs.per_unit()));
            let ratio = row
                .ratio()
                .map_or_else(|| "–".to_owned(), |ratio| format!("{ratio:.2}x"));
            out.push_str(&format!(
                "| {} | {} | {} | {relay} | {ratio} |\n",
                row.workload.label(),
                row.workload.unit(),
                thousands(row.proxy.per_unit()),
            ));
        }
        out.push('\n');
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, LoadgenError> {
        serde_json::to_string_pretty(self).map_err(LoadgenError::Json)
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}

/// Which relay a run counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    Proxy,
    ByteRelay,
}

impl Relay {
    fn kind(self) -> TargetKind {
        match self {
            Relay::Proxy => TargetKind::Proxy,
            Relay::ByteRelay => TargetKind::ByteRelay,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Relay::Proxy => "ws-proxy",
            Relay::ByteRelay => "byte-relay",
        }
    }
}

/// Counts every workload of `options` through the proxy and the byte relay.
pub async fn count_instructions(options: &CountOptions) -> Result<CountReport, LoadgenError> {
    std::fs::create_dir_all(&options.out_dir).map_err(|source| LoadgenError::WriteReport {
        path: options.out_dir.clone(),
        source,
    })?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for workload in &options.workloads {
        let proxy = count_runs(options, Relay::Proxy, *workload).await?;
        let byte_relay = match &options.byte_relay_bin {
            Some(_) => Some(count_runs(options, Relay::ByteRelay, *workload).await?),
            None => None,
        };
        rows.push(CountRow {
            workload: *workload,
            proxy,
            byte_relay,
        });
    }
    let mut notes = vec![
        format!(
            "{}; each figure is (total of the large run - total of the small run) / (units of the \
             large - units of the small), each run a fresh relay process under \
             `valgrind --tool=callgrind`",
            valgrind_version(&options.valgrind)
        ),
        match options.cpu {
            Some(cpu) => format!(
                "relays pinned to CPU {cpu} (ws-proxy runs its current-thread runtime); the load \
                 and the upstream are not counted"
            ),
            None => "relays not pinned; the load and the upstream are not counted".to_owned(),
        },
        format!(
            "callgrind files in {} ({} s in all)",
            options.out_dir.display(),
            started.elapsed().as_secs()
        ),
    ];
    if options.quick {
        notes.push("quick sizes: a report, not the published figures".to_owned());
    }
    Ok(CountReport { rows, notes })
}

/// The small and the large run of `workload` through `relay`.
async fn count_runs(
    options: &CountOptions,
    relay: Relay,
    workload: Workload,
) -> Result<CountRuns, LoadgenError> {
    let (small, large) = workload.sizes(options.quick);
    let small_total = count_run(options, relay, workload, small).await?;
    let large_total = count_run(options, relay, workload, large).await?;
    Ok(CountRuns {
        small: (small, small_total),
        large: (large, large_total),
    })
}

/// The instruction total of a fresh `relay` process that carried `units` of `workload`.
async fn count_run(
    options: &CountOptions,
    relay: Relay,
    workload: Workload,
    units: u64,
) -> Result<u64, LoadgenError> {
    let (config, scenario) = workload.scenario(units);
    let failed = |reason: String| LoadgenError::CountRunFailed {
        workload: workload.label(),
        units,
        relay: relay.kind(),
        reason,
    };
    let upstream = UpstreamServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &config.vmi_names(),
    )
    .await?;
    let slug: String = workload
        .label()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let out_file = options
        .out_dir
        .join(format!("{}.{slug}.{units}.callgrind", relay.slug()));
    let wrapper = vec![
        options.valgrind.clone().into_os_string(),
        OsString::from("--tool=callgrind"),
        // aws-lc seeds its random generator from CPU jitter at the first random bytes (the
        // proxy's first session id): 400 million instructions, more or fewer with the timing.
        // Left out, so the totals differ by the workload only.
        OsString::from(format!("--toggle-collect={UNCOUNTED_SEEDING}")),
        // A toggle makes callgrind start with collection off unless told otherwise.
        OsString::from("--collect-atstart=yes"),
        OsString::from(format!("--callgrind-out-file={}", out_file.display())),
    ];
    let port = free_port()?;
    let (mut child, target): (ChildProcess, Target) = match relay {
        Relay::Proxy => {
            let mut spawn = ProxySpawn::new(
                options.proxy_bin.clone(),
                port,
                upstream.base_url(),
                options.secret.clone(),
            );
            spawn.cpu = options.cpu;
            spawn.wrapper = wrapper;
            let child = spawn.start().await?;
            let token = mint_console_token(
                &options.secret,
                &config.namespace,
                &config.vmi_names(),
                Duration::from_secs(3600),
            )?;
            let template = format!("ws://127.0.0.1:{port}/{{token}}/{{vmi}}");
            (child, Target::proxy(template, Some(token)))
        }
        Relay::ByteRelay => {
            let binary = options
                .byte_relay_bin
                .as_deref()
                .unwrap_or(Path::new("byte-relay"));
            let upstream_port = upstream.local_addr().port();
            let child =
                start_byte_relay_under(&wrapper, binary, port, upstream_port, options.cpu).await?;
            (child, Target::byte_relay(&format!("ws://127.0.0.1:{port}")))
        }
    };
    upstream.wait_until_idle(config.settle_limit).await;
    tracing::info!(workload = %workload.label(), units, relay = relay.slug(), "counting");
    let outcome = play_single(&upstream, &target, &config, scenario).await;
    let status = child.terminate(EXIT_LIMIT).await?;
    if let Some(error) = outcome.first_error {
        return Err(failed(error));
    }
    if !outcome.completed || outcome.upstream_left_open > 0 {
        return Err(failed(format!(
            "completed {}, {} upstream connections left open",
            outcome.completed, outcome.upstream_left_open
        )));
    }
    tracing::debug!(%status, "relay exited");
    read_callgrind_total(&out_file)
}

/// The `totals:` (or `summary:`) line of a callgrind output file: instructions executed.
pub fn read_callgrind_total(path: &Path) -> Result<u64, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::CallgrindOutput {
        path: path.to_owned(),
        source,
    })?;
    parse_callgrind_total(&text).ok_or_else(|| LoadgenError::CallgrindOutput {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, "no `totals:` line"),
    })
}

fn parse_callgrind_total(text: &str) -> Option<u64> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .or_else(|| text.lines().find_map(|line| line.strip_prefix("summary:")))?;
    value.split_whitespace().next()?.parse().ok()
}

/// `valgrind --version`, or a note that it did not answer.
fn valgrind_version(valgrind: &Path) -> String {
    std::process::Command::new(valgrind)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|version| version.trim().to_owned())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| "valgrind (version unknown)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_line_is_the_count() {
        let text = "version: 1\ncmd: ws-proxy\nevents: Ir\nfl=(1) a.rs\n1 10\nsummary: 900\ntotals: 1234567\n";
        assert_eq!(parse_callgrind_total(text), Some(1_234_567));
        assert_eq!(parse_callgrind_total("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(parse_callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn per_unit_is_the_difference_over_the_units() {
        let runs = CountRuns {
            small: (100, 1_000_000),
            large: (600, 3_500_000),
        };
        assert_eq!(runs.per_unit(), 5_000.0);
    }

    #[test]
    fn large_numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn every_workload_runs_more_units_in_the_large_run() {
        for workload in Workload::all() {
            for quick in [false, true] {
                let (small, large) = workload.sizes(quick);
                assert!(0 < small && small < large, "{workload:?}");
            }
        }
    }
}
