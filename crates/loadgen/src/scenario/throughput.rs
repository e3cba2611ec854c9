//! Throughput: bytes through 1 or 8 sessions, upstream to client (source) and back (sink).

use super::*;

pub(super) async fn down(
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

pub(super) async fn up(
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
