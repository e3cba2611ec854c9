//! The scenarios and the runner that plays each of them against every target.
//!
//! Every scenario is bounded twice: by a count (bytes, round trips, sessions) and by
//! [`ScenarioConfig::time_limit`]. A scenario cut short by the clock is reported as not completed,
//! with what it measured until then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::LoadgenError;
use crate::process::read_rss_bytes;
use crate::report::{Metric, Outcome, Report, TargetInfo, Unit};
use crate::target::{ClientSocket, Target, TargetKind};
use crate::token::Secret;
use crate::upstream::{Mode, UpstreamServer};

/// Payload size of latency and setup probes.
const PROBE_SIZE: usize = 16;
/// Sessions opened at once while building up the idle population.
const IDLE_OPEN_CONCURRENCY: usize = 64;
/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// Throughput in one direction with one message size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputCase {
    /// Payload bytes per message.
    pub message_size: usize,
    /// Payload bytes in all, split evenly over the sessions (rounded up to whole messages).
    pub total_bytes: u64,
    /// Concurrent sessions.
    pub sessions: usize,
}

/// Round-trip latency of 16-byte messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyCase {
    /// Concurrent sessions, each a sequential ping-pong loop.
    pub sessions: usize,
    /// Round trips per session.
    pub round_trips_per_session: u64,
}

/// A class starting: `browsers` users, each with a token and a VM of its own, open their
/// consoles evenly spread over `spread` and each waits for its VM's first RFB bytes; the report
/// gives the p50, p99 and max of that wait and the consoles that opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassStartCase {
    /// Browsers (users) in the class.
    pub browsers: usize,
    /// Over how long their connections start.
    pub spread: Duration,
}

/// Steady state: `consoles` consoles of one traffic mix open for `hold`; the report gives the
/// relay's CPU per 1,000 consoles, consoles per core, RSS per console and key-to-echo p50/p99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyCase {
    /// The traffic of each console.
    pub mix: TrafficMix,
    /// Consoles open at once.
    pub consoles: usize,
    /// How long they are measured (after a one-second warm-up).
    pub hold: Duration,
}

/// Session set-up rate: handshake (with token), one echo, close. With one loop the report also
/// gives the median time of each phase (handshake, first echo, close until the end of the stream).
///
/// A rate, so it ends normally at whichever comes first, `sessions_total` or `duration` (a
/// fork-per-connection relay like socat reaches far fewer sessions in the same time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupCase {
    /// Concurrent loops.
    pub loops: usize,
    /// Sessions in all, over all loops, at most.
    pub sessions_total: u64,
    /// After this long, no loop starts another session.
    pub duration: Duration,
}

/// What a run does. [`ScenarioConfig::full`] is the published configuration,
/// [`ScenarioConfig::quick`] a seconds-long smoke run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScenarioConfig {
    /// Whether this is the quick configuration (recorded in the report).
    pub quick: bool,
    /// The namespace put into tokens and upstream paths.
    pub namespace: String,
    /// N concurrent idle sessions held open (0 skips the scenario).
    pub idle_sessions: usize,
    /// How long the idle sessions stay open before they are checked and closed.
    pub idle_hold: Duration,
    /// Throughput cases, each run upstream->client and client->upstream.
    pub throughput: Vec<ThroughputCase>,
    /// Latency cases.
    pub latency: Vec<LatencyCase>,
    /// Set-up rate cases.
    pub setup: Vec<SetupCase>,
    /// Class-start cases.
    pub class_start: Vec<ClassStartCase>,
    /// Steady-state cases (played once per target, like the idle scenario).
    pub steady: Vec<SteadyCase>,
    /// How many times each throughput, latency and set-up scenario is played on every target,
    /// the targets back to back in each round (the report gives medians; idle runs once; 0
    /// counts as 1).
    pub rounds: usize,
    /// Wall-time limit of one scenario on one target.
    pub time_limit: Duration,
    /// How long to wait after a scenario for the upstream's connections to close.
    pub settle_limit: Duration,
}

