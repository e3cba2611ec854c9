//! Steady state: many consoles open at once, each VM updating its screen at the rate and size of a
//! recorded traffic mix and each browser typing now and then; the relay's CPU per 1,000 consoles,
//! consoles per core, memory per console and the key-to-echo latency.

use super::*;
use crate::process::read_cpu_time;

/// What noVNC sends for a typed key in QEMU: a QEMU extended key event (type 255, subtype 0),
/// down, then the same with the down flag clear; keysym `a`, scancode 0x1e.
const KEY_DOWN: [u8; 12] = [255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e];
const KEY_UP: [u8; 12] = [255, 0, 0, 0, 0, 0, 0, 0x61, 0, 0, 0, 0x1e];
/// What noVNC sends after every update: an incremental FramebufferUpdateRequest (type 3) for
/// the whole 720x400 screen of QEMU's text console.
const UPDATE_REQUEST: [u8; 10] = [3, 1, 0, 0, 0, 0, 0x02, 0xd0, 0x01, 0x90];
/// How long the consoles run before the measurement window opens.
const WARM_UP: Duration = Duration::from_secs(1);

/// The traffic of one console, taken from a QEMU session recorded through the proxy
/// (`e2e/record-traffic.mjs`, analysed by `scripts/console-traffic.py`; the numbers and how
/// they were taken are in `docs/performance.md`, "Consoles per core"). The browser answers
/// every update with an update request, as noVNC does, and types a key every `key_every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficMix {
    /// The mix's name in the report.
    pub name: &'static str,
    /// Interval of the updates the VM sends on its own (zero: none).
    pub update_every: Duration,
    /// Bytes per update.
    pub update_bytes: usize,
    /// Bytes of the update that draws a typed key.
    pub echo_bytes: usize,
    /// Interval between the browser's keys.
    pub key_every: Duration,
}

impl TrafficMix {
    /// The upstream mode that plays this mix.
    pub fn mode(&self) -> Mode {
        Mode::Console {
            update_ms: u64::try_from(self.update_every.as_millis()).unwrap_or(u64::MAX),
            update_bytes: self.update_bytes,
            echo_bytes: self.echo_bytes,
        }
    }

    /// Payload bytes per second one console sends to its browser.
    pub fn offered_bytes_per_second(&self) -> f64 {
        let per_second = |bytes: usize, every: Duration| {
            if every.is_zero() {
                0.0
            } else {
                bytes as f64 / every.as_secs_f64()
            }
        };
        per_second(self.update_bytes, self.update_every)
            + per_second(self.echo_bytes, self.key_every)
    }
}

/// The mixes of the steady-state scenario, from QEMU sessions recorded through the proxy with
/// noVNC in Chromium (QEMU 7.2, VGA text console, Tight encoding; the steady part of each
/// 20-second recording): `idle` is a shell prompt with a blinking cursor (an update of 20 or 33
/// bytes every 447 ms), `typing` adds 6 keys a second whose echo is 70 bytes (the median of the
/// server bytes within 100 ms of a key), `scrolling` is a terminal printing a build log (13.3
/// updates a second, 7,830 bytes each on average, 104 kB/s). Idle and scrolling consoles get a
/// key every 5 s, so that every mix has a key-to-echo latency.
pub const RECORDED_MIXES: [TrafficMix; 3] = [
    TrafficMix {
        name: "idle",
        update_every: Duration::from_millis(447),
        update_bytes: 27,
        echo_bytes: 70,
        key_every: Duration::from_secs(5),
    },
    TrafficMix {
        name: "typing",
        update_every: Duration::from_millis(447),
        update_bytes: 27,
        echo_bytes: 70,
        key_every: Duration::from_millis(167),
    },
    TrafficMix {
        name: "scrolling",
        update_every: Duration::from_millis(75),
        update_bytes: 7_830,
        echo_bytes: 70,
        key_every: Duration::from_secs(5),
    },
];

