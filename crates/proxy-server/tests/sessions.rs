//! Console sessions through the real HTTP front to an in-test KubeVirt-like upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Greeting from upstream, then several payloads of different sizes echoed in order.
async fn exchange(client: &mut Client) {
    assert_eq!(next_data(client).await, GREETING);
    for (index, len) in [1usize, 100, 70_000, 3].into_iter().enumerate() {
        echo_round_trip(client, &pattern(len, index as u8)).await;
    }
}

#[tokio::test]
async fn bytes_flow_both_ways_without_a_prefix() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (mut client, protocol) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(
        protocol, None,
        "noVNC >= 1.2 offers nothing and gets nothing"
    );
    exchange(&mut client).await;
    client.close(None).await.unwrap();
    let seen = upstream.seen();
    assert_eq!(
        seen,
        [(
            "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1-9/virtualmachineinstances/ubuntu/vnc"
                .to_owned(),
            Some("plain.kubevirt.io".to_owned())
        )]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn prefixes_work_with_or_without_slashes_and_with_several_segments() {
    let upstream = KubevirtUpstream::start().await;
    for (prefix, url_prefix) in [
        ("ws_proxy", "/ws_proxy"),
        ("/ws_proxy/", "/ws_proxy"),
        ("apps/console", "/apps/console"),
    ] {
        let proxy = Running::proxy(dev_proxy(&upstream).host_path_prefix(prefix)).await;
        let path = format!("{url_prefix}/{}/kali", mint(&["kali"]));
        let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
        exchange(&mut client).await;
        client.close(None).await.unwrap();
        proxy.stop().await;
    }
}

#[tokio::test]
async fn every_client_subprotocol_style_connects() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let token = mint(&["ubuntu"]);
    for (offered, answered) in [
        ("", None),
        ("binary", Some("binary")),
        ("binary, base64", Some("binary")),
        ("base64,binary", Some("binary")),
        ("plain.kubevirt.io", Some("plain.kubevirt.io")),
    ] {
        let (mut client, protocol) = connect(proxy.addr, &format!("/{token}/ubuntu"), offered)
            .await
            .unwrap();
        assert_eq!(protocol.as_deref(), answered, "offered {offered:?}");
        exchange(&mut client).await;
        client.close(None).await.unwrap();
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_fixture_token_minted_by_pyjwt_opens_a_console() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (mut client, _) = connect(
        proxy.addr,
        &format!("/{}/ubuntu?foo=bar", fixture_token("hs256_valid")),
        "binary",
    )
    .await
    .unwrap();
    exchange(&mut client).await;
    client.close(None).await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_close_reaches_the_upstream_with_its_code() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (mut client, _) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    exchange(&mut client).await;
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    // The proxy answers our close; the session is over once the stream ends.
    assert_eq!(
        next_close(&mut client).await,
        Some((1000, "bye".to_owned()))
    );
    proxy.stop().await;
    assert_eq!(upstream.closes(), [Some((1000, "bye".to_owned()))]);
}

#[tokio::test]
async fn an_upstream_close_reaches_the_client_with_its_code_and_reason() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (mut client, _) = connect(
        proxy.addr,
        &format!("/{}/{VM_CLOSES}", mint(&[VM_CLOSES])),
        "",
    )
    .await
    .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    assert_eq!(
        next_close(&mut client).await,
        Some((4321, "console ended".to_owned()))
    );
    read_to_end(&mut client).await;
    proxy.stop().await;
}

/// A connector whose upstream is an in-memory echo: the engine relays through any transport.
struct MemoryEchoConnector;

#[async_trait::async_trait]
impl proxy_upstream::Connector for MemoryEchoConnector {
    type Transport = proxy_core::MemoryTransport;

    async fn connect(
        &self,
        target: proxy_upstream::UpstreamTarget<'_>,
    ) -> Result<proxy_upstream::Upstream<Self::Transport>, proxy_upstream::ConnectError> {
        use futures_util::{SinkExt, StreamExt};
        assert_eq!((target.namespace, target.vmi_name), (NAMESPACE, "ubuntu"));
        let (proxy_end, mut echo_end) = proxy_core::MemoryTransport::pair(8);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = echo_end.next().await {
                let closing = matches!(frame, proxy_core::Frame::Close(_));
                if echo_end.send(frame).await.is_err() || closing {
                    return;
                }
            }
        });
        Ok(proxy_upstream::Upstream {
            transport: proxy_end,
            subprotocol: None,
            tls_handshake: None,
        })
    }
}

#[tokio::test]
async fn the_engine_relays_through_any_connector() {
    let engine = proxy_server::ProxyEngine::new(
        proxy_auth::Verifier::hs256(SECRET).unwrap(),
        MemoryEchoConnector,
        proxy_server::ServerConfig::default(),
    );
    let proxy = Running::engine(engine.clone()).await;
    let (mut client, protocol) = connect(
        proxy.addr,
        &format!("/{}/ubuntu", mint(&["ubuntu"])),
        "binary, base64",
    )
    .await
    .unwrap();
    assert_eq!(protocol.as_deref(), Some("binary"));
    for seed in 0..5 {
        echo_round_trip(&mut client, &pattern(1000 * (seed as usize + 1), seed)).await;
    }
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;
    proxy.stop().await;
    assert_eq!(engine.metrics().active_sessions(), 0);
}
