//! In-cluster mode end to end on loopback against the simulated KubeVirt API over TLS with a test
//! CA: CA and token files, token rotation, TLS failures and timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use proxy_upstream::{
    ConnectError, Connector, FailureClass, KubeVirtConnector, KubeVirtConnectorBuilder,
    TlsHandshake,
};
use support::{
    AuthorizationOutcome, DEFAULT_PATH_FOR_LAB_VM, KubevirtSim, LAB_VM, TestPki, exchange,
    lab_vm_tls, last_request, path_and_query, start, write_token,
};
use tokio::net::TcpListener;

fn in_cluster(
    server: &KubevirtSim,
    dir: &tempfile::TempDir,
    pki: &TestPki,
) -> KubeVirtConnectorBuilder {
    KubeVirtConnectorBuilder::in_cluster_at("127.0.0.1", &server.local_addr().port().to_string())
        .unwrap()
        .ca_file(pki.write_ca(dir.path()))
        .bearer_token_file(dir.path().join("token"))
}

#[tokio::test]
async fn connects_over_tls_with_the_service_account_ca_and_token() {
    let pki = TestPki::new("cluster ca");
    let server = start(lab_vm_tls(&pki, "sa-token-1")).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "sa-token-1\n");
    let connector = in_cluster(&server, &dir, &pki).build().unwrap();
    assert!(connector.is_tls());

    let mut upstream = connector.connect(LAB_VM).await.unwrap();

    let seen = last_request(&server);
    assert_eq!(path_and_query(&seen), DEFAULT_PATH_FOR_LAB_VM);
    assert_eq!(seen.authorization, AuthorizationOutcome::Matched);
    assert!(seen.tls);
    assert_eq!(seen.offered_subprotocols, ["plain.kubevirt.io"]);
    assert_eq!(upstream.subprotocol.as_deref(), Some("plain.kubevirt.io"));
    let stream = upstream.transport.get_ref();
    assert!(stream.is_tls());
    assert!(stream.tcp().nodelay().unwrap());
    exchange(&mut upstream.transport, b"\x03\x00\x00\x00").await;
}

#[tokio::test]
async fn later_connections_resume_the_tls_session_and_a_rotated_ca_starts_afresh() {
    let pki = TestPki::new("cluster ca");
    let server = start(lab_vm_tls(&pki, "t")).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "t");
    let connector = in_cluster(&server, &dir, &pki).build().unwrap();

    let mut kinds = Vec::new();
    for _ in 0..4 {
        let mut upstream = connector.connect(LAB_VM).await.unwrap();
        exchange(&mut upstream.transport, b"\x03\x00\x00\x00").await;
        kinds.push(upstream.tls_handshake.unwrap());
    }
    assert_eq!(
        kinds,
        [
            TlsHandshake::Full,
            TlsHandshake::Resumed,
            TlsHandshake::Resumed,
            TlsHandshake::Resumed
        ]
    );

    // A new CA file is a new client configuration, whose session cache starts empty.
    let staged = dir.path().join("ca.crt.new");
    std::fs::write(&staged, format!("{}\n", pki.ca_pem)).unwrap();
    std::fs::rename(&staged, dir.path().join("ca.crt")).unwrap();
    let upstream = connector.connect(LAB_VM).await.unwrap();
    assert_eq!(upstream.tls_handshake, Some(TlsHandshake::Full));
}

/// A class starting: more dials in flight than rustls' own store keeps tickets for (8).
#[tokio::test]
async fn twenty_dials_at_once_all_resume_on_the_tickets_of_twenty_before_them() {
    let pki = TestPki::new("cluster ca");
    let server = start(lab_vm_tls(&pki, "t")).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "t");
    let connector = in_cluster(&server, &dir, &pki).build().unwrap();
    let class = || futures_util::future::join_all((0..20).map(|_| connector.connect(LAB_VM)));

    let first: Vec<_> = class().await.into_iter().map(Result::unwrap).collect();
    let second: Vec<_> = class().await.into_iter().map(Result::unwrap).collect();

    let resumed = |batch: &[proxy_upstream::Upstream<_>]| {
        batch
            .iter()
            .filter(|upstream| upstream.tls_handshake == Some(TlsHandshake::Resumed))
            .count()
    };
    assert_eq!(
        resumed(&second),
        20,
        "every ticket of the first 20 was kept"
    );
    assert!(resumed(&first) < 20);
}

