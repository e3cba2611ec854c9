//! `wss://` on the console port: a session over TLS with a test CA, plain `ws://` refused, a
//! certificate rotated the Kubernetes way (symlink swap) while a session stays open, a broken
//! update that keeps the last good pair, and client certificates required with a client CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy_server::proxy_keys::{ServerTls, TlsFiles};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use test_support::TestPki;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Bound on every retry loop, so a reload that never happens fails instead of hanging.
const BOUND: Duration = Duration::from_secs(15);

type TlsClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TLS client that trusts `ca_pem`, with a client certificate when `identity` is given.
fn connector(ca_pem: &str, identity: Option<&(String, String)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Opens `wss://localhost:PORT/{token}/ubuntu` trusting `ca_pem`.
async fn connect_wss(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<TlsClient, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(ca_pem, identity)
        .connect(name, tcp)
        .await
        .map_err(|error| format!("TLS: {error}"))?;
    let url = format!(
        "wss://localhost:{}/{}/ubuntu",
        addr.port(),
        mint(&["ubuntu"])
    );
    let (socket, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .map_err(|error| format!("WebSocket: {error}"))?;
    Ok(socket)
}

/// The greeting, then one echo: the console works over this socket.
async fn console_works(socket: &mut TlsClient, payload: &'static [u8]) {
    use futures_util::{SinkExt as _, StreamExt as _};
    if payload == b"greeting" {
        match socket.next().await.unwrap().unwrap() {
            Message::Binary(data) => assert_eq!(&data[..], GREETING),
            other => panic!("expected the greeting, got {other:?}"),
        }
        return;
    }
    socket
        .send(Message::Binary(Bytes::from_static(payload)))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Binary(data) => assert_eq!(&data[..], payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// A Kubernetes Secret volume: `tls.crt` and `tls.key` are links into `..data`, itself a link
/// to the current generation's folder; an update writes a new folder and swaps `..data`.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretVolume {
    fn new(pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut volume = Self { dir, generation: 0 };
        volume.update(&pki.server_chain_pem, &pki.server_key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.path().join(name))
                .unwrap();
        }
        volume
    }

    fn update(&mut self, certificate: &str, key: &str) {
        self.generation += 1;
        let generation = format!("..gen{}", self.generation);
        let folder = self.dir.path().join(&generation);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("tls.crt"), certificate).unwrap();
        std::fs::write(folder.join("tls.key"), key).unwrap();
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &staged).unwrap();
        std::fs::rename(&staged, self.dir.path().join("..data")).unwrap();
    }

    fn files(&self, client_ca: Option<PathBuf>) -> TlsFiles {
        TlsFiles {
            certificate: self.dir.path().join("tls.crt"),
            private_key: self.dir.path().join("tls.key"),
            client_ca,
        }
    }
}

/// A TLS proxy whose stop does not wait for the sessions a test leaves open.
async fn tls_proxy(upstream: &KubevirtUpstream, files: TlsFiles) -> Running {
    let tls = ServerTls::load(files).unwrap();
    let relay = proxy_core::RelayConfig {
        close_timeout: DRAIN,
        ..proxy_core::RelayConfig::default()
    };
    Running::proxy(
        dev_proxy(upstream)
            .tls(tls)
            .drain_timeout(DRAIN)
            .relay(relay),
    )
    .await
}

const DRAIN: Duration = Duration::from_millis(100);