impl ScenarioConfig {
    /// The published configuration: 4 GiB / 512 MiB throughput runs, 20,000 round trips per
    /// latency case, thousands of set-ups, 9,900 idle sessions; 30 s limit per scenario and target.
    pub fn full() -> ScenarioConfig {
        let mut throughput = Vec::new();
        // Seconds per run at loopback speeds: shorter runs vary too much on a shared machine.
        for (message_size, total_bytes) in [(1024, 512 << 20), (64 << 10, 4 << 30)] {
            for sessions in [1, 8] {
                throughput.push(ThroughputCase {
                    message_size,
                    total_bytes,
                    sessions,
                });
            }
        }
        ScenarioConfig {
            quick: false,
            namespace: "loadgen".to_owned(),
            idle_sessions: 9_900,
            idle_hold: Duration::from_secs(2),
            throughput,
            latency: vec![
                LatencyCase {
                    sessions: 1,
                    round_trips_per_session: 20_000,
                },
                LatencyCase {
                    sessions: 100,
                    round_trips_per_session: 200,
                },
            ],
            setup: vec![
                SetupCase {
                    loops: 1,
                    sessions_total: 2_000,
                    duration: Duration::from_secs(10),
                },
                SetupCase {
                    loops: 16,
                    sessions_total: 8_000,
                    duration: Duration::from_secs(10),
                },
            ],
            class_start: [300, 2_000]
                .into_iter()
                .map(|browsers| ClassStartCase {
                    browsers,
                    spread: Duration::from_secs(1),
                })
                .collect(),
            steady: RECORDED_MIXES
                .iter()
                .flat_map(|mix| {
                    [1_000, 5_000].map(|consoles| SteadyCase {
                        mix: *mix,
                        consoles,
                        hold: Duration::from_secs(10),
                    })
                })
                .collect(),
            rounds: 3,
            time_limit: Duration::from_secs(30),
            settle_limit: Duration::from_secs(5),
        }
    }

    /// Everything small: same scenario shapes, a few hundred KiB and a few dozen sessions.
    pub fn quick() -> ScenarioConfig {
        let mut throughput = Vec::new();
        for (message_size, total_bytes) in [(1024, 256 << 10), (64 << 10, 2 << 20)] {
            for sessions in [1, 8] {
                throughput.push(ThroughputCase {
                    message_size,
                    total_bytes,
                    sessions,
                });
            }
        }
        ScenarioConfig {
            quick: true,
            namespace: "loadgen".to_owned(),
            idle_sessions: 20,
            idle_hold: Duration::from_millis(50),
            throughput,
            latency: vec![
                LatencyCase {
                    sessions: 1,
                    round_trips_per_session: 100,
                },
                LatencyCase {
                    sessions: 10,
                    round_trips_per_session: 10,
                },
            ],
            setup: vec![
                SetupCase {
                    loops: 1,
                    sessions_total: 10,
                    duration: Duration::from_secs(5),
                },
                SetupCase {
                    loops: 4,
                    sessions_total: 20,
                    duration: Duration::from_secs(5),
                },
            ],
            class_start: vec![ClassStartCase {
                browsers: 20,
                spread: Duration::from_millis(200),
            }],
            steady: RECORDED_MIXES
                .iter()
                .map(|mix| SteadyCase {
                    mix: *mix,
                    consoles: 20,
                    hold: Duration::from_millis(500),
                })
                .collect(),
            rounds: 1,
            time_limit: Duration::from_secs(10),
            settle_limit: Duration::from_secs(5),
        }
    }

    /// Every upstream mode (VM name) this configuration uses: what a token must allow.
    pub fn vmi_names(&self) -> Vec<String> {
        let mut names = vec![Mode::Echo.to_string()];
        if !self.class_start.is_empty() {
            names.push(Mode::Rfb.to_string());
        }
        for case in &self.steady {
            names.push(case.mix.mode().to_string());
        }
        for case in &self.throughput {
            let per_session = per_session_bytes(case);
            names.push(
                Mode::Source {
                    message_size: case.message_size,
                    total_bytes: per_session,
                }
                .to_string(),
            );
            names.push(
                Mode::Sink {
                    ack_after: Some(per_session),
                }
                .to_string(),
            );
        }
        names.sort();
        names.dedup();
        names
    }
}

fn per_session_bytes(case: &ThroughputCase) -> u64 {
    let size = case.message_size.max(1) as u64;
    let sessions = case.sessions.max(1) as u64;
    case.total_bytes.div_ceil(size).div_ceil(sessions) * size
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn mebibytes_per_second(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / (1024.0 * 1024.0) / secs
    } else {
        0.0
    }
}

/// The error and its sources on one line (errors here never contain tokens or secrets).
fn describe(error: &LoadgenError) -> String {
    proxy_core::ErrorChain(error).to_string()
}

#[derive(Debug, Default)]
struct ErrorTally {
    count: u64,
    first: Option<String>,
}