pub(super) async fn steady(
    target: &Target,
    config: &ScenarioConfig,
    case: &SteadyCase,
    name: &str,
) -> Outcome {
    let vmi = case.mix.mode().to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let rss_before = target.pid().and_then(|pid| read_rss_bytes(pid).ok());

    let sockets = open_concurrently(target, &url, &vmi, case.consoles, deadline, &mut errors).await;
    let open = sockets.len();

    let window_start = Instant::now() + WARM_UP;
    let window_end = window_start + case.hold;
    let received = Arc::new(AtomicU64::new(0));
    let mut consoles = JoinSet::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let first_key = window_start - WARM_UP
            + case
                .mix
                .key_every
                .mul_f64((index as f64 * 0.618_033_988_749_895).fract());
        let window = (window_start, window_end);
        consoles.spawn(console(
            socket,
            case.mix.key_every,
            first_key,
            window,
            Arc::clone(&received),
            deadline,
        ));
    }

    tokio::time::sleep_until(window_start).await;
    let cpu_start = target.pid().and_then(|pid| read_cpu_time(pid).ok());
    tokio::time::sleep_until(window_end).await;
    let cpu_end = target.pid().and_then(|pid| read_cpu_time(pid).ok());
    let rss_during = target.pid().and_then(|pid| read_rss_bytes(pid).ok());

    let mut samples = Vec::new();
    let mut keys = 0u64;
    let mut sent = 0u64;
    while let Some(joined) = consoles.join_next().await {
        match joined {
            Ok(Ok(console)) => {
                samples.extend(console.key_to_echo);
                keys += console.keys;
                sent += console.sent;
            }
            Ok(Err(error)) => errors.add(&error),
            Err(join_error) => errors.add_text(format!("console task failed: {join_error}")),
        }
    }
    samples.sort_by(f64::total_cmp);

    let mut metrics = vec![Metric::new(
        format!("{name} consoles open"),
        Unit::Sessions,
        open as f64,
    )];
    metrics.extend(latency::percentile_metrics(
        &format!("{name} key-to-echo"),
        &samples,
        &[("p50", 50.0), ("p99", 99.0)],
    ));
    let received = received.load(Ordering::Relaxed);
    let offered = case.mix.offered_bytes_per_second() * open as f64 * case.hold.as_secs_f64();
    if offered > 0.0 {
        metrics.push(Metric::new(
            format!("{name} bytes delivered of offered"),
            Unit::Percent,
            100.0 * received as f64 / offered,
        ));
    }
    if let (Some(start), Some(end), true) = (cpu_start, cpu_end, open > 0) {
        let cores = end.saturating_sub(start).as_secs_f64() / case.hold.as_secs_f64();
        metrics.push(Metric::new(
            format!("{name} relay CPU per 1,000 consoles"),
            Unit::CorePercent,
            100.0 * cores * 1000.0 / open as f64,
        ));
        if cores > 0.0 {
            metrics.push(Metric::new(
                format!("{name} consoles per core"),
                Unit::ConsolesPerCore,
                open as f64 / cores,
            ));
        }
    }
    if let (Some(before), Some(during), true) = (rss_before, rss_during, open > 0) {
        metrics.push(Metric::new(
            format!("{name} RSS per console"),
            Unit::BytesPerSession,
            during.saturating_sub(before) as f64 / open as f64,
        ));
    }
    let mut outcome = Outcome {
        sessions: case.consoles as u64,
        operations: keys,
        client_bytes_sent: sent,
        client_bytes_received: received,
        elapsed_secs: case.hold.as_secs_f64(),
        completed: errors.count == 0 && open == case.consoles,
        metrics,
        ..Outcome::default()
    };
    errors.into_outcome(&mut outcome);
    outcome
}

/// What one console measured in the window.
struct ConsoleOutcome {
    keys: u64,
    key_to_echo: Vec<f64>,
    /// Payload bytes sent inside the window (keys and update requests).
    sent: u64,
}

/// One browser: reads everything, sends a key every `key_every` from `first_key` (one in flight
/// at a time: a key waits for the previous echo), and stops at the end of the window. Keys and
/// bytes are counted inside the window only.
async fn console(
    mut socket: ClientSocket,
    key_every: Duration,
    first_key: Instant,
    (window_start, window_end): (Instant, Instant),
    received: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<ConsoleOutcome, LoadgenError> {
    let mut outcome = ConsoleOutcome {
        keys: 0,
        key_to_echo: Vec::new(),
        sent: 0,
    };
    let in_window = |at: Instant| at >= window_start && at < window_end;
    let mut next_key = first_key;
    let mut key_sent_at: Option<Instant> = None;
    let key_down = Bytes::from_static(&KEY_DOWN);
    let key_up = Bytes::from_static(&KEY_UP);
    let request = Bytes::from_static(&UPDATE_REQUEST);
    let body = async {
        loop {
            tokio::select! {
                message = socket.next() => {
                    let bytes = match message {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Close(_))) | None => {
                            return Err(LoadgenError::EndedEarly { waiting_for: "the console's updates" });
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => return Err(LoadgenError::session(error)),
                    };
                    let now = Instant::now();
                    if in_window(now) {
                        received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    let is_echo = bytes.len() >= 2 && bytes[0] == 0 && bytes[1] == 1;
                    let mut answer = request.len();
                    if is_echo && let Some(sent) = key_sent_at.take() {
                        if in_window(sent) {
                            outcome.key_to_echo.push(now.duration_since(sent).as_secs_f64() * 1e6);
                            outcome.keys += 1;
                        }
                        socket.feed(Message::Binary(key_up.clone())).await.map_err(LoadgenError::session)?;
                        answer += key_up.len();
                    }
                    socket.send(Message::Binary(request.clone())).await.map_err(LoadgenError::session)?;
                    if in_window(now) {
                        outcome.sent += answer as u64;
                    }
                }
                () = tokio::time::sleep_until(next_key), if key_sent_at.is_none() && !key_every.is_zero() => {
                    socket.send(Message::Binary(key_down.clone())).await.map_err(LoadgenError::session)?;
                    let now = Instant::now();
                    if in_window(now) {
                        outcome.sent += key_down.len() as u64;
                    }
                    key_sent_at = Some(now);
                    next_key = (next_key + key_every).max(now);
                }
                () = tokio::time::sleep_until(window_end) => return Ok(()),
            }
        }
    };
    let ended = timeout_at(deadline, body).await;
    close_gracefully(socket).await;
    match ended {
        Ok(Ok(())) => Ok(outcome),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(LoadgenError::TimeLimit {
            waiting_for: "the console's window to end",
        }),
    }
}