#[tokio::test]
async fn wss_serves_a_console_and_plain_ws_gets_no_session() {
    let upstream = KubevirtUpstream::start().await;
    let pki = TestPki::new("console ca");
    let volume = SecretVolume::new(&pki);
    let proxy = tls_proxy(&upstream, volume.files(None)).await;

    let mut socket = connect_wss(proxy.addr, &pki.ca_pem, None).await.unwrap();
    console_works(&mut socket, b"greeting").await;
    console_works(&mut socket, b"over tls").await;

    let plain = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "").await;
    assert!(
        plain.is_err(),
        "a plain ws:// session opened on the TLS port"
    );
    let untrusted = connect_wss(proxy.addr, &TestPki::new("other ca").ca_pem, None).await;
    assert!(untrusted.unwrap_err().starts_with("TLS"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_a_broken_one_keeps_the_last() {
    let upstream = KubevirtUpstream::start().await;
    let first = TestPki::new("first ca");
    let second = TestPki::new("second ca");
    let mut volume = SecretVolume::new(&first);
    let proxy = tls_proxy(&upstream, volume.files(None)).await;
    let mut open_session = connect_wss(proxy.addr, &first.ca_pem, None).await.unwrap();
    console_works(&mut open_session, b"greeting").await;

    volume.update(&second.server_chain_pem, &second.server_key_pem);
    let mut rotated = retry_until_connected(proxy.addr, &second.ca_pem).await;
    console_works(&mut rotated, b"greeting").await;
    console_works(&mut open_session, b"still the first certificate").await;
    assert!(connect_wss(proxy.addr, &first.ca_pem, None).await.is_err());

    // A broken update (no key in the key file) keeps the second pair.
    volume.update(&first.server_chain_pem, "not a key\n");
    let metrics = wait_for_metric(
        proxy.addr,
        &second.ca_pem,
        "ws_proxy_tls_reloads_total{result=\"failed\"} 1",
    )
    .await;
    assert!(
        metrics.contains("ws_proxy_tls_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    let mut after_failure = connect_wss(proxy.addr, &second.ca_pem, None).await.unwrap();
    console_works(&mut after_failure, b"greeting").await;
    proxy.stop().await;
}

/// Connects with `ca_pem` until the proxy presents that CA's certificate (it looks at its files
/// at most once a second), bounded.
async fn retry_until_connected(addr: std::net::SocketAddr, ca_pem: &str) -> TlsClient {
    tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(socket) = connect_wss(addr, ca_pem, None).await {
                return socket;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the rotated certificate was never served")
}

/// Asks `/metrics` on the TLS port (each connection makes the proxy look at its files), trusting
/// `ca_pem`, until it has `line`, bounded; returns the metrics text.
async fn wait_for_metric(addr: std::net::SocketAddr, ca_pem: &str, line: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::time::timeout(BOUND, async {
        loop {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector(ca_pem, None).connect(name, tcp).await.unwrap();
            tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            let _ = tls.read_to_string(&mut text).await;
            if text.contains(line) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{line} never appeared"))
}

#[tokio::test]
async fn a_client_ca_requires_client_certificates_it_signed() {
    let upstream = KubevirtUpstream::start().await;
    let server_pki = TestPki::new("server ca");
    let client_pki = TestPki::new("client ca");
    let volume = SecretVolume::new(&server_pki);
    let client_ca =
        test_support::write_file(volume.dir.path(), "client-ca.crt", &client_pki.ca_pem);
    let proxy = tls_proxy(&upstream, volume.files(Some(client_ca))).await;

    let student = client_pki.client_identity("student");
    let mut socket = connect_wss(proxy.addr, &server_pki.ca_pem, Some(&student))
        .await
        .unwrap();
    console_works(&mut socket, b"greeting").await;
    console_works(&mut socket, b"mutual tls").await;

    // TLS 1.3 clients learn of the refusal on their first read: either step may fail.
    for identity in [None, Some(server_pki.client_identity("wrong ca"))] {
        if let Ok(mut refused) =
            connect_wss(proxy.addr, &server_pki.ca_pem, identity.as_ref()).await
        {
            use futures_util::StreamExt as _;
            assert!(
                !matches!(refused.next().await, Some(Ok(Message::Binary(_)))),
                "a client without an accepted certificate got the console"
            );
        }
    }
    proxy.stop().await;
}

#[test]
fn unusable_files_are_refused_at_load_with_the_file_named() {
    let pki = TestPki::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = pki.write_server_pair(dir.path());
    let missing = dir.path().join("missing.key");
    let not_pem = test_support::write_file(dir.path(), "not.pem", "hello");
    let cases: [(&Path, &Path, &str); 3] = [
        (
            &certificate,
            &missing,
            "cannot read the TLS private key file",
        ),
        (&not_pem, &key, "holds no certificate in PEM"),
        (&certificate, &not_pem, "holds no private key in PEM"),
    ];
    for (certificate, private_key, expected) in cases {
        let error = ServerTls::load(TlsFiles {
            certificate: certificate.to_owned(),
            private_key: private_key.to_owned(),
            client_ca: None,
        })
        .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_key) = TestPki::new("other").write_server_pair(other_dir.path());
    let mismatched = ServerTls::load(TlsFiles {
        certificate,
        private_key: other_key,
        client_ca: None,
    });
    assert!(
        mismatched.is_err(),
        "a key of another certificate was accepted"
    );
}
