//! Dev mode (plain `ws://`, no bearer, no TLS) against the simulated KubeVirt API on loopback, plus
//! the connector's plain-TCP failures and subprotocol handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt as _, StreamExt as _};
use proxy_core::{Frame, TransportError};
use proxy_upstream::{
    ConnectError, Connector, FailureClass, KubeVirtConnectorBuilder, UpstreamTarget, V1_API_PATH,
};
use proxy_wire::WireLimits;
use support::{
    AuthorizationOutcome, DEFAULT_PATH_FOR_LAB_VM, KubevirtSim, LAB_VM, exchange, lab_vm,
    last_request, path_and_query, start,
};
use tokio::net::TcpListener;

fn dev_connector(sim: &KubevirtSim) -> KubeVirtConnectorBuilder {
    KubeVirtConnectorBuilder::local_dev().remote_url(sim.base_url())
}

#[tokio::test]
async fn dev_mode_connects_without_token_or_tls() {
    let sim = start(lab_vm()).await;
    let connector = dev_connector(&sim).build().unwrap();
    assert!(!connector.is_tls());

    let mut upstream = connector.connect(LAB_VM).await.unwrap();

    let seen = last_request(&sim);
    assert_eq!(seen.authorization, AuthorizationOutcome::NotChecked);
    assert!(!seen.tls);
    assert_eq!(path_and_query(&seen), DEFAULT_PATH_FOR_LAB_VM);
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
    let sim = start(lab_vm().listen("[::1]:0".parse().unwrap())).await;
    let connector = KubeVirtConnectorBuilder::local_dev()
        .remote_url(format!("http://[::1]:{}", sim.local_addr().port()))
        .api_path(V1_API_PATH)
        .build()
        .unwrap();

    let mut upstream = connector.connect(LAB_VM).await.unwrap();

    let seen = last_request(&sim);
    assert_eq!(path_and_query(&seen), v1_path);
    assert_eq!(seen.api_version.as_deref(), Some("v1"));
    exchange(&mut upstream.transport, b"v1").await;
}

#[tokio::test]
async fn offers_the_configured_subprotocols_and_reports_the_chosen_one() {
    let sim = start(lab_vm()).await;
    let connector = dev_connector(&sim)
        .subprotocols(["binary", "plain.kubevirt.io"])
        .build()
        .unwrap();

    let upstream = connector.connect(LAB_VM).await.unwrap();

    assert_eq!(
        last_request(&sim).offered_subprotocols,
        ["binary", "plain.kubevirt.io"]
    );
    assert_eq!(upstream.subprotocol.as_deref(), Some("plain.kubevirt.io"));
}

#[tokio::test]
async fn no_subprotocols_requested_means_none_reported() {
    let sim = start(lab_vm()).await;
    let connector = dev_connector(&sim)
        .subprotocols(Vec::<String>::new())
        .build()
        .unwrap();

    let upstream = connector.connect(LAB_VM).await.unwrap();

    assert!(last_request(&sim).offered_subprotocols.is_empty());
    assert_eq!(upstream.subprotocol, None);
}

/// KubeVirt agrees to `plain.kubevirt.io` only: a connector that asks for another protocol gets
/// an upgrade without one, which is a protocol error, not a silently different stream.
#[tokio::test]
async fn upgrade_without_the_requested_subprotocol_is_a_protocol_error() {
    let sim = start(lab_vm()).await;
    let connector = dev_connector(&sim)
        .subprotocols(["binary"])
        .build()
        .unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    assert!(matches!(error, ConnectError::Protocol(_)), "{error:?}");
    assert_eq!(error.class(), FailureClass::BadGateway);
    assert_eq!(last_request(&sim).selected_subprotocol, None);
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
    let sim = start(lab_vm()).await;
    let connector = dev_connector(&sim).build().unwrap();

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
    let seen = sim.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(path_and_query(&seen[0]), DEFAULT_PATH_FOR_LAB_VM);
}

/// The connector's limits bound what the upstream may send: a message over them ends the
/// stream with `MessageTooLarge` (the relay's 1009), the default limits let it through.
#[tokio::test]
async fn upstream_messages_over_the_limits_are_refused() {
    let sim = start(support::SimConfig::new().vm_in_namespace(
        LAB_VM.namespace,
        LAB_VM.vmi_name,
        support::VmBehavior::Echo,
    ))
    .await;
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
