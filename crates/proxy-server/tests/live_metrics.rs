//! Byte and frame counters move while sessions run (booked every second), not only when they
//! end, so `rate()` in Prometheus follows the traffic: for a relayed session, and for a
//! shared console's hub (bytes from the VM, bytes to its viewers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Waits until `name` in the engine's metrics reaches `at_least`.
async fn until_metric(metrics: &proxy_server::ProxyMetrics, name: &str, at_least: u64) -> u64 {
    timeout(BOUND, async {
        loop {
            let value = sample(&metrics.encode().unwrap(), name);
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} did not reach {at_least} while the session ran"))
}

#[tokio::test]
async fn relayed_bytes_and_frames_are_counted_while_the_session_runs() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = dev_proxy(&upstream).build().unwrap();
    let engine = proxy.engine().clone();
    let running = Running::engine(engine.clone()).await;
    let token = console_token("ubuntu", None);
    let (mut client, _) = connect(running.addr, &format!("/{token}/ubuntu"), "binary")
        .await
        .unwrap();
    // The echo console greets first.
    timeout(BOUND, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for _ in 0..5 {
        echo_round_trip(&mut client, &[7u8; 1000]).await;
    }
    // The session is still open: the counters were booked without it ending.
    let sent = until_metric(
        engine.metrics(),
        "ws_proxy_relayed_bytes_total{direction=\"client_to_upstream\"}",
        5000,
    )
    .await;
    assert!(sent >= 5000);
    until_metric(
        engine.metrics(),
        "ws_proxy_relayed_frames_total{direction=\"upstream_to_client\"}",
        5,
    )
    .await;
    assert_eq!(
        engine.metrics().active_sessions(),
        1,
        "the session still runs"
    );
    drop(client);
    // At the end nothing is counted twice: the totals are exactly what was relayed.
    timeout(BOUND, async {
        while engine.metrics().active_sessions() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let text = engine.metrics().encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "ws_proxy_relayed_bytes_total{direction=\"client_to_upstream\"}"
        ),
        5000
    );
    assert_eq!(
        sample(
            &text,
            "ws_proxy_relayed_frames_total{direction=\"client_to_upstream\"}"
        ),
        5
    );
    running.stop().await;
}

#[tokio::test]
async fn a_shared_consoles_bytes_from_the_vm_and_to_viewers_are_counted_while_it_runs() {
    let upstream = KubevirtUpstream::start().await;
    let mut config = proxy_server::ServerConfig::default();
    config.share_consoles = Some(proxy_server::ShareConfig::default());
    let proxy = dev_proxy(&upstream).server_config(config).build().unwrap();
    let engine = proxy.engine().clone();
    let running = Running::engine(engine.clone()).await;
    let token = console_token(VM_DESKTOP, None);
    let (mut viewer, _) = connect(running.addr, &format!("/{token}/{VM_DESKTOP}"), "binary")
        .await
        .unwrap();
    // The hub's handshake reaches the viewer: the hub has read the VM's.
    timeout(BOUND, viewer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    until_metric(
        engine.metrics(),
        "ws_proxy_shared_console_from_vms_bytes_total",
        12,
    )
    .await;
    until_metric(
        engine.metrics(),
        "ws_proxy_shared_console_to_viewers_bytes_total",
        12,
    )
    .await;
    until_metric(
        engine.metrics(),
        "ws_proxy_shared_console_updates_to_viewers_total",
        1,
    )
    .await;
    assert_eq!(engine.metrics().active_sessions(), 1);
    drop(viewer);
    running.stop().await;
}
