//! Every refusal reason: its HTTP status and one-line reason, or in the Python original's style
//! its close code and reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::*;
use proxy_auth::Verifier;
use proxy_core::MemoryTransport;
use proxy_server::{Limits, ProxyEngine, RejectStyle, ServerConfig};
use proxy_upstream::{BodyExcerpt, ConnectError, Connector, Upstream, UpstreamTarget};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::http::StatusCode;

/// Asserts a plain-text refusal: the status, and the reason as the whole one-line body.
fn assert_refusal(response: &(u16, String), status: u16, reason: &str) {
    let (got, text) = response;
    assert_eq!(*got, status, "{text}");
    assert!(text.contains("Content-Type: text/plain"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body, format!("{reason}\n"));
}

#[tokio::test]
async fn each_reason_has_its_status_and_a_one_line_reason() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let addr = proxy.addr;
    let valid = fixture_token("hs256_valid");

    assert_refusal(
        &upgrade_request(addr, "/only-a-token").await,
        404,
        "invalid url",
    );
    assert_refusal(&upgrade_request(addr, "/a/b/c").await, 404, "invalid url");
    assert_refusal(
        &get(addr, &format!("/{valid}/ubuntu")).await,
        400,
        "not a websocket upgrade",
    );
    // An expired token says so; a forged or foreign one does not say why.
    let expired = format!("/{}/ubuntu", fixture_token("hs256_expired"));
    assert_refusal(&upgrade_request(addr, &expired).await, 401, "token expired");
    for invalid in ["hs256_wrong_secret", "rs256_valid"] {
        let path = format!("/{}/ubuntu", fixture_token(invalid));
        assert_refusal(&upgrade_request(addr, &path).await, 401, "invalid token");
    }
    assert_refusal(
        &upgrade_request(addr, "/not.a.jwt/ubuntu").await,
        401,
        "invalid token",
    );
    let not_allowed = format!("/{}/manjaro", fixture_token("hs256_vm_not_allowed"));
    assert_refusal(
        &upgrade_request(addr, &not_allowed).await,
        403,
        "invalid token",
    );
    let missing = format!("/{}/{VM_MISSING}", mint(&[VM_MISSING]));
    assert_refusal(&upgrade_request(addr, &missing).await, 404, "vm not found");
    let stopped = format!("/{}/{VM_STOPPED}", mint(&[VM_STOPPED]));
    assert_refusal(
        &upgrade_request(addr, &stopped).await,
        409,
        "vm not running",
    );

    let metrics = get(addr, "/metrics").await.1;
    for (reason, count) in [
        ("invalid_url", 2),
        ("not_websocket", 1),
        ("invalid_token", 4),
        ("vm_not_allowed", 1),
        ("vm_not_found", 1),
        ("vm_not_running", 1),
    ] {
        let line = format!("ws_proxy_rejections_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert!(!metrics.contains(&valid), "a token leaked into the metrics");
    proxy.stop().await;
}

#[tokio::test]
async fn a_wrong_prefix_is_404() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream).host_path_prefix("ws_proxy")).await;
    let token = mint(&["ubuntu"]);
    let wrong = upgrade_request(proxy.addr, &format!("/other/{token}/ubuntu")).await;
    assert_refusal(&wrong, 404, "wrong path prefix");
    let missing = upgrade_request(proxy.addr, &format!("/{token}/ubuntu")).await;
    assert_refusal(&missing, 404, "wrong path prefix");
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Running::proxy(dev_proxy_to(format!("ws://{closed_port}"))).await;
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    assert_refusal(
        &upgrade_request(proxy.addr, &path).await,
        502,
        "upstream unavailable",
    );
    proxy.stop().await;
}

/// A connector that fails every dial with the error `make` builds.
struct FailingConnector(fn() -> ConnectError);

#[async_trait]
impl Connector for FailingConnector {
    type Transport = MemoryTransport;