impl ErrorTally {
    fn add(&mut self, error: &LoadgenError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(describe(error));
        }
    }

    fn add_text(&mut self, error: String) {
        self.count += 1;
        self.first.get_or_insert(error);
    }

    fn merge(&mut self, other: ErrorTally) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn into_outcome(self, outcome: &mut Outcome) {
        outcome.errors += self.count;
        if outcome.first_error.is_none() {
            outcome.first_error = self.first;
        }
    }
}

/// Plays the scenarios of `config` against every target in turn (scenario by scenario, so a drift
/// of the machine hits all columns alike) and builds the report.
///
/// The idle scenario runs first, so the proxy's memory is measured before the other scenarios
/// have grown its heap. It is skipped for socat, which forks one process per connection.
pub async fn run_scenarios(
    upstream: &UpstreamServer,
    targets: &[Target],
    config: &ScenarioConfig,
) -> Report {
    run_scenarios_on(&[upstream], targets, config).await
}

/// [`run_scenarios`] with several upstreams (the in-cluster target's own TLS upstream beside the
/// plain one): their counters are summed, and every one must be idle after each scenario.
pub async fn run_scenarios_on(
    upstreams: &[&UpstreamServer],
    targets: &[Target],
    config: &ScenarioConfig,
) -> Report {
    let infos = targets
        .iter()
        .map(|target| TargetInfo {
            kind: target.kind(),
            url_template: target.url_template().to_owned(),
            pid: target.pid(),
        })
        .collect();
    let mut report = Report::new(config.quick, infos);
    // Zero rounds would silently measure nothing: every scenario runs at least once.
    let rounds = config.rounds.max(1);
    if rounds > 1 {
        report.note(format!(
            "throughput, latency and set-up: {} rounds, every target back to back in each round, \
             the order rotated by one each round; values are medians, ratios the medians of the \
             round-by-round ratios (lowest and highest round in brackets)",
            rounds
        ));
    }
    note_rss(&mut report, targets, "before the run");
    let mut runner = Runner {
        upstreams,
        config,
        report,
        left_open: Vec::new(),
    };

    if config.idle_sessions > 0 {
        let name = format!("idle sessions x{}", config.idle_sessions);
        for target in targets {
            match target.kind() {
                TargetKind::Socat => {
                    runner.report.note(
                        "idle sessions are not run through socat: it forks one process per connection",
                    );
                    continue;
                }
                TargetKind::ByteRelay => {
                    runner.report.note(
                        "idle sessions are not run through the byte relay: its memory is not the question",
                    );
                    continue;
                }
                TargetKind::Direct
                | TargetKind::Websocat
                | TargetKind::PythonOriginal
                | TargetKind::Proxy
                | TargetKind::ProxyInCluster => {}
            }
            runner.play(&name, target, idle::idle(target, config)).await;
        }
    }
    // websocat relays every connection to the echo VM: it plays the echo scenarios only.
    let any_vm = |target: &&Target| target.kind() != TargetKind::Websocat;
    for case in &config.throughput {
        let label = format!("{} x{}", size_label(case.message_size), case.sessions);
        let down = format!("throughput upstream->client {label}");
        let up = format!("throughput client->upstream {label}");
        for round in 0..rounds {
            for target in in_round_order(targets, round).filter(any_vm) {
                runner
                    .play(&down, target, throughput::down(target, config, case, &down))
                    .await;
            }
            for target in in_round_order(targets, round).filter(any_vm) {
                runner
                    .play(&up, target, throughput::up(target, config, case, &up))
                    .await;
            }
        }
    }
    for case in &config.latency {
        let name = format!("round trip {} x{}", size_label(PROBE_SIZE), case.sessions);
        for round in 0..rounds {
            for target in in_round_order(targets, round) {
                runner
                    .play(&name, target, latency::latency(target, config, case, &name))
                    .await;
            }
        }
    }
    for case in &config.setup {
        let name = format!("session setup x{} loops", case.loops);
        for round in 0..rounds {
            for target in in_round_order(targets, round) {
                runner
                    .play(&name, target, setup::setup(target, config, case, &name))
                    .await;
            }
        }
    }
    for case in &config.class_start {
        let name = format!("class start x{} in {:?}", case.browsers, case.spread);
        for round in 0..rounds {
            for target in in_round_order(targets, round).filter(any_vm) {
                runner
                    .play(
                        &name,
                        target,
                        class_start::class_start(target, config, case, &name),
                    )
                    .await;
            }
        }
    }
    for case in &config.steady {
        let name = format!("steady {} x{}", case.mix.name, case.consoles);
        for target in targets.iter().filter(any_vm) {
            if target.kind() == TargetKind::Socat {
                continue;
            }
            runner
                .play(&name, target, steady::steady(target, config, case, &name))
                .await;
        }
    }
    runner.finish(targets)
}

