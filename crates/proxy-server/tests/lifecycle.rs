//! The Python-style lifecycle (`run_in_thread`, `stop_thread`), health and metrics endpoints,
//! the admin listener, and graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use proxy_server::{RunError, WebsocketProxy};
use proxy_upstream::DEFAULT_API_PATH;
use tokio::net::TcpListener;

#[test]
fn run_in_thread_serves_at_once_and_stop_thread_is_graceful_and_idempotent() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime.block_on(KubevirtUpstream::start());
    let proxy = WebsocketProxy::new(
        &upstream.url(),
        DEFAULT_API_PATH,
        true,
        SECRET,
        Some("ws_proxy"),
    )
    .unwrap();
    proxy.stop_thread().unwrap();
    assert_eq!(proxy.local_addr(), None);

    let addr = proxy.run_in_thread("127.0.0.1", 0).unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(proxy.local_addr(), Some(addr));
    assert!(matches!(
        proxy.run_in_thread("127.0.0.1", 0),
        Err(RunError::AlreadyRunning)
    ));
    let path = format!("/ws_proxy/{}/ubuntu", mint(&["ubuntu"]));
    runtime.block_on(async {
        let (mut client, _) = connect(addr, &path, "binary").await.unwrap();
        assert_eq!(next_data(&mut client).await, GREETING);
        echo_round_trip(&mut client, &pattern(5000, 7)).await;
        client.close(None).await.unwrap();
        read_to_end(&mut client).await;
    });

    proxy.stop_thread().unwrap();
    proxy.stop_thread().unwrap();
    assert_eq!(proxy.local_addr(), None);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );

    // It can be started again.
    let addr = proxy.run_in_thread("127.0.0.1", 0).unwrap();
    runtime.block_on(async {
        let (mut client, _) = connect(addr, &path, "").await.unwrap();
        assert_eq!(next_data(&mut client).await, GREETING);
        client.close(None).await.unwrap();
        read_to_end(&mut client).await;
    });
    drop(proxy);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "dropping did not stop it"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_on_the_main_port() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (status, text) = get(proxy.addr, "/healthz").await;
    assert_eq!(
        (status, text.ends_with("\r\n\r\nok\n")),
        (200, true),
        "{text}"
    );
    let (status, text) = get(proxy.addr, "/readyz").await;
    assert_eq!(
        (status, text.ends_with("\r\n\r\nready\n")),
        (200, true),
        "{text}"
    );

    let (mut client, _) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    let (status, metrics) = get(proxy.addr, "/metrics?x=1").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("Content-Type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(metrics.contains("ws_proxy_active_sessions 1"), "{metrics}");
    assert!(metrics.contains("# TYPE ws_proxy_upstream_connect_seconds histogram"));
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;

    let (status, _) = raw_request(
        proxy.addr,
        "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    proxy.stop().await;
}

/// Polls `/readyz` on `admin` until it answers `status`.
async fn wait_for_readiness(admin: std::net::SocketAddr, status: u16) {
    for _ in 0..500 {
        if get(admin, "/readyz").await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/readyz never answered {status}");
}

#[tokio::test]
async fn draining_turns_readiness_off_and_lets_live_sessions_finish() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = dev_proxy(&upstream)
        .admin_on_main_port(false)
        .build()
        .unwrap();
    let engine = proxy.engine().clone();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_engine = engine.clone();
    let admin_task = tokio::spawn(async move {
        admin_engine
            .serve_admin(admin_listener, async {
                let _ = admin_stopped.await;
            })
            .await;
    });
    let mut main = Running::engine(engine.clone()).await;

    assert_eq!(get(admin, "/healthz").await.0, 200);
    wait_for_readiness(admin, 200).await;
    assert_eq!(
        get(main.addr, "/healthz").await.0,
        404,
        "health moved to the admin port"
    );
    assert_eq!(
        get(admin, "/some/console").await.0,
        404,
        "no consoles on the admin port"
    );

    let (mut client, _) = connect(main.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);

    main.request_stop();
    wait_for_readiness(admin, 503).await;
    // The live session keeps working while the proxy drains.
    echo_round_trip(&mut client, &pattern(2048, 3)).await;
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;
    main.finished().await;

    let metrics = get(admin, "/metrics").await.1;
    assert!(metrics.contains("ws_proxy_active_sessions 0"), "{metrics}");
    assert!(
        metrics.contains("ws_proxy_sessions_total{outcome=\"client_closed\"} 1"),
        "{metrics}"
    );
    let _ = stop_admin.send(());
    admin_task.await.unwrap();
}

#[tokio::test]
async fn sessions_left_at_the_drain_timeout_are_closed_with_1001() {
    let upstream = KubevirtUpstream::start().await;
    let mut proxy =
        Running::proxy(dev_proxy(&upstream).drain_timeout(Duration::from_millis(100))).await;
    let (mut client, _) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);

    proxy.request_stop();
    let (code, _) = next_close(&mut client).await.unwrap();
    assert_eq!(code, 1001);
    read_to_end(&mut client).await;
    proxy.finished().await;
    let closes = upstream.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].as_ref().map(|(code, _)| *code), Some(1001));
}
