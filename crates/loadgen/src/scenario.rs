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
            rounds: 1,
            time_limit: Duration::from_secs(10),
            settle_limit: Duration::from_secs(5),
        }
    }

    /// Every upstream mode (VM name) this configuration uses: what a token must allow.
    pub fn vmi_names(&self) -> Vec<String> {
        let mut names = vec![Mode::Echo.to_string()];
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
        upstream,
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
                TargetKind::Direct | TargetKind::Proxy => {}
            }
            runner.play(&name, target, idle(target, config)).await;
        }
    }
    for case in &config.throughput {
        let label = format!("{} x{}", size_label(case.message_size), case.sessions);
        let down = format!("throughput upstream->client {label}");
        let up = format!("throughput client->upstream {label}");
        for round in 0..rounds {
            for target in in_round_order(targets, round) {
                runner
                    .play(&down, target, throughput_down(target, config, case, &down))
                    .await;
            }
            for target in in_round_order(targets, round) {
                runner
                    .play(&up, target, throughput_up(target, config, case, &up))
                    .await;
            }
        }
    }
    for case in &config.latency {
        let name = format!("round trip {} x{}", size_label(PROBE_SIZE), case.sessions);
        for round in 0..rounds {
            for target in in_round_order(targets, round) {
                runner
                    .play(&name, target, latency(target, config, case, &name))
                    .await;
            }
        }
    }
    for case in &config.setup {
        let name = format!("session setup x{} loops", case.loops);
        for round in 0..rounds {
            for target in in_round_order(targets, round) {
                runner
                    .play(&name, target, setup(target, config, case, &name))
                    .await;
            }
        }
    }
    runner.finish(targets)
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
    upstream: &'a UpstreamServer,
    config: &'a ScenarioConfig,
    report: Report,
    left_open: Vec<(TargetKind, u64)>,
}

