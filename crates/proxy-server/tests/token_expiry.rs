//! `close_on_token_expiry`: a live session is closed when its token expires, through the real
//! HTTP front on loopback; with the setting off (the default) the session outlives its token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::time::timeout;

/// Bound on every wait, so a session that is never closed fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(15);

/// A token for `vm` that expires `seconds` from now.
fn mint_expiring_in(seconds: u64, vm: &str) -> String {
    test_support::mint_console_token(SECRET, NAMESPACE, 9, &[vm], Duration::from_secs(seconds))
}

fn proxy_closing_on_expiry(
    upstream: &KubevirtUpstream,
    enabled: bool,
) -> proxy_server::WebsocketProxy {
    dev_proxy(upstream)
        .close_on_token_expiry(enabled)
        .build()
        .unwrap()
}

/// Waits (bounded) until the proxy refuses `token` as expired.
async fn until_refused_as_expired(proxy: &Running, token: &str) {
    timeout(BOUND, async {
        loop {
            let (status, _) = upgrade_request(proxy.addr, &format!("/{token}/ubuntu")).await;
            if status == 401 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the token never expired");
}

#[tokio::test]
async fn a_session_is_closed_with_4001_when_its_token_expires_only_when_enabled() {
    let (upstream_on, upstream_off) = (
        KubevirtUpstream::start().await,
        KubevirtUpstream::start().await,
    );
    let proxy_on = proxy_closing_on_expiry(&upstream_on, true);
    let engine_on = proxy_on.engine().clone();
    let running_on = Running::engine(engine_on.clone()).await;
    let running_off = Running::engine(
        proxy_closing_on_expiry(&upstream_off, false)
            .engine()
            .clone(),
    )
    .await;
    let token = mint_expiring_in(3, "ubuntu");
    let path = format!("/{token}/ubuntu");
    let (mut closing, _) = connect(running_on.addr, &path, "").await.unwrap();
    let (mut lasting, _) = connect(running_off.addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut lasting).await, GREETING);

    // Whatever the upstream sent before the expiry (its greeting) is skipped here, so a slow
    // machine that reaches the expiry early still sees the same close.
    let close = timeout(BOUND, next_close(&mut closing))
        .await
        .expect("the session was not closed when the token expired");
    assert_eq!(close, Some((4001, "token expired".to_owned())));
    // The closing handshake completes: the stream ends without an error.
    let after_close = timeout(BOUND, closing.next())
        .await
        .expect("no end of stream");
    assert!(after_close.is_none(), "after the close: {after_close:?}");

    // With the setting off, the session goes on after the token expired.
    until_refused_as_expired(&running_off, &token).await;
    echo_round_trip(&mut lasting, b"after the token expired").await;
    lasting.close(None).await.unwrap();
    read_to_end(&mut lasting).await;

    running_on.stop().await;
    running_off.stop().await;
    assert_eq!(
        upstream_on.closes(),
        [Some((1001, "token expired".to_owned()))],
        "the upstream gets a going-away close with the same reason"
    );
    let metrics = engine_on.metrics().encode().unwrap();
    assert!(
        metrics.contains(r#"ws_proxy_sessions_total{outcome="deadline"} 1"#),
        "{metrics}"
    );
}
