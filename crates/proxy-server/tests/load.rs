//! A thousand concurrent sessions through one proxy: every byte accounted for, and the
//! active-session gauge back at zero afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::Barrier;

const SESSIONS: usize = 1000;
const PAYLOAD: usize = 1024;

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions_relay_every_byte() {
    // Four sockets per session live in this process (client, both proxy sides, upstream).
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 4 * SESSIONS as u64 + 200,
        "open-file limit {limit} is too low"
    );

    let upstream = KubevirtUpstream::start().await;
    let proxy = dev_proxy(&upstream).build().unwrap();
    let engine = proxy.engine().clone();
    let running = Running::engine(engine.clone()).await;
    let addr = running.addr;
    let token = Arc::new(mint(&["ubuntu"]));
    let all_open = Arc::new(Barrier::new(SESSIONS + 1));
    let may_close = Arc::new(Barrier::new(SESSIONS + 1));

    let sessions: Vec<_> = (0..SESSIONS)
        .map(|index| {
            let (token, all_open, may_close) = (
                Arc::clone(&token),
                Arc::clone(&all_open),
                Arc::clone(&may_close),
            );
            tokio::spawn(async move {
                let (mut client, _) = connect(addr, &format!("/{token}/ubuntu"), "binary")
                    .await
                    .unwrap();
                assert_eq!(next_data(&mut client).await, GREETING);
                echo_round_trip(&mut client, &pattern(PAYLOAD, index as u8)).await;
                all_open.wait().await;
                may_close.wait().await;
                client.close(None).await.unwrap();
                read_to_end(&mut client).await;
            })
        })
        .collect();

    // A hang guard, not a performance threshold.
    tokio::time::timeout(Duration::from_secs(300), async {
        all_open.wait().await;
        assert_eq!(
            engine.metrics().active_sessions(),
            SESSIONS as i64,
            "{}",
            engine.metrics().encode().unwrap()
        );
        may_close.wait().await;
        for session in sessions {
            session.await.unwrap();
        }
        while engine.metrics().active_sessions() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the sessions did not finish");

    let text = engine.metrics().encode().unwrap();
    let sessions = SESSIONS as u64;
    assert_eq!(
        metric(
            &text,
            "ws_proxy_relayed_bytes_total{direction=\"client_to_upstream\"}"
        ),
        sessions * PAYLOAD as u64
    );
    assert_eq!(
        metric(
            &text,
            "ws_proxy_relayed_bytes_total{direction=\"upstream_to_client\"}"
        ),
        sessions * (GREETING.len() + PAYLOAD) as u64
    );
    assert_eq!(
        metric(&text, "ws_proxy_sessions_total{outcome=\"client_closed\"}"),
        sessions
    );
    assert_eq!(metric(&text, "ws_proxy_active_sessions"), 0);
    assert_eq!(
        metric(&text, "ws_proxy_upstream_connect_seconds_count"),
        sessions
    );
    running.stop().await;
}