impl Runner<'_> {
    async fn play(&mut self, name: &str, target: &Target, scenario: impl Future<Output = Outcome>) {
        tracing::info!(scenario = name, target = %target.kind(), "running");
        let before = self.upstream.stats();
        let mut outcome = scenario.await;
        outcome.upstream_left_open = self
            .upstream
            .wait_until_idle(self.config.settle_limit)
            .await;
        let after = self.upstream.stats();
        outcome.upstream_bytes_received = after.bytes_received - before.bytes_received;
        outcome.upstream_bytes_sent = after.bytes_sent - before.bytes_sent;
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

async fn throughput_down(
    target: &Target,
    config: &ScenarioConfig,
    case: &ThroughputCase,
    name: &str,
) -> Outcome {
    let per_session = per_session_bytes(case);
    let vmi = Mode::Source {
        message_size: case.message_size,
        total_bytes: per_session,
    }
    .to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let sockets = connect_all(target, &url, &vmi, case.sessions, deadline, &mut errors).await;

    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut sessions = JoinSet::new();
    for socket in sockets {
        sessions.spawn(receive_from_source(
            socket,
            per_session,
            Arc::clone(&received),
            deadline,
        ));
    }
    let finishes = join_sessions(&mut sessions, &mut errors).await;
    let received = received.load(Ordering::Relaxed);
    let elapsed = span(start, &finishes);
    let outcome = Outcome {
        client_bytes_received: received,
        ..Outcome::default()
    };
    throughput_outcome(outcome, case, name, per_session, received, elapsed, errors)
}

async fn receive_from_source(
    mut socket: ClientSocket,
    expected: u64,
    received: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<Instant, LoadgenError> {
    let body = async {
        socket
            .send(Message::binary(Bytes::from_static(b"go")))
            .await
            .map_err(LoadgenError::session)?;
        let mut mine = 0u64;
        while mine < expected {
            let bytes = next_data(&mut socket, "the source's data").await?;
            mine += bytes.len() as u64;
            received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(Instant::now())
    };
    let finished = timeout_at(deadline, body).await;
    // The source closes after its last message; answer it so its connection ends cleanly.
    close_gracefully(socket).await;
    finished.unwrap_or(Err(LoadgenError::TimeLimit {
        waiting_for: "the source's data",
    }))
}

async fn throughput_up(
    target: &Target,
    config: &ScenarioConfig,
    case: &ThroughputCase,
    name: &str,
) -> Outcome {
    let per_session = per_session_bytes(case);
    let vmi = Mode::Sink {
        ack_after: Some(per_session),
    }
    .to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let sockets = connect_all(target, &url, &vmi, case.sessions, deadline, &mut errors).await;

    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut sessions = JoinSet::new();
    for socket in sockets {
        sessions.spawn(send_to_sink(
            socket,
            case.message_size,
            per_session,
            Arc::clone(&sent),
            deadline,
        ));
    }
    let finishes = join_sessions(&mut sessions, &mut errors).await;
    let sent = sent.load(Ordering::Relaxed);
    let elapsed = span(start, &finishes);
    let outcome = Outcome {
        client_bytes_sent: sent,
        ..Outcome::default()
    };
    throughput_outcome(outcome, case, name, per_session, sent, elapsed, errors)
}

/// Completes the outcome of a throughput run that moved `moved` bytes in `elapsed`, complete when
/// nothing failed and every session moved its `per_session` bytes.
fn throughput_outcome(
    mut outcome: Outcome,
    case: &ThroughputCase,
    name: &str,
    per_session: u64,
    moved: u64,
    elapsed: Duration,
    errors: ErrorTally,
) -> Outcome {
    outcome.sessions = case.sessions as u64;
    outcome.operations = moved.div_ceil(case.message_size.max(1) as u64);
    outcome.elapsed_secs = elapsed.as_secs_f64();
    outcome.completed = errors.count == 0 && moved == per_session * case.sessions as u64;
    outcome.metrics = vec![Metric::new(
        name,
        Unit::MebibytesPerSecond,
        mebibytes_per_second(moved, elapsed),
    )];
    errors.into_outcome(&mut outcome);
    outcome
}

async fn send_to_sink(
    mut socket: ClientSocket,
    message_size: usize,
    total: u64,
    sent: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<Instant, LoadgenError> {
    let body = async {
        let payload = Bytes::from(vec![0x5A; message_size]);
        let mut mine = 0u64;
        while mine < total {
            let len = (total - mine).min(message_size as u64);
            // `len <= message_size`, a usize.
            socket
                .feed(Message::Binary(payload.slice(..len as usize)))
                .await
                .map_err(LoadgenError::session)?;
            mine += len;
            sent.fetch_add(len, Ordering::Relaxed);
        }
        socket.flush().await.map_err(LoadgenError::session)?;
        let acknowledgement = next_data(&mut socket, "the sink's byte count").await?;
        let counted: Option<u64> = std::str::from_utf8(&acknowledgement)
            .ok()
            .and_then(|text| text.parse().ok());
        if counted != Some(total) {
            return Err(LoadgenError::UnexpectedMessage {
                expected: "the sink's count equal to the bytes sent",
            });
        }
        Ok(Instant::now())
    };
    let finished = timeout_at(deadline, body).await;
    close_gracefully(socket).await;
    finished.unwrap_or(Err(LoadgenError::TimeLimit {
        waiting_for: "the sink's byte count",
    }))
}

/// Waits for every session task; returns the finish times of the successful ones and counts the
/// failures into `errors`.
async fn join_sessions(
    sessions: &mut JoinSet<Result<Instant, LoadgenError>>,
    errors: &mut ErrorTally,
) -> Vec<Instant> {
    let mut finishes = Vec::new();
    while let Some(joined) = sessions.join_next().await {
        match joined {
            Ok(Ok(finish)) => finishes.push(finish),
            Ok(Err(error)) => errors.add(&error),
            Err(join_error) => errors.add_text(format!("session task failed: {join_error}")),
        }
    }
    finishes
}

/// The value at percentile `p` (0..=100) of ascending `sorted` samples, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The small tolerance keeps decimal percentiles exact (99.9% of 1000 is rank 999, not 1000).
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

async fn latency(
    target: &Target,
    config: &ScenarioConfig,
    case: &LatencyCase,
    name: &str,
) -> Outcome {
    let vmi = Mode::Echo.to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let sockets = connect_all(target, &url, &vmi, case.sessions, deadline, &mut errors).await;

    let mut sessions = JoinSet::new();
    for socket in sockets {
        sessions.spawn(ping_pong(socket, case.round_trips_per_session, deadline));
    }
    let mut samples = Vec::new();
    while let Some(joined) = sessions.join_next().await {
        match joined {
            Ok((mine, failure)) => {
                samples.extend(mine);
                if let Some(error) = failure {
                    errors.add(&error);
                }
            }
            Err(join_error) => errors.add_text(format!("session task failed: {join_error}")),
        }
    }
    samples.sort_by(f64::total_cmp);
    let expected = case.sessions as u64 * case.round_trips_per_session;
    let mut metrics = Vec::new();
    for (label, p) in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)] {
        if let Some(value) = percentile(&samples, p) {
            metrics.push(Metric::new(
                format!("{name} {label}"),
                Unit::Microseconds,
                value,
            ));
        }
    }
    let probes = samples.len() as u64 * PROBE_SIZE as u64;
    let mut outcome = Outcome {
        sessions: case.sessions as u64,
        operations: samples.len() as u64,
        client_bytes_sent: probes,
        client_bytes_received: probes,
        elapsed_secs: 0.0,
        completed: errors.count == 0 && samples.len() as u64 == expected,
        metrics,
        ..Outcome::default()
    };
    errors.into_outcome(&mut outcome);
    outcome
}

/// Sequential round trips on one session; returns the samples (microseconds) and the error that
/// stopped it early, if any.
async fn ping_pong(
    mut socket: ClientSocket,
    round_trips: u64,
    deadline: Instant,
) -> (Vec<f64>, Option<LoadgenError>) {
    let payload = Bytes::from_static(&[0x7E; PROBE_SIZE]);
    let mut samples = Vec::with_capacity(usize::try_from(round_trips).unwrap_or(0));
    let mut failure = None;
    for _ in 0..round_trips {
        let sent_at = Instant::now();
        let round_trip = async {
            socket
                .send(Message::Binary(payload.clone()))
                .await
                .map_err(LoadgenError::session)?;
            let echo = next_data(&mut socket, "the echo").await?;
            if echo.len() != PROBE_SIZE {
                return Err(LoadgenError::UnexpectedMessage {
                    expected: "a 16-byte echo",
                });
            }
            Ok(())
        };
        match timeout_at(deadline, round_trip).await {
            Ok(Ok(())) => samples.push(sent_at.elapsed().as_secs_f64() * 1e6),
            Ok(Err(error)) => {
                failure = Some(error);
                break;
            }
            Err(_) => {
                failure = Some(LoadgenError::TimeLimit {
                    waiting_for: "the echo",
                });
                break;
            }
        }
    }
    close_gracefully(socket).await;
    (samples, failure)
}

async fn setup(target: &Target, config: &ScenarioConfig, case: &SetupCase, name: &str) -> Outcome {
    let vmi = Arc::new(Mode::Echo.to_string());
    let url = Arc::new(target.session_url(&config.namespace, &vmi));
    let deadline = Instant::now() + config.time_limit;
    let tickets = Arc::new(AtomicU64::new(case.sessions_total));
    let start = Instant::now();
    let stop_starting_at = start + case.duration;
    let mut loops = JoinSet::new();
    for _ in 0..case.loops {
        let (target, url, vmi, tickets) = (
            target.clone(),
            Arc::clone(&url),
            Arc::clone(&vmi),
            Arc::clone(&tickets),
        );
        let bounds = (stop_starting_at, deadline);
        loops.spawn(async move { setup_loop(&target, &url, &vmi, &tickets, bounds).await });
    }
    let mut completed_sessions = 0u64;
    let mut errors = ErrorTally::default();
    let mut finishes = Vec::new();
    let mut phases = Vec::new();
    let mut cut_short = false;
    while let Some(joined) = loops.join_next().await {
        match joined {
            Ok(ended) => {
                phases.extend(ended.phases);
                completed_sessions += ended.sessions;
                errors.merge(ended.errors);
                finishes.push(ended.at);
                cut_short |= ended.cut_short;
            }
            Err(join_error) => errors.add_text(format!("set-up loop failed: {join_error}")),
        }
    }
    let elapsed = span(start, &finishes);
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        completed_sessions as f64 / elapsed.as_secs_f64()
    };
    let probes = completed_sessions * PROBE_SIZE as u64;
    let mut outcome = Outcome {
        sessions: case.sessions_total,
        operations: completed_sessions,
        client_bytes_sent: probes,
        client_bytes_received: probes,
        elapsed_secs: elapsed.as_secs_f64(),
        completed: errors.count == 0 && !cut_short,
        metrics: vec![Metric::new(name, Unit::SessionsPerSecond, rate)],
        ..Outcome::default()
    };
    // With one loop the sessions run one after the other, so each phase's time is its own.
    if case.loops == 1 {
        outcome.metrics.extend(phase_medians(name, &phases));
    }
    errors.into_outcome(&mut outcome);
    outcome
}

/// The median of each session phase, as `{name}: handshake p50` and so on.
fn phase_medians(name: &str, phases: &[SessionPhases]) -> Vec<Metric> {
    let median_of = |phase: fn(&SessionPhases) -> f64| {
        let mut samples: Vec<f64> = phases.iter().map(phase).collect();
        samples.sort_by(f64::total_cmp);
        percentile(&samples, 50.0)
    };
    [
        ("handshake", median_of(|p| p.handshake)),
        ("first echo", median_of(|p| p.echo)),
        ("close until the end of the stream", median_of(|p| p.close)),
    ]
    .into_iter()
    .filter_map(|(phase, median)| {
        median.map(|value| Metric::new(format!("{name}: {phase} p50"), Unit::Microseconds, value))
    })
    .collect()
}

/// Consecutive failures after which a set-up loop gives up instead of spinning.
const SETUP_FAILURES_IN_A_ROW: u32 = 3;

/// How long each phase of one set-up session took, in microseconds.
#[derive(Debug, Clone, Copy)]
struct SessionPhases {
    /// TCP connect and WebSocket handshake (through the proxy: token check, upstream dial, 101).
    handshake: f64,
    /// One 16-byte message there and back.
    echo: f64,
    /// From sending the close frame to the end of the stream.
    close: f64,
}

/// How a set-up loop ended.
struct SetupLoopEnd {
    /// Phase timings of every completed session.
    phases: Vec<SessionPhases>,
    sessions: u64,
    errors: ErrorTally,
    at: Instant,
    /// Stopped by the hard time limit or by repeated failures rather than by its bounds.
    cut_short: bool,
}

/// Runs sessions while tickets are left and `stop_starting_at` has not passed; `deadline` is the
/// scenario's hard limit.
async fn setup_loop(
    target: &Target,
    url: &Secret,
    vmi: &str,
    tickets: &AtomicU64,
    (stop_starting_at, deadline): (Instant, Instant),
) -> SetupLoopEnd {
    let payload = Bytes::from_static(&[0x3C; PROBE_SIZE]);
    let mut done = 0;
    let mut phases = Vec::new();
    let mut errors = ErrorTally::default();
    let mut failures_in_a_row = 0;
    let mut cut_short = false;
    while Instant::now() < stop_starting_at
        && tickets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    {
        let session = async {
            let started = Instant::now();
            let mut socket = target.connect(url, vmi).await?;
            let upgraded = Instant::now();
            socket
                .send(Message::Binary(payload.clone()))
                .await
                .map_err(LoadgenError::session)?;
            let echo = next_data(&mut socket, "the echo").await?;
            if echo.len() != PROBE_SIZE {
                return Err(LoadgenError::UnexpectedMessage {
                    expected: "a 16-byte echo",
                });
            }
            let echoed = Instant::now();
            socket.close(None).await.map_err(LoadgenError::session)?;
            while let Some(message) = socket.next().await {
                message.map_err(LoadgenError::session)?;
            }
            let micros = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e6;
            Ok(SessionPhases {
                handshake: micros(started, upgraded),
                echo: micros(upgraded, echoed),
                close: micros(echoed, Instant::now()),
            })
        };
        match timeout_at(deadline, session).await {
            Ok(Ok(session_phases)) => {
                phases.push(session_phases);
                done += 1;
                failures_in_a_row = 0;
            }
            Ok(Err(error)) => {
                errors.add(&error);
                failures_in_a_row += 1;
                if failures_in_a_row >= SETUP_FAILURES_IN_A_ROW {
                    cut_short = true;
                    break;
                }
            }
            Err(_) => {
                cut_short = true;
                break;
            }
        }
    }
    SetupLoopEnd {
        phases,
        sessions: done,
        errors,
        at: Instant::now(),
        cut_short,
    }
}

async fn idle(target: &Target, config: &ScenarioConfig) -> Outcome {
    let name = format!("idle sessions x{}", config.idle_sessions);
    let vmi = Mode::Echo.to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let rss_before = target.pid().and_then(|pid| read_rss_bytes(pid).ok());

    let opened: Vec<Result<ClientSocket, LoadgenError>> = stream::iter(0..config.idle_sessions)
        .map(|_| async {
            timeout_at(deadline, target.connect(&url, &vmi))
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
    tracing::debug!(open = sockets.len(), "idle sessions opened");
    tokio::time::sleep(config.idle_hold).await;
    let rss_after = target.pid().and_then(|pid| read_rss_bytes(pid).ok());

    // Every held session must still relay: one echo each.
    let payload = Bytes::from_static(&[0x11; PROBE_SIZE]);
    let checks: Vec<Result<(), LoadgenError>> = stream::iter(sockets.iter_mut())
        .map(|socket| {
            let payload = payload.clone();
            async move {
                let check = async {
                    socket
                        .send(Message::Binary(payload))
                        .await
                        .map_err(LoadgenError::session)?;
                    next_data(socket, "the idle session's echo")
                        .await
                        .map(|_| ())
                };
                timeout_at(deadline, check)
                    .await
                    .unwrap_or(Err(LoadgenError::TimeLimit {
                        waiting_for: "the idle session's echo",
                    }))
            }
        })
        .buffer_unordered(IDLE_OPEN_CONCURRENCY * 4)
        .collect()
        .await;
    let alive = checks.iter().filter(|check| check.is_ok()).count();
    tracing::debug!(alive, "idle sessions checked");
    for check in checks {
        if let Err(error) = check {
            errors.add(&error);
        }
    }

    // Half end with a closing handshake, half vanish (TCP close without a close frame): the
    // upstream side must be closed either way.
    let graceful = sockets.len() / 2;
    let abrupt = sockets.split_off(graceful);
    drop(abrupt);
    stream::iter(sockets)
        .for_each_concurrent(IDLE_OPEN_CONCURRENCY * 4, close_gracefully)
        .await;
    tracing::debug!("idle sessions closed");

    let mut metrics = vec![Metric::new(
        format!("{name} held and echoing"),
        Unit::Sessions,
        alive as f64,
    )];
    if let (Some(before), Some(after), true) = (rss_before, rss_after, alive > 0) {
        let per_session = after.saturating_sub(before) as f64 / alive as f64;
        metrics.push(Metric::new(
            format!("{name} RSS per session"),
            Unit::BytesPerSession,
            per_session,
        ));
    }
    let probes = alive as u64 * PROBE_SIZE as u64;
    let mut outcome = Outcome {
        sessions: config.idle_sessions as u64,
        operations: alive as u64,
        client_bytes_sent: probes,
        client_bytes_received: probes,
        completed: errors.count == 0 && alive == config.idle_sessions,
        metrics,
        ..Outcome::default()
    };
    errors.into_outcome(&mut outcome);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_medians_name_each_phase_of_the_scenario() {
        let phases: Vec<SessionPhases> =
            [(100.0, 10.0, 7.0), (300.0, 30.0, 9.0), (200.0, 20.0, 8.0)]
                .into_iter()
                .map(|(handshake, echo, close)| SessionPhases {
                    handshake,
                    echo,
                    close,
                })
                .collect();
        let metrics = phase_medians("session setup x1 loops", &phases);
        let named: Vec<(&str, f64)> = metrics
            .iter()
            .map(|metric| (metric.name.as_str(), metric.value))
            .collect();
        assert_eq!(
            named,
            [
                ("session setup x1 loops: handshake p50", 200.0),
                ("session setup x1 loops: first echo p50", 20.0),
                (
                    "session setup x1 loops: close until the end of the stream p50",
                    8.0
                ),
            ]
        );
        assert!(
            metrics
                .iter()
                .all(|metric| metric.unit == Unit::Microseconds)
        );
        assert!(phase_medians("none", &[]).is_empty());
    }

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