    async fn connect(
        &self,
        _target: UpstreamTarget<'_>,
    ) -> Result<Upstream<MemoryTransport>, ConnectError> {
        Err((self.0)())
    }
}

fn failing_engine(
    make: fn() -> ConnectError,
    style: RejectStyle,
) -> ProxyEngine<Verifier, FailingConnector> {
    let mut config = ServerConfig::default();
    config.reject_style = style;
    ProxyEngine::new(
        Verifier::hs256(SECRET).unwrap(),
        FailingConnector(make),
        config,
    )
}

type FailureCase = (fn() -> ConnectError, u16, &'static str);

const FAILURES: [FailureCase; 5] = [
    (
        || ConnectError::InvalidName(proxy_upstream::validate_vmi_name("Not_A_Name").unwrap_err()),
        404,
        "invalid vm name",
    ),
    (
        || ConnectError::VmNotFound {
            body: BodyExcerpt::from_body(b"not found"),
        },
        404,
        "vm not found",
    ),
    (
        || ConnectError::VmNotRunning {
            status: StatusCode::CONFLICT,
            body: BodyExcerpt::from_body(b"VMI is not running"),
        },
        409,
        "vm not running",
    ),
    (
        || ConnectError::Refused {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        },
        502,
        "upstream unavailable",
    ),
    (
        || ConnectError::UpgradeTimeout {
            timeout: Duration::from_secs(15),
        },
        504,
        "upstream timeout",
    ),
];

#[tokio::test]
async fn every_upstream_failure_class_has_its_status() {
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    for (make, status, reason) in FAILURES {
        let proxy = Running::engine(failing_engine(make, RejectStyle::HttpStatus)).await;
        assert_refusal(&upgrade_request(proxy.addr, &path).await, status, reason);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn the_original_style_closes_with_4xxx_codes_and_the_original_reasons() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(
        dev_proxy(&upstream)
            .host_path_prefix("ws_proxy")
            .reject_style(RejectStyle::CloseFrame),
    )
    .await;
    let token = mint(&["ubuntu", VM_MISSING]);
    let cases = [
        ("/ws_proxy/only-token".to_owned(), 4404, "invalid url"),
        (
            format!("/elsewhere/{token}/ubuntu"),
            4404,
            "wrong path prefix",
        ),
        (
            format!("/ws_proxy/{}/ubuntu", fixture_token("hs256_expired")),
            4401,
            "invalid token",
        ),
        (format!("/ws_proxy/{token}/kali"), 4403, "invalid token"),
        (
            format!("/ws_proxy/{token}/{VM_MISSING}"),
            4404,
            "vm not found",
        ),
    ];
    for (path, code, reason) in cases {
        let (mut client, _) = connect(proxy.addr, &path, "binary").await.unwrap();
        assert_eq!(
            next_close(&mut client).await,
            Some((code, reason.to_owned())),
            "{path}"
        );
        read_to_end(&mut client).await;
    }
    // Without an upgrade there is nothing to close: plain HTTP.
    assert_refusal(&get(proxy.addr, "/ws_proxy/x").await, 404, "invalid url");
    proxy.stop().await;

    for (make, status, reason) in FAILURES {
        let proxy = Running::engine(failing_engine(make, RejectStyle::CloseFrame)).await;
        let (mut client, _) = connect(proxy.addr, &format!("/{token}/ubuntu"), "")
            .await
            .unwrap();
        let close = next_close(&mut client).await;
        assert_eq!(close, Some((4000 + status, reason.to_owned())));
        read_to_end(&mut client).await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn beyond_the_session_limit_is_503_until_a_slot_frees() {
    let upstream = KubevirtUpstream::start().await;
    let mut limits = Limits::default();
    limits.max_sessions = 1;
    let proxy = Running::proxy(dev_proxy(&upstream).limits(limits)).await;
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));

    let (mut first, _) = connect(proxy.addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut first).await, GREETING);
    assert_refusal(
        &upgrade_request(proxy.addr, &path).await,
        503,
        "at capacity",
    );

    first.close(None).await.unwrap();
    read_to_end(&mut first).await;
    // The slot is released right after the session's last bookkeeping: retry briefly.
    let mut attempts = 0;
    let mut second = loop {
        match connect(proxy.addr, &path, "").await {
            Ok((client, _)) => break client,
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("the slot was never released: {error}"),
        }
    };
    assert_eq!(next_data(&mut second).await, GREETING);
    second.close(None).await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_and_slow_request_heads_are_refused() {
    let upstream = KubevirtUpstream::start().await;
    let mut limits = Limits::default();
    limits.max_header_bytes = 1024;
    limits.handshake_timeout = Duration::from_millis(200);
    let proxy = Running::proxy(dev_proxy(&upstream).limits(limits)).await;

    let huge = format!("/{}/ubuntu", "a".repeat(2000));
    let response = upgrade_request(proxy.addr, &huge).await;
    assert_refusal(&response, 431, "request header too large");

    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET /t/ubuntu HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut response)
        .await
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");

    let garbage = raw_request(proxy.addr, "\u{1}\u{2}\u{3}\r\n\r\n").await;
    assert_refusal(&garbage, 400, "malformed request");
    proxy.stop().await;
}

/// A connector whose dials never finish; it reports each dial that started.
struct HangingConnector(tokio::sync::mpsc::UnboundedSender<()>);

#[async_trait]
impl Connector for HangingConnector {
    type Transport = MemoryTransport;

    async fn connect(
        &self,
        _target: UpstreamTarget<'_>,
    ) -> Result<Upstream<MemoryTransport>, ConnectError> {
        let _ = self.0.send(());
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_dial_still_running_when_the_drain_ends_is_refused_with_503() {
    let (dialling, mut dial_started) = tokio::sync::mpsc::unbounded_channel();
    let mut config = ServerConfig::default();
    config.drain_timeout = Duration::from_millis(50);
    let engine = ProxyEngine::new(
        Verifier::hs256(SECRET).unwrap(),
        HangingConnector(dialling),
        config,
    );
    let mut proxy = Running::engine(engine).await;
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    let addr = proxy.addr;
    let refused = tokio::spawn(async move { upgrade_request(addr, &path).await });
    dial_started.recv().await.unwrap();
    proxy.request_stop();
    assert_refusal(&refused.await.unwrap(), 503, "shutting down");
    proxy.finished().await;
}

#[tokio::test]
async fn by_default_browsers_get_a_close_code_and_other_clients_the_status() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let other_vm = format!("/{}/ubuntu", mint(&["kali"]));
    let expired = format!("/{}/ubuntu", fixture_token("hs256_expired"));
    let stopped = format!("/{}/{VM_STOPPED}", mint(&[VM_STOPPED]));
    let cases = [
        (&other_vm, 403, "invalid token"),
        (&expired, 401, "token expired"),
        (&stopped, 409, "vm not running"),
    ];
    for (path, status, reason) in cases {
        let mut browser = connect_as_browser(proxy.addr, path).await.unwrap();
        assert_eq!(
            next_close(&mut browser).await,
            Some((4000 + status, reason.to_owned())),
            "{path}"
        );
        read_to_end(&mut browser).await;
        assert_refusal(&upgrade_request(proxy.addr, path).await, status, reason);
    }
    // A browser's plain GET is no upgrade: it gets the status.
    let (status, _) = raw_request(
        proxy.addr,
        &format!(
            "GET {other_vm} HTTP/1.1\r\nHost: x\r\nOrigin: https://lab.example\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400);
    // Refused tokens never reached the upstream; the stopped VM was dialled twice.
    let dialled: Vec<String> = upstream.seen().into_iter().map(|(path, _)| path).collect();
    assert_eq!(dialled.len(), 2, "{dialled:?}");
    assert!(dialled.iter().all(|path| path.contains(VM_STOPPED)));
    proxy.stop().await;
}
