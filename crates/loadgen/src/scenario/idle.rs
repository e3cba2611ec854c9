//! Idle sessions: thousands held open, the relay's memory per session, then one echo each and a close.

use super::*;

pub(super) async fn idle(target: &Target, config: &ScenarioConfig) -> Outcome {
    let name = format!("idle sessions x{}", config.idle_sessions);
    let vmi = Mode::Echo.to_string();
    let url = target.session_url(&config.namespace, &vmi);
    let deadline = Instant::now() + config.time_limit;
    let mut errors = ErrorTally::default();
    let rss_before = target.pid().and_then(|pid| read_rss_bytes(pid).ok());

    let mut sockets = open_concurrently(
        target,
        &url,
        &vmi,
        config.idle_sessions,
        deadline,
        &mut errors,
    )
    .await;
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
