//! Session set-up: connect, handshake, one echo, close, in 1 or 16 loops, with per-phase medians.

use super::*;

pub(super) async fn setup(
    target: &Target,
    config: &ScenarioConfig,
    case: &SetupCase,
    name: &str,
) -> Outcome {
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
        metrics: vec![
            Metric::new(name, Unit::SessionsPerSecond, rate),
            unclean_closes(name, &phases),
        ],
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

/// The sessions whose close frame the relay did not answer.
fn unclean_closes(name: &str, phases: &[SessionPhases]) -> Metric {
    let count = phases.iter().filter(|phase| phase.unclean_close).count();
    Metric::new(
        format!("{name}: closes not answered with a close frame"),
        Unit::Connections,
        count as f64,
    )
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
    /// The relay ended the connection without answering the close frame (a reset or a bare
    /// end of stream): the session was set up and used, but not closed cleanly.
    unclean_close: bool,
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
            let mut unclean_close = socket.close(None).await.is_err();
            while let Some(message) = socket.next().await {
                if message.is_err() {
                    unclean_close = true;
                    break;
                }
            }
            let micros = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e6;
            Ok(SessionPhases {
                handshake: micros(started, upgraded),
                echo: micros(upgraded, echoed),
                close: micros(echoed, Instant::now()),
                unclean_close,
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
                    unclean_close: close > 8.5,
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
        assert_eq!(unclean_closes("s", &phases).value, 1.0);
    }
}
