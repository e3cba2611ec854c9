//! Dev mode (plain `ws://`, no bearer, no TLS) against a real WebSocket server on loopback, plus
//! the connector's plain-TCP failures and subprotocol handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt as _, StreamExt as _};
use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
use proxy_core::{Frame, TransportError};
use proxy_upstream::{
    ConnectError, Connector, FailureClass, KubeVirtConnectorBuilder, UpstreamTarget, V1_API_PATH,
};
use proxy_wire::WireLimits;
use support::{DEFAULT_PATH_FOR_LAB_VM, Expect, FakeApiServer, exchange};
use tokio::net::TcpListener;

const LAB_VM: UpstreamTarget<'static> = UpstreamTarget {
    namespace: "lab-1",
    vmi_name: "vm-a",
};

fn plain_kubevirt() -> Expect {
    Expect {
        authorization: None,
        path_and_query: Some(DEFAULT_PATH_FOR_LAB_VM.to_owned()),
        subprotocol: Some("plain.kubevirt.io".to_owned()),
    }
}

fn dev_connector(server: &FakeApiServer) -> KubeVirtConnectorBuilder {
    KubeVirtConnectorBuilder::local_dev()
        .remote_url(format!("ws://127.0.0.1:{}", server.addr.port()))
}

#[tokio::test]
async fn dev_mode_connects_without_token_or_tls() {
    let mut server = FakeApiServer::start(None, plain_kubevirt()).await;
    let connector = dev_connector(&server).build().unwrap();
    assert!(!connector.is_tls());

    let mut upstream = connector.connect(LAB_VM).await.unwrap();

    let seen = server.next_request().await;
    assert_eq!(seen.authorization, None);
    assert_eq!(seen.path_and_query, DEFAULT_PATH_FOR_LAB_VM);
    assert_eq!(upstream.subprotocol.as_deref(), Some("plain.kubevirt.io"));
    let stream = upstream.transport.get_ref();
    assert!(!stream.is_tls());
    assert!(stream.tcp().nodelay().unwrap());
    exchange(&mut upstream.transport, b"key event").await;
}

#[tokio::test]
async fn v1_template_and_ipv6_loopback_work() {
    let v1_path =
        "/apis/subresources.kubevirt.io/v1/namespaces/lab-1/virtualmachineinstances/vm-a/vnc";
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let mut server = FakeApiServer::serve(
        listener,
        None,
        Expect {
            path_and_query: Some(v1_path.to_owned()),
            ..plain_kubevirt()
        },
    );
    let connector = KubeVirtConnectorBuilder::local_dev()
        .remote_url(format!("http://[::1]:{}", server.addr.port()))
        .api_path(V1_API_PATH)
        .build()
        .unwrap();

    let mut upstream = connector.connect(LAB_VM).await.unwrap();

    assert_eq!(server.next_request().await.path_and_query, v1_path);
    exchange(&mut upstream.transport, b"v1").await;
}

#[tokio::test]
async fn offers_the_configured_subprotocols_and_reports_the_chosen_one() {
    let mut server = FakeApiServer::start(None, plain_kubevirt()).await;
    let connector = dev_connector(&server)
        .subprotocols(["binary", "plain.kubevirt.io"])
        .build()
        .unwrap();

    let upstream = connector.connect(LAB_VM).await.unwrap();

    assert_eq!(
        server.next_request().await.subprotocols.as_deref(),
        Some("binary, plain.kubevirt.io")
    );
    assert_eq!(upstream.subprotocol.as_deref(), Some("plain.kubevirt.io"));
}

#[tokio::test]
async fn no_subprotocols_requested_means_none_reported() {
    let mut server = FakeApiServer::start(
        None,
        Expect {
            subprotocol: None,
            ..plain_kubevirt()
        },
    )
    .await;
    let connector = dev_connector(&server)
        .subprotocols(Vec::<String>::new())
        .build()
        .unwrap();

    let upstream = connector.connect(LAB_VM).await.unwrap();

    assert_eq!(server.next_request().await.subprotocols, None);
    assert_eq!(upstream.subprotocol, None);
}

#[tokio::test]
async fn upgrade_without_the_requested_subprotocol_is_a_protocol_error() {
    let server = FakeApiServer::start(
        None,
        Expect {
            subprotocol: None,
            ..plain_kubevirt()
        },
    )
    .await;
    let connector = dev_connector(&server).build().unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    assert!(matches!(error, ConnectError::Protocol(_)), "{error:?}");
    assert_eq!(error.class(), FailureClass::BadGateway);
}

#[tokio::test]
async fn closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let connector = KubeVirtConnectorBuilder::local_dev()
        .remote_url(format!("ws://{addr}"))
        .build()
        .unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    match &error {
        ConnectError::Refused { addr: refused, .. } => assert_eq!(*refused, addr),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(error.class(), FailureClass::BadGateway);
}

#[tokio::test]
async fn invalid_names_are_refused_before_dialling() {
    let mut server = FakeApiServer::start(None, plain_kubevirt()).await;
    let connector = dev_connector(&server).build().unwrap();

    let error = connector
        .connect(UpstreamTarget {
            namespace: "lab-1",
            vmi_name: "vm-a/../../../api/v1/secrets",
        })
        .await
        .unwrap_err();

    assert!(matches!(error, ConnectError::InvalidName(_)), "{error:?}");
    assert_eq!(error.class(), FailureClass::InvalidTarget);
    // A valid request afterwards is the first thing the server sees.
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        server.next_request().await.path_and_query,
        DEFAULT_PATH_FOR_LAB_VM
    );
}

/// The connector's limits bound what the upstream may send: a message over them ends the
/// stream with `MessageTooLarge` (the relay's 1009), the default limits let it through.
#[tokio::test]
async fn upstream_messages_over_the_limits_are_refused() {
    let sim =
        KubevirtSim::start(SimConfig::new().vm_in_namespace("lab-1", "vm-a", VmBehavior::Echo))
            .await
            .unwrap();
    for (limits, accepted) in [
        (proxy_upstream::DEFAULT_UPSTREAM_LIMITS, true),
        (WireLimits::max_message(1024), false),
    ] {
        let connector = KubeVirtConnectorBuilder::local_dev()
            .remote_url(sim.base_url())
            .limits(limits)
            .build()
            .unwrap();
        let mut upstream = connector.connect(LAB_VM).await.unwrap();
        let message = Frame::Binary(vec![7; 2048].into());
        upstream.transport.send(message.clone()).await.unwrap();
        match upstream.transport.next().await.unwrap() {
            Ok(echoed) if accepted => assert_eq!(echoed, message),
            Err(TransportError::MessageTooLarge {
                size: 2048,
                limit: 1024,
            }) if !accepted => {}
            other => panic!("limits {limits:?}: unexpected {other:?}"),
        }
    }
    sim.shutdown().await;
}