/// One scenario played on its own, by a caller that measures around it (the instruction counts
/// of [`crate::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleScenario {
    /// Session set-up: handshake with token, one echo, close.
    Setup(SetupCase),
    /// Bytes from the upstream to the client.
    Download(ThroughputCase),
    /// Bytes from the client to the upstream.
    Upload(ThroughputCase),
}

/// Plays `scenario` once against `target` (whose VMs `config` names) and waits for the upstream
/// to be idle; the outcome says whether it completed and left nothing open.
pub async fn play_single(
    upstream: &UpstreamServer,
    target: &Target,
    config: &ScenarioConfig,
    scenario: SingleScenario,
) -> Outcome {
    let name = "single";
    let mut outcome = match scenario {
        SingleScenario::Setup(case) => setup::setup(target, config, &case, name).await,
        SingleScenario::Download(case) => throughput::down(target, config, &case, name).await,
        SingleScenario::Upload(case) => throughput::up(target, config, &case, name).await,
    };
    outcome.upstream_left_open = upstream.wait_until_idle(config.settle_limit).await;
    outcome
}

/// The targets in the order round `round` plays them: rotated by one each round, so no target
/// always runs first (on a cold host) or right after the same neighbour.
fn in_round_order(targets: &[Target], round: usize) -> impl Iterator<Item = &Target> {
    let start = match targets.len() {
        0 => 0,
        len => round % len,
    };
    targets.iter().cycle().skip(start).take(targets.len())
}

/// Notes the resident memory of every target that has a process.
fn note_rss(report: &mut Report, targets: &[Target], when: &str) {
    for target in targets {
        let rss = target.pid().map(read_rss_bytes);
        if let Some(Ok(rss)) = rss {
            report.note(format!("{} RSS {when}: {} KiB", target.kind(), rss / 1024));
        }
    }
}

struct Runner<'a> {
    upstreams: &'a [&'a UpstreamServer],
    config: &'a ScenarioConfig,
    report: Report,
    left_open: Vec<(TargetKind, u64)>,
}

impl Runner<'_> {
    async fn play(&mut self, name: &str, target: &Target, scenario: impl Future<Output = Outcome>) {
        tracing::info!(scenario = name, target = %target.kind(), "running");
        let (received_before, sent_before) = self.upstream_bytes();
        let mut outcome = scenario.await;
        outcome.upstream_left_open = 0;
        for upstream in self.upstreams {
            outcome.upstream_left_open += upstream.wait_until_idle(self.config.settle_limit).await;
        }
        let (received_after, sent_after) = self.upstream_bytes();
        outcome.upstream_bytes_received = received_after - received_before;
        outcome.upstream_bytes_sent = sent_after - sent_before;
        match self
            .left_open
            .iter_mut()
            .find(|(kind, _)| *kind == target.kind())
        {
            Some((_, count)) => *count += outcome.upstream_left_open,
            None => self
                .left_open
                .push((target.kind(), outcome.upstream_left_open)),
        }
        tracing::info!(
            scenario = name,
            target = %target.kind(),
            errors = outcome.errors,
            completed = outcome.completed,
            "done"
        );
        self.report.record(name, target.kind(), outcome);
    }

    /// Bytes received and sent by all upstreams together.
    fn upstream_bytes(&self) -> (u64, u64) {
        self.upstreams
            .iter()
            .fold((0, 0), |(received, sent), upstream| {
                let stats = upstream.stats();
                (received + stats.bytes_received, sent + stats.bytes_sent)
            })
    }

    fn finish(mut self, targets: &[Target]) -> Report {
        let name = "upstream connections left open after sessions ended";
        for (kind, count) in std::mem::take(&mut self.left_open) {
            let outcome = Outcome {
                completed: true,
                upstream_left_open: count,
                metrics: vec![Metric::new(name, Unit::Connections, count as f64)],
                ..Outcome::default()
            };
            self.report.record(name, kind, outcome);
        }
        note_rss(&mut self.report, targets, "after the run");
        self.report
    }
}