#[tokio::test]
async fn localhost_name_and_ipv6_literal_verify_against_the_certificate() {
    let pki = TestPki::new("cluster ca");
    let v6_server = start(lab_vm_tls(&pki, "t").listen("[::1]:0".parse().unwrap())).await;
    let v4_server = start(lab_vm_tls(&pki, "t")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "t");
    let ca = pki.write_ca(dir.path());
    for (remote, server) in [
        (
            format!("wss://[::1]:{}", v6_server.local_addr().port()),
            v6_server,
        ),
        (
            format!("https://localhost:{}", v4_server.local_addr().port()),
            v4_server,
        ),
    ] {
        let connector = KubeVirtConnector::builder(&remote)
            .ca_file(&ca)
            .bearer_token_file(&token)
            .build()
            .unwrap();
        let mut upstream = connector.connect(LAB_VM).await.unwrap();
        assert_eq!(
            path_and_query(&last_request(&server)),
            DEFAULT_PATH_FOR_LAB_VM
        );
        exchange(&mut upstream.transport, b"ping").await;
    }
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused_with_the_rustls_reason() {
    let server_pki = TestPki::new("some other ca");
    let trusted_pki = TestPki::new("cluster ca");
    let server = start(lab_vm_tls(&server_pki, "t")).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "t");
    let connector = in_cluster(&server, &dir, &trusted_pki).build().unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    match &error {
        ConnectError::Tls { source, .. } => assert_eq!(
            *source,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(error.class(), FailureClass::BadGateway);
    assert!(
        server.requests().is_empty(),
        "no request may reach an untrusted server"
    );
}

/// The simulator over TLS whose expected bearer token is the content of a file the test
/// rewrites, re-read per request: what it expects is always exactly known.
fn expecting_token_file(pki: &TestPki, expected: &std::path::Path) -> support::SimConfig {
    support::lab_vm()
        .tls_server_config(pki.server_config())
        .bearer_token_file(expected)
}

#[tokio::test]
async fn rewritten_token_file_is_sent_on_the_next_connection() {
    const FIRST: &str = "eyJhbGciOiJSUzI1NiJ9.first-generation.sig";
    const SECOND: &str = "eyJhbGciOiJSUzI1NiJ9.second-generation-rotated.sig";
    let pki = TestPki::new("cluster ca");
    let server_dir = tempfile::tempdir().unwrap();
    let expected = test_support::write_file(server_dir.path(), "expected", SECOND);
    let server = start(expecting_token_file(&pki, &expected)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = write_token(dir.path(), FIRST);
    let connector = in_cluster(&server, &dir, &pki).build().unwrap();

    let refused = connector.connect(LAB_VM).await.unwrap_err();
    assert!(
        matches!(refused, ConnectError::Unauthorized { .. }),
        "{refused:?}"
    );
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Mismatched
    );
    // What was refused was exactly the first generation.
    std::fs::write(&expected, FIRST).unwrap();
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Matched
    );

    std::fs::write(&token_path, SECOND).unwrap();
    std::fs::write(&expected, SECOND).unwrap();
    let mut upstream = connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Matched
    );
    exchange(&mut upstream.transport, b"after rotation").await;
}

#[tokio::test]
async fn token_swapped_in_the_kubelet_way_is_picked_up_and_a_vanished_file_keeps_the_last_one() {
    let pki = TestPki::new("cluster ca");
    let server_dir = tempfile::tempdir().unwrap();
    let expected = test_support::write_file(server_dir.path(), "expected", "generation-1");
    let server = start(expecting_token_file(&pki, &expected)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = write_token(dir.path(), "generation-1");
    let connector = in_cluster(&server, &dir, &pki).build().unwrap();
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Matched
    );

    // The kubelet writes the new token beside the old and renames it over the old one.
    std::fs::write(&expected, "generation-2").unwrap();
    let staged = dir.path().join("..2026_11_29_token");
    std::fs::write(&staged, "generation-2").unwrap();
    std::fs::rename(&staged, &token_path).unwrap();
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Matched
    );

    std::fs::remove_file(&token_path).unwrap();
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        last_request(&server).authorization,
        AuthorizationOutcome::Matched,
        "a vanished token file keeps the last good token"
    );
}

#[tokio::test]
async fn rotated_ca_file_is_picked_up() {
    let old_pki = TestPki::new("old cluster ca");
    let new_pki = TestPki::new("new cluster ca");
    let server = start(lab_vm_tls(&new_pki, "t")).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "t");
    let connector = in_cluster(&server, &dir, &old_pki).build().unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();
    assert!(matches!(error, ConnectError::Tls { .. }), "{error:?}");

    let staged = dir.path().join("ca.crt.new");
    std::fs::write(&staged, format!("{}{}", old_pki.ca_pem, new_pki.ca_pem)).unwrap();
    std::fs::rename(&staged, dir.path().join("ca.crt")).unwrap();
    connector.connect(LAB_VM).await.unwrap();
    assert_eq!(
        path_and_query(&last_request(&server)),
        DEFAULT_PATH_FOR_LAB_VM
    );
}

#[tokio::test]
async fn base_path_prefix_and_preserve_session_reach_the_server() {
    let pki = TestPki::new("cluster ca");
    let expected = format!("/k8s/clusters/c-1{DEFAULT_PATH_FOR_LAB_VM}?preserveSession=true");
    let server = start(lab_vm_tls(&pki, "t").path_prefix("/k8s/clusters/c-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let connector = KubeVirtConnector::builder(format!(
        "wss://127.0.0.1:{}/k8s/clusters/c-1/",
        server.local_addr().port()
    ))
    .ca_file(pki.write_ca(dir.path()))
    .bearer_token_file(write_token(dir.path(), "t"))
    .preserve_session(true)
    .build()
    .unwrap();

    connector.connect(LAB_VM).await.unwrap();
    let seen = last_request(&server);
    assert_eq!(path_and_query(&seen), expected);
    assert!(seen.preserve_session);
}

#[tokio::test]
async fn silent_server_gives_a_tls_handshake_timeout() {
    let pki = TestPki::new("cluster ca");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts TCP, then never says a word.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let connector = KubeVirtConnector::builder(format!("wss://127.0.0.1:{port}"))
        .ca_file(pki.write_ca(dir.path()))
        .tls_handshake_timeout(Duration::from_millis(200))
        .build()
        .unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    assert!(
        matches!(error, ConnectError::TlsHandshakeTimeout { .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::Timeout);
    silent.abort();
}

#[tokio::test]
async fn server_that_never_answers_the_upgrade_gives_an_upgrade_timeout() {
    let pki = TestPki::new("cluster ca");
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Completes TLS, then never answers the HTTP request.
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                held.push(tls);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let connector = KubeVirtConnector::builder(format!("wss://127.0.0.1:{port}"))
        .ca_file(pki.write_ca(dir.path()))
        .upgrade_timeout(Duration::from_millis(200))
        .build()
        .unwrap();

    let error = connector.connect(LAB_VM).await.unwrap_err();

    assert!(
        matches!(error, ConnectError::UpgradeTimeout { .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::Timeout);
    mute.abort();
}
