//! Latency: 16-byte round trips on 1 and 100 sessions, with percentiles.

use super::*;

/// The value at percentile `p` (0..=100) of ascending `sorted` samples, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The small tolerance keeps decimal percentiles exact (99.9% of 1000 is rank 999, not 1000).
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// One microsecond metric per `(label, percentile)` of ascending `sorted` samples, named
/// `{prefix} {label}`; none when there are no samples.
pub(super) fn percentile_metrics(
    prefix: &str,
    sorted: &[f64],
    points: &[(&str, f64)],
) -> Vec<Metric> {
    points
        .iter()
        .filter_map(|(label, p)| {
            percentile(sorted, *p)
                .map(|value| Metric::new(format!("{prefix} {label}"), Unit::Microseconds, value))
        })
        .collect()
}

pub(super) async fn latency(
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
    let metrics = percentile_metrics(
        name,
        &samples,
        &[("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)],
    );
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