/// Connects `count` sessions to `vmi`, [`IDLE_OPEN_CONCURRENCY`] at a time, within `deadline`;
/// failures are counted into `errors`.
async fn open_concurrently(
    target: &Target,
    url: &Secret,
    vmi: &str,
    count: usize,
    deadline: Instant,
    errors: &mut ErrorTally,
) -> Vec<ClientSocket> {
    let opened: Vec<Result<ClientSocket, LoadgenError>> = stream::iter(0..count)
        .map(|_| async {
            timeout_at(deadline, target.connect(url, vmi))
                .await
                .unwrap_or(Err(LoadgenError::TimeLimit {
                    waiting_for: "the WebSocket handshake",
                }))
        })
        .buffer_unordered(IDLE_OPEN_CONCURRENCY)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(opened.len());
    for result in opened {
        match result {
            Ok(socket) => sockets.push(socket),
            Err(error) => errors.add(&error),
        }
    }
    sockets
}

/// Connects `count` sessions to `vmi`, one after the other, within `deadline`.
async fn connect_all(
    target: &Target,
    url: &Secret,
    vmi: &str,
    count: usize,
    deadline: Instant,
    errors: &mut ErrorTally,
) -> Vec<ClientSocket> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        match timeout_at(deadline, target.connect(url, vmi)).await {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(error)) => errors.add(&error),
            Err(_) => {
                errors.add(&LoadgenError::TimeLimit {
                    waiting_for: "the WebSocket handshake",
                });
                break;
            }
        }
    }
    sockets
}

/// Sends a close frame and reads until the peer's close, for at most [`CLOSE_LIMIT`].
async fn close_gracefully(mut socket: ClientSocket) {
    let _ = timeout(CLOSE_LIMIT, async {
        if socket.close(None).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}

/// Reads the next data message, skipping control frames.
async fn next_data(
    socket: &mut ClientSocket,
    waiting_for: &'static str,
) -> Result<Bytes, LoadgenError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
            Some(Ok(Message::Text(text))) => return Ok(Bytes::copy_from_slice(text.as_bytes())),
            Some(Ok(Message::Close(_))) | None => {
                return Err(LoadgenError::EndedEarly { waiting_for });
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(LoadgenError::session(error)),
        }
    }
}

/// The time a group of sessions took: from `start` to the last one's finish.
fn span(start: Instant, finishes: &[Instant]) -> Duration {
    finishes
        .iter()
        .max()
        .map(|last| last.duration_since(start))
        .unwrap_or_default()
}

mod class_start;
mod idle;
mod latency;
mod setup;
mod steady;
mod throughput;

pub use latency::percentile;
pub use steady::{RECORDED_MIXES, TrafficMix};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_rotates_the_target_order_by_one() {
        let targets = [
            Target::direct("ws://127.0.0.1:1"),
            Target::socat("ws://127.0.0.1:2"),
            Target::proxy("ws://127.0.0.1:3/{token}/{vmi}", None),
        ];
        let order = |round| -> Vec<TargetKind> {
            in_round_order(&targets, round).map(Target::kind).collect()
        };
        assert_eq!(
            order(0),
            [TargetKind::Direct, TargetKind::Socat, TargetKind::Proxy]
        );
        assert_eq!(
            order(1),
            [TargetKind::Socat, TargetKind::Proxy, TargetKind::Direct]
        );
        assert_eq!(order(3), order(0));
        assert_eq!(in_round_order(&[], 2).count(), 0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(500.0));
        assert_eq!(percentile(&samples, 99.0), Some(990.0));
        assert_eq!(percentile(&samples, 99.9), Some(999.0));
        assert_eq!(percentile(&samples, 100.0), Some(1000.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 99.9), Some(3.0));
    }

    #[test]
    fn per_session_bytes_are_whole_messages_covering_the_total() {
        let case = ThroughputCase {
            message_size: 1000,
            total_bytes: 10_001,
            sessions: 3,
        };
        assert_eq!(per_session_bytes(&case), 4000);
    }

    #[test]
    fn token_allow_list_covers_every_mode_used() {
        let config = ScenarioConfig::quick();
        let names = config.vmi_names();
        assert!(names.contains(&"echo".to_owned()));
        for case in &config.throughput {
            let per_session = per_session_bytes(case);
            assert!(names.contains(&format!("source-{}-{per_session}", case.message_size)));
            assert!(names.contains(&format!("sink-{per_session}")));
        }
    }
}
