//! A class starting: N browsers, each a different user with a token of its own and a VM of its
//! own, open their consoles within one spread (one second in the published configuration) and
//! each waits for its VM's first RFB bytes. All stay open until the last one has them.

use super::*;

/// How long to wait for a browser's first server bytes once it started.
const FIRST_BYTES_LIMIT: Duration = Duration::from_secs(20);

pub(super) async fn class_start(
    target: &Target,
    config: &ScenarioConfig,
    case: &ClassStartCase,
    name: &str,
) -> Outcome {
    let vmi = Arc::new(Mode::Rfb.to_string());
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = Instant::now() + config.time_limit;
    let browsers = case.browsers.max(1);
    let (all_started, _) = tokio::sync::watch::channel(false);
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let mut sessions = JoinSet::new();
    for user in 0..browsers {
        let offset = case.spread.mul_f64(user as f64 / browsers as f64);
        let (target, vmi, report) = (target.clone(), Arc::clone(&vmi), report.clone());
        let mut released = all_started.subscribe();
        sessions.spawn(async move {
            tokio::time::sleep_until(start + offset).await;
            let url = target.class_session_url(user, &vmi);
            let began = Instant::now();
            let opened = async {
                let mut socket = target.connect(&url, &vmi).await?;
                let bytes = first_server_bytes(&mut socket).await?;
                Ok::<_, LoadgenError>((began.elapsed(), bytes, socket))
            };
            let limit = deadline.min(began + FIRST_BYTES_LIMIT);
            match timeout_at(limit, opened).await {
                Ok(Ok((took, bytes, mut socket))) => {
                    let _ = report.send(Ok((took, bytes)));
                    // The scenario goes on once every browser reported (or its task ended).
                    drop(report);
                    // Held open until every browser of the class has its screen.
                    let _ = released.wait_for(|started| *started).await;
                    let _ = socket.close(None).await;
                }
                Ok(Err(error)) => {
                    let _ = report.send(Err(error));
                }
                Err(_) => {
                    let _ = report.send(Err(LoadgenError::TimeLimit {
                        waiting_for: "the first server bytes",
                    }));
                }
            }
        });
    }
    drop(report);
    let mut waits = Vec::with_capacity(browsers);
    let mut received = 0;
    let mut errors = ErrorTally::default();
    // Every task reports once and then drops its sender; one that panicked drops it unreported.
    while let Some(result) = reports.recv().await {
        match result {
            Ok((took, bytes)) => {
                waits.push(took.as_secs_f64() * 1e6);
                received += bytes;
            }
            Err(error) => errors.add(&error),
        }
    }
    let _ = all_started.send(true);
    while let Some(joined) = sessions.join_next().await {
        if let Err(join_error) = joined {
            errors.add_text(format!("browser task failed: {join_error}"));
        }
    }

    waits.sort_by(f64::total_cmp);
    let mut metrics = vec![Metric::new(
        format!("{name}: consoles open"),
        Unit::Sessions,
        waits.len() as f64,
    )];
    metrics.extend(latency::percentile_metrics(
        &format!("{name}: first server byte"),
        &waits,
        &[("p50", 50.0), ("p99", 99.0), ("max", 100.0)],
    ));
    let mut outcome = Outcome {
        sessions: browsers as u64,
        operations: waits.len() as u64,
        client_bytes_received: received,
        completed: errors.count == 0,
        metrics,
        ..Outcome::default()
    };
    errors.into_outcome(&mut outcome);
    outcome
}

/// Reads until the first data message of the VM (the RFB version) arrives.
async fn first_server_bytes(socket: &mut ClientSocket) -> Result<u64, LoadgenError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => return Ok(bytes.len() as u64),
            Some(Ok(Message::Close(_))) | None => {
                return Err(LoadgenError::EndedEarly {
                    waiting_for: "the first server bytes",
                });
            }
            Some(Ok(Message::Text(_))) => {
                return Err(LoadgenError::UnexpectedMessage {
                    expected: "binary RFB bytes",
                });
            }
            Some(Ok(_)) => {}
            Some(Err(source)) => return Err(LoadgenError::Session(Box::new(source))),
        }
    }
}
